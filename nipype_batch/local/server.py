"""The emulator process: ``python -m nipype_batch.local.server``.

Runs moto's server on a free loopback port in a process of its own, so its state is not shared
with any in-process moto (a user's ``mock_aws`` tests reset moto's global backends) and its
request handling does not compete with the driver for the GIL. Prints the port on stdout, then
serves until its stdin closes: the parent holds that pipe open, so when the parent exits, even
by SIGKILL, the emulator terminates its running jobs (their containers with them) and stops.
With ``--detached`` (``nipype-batch local up``) it serves until SIGTERM instead, outliving the
drivers that use it, as AWS outlives them: a driver that dies can find its jobs again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading

from ..aws.status import FINISHED_STATES

ACCOUNT = "123456789012"  # moto's default account
REGION = "us-east-1"


def stop_jobs(timeout_s: float = 10.0) -> None:
    """Stop every unfinished emulated job and wait for its container to be removed."""
    from moto.batch.models import batch_backends

    jobs = list(batch_backends[ACCOUNT][REGION]._jobs.values())
    for job in jobs:
        if job.status not in FINISHED_STATES:
            job.stop = True
    for job in jobs:
        if job.is_alive():
            job.join(timeout=timeout_s)


def main() -> int:
    from moto.server import ThreadedMotoServer

    from . import moto_adjustments

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    moto_adjustments.apply()
    # Job containers share the host network so they reach the emulator on loopback.
    os.environ["MOTO_DOCKER_NETWORK_MODE"] = "host"
    # Real IAM has AWS-managed policies, which `nipype-batch infra up` attaches by ARN.
    os.environ.setdefault("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    _host, port = server.get_host_and_port()
    os.environ["MOTO_PORT"] = str(port)
    sys.stdout.write(f"{port}\n")
    sys.stdout.flush()
    if "--detached" in sys.argv:
        # `nipype-batch local up`: serve every driver until `local down` sends SIGTERM. The
        # pipe that carried the port closes when `local up` exits; moto prints warnings.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        stopping = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stopping.set())
        with contextlib.suppress(KeyboardInterrupt):
            stopping.wait()
    else:
        with contextlib.suppress(KeyboardInterrupt):
            sys.stdin.read()  # returns when the parent closes the pipe or dies
    try:
        stop_jobs()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
