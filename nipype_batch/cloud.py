"""The clients and resources a run uses (:class:`Cloud`), and how an AWS account gives them.

The local stack builds the same :class:`Cloud` on its emulator (:mod:`nipype_batch.local.cloud`);
:mod:`nipype_batch.backend` picks one. Everything after that point uses the same clients and
code on both. The AWS code (:mod:`nipype_batch.aws`) is handed its clients and knows of no
local stack.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .aws.batch import BatchClient
from .aws.session import ApiCallCounter, ClientFactory, open_session
from .aws.staging import Stager
from .images.build import DEFAULT_BASE_IMAGE
from .images.registries import EcrRegistry, Registry
from .protocol import ENDPOINT_ENV
from .settings import BatchSettings


def queues_must_exist(name: str) -> None:
    """On AWS a run never creates a job queue: the preflight reports a missing one."""


@dataclass(frozen=True)
class Machine:
    """What one machine can give a job: the local stack's compute environment."""

    vcpus: int
    memory_mb: int
    gpus: int


@dataclass
class Cloud:
    """The clients and resources one run uses."""

    batch: BatchClient
    stager: Stager
    job_queue: str
    registry: Registry
    sts: Any = None
    job_environment: dict[str, str] = field(default_factory=dict)
    job_name_prefix: str = ""
    base_image: str = DEFAULT_BASE_IMAGE
    api_calls: ApiCallCounter = field(default_factory=ApiCallCounter)
    # Called with each queue a run's nodes name, before the preflight: the local stack creates
    # them on demand; on AWS they must exist.
    ensure_queue: Callable[[str], None] = queues_must_exist
    # Seconds a job waits before it runs on this backend (packing weighs it); None: AWS's.
    job_overhead_s: float | None = None
    # The local stack runs jobs on this machine: no job larger than it can start.
    machine: Machine | None = None
    _docker: Any = None

    def docker(self) -> Any:
        """The Docker client used to build images (connected on first use)."""
        if self._docker is None:
            from .images.docker import connect_docker

            self._docker = connect_docker()
        return self._docker


def connect_aws(settings: BatchSettings) -> Cloud:
    """The :class:`Cloud` of an AWS account, as ``settings`` name it."""
    session = open_session(settings.aws_profile, settings.region)
    client = ClientFactory.for_session(session, settings.endpoint_url, settings.aws_max_attempts)
    bucket, prefix = settings.bucket_and_prefix()
    # Jobs get no region from Batch on EC2: the runner's S3 client needs the bucket's.
    env = {"AWS_DEFAULT_REGION": session.region_name}
    if settings.endpoint_url:
        env[ENDPOINT_ENV] = settings.endpoint_url
    return Cloud(
        batch=BatchClient(client("batch"), client("logs")),
        stager=Stager(client("s3"), bucket, prefix),
        job_queue=settings.job_queue or "",
        registry=EcrRegistry(client("ecr"), settings.ecr_repository),
        sts=client("sts"),
        job_environment=env,
        base_image=settings.base_image or DEFAULT_BASE_IMAGE,
        api_calls=client.counter,
    )
