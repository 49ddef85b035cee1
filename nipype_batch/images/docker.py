"""The Docker daemon: reached through docker-py, with a clear error when it is not running."""

from __future__ import annotations

import os
from typing import Any

from ..errors import LocalStackError


def connect_docker() -> Any:
    """A docker-py client to a daemon that answers, or :class:`LocalStackError` saying how."""
    import docker

    where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as exc:
        raise LocalStackError(
            f"no Docker daemon answers at {where} ({exc.__class__.__name__}). Start one as "
            "root with `dockerd >/var/log/dockerd.log 2>&1 &` (install it with "
            "`apt-get install docker.io`), or run `scripts/bootstrap.sh`, which does both."
        ) from exc
    return client
