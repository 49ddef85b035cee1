"""The contract between the driver and the runner inside a job: names both sides agree on,
and the job's payload, a typed record whose version the runner checks."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

PAYLOAD_ENV = "NIPYPE_BATCH_PAYLOAD"  # s3:// URI of the job's payload JSON
ENDPOINT_ENV = "NIPYPE_BATCH_ENDPOINT_URL"  # custom AWS endpoint (local stack, emulators)
PROVENANCE_FILE = "_nipype_batch.json"  # in each node directory
EXIT_NODE_FAILED = 3  # the node raised; its traceback is in the result file
EXIT_RUNNER_FAILED = 2  # staging or payload failed: an infrastructure error
PAYLOAD_VERSION = 3

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
class JobPayload:
    """What one job runs: written by the driver as JSON in S3, read by the runner in the job."""

    bucket: str
    prefix: str  # of the staging keys; a path P is stored under <prefix>/P
    node_dir: str
    node_name: str  # names the result file even if the node's pickle cannot load
    node_pickle: str  # base64 of Nipype's pickled {"node", "updatehash"}: one object per job
    inputs: list[dict[str, str]]  # StagedPath fields: what the job fetches before it runs
    bundle_key: str | None = None  # where the runner packs the node's bookkeeping files
    string_paths: list[str] = field(default_factory=list)  # paths in strings it may write
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
        return cls(**known)
