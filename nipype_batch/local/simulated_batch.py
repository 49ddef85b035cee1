"""A simulated AWS Batch that completes jobs without containers, for scale tests and benchmarks.

The driver talks to it through a genuine botocore ``batch`` client (requests serialised and
responses parsed against the API model, calls counted by the same hooks), whose HTTP requests
are answered in process instead of sent. Each job runs ``nipype_batch.runner`` in a pool of
worker processes, against the emulator's S3: every result is real, only the container, the
instance and Batch's own scheduling are left out. The driver's CPU and memory can then be
measured at 10,000 jobs, which the container-backed local stack cannot reach on one machine.

Batch's own waiting is played back from a :class:`~nipype_batch.latency.LatencyProfile`
(default :data:`~nipype_batch.latency.ZERO`: none): each job, array children included,
goes SUBMITTED -> RUNNABLE -> STARTING -> RUNNING -> SUCCEEDED/FAILED with the profile's
delays, waits RUNNABLE while the queue's vCPUs are taken, and the first jobs on a new host
wait for it to launch and to pull the image. With ``time_scale`` below 1 the whole simulation
runs on a :class:`~nipype_batch.local.sim_clock.ScaledClock` (see there what is scaled), and
every timestamp DescribeJobs gives is simulated time.

What it leaves out: retries (one attempt per job), job timeouts, logs (no log streams), job
dependencies, queue priorities, memory as a capacity (only vCPUs are counted), and idle hosts
scaling in (a launched host stays warm). What it enforces as AWS does: 100 ids per
DescribeJobs, arrays of 2 to 10,000 children, 8192 characters of container overrides.
"""

from __future__ import annotations

import heapq
import itertools
import json
import os
import threading
import uuid
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from io import BytesIO
from multiprocessing import get_context
from typing import Any

from botocore.awsrequest import AWSResponse

from ..aws.batch import ARRAY_MAX, ARRAY_MIN, DESCRIBE_CHUNK, OVERRIDES_LIMIT
from ..aws.status import FINISHED_STATES, JobState
from ..capacity import Capacity, Host
from ..latency import ZERO, LatencyProfile
from ..protocol import ARRAY_INDEX_ENV
from .sim_clock import ScaledClock, install

ACCOUNT = "123456789012"
REGION = "us-east-1"
QUEUE = "simulated"

DIRECTORY_S3_ENV = "NIPYPE_BATCH_SIMULATED_S3_DIR"

TOO_LARGE = ("MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT - The job resource requirement "
             "(vCPU/memory/GPU) is higher than that can be met by the CE(s) attached to the "
             "job queue.")


def _init_worker(clock: ScaledClock) -> None:
    """A worker's start: simulated clocks, and its output (Nipype logs every node) sent
    nowhere, as a container's would go to its log stream rather than the driver's terminal."""
    install(clock)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)


def _warm_up() -> None:
    """In a worker process: the imports every job needs, before the first job is timed."""
    from nipype.pipeline.engine import Node  # noqa: F401

    from .. import runner  # noqa: F401
    from .sim_clock import _real_sleep

    _real_sleep(0.2)  # long enough that each worker of the pool takes one of these


def run_job(environment: dict[str, str]) -> tuple[int, int, int]:
    """In a worker process: run one job's runner; return (exit code, started, stopped ms)."""
    import time

    from .. import runner

    if environment.get(DIRECTORY_S3_ENV):
        from .directory_s3 import DirectoryS3

        runner._s3_client = lambda: DirectoryS3(environment[DIRECTORY_S3_ENV])
    started = int(time.time() * 1000)
    saved = dict(os.environ)
    os.environ.update(environment)
    try:
        code = runner.main()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return code, started, int(time.time() * 1000)


@dataclass
class SimulatedJob:
    """One job (or one array child, or an array's parent) and what DescribeJobs tells of it."""

    job_id: str
    name: str
    queue: str
    definition: str
    overrides: dict[str, Any]
    created_at: int
    number: int = 0  # submission order: names its random stream
    vcpus: float = 1.0
    image: str = ""
    status: str = "SUBMITTED"
    exit_code: int | None = None
    started_at: int | None = None
    stopped_at: int | None = None
    reason: str | None = None
    index: int | None = None
    children: list[SimulatedJob] = field(default_factory=list)
    children_done: int = 0
    future: Future | None = None
    host: Host | None = None
    rng: Any = None
    # simulated seconds at which the job entered each state (RUNNING: its worker's start;
    # EXITED: when the driver-side pool saw the worker end and freed its vCPUs)
    timeline: dict[str, float] = field(default_factory=dict)

    def _status(self) -> str:
        if self.status == "STARTING" and self.future is not None and (
                self.future.running() or self.future.done()):
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
            summary = dict.fromkeys((state.value for state in JobState), 0)
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


def _vcpus(overrides: dict[str, Any], definition: dict[str, Any]) -> float:
    """The job's vCPUs: its overrides, else its job definition, else 1."""
    for requirements in (overrides.get("resourceRequirements"),
                         definition.get("containerProperties", {}).get("resourceRequirements")):
        for requirement in requirements or []:
            if requirement.get("type") == "VCPU":
                return float(requirement["value"])
    return 1.0


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
        Worker processes; each runs one job at a time. A job that the profile lets run finds
        them all busy waits in STARTING: more workers than jobs running at once (in the
        profile's capacity) keep that wait short, as long as the jobs mostly sleep.
    profile : LatencyProfile
        Batch's delays and capacity (:mod:`nipype_batch.latency`); default none.
    time_scale : float
        Real seconds per simulated second: 1/30 plays 30 simulated minutes in one real one.
    """

    def __init__(self, job_environment: dict[str, str], workers: int = 2,
                 profile: LatencyProfile = ZERO, time_scale: float = 1.0) -> None:
        self.job_environment = dict(job_environment)
        self.profile = profile
        self.clock = ScaledClock(time_scale)
        self.jobs: dict[str, SimulatedJob] = {}
        self._definitions: dict[str, dict[str, Any]] = {}
        self._revision = itertools.count(1)
        self._numbers = itertools.count()
        self._events: list[tuple[float, int, str, Any]] = []  # (when, tie, action, job or host)
        self._tie = itertools.count()
        self.capacity = Capacity(profile, on_launch=lambda host: self._at(
            host.ready_at, "host_ready", host), on_placed=lambda job, starting: self._at(
            starting, "starting", job))
        self._lock = threading.Condition()
        self._stopped = False
        self._freed_at = 0.0  # when a container last exited: no placement is dated before it
        self._pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"),
                                         initializer=_init_worker, initargs=(self.clock,))
        # started and warm before the first job, whose timings would otherwise hold the
        # workers' start-up (seconds that a time scale would multiply)
        for warm in [self._pool.submit(_warm_up) for _ in range(workers)]:
            warm.result()
        self._ticker = threading.Thread(target=self._tick, name="simulated-batch", daemon=True)
        self._ticker.start()

    def client(self, session: Any) -> Any:
        """A botocore ``batch`` client whose every request this simulator answers."""
        batch = session.client("batch", region_name=REGION, endpoint_url="http://simulated")
        batch.meta.events.register("before-send.batch", self._answer)
        return batch

    @property
    def hosts(self) -> list[Host]:
        """Every host launched so far."""
        return self.capacity.hosts

    def now(self) -> float:
        """Simulated epoch seconds."""
        return self.clock.time()

    def shutdown(self) -> None:
        """Stop the workers (queued jobs are dropped)."""
        with self._lock:
            self._stopped = True
            self._lock.notify_all()
        self._ticker.join()
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
        definition = self._definitions.get(body["jobDefinition"])
        if definition is None:
            raise _ClientError(f"Job definition {body['jobDefinition']} does not exist")
        size = (body.get("arrayProperties") or {}).get("size")
        if size is not None and not ARRAY_MIN <= size <= ARRAY_MAX:
            raise _ClientError(f"Array size must be between {ARRAY_MIN} and {ARRAY_MAX}")
        with self._lock:
            created = int(self.now() * 1000)
            shape = {"vcpus": _vcpus(overrides, definition),
                     "image": definition["containerProperties"].get("image", "")}
            job = SimulatedJob(str(uuid.uuid4()), body["jobName"], body["jobQueue"],
                               body["jobDefinition"], overrides, created,
                               number=next(self._numbers), **shape)
            job.timeline["SUBMITTED"] = created / 1000
            self.jobs[job.job_id] = job
            if size is None:
                self._submit(job)
            else:
                job.status = "PENDING"
                for index in range(size):
                    child = SimulatedJob(f"{job.job_id}:{index}", job.name, job.queue,
                                         job.definition, overrides, created, index=index,
                                         number=job.number, **shape)
                    child.timeline["SUBMITTED"] = created / 1000
                    job.children.append(child)
                    self.jobs[child.job_id] = child
                    self._submit(child)
            self._advance()
        return {"jobId": job.job_id, "jobName": job.name}

    def _op_describejobs(self, body: dict[str, Any]) -> dict[str, Any]:
        ids = body.get("jobs", [])
        if len(ids) > DESCRIBE_CHUNK:
            raise _ClientError(f"DescribeJobs takes at most {DESCRIBE_CHUNK} job ids")
        with self._lock:
            self._advance()
            return {"jobs": [self.jobs[i].describe() for i in ids if i in self.jobs]}

    def _op_terminatejob(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            job = self.jobs.get(body["jobId"])
            for each in [job, *(job.children if job else [])]:
                if each is not None and each.status not in FINISHED_STATES:
                    self.capacity.release(each)
                    self.capacity.withdraw(each)
                    self._finish(each, None, reason=body.get("reason") or "terminated")
            self._lock.notify_all()
        return {}

    # ---- Batch's scheduling, in simulated time -----------------------------------------------

    def _at(self, when: float, action: str, subject: Any) -> None:
        heapq.heappush(self._events, (when, next(self._tie), action, subject))

    def _submit(self, job: SimulatedJob) -> None:
        job.rng = self.profile.rng("job", job.number, job.index)
        delay = self.profile.submitted_to_runnable.draw(job.rng)
        self._at(job.created_at / 1000 + delay, "runnable", job)

    def _tick(self) -> None:
        """Apply every delay as it falls due, sleeping (real time) until the next one."""
        with self._lock:
            while not self._stopped:
                self._advance()
                wait = None
                if self._events:
                    wait = max(0.0, self.clock.real_seconds(self._events[0][0] - self.now()))
                self._lock.wait(wait)

    def _advance(self) -> None:
        """Bring every job and host up to now (holding the lock).

        Each event applies at the simulated time it was due, not when the ticker woke: the
        delays that follow it count from there, so the real latency of this thread does not
        add up along a job's way. A placement is never dated before the last container exit,
        whose vCPUs it may use (exits come in real time, events are dated back).
        """
        while True:
            now = self.now()
            while self._events and self._events[0][0] <= now:
                when, _tie, action, subject = heapq.heappop(self._events)
                getattr(self, f"_on_{action}")(subject, when)
                self.capacity.place(max(when, self._freed_at))
            if not self.capacity.place(now):
                self._lock.notify_all()  # the ticker's next wake-up may have moved
                return

    def _on_runnable(self, job: SimulatedJob, at: float) -> None:
        if job.status in FINISHED_STATES:
            return
        job.status = "RUNNABLE"
        job.timeline["RUNNABLE"] = at
        if not self.capacity.fits(job.vcpus):
            job.reason = TOO_LARGE  # stays RUNNABLE, as Batch leaves it
            return
        self._at(self.capacity.enqueue(job, at), "considered", job)

    def _on_considered(self, job: SimulatedJob, at: float) -> None:
        pass  # the scheduler's delay is over: placed by the pass after every event

    def _on_host_ready(self, host: Host, at: float) -> None:
        pass  # its jobs are placed by _place on this pass

    def _on_starting(self, job: SimulatedJob, at: float) -> None:
        if job.status in FINISHED_STATES:
            return
        job.status = "STARTING"
        job.timeline["STARTING"] = at
        ready = (self.capacity.image_ready(job, job.image, at)
                 + self.profile.starting_to_running.draw(job.rng))
        self._at(ready, "container_started", job)

    def _on_container_started(self, job: SimulatedJob, at: float) -> None:
        if job.status in FINISHED_STATES:
            return
        # handed to the worker pool; RUNNING - DISPATCHED is time spent waiting for a free
        # worker process, which real Batch does not have (more workers make it shorter)
        job.timeline["DISPATCHED"] = at
        env = {**self.job_environment, "AWS_BATCH_JOB_ID": job.job_id}
        env.update({e["name"]: e["value"] for e in job.overrides.get("environment", [])})
        if job.index is not None:
            env[ARRAY_INDEX_ENV] = str(job.index)
        job.future = future = self._pool.submit(run_job, env)
        future.add_done_callback(lambda done, job=job: self._exited(job, done))

    def _on_done(self, job: SimulatedJob, at: float) -> None:
        if job.status in FINISHED_STATES:
            return
        self._finish(job, job.exit_code, reason=job.reason, stopped_at=job.stopped_at, at=at)

    def _exited(self, job: SimulatedJob, future: Future) -> None:
        """A worker finished the job: its vCPUs are free; its status follows after a delay."""
        with self._lock:
            if job.status in FINISHED_STATES:  # terminated meanwhile
                return
            self._advance()  # what fell due before this exit happens without its vCPUs
            self.capacity.release(job)
            job.timeline["EXITED"] = self._freed_at = self.now()
            try:
                code, started, stopped = future.result()
            except Exception as exc:  # the worker died: as an instance lost
                code, started, stopped = None, None, int(self.now() * 1000)
                job.reason = f"Host EC2 (simulated) terminated: {exc}"
            job.exit_code, job.started_at, job.stopped_at = code, started, stopped
            if started is not None:
                job.timeline["RUNNING"] = started / 1000
            delay = self.profile.running_to_done.draw(job.rng)
            self._at(stopped / 1000 + delay, "done", job)
            self._advance()
            self._lock.notify_all()

    def _finish(self, job: SimulatedJob, code: int | None, reason: str | None = None,
                stopped_at: int | None = None, at: float | None = None) -> None:
        at = self.now() if at is None else at
        job.exit_code = code
        job.stopped_at = stopped_at or int(at * 1000)
        job.status = "SUCCEEDED" if code == 0 else "FAILED"
        job.timeline[job.status] = at
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
