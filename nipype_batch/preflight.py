"""Checks of the cloud set-up, run before a run submits anything and by ``nipype-batch doctor``.

Each check names the resource, what is wrong and the fix, so that a mistake costs seconds on the
driver instead of an hour in the queue. All problems are reported together.
"""

from __future__ import annotations

import logging
import pickle
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from .aws.batch import BatchClient
from .aws.session import no_credentials_message
from .errors import ConfigurationError
from .platforms import capability
from .resources import JobResources, resources_for
from .settings import BatchSettings

log = logging.getLogger(__name__)

FARGATE_LIMITS = {"vcpus": 16, "memory_mb": 120 * 1024}


@dataclass(frozen=True)
class Check:
    """One finding: what was checked, whether it holds, and the fix when it does not."""

    name: str
    ok: bool
    detail: str


class PreflightError(ConfigurationError):
    """The set-up cannot run this workflow; every problem found is in the message."""

    def __init__(self, failed: list[Check]) -> None:
        self.failed = failed
        lines = "\n".join(f"  - {check.name}: {check.detail}" for check in failed)
        super().__init__(f"{len(failed)} problem(s) found before submitting anything:\n{lines}")


def _error_text(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code')}: {error.get('Message')}"
    return str(exc)


def check_credentials(sts: Any) -> Check:
    """Credentials resolve and are accepted."""
    try:
        who = sts.get_caller_identity()
    except NoCredentialsError:
        return Check("credentials", False, no_credentials_message())
    except ClientError as exc:
        return Check("credentials", False, f"AWS refused the credentials ({_error_text(exc)}). "
                     "Check the profile and that the keys are not expired.")
    except BotoCoreError as exc:
        return Check("credentials", False, f"cannot reach AWS ({exc}). Check the network, the "
                     "region and plugin_args['endpoint_url'] if you set one.")
    return Check("credentials", True, f"account {who.get('Account')} as {who.get('Arn')}")


def check_bucket(s3: Any, bucket: str, prefix: str) -> Check:
    """The staging bucket exists and the credentials may write, read and delete there."""
    probe = f"{prefix}/control/preflight-{uuid.uuid4().hex}" if prefix else \
        f"control/preflight-{uuid.uuid4().hex}"
    try:
        s3.put_object(Bucket=bucket, Key=probe, Body=b"nipype-batch preflight",
                      ServerSideEncryption="AES256")
        s3.get_object(Bucket=bucket, Key=probe)["Body"].read()
        s3.delete_object(Bucket=bucket, Key=probe)
    except (ClientError, BotoCoreError) as exc:
        text = _error_text(exc)
        fix = ("create it (e.g. `nipype-batch infra up`) or fix the name in "
               "plugin_args['bucket']") if "NoSuchBucket" in text else \
            "give your credentials s3:PutObject, s3:GetObject and s3:DeleteObject on it"
        return Check("bucket", False, f"cannot write to s3://{bucket}/{prefix} ({text}): {fix}.")
    return Check("bucket", True, f"s3://{bucket}/{prefix} is writable")


_WRITES = ("s3:PutObject", "s3:*", "*")


def check_bucket_policy(s3: Any, bucket: str, prefix: str) -> Check:
    """Nobody but the account may write under the staging prefix: results come back as
    pickles the driver loads, and payloads carry pickled nodes the jobs run, so whoever can
    write there can run code on the driver and in the jobs."""
    import json

    name = "who may write the staging prefix"
    if not hasattr(s3, "get_bucket_policy"):  # a stand-in store (the simulated Batch's)
        return Check(name, True, "not an S3 bucket: not checked")
    try:
        policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
    except (ClientError, BotoCoreError) as exc:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
        if code == "NoSuchBucketPolicy":
            return Check(name, True, "no bucket policy: the account's IAM only")
        return Check(name, True, f"bucket policy not readable ({_error_text(exc)}): "
                     "not checked")
    statements = policy.get("Statement") or []
    for statement in statements if isinstance(statements, list) else [statements]:
        principal = statement.get("Principal")
        anyone = principal == "*" or (isinstance(principal, dict) and "*" in (
            principal.get("AWS") if isinstance(principal.get("AWS"), list)
            else [principal.get("AWS")]))
        actions = statement.get("Action") or []
        actions = actions if isinstance(actions, list) else [actions]
        if (statement.get("Effect") == "Allow" and anyone and not statement.get("Condition")
                and any(a in _WRITES for a in actions)):
            return Check(name, False,
                         f"the policy of bucket {bucket!r} lets anyone write "
                         f"(statement {statement.get('Sid') or '(no Sid)'}): whoever writes "
                         f"under s3://{bucket}/{prefix} can run code on your driver and in "
                         "your jobs (results and payloads are pickles). Remove that "
                         "statement, or stage in a bucket only you and the job role write "
                         "(`nipype-batch infra up` makes one).")
    return Check(name, True, "only principals named by the account")


def check_queue(batch: BatchClient, queue: str) -> tuple[Check, list[dict[str, Any]]]:
    """The job queue exists, is ENABLED and VALID; also returns its compute environments."""
    try:
        info = batch.describe_queue(queue)
    except (ClientError, BotoCoreError) as exc:
        return Check(f"queue {queue}", False, f"cannot describe it ({_error_text(exc)})."), []
    if info is None:
        return Check(f"queue {queue}", False,
                     f"job queue {queue!r} does not exist in this account and region. Create it "
                     "(`nipype-batch infra up`) or fix plugin_args['job_queue']."), []
    if info.get("state") != "ENABLED" or info.get("status") not in ("VALID", "UPDATING"):
        return Check(f"queue {queue}", False,
                     f"job queue {queue!r} is {info.get('state')}/{info.get('status')} "
                     f"({info.get('statusReason', '')}): it must be ENABLED and VALID."), []
    try:
        envs = batch.compute_environments(info)
    except (ClientError, BotoCoreError) as exc:
        return Check(f"queue {queue}", False,
                     f"cannot describe its compute environments ({_error_text(exc)})."), []
    return Check(f"queue {queue}", True, "ENABLED and VALID"), envs


def check_fit(queue: str, envs: list[dict[str, Any]], largest: JobResources) -> Check:
    """Some compute environment of the queue can run the largest job."""
    name = f"capacity of {queue}"
    if not envs:
        return Check(name, False, f"queue {queue!r} has no compute environment.")
    reasons = []
    for env in envs:
        resources = env.get("computeResources")
        if env.get("type") == "UNMANAGED" or not resources:
            return Check(name, True, f"{env['computeEnvironmentName']} is unmanaged: not checked")
        kind = resources.get("type", "EC2")
        max_vcpus = resources.get("maxvCpus", 0)
        if kind.startswith("FARGATE"):
            if largest.gpus:
                reasons.append(f"{env['computeEnvironmentName']} is Fargate: no GPUs")
                continue
            if largest.vcpus > FARGATE_LIMITS["vcpus"] or \
                    largest.memory_mb > FARGATE_LIMITS["memory_mb"]:
                reasons.append(f"{env['computeEnvironmentName']} is Fargate: at most 16 vCPUs, "
                               "120 GiB")
                continue
        if max_vcpus < largest.vcpus:
            reasons.append(f"{env['computeEnvironmentName']} has maxvCpus {max_vcpus}")
            continue
        return Check(name, True, f"{env['computeEnvironmentName']} fits {largest.vcpus} vCPUs")
    return Check(name, False,
                 f"no compute environment of {queue!r} can run a job of {largest.vcpus} vCPUs, "
                 f"{largest.memory_mb} MiB, {largest.gpus} GPUs ({'; '.join(reasons)}). Raise "
                 "maxvCpus, add instance types, or lower the node's n_procs / plugin_args.")


def _managed(envs: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """Each compute environment's ``computeResources``; None when one is unmanaged (its
    instances are the user's: nothing to check them against)."""
    found = []
    for env in envs:
        resources = env.get("computeResources")
        if env.get("type") == "UNMANAGED" or not resources:
            return None
        found.append(resources)
    return found


def _ec2_instance_types(managed: list[dict[str, Any]]) -> tuple[set[str], bool]:
    """The instance types of the EC2 compute environments, and whether any is Fargate."""
    types: set[str] = set()
    fargate = False
    for resources in managed:
        if resources.get("type", "EC2").startswith("FARGATE"):
            fargate = True
        else:
            types.update(resources.get("instanceTypes") or [])
    return types, fargate


# EC2 instance families with GPUs (p3, p4d, g4dn, g5, g6e...): a letter p or g, then a digit.
_GPU_FAMILY = re.compile(r"^[pg]\d")


def check_gpus(queue: str, envs: list[dict[str, Any]], gpus: int) -> Check:
    """A job asking GPUs has an EC2 compute environment with GPU instance types (else Batch
    leaves it RUNNABLE for ever)."""
    name = f"GPUs in {queue}"
    managed = _managed(envs)
    if managed is None:
        return Check(name, True, "unmanaged: not checked")
    types, _fargate = _ec2_instance_types(managed)  # check_fit says Fargate has no GPUs
    found = sorted(t for t in types if _GPU_FAMILY.match(t))
    if found:
        return Check(name, True, f"instance types with GPUs: {', '.join(found)}")
    return Check(name, False,
                 f"a node asks {gpus} GPU(s) but no compute environment of {queue!r} has GPU "
                 f"instance types (its types: {', '.join(sorted(types)) or 'none'}): Batch "
                 "would leave the job RUNNABLE. Use a queue with GPU instances "
                 "(`nipype-batch infra up --instance-types g4dn.xlarge`) or drop the node's "
                 "gpus.")


def check_platform(queue: str, envs: list[dict[str, Any]], platform: str) -> Check:
    """The run's platform is what the queue's compute environments run on (an EC2 job
    definition on a Fargate queue fails with a misleading error)."""
    name = f"platform of {queue}"
    managed = _managed(envs)
    if managed is None:
        return Check(name, True, "unmanaged: not checked")
    want = capability(platform)
    kinds = {resources.get("type", "EC2") for resources in managed}
    for kind in kinds:
        if ("fargate" if kind.startswith("FARGATE") else "ec2") == want:
            return Check(name, True, f"runs {kind}")
    fix = "fargate" if any(k.startswith("FARGATE") for k in kinds) else (
        "spot" if "SPOT" in kinds else "ec2")
    return Check(name, False,
                 f"queue {queue!r} runs on {', '.join(sorted(kinds)) or 'nothing'} but the run's "
                 f"platform is {platform!r}: set plugin_args['platform'] = {fix!r} (or use a "
                 "profile made by `nipype-batch infra up`, which sets it).")


def check_machine(machine: Any, largest: JobResources) -> Check:
    """On the local stack, the largest job fits this machine, as on AWS it must fit an
    instance (else it would wait RUNNABLE for ever)."""
    too_big = [f"{asked} {what} (this machine has {has})"
               for asked, has, what in ((largest.vcpus, machine.vcpus, "vCPUs"),
                                        (largest.memory_mb, machine.memory_mb, "MiB"),
                                        (largest.gpus, machine.gpus, "GPUs"))
               if asked > has]
    if not too_big:
        return Check("this machine", True, f"fits {largest.vcpus} vCPUs, "
                     f"{largest.memory_mb} MiB")
    return Check("this machine", False,
                 f"a node asks {', '.join(too_big)}: on the local stack a job runs on this "
                 "machine, and one larger would never start (on AWS it would wait RUNNABLE). "
                 "Lower the node's n_procs / mem_gb / plugin_args (vcpus, memory_mb, gpus) to "
                 "try it here, or run it on AWS.")


# Graviton families: a generation digit, then a 'g' among the letters after it (m7g, c6gn,
# x2gd, t4g, g5g, is4gen), and a1; BEST_FIT's 'default_arm64'.
_ARM_FAMILY = re.compile(r"^([a-z]+\d+[a-z]*g[a-z]*|a1)$")


def _instance_architecture(instance_type: str) -> str:
    if instance_type == "default_arm64":
        return "arm64"
    family = instance_type.split(".", 1)[0]
    return "arm64" if _ARM_FAMILY.match(family) else "x86_64"


def check_queue_architecture(queue: str, envs: list[dict[str, Any]], wanted: str) -> Check:
    """The run's images are for the CPU of the queue's EC2 instances (else every job fails
    with 'exec format error'); Fargate takes the CPU from the job definition."""
    name = f"CPU of {queue}"
    managed = _managed(envs)
    if managed is None:
        return Check(name, True, "unmanaged: not checked")
    types, fargate = _ec2_instance_types(managed)
    if fargate:
        return Check(name, True, "Fargate: the job definitions name the CPU")
    kinds = {_instance_architecture(t) for t in types}
    if not kinds or wanted in kinds:
        return Check(name, True, f"{', '.join(sorted(kinds)) or 'not said'}")
    found = ", ".join(sorted(kinds))
    return Check(name, False,
                 f"queue {queue!r} runs {found} instances but the run builds images for "
                 f"{wanted}: set plugin_args['architecture'] = {sorted(kinds)[0]!r} (an "
                 "`infra up --architecture` profile sets it).")


def check_job_role(settings: BatchSettings) -> Check:
    """Jobs on AWS have a role that reaches the staging bucket."""
    if settings.backend != "aws" or settings.endpoint_url or settings.job_role_arn:
        return Check("job role", True, settings.job_role_arn or "not needed here")
    return Check("job role", False,
                 "no job_role_arn: jobs would run with the instance's role (which cannot read "
                 "the staging bucket) or, on Fargate, with no credentials at all. Set "
                 "plugin_args['job_role_arn'] to a role that ECS tasks may assume, with the "
                 "policy `nipype-batch policy s3://bucket/prefix` prints; `nipype-batch infra "
                 "up` makes one and its profile sets it.")


def check_picklable(nodes: Iterable[Any]) -> Check:
    """Every job node can be pickled, as it must be to travel to its job."""
    bad = []
    for node in nodes:
        saved = getattr(node, "use_plugin", None)
        try:
            if hasattr(node, "use_plugin"):
                node.use_plugin = None
            pickle.dumps(node)
        except Exception as exc:
            bad.append(f"{node.fullname} ({exc.__class__.__name__}: {exc})")
        finally:
            if saved is not None:
                node.use_plugin = saved
    if bad:
        return Check("nodes picklable", False,
                     f"{len(bad)} node(s) cannot be pickled to travel to a job: "
                     f"{'; '.join(bad[:5])}. Inputs must be plain values (numbers, strings, "
                     "paths, lists), not open files, clients or lambdas.")
    return Check("nodes picklable", True, "all nodes")


def largest_job(nodes: Iterable[Any], settings: BatchSettings) -> dict[str, JobResources]:
    """Per queue, the most vCPUs, memory and GPUs any node asks for."""
    largest: dict[str, JobResources] = {}
    for node in nodes:
        resources = resources_for(node, settings)
        queue = resources.job_queue or ""
        current = largest.get(queue)
        # each of vCPUs, memory and GPUs at its largest: one node may ask the most memory,
        # another the most vCPUs, and a queue must hold both
        largest[queue] = resources if current is None else replace(
            current, vcpus=max(current.vcpus, resources.vcpus),
            memory_mb=max(current.memory_mb, resources.memory_mb),
            gpus=max(current.gpus, resources.gpus))
    return largest


def run_checks(settings: BatchSettings, cloud: Any, nodes: list[Any] | None = None) -> list[Check]:
    """Every check, cheapest first; none submits anything."""
    checks = [check_job_role(settings), check_credentials(cloud.sts)]
    if not checks[-1].ok:
        return checks
    checks.append(check_bucket(cloud.stager.s3, cloud.stager.bucket, cloud.stager.prefix))
    checks.append(check_bucket_policy(cloud.stager.s3, cloud.stager.bucket,
                                      cloud.stager.prefix))
    needs = largest_job(nodes or [], settings)
    queues = {queue or cloud.job_queue for queue in needs} or {cloud.job_queue}
    for queue in sorted(queues):
        queue_check, envs = check_queue(cloud.batch, queue)
        checks.append(queue_check)
        biggest = needs.get(queue) or needs.get("")
        if queue_check.ok:
            checks.append(check_platform(queue, envs, settings.platform))
            checks.append(check_queue_architecture(queue, envs, settings.architecture))
        if biggest is not None and getattr(cloud, "machine", None) is not None:
            checks.append(check_machine(cloud.machine, biggest))
        if queue_check.ok and biggest is not None:
            checks.append(check_fit(queue, envs, biggest))
            if biggest.gpus:
                checks.append(check_gpus(queue, envs, biggest.gpus))
    if nodes:
        checks.append(check_picklable(nodes))
    return checks


def preflight(settings: BatchSettings, cloud: Any, nodes: list[Any]) -> None:
    """Raise :class:`PreflightError` listing every problem, or return if there is none."""
    failed = [check for check in run_checks(settings, cloud, nodes) if not check.ok]
    if failed:
        raise PreflightError(failed)
