"""Which cloud a run talks to: an AWS account, or the local stack standing in for one."""

from __future__ import annotations

from .cloud import Cloud, connect_aws
from .settings import BatchSettings


def connect(settings: BatchSettings) -> Cloud:
    """Build the :class:`Cloud` for ``settings`` (starting the local stack if asked for)."""
    if settings.backend == "local":
        from .local.cloud import connect_local  # starts Docker and the emulator: only if asked

        return connect_local(settings)
    return connect_aws(settings)
