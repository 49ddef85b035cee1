"""``nipype-batch infra``: the AWS resources a run needs, made and removed as one set.

``up`` creates, idempotently: a staging bucket (SSE-S3 encryption, public access blocked, a
lifecycle rule expiring staging data), an ECR repository, the job role (least privilege, see
:mod:`nipype_batch.iam`), the execution role (ECR pull and logs), the Batch service role, for EC2
and Spot an instance role and its instance profile, a managed compute environment and a job
queue; then it writes a named profile (:mod:`nipype_batch.profiles`). ``down`` removes them after
confirmation, and refuses while jobs are in flight on the queue.

Ownership is by tag: every resource carries ``nipype-batch:infra=NAME``. A resource that has a
planned name but not that tag (made by hand, or by something else) is never changed nor deleted:
``up`` refuses before creating anything, naming it, and ``down`` leaves it where it is.

:class:`Infrastructure` receives its boto3 clients (:class:`Clients`), so the same code runs
against real AWS, the local stack and an in-process moto.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from botocore.exceptions import ClientError

from .errors import InfrastructureError
from .iam import job_role_policy
from .profiles import Profile, delete_profile, save_profile

log = logging.getLogger(__name__)

Platform = Literal["ec2", "spot", "fargate"]
TAG_KEY = "nipype-batch:infra"
LIFECYCLE_RULE_ID = "nipype-batch-staging"
IN_FLIGHT = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING")
# Names end up in a bucket name (63 characters with the account and region): keep them short.
_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,18}[a-z0-9])?")
_MANAGED = "arn:{partition}:iam::aws:policy/service-role/"


@dataclass
class InfraSpec:
    """What ``infra up`` makes; validated at construction.

    Parameters
    ----------
    name
        Names the set: resources are ``nipype-batch-NAME[-...]`` and the profile is NAME.
    platform
        ``'ec2'`` (on-demand instances), ``'spot'`` or ``'fargate'``.
    max_vcpus
        Most vCPUs the compute environment runs at once (it scales to zero when idle).
    instance_types
        EC2 and Spot only: instance types or families, ``['optimal']`` lets Batch choose.
    subnets, security_groups
        Where jobs run; empty means the default VPC's subnets and its default security group.
    staging_prefix
        Prefix of the staging data in the bucket (the profile's ``s3://bucket/prefix``).
    staging_expiry_days
        Days after which the lifecycle rule deletes staging objects.
    """

    name: str = "default"
    platform: Platform = "ec2"
    max_vcpus: int = 64
    instance_types: list[str] = field(default_factory=lambda: ["optimal"])
    subnets: list[str] = field(default_factory=list)
    security_groups: list[str] = field(default_factory=list)
    staging_prefix: str = "nipype"
    staging_expiry_days: int = 30

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise InfrastructureError(
                f"infra name {self.name!r} must be 1-20 lowercase letters, digits or '-', "
                "starting and ending with a letter or digit (it goes into a bucket name), "
                "e.g. 'lab'."
            )
        if self.platform not in ("ec2", "spot", "fargate"):
            raise InfrastructureError(
                f"platform {self.platform!r} is not known: use 'ec2' (on-demand), 'spot' or "
                "'fargate'."
            )
        if isinstance(self.max_vcpus, bool) or not isinstance(self.max_vcpus, int) or (
                self.max_vcpus < 1):
            raise InfrastructureError(f"max_vcpus={self.max_vcpus!r} must be a whole number >= 1.")
        if self.platform != "fargate" and not self.instance_types:
            raise InfrastructureError(
                "instance_types is empty: name at least one type or family, e.g. "
                "['c6i', 'm6i'], or ['optimal'] to let Batch choose."
            )
        if (isinstance(self.staging_expiry_days, bool)
                or not isinstance(self.staging_expiry_days, int) or self.staging_expiry_days < 1):
            raise InfrastructureError(
                f"staging_expiry_days={self.staging_expiry_days!r} must be a whole number >= 1."
            )
        self.staging_prefix = self.staging_prefix.strip("/")
        if not self.staging_prefix:
            raise InfrastructureError("staging_prefix is empty: use e.g. 'nipype'.")

    @property
    def base(self) -> str:
        """Stem of every resource name."""
        return f"nipype-batch-{self.name}"


@dataclass
class Clients:
    """The boto3 clients :class:`Infrastructure` uses, all of one account and region."""

    s3: Any
    iam: Any
    ecr: Any
    batch: Any
    ec2: Any
    sts: Any
    backend: Literal["aws", "local"] = "aws"
    endpoint_url: str | None = None

    @classmethod
    def from_session(cls, session: Any, endpoint_url: str | None = None, config: Any = None,
                     backend: Literal["aws", "local"] = "aws") -> Clients:
        """Clients from a boto3 session (``endpoint_url`` for an emulator)."""
        def make(service: str) -> Any:
            return session.client(service, endpoint_url=endpoint_url, config=config)

        return cls(s3=make("s3"), iam=make("iam"), ecr=make("ecr"), batch=make("batch"),
                   ec2=make("ec2"), sts=make("sts"), backend=backend, endpoint_url=endpoint_url)

    @property
    def region(self) -> str:
        """The region every client talks to."""
        return self.batch.meta.region_name


@dataclass
class Resource:
    """One resource of the set and what happened to it.

    ``state`` is ``absent``, ``ours`` or ``foreign`` (exists, not tagged for this set) when
    looked at; ``created``, ``updated`` or ``unchanged`` after ``up``; ``deleted`` after ``down``.
    """

    kind: str
    name: str
    state: str
    arn: str = ""
    detail: str = ""


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": key, "Value": value} for key, value in tags.items()]


def _trust_policy(service: str) -> dict[str, Any]:
    """Trust policy letting ``service`` (e.g. ``batch.amazonaws.com``) assume a role."""
    return {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": service},
                       "Action": "sts:AssumeRole"}],
    }


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
        self.wait_timeout_s = wait_timeout_s
        self.poll_s = poll_s
        self._identity: tuple[str, str] | None = None

    # ---- names -----------------------------------------------------------------------------

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
    def bucket_name(self) -> str:
        """``nipype-batch-NAME-ACCOUNT-REGION``: bucket names are global, so made unique."""
        account, _ = self._account_and_partition()
        return f"{self.spec.base}-{account}-{self.clients.region}"

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

    @staticmethod
    def _method(action: str, kind: str) -> str:
        return f"_{action}_" + ("role" if kind.endswith("-role") else kind.replace("-", "_"))

    # ---- looking ---------------------------------------------------------------------------

    def plan(self, everything: bool = False) -> list[Resource]:
        """Each resource of the set, ``absent``, ``ours`` or ``foreign``."""
        return [self._look(kind, name) for kind, name in self._names(everything)]

    def _look(self, kind: str, name: str) -> Resource:
        try:
            found = getattr(self, self._method("find", kind))(name)
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

    def _find_bucket(self, name: str) -> tuple[str, dict[str, str] | None] | None:
        s3 = self.clients.s3
        try:
            s3.head_bucket(Bucket=name)
        except ClientError as exc:
            if _code(exc) in ("404", "NoSuchBucket", "NotFound"):
                return None
            if _code(exc) in ("403", "AccessDenied", "Forbidden"):
                return self._bucket_arn(name), None
            raise
        try:
            tags = s3.get_bucket_tagging(Bucket=name)["TagSet"]
        except ClientError as exc:
            if _code(exc) != "NoSuchTagSet":
                raise
            tags = []
        return self._bucket_arn(name), {t["Key"]: t["Value"] for t in tags}

    def _find_repository(self, name: str) -> tuple[str, dict[str, str]] | None:
        ecr = self.clients.ecr
        try:
            repo = ecr.describe_repositories(repositoryNames=[name])["repositories"][0]
        except ClientError as exc:
            if _code(exc) == "RepositoryNotFoundException":
                return None
            raise
        tags = ecr.list_tags_for_resource(resourceArn=repo["repositoryArn"]).get("tags", [])
        return repo["repositoryArn"], {t["Key"]: t["Value"] for t in tags}

    def _find_role(self, name: str) -> tuple[str, dict[str, str]] | None:
        try:
            role = self.clients.iam.get_role(RoleName=name)["Role"]
        except ClientError as exc:
            if _code(exc) == "NoSuchEntity":
                return None
            raise
        return role["Arn"], {t["Key"]: t["Value"] for t in role.get("Tags", [])}

    def _find_instance_profile(self, name: str) -> tuple[str, dict[str, str]] | None:
        try:
            profile = self.clients.iam.get_instance_profile(InstanceProfileName=name)
        except ClientError as exc:
            if _code(exc) == "NoSuchEntity":
                return None
            raise
        found = profile["InstanceProfile"]
        return found["Arn"], {t["Key"]: t["Value"] for t in found.get("Tags", [])}

    def _compute_environment(self, name: str) -> dict[str, Any] | None:
        found = self.clients.batch.describe_compute_environments(computeEnvironments=[name])
        live = [ce for ce in found["computeEnvironments"] if ce.get("status") != "DELETED"]
        return live[0] if live else None

    def _job_queue(self, name: str) -> dict[str, Any] | None:
        found = self.clients.batch.describe_job_queues(jobQueues=[name])
        live = [q for q in found["jobQueues"] if q.get("status") != "DELETED"]
        return live[0] if live else None

    def _find_compute_environment(self, name: str) -> tuple[str, dict[str, str]] | None:
        ce = self._compute_environment(name)
        return (ce["computeEnvironmentArn"], ce.get("tags", {})) if ce else None

    def _find_job_queue(self, name: str) -> tuple[str, dict[str, str]] | None:
        queue = self._job_queue(name)
        return (queue["jobQueueArn"], queue.get("tags", {})) if queue else None

    def jobs_in_flight(self) -> list[dict[str, Any]]:
        """Jobs on the set's queue that have not finished (summaries from ListJobs)."""
        jobs = []
        for status in IN_FLIGHT:
            token: str | None = None
            while True:
                page = self.clients.batch.list_jobs(
                    jobQueue=self.spec.base, jobStatus=status,
                    **({"nextToken": token} if token else {}))
                jobs += page.get("jobSummaryList", [])
                token = page.get("nextToken")
                if not token:
                    break
        return jobs

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
        if kind == "instance-profile":
            return self._ensure_instance_profile(resource, done["instance-role"].name)
        if kind == "compute-environment":
            new_roles = any(r.state == "created" for k, r in done.items()
                            if k.endswith("-role") or k == "instance-profile")
            if new_roles and resource.state == "absent" and self.iam_settle_s:
                log.info("waiting %.0f s for new IAM roles to reach Batch", self.iam_settle_s)
                time.sleep(self.iam_settle_s)
            instance_profile = done.get("instance-profile")
            return self._ensure_compute_environment(
                resource, done["batch-service-role"].arn,
                instance_profile.arn if instance_profile else "")
        if kind == "job-queue":
            return self._ensure_job_queue(resource, done["compute-environment"].arn)
        return getattr(self, self._method("ensure", kind))(resource)

    def _ensure_bucket(self, resource: Resource) -> Resource:
        s3, name = self.clients.s3, resource.name
        if resource.state == "absent":
            where = self.clients.region
            s3.create_bucket(Bucket=name, **({} if where == "us-east-1" else {
                "CreateBucketConfiguration": {"LocationConstraint": where}}))
            s3.put_bucket_tagging(Bucket=name, Tagging={"TagSet": _tag_list(self._tags())})
            resource = Resource(resource.kind, name, "created", self._bucket_arn(name))
        changed = []
        try:
            rules = s3.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"]
            encrypted = any(r.get("ApplyServerSideEncryptionByDefault", {}).get("SSEAlgorithm")
                            for r in rules["Rules"])
        except ClientError as exc:
            if _code(exc) != "ServerSideEncryptionConfigurationNotFoundError":
                raise
            encrypted = False
        if not encrypted:
            s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={"Rules": [
                {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
            changed.append("encryption")
        block = dict.fromkeys(("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy",
                               "RestrictPublicBuckets"), True)
        try:
            current = s3.get_public_access_block(Bucket=name)["PublicAccessBlockConfiguration"]
        except ClientError as exc:
            if _code(exc) != "NoSuchPublicAccessBlockConfiguration":
                raise
            current = {}
        if current != block:
            s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration=block)
            changed.append("public access block")
        if self._ensure_lifecycle(name):
            changed.append("lifecycle rule")
        return self._outcome(resource, changed)

    def _ensure_lifecycle(self, bucket: str) -> bool:
        """Our rule among the bucket's lifecycle rules (others kept); True if it was written."""
        s3 = self.clients.s3
        rule = {"ID": LIFECYCLE_RULE_ID, "Status": "Enabled",
                "Filter": {"Prefix": f"{self.spec.staging_prefix}/"},
                "Expiration": {"Days": self.spec.staging_expiry_days},
                "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7}}
        try:
            rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
        except ClientError as exc:
            if _code(exc) != "NoSuchLifecycleConfiguration":
                raise
            rules = []
        ours = [r for r in rules if r.get("ID") == LIFECYCLE_RULE_ID]
        if ours and all(ours[0].get(key) == value for key, value in rule.items()):
            return False
        others = [r for r in rules if r.get("ID") != LIFECYCLE_RULE_ID]
        s3.put_bucket_lifecycle_configuration(
            Bucket=bucket, LifecycleConfiguration={"Rules": [*others, rule]})
        return True

    def _ensure_repository(self, resource: Resource) -> Resource:
        if resource.state == "ours":
            return self._outcome(resource, [])
        # as EcrRegistry makes its own: immutable tags, scanned on push
        repo = self.clients.ecr.create_repository(
            repositoryName=resource.name, imageTagMutability="IMMUTABLE",
            imageScanningConfiguration={"scanOnPush": True},
            encryptionConfiguration={"encryptionType": "AES256"},
            tags=_tag_list(self._tags()),
        )["repository"]
        return Resource(resource.kind, resource.name, "created", repo["repositoryArn"])

    def _role_design(self, kind: str) -> tuple[str, list[str], dict[str, Any] | None]:
        """(service trusted to assume it, AWS-managed policies, inline policy) of a role."""
        _, partition = self._account_and_partition()
        managed = _MANAGED.format(partition=partition)
        if kind == "job-role":  # the job's own S3 access, and nothing else
            return "ecs-tasks", [], job_role_policy(self.bucket_name, self.spec.staging_prefix)
        if kind == "execution-role":  # ECS pulls the image and ships logs (Fargate)
            return "ecs-tasks", [managed + "AmazonECSTaskExecutionRolePolicy"], None
        if kind == "batch-service-role":  # Batch manages the instances and ECS cluster
            return "batch", [managed + "AWSBatchServiceRole"], None
        return "ec2", [managed + "AmazonEC2ContainerServiceforEC2Role"], None  # the ECS agent

    def _ensure_role(self, resource: Resource) -> Resource:
        iam, name = self.clients.iam, resource.name
        service, managed, inline = self._role_design(resource.kind)
        trust = _trust_policy(f"{service}.amazonaws.com")
        changed = []
        if resource.state == "absent":
            arn = iam.create_role(
                RoleName=name, AssumeRolePolicyDocument=json.dumps(trust),
                Description=f"nipype-batch infra {self.spec.name}", Tags=_tag_list(self._tags()),
            )["Role"]["Arn"]
            resource = Resource(resource.kind, name, "created", arn)
        elif iam.get_role(RoleName=name)["Role"]["AssumeRolePolicyDocument"] != trust:
            iam.update_assume_role_policy(RoleName=name, PolicyDocument=json.dumps(trust))
            changed.append("trust policy")
        attached = {p["PolicyArn"] for p in
                    iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]}
        for policy in managed:
            if policy not in attached:
                try:
                    iam.attach_role_policy(RoleName=name, PolicyArn=policy)
                except ClientError as exc:
                    raise InfrastructureError(
                        f"cannot attach {policy} to role {name}: {exc}. On an emulator, AWS "
                        "managed policies must be loaded (moto: MOTO_IAM_LOAD_MANAGED_POLICIES="
                        "true)."
                    ) from exc
                changed.append(policy.rsplit("/", 1)[1])
        if inline is not None:
            try:
                current = iam.get_role_policy(RoleName=name, PolicyName="nipype-batch")
            except ClientError as exc:
                if _code(exc) != "NoSuchEntity":
                    raise
                current = {}
            if current.get("PolicyDocument") != inline:
                iam.put_role_policy(RoleName=name, PolicyName="nipype-batch",
                                    PolicyDocument=json.dumps(inline))
                changed.append("inline policy")
        return self._outcome(resource, changed)

    def _ensure_instance_profile(self, resource: Resource, role: str) -> Resource:
        iam, name = self.clients.iam, resource.name
        changed = []
        if resource.state == "absent":
            arn = iam.create_instance_profile(
                InstanceProfileName=name, Tags=_tag_list(self._tags()))["InstanceProfile"]["Arn"]
            resource = Resource(resource.kind, name, "created", arn)
        roles = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]["Roles"]
        if role not in {r["RoleName"] for r in roles}:
            iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=role)
            changed.append(f"role {role}")
        return self._outcome(resource, changed)

    def _network(self) -> tuple[list[str], list[str]]:
        """The spec's subnets and security groups, or the default VPC's."""
        if self.spec.subnets and self.spec.security_groups:
            return self.spec.subnets, self.spec.security_groups
        ec2 = self.clients.ec2
        vpcs = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
        if not vpcs:
            raise InfrastructureError(
                f"region {self.clients.region} has no default VPC: name where jobs run with "
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

    def _compute_resources(self, instance_profile_arn: str) -> dict[str, Any]:
        subnets, groups = self._network()
        spec = self.spec
        resources: dict[str, Any] = {"type": spec.platform.upper(), "maxvCpus": spec.max_vcpus,
                                     "subnets": subnets, "securityGroupIds": groups}
        if spec.platform != "fargate":
            resources.update(
                minvCpus=0, desiredvCpus=0, instanceTypes=spec.instance_types,
                instanceRole=instance_profile_arn, tags=self._tags(),
                allocationStrategy=("SPOT_CAPACITY_OPTIMIZED" if spec.platform == "spot"
                                    else "BEST_FIT_PROGRESSIVE"),
            )
        return resources

    def _ensure_compute_environment(self, resource: Resource, service_role_arn: str,
                                    instance_profile_arn: str) -> Resource:
        batch, name = self.clients.batch, resource.name
        changed = []
        if resource.state == "absent":
            arn = batch.create_compute_environment(
                computeEnvironmentName=name, type="MANAGED", state="ENABLED",
                computeResources=self._compute_resources(instance_profile_arn),
                serviceRole=service_role_arn, tags=self._tags(),
            )["computeEnvironmentArn"]
            resource = Resource(resource.kind, name, "created", arn)
        else:
            ce = self._compute_environment(name) or {}
            have = ce.get("computeResources", {})
            want_types = [] if self.spec.platform == "fargate" else self.spec.instance_types
            if (have.get("type") != self.spec.platform.upper()
                    or sorted(have.get("instanceTypes", [])) != sorted(want_types)):
                raise InfrastructureError(
                    f"compute environment {name} runs {have.get('type')} "
                    f"{have.get('instanceTypes', [])}, not {self.spec.platform.upper()} "
                    f"{want_types}: Batch cannot change that in place. Run `nipype-batch infra "
                    f"down --name {self.spec.name}` first, or choose another --name."
                )
            update: dict[str, Any] = {}
            if have.get("maxvCpus") != self.spec.max_vcpus:
                update["computeResources"] = {"maxvCpus": self.spec.max_vcpus}
                changed.append(f"maxvCpus {have.get('maxvCpus')} -> {self.spec.max_vcpus}")
            if ce.get("state") != "ENABLED":
                update["state"] = "ENABLED"
                changed.append("enabled")
            if update:
                batch.update_compute_environment(computeEnvironment=name, **update)
        self._wait_until(f"compute environment {name} is VALID",
                         lambda: self._settled(self._compute_environment(name), name))
        return self._outcome(resource, changed)

    def _ensure_job_queue(self, resource: Resource, compute_environment_arn: str) -> Resource:
        batch, name = self.clients.batch, resource.name
        changed = []
        if resource.state == "absent":
            arn = batch.create_job_queue(
                jobQueueName=name, state="ENABLED", priority=1,
                computeEnvironmentOrder=[{"order": 1,
                                          "computeEnvironment": compute_environment_arn}],
                tags=self._tags(),
            )["jobQueueArn"]
            resource = Resource(resource.kind, name, "created", arn)
        elif (self._job_queue(name) or {}).get("state") != "ENABLED":
            batch.update_job_queue(jobQueue=name, state="ENABLED")
            changed.append("enabled")
        self._wait_until(f"job queue {name} is VALID",
                         lambda: self._settled(self._job_queue(name), name))
        return self._outcome(resource, changed)

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
            self.clients.batch.update_job_queue(jobQueue=queue.name, state="DISABLED")
            try:
                self._refuse_if_jobs(queue.name)
            except InfrastructureError:
                self.clients.batch.update_job_queue(jobQueue=queue.name, state="ENABLED")
                raise
        for resource in reversed(ours):
            log.info("deleting %s %s", resource.kind, resource.name)
            try:
                getattr(self, self._method("delete", resource.kind))(resource.name)
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
        jobs = self.jobs_in_flight()
        if jobs:
            shown = ", ".join(f"{j['jobName']} ({j['status']})" for j in jobs[:5])
            more = f" and {len(jobs) - 5} more" if len(jobs) > 5 else ""
            raise InfrastructureError(
                f"job queue {queue} has {len(jobs)} job(s) in flight: {shown}{more}. Nothing was "
                "deleted. Let them finish, or stop them with `nipype-batch cancel WORK_DIR` "
                f"(the run's base_dir), then run `nipype-batch infra down --name "
                f"{self.spec.name}` again."
            )

    def _delete_job_queue(self, name: str) -> None:
        batch = self.clients.batch
        self._wait_until(f"job queue {name} is disabled",
                         lambda: self._settled(self._job_queue(name), name))
        batch.delete_job_queue(jobQueue=name)
        self._wait_until(f"job queue {name} is deleted", lambda: self._job_queue(name) is None)

    def _delete_compute_environment(self, name: str) -> None:
        batch = self.clients.batch
        batch.update_compute_environment(computeEnvironment=name, state="DISABLED")
        self._wait_until(f"compute environment {name} is disabled",
                         lambda: self._settled(self._compute_environment(name), name))
        batch.delete_compute_environment(computeEnvironment=name)
        # the service role must outlive the deletion, which uses it
        self._wait_until(f"compute environment {name} is deleted",
                         lambda: self._compute_environment(name) is None)

    def _delete_instance_profile(self, name: str) -> None:
        iam = self.clients.iam
        for role in iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]["Roles"]:
            iam.remove_role_from_instance_profile(InstanceProfileName=name,
                                                  RoleName=role["RoleName"])
        iam.delete_instance_profile(InstanceProfileName=name)

    def _delete_role(self, name: str) -> None:
        iam = self.clients.iam
        for policy in iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]:
            iam.detach_role_policy(RoleName=name, PolicyArn=policy["PolicyArn"])
        for policy in iam.list_role_policies(RoleName=name)["PolicyNames"]:
            iam.delete_role_policy(RoleName=name, PolicyName=policy)
        iam.delete_role(RoleName=name)

    def _delete_repository(self, name: str) -> None:
        self.clients.ecr.delete_repository(repositoryName=name, force=True)

    def _delete_bucket(self, name: str) -> None:
        s3 = self.clients.s3
        for upload in s3.list_multipart_uploads(Bucket=name).get("Uploads", []):
            s3.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
        batch: list[dict[str, str]] = []
        for key in self._object_versions(name):
            batch.append(key)
            if len(batch) == 1000:  # DeleteObjects' limit
                s3.delete_objects(Bucket=name, Delete={"Objects": batch, "Quiet": True})
                batch = []
        if batch:
            s3.delete_objects(Bucket=name, Delete={"Objects": batch, "Quiet": True})
        s3.delete_bucket(Bucket=name)

    def _object_versions(self, bucket: str) -> Iterator[dict[str, str]]:
        for page in self.clients.s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
            for item in page.get("Versions", []) + page.get("DeleteMarkers", []):
                yield {"Key": item["Key"], "VersionId": item["VersionId"]}

    # ---- helpers ---------------------------------------------------------------------------

    def _bucket_arn(self, name: str) -> str:
        return f"arn:{self._account_and_partition()[1]}:s3:::{name}"

    def _tags(self) -> dict[str, str]:
        return {TAG_KEY: self.spec.name}

    @staticmethod
    def _outcome(resource: Resource, changed: list[str]) -> Resource:
        if resource.state == "created":
            return resource
        state = "updated" if changed else "unchanged"
        return Resource(resource.kind, resource.name, state, resource.arn, ", ".join(changed))

    @staticmethod
    def _settled(found: dict[str, Any] | None, name: str) -> bool:
        """True once a compute environment or queue is VALID; raises if it became INVALID."""
        if found is None:
            raise InfrastructureError(f"{name} disappeared while nipype-batch waited for it")
        if found.get("status") == "INVALID":
            raise InfrastructureError(
                f"{name} is INVALID: {found.get('statusReason', 'no reason given')}. Fix the "
                "cause (often an IAM role or subnet), then run `nipype-batch infra down` and "
                "`up` again."
            )
        return found.get("status") == "VALID"

    def _wait_until(self, what: str, done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + self.wait_timeout_s
        while not done():
            if time.monotonic() > deadline:
                raise InfrastructureError(
                    f"gave up after {self.wait_timeout_s:.0f} s waiting until {what}; see the "
                    "AWS Batch console, then run the same `nipype-batch infra` command again."
                )
            time.sleep(self.poll_s)


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
    from .retry_policy import client_config

    if local:
        from .local import LocalStack

        stack = LocalStack.get()
        made = {service: stack.client(service, config=client_config())
                for service in ("s3", "iam", "ecr", "batch", "ec2", "sts")}
        # the emulator has no IAM propagation delay, and answers at once
        return Infrastructure(spec, Clients(**made, backend="local"), iam_settle_s=0,
                              poll_s=0.1)
    import boto3

    try:
        session = boto3.Session(profile_name=aws_profile, region_name=region)
    except Exception as exc:
        raise InfrastructureError(
            f"cannot open AWS profile {aws_profile!r}: {exc}. List yours with "
            "`aws configure list-profiles`."
        ) from exc
    if not session.region_name:
        raise InfrastructureError(
            "no AWS region: pass --region us-east-1 (or set $AWS_DEFAULT_REGION)."
        )
    return Infrastructure(spec, Clients.from_session(session, endpoint_url, client_config()))
