"""AWS Batch job states and what they mean for the driver."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class JobState(StrEnum):
    """A Batch job's status (the API's own names)."""

    SUBMITTED = "SUBMITTED"
    PENDING = "PENDING"
    RUNNABLE = "RUNNABLE"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"

    @property
    def done(self) -> bool:
        """True once the job will not change state again (see :data:`FINISHED_STATES`)."""
        return self in FINISHED_STATES


# The states a job never leaves: the one definition of "finished" (``in`` works on the API's
# plain strings too). Every count, wait and cancel in the package reads it.
FINISHED_STATES = (JobState.SUCCEEDED, JobState.FAILED)


@dataclass(frozen=True)
class JobStatus:
    """What one DescribeJobs entry tells about a job."""

    job_id: str
    state: JobState
    reason: str | None = None
    exit_code: int | None = None
    # The container's own reason, apart from the job's: where Batch says a container was
    # killed for memory ("OutOfMemoryError: Container killed due to memory usage").
    container_reason: str | None = None
    created_at: int | None = None
    started_at: int | None = None
    stopped_at: int | None = None
    log_stream: str | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    # An array job's parent: how many children are in each state (the API's statusSummary).
    array_summary: dict[str, int] | None = None

    @classmethod
    def from_description(cls, job: dict[str, Any]) -> JobStatus:
        """Build from one ``describe_jobs()['jobs']`` entry."""
        container = job.get("container") or {}
        attempts = job.get("attempts") or []
        log_stream = container.get("logStreamName")
        if not log_stream and attempts:
            log_stream = (attempts[-1].get("container") or {}).get("logStreamName")
        return cls(
            job_id=job["jobId"],
            state=JobState(job["status"]),
            reason=job.get("statusReason"),
            exit_code=container.get("exitCode"),
            container_reason=container.get("reason") or (
                ((attempts[-1].get("container") or {}).get("reason")) if attempts else None),
            created_at=job.get("createdAt"),
            started_at=job.get("startedAt"),
            stopped_at=job.get("stoppedAt"),
            log_stream=log_stream,
            attempts=attempts,
            # a parent has a size (its summary may still be empty); a child has an index
            array_summary=(dict((job.get("arrayProperties") or {}).get("statusSummary") or {})
                           if "size" in (job.get("arrayProperties") or {}) else None),
        )


OUT_OF_MEMORY = "OutOfMemoryError"  # how Batch's container reason starts for a memory kill


def out_of_memory(status: JobStatus) -> bool:
    """Whether the job's container was killed for using more memory than it asked."""
    return (status.container_reason or "").startswith(OUT_OF_MEMORY)


QUEUED = (JobState.SUBMITTED, JobState.PENDING, JobState.RUNNABLE)


def next_poll_interval(states: Iterable[JobState], current: float, shortest: float,
                       longest: float) -> float:
    """Seconds until the next status poll.

    Short while some job runs (it may finish any moment, and its dependents wait on the
    poll); doubling up to ``longest`` while every job is still queued, when polling fast
    only spends API calls.
    """
    states = list(states)
    if not states or any(state not in QUEUED for state in states):
        return shortest
    return min(longest, max(shortest, current * 2))
