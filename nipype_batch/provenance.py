"""``_nipype_batch.json`` in each node directory: which job ran the node, where and how.

The runner writes the ``runner`` section inside the job; the driver adds the ``job`` section
(what it asked of Batch and what Batch reported) once the job has finished.
"""

from __future__ import annotations

import glob
import json
import os
from typing import Any

from .aws.batch import LOG_GROUP
from .aws.status import JobStatus
from .protocol import MAPFLOW, PROVENANCE_FILE
from .resources import JobResources


def read_provenance(node_dir: str) -> dict[str, Any]:
    """The node's provenance record, or ``{}`` if the node did not run as a job."""
    path = os.path.join(node_dir, PROVENANCE_FILE)
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {}


def output_files(node_dir: str) -> list[str]:
    """Absolute paths of the files the node's outputs name, as the runner recorded them."""
    return list(read_provenance(node_dir).get("runner", {}).get("output_files", []))


def job_record(
    *,
    job_id: str,
    job_name: str,
    job_queue: str,
    job_definition: str,
    image: str,
    resources: JobResources,
    status: JobStatus,
    log_stream: str | None,
) -> dict[str, Any]:
    """The ``job`` section: what was asked and what Batch reported."""
    return {
        "job_id": job_id,
        "job_name": job_name,
        "job_queue": job_queue,
        "job_definition": job_definition,
        "image": image,
        "vcpus": resources.vcpus,
        "memory_mb": resources.memory_mb,
        "gpus": resources.gpus,
        "timeout_s": resources.timeout_s,
        "attempts_allowed": resources.attempts,
        "status": status.state.value,
        "status_reason": status.reason,
        "container_reason": status.container_reason,
        "exit_code": status.exit_code,
        "attempts": len(status.attempts) or 1,
        "attempt_details": status.attempts,
        "log_group": LOG_GROUP,
        "log_stream": log_stream,
        "submitted_at_ms": status.created_at,
        "started_at_ms": status.started_at,
        "stopped_at_ms": status.stopped_at,
    }


def write_job_record(node_dir: str, record: dict[str, Any]) -> None:
    """Merge the ``job`` section into the node's provenance file."""
    _merge(node_dir, "job", record)


def write_collated(node_dir: str) -> list[str]:
    """Record, for a MapNode collated on the driver, the output files of all its subnodes.

    Nodes downstream read that list to fetch what they need (:func:`output_files`), as they
    do for a node that ran as a job. Returns it.
    """
    found: list[str] = []
    for sub_record in sorted(glob.glob(os.path.join(node_dir, MAPFLOW, "*", PROVENANCE_FILE))):
        found += output_files(os.path.dirname(sub_record))
    _merge(node_dir, "runner", {"collated_on_driver": True, "output_files": found})
    return found


def note_memory_raised(node_dir: str, killed: list[dict[str, Any]]) -> None:
    """Add to the ``job`` section the jobs killed for memory before the one that ran the
    node (each: job id, memory asked, container reason)."""
    job = dict(read_provenance(node_dir).get("job") or {})
    job["memory_raised"] = killed
    _merge(node_dir, "job", job)


def _merge(node_dir: str, section: str, record: dict[str, Any]) -> None:
    data = read_provenance(node_dir)
    data[section] = record
    os.makedirs(node_dir, exist_ok=True)
    tmp = os.path.join(node_dir, PROVENANCE_FILE + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
    os.replace(tmp, os.path.join(node_dir, PROVENANCE_FILE))
