"""The jobs in flight and their Batch states: one batched poll for all of them."""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any

from ..aws.status import FINISHED_STATES, JobState, JobStatus, next_poll_interval
from ..journal import Journal
from ..settings import BatchSettings
from .jobs import SubmittedJob

log = logging.getLogger("nipype_batch")


class JobsInFlight:
    """Every job this driver waits for, by Nipype's task id, and what Batch last said of it.

    One DescribeJobs per 100 jobs or arrays in flight; an array's children are described only
    once the array has ended, to learn each one's outcome. The poll interval adapts to the
    states seen (see :func:`next_poll_interval`).
    """

    def __init__(self, batch: Any, settings: BatchSettings, journal: Journal) -> None:
        self.batch = batch
        self.settings = settings
        self.journal = journal
        self.jobs: dict[int, SubmittedJob] = {}
        self.statuses: dict[str, JobStatus] = {}
        self.array_statuses: dict[str, JobStatus] = {}
        self._array_children: Counter[str] = Counter()  # children in flight per array
        self.interval = settings.poll_min_s
        self.next_poll = 0.0
        self.polls = 0  # each one DescribeJobs per 100 jobs or arrays
        self.submitted_job_ids: list[str] = []
        self.array_job_ids: list[str] = []

    def track(self, taskid: int, job: SubmittedJob, submitted: bool = True) -> None:
        """Wait for ``job``; ``submitted`` is False for a job an earlier driver submitted."""
        self.jobs[taskid] = job
        if job.array_job_id:
            self._array_children[job.array_job_id] += 1
        if submitted:
            self.submitted_job_ids.append(job.job_id)
            self.journal.record(job.node_dir, job.hashvalue, job.journal_entry())

    def forget(self, taskid: int) -> None:
        """The task's result is home (or it failed): stop following its job."""
        job = self.jobs.pop(taskid, None)
        if job is None:
            return
        self.journal.forget(job.node_dir, job.hashvalue)
        self.statuses.pop(job.job_id, None)
        if job.array_job_id:
            self._array_children[job.array_job_id] -= 1
            if not self._array_children[job.array_job_id]:
                self.array_statuses.pop(job.array_job_id, None)
                del self._array_children[job.array_job_id]

    def due(self) -> bool:
        return time.monotonic() >= self.next_poll

    def finished_status(self, taskid: int) -> JobStatus | None:
        """The job's final status once it has ended, else None."""
        status = self.statuses.get(self.jobs[taskid].job_id)
        return status if status is not None and status.state.done else None

    def refresh(self) -> Counter:
        """Poll Batch once for every job in flight; return how many jobs are in each state."""
        self.polls += 1
        in_flight = list(self.jobs.values())
        top = {job.array_job_id or job.job_id for job in in_flight}
        for job_id, status in self.batch.describe(top).items():
            if job_id in self.array_statuses or status.array_summary is not None:
                self.array_statuses[job_id] = status
            else:
                self.statuses[job_id] = status
        ended = {a for a, status in self.array_statuses.items() if status.state.done}
        waiting: dict[str, list[int]] = {}
        for job in in_flight:
            if job.array_job_id in ended and job.job_id not in self.statuses:
                waiting.setdefault(job.array_job_id, []).append(job.array_index)
        for array_id, indices in waiting.items():
            self.statuses.update(self.batch.describe_children(array_id, indices))
        states = self._states(in_flight, top)
        self.interval = next_poll_interval(states.elements(), self.interval,
                                           self.settings.poll_min_s, self.settings.poll_max_s)
        self.next_poll = time.monotonic() + self.interval
        return states

    def _states(self, in_flight: list[SubmittedJob], top: set[str]) -> Counter:
        """How many jobs in flight are in each state; an array counts its children."""
        states: Counter = Counter()
        for job in in_flight:
            if job.job_id in self.statuses:
                states[self.statuses[job.job_id].state] += 1
        for array_id in top & set(self.array_statuses):
            summary = self.array_statuses[array_id].array_summary or {}
            for state, count in summary.items():
                if count and state not in FINISHED_STATES:
                    states[JobState(state)] += count
        return states

    def states_by_dir(self) -> dict[str, JobState]:
        """Each job's node directory and its state as far as known: an array's children are
        not described until it ends, so its summary hands out states in turn."""
        from_summary = {array_id: [JobState(state) for state, count in
                                   (status.array_summary or {}).items() for _ in range(count)]
                        for array_id, status in self.array_statuses.items()}
        states = {}
        for job in self.jobs.values():
            status = self.statuses.get(job.job_id)
            if status is not None:
                states[job.node_dir] = status.state
            elif from_summary.get(job.array_job_id or ""):
                states[job.node_dir] = from_summary[job.array_job_id or ""].pop()
            else:
                states[job.node_dir] = JobState.SUBMITTED
        return states

    def cancel(self, run_id: str) -> None:
        """Terminate every job still in flight (an array's children go with it)."""
        if not self.jobs:
            return
        ids = list(dict.fromkeys(job.array_job_id or job.job_id for job in self.jobs.values()))
        log.warning("Run stopped with %d jobs in flight: terminating %s", len(ids), ", ".join(ids))
        left = self.batch.terminate(ids, reason=f"nipype-batch run {run_id} stopped")
        if left:
            log.error("Could not terminate %d jobs, which may still be running (and billing): %s",
                      len(left), ", ".join(left))
        self.jobs.clear()
