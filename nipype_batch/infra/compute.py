"""The compute environment and job queue of an infra set, and the waits their changes need.

Batch changes them asynchronously (UPDATING, then VALID or INVALID; DELETING, then gone), and
a compute environment can be deleted only once disabled and no queue uses it. Every wait has a
timeout and says what it waited for.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ..errors import InfrastructureError
from .spec import Found, InfraSpec, Resource

IN_FLIGHT = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING")


log = logging.getLogger(__name__)


class Waiter:
    """Polls until a condition holds, or raises after ``timeout_s``."""

    def __init__(self, timeout_s: float = 900.0, poll_s: float = 5.0) -> None:
        self.timeout_s = timeout_s
        self.poll_s = poll_s

    def until(self, what: str, done: Callable[[], bool]) -> None:
        """Return once ``done()``; ``what`` names the condition in the timeout error."""
        deadline = time.monotonic() + self.timeout_s
        while not done():
            if time.monotonic() > deadline:
                raise InfrastructureError(
                    f"gave up after {self.timeout_s:.0f} s waiting until {what}; see the AWS "
                    "Batch console, then run the same `nipype-batch infra` command again."
                )
            time.sleep(self.poll_s)


def _valid(found: dict[str, Any] | None, name: str) -> bool:
    """True once a compute environment or queue is VALID; raises if it became INVALID."""
    if found is None:
        raise InfrastructureError(f"{name} disappeared while nipype-batch waited for it")
    if found.get("status") == "INVALID":
        raise InfrastructureError(
            f"{name} is INVALID: {found.get('statusReason', 'no reason given')}. Fix the cause "
            "(often an IAM role or a subnet), then run `nipype-batch infra down` and `up` again."
        )
    return found.get("status") == "VALID"


def _role_not_ready(found: dict[str, Any]) -> bool:
    """An INVALID compute environment whose reason is an IAM role Batch could not use yet
    (IAM is eventually consistent: a new role can take seconds to reach Batch)."""
    reason = (found.get("statusReason") or "").lower()
    return found.get("status") == "INVALID" and any(
        word in reason for word in ("role", "not authorized", "accessdenied", "assume"))


class ComputeEnvironment:
    """A managed compute environment: EC2 on-demand, Spot or Fargate, idle at 0 vCPUs.

    ``role_retry_s``: waits before sending the service role again to an environment left
    INVALID by a role that had not reached Batch yet (then it fails for good).
    """

    def __init__(self, batch: Any, ec2: Any, spec: InfraSpec, waiter: Waiter,
                 role_retry_s: tuple[float, ...] = (10.0, 30.0, 60.0)) -> None:
        self.batch = batch
        self.ec2 = ec2
        self.spec = spec
        self.waiter = waiter
        self.role_retry_s = role_retry_s

    def describe(self, name: str) -> dict[str, Any] | None:
        """The compute environment as Batch describes it, or None (also once DELETED)."""
        found = self.batch.describe_compute_environments(computeEnvironments=[name])
        live = [ce for ce in found["computeEnvironments"] if ce.get("status") != "DELETED"]
        return live[0] if live else None

    def find(self, name: str) -> Found:
        """ARN and tags, or None."""
        ce = self.describe(name)
        return (ce["computeEnvironmentArn"], ce.get("tags", {})) if ce else None

    def ensure(self, resource: Resource, service_role_arn: str,
               instance_profile_arn: str) -> Resource:
        """Create it if absent, else check it matches the spec (maxvCpus and state repaired)."""
        name, spec = resource.name, self.spec
        changed = []
        if resource.state == "absent":
            arn = self.batch.create_compute_environment(
                computeEnvironmentName=name, type="MANAGED", state="ENABLED",
                computeResources=self._compute_resources(instance_profile_arn),
                serviceRole=service_role_arn, tags=spec.tags,
            )["computeEnvironmentArn"]
            resource = resource.created(arn)
        else:
            ce = self.describe(name) or {}
            have = ce.get("computeResources", {})
            want_types = [] if spec.platform == "fargate" else spec.instance_types
            if (have.get("type") != spec.platform.upper()
                    or sorted(have.get("instanceTypes", [])) != sorted(want_types)):
                raise InfrastructureError(
                    f"compute environment {name} runs {have.get('type')} "
                    f"{have.get('instanceTypes', [])}, not {spec.platform.upper()} "
                    f"{want_types}: Batch cannot change that in place. Run `nipype-batch infra "
                    f"down --name {spec.name}` first, or choose another --name."
                )
            update: dict[str, Any] = {}
            if have.get("maxvCpus") != spec.max_vcpus:
                update["computeResources"] = {"maxvCpus": spec.max_vcpus}
                changed.append(f"maxvCpus {have.get('maxvCpus')} -> {spec.max_vcpus}")
            if ce.get("state") != "ENABLED":
                update["state"] = "ENABLED"
                changed.append("enabled")
            if _role_not_ready(ce):  # left INVALID by an earlier `up`: repair, not refuse
                update["serviceRole"] = service_role_arn
                changed.append("service role sent again")
            if update:
                self.batch.update_compute_environment(computeEnvironment=name, **update)
        self._until_valid(name, service_role_arn)
        return resource.outcome(changed)

    def _until_valid(self, name: str, service_role_arn: str) -> None:
        """Wait for VALID; an INVALID from a role not yet propagated gets the role again,
        after a growing wait, a few times."""
        waits = list(self.role_retry_s)

        def valid() -> bool:
            found = self.describe(name)
            if found is not None and _role_not_ready(found) and waits:
                wait = waits.pop(0)
                log.warning("compute environment %s is INVALID (%s): IAM roles can take a "
                            "while to reach Batch; sending the service role again in %.0f s",
                            name, found.get("statusReason"), wait)
                time.sleep(wait)
                self.batch.update_compute_environment(computeEnvironment=name,
                                                      serviceRole=service_role_arn)
                return False
            return _valid(found, name)

        self.waiter.until(f"compute environment {name} is VALID", valid)

    def _compute_resources(self, instance_profile_arn: str) -> dict[str, Any]:
        spec = self.spec
        subnets, groups = self._network()
        resources: dict[str, Any] = {"type": spec.platform.upper(), "maxvCpus": spec.max_vcpus,
                                     "subnets": subnets, "securityGroupIds": groups}
        if spec.platform != "fargate":
            resources.update(
                minvCpus=0, desiredvCpus=0, instanceTypes=spec.instance_types,
                instanceRole=instance_profile_arn, tags=spec.tags,  # tags the instances too
                allocationStrategy=("SPOT_CAPACITY_OPTIMIZED" if spec.platform == "spot"
                                    else "BEST_FIT_PROGRESSIVE"),
            )
        return resources

    def _network(self) -> tuple[list[str], list[str]]:
        """The spec's subnets and security groups, or the default VPC's."""
        if self.spec.subnets and self.spec.security_groups:
            return self.spec.subnets, self.spec.security_groups
        ec2 = self.ec2
        vpcs = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
        if not vpcs:
            raise InfrastructureError(
                f"region {ec2.meta.region_name} has no default VPC: name where jobs run with "
                "--subnets subnet-... --security-groups sg-... (InfraSpec.subnets and "
                "security_groups)."
            )
        vpc = [{"Name": "vpc-id", "Values": [vpcs[0]["VpcId"]]}]
        subnets = self.spec.subnets or [
            s["SubnetId"] for s in ec2.describe_subnets(Filters=vpc)["Subnets"]]
        groups = self.spec.security_groups or [
            g["GroupId"] for g in ec2.describe_security_groups(
                Filters=[*vpc, {"Name": "group-name", "Values": ["default"]}])["SecurityGroups"]]
        if not subnets or not groups:
            raise InfrastructureError(
                f"the default VPC {vpcs[0]['VpcId']} has no subnet or no default security "
                "group: name them with --subnets and --security-groups."
            )
        return subnets, groups

    def delete(self, name: str) -> None:
        """Disable, wait, delete, and wait until it is gone (it needs its service role until
        then)."""
        self.batch.update_compute_environment(computeEnvironment=name, state="DISABLED")
        # any status but UPDATING will do: an INVALID one (a role that never reached Batch)
        # must be deletable too, or nothing could repair it
        self.waiter.until(f"compute environment {name} is disabled",
                          lambda: (self.describe(name) or {}).get("status") != "UPDATING")
        self.batch.delete_compute_environment(computeEnvironment=name)
        self.waiter.until(f"compute environment {name} is deleted",
                          lambda: self.describe(name) is None)


class JobQueue:
    """The job queue on the set's compute environment."""

    def __init__(self, batch: Any, spec: InfraSpec, waiter: Waiter) -> None:
        self.batch = batch
        self.spec = spec
        self.waiter = waiter

    def describe(self, name: str) -> dict[str, Any] | None:
        """The queue as Batch describes it, or None (also once DELETED)."""
        found = self.batch.describe_job_queues(jobQueues=[name])
        live = [q for q in found["jobQueues"] if q.get("status") != "DELETED"]
        return live[0] if live else None

    def find(self, name: str) -> Found:
        """ARN and tags, or None."""
        queue = self.describe(name)
        return (queue["jobQueueArn"], queue.get("tags", {})) if queue else None

    def ensure(self, resource: Resource, compute_environment_arn: str) -> Resource:
        """Create it if absent, enable it if disabled."""
        name = resource.name
        changed = []
        if resource.state == "absent":
            arn = self.batch.create_job_queue(
                jobQueueName=name, state="ENABLED", priority=1,
                computeEnvironmentOrder=[{"order": 1,
                                          "computeEnvironment": compute_environment_arn}],
                tags=self.spec.tags,
            )["jobQueueArn"]
            resource = resource.created(arn)
        elif (self.describe(name) or {}).get("state") != "ENABLED":
            self.batch.update_job_queue(jobQueue=name, state="ENABLED")
            changed.append("enabled")
        self.waiter.until(f"job queue {name} is VALID", lambda: _valid(self.describe(name), name))
        return resource.outcome(changed)

    def set_enabled(self, name: str, enabled: bool) -> None:
        """Let jobs in, or stop them from arriving (those queued still run)."""
        self.batch.update_job_queue(jobQueue=name, state="ENABLED" if enabled else "DISABLED")

    def jobs_in_flight(self, name: str) -> list[dict[str, Any]]:
        """Jobs on the queue that have not finished (ListJobs summaries)."""
        jobs = []
        for status in IN_FLIGHT:
            token: str | None = None
            while True:
                page = self.batch.list_jobs(jobQueue=name, jobStatus=status,
                                            **({"nextToken": token} if token else {}))
                jobs += page.get("jobSummaryList", [])
                token = page.get("nextToken")
                if not token:
                    break
        return jobs

    def delete(self, name: str) -> None:
        """Wait until disabled (``down`` disabled it), delete, and wait until it is gone."""
        self.waiter.until(f"job queue {name} is disabled",
                          lambda: _valid(self.describe(name), name))
        self.batch.delete_job_queue(jobQueue=name)
        self.waiter.until(f"job queue {name} is deleted", lambda: self.describe(name) is None)
