"""A job's log in CloudWatch, found by node or job id: tail or follow.

Finding the job needs no AWS: finished nodes name theirs in ``_nipype_batch.json``, jobs in
flight are in the work directory's journal. Reading goes through a :class:`BatchClient` (the
job's state, its log stream, pages of it), so it runs against AWS and the local stack alike.
The log group is Batch's default, :data:`~nipype_batch.aws.batch.LOG_GROUP`.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from .aws.batch import BatchClient
from .errors import NipypeBatchError
from .journal import Journal
from .report.collect import collect_jobs
from .report.model import JobRow

_JOB_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}(:\d+)?$")


@dataclass(frozen=True)
class JobRef:
    """A job found for a name given on the command line."""

    job_id: str
    node: str  # the node directory relative to the work directory ("" if only an id is known)
    in_flight: bool = False


def _candidates(work_dir: str) -> list[JobRef]:
    """Jobs known under ``work_dir``: in flight (journal) first, then finished (provenance)."""
    root = os.path.abspath(work_dir)
    found = [JobRef(e["job_id"], os.path.relpath(e.get("node_dir", ""), root), in_flight=True)
             for e in Journal(root).entries() if e.get("job_id")]
    flying = {ref.node for ref in found}
    # a pack is one job row: each of its nodes names that job
    found += [JobRef(row.job_id, node) for row in collect_jobs(root)
              for node in (row.nodes or (row.node,)) if node not in flying]
    return found


def _matches(name: str, ref: JobRef) -> bool:
    """``name`` is the end of the node's path, or of its Nipype fullname (``wf.sub.node``:
    the path without the iterables' ``_subject_01`` folders)."""
    path = name.strip("/") if "/" in name else name.replace(".", "/")
    fullname = "/".join(part for part in ref.node.split("/") if not part.startswith("_"))
    return any(full == path or full.endswith("/" + path) for full in (ref.node, fullname))


def find_job(name: str, work_dir: str | None) -> JobRef:
    """The job a node name or job id names.

    Parameters
    ----------
    name : str
        A Batch job id; a node's directory relative to the work directory
        (``wf/_subject_01/fit``); its Nipype fullname (``wf.fit``); or its bare name (``fit``).
    work_dir : str, optional
        The workflow's ``base_dir``; without one, ``name`` must be a job id.
    """
    if work_dir is None:
        if not _JOB_ID.match(name):
            raise NipypeBatchError(
                f"{name!r} is not a Batch job id: to find a node by name, say where the run "
                "is with --work-dir BASE_DIR"
            )
        return JobRef(name, "")
    if not os.path.isdir(work_dir):
        raise NipypeBatchError(f"no such work directory: {work_dir}")
    refs = _candidates(work_dir)
    exact = [ref for ref in refs if name in (ref.job_id, ref.node)]
    found = exact or [ref for ref in refs if _matches(name, ref)]
    by_job: dict[str, JobRef] = {}
    for ref in found:  # the nodes of a pack name one job
        by_job.setdefault(ref.job_id, ref)
    found = list(by_job.values())
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        listed = "\n  ".join(f"{ref.node}  ({ref.job_id})" for ref in found[:20])
        raise NipypeBatchError(
            f"{name!r} names {len(found)} jobs under {work_dir}; give a node's path or a job "
            f"id:\n  {listed}"
        )
    return JobRef(name, "")  # not a node here: taken as a job id, which Batch will confirm


def job_status(batch: BatchClient, job_id: str) -> Any:
    """The job's :class:`~nipype_batch.aws.status.JobStatus`; an error if Batch does not know it."""
    status = batch.describe([job_id]).get(job_id)
    if status is None:
        raise NipypeBatchError(
            f"AWS Batch knows no job {job_id!r}: give a job id, or a node name with "
            "--work-dir set to the workflow's base_dir (Batch forgets jobs after about a week)"
        )
    return status


def _streams(status: Any) -> list[str]:
    streams = [(a.get("container") or {}).get("logStreamName") for a in status.attempts]
    if status.log_stream and status.log_stream not in streams:
        streams.append(status.log_stream)
    return [s for s in streams if s]


def follow(
    batch: BatchClient,
    job_id: str,
    lines: int = 40,
    poll_s: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
    on_stream: Callable[[str], None] | None = None,
) -> Iterator[str]:
    """The job's log lines as they arrive, until the job has ended and its log is read.

    Starts with the last ``lines`` lines of the current stream, then pages forward with
    ``nextForwardToken``. A retried job moves to a new stream: ``on_stream`` is told of each.
    """
    stream: str | None = None
    token: str | None = None
    while True:
        status = job_status(batch, job_id)
        streams = _streams(status)
        if streams and streams[-1] != stream:
            stream, token = streams[-1], None
            if on_stream is not None:
                on_stream(stream)
        messages: list[str] = []
        if stream:
            page = batch.log_page(stream, token, lines)
            messages = page.messages
            # an empty stream's token is not a position to continue from: start again later
            if messages or token:
                token = page.next_token
        yield from messages
        if status.state.done and not messages:
            return
        if not messages:
            sleep(poll_s)


def failed_log_tails(batch: BatchClient, rows: Iterable[JobRow],
                     lines: int = 40) -> dict[str, list[str]]:
    """Job id -> last log lines, for the failed jobs among ``rows`` (for the run report)."""
    return {row.job_id: batch.log_tail(row.log_stream, lines) for row in rows if row.failed}
