"""The run history: each node's measured runtime and peak memory, kept across runs.

The runner measures both in every job (``_nipype_batch.json``); after each run the driver adds
one row per collected job to a small SQLite file in the cache directory. A row is keyed so that
the same node finds it in a later run, or for another subject: the node's place in the workflow
without its iterable parameterisation (``dmri.denoise``; a MapNode's subnodes count under the
MapNode) and its interface's class. Planning and forecasting read it; a history that is missing
or unreadable is no history, never a failed run.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import statistics
import time
from collections.abc import Iterable
from dataclasses import astuple, dataclass, fields
from pathlib import Path

from .cache import cache_dir
from .protocol import MAPFLOW

log = logging.getLogger("nipype_batch")

DB_NAME = "history.sqlite"


@dataclass(frozen=True)
class Observation:
    """One job's measurements."""

    node: str  # e.g. "dmri.denoise" (see history_key)
    interface: str  # e.g. "nipype.interfaces.dipy.preprocess.Denoise"
    runtime_s: float  # the node's own run, staging excluded
    peak_memory_mb: float
    vcpus: int
    memory_mb: int
    succeeded: bool
    run_id: str
    recorded_at: float
    # The runner's own time around nodes, for forecasts (None where not measured): from the
    # job's start to its first node (interpreter, imports, inputs staged in), and from a
    # node's end to the next one's start (its outputs staged out and committed).
    setup_s: float | None = None
    handoff_s: float | None = None
    backend: str = ""


@dataclass(frozen=True)
class Overheads:
    """The runner's measured seconds around nodes on one backend (medians of recent jobs)."""

    setup_s: float  # per job, before its first node
    handoff_s: float  # per node, between its end and what follows it
    jobs: int  # how many jobs measured them


RECENT = 500  # observations an overhead figure is the median of


@dataclass(frozen=True)
class NodeHistory:
    """What the history says of one node: how often it ran, how long, how much memory."""

    node: str
    interface: str
    runs: int
    median_runtime_s: float
    max_runtime_s: float
    peak_memory_mb: float
    last_run_at: float


def history_key(node_dir: str, base_dir: str | None) -> str:
    """The node's place in the workflow, the same for every subject and every subnode.

    Directories below the base directory, dotted, without Nipype's parameterisation folders
    (``_subject_01``) and a MapNode's ``mapflow/_name3``: ``<base>/dmri/_subject_01/denoise``
    and ``<base>/dmri/_subject_02/denoise/mapflow/_denoise3`` are both ``dmri.denoise``.
    """
    relative = os.path.relpath(node_dir, base_dir) if base_dir else node_dir.strip("/")
    parts = [p for p in relative.split(os.sep) if p and p != MAPFLOW and not p.startswith("_")]
    return ".".join(parts)


_COLUMNS = [f.name for f in fields(Observation)]
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS observations ({", ".join(_COLUMNS)});
CREATE INDEX IF NOT EXISTS by_node ON observations (node, interface);
CREATE TABLE IF NOT EXISTS forecasts (workflow, subjects, made_at, forecast);
"""


HISTORY_ENV = "NIPYPE_BATCH_HISTORY"  # another history file than the cache directory's


class RunHistory:
    """The history file: ``path``, else ``$NIPYPE_BATCH_HISTORY``, else
    ``<cache>/history.sqlite``."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path or os.environ.get(HISTORY_ENV) or cache_dir() / DB_NAME)

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, timeout=10)
        connection.executescript(_SCHEMA)
        have = {row[1] for row in connection.execute("PRAGMA table_info(observations)")}
        for column in _COLUMNS:  # a history written by an older version gains the new ones
            if column not in have:
                connection.execute(f"ALTER TABLE observations ADD COLUMN {column}")
        return connection

    def record(self, observations: Iterable[Observation]) -> int:
        """Add observations; return how many."""
        rows = [astuple(o) for o in observations]
        if not rows:
            return 0
        with self._connect() as connection:
            connection.executemany(
                f"INSERT INTO observations ({', '.join(_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(_COLUMNS))})", rows)
        return len(rows)

    def _read(self, query: str, parameters: tuple) -> list[tuple]:
        """Rows of ``query``; none if the file is missing or cannot be read (quietly: a
        forecast or a report goes on without them)."""
        if not self.path.exists():
            return []
        try:
            with self._connect() as connection:
                return connection.execute(query, parameters).fetchall()
        except sqlite3.Error:
            return []

    def overheads(self, backend: str) -> Overheads | None:
        """The runner's setup per job and hand-off per node on ``backend``, as measured by
        its recent jobs; None if none measured them (or the file cannot be read)."""
        rows = self._read("SELECT setup_s, handoff_s FROM observations WHERE backend = ? AND "
                          "succeeded AND (setup_s IS NOT NULL OR handoff_s IS NOT NULL) "
                          "ORDER BY recorded_at DESC LIMIT ?", (backend, RECENT))
        setups = [s for s, _h in rows if s is not None]
        handoffs = [h for _s, h in rows if h is not None]
        if not setups and not handoffs:
            return None
        return Overheads(statistics.median(setups) if setups else 0.0,
                         statistics.median(handoffs) if handoffs else 0.0, len(rows))

    def nodes(self) -> list[NodeHistory]:
        """Every node the history holds, by name; empty if the file is missing or unreadable."""
        if not self.path.exists():
            return []
        try:
            with self._connect() as connection:
                rows = connection.execute(
                    "SELECT node, interface, runtime_s, peak_memory_mb, recorded_at "
                    "FROM observations WHERE succeeded ORDER BY node, interface").fetchall()
        except sqlite3.Error as exc:
            log.warning("The run history %s cannot be read (%s): going without it; delete the "
                        "file to start a new one", self.path, exc)
            return []
        grouped: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
        for node, interface, runtime, memory, at in rows:
            grouped.setdefault((node, interface), []).append((runtime, memory, at))
        return [NodeHistory(node, interface, len(seen),
                            statistics.median(r for r, _m, _a in seen),
                            max(r for r, _m, _a in seen), max(m for _r, m, _a in seen),
                            max(a for _r, _m, a in seen))
                for (node, interface), seen in grouped.items()]

    def lookup(self, node: str, interface: str) -> NodeHistory | None:
        """The node's history, if it ran before (and succeeded)."""
        return next((h for h in self.nodes() if (h.node, h.interface) == (node, interface)),
                    None)


    def keep_forecast(self, workflow: str, subjects: int | None, forecast: dict) -> None:
        """Keep a forecast made for ``workflow``, for the report of a run of it."""
        with self._connect() as connection:
            connection.execute("INSERT INTO forecasts VALUES (?, ?, ?, ?)",
                               (workflow, subjects, time.time(), json.dumps(forecast)))

    def forecast_for(self, workflow: str, subjects: int | None = None) -> dict | None:
        """The latest forecast made for ``workflow`` (for ``subjects`` subjects if one was,
        else any); None if none was made or the history cannot be read."""
        rows = self._read("SELECT subjects, forecast FROM forecasts WHERE workflow = ? "
                          "ORDER BY made_at DESC", (workflow,))
        chosen = next((f for n, f in rows if n == subjects), rows[0][1] if rows else None)
        return json.loads(chosen) if chosen else None


def measured_overheads(backend: str) -> Overheads | None:
    """The runner's measured time on ``backend`` (see :meth:`RunHistory.overheads`); None,
    never an error, when the history cannot say."""
    try:
        return RunHistory().overheads(backend)
    except Exception:  # a broken history is no history
        return None


def record_quietly(history: RunHistory, observations: list[Observation]) -> int:
    """Record a run's observations; a history that cannot be written is only a warning."""
    try:
        return history.record(observations)
    except (sqlite3.Error, OSError) as exc:
        log.warning("Could not add %d jobs to the run history %s: %s (the run itself is "
                    "unaffected; delete the file to start a new history)",
                    len(observations), history.path, exc)
        return 0
