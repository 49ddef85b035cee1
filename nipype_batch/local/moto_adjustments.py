"""The one place where the local stack bends moto towards real AWS Batch behaviour.

Each adjustment corrects a known deviation of moto 5.x that the plugin's AWS code path would
otherwise have to special-case. Nothing here is imported on the AWS path.

1. DescribeJobs drops ``container.exitCode`` and never sets ``statusReason`` on a failed job;
   real Batch reports both.
2. DescribeJobs shows only the job definition's resources; real Batch shows the
   ``resourceRequirements`` a job was submitted with (its overrides).
3. Before each job moto probes whether it runs inside Docker (a curl to the daemon, printing a
   warning when that fails) to find its own address; our jobs share the host network and reach
   the emulator on loopback, so the answer is fixed.
4. moto ignores a job's retry strategy: a failed attempt ends the job. Real Batch evaluates the
   ``evaluateOnExit`` rules (first match wins; no match means retry) while attempts remain, and
   between attempts the job is RUNNABLE again, never FAILED. SubmitJob's ``retryStrategy`` (which
   moto's request handler drops) overrides the job definition's, as on AWS.
5. moto sleeps a fixed 0.5 s at each of four job state changes and polls each container every
   0.5 s: about 2.5 s of every job on a 2-core machine, which no real queue's timing resembles
   anyway. The states still pass in order, just sooner (0.05 s steps, 0.1 s container polls).
6. Array jobs: moto gives children no ``AWS_BATCH_JOB_ARRAY_INDEX`` and appends every child's
   ``AWS_BATCH_JOB_ID`` to one environment list they all share (so children race, and each
   DescribeJobs grows it); a child that fails leaves the parent SUBMITTED forever; terminating
   the parent leaves its children running; children ignore the submitted retry strategy. Real
   Batch gives each child its index, ends the parent FAILED when any child failed (once all
   are done), and terminates the children with the parent.
7. S3 GetObject with a byte range reads the whole object and then slices it, so boto3's
   managed download of a large file (parallel ranged parts, as on AWS) reads it once per part:
   38 parts of a 300 MB file took 7x the time of one plain GET. Real S3 reads only the range;
   here a simple range (``bytes=a-b``, ``bytes=a-``) is read from the object's buffer alone.
8. moto starts every job's container at once, whatever the queue: a MapNode of 200 started
   200 containers on 2 cores, and the overloaded daemon failed some with "Task failed to
   start". A Batch queue runs what its compute environment's vCPUs hold and leaves the rest
   RUNNABLE: here the compute environment is this machine, its vCPUs ``os.cpu_count()`` (or
   ``$NIPYPE_BATCH_LOCAL_VCPUS``), each job holding its vCPUs from STARTING until its
   container exits.
9. moto starts job containers with no memory limit, so a node that needs more memory than its
   job asks runs anyway here and is killed on AWS. Each container gets the job's memory as its
   limit (and its vCPUs as a CPU share); a container the kernel kills for memory is reported
   as Batch reports it: exit code 137 and the container reason "OutOfMemoryError: Container
   killed due to memory usage", which the retry rules see.
"""

from __future__ import annotations

from typing import Any

from ..aws.status import FINISHED_STATES

_APPLIED = False


def apply() -> None:
    """Patch moto's Batch ``Job.describe`` once per process."""
    global _APPLIED
    if _APPLIED:
        return
    from moto import settings as moto_settings
    from moto.batch.models import Job

    moto_settings.moto_server_host = lambda: "http://127.0.0.1"

    original_describe = Job.describe

    def describe(self: Any) -> dict[str, Any]:
        result = original_describe(self)
        container = result.get("container")
        if container is not None:
            if self.exit_code is not None:
                container["exitCode"] = self.exit_code
            reason = getattr(self, "nb_container_reason", None)
            if reason:
                container["reason"] = reason
            asked = (self.container_overrides or {}).get("resourceRequirements")
            if asked:
                container["resourceRequirements"] = asked
        if result.get("status") == "FAILED" and "statusReason" not in result:
            if self.exit_code:
                result["statusReason"] = "Essential container in task exited"
            else:
                result["statusReason"] = "Task failed to start"
        return result

    Job.describe = describe
    _adjust_arrays(Job)
    _add_retries(Job)
    _shorten_sleeps()
    _read_ranges_only()
    machine = _Machine(float(local_vcpus()))
    _limit_to_machine(Job, machine)
    _limit_containers(Job, machine)
    _APPLIED = True


def _adjust_arrays(job_class: Any) -> None:
    from datetime import datetime

    original_property = job_class._get_container_property
    original_describe = job_class.describe
    original_terminate = job_class.terminate

    def get_container_property(self: Any, p: str, default: Any) -> Any:
        if p != "environment":
            return original_property(self, p, default)
        own = {e["name"]: e["value"] for e in self.job_definition.container_properties.get(
            "environment", [])}
        own.update({e["name"]: e["value"]
                    for e in (self.container_overrides or {}).get("environment", [])})
        own["AWS_BATCH_JOB_ID"] = self.job_id
        if "index" in (self.array_properties or {}):
            own["AWS_BATCH_JOB_ARRAY_INDEX"] = str(self.array_properties["index"])
        return [{"name": k, "value": v} for k, v in own.items()]

    def describe(self: Any) -> dict[str, Any]:
        result = original_describe(self)
        children = self._child_jobs
        if children:
            summary = result["arrayProperties"]["statusSummary"]
            done = sum(n for state, n in summary.items() if state in FINISHED_STATES)
            if summary["FAILED"] and done == len(children):
                if not self.job_stopped:
                    self.job_stopped = True
                    self.job_stopped_at = datetime.now()
                self.status = "FAILED"
                result["status"] = "FAILED"
                result.setdefault("statusReason", f"{summary['FAILED']} child jobs failed")
            elif summary["SUCCEEDED"] < len(children) and done < len(children):
                result["status"] = "PENDING"  # as Batch shows a parent whose children run
        return result

    def terminate(self: Any, reason: str) -> None:
        original_terminate(self, reason)
        for child in self._child_jobs or []:
            child.terminate(reason)

    job_class._get_container_property = get_container_property
    job_class.describe = describe
    job_class.terminate = terminate


def _add_retries(job_class: Any) -> None:
    import fnmatch
    import json
    from datetime import datetime

    from moto.batch.responses import BatchResponse

    original_submit = BatchResponse.submitjob
    original_mark_stopped = job_class._mark_stopped
    original_run = job_class.run

    def submitjob(self: Any) -> str:
        answer = original_submit(self)
        strategy = self._get_param("retryStrategy")
        if strategy:
            job = self.batch_backend.get_job_by_id(json.loads(answer)["jobId"])
            for each in [job, *((job and job._child_jobs) or [])]:
                if each is not None:
                    each.nb_retry_strategy = strategy
        return answer

    def will_retry(job: Any) -> bool:
        if job.job_stopped_reason:  # terminated by a user: never retried
            return False
        strategy = getattr(job, "nb_retry_strategy", None) or job.job_definition.retry_strategy
        strategy = strategy or {}
        if len(job.attempts) >= int(strategy.get("attempts", 1)):
            return False
        facts = {"onExitCode": str(job.exit_code), "onStatusReason": "Essential container in "
                 "task exited", "onReason": getattr(job, "nb_container_reason", None) or ""}
        for rule in strategy.get("evaluateOnExit", []):
            patterns = {k: v for k, v in rule.items() if k in facts}
            if all(fnmatch.fnmatchcase(facts[k], v) for k, v in patterns.items()):
                return str(rule.get("action", "")).lower() == "retry"
        return True

    def mark_stopped(self: Any, success: bool = True) -> None:
        if success or self.job_stopped or not will_retry(self):
            original_mark_stopped(self, success)
            return
        # End this attempt but not the job: RUNNABLE until the next attempt starts.
        self.job_stopped = True  # makes moto's own later _mark_stopped calls no-ops
        self.job_stopped_at = datetime.now()
        if self.latest_attempt is not None:
            self.latest_attempt["container"]["exitCode"] = self.exit_code
            self.latest_attempt["statusReason"] = "Essential container in task exited"
        self._stop_attempt()
        self.status = "RUNNABLE"
        self.nb_retry_next = True

    def run(self: Any) -> None:
        while True:
            self.nb_retry_next = False
            original_run(self)
            if not self.nb_retry_next:
                return
            self.job_stopped = False
            self.job_stopped_at = None
            self.exit_code = None
            self.nb_container_reason = None
            self.stop = False
            self.latest_attempt = None
            self.status = "SUBMITTED"

    BatchResponse.submitjob = submitjob
    job_class._mark_stopped = mark_stopped
    job_class.run = run


def _shorten_sleeps() -> None:
    import time
    import types

    from moto.batch import models

    models.sleep = lambda seconds: time.sleep(min(seconds, 0.05))
    shim = types.SimpleNamespace(**{name: getattr(time, name) for name in dir(time)
                                    if not name.startswith("__")})
    shim.sleep = lambda seconds: time.sleep(min(seconds, 0.1))
    models.time = shim


def _read_ranges_only() -> None:
    from moto.s3.responses import S3Response

    original_get_object = S3Response.get_object

    def get_object(self: Any) -> Any:
        window = _simple_range(self.headers.get("range"))
        if window is None or self._get_int_param("partNumber"):
            return original_get_object(self)
        try:
            key, not_modified = self._get_key()
        except Exception:
            return original_get_object(self)  # answers with moto's own error
        if not_modified or window[0] >= key.size:
            return original_get_object(self)
        # One S3Response serves one request: shadowing its method is safe between threads.
        self._get_key = lambda: (_RangedKey(key), not_modified)
        try:
            return original_get_object(self)
        finally:
            del self._get_key

    S3Response.get_object = get_object


def _simple_range(header: str | None) -> tuple[int, int | None] | None:
    """``bytes=a-b`` or ``bytes=a-`` (to the end, as s3transfer asks for a last part) as
    ``(a, b)``; None for any other form, which moto answers itself."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, _, last = header[len("bytes="):].partition("-")
    if not first.isdigit() or (last and (not last.isdigit() or int(first) > int(last))):
        return None
    return int(first), int(last) if last else None


class _RangedKey:
    """A key whose ``value`` reads only the slice moto's range handling asks for."""

    def __init__(self, key: Any) -> None:
        self._key = key

    def __getattr__(self, name: str) -> Any:
        return getattr(self._key, name)

    @property
    def value(self) -> _Window:
        return _Window(self._key)


class _Window:
    """The object's bytes as moto's range handling uses them: a length and one slice."""

    def __init__(self, key: Any) -> None:
        self._key = key

    def __len__(self) -> int:
        return self._key.size

    def __getitem__(self, part: slice) -> bytes:
        start, stop, _step = part.indices(self._key.size)
        with self._key.lock:
            self._key._value_buffer.seek(start)
            return self._key._value_buffer.read(max(0, stop - start))


LOCAL_VCPUS_ENV = "NIPYPE_BATCH_LOCAL_VCPUS"


def local_vcpus() -> int:
    """The local stack's compute environment: this machine's vCPUs, unless told otherwise."""
    import os

    told = os.environ.get(LOCAL_VCPUS_ENV, "")
    return int(told) if told.isdigit() and int(told) > 0 else (os.cpu_count() or 1)


def _requirement(job: Any, kind: str) -> str | None:
    """A job's ``kind`` (VCPU, MEMORY) requirement: its overrides', else its definition's."""
    properties = job.job_definition.container_properties or {}
    for requirements in ((job.container_overrides or {}).get("resourceRequirements"),
                         properties.get("resourceRequirements")):
        for requirement in requirements or []:
            if requirement.get("type") == kind:
                return str(requirement["value"])
    return None


def _job_vcpus(job: Any) -> float:
    return float(_requirement(job, "VCPU") or 1)


class _Machine:
    """This machine's vCPUs as the local stack's compute environment: a job takes its vCPUs
    before its container starts (waiting RUNNABLE, first come first) and gives them back
    when the container exits."""

    def __init__(self, vcpus: float) -> None:
        import threading

        self.capacity = vcpus
        self.used = 0.0
        self.free = threading.Condition()

    def take(self, job: Any) -> None:
        need = min(_job_vcpus(job), self.capacity)  # larger: the preflight refuses it
        with self.free:
            while self.used + need > self.capacity and not job.stop:
                self.free.wait(0.2)
            if not job.stop:
                self.used += need
                job.nb_vcpus_held = need

    def release(self, job: Any) -> None:
        """Once per take; later calls do nothing."""
        with self.free:
            held = getattr(job, "nb_vcpus_held", 0.0)
            if held:
                job.nb_vcpus_held = 0.0
                self.used -= held
                self.free.notify_all()


def _limit_to_machine(job_class: Any, machine: _Machine) -> None:
    from datetime import datetime

    from moto.batch.models import JobStatus, datetime2int_milliseconds

    original_advance = job_class.advance
    original_mark_stopped = job_class._mark_stopped

    def advance(self: Any) -> None:
        # RUNNABLE -> STARTING: wait, RUNNABLE, for room on the machine
        if self._status == JobStatus.RUNNABLE and not getattr(self, "nb_vcpus_held", 0.0):
            machine.take(self)
            # moto stamped the start before the wait; Batch's startedAt is the container's
            self.job_started_at = datetime.now()
            if self.latest_attempt:
                self.latest_attempt["startedAt"] = datetime2int_milliseconds(self.job_started_at)
        original_advance(self)

    def mark_stopped(self: Any, success: bool = True) -> None:
        # every attempt ends here (a retried one is RUNNABLE again, waiting its turn)
        machine.release(self)
        original_mark_stopped(self, success)

    job_class.advance = advance
    job_class._mark_stopped = mark_stopped


OOM_REASON = "OutOfMemoryError: Container killed due to memory usage"  # as Batch words it


def _limit_containers(job_class: Any, machine: _Machine) -> None:
    from moto.utilities.docker_utilities import DockerModel

    original_client = DockerModel.docker_client.fget
    original_mark_stopped = job_class._mark_stopped

    class _Containers:
        """``docker_client.containers`` of one job: ``run`` with the job's limits."""

        def __init__(self, job: Any, containers: Any) -> None:
            self._job, self._containers = job, containers

        def __getattr__(self, name: str) -> Any:
            return getattr(self._containers, name)

        def run(self, **kwargs: Any) -> Any:
            memory = _requirement(self._job, "MEMORY")
            if memory:
                kwargs.setdefault("mem_limit", f"{memory}m")
                kwargs.setdefault("memswap_limit", f"{memory}m")  # no swap, as on Batch
            # ECS gives a container its vCPUs as a CPU share (1024 each), not a hard cap
            kwargs.setdefault("cpu_shares", int(1024 * _job_vcpus(self._job)))
            container = self._containers.run(**kwargs)
            self._job.nb_containers = [*getattr(self._job, "nb_containers", []), container]
            return _Exiting(self._job, container)

    class _Exiting:
        """A job's container: once it has exited, the job's vCPUs are free (as on Batch),
        while moto still collects its logs."""

        def __init__(self, job: Any, container: Any) -> None:
            self._job, self._container = job, container

        def __getattr__(self, name: str) -> Any:
            return getattr(self._container, name)

        def reload(self) -> None:
            self._container.reload()
            if self._container.status not in ("created", "running"):
                machine.release(self._job)

    class _Client:
        def __init__(self, job: Any, client: Any) -> None:
            self._client = client
            self.containers = _Containers(job, client.containers)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._client, name)

    def docker_client(self: Any) -> Any:
        client = original_client(self)
        return _Client(self, client) if isinstance(self, job_class) else client

    def mark_stopped(self: Any, success: bool = True) -> None:
        # before the retry rules read it: was this attempt's container killed for memory?
        for container in getattr(self, "nb_containers", []):
            try:
                container.reload()
                killed = container.attrs.get("State", {}).get("OOMKilled")
            except Exception:  # removed already
                killed = False
            if killed:
                self.nb_container_reason = OOM_REASON
                self.exit_code = 137
                if self.latest_attempt is not None:
                    self.latest_attempt["container"]["reason"] = OOM_REASON
        self.nb_containers = []
        original_mark_stopped(self, success)

    job_class.docker_client = property(docker_client)
    job_class._mark_stopped = mark_stopped
