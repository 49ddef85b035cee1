"""What ``infra up`` makes (:class:`InfraSpec`), with which clients (:class:`Clients`), and the
record of each resource (:class:`Resource`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from botocore.exceptions import ClientError

from ..errors import InfrastructureError
from ..platforms import (
    ARCHITECTURES,
    CHOICES,
    DEFAULT_ARCHITECTURE,
    DEFAULT_PLATFORM,
    PLATFORMS,
    PlatformName,
)

TAG_KEY = "nipype-batch:infra"
# Names end up in a bucket name (63 characters with the account and region): keep them short.
_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,18}[a-z0-9])?")


# Graviton (arm64) general purpose, compute and memory families: what 'optimal' is for x86.
GRAVITON_FAMILIES = ("m7g", "c7g", "r7g")


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
        EC2 and Spot only: instance types or families, ``['optimal']`` lets Batch choose
        (x86 only; for arm64 the default is Graviton's general, compute and memory families).
    architecture
        ``'x86_64'`` or ``'arm64'`` (Graviton): the instances' CPU, which the profile passes
        on so that images are built for it; on Fargate the job definitions name it.
    subnets, security_groups
        Where jobs run; empty means the default VPC's subnets and its default security group.
    staging_prefix
        Prefix of the staging data in the bucket (the profile's ``s3://bucket/prefix``).
    staging_expiry_days
        Days after which the lifecycle rule deletes staging objects.
    """

    name: str = "default"
    platform: PlatformName = DEFAULT_PLATFORM
    max_vcpus: int = 64
    instance_types: list[str] = field(default_factory=lambda: ["optimal"])
    architecture: str = DEFAULT_ARCHITECTURE
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
        if self.platform not in PLATFORMS:
            raise InfrastructureError(
                f"platform {self.platform!r} is not known: use {CHOICES}."
            )
        if not _whole(self.max_vcpus):
            raise InfrastructureError(f"max_vcpus={self.max_vcpus!r} must be a whole number >= 1.")
        if self.architecture not in ARCHITECTURES:
            raise InfrastructureError(
                f"architecture {self.architecture!r} is not known: use 'x86_64' or 'arm64'.")
        self.architecture = ARCHITECTURES[self.architecture].name
        if self.architecture == "arm64" and self.instance_types == ["optimal"]:
            self.instance_types = list(GRAVITON_FAMILIES)  # 'optimal' is x86 only
        if self.platform != "fargate" and not self.instance_types:
            raise InfrastructureError(
                "instance_types is empty: name at least one type or family, e.g. "
                "['c6i', 'm6i'], or ['optimal'] to let Batch choose."
            )
        if not _whole(self.staging_expiry_days):
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

    @property
    def tags(self) -> dict[str, str]:
        """The tag every resource of the set carries: what ``down`` may delete."""
        return {TAG_KEY: self.name}


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


@dataclass
class Clients:
    """The boto3 clients :class:`~nipype_batch.infra.Infrastructure` uses, all of one account
    and region."""

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

    def created(self, arn: str) -> Resource:
        """This resource, just made."""
        return Resource(self.kind, self.name, "created", arn)

    def outcome(self, changed: list[str]) -> Resource:
        """After ``up``: created stays created; else updated (with what) or unchanged."""
        if self.state == "created":
            return self
        return Resource(self.kind, self.name, "updated" if changed else "unchanged", self.arn,
                        ", ".join(changed))


# What each part's find() returns: (arn, tags), tags None when the resource belongs to another
# account; None when there is no such resource.
Found = tuple[str, dict[str, str] | None] | None


def error_code(exc: ClientError) -> str:
    """The AWS error code of ``exc`` (``'NoSuchEntity'``, ``'404'``...)."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    """``{'k': 'v'}`` as the ``[{'Key': 'k', 'Value': 'v'}]`` of S3, IAM and ECR."""
    return [{"Key": key, "Value": value} for key, value in tags.items()]


def tag_dict(tags: list[dict[str, str]]) -> dict[str, str]:
    """The inverse of :func:`tag_list`."""
    return {t["Key"]: t["Value"] for t in tags}
