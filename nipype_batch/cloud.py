"""Connect settings to a cloud: real AWS, or the local stack standing in for it.

Everything after this point uses the same clients and code on both; only who provides the
endpoint, queue, bucket and registry differs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .api_calls import ApiCallCounter
from .batch_client import BatchClient
from .errors import ConfigurationError
from .images.build import DEFAULT_BASE_IMAGE
from .images.registries import EcrRegistry, PlainRegistry, Registry
from .retry_policy import client_config
from .settings import BatchSettings
from .staging import Stager


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
    local_stack: Any = None
    _docker: Any = None

    def docker(self) -> Any:
        """The Docker client used to build images (connected on first use)."""
        if self._docker is None:
            from .images.docker import connect_docker

            self._docker = connect_docker()
        return self._docker

    def ensure_queue(self, name: str) -> None:
        """On the local stack, create a queue a node names; on AWS queues must exist."""
        if self.local_stack is not None:
            self.local_stack.ensure_queue(name)


def connect(settings: BatchSettings) -> Cloud:
    """Build the :class:`Cloud` for ``settings`` (starting the local stack if asked for)."""
    counter = ApiCallCounter()
    if settings.backend == "local":
        from .local import LocalStack

        stack = LocalStack.get()
        client = lambda service: counter.attach(  # noqa: E731
            stack.client(service, config=client_config(settings.aws_max_attempts))
        )
        bucket, prefix = (settings.bucket_and_prefix() if settings.bucket
                          else (stack.bucket, ""))
        stack.ensure_bucket(bucket)
        queue = settings.job_queue or stack.job_queue
        stack.ensure_queue(queue)
        return Cloud(
            batch=BatchClient(client("batch"), client("logs")),
            stager=Stager(client("s3"), bucket, prefix),
            job_queue=queue,
            registry=PlainRegistry(stack.registry_address),
            sts=client("sts"),
            job_environment=stack.job_environment(),
            job_name_prefix=stack.job_name_prefix,
            base_image=settings.base_image or DEFAULT_BASE_IMAGE,
            api_calls=counter,
            local_stack=stack,
            _docker=stack.docker,
        )

    import boto3

    try:
        session = boto3.Session(profile_name=settings.aws_profile, region_name=settings.region)
    except Exception as exc:
        raise ConfigurationError(
            f"cannot open AWS profile {settings.aws_profile!r}: {exc}. List yours with "
            "`aws configure list-profiles`, or leave aws_profile unset."
        ) from exc
    if not session.region_name:
        raise ConfigurationError(
            "no AWS region: set plugin_args={'region': 'us-east-1'} (or $AWS_DEFAULT_REGION)."
        )
    client = lambda service: counter.attach(  # noqa: E731
        session.client(service, endpoint_url=settings.endpoint_url,
                       config=client_config(settings.aws_max_attempts))
    )
    bucket, prefix = settings.bucket_and_prefix()
    env = {"NIPYPE_BATCH_ENDPOINT_URL": settings.endpoint_url} if settings.endpoint_url else {}
    return Cloud(
        batch=BatchClient(client("batch"), client("logs")),
        stager=Stager(client("s3"), bucket, prefix),
        job_queue=settings.job_queue or "",
        registry=EcrRegistry(client("ecr"), settings.ecr_repository),
        sts=client("sts"),
        job_environment=env,
        base_image=settings.base_image or DEFAULT_BASE_IMAGE,
        api_calls=counter,
    )
