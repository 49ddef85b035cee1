"""The contract between the driver and the runner inside a job: names both sides agree on.

Three parts: the job's environment and exit codes; the job's payload, a typed record whose
version the runner checks; and the layout of a node directory (which files are Nipype's and our
bookkeeping, which one commits the node). Everything that moves or reads node directories
(staging, bundles, the driver, the runner, provenance) asks here.
"""

from __future__ import annotations

import fnmatch
import json
import os
from dataclasses import asdict, dataclass, field

PAYLOAD_ENV = "NIPYPE_BATCH_PAYLOAD"  # s3:// URI of the job's payload JSON
ENDPOINT_ENV = "NIPYPE_BATCH_ENDPOINT_URL"  # custom AWS endpoint (local stack, emulators)
EXIT_NODE_FAILED = 3  # the node raised; its traceback is in the result file
EXIT_RUNNER_FAILED = 2  # staging or payload failed: an infrastructure error
PAYLOAD_VERSION = 4

# An array job's children share one environment: the payload URI holds this placeholder, which
# each child replaces with the index AWS Batch gives it, to find its own payload.
ARRAY_INDEX_ENV = "AWS_BATCH_JOB_ARRAY_INDEX"
ARRAY_INDEX_PLACEHOLDER = "{array_index}"


def payload_uri_for(template: str, environ: dict[str, str]) -> str:
    """The payload URI of this job: an array child's own, or the template as it is."""
    if ARRAY_INDEX_PLACEHOLDER not in template:
        return template
    index = environ.get(ARRAY_INDEX_ENV)
    if index is None or not index.isdigit():
        raise ValueError(
            f"payload {template} is an array job's, but ${ARRAY_INDEX_ENV} is {index!r}"
        )
    return template.replace(ARRAY_INDEX_PLACEHOLDER, index)


class PayloadVersionError(ValueError):
    """The job's payload was written by a driver of another version than the job's runner."""


@dataclass
class PackMember:
    """One node of a job: a job runs one node, or a pack of nodes in dependency order."""

    node_dir: str
    node_name: str  # names the result file even if the node's pickle cannot load
    node_pickle: str  # base64 of Nipype's pickled {"node", "updatehash"}
    bundle_key: str | None = None  # where the runner packs the node's bookkeeping files
    string_paths: list[str] = field(default_factory=list)  # paths in strings it may write
    after: list[int] = field(default_factory=list)  # members (indices) it waits for


@dataclass
class JobPayload:
    """What one job runs: written by the driver as JSON in S3, read by the runner in the job."""

    bucket: str
    prefix: str  # of the staging keys; a path P is stored under <prefix>/P
    members: list[PackMember]  # the nodes this job runs (one, or a pack)
    inputs: list[dict[str, str]]  # StagedPath fields: fetched once, before any node runs
    # Control key under which the runner marks each member as it commits (``<i>`` holding
    # {"state": ...}): the driver resolves a pack's nodes one by one, and a retried job
    # skips the members an earlier attempt finished. None for a job of one node.
    done_prefix: str | None = None
    parallel: int = 1  # members run at once (the job's vCPUs)
    environment: dict[str, str] | None = None  # too large for Batch's container overrides
    version: int = PAYLOAD_VERSION

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> JobPayload:
        """Read a payload, refusing one of another version with what to do about it."""
        fields = json.loads(data)
        version = fields.get("version")
        if version != PAYLOAD_VERSION:
            raise PayloadVersionError(
                f"this job's payload has version {version}, but the nipype-batch in the job's "
                f"image reads version {PAYLOAD_VERSION}: the image holds another nipype-batch "
                "than the driver. Let the driver build the image (drop plugin_args 'image'), "
                "or install the driver's nipype-batch version in the image you name.")
        known = {k: v for k, v in fields.items() if k in cls.__dataclass_fields__}
        known["members"] = [PackMember(**m) for m in known.get("members", [])]
        return cls(**known)


# A member's done marker is the key ``<done_prefix>/<index>.<state>``: one listing tells all.
MEMBER_SUCCEEDED, MEMBER_FAILED, MEMBER_SKIPPED = "succeeded", "failed", "skipped"


def member_marker(done_prefix: str, index: int, state: str) -> str:
    """Key of the marker saying that member ``index`` of a pack ended in ``state``."""
    return f"{done_prefix}/{index}.{state}"


def read_marker(name: str) -> tuple[int, str] | None:
    """``(index, state)`` of a marker's last key part, ``'3.succeeded'``; None if not one."""
    index, _, state = name.rpartition(".")
    if not index.isdigit() or state not in (MEMBER_SUCCEEDED, MEMBER_FAILED, MEMBER_SKIPPED):
        return None
    return int(index), state


# ---- the node directory ------------------------------------------------------------------

PROVENANCE_FILE = "_nipype_batch.json"  # which job ran the node, where and how
NODE_PICKLE = "_nipype_batch_node.pklz"  # the node as the runner receives it (removed after)
CRASH_FILE = "crashstore.pklz"  # where the driver keeps a failed node's result file
MAPFLOW = "mapflow"  # a MapNode's subnode directories: <mapnode>/mapflow/_<name><i>/
PARTIAL_SUFFIX = ".nbpart"  # a file being written; renamed into place when complete
RESULT_PATTERN = "result_*.pklz"

# Files of a node directory the driver needs to continue the graph and to see the cache.
BOOKKEEPING = (RESULT_PATTERN, "_0x*.json", "_inputs.pklz", "_node.pklz", "_report/*",
               PROVENANCE_FILE)


def result_file_name(node_name: str) -> str:
    """Nipype's result file of a node: written last, so it marks the node as done."""
    return f"result_{node_name}.pklz"


def hash_file_name(hashvalue: str) -> str:
    """Nipype's record of the inputs' hash: with the result file, what a cache hit needs."""
    return f"_0x{hashvalue}.json"


def result_path(node_dir: str, node_name: str) -> str:
    """Path of the node's result file."""
    return os.path.join(node_dir, result_file_name(node_name))


def is_bookkeeping(relpath: str) -> bool:
    """Whether a file of a node directory (relative path) is Nipype's or our bookkeeping."""
    parts = relpath.split("/")
    if len(parts) >= 3 and parts[0] == MAPFLOW:
        relpath = "/".join(parts[2:])
    return any(fnmatch.fnmatch(relpath, pattern) for pattern in BOOKKEEPING)


def is_result_file(relpath: str) -> bool:
    """The node's own result file: the commit marker, always moved last."""
    return "/" not in relpath and fnmatch.fnmatch(relpath, RESULT_PATTERN)
