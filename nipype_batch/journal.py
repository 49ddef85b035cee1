"""Which jobs a work directory has in flight, so that a driver that died can find them again.

One small JSON file per job under ``<base_dir>/.nipype-batch/jobs/``, named by the node's
directory and input hash: written when the job is submitted, removed when its result is home.
A rerun with the same inputs finds the entry and waits for that job instead of submitting the
node again. Batch itself holds the same facts as job tags; the journal avoids listing every job
of an account to find them.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class Journal:
    """In-flight jobs of the nodes under one work directory."""

    def __init__(self, base_dir: str) -> None:
        self.directory = Path(base_dir) / ".nipype-batch" / "jobs"

    def _path(self, node_dir: str, hashvalue: str) -> Path:
        name = hashlib.sha256(f"{node_dir}\0{hashvalue}".encode()).hexdigest()[:24]
        return self.directory / f"{name}.json"

    def record(self, node_dir: str, hashvalue: str, entry: dict[str, Any]) -> None:
        """Remember a submitted job (atomically: a crash never leaves half an entry)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self._path(node_dir, hashvalue)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"node_dir": node_dir, "hash": hashvalue, **entry}))
        os.replace(tmp, path)

    def find(self, node_dir: str, hashvalue: str) -> dict[str, Any] | None:
        """The job recorded for this node and these inputs, if any."""
        try:
            return json.loads(self._path(node_dir, hashvalue).read_text())
        except (OSError, ValueError):
            return None

    def forget(self, node_dir: str, hashvalue: str) -> None:
        """The job's result is home (or it failed): nothing to resume."""
        self._path(node_dir, hashvalue).unlink(missing_ok=True)

    def entries(self) -> Iterator[dict[str, Any]]:
        """Every job recorded under this work directory, at any depth (nested base dirs)."""
        root = self.directory.parent.parent
        for path in sorted(root.rglob(".nipype-batch/jobs/*.json")):
            try:
                yield json.loads(path.read_text())
            except (OSError, ValueError):
                continue
