"""The local stack as a run's :class:`~nipype_batch.cloud.Cloud`: the same clients as on AWS,
built on the emulator, with queues and buckets made on demand."""

from __future__ import annotations

from ..aws.batch import BatchClient
from ..aws.session import ClientFactory
from ..aws.staging import Stager
from ..cloud import Cloud, Machine
from ..images.build import DEFAULT_BASE_IMAGE
from ..images.registries import PlainRegistry
from ..latency import LOCAL_STACK
from ..settings import BatchSettings
from .moto_adjustments import local_vcpus
from .stack import LocalStack


def connect_local(settings: BatchSettings) -> Cloud:
    """The local stack's clients (it builds them on its emulator), queue, bucket, registry."""
    stack = LocalStack.get()
    client = ClientFactory(lambda service, config: stack.client(service, config=config),
                           settings.aws_max_attempts)
    bucket, prefix = (settings.bucket_and_prefix() if settings.bucket else (stack.bucket, ""))
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
        api_calls=client.counter,
        ensure_queue=stack.ensure_queue,
        job_overhead_s=LOCAL_STACK.job_overhead_s() + settings.poll_min_s,
        machine=this_machine(),
        _docker=stack.docker,
    )


def this_machine() -> Machine:
    """This machine as the local stack's compute environment: its vCPUs (as the local stack
    schedules them) and memory; no GPUs, as moto starts containers without GPU devices."""
    import os

    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    return Machine(local_vcpus(), int(memory), gpus=0)
