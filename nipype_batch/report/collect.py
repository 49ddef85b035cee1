"""A run's jobs read back from its node directories: no AWS.

Each node's ``_nipype_batch.json`` holds everything the report needs (times, resources,
attempts, states); a failed node's remote traceback is in its ``crashstore.pklz``. Each node
directory describes the job that produced it as it is now, so a work directory reused by
several runs reports the latest job of every node.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import NipypeBatchError
from ..protocol import PROVENANCE_FILE
from ..provenance import read_provenance
from .model import Attempt, JobRow

log = logging.getLogger(__name__)

_SKIP_DIRS = {".nipype-batch", "_report"}
_NIPYPE_PEAK = re.compile(r"^\*\s*mem_peak_gb\s*:\s*([0-9.eE+-]+)\s*$", re.MULTILINE)


def _attempts(job: dict[str, Any]) -> tuple[Attempt, ...]:
    """The attempts of a job record; one built from the job's own times when Batch gave none."""
    found = []
    for raw in job.get("attempt_details") or []:
        container = raw.get("container") or {}
        found.append(Attempt(
            started_ms=raw.get("startedAt"),
            stopped_ms=raw.get("stoppedAt") or None,
            reason=raw.get("statusReason") or container.get("reason"),
            exit_code=container.get("exitCode"),
            log_stream=container.get("logStreamName"),
        ))
    if found:
        last = found[-1]
        if last.stopped_ms is None and job.get("stopped_at_ms"):  # the job's end ends it
            found[-1] = Attempt(last.started_ms, job["stopped_at_ms"], last.reason,
                                last.exit_code, last.log_stream)
        return tuple(found)
    if job.get("started_at_ms") is None:  # never ran (failed in the queue, or cancelled)
        return ()
    return (Attempt(job.get("started_at_ms"), job.get("stopped_at_ms"), job.get("status_reason"),
                    job.get("exit_code"), job.get("log_stream")),)


def peak_memory_mb(node_dir: str, runner: dict[str, Any]) -> float | None:
    """The node's peak memory in MiB, where something measured it.

    The runner's own measure if it recorded one, else Nipype's resource monitor
    (``execution.resource_monitor``), which writes ``mem_peak_gb`` in the node's report.
    """
    for key in ("peak_memory_mb", "max_rss_mb"):
        if isinstance(runner.get(key), int | float):
            return float(runner[key])
    try:
        text = (Path(node_dir) / "_report" / "report.rst").read_text(errors="replace")
    except OSError:
        return None
    match = _NIPYPE_PEAK.search(text)
    return float(match.group(1)) * 1024 if match else None


def job_row(node_dir: str, record: dict[str, Any], work_dir: str) -> JobRow | None:
    """A :class:`JobRow` from one provenance record, or None if it has no ``job`` section."""
    job = record.get("job")
    if not job or not job.get("job_id"):
        return None
    runner = record.get("runner") or {}
    return JobRow(
        node=os.path.relpath(node_dir, work_dir),
        node_dir=node_dir,
        job_id=job["job_id"],
        job_name=job.get("job_name") or "",
        state=job.get("status") or "UNKNOWN",
        vcpus=float(job.get("vcpus") or 0),
        memory_mb=int(job.get("memory_mb") or 0),
        gpus=int(job.get("gpus") or 0),
        submitted_ms=job.get("submitted_at_ms"),
        started_ms=job.get("started_at_ms"),
        stopped_ms=job.get("stopped_at_ms"),
        attempts=_attempts(job),
        attempts_allowed=int(job.get("attempts_allowed") or 1),
        reason=job.get("status_reason") or _memory_note(job),
        exit_code=job.get("exit_code"),
        log_stream=job.get("log_stream"),
        node_failed=bool(runner.get("node_failed")),
        peak_memory_mb=peak_memory_mb(node_dir, runner),
        hostname=runner.get("hostname"),
        image=job.get("image"),
    )


def _provenance_dirs(work_dir: str) -> Iterable[str]:
    for root, dirs, files in os.walk(work_dir):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
        if PROVENANCE_FILE in files:
            yield root


def collect_jobs(work_dir: str | os.PathLike[str]) -> list[JobRow]:
    """Every job recorded under a work directory, in submission order.

    Parameters
    ----------
    work_dir : path
        The workflow's ``base_dir`` (or any directory above its node directories).
    """
    root = os.path.abspath(work_dir)
    if not os.path.isdir(root):
        raise NipypeBatchError(f"no such work directory: {root}")
    rows = [row for node_dir in _provenance_dirs(root)
            if (row := job_row(node_dir, read_provenance(node_dir), root)) is not None]
    rows = merge_packs(rows)
    return sorted(rows, key=lambda r: (r.submitted_ms is None, r.submitted_ms or 0, r.node))


def merge_packs(rows: list[JobRow]) -> list[JobRow]:
    """One row per job: the nodes of a pack (one job that ran several) become one row,
    named after its first node, running from its start to its last node's end, failed if
    any node failed (and then pointing at that node, whose crash the report shows)."""
    by_job: dict[str, list[JobRow]] = {}
    for row in rows:
        by_job.setdefault(row.job_id, []).append(row)
    merged = []
    for members in by_job.values():
        if len(members) == 1:
            merged.append(members[0])
            continue
        members.sort(key=lambda r: r.node)
        failed = [m for m in members if m.failed]
        lead = failed[0] if failed else members[0]
        stops = [m.stopped_ms for m in members if m.stopped_ms]
        memory = [m.peak_memory_mb for m in members if m.peak_memory_mb is not None]
        merged.append(replace(
            lead, node=f"{lead.node} (+{len(members) - 1} nodes in its job)",
            nodes=tuple(m.node for m in members), stopped_ms=max(stops) if stops else None,
            peak_memory_mb=max(memory) if memory else None,
            started_ms=min((m.started_ms for m in members if m.started_ms), default=None)))
    return merged


def crash_traceback(node_dir: str) -> list[str]:
    """The remote traceback a failed node left in its directory (``crashstore.pklz``)."""
    path = Path(node_dir) / "crashstore.pklz"
    if not path.exists():
        return []
    try:
        from nipype.utils.filemanip import loadpkl

        crash = loadpkl(str(path))
    except Exception as exc:  # a pickle of user classes may not load here: no traceback then
        log.debug("Could not read %s: %s", path, exc)
        return []
    lines = crash.get("traceback") if isinstance(crash, dict) else None
    return "".join(lines or []).splitlines()


def _memory_note(job: dict[str, Any]) -> str | None:
    """For a job that ran after others were killed for memory: how much each asked."""
    killed = job.get("memory_raised") or []
    if not killed:
        return None
    asked = ", ".join(f"{k.get('memory_mb')} MiB" for k in killed)
    return (f"killed for memory at {asked}; ran with {job.get('memory_mb')} MiB "
            "(memory_retry)")
