"""The set as a whole: look at it, make it (``up``), remove it (``down``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from botocore.exceptions import ClientError

from ..errors import InfrastructureError
from ..profiles import Profile, delete_profile, save_profile
from .compute import ComputeEnvironment, JobQueue, Waiter
from .roles import InstanceProfile, Role, role_designs
from .spec import TAG_KEY, Clients, InfraSpec, Resource
from .storage import Bucket, Repository

log = logging.getLogger(__name__)


BATCH_SERVICE = "batch.amazonaws.com"
BATCH_LINKED_ROLE = "AWSServiceRoleForBatch"


class Infrastructure:
    """Make, show and remove the resources of one :class:`InfraSpec` with the given clients.

    Parameters
    ----------
    spec, clients
        What to make, and where.
    iam_settle_s
        Seconds to wait after creating IAM roles before Batch is asked to use them (IAM is
        eventually consistent on AWS; an emulator needs 0).
    wait_timeout_s, poll_s
        How long to wait for the compute environment and queue to change state, and how often
        to look.
    """

    def __init__(self, spec: InfraSpec, clients: Clients, *, iam_settle_s: float = 10.0,
                 wait_timeout_s: float = 900.0, poll_s: float = 5.0) -> None:
        self.spec = spec
        self.clients = clients
        self.iam_settle_s = iam_settle_s
        waiter = Waiter(wait_timeout_s, poll_s)
        self.repository = Repository(clients.ecr, spec)
        self.role = Role(clients.iam, spec)
        self.instance_profile = InstanceProfile(clients.iam, spec)
        self.compute_environment = ComputeEnvironment(clients.batch, clients.ec2, spec, waiter)
        self.job_queue = JobQueue(clients.batch, spec, waiter)
        self._identity: tuple[str, str] | None = None

    def _account_and_partition(self) -> tuple[str, str]:
        if self._identity is None:
            try:
                arn = self.clients.sts.get_caller_identity()["Arn"]
            except ClientError as exc:
                raise InfrastructureError(
                    f"cannot tell which AWS account these credentials belong to: {exc}"
                ) from exc
            parts = arn.split(":")
            self._identity = (parts[4], parts[1])
        return self._identity

    @property
    def bucket(self) -> Bucket:
        """The staging bucket's part (needs the partition, known once STS answered)."""
        return Bucket(self.clients.s3, self.spec, self.clients.region,
                      self._account_and_partition()[1])

    @property
    def bucket_name(self) -> str:
        """``nipype-batch-NAME-ACCOUNT-REGION``: bucket names are global, so made unique."""
        return f"{self.spec.base}-{self._account_and_partition()[0]}-{self.clients.region}"

    def _names(self, everything: bool) -> list[tuple[str, str]]:
        """(kind, name) of each resource in creation order; ``everything`` for every platform.

        Kinds are unique within a set; ``down`` deletes in the reverse order.
        """
        base = self.spec.base
        names = [("bucket", self.bucket_name), ("repository", base), ("job-role", f"{base}-job"),
                 ("execution-role", f"{base}-execution"),
                 ("batch-service-role", f"{base}-batch-service")]
        if everything or self.spec.platform != "fargate":
            names += [("instance-role", f"{base}-instance"),
                      ("instance-profile", f"{base}-instance")]
        return [*names, ("compute-environment", base), ("job-queue", base)]

    def _part(self, kind: str) -> Any:
        """The object that finds, ensures and deletes resources of ``kind``."""
        if kind.endswith("-role"):
            return self.role
        return {"bucket": self.bucket, "repository": self.repository,
                "instance-profile": self.instance_profile,
                "compute-environment": self.compute_environment,
                "job-queue": self.job_queue}[kind]

    def plan(self, everything: bool = False) -> list[Resource]:
        """Each resource of the set, ``absent``, ``ours`` or ``foreign``."""
        return [self._look(kind, name) for kind, name in self._names(everything)]

    def _look(self, kind: str, name: str) -> Resource:
        try:
            found = self._part(kind).find(name)
        except ClientError as exc:
            raise InfrastructureError(f"cannot read {kind} {name}: {exc}") from exc
        if found is None:
            return Resource(kind, name, "absent")
        arn, tags = found
        if tags is None:
            return Resource(kind, name, "foreign", arn,
                            "owned by another AWS account (bucket names are global)")
        owner = tags.get(TAG_KEY)
        if owner == self.spec.name:
            return Resource(kind, name, "ours", arn)
        detail = (f"tagged {TAG_KEY}={owner}" if owner is not None
                  else f"not tagged {TAG_KEY}={self.spec.name}")
        return Resource(kind, name, "foreign", arn, detail)

    def jobs_in_flight(self) -> list[dict[str, Any]]:
        """Jobs on the set's queue that have not finished (ListJobs summaries)."""
        return self.job_queue.jobs_in_flight(self.spec.base)

    # ---- up --------------------------------------------------------------------------------

    def up(self) -> tuple[Profile, list[Resource]]:
        """Create what is missing, repair what drifted, write and return the profile.

        Raises :class:`InfrastructureError` before creating anything if a resource of the set
        exists but is not this set's.
        """
        plan = self.plan()
        foreign = [r for r in plan if r.state == "foreign"]
        if foreign:
            taken = "; ".join(f"{r.kind} {r.name} exists, {r.detail}" for r in foreign)
            raise InfrastructureError(
                f"cannot make infra {self.spec.name!r}: {taken}. nipype-batch never changes or "
                "deletes what it did not make: choose another --name, or remove those yourself "
                "if they are leftovers (an `infra up` interrupted between creating a bucket and "
                "tagging it leaves one untagged)."
            )
        done: dict[str, Resource] = {}
        for resource in plan:
            try:
                done[resource.kind] = self._ensure(resource, done)
            except ClientError as exc:
                raise InfrastructureError(
                    f"cannot make {resource.kind} {resource.name}: {exc}. What was made so far "
                    f"is tagged and kept: fix the cause and run `nipype-batch infra up --name "
                    f"{self.spec.name}` again, or `infra down` to remove it."
                ) from exc
        settings: dict[str, Any] = {
            "backend": self.clients.backend,
            "job_queue": self.spec.base,
            "bucket": f"s3://{self.bucket_name}/{self.spec.staging_prefix}",
            "job_role_arn": done["job-role"].arn,
            "ecr_repository": self.spec.base,
        }
        if self.spec.platform != "ec2":
            settings["platform"] = self.spec.platform
        if self.spec.architecture != "x86_64":
            settings["architecture"] = self.spec.architecture
        if self.spec.platform == "fargate":
            settings["execution_role_arn"] = done["execution-role"].arn
        if self.clients.backend == "aws":
            settings["region"] = self.clients.region
            if self.clients.endpoint_url:
                settings["endpoint_url"] = self.clients.endpoint_url
        profile = Profile(self.spec.name, settings,
                          {kind: r.arn for kind, r in done.items()}, asdict(self.spec))
        log.info("infra %s up: profile written to %s", self.spec.name, save_profile(profile))
        return profile, list(done.values())

    def _ensure(self, resource: Resource, done: dict[str, Resource]) -> Resource:
        kind = resource.kind
        if kind.endswith("-role"):
            _, partition = self._account_and_partition()
            design = role_designs(self.spec, self.bucket_name, partition)[kind]
            return self.role.ensure(resource, design)
        if kind == "instance-profile":
            return self.instance_profile.ensure(resource, done["instance-role"].name)
        if kind == "compute-environment":
            new_roles = any(r.state == "created" for k, r in done.items()
                            if k.endswith("-role") or k == "instance-profile")
            if new_roles and resource.state == "absent" and self.iam_settle_s:
                log.info("waiting %.0f s for new IAM roles to reach Batch", self.iam_settle_s)
                time.sleep(self.iam_settle_s)
            instance_profile = done.get("instance-profile")
            return self.compute_environment.ensure(
                resource, self._service_role_arn(done["batch-service-role"].arn),
                instance_profile.arn if instance_profile else "")
        if kind == "job-queue":
            return self.job_queue.ensure(resource, done["compute-environment"].arn)
        return self._part(kind).ensure(resource)

    def _service_role_arn(self, own_role_arn: str) -> str:
        """Batch's service-linked role (AWSServiceRoleForBatch), made if missing: AWS keeps
        it, with the permissions Batch needs as they change, and a new one is not subject to
        the propagation delay that leaves a compute environment INVALID. Where the caller
        may not create it, the set's own service role."""
        iam = self.clients.iam
        try:
            made = iam.create_service_linked_role(AWSServiceName=BATCH_SERVICE)
            return made["Role"]["Arn"]
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code != "InvalidInput":  # "has been taken": it exists already
                log.info("Batch's service-linked role cannot be made (%s): using %s", code,
                         own_role_arn)
                return own_role_arn
        try:
            return iam.get_role(RoleName=BATCH_LINKED_ROLE)["Role"]["Arn"]
        except ClientError:
            return own_role_arn

    # ---- down ------------------------------------------------------------------------------

    def down(self, confirm: Callable[[list[Resource]], bool]) -> list[Resource]:
        """Delete every resource of the set that is this set's; leave any other alone.

        Refuses (:class:`InfrastructureError`) while jobs are in flight on the queue. ``confirm``
        is shown what would be deleted (the bucket with all its objects) and returns whether to
        go on; when it returns False nothing is deleted and the result is empty.
        """
        plan = self.plan(everything=True)
        ours = [r for r in plan if r.state == "ours"]
        queue = next((r for r in ours if r.kind == "job-queue"), None)
        if queue is not None:
            self._refuse_if_jobs(queue.name)
        if not ours:
            delete_profile(self.spec.name)
            return plan
        if not confirm(ours):
            return []
        if queue is not None:
            # Disabled first, so that no job can arrive between the last look and the delete.
            self.job_queue.set_enabled(queue.name, False)
            try:
                self._refuse_if_jobs(queue.name)
            except InfrastructureError:
                self.job_queue.set_enabled(queue.name, True)
                raise
        for resource in reversed(ours):
            log.info("deleting %s %s", resource.kind, resource.name)
            try:
                self._part(resource.kind).delete(resource.name)
            except ClientError as exc:
                raise InfrastructureError(
                    f"cannot delete {resource.kind} {resource.name}: {exc}. Fix the cause and "
                    f"run `nipype-batch infra down --name {self.spec.name}` again: it goes on "
                    "with what is left."
                ) from exc
            resource.state = "deleted"
        delete_profile(self.spec.name)
        return plan

    def _refuse_if_jobs(self, queue: str) -> None:
        jobs = self.job_queue.jobs_in_flight(queue)
        if jobs:
            shown = ", ".join(f"{j['jobName']} ({j['status']})" for j in jobs[:5])
            more = f" and {len(jobs) - 5} more" if len(jobs) > 5 else ""
            raise InfrastructureError(
                f"job queue {queue} has {len(jobs)} job(s) in flight: {shown}{more}. Nothing was "
                "deleted. Let them finish, or stop them with `nipype-batch cancel WORK_DIR` "
                f"(the run's base_dir), then run `nipype-batch infra down --name "
                f"{self.spec.name}` again."
            )


def connect_infra(spec: InfraSpec, *, local: bool = False, region: str | None = None,
                  endpoint_url: str | None = None, aws_profile: str | None = None
                  ) -> Infrastructure:
    """An :class:`Infrastructure` for ``spec`` on the local stack, on AWS, or at an endpoint.

    Parameters
    ----------
    local
        Use this process's local stack (:meth:`nipype_batch.local.LocalStack.get`).
    region, endpoint_url, aws_profile
        Where on AWS (or an AWS-compatible emulator); the region defaults to boto3's.
    """
    from ..aws.session import COMMAND_LINE, client_config, open_session

    if local:
        from ..local import LocalStack

        stack = LocalStack.get()
        made = {service: stack.client(service, config=client_config())
                for service in ("s3", "iam", "ecr", "batch", "ec2", "sts")}
        # the emulator has no IAM propagation delay, and answers at once
        return Infrastructure(spec, Clients(**made, backend="local"), iam_settle_s=0,
                              poll_s=0.1)
    session = open_session(aws_profile, region, COMMAND_LINE)
    return Infrastructure(spec, Clients.from_session(session, endpoint_url, client_config()))
