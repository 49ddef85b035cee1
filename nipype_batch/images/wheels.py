"""Requirement strings and wheels on the driver, for a job image.

Wheels are resolved on the driver, pinned to the driver's installed versions (a pickle made on
the driver must load in the job), and installed in a build with no network: builds work behind
proxies the containers do not trust, and nothing of the driver's environment enters a layer.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from ..cache import cache_dir
from ..errors import ConfigurationError, ImageBuildError
from ..platforms import DEFAULT_ARCHITECTURE, architecture

log = logging.getLogger(__name__)


def driver_python() -> str:
    """``'3.11'``: the Python minor version jobs must match."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def pin_to_driver(requirement: str) -> str:
    """``'dipy'`` -> ``'dipy==1.10.0'`` when the driver has it; anything else is kept as given.

    An exact pin that differs from the driver's installed version is refused: objects pickled
    on the driver must load in the job with the same code.
    """
    try:
        parsed = Requirement(requirement)
    except InvalidRequirement:
        return requirement  # a URL or a path: pip reads it as given
    specifiers = list(parsed.specifier)
    bare_or_exact = not specifiers or (len(specifiers) == 1
                                       and specifiers[0].operator in ("==", "==="))
    if parsed.extras or parsed.marker or parsed.url or not bare_or_exact:
        return requirement
    name = parsed.name
    try:
        installed = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return requirement
    if specifiers and specifiers[0].version != installed:
        asked = f"{name}{specifiers[0]}"  # 'dipy==1.10.0'
        raise ConfigurationError(
            f"packages asks for {asked} but this driver has {name} {installed}: jobs "
            f"must run the driver's version. Install {asked} on the driver, or write "
            f"just {name!r}."
        )
    return f"{name}=={installed}"


def driver_constraints() -> list[str]:
    """``name==version`` of every distribution on the driver, to pin transitive dependencies."""
    pins = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata.get("Name")
        if name and not canonicalize_name(name).startswith("nipype-batch"):
            pins[canonicalize_name(name)] = f"{name}=={dist.version}"
    return sorted(pins.values())


def platform_tags(architecture_name: str = DEFAULT_ARCHITECTURE) -> list[str]:
    """pip's manylinux tags for the jobs' CPU: the queue's, never the driver's (``arm64``
    on a Mac would name wheels that do not exist, ``manylinux_2_17_arm64``)."""
    machine = architecture(architecture_name).wheel
    tags = [f"manylinux_2_{minor}_{machine}" for minor in range(17, 37)]
    return [*tags, f"manylinux2014_{machine}"]


def resolve_wheels(requirements: list[str], python: str,
                   architecture_name: str = DEFAULT_ARCHITECTURE) -> tuple[Path, list[str]]:
    """Download wheels for ``requirements`` for Linux on ``architecture_name`` (cached by
    their hash); return dir and file names."""
    constraints = driver_constraints()
    tags = platform_tags(architecture_name)
    key = hashlib.sha256(
        json.dumps([sorted(requirements), constraints, python, tags]).encode()
    ).hexdigest()[:24]
    wheel_dir = cache_dir() / "wheels" / f"py{python}-{architecture(architecture_name).wheel}"
    lock = cache_dir() / "locks" / f"{key}.json"
    if lock.exists():
        names = json.loads(lock.read_text())
        if all((wheel_dir / name).exists() for name in names):
            return wheel_dir, names
    wheel_dir.mkdir(parents=True, exist_ok=True)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        constraints_file = Path(tmp, "constraints.txt")
        constraints_file.write_text("\n".join(constraints) + "\n")
        download = Path(tmp, "wheels")
        cmd = [
            sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
            "--only-binary=:all:", "--python-version", python, "--implementation", "cp",
            *[arg for tag in tags for arg in ("--platform", tag)],
            "-c", str(constraints_file), "-d", str(download), *requirements,
        ]
        log.info("Resolving wheels for %s", ", ".join(requirements))
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
            raise ImageBuildError(
                f"pip could not resolve wheels for {requirements} (Python {python}, Linux "
                f"{architecture_name}):\n"
                f"{tail}\nEvery package must be on PyPI as a wheel for Linux; pin another "
                "version in 'packages', or give a ready image with plugin_args={'image': ...}."
            )
        names = sorted(p.name for p in download.iterdir())
        for name in names:
            shutil.move(str(download / name), wheel_dir / name)
    lock.write_text(json.dumps(names))
    return wheel_dir, names


def read_requirements(path: str) -> list[str]:
    """Requirements from a pip requirements file (comments, blanks and options skipped)."""
    try:
        with open(path) as fh:
            lines = fh.read().splitlines()
    except OSError as exc:
        raise ConfigurationError(
            f"requirements file {path!r} cannot be read ({exc.strerror}): give the path of a "
            "pip requirements file, e.g. plugin_args={'requirements': 'requirements.txt'}."
        ) from exc
    found = []
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            found.append(line)
    return found
