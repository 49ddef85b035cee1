"""The run report's records: one job's attempts and outcome, and totals over a run.

Pure data, built by :mod:`.collect` from node directories; every other module of the report
reads these. Imports nothing else of the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..aws.status import JobState


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
    nodes: tuple[str, ...] = ()  # every node of a pack (a job that ran several), else empty

    @property
    def failed(self) -> bool:
        """The node did not produce its result."""
        return self.state != JobState.SUCCEEDED or self.node_failed

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
