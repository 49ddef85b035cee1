"""The driver's cache directory: wheels, locks, image probes, the local stack's state and logs."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Where wheels, locks and small caches live (``$NIPYPE_BATCH_CACHE``)."""
    path = Path(os.environ.get("NIPYPE_BATCH_CACHE", "~/.cache/nipype-batch")).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path
