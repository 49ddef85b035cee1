"""The local stack: moto's server for S3, Batch, Logs, IAM and ECR on loopback, the local Docker
daemon running each Batch job as a real container, and a real registry for the images.

Started on demand, shared by every run in the process, torn down at exit. Job containers are
named ``nbl<pid>-...`` so that a later process can sweep the ones a crashed process left behind.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import select
import subprocess
import sys
import threading
from typing import Any

from ..dockerd import connect_docker
from ..errors import LocalStackError
from ..image import cache_dir
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
        self.server = _start_emulator()
        self.endpoint_url = f"http://127.0.0.1:{self.server.port}"
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
        role = iam.create_role(RoleName=NAME, AssumeRolePolicyDocument=json.dumps(trust))
        batch = self.client("batch")
        env = batch.create_compute_environment(
            computeEnvironmentName=NAME, type="UNMANAGED", state="ENABLED",
            serviceRole=role["Role"]["Arn"],
        )
        self._compute_env = env["computeEnvironmentArn"]
        self.ensure_queue(self.job_queue)
        self.ensure_bucket(self.bucket)

    def stop(self) -> None:
        """Stop the emulator (it terminates unfinished jobs first) and sweep our containers."""
        if self.server is None:
            return
        self.server.stop()
        self.server = None
        sweep_containers(self.docker, only_pid=os.getpid())
        with LocalStack._lock:
            if LocalStack._instance is self:
                LocalStack._instance = None


class _Emulator:
    """The emulator process (see :mod:`nipype_batch.local.server`)."""

    def __init__(self, proc: subprocess.Popen, port: int) -> None:
        self.proc = proc
        self.port = port

    def stop(self, timeout_s: float = 30.0) -> None:
        """Close its stdin, which makes it stop its jobs and exit; kill it if it does not."""
        try:
            if self.proc.stdin:
                self.proc.stdin.close()
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _start_emulator(timeout_s: float = 60.0) -> _Emulator:
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
            [sys.executable, "-m", "nipype_batch.local.server"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, start_new_session=True,
        )
    ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
    line = proc.stdout.readline().decode().strip() if ready else ""
    if not line.isdigit():
        proc.kill()
        raise LocalStackError(
            f"the AWS emulator did not start within {timeout_s:.0f} s: see {logfile}"
        )
    return _Emulator(proc, int(line))
