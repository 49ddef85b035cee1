"""The only module that speaks the AWS Batch and CloudWatch Logs APIs.

Takes its boto3 clients from the caller, so the same code drives real AWS and the local stack.
Jobs: definitions, submission, batched status, termination. Logs: one page of a job's log
stream (the tail, or forward from a token). The preflight's questions about queues and compute
environments are asked here too.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ..errors import BatchJobError
from ..protocol import EXIT_NODE_FAILED
from ..resources import JobResources
from .status import JobStatus

log = logging.getLogger(__name__)

DESCRIBE_CHUNK = 100  # DescribeJobs takes at most 100 ids
ARRAY_MIN, ARRAY_MAX = 2, 10_000  # children of one array job
LOG_GROUP = "/aws/batch/job"
RUNNER_COMMAND = ["python3", "-m", "nipype_batch.runner"]


def job_definition_spec(image: str, job_role_arn: str | None, platform: str = "ec2",
                        execution_role_arn: str | None = None,
                        architecture: str = "x86_64",
                        ephemeral_storage_gb: int | None = None) -> tuple[str, dict[str, Any]]:
    """Name and container properties of the job definition for an image.

    The name is a hash of the content, so one definition serves every job with this image
    (resources come per job through overrides) and is reused across runs. On Fargate the
    definition also names the execution role (to pull the image and write logs) and asks for
    a public IP (to reach ECR and S3 without a NAT gateway), the CPU (``runtimePlatform``:
    X86_64 or ARM64, Graviton) and, when asked, more scratch disk than Fargate's 20 GiB.
    """
    props: dict[str, Any] = {
        "image": image,
        "command": RUNNER_COMMAND,
        "resourceRequirements": [
            {"type": "VCPU", "value": "1"},
            {"type": "MEMORY", "value": "2048"},
        ],
    }
    if job_role_arn:
        props["jobRoleArn"] = job_role_arn
    if platform == "fargate":
        props["executionRoleArn"] = execution_role_arn
        props["networkConfiguration"] = {"assignPublicIp": "ENABLED"}
        props["fargatePlatformConfiguration"] = {"platformVersion": "LATEST"}
        props["runtimePlatform"] = {"operatingSystemFamily": "LINUX",
                                    "cpuArchitecture": "ARM64" if architecture == "arm64"
                                    else "X86_64"}
        if ephemeral_storage_gb:
            props["ephemeralStorage"] = {"sizeInGiB": ephemeral_storage_gb}
    digest = hashlib.sha256(json.dumps(props, sort_keys=True).encode()).hexdigest()[:16]
    return f"nipype-batch-{digest}", props


# Retry what the infrastructure did to a job, never what the node did (first match wins).
RETRY_RULES = [
    {"onExitCode": str(EXIT_NODE_FAILED), "action": "EXIT"},  # the node raised
    # killed for memory: the same memory would fail again (Batch's container reason)
    {"onReason": "OutOfMemoryError*", "action": "EXIT"},
    {"onStatusReason": "Host EC2*", "action": "RETRY"},  # instance lost, Spot reclaimed
    {"onReason": "*", "action": "RETRY"},  # killed from outside, runner or staging failure
]


def retry_strategy(attempts: int) -> dict[str, Any]:
    """SubmitJob's ``retryStrategy`` for ``attempts`` tries."""
    return {"attempts": attempts, "evaluateOnExit": RETRY_RULES}


def container_overrides(resources: JobResources, environment: dict[str, str]) -> dict[str, Any]:
    """Per-job resources and environment, in SubmitJob's ``containerOverrides`` form."""
    requirements = [
        {"type": "VCPU", "value": str(resources.vcpus)},
        {"type": "MEMORY", "value": str(resources.memory_mb)},
    ]
    if resources.gpus:
        requirements.append({"type": "GPU", "value": str(resources.gpus)})
    return {
        "resourceRequirements": requirements,
        "environment": [{"name": k, "value": v} for k, v in sorted(environment.items())],
    }


def child_job_id(array_job_id: str, index: int) -> str:
    """The id AWS Batch gives child ``index`` of an array job."""
    return f"{array_job_id}:{index}"


TAG_PUNCTUATION = frozenset("_.:/=+-@")


def tag_text(text: str, limit: int) -> str:
    """A tag key or value as Batch and ECS (which the tags propagate to) accept it: letters,
    digits, spaces and ``_.:/=+-@`` only (others become ``_``), at most ``limit`` characters
    (the end kept: of a path, its most telling part)."""
    safe = "".join(c if c.isalnum() or c.isspace() or c in TAG_PUNCTUATION else "_"
                   for c in text)
    return safe[-limit:]


OVERRIDES_LIMIT = 8192  # characters of a job's containerOverrides that Batch accepts
# What we let our own overrides take of it: Batch counts the variables it adds itself
# (AWS_BATCH_JOB_ID, AWS_BATCH_JQ_NAME, AWS_BATCH_CE_NAME, AWS_BATCH_JOB_ATTEMPT, array and
# node indexes...) against the same limit, and rejects the job with "Container Overrides
# length must be at most 8192" when they tip it over.
OVERRIDES_BUDGET = 6500


def fits_overrides(resources: JobResources, environment: dict[str, str]) -> bool:
    """Whether a job's container overrides, as SubmitJob sends them, leave Batch room for its
    own variables under its limit."""
    return len(json.dumps(container_overrides(resources, environment))) <= OVERRIDES_BUDGET


@dataclass(frozen=True)
class LogPage:
    """Lines of a log stream, and the token to continue after them (None at a fresh start)."""

    messages: list[str]
    next_token: str | None


class BatchClient:
    """Job definitions, submission, batched status, termination and log tails.

    Parameters
    ----------
    batch, logs : botocore clients
        For the ``batch`` and ``logs`` services.
    """

    def __init__(self, batch: Any, logs: Any) -> None:
        self.batch = batch
        self.logs = logs
        self._definitions: dict[str, str] = {}

    def ensure_job_definition(self, image: str, job_role_arn: str | None = None,
                              platform: str = "ec2",
                              execution_role_arn: str | None = None,
                              architecture: str = "x86_64",
                              ephemeral_storage_gb: int | None = None) -> str:
        """ARN of an ACTIVE job definition for ``image``, registering one only if none exists."""
        name, props = job_definition_spec(image, job_role_arn, platform, execution_role_arn,
                                          architecture, ephemeral_storage_gb)
        if name in self._definitions:
            return self._definitions[name]
        try:
            found = self.batch.describe_job_definitions(jobDefinitionName=name, status="ACTIVE")
            active = sorted(found.get("jobDefinitions", []), key=lambda d: d["revision"])
            if active:
                arn = active[-1]["jobDefinitionArn"]
            else:
                arn = self.batch.register_job_definition(
                    jobDefinitionName=name, type="container", containerProperties=props,
                    platformCapabilities=[platform.upper()], tags={"nipype-batch": "1"},
                )["jobDefinitionArn"]
                log.info("Registered job definition %s for image %s", name, image)
        except ClientError as exc:
            raise BatchJobError(
                f"could not find or register job definition {name} for image {image}: {exc}"
            ) from exc
        self._definitions[name] = arn
        return arn

    def submit(
        self,
        name: str,
        queue: str,
        definition: str,
        resources: JobResources,
        environment: dict[str, str],
        tags: dict[str, str],
        array_size: int | None = None,
    ) -> str:
        """Submit one job, or an array job of ``array_size`` children; return its id.

        A child's id is ``<array job id>:<index>`` (:func:`child_job_id`).
        """
        if array_size is not None and not ARRAY_MIN <= array_size <= ARRAY_MAX:
            raise ValueError(f"array size {array_size} is outside {ARRAY_MIN}..{ARRAY_MAX}")
        kwargs: dict[str, Any] = {
            "jobName": name,
            "jobQueue": queue,
            "jobDefinition": definition,
            "containerOverrides": container_overrides(resources, environment),
            "tags": {tag_text(k, 128): tag_text(v, 256) for k, v in tags.items()},
            "propagateTags": True,
            "retryStrategy": retry_strategy(resources.attempts),
        }
        if resources.timeout_s:
            kwargs["timeout"] = {"attemptDurationSeconds": resources.timeout_s}
        if array_size is not None:
            kwargs["arrayProperties"] = {"size": array_size}
        try:
            return self.batch.submit_job(**kwargs)["jobId"]
        except (ClientError, BotoCoreError) as exc:
            raise BatchJobError(
                f"AWS Batch refused job {name} on queue {queue!r}: {exc}. Check that the queue "
                "exists and is ENABLED, and that its compute environment can fit "
                f"{resources.vcpus} vCPUs and {resources.memory_mb} MiB."
            ) from exc

    def describe(self, job_ids: Iterable[str]) -> dict[str, JobStatus]:
        """Status of many jobs, in DescribeJobs calls of at most 100 ids."""
        ids = list(dict.fromkeys(job_ids))
        statuses: dict[str, JobStatus] = {}
        for start in range(0, len(ids), DESCRIBE_CHUNK):
            chunk = ids[start:start + DESCRIBE_CHUNK]
            try:
                jobs = self.batch.describe_jobs(jobs=chunk)["jobs"]
            except (ClientError, BotoCoreError) as exc:
                raise BatchJobError(
                    f"lost contact with AWS Batch: DescribeJobs for {len(chunk)} jobs failed "
                    f"after retries ({exc}). Check your network and credentials; the jobs may "
                    "still be running."
                ) from exc
            for job in jobs:
                status = JobStatus.from_description(job)
                statuses[status.job_id] = status
        return statuses

    def describe_children(self, array_job_id: str, indices: Iterable[int]) -> dict[str, JobStatus]:
        """Status of some children of an array job (only when needed: the parent summarises)."""
        return self.describe(child_job_id(array_job_id, i) for i in indices)

    def terminate(self, job_ids: Iterable[str], reason: str) -> list[str]:
        """Terminate jobs (any state); return the ids that could not be terminated."""
        failed = []
        for job_id in job_ids:
            try:
                self.batch.terminate_job(jobId=job_id, reason=reason)
            except (ClientError, BotoCoreError) as exc:
                log.warning("Could not terminate job %s: %s", job_id, exc)
                failed.append(job_id)
        return failed

    def log_tail(self, log_stream: str | None, lines: int = 40) -> list[str]:
        """Last ``lines`` lines of a job's log; empty if the stream is not (yet) there."""
        if not log_stream:
            return []
        return self.log_page(log_stream, lines=lines).messages[-lines:]

    def log_page(self, log_stream: str, token: str | None = None, lines: int = 40) -> LogPage:
        """One page of a job's log: the last ``lines`` lines, or what follows ``token``.

        A stream that does not exist (yet: it appears once the container starts) reads as an
        empty page that keeps ``token``.
        """
        request: dict[str, Any] = {"logGroupName": LOG_GROUP, "logStreamName": log_stream}
        if token:
            request.update(nextToken=token, startFromHead=True)
        else:
            request.update(limit=lines, startFromHead=False)
        try:
            page = self.logs.get_log_events(**request)
        except ClientError as exc:
            log.debug("No log for stream %s: %s", log_stream, exc)
            return LogPage([], token)
        return LogPage([event["message"] for event in page["events"]],
                       page.get("nextForwardToken") or token)

    # ---- for the preflight ----------------------------------------------------------------

    def describe_queue(self, queue: str) -> dict[str, Any] | None:
        """DescribeJobQueues' entry for ``queue``, None if there is no such queue.

        Errors (access denied, no network) raise botocore's exception for the caller to
        report.
        """
        found = self.batch.describe_job_queues(jobQueues=[queue])["jobQueues"]
        return found[0] if found else None

    def compute_environments(self, queue_info: dict[str, Any]) -> list[dict[str, Any]]:
        """DescribeComputeEnvironments' entries for the environments a queue orders."""
        order = [entry["computeEnvironment"]
                 for entry in queue_info.get("computeEnvironmentOrder", [])]
        return self.batch.describe_compute_environments(
            computeEnvironments=order)["computeEnvironments"]
