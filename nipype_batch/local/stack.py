"""The local stack: moto's server for S3, Batch, Logs, IAM and ECR on loopback, the local Docker
daemon running each Batch job as a real container, and a real registry for the images.

Started on demand, shared by every run in the process, torn down at exit. Job containers are
named ``nbl<pid>-...`` so that a later process can sweep the ones a crashed process left behind.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ..cache import cache_dir
from ..errors import LocalStackError
from ..images.docker import connect_docker
from .registry import ensure_registry
from .server import REGION

log = logging.getLogger(__name__)

NAME = "nipype-batch-local"
THROWAWAY_KEY = "nipype-batch-local"  # moto accepts any key; never a real credential
_CONTAINER_NAME = re.compile(r"^/?nbl(\d+)-")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_containers(docker: Any, only_pid: int | None = None) -> int:
    """Remove job containers of dead processes (or of ``only_pid``); return how many."""
    removed = 0
    for container in docker.containers.list(all=True):
        match = _CONTAINER_NAME.match(container.name)
        if not match:
            continue
        pid = int(match.group(1))
        if (only_pid is not None and pid == only_pid) or (only_pid is None and not _pid_alive(pid)):
            try:
                container.remove(force=True)
                removed += 1
            except Exception as exc:  # already gone, or being removed by moto
                log.debug("could not remove container %s: %s", container.name, exc)
    return removed


class LocalStack:
    """The emulated AWS account; use :meth:`get` for the process-wide instance."""

    _instance: LocalStack | None = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        self.docker: Any = None
        self.server: Any = None
        self.endpoint_url = ""
        self.registry_address = ""
        self.session: Any = None
        self.job_queue = NAME
        self.bucket = NAME
        self.job_name_prefix = f"nbl{os.getpid()}-"
        self._compute_env = ""
        self._queues: set[str] = set()

    @classmethod
    def get(cls) -> LocalStack:
        """The running local stack, started on first use."""
        with cls._lock:
            if cls._instance is None:
                stack = cls()
                stack.start()
                cls._instance = stack
            return cls._instance

    def start(self) -> None:
        """Check Docker, sweep orphans, start registry and emulator, create the resources."""
        self.docker = connect_docker()
        swept = sweep_containers(self.docker)
        if swept:
            log.warning("Removed %d job containers left by processes that died", swept)
        self.registry_address = ensure_registry()
        shared = shared_emulator()
        self.server = shared or start_emulator()
        self.endpoint_url = f"http://127.0.0.1:{self.server.port}"
        # Containers are named after the emulator that owns them, so a sweep removes only
        # those whose emulator is gone, never the jobs of a shared emulator still running.
        self.job_name_prefix = f"nbl{self.server.pid}-"
        import boto3

        self.session = boto3.Session(
            aws_access_key_id=THROWAWAY_KEY, aws_secret_access_key=THROWAWAY_KEY,
            region_name=REGION,
        )
        self._create_resources()
        atexit.register(self.stop)
        log.info("Local stack up: emulator %s, registry %s", self.endpoint_url,
                 self.registry_address)

    def client(self, service: str, config: Any = None) -> Any:
        """A boto3 client for ``service`` on the emulator."""
        return self.session.client(service, endpoint_url=self.endpoint_url, config=config)

    def job_environment(self) -> dict[str, str]:
        """What a job needs to reach the emulator (throwaway keys, never real credentials)."""
        return {
            "NIPYPE_BATCH_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": THROWAWAY_KEY,
            "AWS_SECRET_ACCESS_KEY": THROWAWAY_KEY,
            "AWS_DEFAULT_REGION": REGION,
        }

    def ensure_bucket(self, name: str) -> None:
        """Create an emulated bucket unless it exists."""
        s3 = self.client("s3")
        try:
            s3.head_bucket(Bucket=name)
        except Exception:
            s3.create_bucket(Bucket=name)

    def ensure_queue(self, name: str) -> None:
        """Create an emulated job queue on the local compute environment unless it exists."""
        if name in self._queues:
            return
        batch = self.client("batch")
        if not batch.describe_job_queues(jobQueues=[name])["jobQueues"]:
            batch.create_job_queue(
                jobQueueName=name, state="ENABLED", priority=1,
                computeEnvironmentOrder=[{"order": 1, "computeEnvironment": self._compute_env}],
            )
        self._queues.add(name)

    def _create_resources(self) -> None:
        iam = self.client("iam")
        trust = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": {"Service": "batch.amazonaws.com"},
                           "Action": "sts:AssumeRole"}],
        }
        try:
            role = iam.get_role(RoleName=NAME)
        except iam.exceptions.NoSuchEntityException:
            role = iam.create_role(RoleName=NAME, AssumeRolePolicyDocument=json.dumps(trust))
        batch = self.client("batch")
        found = batch.describe_compute_environments(computeEnvironments=[NAME])
        if found["computeEnvironments"]:
            self._compute_env = found["computeEnvironments"][0]["computeEnvironmentArn"]
        else:
            self._compute_env = batch.create_compute_environment(
                computeEnvironmentName=NAME, type="UNMANAGED", state="ENABLED",
                serviceRole=role["Role"]["Arn"],
            )["computeEnvironmentArn"]
        self.ensure_queue(self.job_queue)
        self.ensure_bucket(self.bucket)

    def stop(self) -> None:
        """Stop the emulator (it terminates unfinished jobs first) and sweep our containers."""
        if self.server is None:
            return
        pid = self.server.pid
        self.server.stop()
        self.server = None
        if not _pid_alive(pid):
            sweep_containers(self.docker, only_pid=pid)
        with LocalStack._lock:
            if LocalStack._instance is self:
                LocalStack._instance = None


class Emulator:
    """The emulator process this driver started (see :mod:`nipype_batch.local.server`)."""

    def __init__(self, proc: subprocess.Popen, port: int) -> None:
        self.proc = proc
        self.port = port
        self.pid = proc.pid

    def stop(self, timeout_s: float = 30.0) -> None:
        """Close its stdin, which makes it stop its jobs and exit; kill it if it does not."""
        try:
            if self.proc.stdin:
                self.proc.stdin.close()
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_emulator(timeout_s: float = 60.0, detached: bool = False) -> Emulator:
    """Start an emulator process of this driver's (``detached``: one that outlives it)."""
    try:
        import moto.server  # noqa: F401
    except ImportError as exc:
        raise LocalStackError(
            "the local stack needs moto's server: pip install 'nipype-batch[local]'"
        ) from exc
    logfile = cache_dir() / "emulator.log"
    with open(logfile, "ab") as err:
        # Its own session: Ctrl-C in the terminal reaches the driver, which still needs the
        # emulator to terminate its jobs.
        proc = subprocess.Popen(
            [sys.executable, "-m", "nipype_batch.local.server", *(["--detached"] * detached)],
            stdin=subprocess.DEVNULL if detached else subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=err, start_new_session=True,
        )
    ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
    line = proc.stdout.readline().decode().strip() if ready else ""
    if not line.isdigit():
        proc.kill()
        raise LocalStackError(
            f"the AWS emulator did not start within {timeout_s:.0f} s: see {logfile}"
        )
    return Emulator(proc, int(line))


class SharedEmulator:
    """An emulator started by ``nipype-batch local up``: used, never stopped, by drivers."""

    def __init__(self, pid: int, port: int) -> None:
        self.pid = pid
        self.port = port

    def stop(self) -> None:
        """Leave it running: it is not this driver's."""


def state_file() -> Path:
    """Where ``local up`` records the shared emulator ($NIPYPE_BATCH_LOCAL_STATE)."""
    return Path(os.environ.get("NIPYPE_BATCH_LOCAL_STATE", cache_dir() / "local-stack.json"))


def shared_emulator() -> SharedEmulator | None:
    """The emulator ``nipype-batch local up`` started, if it still runs; else None."""
    try:
        state = json.loads(state_file().read_text())
    except (OSError, ValueError):
        return None
    if not _pid_alive(int(state["pid"])):
        state_file().unlink(missing_ok=True)
        return None
    return SharedEmulator(int(state["pid"]), int(state["port"]))


def up() -> LocalStack:
    """Start the shared local stack that outlives drivers (``nipype-batch local up``)."""
    if shared_emulator() is None:
        state_file().parent.mkdir(parents=True, exist_ok=True)
        emulator = start_emulator(detached=True)
        state_file().write_text(json.dumps({"pid": emulator.pid, "port": emulator.port}))
    stack = LocalStack()
    stack.start()  # attaches, and creates the queue, bucket and role if missing
    return stack


def down(timeout_s: float = 30.0) -> bool:
    """Stop the shared local stack and its jobs; False if none was running."""
    shared = shared_emulator()
    if shared is None:
        return False
    os.kill(shared.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while _pid_alive(shared.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _pid_alive(shared.pid):
        os.kill(shared.pid, signal.SIGKILL)
    state_file().unlink(missing_ok=True)
    with contextlib.suppress(LocalStackError):
        sweep_containers(connect_docker(), only_pid=shared.pid)
    return True
