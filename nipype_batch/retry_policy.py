"""One policy for every AWS call, on the driver and in jobs.

botocore's adaptive mode retries throttling and 5xx answers with exponential backoff and jitter,
and slows the client down when the service throttles it, so a busy account makes a run slower,
not failed. Errors that retrying cannot fix (access denied, a missing queue) still raise.
"""

from __future__ import annotations

from botocore.config import Config

MAX_ATTEMPTS = 10


def client_config(max_attempts: int = MAX_ATTEMPTS) -> Config:
    """The botocore config every client of this package is built with."""
    return Config(
        retries={"mode": "adaptive", "max_attempts": max_attempts},
        user_agent_extra="nipype-batch",
        connect_timeout=10,
        read_timeout=60,
    )
