"""The run's budget (``budget_usd``): no job is submitted that would take the spend past it.

The spend is the run's cost so far as the progress line shows it (collected jobs, and the
running ones up to now, at the report's prices) plus what the jobs in flight are still
expected to cost. A job's expected cost is its nodes' median runtimes in the run history (a
node the history has not seen: :data:`~nipype_batch.driver.packs.SHORT_NODE_S`) and the
runner's measured setup, billed at least the platform's minimum, at its vCPUs and memory.
Once a job would pass the budget, the run submits nothing more: the plugin lets the running
jobs finish or cancels them (``budget_action``), then ends with :class:`BudgetExceededError`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..aws.status import JobStatus
from ..report.cost import Prices, significant, usage_cost
from .jobs import PreparedJob, SubmittedJob

log = logging.getLogger("nipype_batch")


@dataclass(frozen=True)
class BudgetStop:
    """Why the run stopped submitting: the spend then, and the job that would have passed."""

    spent: float  # the projected spend when the next job came (currency of the prices)
    next_job: str  # its (first) node
    next_cost: float


class Budget:
    """Admits prepared jobs while the run's projected spend stays within ``limit``.

    Parameters
    ----------
    limit : float
        ``budget_usd``.
    prices : Prices
        The platform's prices (the report's): a job is billed as the report bills it.
    runtimes : mapping
        History key -> median runtime (s) of the node.
    default_runtime_s : float
        What a node without history is assumed to run.
    setup_s, handoff_s : float
        The runner's own seconds per job before its nodes (imports, inputs staged in) and
        per node after it (outputs staged out), as the run history measured them.
    """

    def __init__(self, limit: float, prices: Prices, runtimes: Mapping[str, float],
                 default_runtime_s: float, setup_s: float = 0.0,
                 handoff_s: float = 0.0) -> None:
        self.limit = limit
        self.prices = prices
        self.runtimes = dict(runtimes)
        self.default_runtime_s = default_runtime_s
        self.setup_s = setup_s
        self.handoff_s = handoff_s
        self.stop: BudgetStop | None = None
        self.held: list[PreparedJob] = []  # prepared, never submitted
        self._expected: list[tuple[SubmittedJob, float]] = []  # submitted: (job, its cost)

    @property
    def stopped(self) -> bool:
        return self.stop is not None

    def _discount(self) -> float:
        return 1 - self.prices.spot_discount if self.prices.spot else 1.0

    def expected_cost(self, item: PreparedJob) -> float:
        """What the job is expected to bill: its nodes one after the other, and the setup."""
        return self._cost([view for _taskid, view in item.members] or [item.job],
                          item.job.resources.vcpus, item.job.resources.memory_mb)

    def _cost(self, nodes: list[SubmittedJob], vcpus: float, memory_mb: int) -> float:
        seconds = self.setup_s + sum(
            self.runtimes.get(view.history_key, self.default_runtime_s) + self.handoff_s
            for view in nodes)
        return usage_cost(vcpus, memory_mb, seconds, self.prices) * self._discount()

    def projected(self, spent_so_far: float, statuses: Mapping[str, JobStatus],
                  open_ids: set[str]) -> float:
        """The spend so far plus what the submitted jobs still open (``open_ids``: in flight,
        by job or array id) are expected to bill (their expected cost less what they billed
        already)."""
        now_ms = time.time() * 1000
        remaining, unfinished = 0.0, []
        for job, expected in self._expected:
            status = statuses.get(job.job_id)
            if (job.array_job_id or job.job_id) not in open_ids or (
                    status is not None and status.state.done):
                continue  # billed in full: counted in the spend so far
            billed = 0.0
            if status is not None and status.started_at:
                billed = usage_cost(job.resources.vcpus, job.resources.memory_mb,
                                    (now_ms - status.started_at) / 1000,
                                    self.prices) * self._discount()
            remaining += max(0.0, expected - billed)
            unfinished.append((job, expected))
        self._expected = unfinished
        return spent_so_far + remaining

    def admit(self, prepared: Iterable[PreparedJob], spent_so_far: float,
              statuses: Mapping[str, JobStatus], open_ids: set[str]) -> list[PreparedJob]:
        """The jobs that fit the budget, in order; once one does not, it and every later
        job are held (the run submits nothing more)."""
        admitted: list[PreparedJob] = []
        projected = None
        for item in prepared:
            if self.stopped:
                self.held.append(item)
                continue
            if projected is None:
                projected = self.projected(spent_so_far, statuses, open_ids)
            cost = self.expected_cost(item)
            if projected + cost > self.limit:
                self.stop = BudgetStop(projected, _where(item.job), cost)
                self.held.append(item)
                log.warning(
                    "Budget: the job of %s, est. %s %s, would take the run's spend from %s "
                    "to %s, past budget_usd=%s: no more jobs are submitted", _where(item.job),
                    self.prices.currency, significant(cost), significant(projected),
                    significant(projected + cost), f"{self.limit:g}")
                continue
            projected += cost
            admitted.append(item)
            self._expected.append((item.job, cost))
        return admitted

    def admit_again(self, job: SubmittedJob, memory_mb: int, spent_so_far: float,
                    statuses: Mapping[str, JobStatus], open_ids: set[str]) -> bool:
        """Whether a job killed for memory may go again with ``memory_mb`` (its nodes run
        again); if not, the budget stops the run as for a new job."""
        if self.stopped:
            return False
        projected = self.projected(spent_so_far, statuses, open_ids)
        cost = self._cost([job], job.resources.vcpus, memory_mb)
        if projected + cost > self.limit:
            self.stop = BudgetStop(projected, _where(job), cost)
            log.warning("Budget: %s again with %d MiB, est. %s %s, would pass budget_usd=%s: "
                        "it is not submitted again", _where(job), memory_mb,
                        self.prices.currency, significant(cost), f"{self.limit:g}")
            return False
        self._expected.append((job, cost))
        return True

    def held_taskids(self) -> set[int]:
        """Nipype's tasks whose jobs were held: they never get a result."""
        return {taskid for item in self.held for taskid, _view in item.members
                if taskid is not None}


def _where(job: SubmittedJob) -> str:
    """The node and its parameterisation folder (``_subject_03/brain_mask``)."""
    parent = os.path.basename(os.path.dirname(job.node_dir))
    return f"{parent}/{job.node_name}" if parent.startswith("_") else job.node_name
