"""What a run shows: nodes by stage, the cost of the jobs so far, the summary and report
it leaves when it ends."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..aws.status import JobState, JobStatus
from ..platforms import Platform
from ..report.cost import Prices, load_prices, significant, usage_cost
from .jobs import SubmittedJob
from .progress import StageRow, clock

log = logging.getLogger("nipype_batch")


@dataclass(frozen=True)
class NodeState:
    """One node of the execution graph as the view sees it."""

    stage: str  # the node's name; a MapNode's subnodes count under the MapNode's name
    done: bool = False
    failed: bool = False
    skipped: bool = False  # downstream of a failure: will not run
    job_state: JobState | None = None  # of its job, while one is in flight


def stage_rows(nodes: Iterable[NodeState]) -> list[StageRow]:
    """Nodes by stage: done/total, running, queued (in Batch), failed."""
    counts: dict[str, Counter] = {}
    for node in nodes:
        row = counts.setdefault(node.stage, Counter())
        row["total"] += 1
        if node.failed:
            row["failed"] += 1
        elif node.skipped:
            continue
        elif node.job_state is not None:
            state = node.job_state
            row["running" if state in (JobState.STARTING, JobState.RUNNING) else
                "done" if state is JobState.SUCCEEDED else "queued"] += 1
        elif node.done:
            row["done"] += 1
    return [StageRow(name, **row) for name, row in counts.items()]


class RunCost:
    """Jobs' billed time so far at the report's prices: collected jobs, and those running."""

    def __init__(self, platform: Platform, architecture: str = "x86_64") -> None:
        self.platform = platform
        self.architecture = architecture
        self.prices: Prices | None = None
        self._collected = 0.0
        self.costed_to: dict[str, float] = {}  # pack job -> until when it is in _collected
        self._loaded = False

    def load(self) -> Prices | None:
        """The platform's prices, read once; None if they cannot be read."""
        if not self._loaded:
            self._loaded = True
            try:
                self.prices = load_prices(self.platform.capability, spot=self.platform.spot,
                                          architecture=self.architecture)
            except Exception:
                self.prices = None
        return self.prices

    def add_collected(self, job: SubmittedJob, status: JobStatus) -> None:
        """Count a job whose result is home (its final attempt's running time)."""
        prices = self.load()
        if prices is not None and status.started_at:
            self._collected += job_cost(job, status.started_at,
                                        status.stopped_at or status.started_at, prices)

    def total(self, in_flight: Iterable[SubmittedJob],
              statuses: Mapping[str, JobStatus]) -> float | None:
        """The estimate so far, in the prices' currency; None without prices."""
        prices = self.load()
        if prices is None:
            return None
        now_ms = time.time() * 1000
        jobs = {job.job_id: job for job in in_flight}.values()  # a pack's nodes share one
        running = 0.0
        for job in jobs:
            status = statuses.get(job.job_id)
            if status is None or not status.started_at:
                continue
            # a pack's job: the part before its last collected node is counted already
            since = max(status.started_at, self.costed_to.get(job.job_id, 0.0))
            until = status.stopped_at or now_ms
            if until > since:
                running += job_cost(job, since, until, prices)
        return (self._collected + running) * (1 - prices.spot_discount if prices.spot else 1)

    def so_far(self, in_flight: Iterable[SubmittedJob],
               statuses: Mapping[str, JobStatus]) -> str | None:
        """The estimate as shown, e.g. ``USD 0.0123``; None without prices."""
        total = self.total(in_flight, statuses)
        if total is None or self.prices is None:
            return None
        return f"{self.prices.currency} {significant(total)}"

    def note(self) -> str:
        """Which prices the estimate uses."""
        prices = self.prices
        if prices is None:
            return ""
        return f"{prices.platform}{' Spot' if prices.spot else ''} prices of {prices.as_of}"


def job_cost(job: SubmittedJob, started_ms: float, stopped_ms: float, prices: Prices) -> float:
    """On-demand cost of one attempt's running time, by the report's rule."""
    return usage_cost(job.resources.vcpus, job.resources.memory_mb,
                      (stopped_ms - started_ms) / 1000, prices)


def summary_lines(rows: list[StageRow], crash_files: list[tuple[str, str]], submitted: int,
                  elapsed_s: float, report: str | None, cost: str | None) -> list[str]:
    """What a run leaves on screen when it ends: outcome, crash files, report, cost."""
    lines = [f"nipype-batch: {sum(r.done for r in rows)} of {sum(r.total for r in rows)} "
             f"nodes done, {len(crash_files)} failed, {submitted} jobs submitted in "
             f"{clock(elapsed_s)}"]
    lines += [f"  failed: {node}: crash file {path}" for node, path in crash_files]
    if report:
        lines.append(f"  report: {report}")
    if cost:
        lines.append(f"  estimated cost: {cost}")
    return lines


def write_run_report(work_dir: str, log_tails: dict[str, list[str]],
                     platform: Platform, architecture: str = "x86_64") -> str | None:
    """The run report next to the workflow; a failure here never hides the run's own."""
    try:
        from ..report import write_report

        paths = write_report(work_dir, log_tails=log_tails, platform=platform.capability,
                             spot=platform.spot, architecture=architecture)
        log.debug("Run report of %d jobs written to %s", paths.jobs, paths.html)
        return str(paths.html)
    except Exception as exc:
        log.warning("Could not write the run report: %s", exc)
        return None
