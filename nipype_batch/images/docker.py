"""The Docker daemon: reached through docker-py, with a clear error when it is not running.

Also the one way the image layer asks an image a question: get the image (or pull it), run
``python3 -c`` in a throwaway container with no network, and cache the answer by image id, so
an image is asked once however often it is used.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from typing import Any

from ..cache import cache_dir
from ..errors import ImageBuildError, LocalStackError

log = logging.getLogger(__name__)


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


def get_or_pull(docker: Any, ref: str, unavailable: Callable[[Exception], str],
                what: str = "image", platform: str | None = None) -> Any:
    """The image ``ref`` from the daemon, pulled (for ``platform``, e.g. ``linux/amd64``: the
    jobs' CPU, not the driver's) if the daemon lacks it.

    ``unavailable`` words the :class:`ImageBuildError` raised when it cannot be pulled either;
    ``what`` names the image in the log line of a pull.
    """
    try:
        return docker.images.get(ref)
    except Exception:
        pass
    log.info("Pulling %s %s", what, ref)
    try:
        return docker.images.pull(ref, platform=platform) if platform else \
            docker.images.pull(ref)
    except Exception as exc:
        raise ImageBuildError(unavailable(exc)) from exc


def probe_image(docker: Any, ref: str, script: str, *, cache_name: str,
                parse: Callable[[str], Any], unavailable: Callable[[Exception], str],
                cannot_run: Callable[[Exception], str], what: str = "image",
                keep_entrypoint: bool = False, platform: str | None = None
                ) -> tuple[Any, Any]:
    """Ask image ``ref`` a question: ``(image, parse(stdout of python3 -c script))``.

    The image is got or pulled (see :func:`get_or_pull`); the answer is cached by image id in
    ``cache_name`` under the cache directory, so a known image starts no container. A
    container that cannot run, or an answer ``parse`` refuses, raises :class:`ImageBuildError`
    worded by ``cannot_run``. The image's entrypoint is cleared unless ``keep_entrypoint``.
    """
    image = get_or_pull(docker, ref, unavailable, what, platform)
    cache = cache_dir() / cache_name
    known = json.loads(cache.read_text()) if cache.exists() else {}
    if image.id not in known:
        options: dict[str, Any] = {} if keep_entrypoint else {"entrypoint": []}
        try:
            out = docker.containers.run(ref, ["python3", "-c", script], remove=True,
                                        network_mode="none", **options)
            known[image.id] = parse(out.decode().strip())
        except Exception as exc:
            raise ImageBuildError(cannot_run(exc)) from exc
        cache.write_text(json.dumps(known))
    return image, known[image.id]
