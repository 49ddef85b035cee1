"""A real Docker registry on loopback (Debian's ``docker-registry``), started on demand."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from ..cache import cache_dir
from ..errors import LocalStackError

log = logging.getLogger(__name__)

DEFAULT_PORT = 5055
PORT_ENV = "NIPYPE_BATCH_REGISTRY_PORT"

CONFIG = """\
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: {address}
"""


def registry_address() -> str:
    """``127.0.0.1:PORT`` of the local registry; a fixed port keeps image references stable."""
    return f"127.0.0.1:{int(os.environ.get(PORT_ENV, DEFAULT_PORT))}"


def is_up(address: str) -> bool:
    """Whether a registry answers the v2 API at ``address``."""
    try:
        with urllib.request.urlopen(f"http://{address}/v2/", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def ensure_registry() -> str:
    """Start the registry unless one already answers; return its address.

    Like ECR, which it stands in for, the registry outlives the runs that use it: it is started
    detached and left running, so that processes using it at the same time never pull it from
    under one another, and its storage in the cache directory keeps images for the next run.
    Stop it with :func:`stop_registry`.
    """
    address = registry_address()
    if is_up(address):
        return address
    binary = shutil.which("docker-registry") or shutil.which("registry")
    if binary is None:
        raise LocalStackError(
            "the local stack needs a Docker registry: install Debian's with "
            "`apt-get install --no-install-recommends docker-registry` (scripts/bootstrap.sh "
            "does it)."
        )
    root = cache_dir() / "registry"
    root.mkdir(parents=True, exist_ok=True)
    config = Path(cache_dir(), "registry.yml")
    config.write_text(CONFIG.format(root=root, address=address))
    logfile = open(cache_dir() / "registry.log", "ab")  # noqa: SIM115 - lives with the process
    proc = subprocess.Popen([binary, "serve", str(config)], stdout=logfile, stderr=logfile,
                            start_new_session=True)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if is_up(address):
            (cache_dir() / "registry.pid").write_text(str(proc.pid))
            log.info("Started local registry at %s", address)
            return address
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise LocalStackError(
        f"the local registry did not start at {address}: see {cache_dir() / 'registry.log'}. "
        f"Is the port taken? Choose another with ${PORT_ENV}."
    )


def stop_registry() -> bool:
    """Stop the registry this cache directory's runs started; False if none was running."""
    pidfile = cache_dir() / "registry.pid"
    try:
        pid = int(pidfile.read_text())
    except (OSError, ValueError):
        return False
    pidfile.unlink(missing_ok=True)
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    return True
