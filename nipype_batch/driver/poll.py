"""The jobs in flight and their Batch states: one batched poll for all of them."""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import replace
from typing import Any

from ..aws.status import FINISHED_STATES, JobState, JobStatus, next_poll_interval
from ..errors import BatchJobError
from ..journal import Journal
from ..protocol import MEMBER_FAILED, MEMBER_SUCCEEDED, read_marker
from ..settings import BatchSettings
from .jobs import SubmittedJob

# What a pack's member marker says of the node, as a job's outcome would.
_MEMBER_OUTCOME = {MEMBER_SUCCEEDED: (JobState.SUCCEEDED, 0), MEMBER_FAILED: (JobState.FAILED, 3)}


def member_status(job_status: JobStatus, state: str) -> JobStatus:
    """A pack member's status: its job's, with the member's own outcome."""
    outcome, code = _MEMBER_OUTCOME.get(state, (JobState.FAILED, None))
    if outcome is JobState.SUCCEEDED or code is not None:
        return replace(job_status, state=outcome, exit_code=code, reason=None)
    return replace(job_status, state=outcome, exit_code=None,
                   reason="skipped: a node it waits for in the same job failed")

log = logging.getLogger("nipype_batch")


class JobsInFlight:
    """Every job this driver waits for, by Nipype's task id, and what Batch last said of it.

    One DescribeJobs per 100 jobs or arrays in flight; an array's children are described only
    once the array has ended, to learn each one's outcome. The poll interval adapts to the
    states seen (see :func:`next_poll_interval`).
    """

    def __init__(self, batch: Any, settings: BatchSettings, journal: Journal,
                 stager: Any = None) -> None:
        self.batch = batch
        self.stager = stager  # lists the markers of packs
        self.settings = settings
        self.journal = journal
        self.jobs: dict[int, SubmittedJob] = {}
        self.statuses: dict[str, JobStatus] = {}
        self.array_statuses: dict[str, JobStatus] = {}
        self._array_children: Counter[str] = Counter()  # children in flight per array
        self._tasks_of: Counter[str] = Counter()  # tasks waiting per job (a pack's nodes)
        # Each pack's member markers seen so far: done prefix -> {member index: state}.
        self._marked: dict[str, dict[int, str]] = {}
        self._runnable_since: dict[str, float] = {}  # job id -> when first seen RUNNABLE
        self._warned: set[str] = set()
        self._reasons: dict[str, str] = {}  # job id -> the RUNNABLE reason last shown
        # Nipype's stop_on_first_crash: a failed node of a pack resolves at once, not when its
        # job ends (the run stops on it; its crash file gets the job's log so far)
        self.fail_fast = False
        self.interval = settings.poll_min_s
        self.next_poll = 0.0
        self.polls = 0  # each one DescribeJobs per 100 jobs or arrays
        self.submitted_job_ids: list[str] = []
        self.array_job_ids: list[str] = []
        # Jobs (or arrays) this driver submitted and has not seen end, whether or not a task
        # waits for them now: a pack's job runs on between the nodes Nipype has asked for.
        self.open_jobs: set[str] = set()

    def track(self, taskid: int, job: SubmittedJob, submitted: bool = True) -> None:
        """Wait for ``job`` (one node's view of it: a pack's nodes share one job);
        ``submitted`` is False for a job an earlier driver submitted."""
        self.jobs[taskid] = job
        self._tasks_of[job.job_id] += 1
        if job.array_job_id:
            self._array_children[job.array_job_id] += 1
        if submitted and job.hashvalue:
            self.journal.record(job.node_dir, job.hashvalue, job.journal_entry())

    def forget(self, taskid: int) -> None:
        """The task's result is home (or it failed): stop following its job."""
        job = self.jobs.pop(taskid, None)
        if job is None:
            return
        if job.hashvalue:
            self.journal.forget(job.node_dir, job.hashvalue)
        self._tasks_of[job.job_id] -= 1
        if not self._tasks_of[job.job_id]:  # the last node of its job
            del self._tasks_of[job.job_id]
            self.statuses.pop(job.job_id, None)
            self._marked.pop(job.done_prefix or "", None)
        if job.array_job_id:
            self._array_children[job.array_job_id] -= 1
            if not self._array_children[job.array_job_id]:
                self.array_statuses.pop(job.array_job_id, None)
                del self._array_children[job.array_job_id]

    def due(self) -> bool:
        return time.monotonic() >= self.next_poll

    def finished_status(self, taskid: int) -> JobStatus | None:
        """The node's final status once its job has ended, else None. A node of a pack ends
        when its marker appears: then its job's status as the node saw it."""
        job = self.jobs[taskid]
        status = self.statuses.get(job.job_id)
        if job.done_prefix is not None and job.pack_index is not None:
            state = self._marked.get(job.done_prefix, {}).get(job.pack_index)
            # A failed node waits for its job to end: its crash file gets the job's log,
            # which reaches CloudWatch late (and nothing but its own downstream waits).
            if state == MEMBER_SUCCEEDED and status is not None:
                return member_status(status, state)
            if state is not None and status is not None and (status.state.done
                                                              or self.fail_fast):
                return member_status(status, state)
        return status if status is not None and status.state.done else None

    def refresh(self) -> Counter:
        """Poll Batch once for every job in flight; return how many jobs are in each state."""
        self.polls += 1
        in_flight = list(self.jobs.values())
        top = {job.array_job_id or job.job_id for job in in_flight}
        for job_id, status in self.batch.describe(top | self.open_jobs).items():
            if status.state.done:
                self.open_jobs.discard(job_id)
            if job_id not in top:
                continue  # open, but no task waits for it now
            if job_id in self.array_statuses or status.array_summary is not None:
                self.array_statuses[job_id] = status
            else:
                self.statuses[job_id] = status
        self._check_runnable(top)
        ended = {a for a, status in self.array_statuses.items() if status.state.done}
        waiting: dict[str, list[int]] = {}
        for job in in_flight:
            # A child can still read as running just after its parent ended (DescribeJobs is
            # eventually consistent): described again on every poll until it reads final.
            known = self.statuses.get(job.job_id)
            if job.array_job_id in ended and (known is None or not known.state.done):
                waiting.setdefault(job.array_job_id, []).append(job.array_index)
        for array_id, indices in waiting.items():
            self.statuses.update(self.batch.describe_children(array_id, indices))
        self._read_markers(in_flight)
        states = self._states(in_flight, top)
        self.interval = next_poll_interval(states.elements(), self.interval,
                                           self.settings.poll_min_s, self.settings.poll_max_s)
        self.next_poll = time.monotonic() + self.interval
        return states

    def _check_runnable(self, top: set[str]) -> None:
        """Jobs waiting for an instance: end the run on a reason that means never (Batch's
        MISCONFIGURATION:...), warn once about one that waits long (CAPACITY:..., a low EC2
        vCPU quota), naming Batch's reason."""
        now = time.monotonic()
        for job_id in top:
            status = self.statuses.get(job_id) or self.array_statuses.get(job_id)
            if status is None or status.state is not JobState.RUNNABLE:
                self._runnable_since.pop(job_id, None)
                continue
            reason = status.reason or ""
            if reason.startswith("MISCONFIGURATION"):
                raise BatchJobError(
                    f"job {job_id} ({self._name_of(job_id)}) can never start: Batch says "
                    f"{reason!r}. {_misconfiguration_fix(reason)}")
            if reason and self._reasons.get(job_id) != reason:  # shown while it waits
                self._reasons[job_id] = reason
                log.info("Job %s (%s) waits for an instance: %s", job_id,
                         self._name_of(job_id), reason)
            since = self._runnable_since.setdefault(job_id, now)
            if now - since >= self.settings.runnable_warning_s and job_id not in self._warned:
                self._warned.add(job_id)
                log.warning("Job %s (%s) has waited %.0f s for an instance (RUNNABLE): %s",
                            job_id, self._name_of(job_id), now - since,
                            reason or "Batch gives no reason; check the compute "
                            "environment's state and your account's EC2 vCPU quota")

    def _name_of(self, job_id: str) -> str:
        """The nodes a job runs, for a message (a scan of the jobs: only when one is said)."""
        names = [job.node_name for job in self.jobs.values()
                 if job_id in (job.job_id, job.array_job_id)]
        return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")

    def _read_markers(self, in_flight: list[SubmittedJob]) -> None:
        """List the markers of each pack that runs (or has just ended) and has nodes Nipype
        waits for: one request per pack, and its nodes resolve one by one."""
        prefixes = set()
        for job in in_flight:
            status = self.statuses.get(job.job_id)
            if (job.done_prefix is None or status is None
                    or status.state not in (JobState.RUNNING, *FINISHED_STATES)):
                continue
            if job.pack_index not in self._marked.get(job.done_prefix, {}):
                prefixes.add(job.done_prefix)
        for prefix in sorted(prefixes):
            found = (read_marker(name) for name in self.stager.list_control(prefix))
            self._marked[prefix] = dict(item for item in found if item is not None)

    def _states(self, in_flight: list[SubmittedJob], top: set[str]) -> Counter:
        """How many jobs in flight are in each state; an array counts its children."""
        states: Counter = Counter()
        for job_id in dict.fromkeys(job.job_id for job in in_flight):  # a pack counts once
            if job_id in self.statuses:
                states[self.statuses[job_id].state] += 1
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

    def cancel(self, run_id: str, untracked: bool = True) -> None:
        """Terminate every job still in flight (an array's children go with it): those tasks
        wait for and, with ``untracked``, those this driver submitted that no task waits for
        now but that have not ended (a pack's job between the nodes Nipype asked for; after a
        run whose every node is done, such a job is only exiting)."""
        ids = list(dict.fromkeys(job.array_job_id or job.job_id for job in self.jobs.values()))
        untracked = (self.open_jobs - set(ids)) if untracked else set()
        if untracked:
            try:
                described = self.batch.describe(untracked)
            except Exception:  # unknown: terminate them all (a finished job ignores it)
                described = {}
            ids += sorted(i for i in untracked
                          if i not in described or not described[i].state.done)
        self.open_jobs.clear()
        if not ids:
            return
        log.warning("Run stopped with %d jobs in flight: terminating %s", len(ids), ", ".join(ids))
        left = self.batch.terminate(ids, reason=f"nipype-batch run {run_id} stopped")
        if left:
            log.error("Could not terminate %d jobs, which may still be running (and billing): %s",
                      len(left), ", ".join(left))
        self.jobs.clear()


def _misconfiguration_fix(reason: str) -> str:
    """What to change for one of Batch's MISCONFIGURATION reasons."""
    if "JOB_RESOURCE_REQUIREMENT" in reason:
        return ("It asks more vCPUs, memory or GPUs than any instance type of the queue's "
                "compute environments has: lower the node's vcpus, memory_mb or gpus "
                "(node.plugin_args or n_procs / mem_gb), or add larger instance types "
                "(`nipype-batch infra up --instance-types ...`).")
    if "COMPUTE_ENVIRONMENT_MAX_RESOURCE" in reason:
        return ("It asks more vCPUs than the compute environment's maxvCpus: lower the "
                "node's vcpus or raise maxvCpus (`nipype-batch infra up --max-vcpus N`).")
    if "SERVICE_ROLE_PERMISSIONS" in reason:
        return ("Batch's service role lacks permissions: recreate it "
                "(`nipype-batch infra down` then `infra up`).")
    return "Fix the queue's compute environment, or the node's resources, then run again."
