"""The stock plugin on the simulated Batch, for tests and benchmarks of thousands of jobs.

:class:`SimulatedStack` starts the emulator and a
:class:`~nipype_batch.local.simulated_batch.SimulatedBatch` in front of it, builds the
:class:`~nipype_batch.cloud.Cloud` a run uses, and hands out a :class:`BatchPlugin` with that
cloud and no images (jobs run in worker processes, not containers).
"""

from __future__ import annotations

from typing import Any

import boto3

from .aws.batch import BatchClient
from .aws.session import ApiCallCounter
from .aws.staging import Stager
from .cloud import Cloud
from .images.registries import PlainRegistry
from .latency import ZERO, LatencyProfile
from .local.directory_s3 import DirectoryS3
from .local.simulated_batch import DIRECTORY_S3_ENV, QUEUE, REGION, SimulatedBatch
from .local.stack import THROWAWAY_KEY, start_emulator
from .plugin import BatchPlugin
from .protocol import ENDPOINT_ENV


class NoImages:
    """The simulated Batch runs jobs in worker processes: there are no images to publish."""

    def __init__(self) -> None:
        self.published: list = []

    def plan(self, nodes: list[Any]) -> None:
        return None

    def publish(self, nodes: list[Any], plan: Any = None) -> list:
        return []

    def image_for(self, resources: Any) -> str:
        return "simulated:no-container"


class SimulatedStack:
    """The emulator (a process of its own) and a :class:`SimulatedBatch` in front of it.

    ``cloud`` is what a :class:`~nipype_batch.plugin.BatchPlugin` uses instead of connecting.
    Objects go to the emulator's S3, or with ``s3_directory`` to a
    :class:`~nipype_batch.local.directory_s3.DirectoryS3` there (for 10,000 jobs).
    ``profile`` and ``time_scale`` go to the
    :class:`~nipype_batch.local.simulated_batch.SimulatedBatch`: Batch's delays and capacity,
    and real seconds per simulated second.
    """

    def __init__(self, workers: int = 2, s3_directory: str | None = None,
                 profile: LatencyProfile = ZERO, time_scale: float = 1.0) -> None:
        self.emulator = start_emulator()
        endpoint = f"http://127.0.0.1:{self.emulator.port}"
        session = boto3.Session(aws_access_key_id=THROWAWAY_KEY,
                                aws_secret_access_key=THROWAWAY_KEY, region_name=REGION)
        counter = ApiCallCounter()

        def client(service: str) -> Any:
            return counter.attach(session.client(service, endpoint_url=endpoint))

        job_environment = {ENDPOINT_ENV: endpoint,
                           "AWS_ACCESS_KEY_ID": THROWAWAY_KEY,
                           "AWS_SECRET_ACCESS_KEY": THROWAWAY_KEY, "AWS_DEFAULT_REGION": REGION}
        if s3_directory:
            s3 = counter.attach(DirectoryS3(s3_directory))
            job_environment[DIRECTORY_S3_ENV] = s3_directory
        else:
            s3 = client("s3")
        self.batch = SimulatedBatch(job_environment, workers=workers, profile=profile,
                                    time_scale=time_scale)
        s3.create_bucket(Bucket=QUEUE)
        self.cloud = Cloud(
            batch=BatchClient(counter.attach(self.batch.client(session)), client("logs")),
            stager=Stager(s3, QUEUE), job_queue=QUEUE, registry=PlainRegistry("simulated"),
            sts=client("sts"), job_environment=job_environment, api_calls=counter,
            job_overhead_s=profile.job_overhead_s(),
        )

    def plugin(self, plugin_args: dict[str, Any] | None = None) -> Any:
        """A BatchPlugin on this stack: no job images (nothing runs in a container)."""
        return BatchPlugin({"backend": "local", **(plugin_args or {})}, cloud=self.cloud,
                           images=NoImages())

    def stop(self) -> None:
        """Stop the workers and the emulator."""
        self.batch.shutdown()
        self.emulator.stop()
