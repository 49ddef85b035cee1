"""The run report: what a run's jobs did, read back from its node directories.

No AWS: each node's ``_nipype_batch.json`` holds everything the report needs (times,
resources, attempts, states); log tails of failed jobs come from the caller. Each node
directory describes the job that produced it as it is now, so a work directory reused by
several runs reports the latest job of every node. :func:`write_report` writes the HTML page
(:mod:`.report_html`) and the PNG chart (:mod:`.report_png`) next to the workflow.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cost import DEFAULT_PLATFORM, CostEstimate, Prices, estimate, load_prices
from .errors import NipypeBatchError
from .protocol import PROVENANCE_FILE
from .provenance import read_provenance

log = logging.getLogger(__name__)

HTML_NAME = "nipype_batch_report.html"
PNG_NAME = "nipype_batch_report.png"
_SKIP_DIRS = {".nipype-batch", "_report"}
_NIPYPE_PEAK = re.compile(r"^\*\s*mem_peak_gb\s*:\s*([0-9.eE+-]+)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Attempt:
    """One try of a job on a host (a retried job has several)."""

    started_ms: int | None
    stopped_ms: int | None
    reason: str | None = None
    exit_code: int | None = None
    log_stream: str | None = None

    @property
    def running_s(self) -> float:
        """Seconds the container ran (0 when a time is missing)."""
        if self.started_ms is None or self.stopped_ms is None:
            return 0.0
        return max(0.0, (self.stopped_ms - self.started_ms) / 1000)


@dataclass(frozen=True)
class JobRow:
    """One node's job: resources asked, times, attempts and outcome."""

    node: str  # the node directory relative to the work directory, e.g. wf/_subject_01/fit
    node_dir: str
    job_id: str
    job_name: str
    state: str  # SUCCEEDED or FAILED as Batch reported it
    vcpus: float
    memory_mb: int
    gpus: int = 0
    submitted_ms: int | None = None
    started_ms: int | None = None
    stopped_ms: int | None = None
    attempts: tuple[Attempt, ...] = ()
    attempts_allowed: int = 1
    reason: str | None = None
    exit_code: int | None = None
    log_stream: str | None = None
    node_failed: bool = False  # the node raised inside a job that itself ended normally
    peak_memory_mb: float | None = None
    hostname: str | None = None
    image: str | None = None

    @property
    def failed(self) -> bool:
        """The node did not produce its result."""
        return self.state != "SUCCEEDED" or self.node_failed

    @property
    def retried(self) -> bool:
        """More than one attempt ran."""
        return len(self.attempts) > 1

    @property
    def first_start_ms(self) -> int | None:
        """When the first attempt started running (the end of the first queue wait)."""
        starts = [a.started_ms for a in self.attempts if a.started_ms is not None]
        return min(starts) if starts else self.started_ms

    @property
    def queued_s(self) -> float | None:
        """Seconds from submission to the first attempt's start, if both are known."""
        start = self.first_start_ms
        if self.submitted_ms is None or start is None:
            return None
        return max(0.0, (start - self.submitted_ms) / 1000)

    @property
    def running_s(self) -> float:
        """Seconds containers ran, summed over attempts."""
        return sum(a.running_s for a in self.attempts)


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
        reason=job.get("status_reason"),
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
    return sorted(rows, key=lambda r: (r.submitted_ms is None, r.submitted_ms or 0, r.node))


@dataclass(frozen=True)
class RunSummary:
    """Totals over a run's jobs."""

    jobs: int
    failed: int
    retried: int
    first_submitted_ms: int | None
    last_stopped_ms: int | None
    running_s: float
    queued_s: float
    failed_nodes: list[str] = field(default_factory=list)

    @property
    def makespan_s(self) -> float | None:
        """Seconds from the first submission to the last job's end."""
        if self.first_submitted_ms is None or self.last_stopped_ms is None:
            return None
        return (self.last_stopped_ms - self.first_submitted_ms) / 1000


def summarize(rows: list[JobRow]) -> RunSummary:
    """Counts and time totals of ``rows``."""
    submitted = [r.submitted_ms for r in rows if r.submitted_ms is not None]
    stopped = [r.stopped_ms for r in rows if r.stopped_ms is not None]
    return RunSummary(
        jobs=len(rows),
        failed=sum(r.failed for r in rows),
        retried=sum(r.retried for r in rows),
        first_submitted_ms=min(submitted) if submitted else None,
        last_stopped_ms=max(stopped) if stopped else None,
        running_s=sum(r.running_s for r in rows),
        queued_s=sum(r.queued_s or 0.0 for r in rows),
        failed_nodes=[r.node for r in rows if r.failed],
    )


# ---- the Gantt chart's geometry, shared by the HTML and PNG renderers ----------------------

QUEUED, RUNNING, FAILED = "queued", "running", "failed"


@dataclass(frozen=True)
class Segment:
    """A stretch of one job's bar, in seconds since the run's first submission."""

    kind: str  # QUEUED, RUNNING, or FAILED (an attempt that ended in failure)
    start_s: float
    end_s: float
    label: str


@dataclass(frozen=True)
class Bar:
    """One job's row of the Gantt chart."""

    row: JobRow
    segments: tuple[Segment, ...]
    retries_at_s: tuple[float, ...]  # where each attempt after the first started


def time_unit(span_s: float) -> tuple[str, float]:
    """The unit a time axis spanning ``span_s`` seconds reads best in, and its seconds."""
    if span_s <= 180:
        return "s", 1.0
    if span_s <= 3 * 3600:
        return "min", 60.0
    return "h", 3600.0


def _s(ms: int, origin_ms: int) -> float:
    return (ms - origin_ms) / 1000


def gantt_bars(rows: Sequence[JobRow]) -> list[Bar]:
    """The chart's bars: queue waits, then each attempt's run; failed attempts apart."""
    origins = [t for r in rows for t in (r.submitted_ms, r.first_start_ms) if t is not None]
    if not origins:
        return [Bar(row, (), ()) for row in rows]
    origin = min(origins)
    bars = []
    for row in rows:
        segments: list[Segment] = []
        retries: list[float] = []
        cursor = row.submitted_ms
        for number, attempt in enumerate(row.attempts, start=1):
            if attempt.started_ms is None:
                continue
            if cursor is not None and attempt.started_ms > cursor:
                what = "queued" if number == 1 else f"queued again before attempt {number}"
                segments.append(Segment(QUEUED, _s(cursor, origin), _s(attempt.started_ms, origin),
                                        f"{what}: {(attempt.started_ms - cursor) / 1000:.1f} s"))
            if number > 1:
                retries.append(_s(attempt.started_ms, origin))
            end = attempt.stopped_ms or row.stopped_ms or attempt.started_ms
            last = number == len(row.attempts)
            kind = FAILED if (not last or row.failed) else RUNNING
            outcome = f": {attempt.reason}" if attempt.reason and kind == FAILED else ""
            ran_s = (end - attempt.started_ms) / 1000
            segments.append(Segment(
                kind, _s(attempt.started_ms, origin), _s(end, origin),
                f"attempt {number}/{len(row.attempts)} ran {ran_s:.1f} s{outcome}",
            ))
            cursor = end
        if not row.attempts and row.submitted_ms is not None and row.stopped_ms is not None:
            segments.append(Segment(
                QUEUED, _s(row.submitted_ms, origin), _s(row.stopped_ms, origin),
                f"queued, never ran: {row.reason or row.state}",
            ))
        bars.append(Bar(row, tuple(segments), tuple(retries)))
    return bars


# ---- writing the report ---------------------------------------------------------------------


@dataclass(frozen=True)
class ReportPaths:
    """What :func:`write_report` wrote, and the cost it estimated."""

    html: Path
    png: Path | None  # None when matplotlib is not installed
    cost: CostEstimate
    jobs: int


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


PNG_MAX_JOBS = 500


def write_report(
    work_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    prices: Prices | str | os.PathLike[str] | None = None,
    log_tails: Mapping[str, Sequence[str]] | None = None,
    *,
    platform: str | None = None,
    spot: bool = False,
    title: str | None = None,
) -> ReportPaths:
    """Write ``nipype_batch_report.html`` (and ``.png``, the Gantt chart) for a run.

    Parameters
    ----------
    work_dir : path
        The workflow's ``base_dir``: every ``_nipype_batch.json`` below it is reported.
    out_dir : path, optional
        Where to write; ``work_dir`` by default, next to the workflow.
    prices : Prices or path, optional
        :class:`~nipype_batch.cost.Prices`, or a JSON file overriding the packaged prices.
    log_tails : mapping, optional
        Job id -> last log lines, shown under each failed job. Without one, a failed node's
        remote traceback (from its ``crashstore.pklz``) is shown.
    platform, spot :
        Where the jobs ran, when ``prices`` is not a :class:`Prices` (EC2 on demand by default).
    title : str, optional
        The page's heading (the work directory by default).
    """
    from .report_html import render_html

    rows = collect_jobs(work_dir)
    if not isinstance(prices, Prices):
        prices = load_prices(platform or DEFAULT_PLATFORM, spot=spot, override=prices)
    cost = estimate(rows, prices)
    tails = {job_id: list(lines) for job_id, lines in (log_tails or {}).items()}
    for row in rows:
        if row.failed and row.job_id not in tails:
            tails[row.job_id] = crash_traceback(row.node_dir)
    out = Path(out_dir or work_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    html_path = out / HTML_NAME
    html_path.write_text(render_html(rows, cost, tails, title or str(Path(work_dir).resolve())),
                         encoding="utf-8")
    png_path: Path | None = out / PNG_NAME
    if len(rows) > PNG_MAX_JOBS:
        # a bar per job stops being readable long before this, and matplotlib takes ~10 ms
        # per bar: a 10,000-job run would wait minutes for a picture nobody can read
        log.info("No PNG chart for %d jobs (more than %d); the HTML page has every job",
                 len(rows), PNG_MAX_JOBS)
        png_path = None
    else:
        try:
            from .report_png import render_png
        except ImportError as exc:
            log.warning("No PNG chart (%s): pip install 'nipype-batch[report]'", exc)
            png_path = None
        else:
            render_png(gantt_bars(rows), png_path)
    log.info("Run report: %s (%d jobs; %s)", html_path, len(rows), cost.summary())
    return ReportPaths(html=html_path, png=png_path, cost=cost, jobs=len(rows))
