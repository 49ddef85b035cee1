"""A simulated AWS Batch that completes jobs without containers, for scale tests and benchmarks.

The driver talks to it through a genuine botocore ``batch`` client (requests serialised and
responses parsed against the API model, calls counted by the same hooks), whose HTTP requests
are answered in process instead of sent. Each job runs ``nipype_batch.runner`` in a pool of
worker processes, against the emulator's S3: every result is real, only the container, the
instance and Batch's own scheduling are left out. The driver's CPU and memory can then be
measured at 10,000 jobs, which the container-backed local stack cannot reach on one machine.

What it leaves out: retries (one attempt per job), job timeouts, logs (no log streams), job
dependencies, and queue priorities. What it enforces as AWS does: 100 ids per DescribeJobs,
arrays of 2 to 10,000 children, 8192 characters of container overrides.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
import uuid
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from io import BytesIO
from multiprocessing import get_context
from typing import Any

from botocore.awsrequest import AWSResponse

from ..aws.batch import ARRAY_MAX, ARRAY_MIN, DESCRIBE_CHUNK, OVERRIDES_LIMIT
from ..protocol import ARRAY_INDEX_ENV

ACCOUNT = "123456789012"
REGION = "us-east-1"
QUEUE = "simulated"


def _now_ms() -> int:
    return int(time.time() * 1000)


DIRECTORY_S3_ENV = "NIPYPE_BATCH_SIMULATED_S3_DIR"


def _quiet_worker() -> None:
    """Send a worker's output (Nipype logs every node) nowhere, as a container's would go to
    its log stream rather than the driver's terminal."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)


def run_job(environment: dict[str, str]) -> tuple[int, int, int]:
    """In a worker process: run one job's runner; return (exit code, started, stopped ms)."""
    from .. import runner

    if environment.get(DIRECTORY_S3_ENV):
        from .directory_s3 import DirectoryS3

        runner._s3_client = lambda: DirectoryS3(environment[DIRECTORY_S3_ENV])
    started = _now_ms()
    saved = dict(os.environ)
    os.environ.update(environment)
    try:
        code = runner.main()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return code, started, _now_ms()


@dataclass
class SimulatedJob:
    """One job (or one array child, or an array's parent) and what DescribeJobs tells of it."""

    job_id: str
    name: str
    queue: str
    definition: str
    overrides: dict[str, Any]
    created_at: int = field(default_factory=_now_ms)
    status: str = "RUNNABLE"
    exit_code: int | None = None
    started_at: int | None = None
    stopped_at: int | None = None
    reason: str | None = None
    index: int | None = None
    children: list[SimulatedJob] = field(default_factory=list)
    children_done: int = 0
    future: Future | None = None

    def _status(self) -> str:
        if self.status == "RUNNABLE" and self.future is not None and self.future.running():
            return "RUNNING"
        return self.status

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "jobId": self.job_id, "jobArn": f"arn:aws:batch:{REGION}:{ACCOUNT}:job/{self.job_id}",
            "jobName": self.name, "jobQueue": self.queue, "jobDefinition": self.definition,
            "status": self._status(), "createdAt": self.created_at, "dependsOn": [],
            "container": {"resourceRequirements": self.overrides.get("resourceRequirements", [])},
        }
        if self.children:
            summary = dict.fromkeys(("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING",
                                     "SUCCEEDED", "FAILED"), 0)
            for child in self.children:
                summary[child._status()] += 1
            out["arrayProperties"] = {"size": len(self.children), "statusSummary": summary}
        elif self.index is not None:
            out["arrayProperties"] = {"index": self.index}
        for key, value in (("startedAt", self.started_at), ("stoppedAt", self.stopped_at),
                           ("statusReason", self.reason)):
            if value is not None:
                out[key] = value
        if self.exit_code is not None:
            out["container"]["exitCode"] = self.exit_code
        return out


class _Body(BytesIO):
    def stream(self, **_kwargs: Any) -> Any:
        yield self.getvalue()


class _ClientError(Exception):
    pass


class SimulatedBatch:
    """The simulated service: queues, job definitions and jobs, run by ``workers`` processes.

    Parameters
    ----------
    job_environment : dict
        Variables every job gets besides its overrides (how to reach the emulator's S3).
    workers : int
        Worker processes; each runs one job at a time, as one container per vCPU would.
    """

    def __init__(self, job_environment: dict[str, str], workers: int = 2) -> None:
        self.job_environment = dict(job_environment)
        self.jobs: dict[str, SimulatedJob] = {}
        self._definitions: dict[str, dict[str, Any]] = {}
        self._revision = itertools.count(1)
        self._lock = threading.Lock()
        self._pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"),
                                         initializer=_quiet_worker)

    def client(self, session: Any) -> Any:
        """A botocore ``batch`` client whose every request this simulator answers."""
        batch = session.client("batch", region_name=REGION, endpoint_url="http://simulated")
        batch.meta.events.register("before-send.batch", self._answer)
        return batch

    def shutdown(self) -> None:
        """Stop the workers (queued jobs are dropped)."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    # ---- HTTP edge ---------------------------------------------------------------------------

    def _answer(self, request: Any, **_kwargs: Any) -> AWSResponse:
        operation = request.url.rstrip("/").rsplit("/", 1)[-1]
        body = json.loads(request.body or b"{}")
        try:
            status, answer = 200, getattr(self, f"_op_{operation}")(body)
        except _ClientError as exc:
            status, answer = 400, {"__type": "ClientException", "message": str(exc)}
        except AttributeError:
            status, answer = 400, {"__type": "ClientException",
                                   "message": f"{operation} is not simulated"}
        headers = {"Content-Type": "application/json"}
        if status != 200:
            headers["x-amzn-errortype"] = "ClientException"
        return AWSResponse(request.url, status, headers, _Body(json.dumps(answer).encode()))

    # ---- operations --------------------------------------------------------------------------

    def _op_describejobqueues(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"jobQueues": [{
            "jobQueueName": QUEUE, "jobQueueArn": f"arn:aws:batch:{REGION}:{ACCOUNT}:job-queue/"
            f"{QUEUE}", "state": "ENABLED", "status": "VALID", "priority": 1,
            "computeEnvironmentOrder": [{"order": 1, "computeEnvironment": QUEUE}],
        }] if QUEUE in body.get("jobQueues", [QUEUE]) else []}

    def _op_describecomputeenvironments(self, _body: dict[str, Any]) -> dict[str, Any]:
        return {"computeEnvironments": [{
            "computeEnvironmentName": QUEUE, "computeEnvironmentArn": QUEUE, "type": "UNMANAGED",
            "state": "ENABLED", "status": "VALID", "ecsClusterArn": QUEUE,
        }]}

    def _op_describejobdefinitions(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body.get("jobDefinitionName")
        return {"jobDefinitions": [d for d in self._definitions.values()
                                   if d["jobDefinitionName"] == name]}

    def _op_registerjobdefinition(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body["jobDefinitionName"]
        revision = next(self._revision)
        arn = f"arn:aws:batch:{REGION}:{ACCOUNT}:job-definition/{name}:{revision}"
        self._definitions[arn] = {"jobDefinitionName": name, "jobDefinitionArn": arn,
                                  "revision": revision, "status": "ACTIVE", "type": "container",
                                  "containerProperties": body.get("containerProperties", {})}
        return {"jobDefinitionName": name, "jobDefinitionArn": arn, "revision": revision}

    def _op_submitjob(self, body: dict[str, Any]) -> dict[str, Any]:
        overrides = body.get("containerOverrides") or {}
        if len(json.dumps(overrides)) > OVERRIDES_LIMIT:
            raise _ClientError("Container overrides length must be at most 8192")
        if body["jobDefinition"] not in self._definitions:
            raise _ClientError(f"Job definition {body['jobDefinition']} does not exist")
        job = SimulatedJob(str(uuid.uuid4()), body["jobName"], body["jobQueue"],
                           body["jobDefinition"], overrides)
        size = (body.get("arrayProperties") or {}).get("size")
        with self._lock:
            self.jobs[job.job_id] = job
            if size is None:
                self._start(job)
                return {"jobId": job.job_id, "jobName": job.name}
            if not ARRAY_MIN <= size <= ARRAY_MAX:
                raise _ClientError(f"Array size must be between {ARRAY_MIN} and {ARRAY_MAX}")
            job.status = "PENDING"
            for index in range(size):
                child = SimulatedJob(f"{job.job_id}:{index}", job.name, job.queue,
                                     job.definition, overrides, index=index)
                job.children.append(child)
                self.jobs[child.job_id] = child
                self._start(child)
        return {"jobId": job.job_id, "jobName": job.name}

    def _op_describejobs(self, body: dict[str, Any]) -> dict[str, Any]:
        ids = body.get("jobs", [])
        if len(ids) > DESCRIBE_CHUNK:
            raise _ClientError(f"DescribeJobs takes at most {DESCRIBE_CHUNK} job ids")
        with self._lock:
            return {"jobs": [self.jobs[i].describe() for i in ids if i in self.jobs]}

    def _op_terminatejob(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            job = self.jobs.get(body["jobId"])
            for each in [job, *(job.children if job else [])]:
                if each is not None and each.status not in ("SUCCEEDED", "FAILED"):
                    self._finish(each, None, reason=body.get("reason") or "terminated")
        return {}

    # ---- running -----------------------------------------------------------------------------

    def _start(self, job: SimulatedJob) -> None:
        env = {**self.job_environment, "AWS_BATCH_JOB_ID": job.job_id}
        env.update({e["name"]: e["value"] for e in job.overrides.get("environment", [])})
        if job.index is not None:
            env[ARRAY_INDEX_ENV] = str(job.index)
        job.future = future = self._pool.submit(run_job, env)
        future.add_done_callback(lambda done, job=job: self._done(job, done))

    def _done(self, job: SimulatedJob, future: Future) -> None:
        with self._lock:
            if job.status in ("SUCCEEDED", "FAILED"):  # terminated meanwhile
                return
            try:
                code, started, stopped = future.result()
            except Exception as exc:  # the worker died: as an instance lost
                self._finish(job, None, reason=f"Host EC2 (simulated) terminated: {exc}")
                return
            job.started_at = started
            self._finish(job, code, stopped_at=stopped)

    def _finish(self, job: SimulatedJob, code: int | None, reason: str | None = None,
                stopped_at: int | None = None) -> None:
        job.exit_code = code
        job.stopped_at = stopped_at or _now_ms()
        job.status = "SUCCEEDED" if code == 0 else "FAILED"
        job.reason = reason or (None if code == 0 else "Essential container in task exited")
        parent = self.jobs.get(job.job_id.split(":")[0]) if job.index is not None else None
        if parent is None:
            return
        parent.children_done += 1
        if parent.children_done == len(parent.children):
            failed = sum(c.status == "FAILED" for c in parent.children)
            parent.status = "FAILED" if failed else "SUCCEEDED"
            parent.stopped_at = job.stopped_at
            if failed:
                parent.reason = f"{failed} child jobs failed"


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
    """

    def __init__(self, workers: int = 2, s3_directory: str | None = None) -> None:
        import boto3

        from ..aws.batch import BatchClient
        from ..aws.session import ApiCallCounter
        from ..aws.staging import Stager
        from ..cloud import Cloud
        from ..images.registries import PlainRegistry
        from .directory_s3 import DirectoryS3
        from .stack import THROWAWAY_KEY, start_emulator

        self.emulator = start_emulator()
        endpoint = f"http://127.0.0.1:{self.emulator.port}"
        session = boto3.Session(aws_access_key_id=THROWAWAY_KEY,
                                aws_secret_access_key=THROWAWAY_KEY, region_name=REGION)
        counter = ApiCallCounter()

        def client(service: str) -> Any:
            return counter.attach(session.client(service, endpoint_url=endpoint))

        job_environment = {"NIPYPE_BATCH_ENDPOINT_URL": endpoint,
                           "AWS_ACCESS_KEY_ID": THROWAWAY_KEY,
                           "AWS_SECRET_ACCESS_KEY": THROWAWAY_KEY, "AWS_DEFAULT_REGION": REGION}
        if s3_directory:
            s3 = counter.attach(DirectoryS3(s3_directory))
            job_environment[DIRECTORY_S3_ENV] = s3_directory
        else:
            s3 = client("s3")
        self.batch = SimulatedBatch(job_environment, workers=workers)
        s3.create_bucket(Bucket=QUEUE)
        self.cloud = Cloud(
            batch=BatchClient(counter.attach(self.batch.client(session)), client("logs")),
            stager=Stager(s3, QUEUE), job_queue=QUEUE, registry=PlainRegistry("simulated"),
            sts=client("sts"), job_environment=job_environment, api_calls=counter,
        )

    def plugin(self, plugin_args: dict[str, Any] | None = None) -> Any:
        """A BatchPlugin on this stack: no job images (nothing runs in a container)."""
        from ..plugin import BatchPlugin

        return BatchPlugin({"backend": "local", **(plugin_args or {})}, cloud=self.cloud,
                           images=NoImages())

    def stop(self) -> None:
        """Stop the workers and the emulator."""
        self.batch.shutdown()
        self.emulator.stop()
