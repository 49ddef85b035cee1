"""The job image: a base image plus the workflow's Python packages and our runner.

The wheels (see :mod:`.wheels`) are installed in a build with no network. The tag is a hash of
the base image id, the wheel set, the recipe, the runner's source and the user's local code, so
an unchanged workflow reuses its image without building.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import ImageBuildError
from ..platforms import ARCHITECTURES, DEFAULT_ARCHITECTURE, X86_64, architecture
from .docker import probe_image
from .wheels import driver_python, pin_to_driver, resolve_wheels

log = logging.getLogger(__name__)

# The official Python image of the driver's minor version (pickled nodes need it), from its
# ECR Public mirror, which AWS pulls without Docker Hub's rate limits: any driver (macOS,
# Python 3.12...) can use it. Offline, `containers/base-image.sh` builds one with mmdebstrap
# and tags it with this name.
DEFAULT_BASE_IMAGE = (f"public.ecr.aws/docker/library/python:{driver_python()}"
                      "-slim-bookworm")
LOCAL_REPOSITORY = "nipype-batch-job"
CORE_PACKAGES = ("nipype", "cloudpickle", "boto3")
PACKAGE_DIR = Path(__file__).resolve().parent.parent  # nipype_batch
_PYTHON_PROBE = "import sys; print('%d.%d' % sys.version_info[:2])"


def source_digest() -> str:
    """Hash of this package's Python source: the runner that goes into the image."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        digest.update(str(path.relative_to(PACKAGE_DIR)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class ImageSpec:
    """What goes into one job image: a base, pinned requirements and local code."""

    base_image: str
    requirements: tuple[str, ...] = ()
    local_code: tuple[str, ...] = ()  # module files or package directories on the driver
    architecture: str = DEFAULT_ARCHITECTURE  # the CPU of the queue's instances


@dataclass(frozen=True)
class PreparedImage:
    """An image spec resolved to wheels, with its content-hash tag; not yet built."""

    spec: ImageSpec
    tag: str
    requirements: tuple[str, ...]
    wheel_dir: Path
    wheels: tuple[str, ...]

    @property
    def local_ref(self) -> str:
        """Name of the image in the local Docker daemon."""
        return f"{LOCAL_REPOSITORY}:{self.tag}"


def ensure_base_image(docker: Any, base_image: str,
                      architecture_name: str = DEFAULT_ARCHITECTURE) -> Any:
    """The base image from the daemon, pulled if it is not there; its CPU architecture and
    Python checked."""
    check_architecture(docker, base_image, architecture_name, "base image")
    base, theirs = probe_image(
        docker, base_image, _PYTHON_PROBE, cache_name="base-python.json", parse=str,
        what="base image",
        unavailable=lambda exc: (
            f"base image {base_image!r} is neither in the local Docker daemon nor "
            f"pullable ({exc.__class__.__name__}). Without access to ECR Public, build the "
            "default one with `containers/base-image.sh` (mmdebstrap, Linux), or name an "
            "image you can pull with plugin_args={'base_image': 'registry/image:tag'}."),
        cannot_run=lambda exc: (
            f"base image {base_image!r} has no working python3 ({exc}). Use an image "
            "with Python 3 and its venv module, e.g. the default built by "
            "containers/base-image.sh."),
        keep_entrypoint=True,  # as before: the base image runs with its own entrypoint
        platform=architecture(architecture_name).docker_platform,  # a pull gets that CPU's
    )
    if theirs != driver_python():
        raise ImageBuildError(
            f"base image {base_image!r} has Python {theirs} but this driver runs Python "
            f"{driver_python()}: pickled nodes need the same minor version. Use a base image "
            f"with Python {driver_python()}, or run the driver with Python {theirs}."
        )
    return base


def check_architecture(docker: Any, ref: str, architecture_name: str, what: str) -> None:
    """Refuse an image built for another CPU than the queue's: on AWS every job of it would
    fail with "exec format error", three attempts each."""
    try:
        image = docker.images.get(ref)
    except Exception:
        return  # not local yet: pulled (for the platform) and probed later
    found = (getattr(image, "attrs", None) or {}).get("Architecture") or ""
    wanted = architecture(architecture_name)
    if found and ARCHITECTURES.get(found, None) is not wanted:
        raise ImageBuildError(
            f"{what} {ref!r} is built for {found}, but the queue's instances are "
            f"{wanted.name} (plugin_args['architecture']): its jobs would fail with 'exec "
            f"format error'. Use a {what} for {wanted.docker_platform}, or set "
            f"architecture={ARCHITECTURES.get(found, wanted).name!r} for a queue of "
            "such instances.")


def local_code_digest(paths: tuple[str, ...]) -> str:
    """Hash of the local code files that go into the image."""
    digest = hashlib.sha256()
    for root in paths:
        for rel, full in _local_code_files(root):
            digest.update(rel.encode())
            digest.update(Path(full).read_bytes())
    return digest.hexdigest()


def prepare_image(docker: Any, spec: ImageSpec) -> PreparedImage:
    """Check the base, resolve wheels and compute the content tag, without building."""
    base = ensure_base_image(docker, spec.base_image, spec.architecture)
    requirements = tuple(sorted({pin_to_driver(r) for r in (*CORE_PACKAGES,
                                                            *spec.requirements)}))
    wheel_dir, wheels = resolve_wheels(list(requirements), driver_python(), spec.architecture)
    content = json.dumps([
        base.id, wheels, requirements, source_digest(), _recipe(),
        local_code_digest(spec.local_code), spec.architecture,
    ]).encode()
    return PreparedImage(
        spec=spec, tag=hashlib.sha256(content).hexdigest()[:20], requirements=requirements,
        wheel_dir=wheel_dir, wheels=tuple(wheels),
    )


def build_image(docker: Any, prepared: PreparedImage) -> bool:
    """Build the prepared image unless the daemon has it; return whether it was built."""
    try:
        docker.images.get(prepared.local_ref)
        return False
    except Exception:
        pass
    with tempfile.TemporaryDirectory(prefix="nipype-batch-build-") as ctx:
        _write_context(Path(ctx), prepared)
        log.info("Building job image %s on %s", prepared.local_ref, prepared.spec.base_image)
        _docker_build(docker, ctx, prepared.local_ref, prepared.spec.base_image,
                      architecture(prepared.spec.architecture).docker_platform)
    # before anything is pushed: the image runs on the queue's CPU
    check_architecture(docker, prepared.local_ref, prepared.spec.architecture, "job image")
    return True


def _recipe() -> str:
    """The job image's Dockerfile (part of the image's content hash)."""
    return resources.files("nipype_batch.containers").joinpath("job.Dockerfile").read_text()


def _write_context(ctx: Path, prepared: PreparedImage) -> None:
    (ctx / "Dockerfile").write_text(_recipe())
    (ctx / "wheels").mkdir()
    for name in prepared.wheels:
        target = ctx / "wheels" / name
        try:
            os.link(prepared.wheel_dir / name, target)
        except OSError:
            shutil.copy2(prepared.wheel_dir / name, target)
    (ctx / "wheels" / "requirements.txt").write_text("\n".join(prepared.requirements) + "\n")
    shutil.copytree(
        PACKAGE_DIR, ctx / "src" / "nipype_batch",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "local"),
    )
    user = ctx / "user"
    user.mkdir()
    for root in prepared.spec.local_code:
        for rel, full in _local_code_files(root):
            target = user / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(full, target)


def _local_code_files(root: str) -> list[tuple[str, str]]:
    """``(path in image, path on driver)`` of a local module or package's files.

    Hidden files and directories (``.env``, ``.git``, ``.aws``...), caches and build
    leftovers are never copied: they may hold secrets and are never imported.
    """
    if os.path.isfile(root):
        return [(os.path.basename(root), root)]
    top = os.path.basename(root.rstrip(os.sep))
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and d not in ("__pycache__", "build", "dist")
                             and not d.endswith(".egg-info"))
        for name in sorted(filenames):
            if name.startswith(".") or name.endswith((".pyc", ".pyo")):
                continue
            full = os.path.join(dirpath, name)
            files.append((os.path.join(top, os.path.relpath(full, root)), full))
    return files


def _docker_build(docker: Any, ctx: str, ref: str, base_image: str,
                  platform: str = X86_64.docker_platform) -> None:
    lines: list[str] = []
    stream = docker.api.build(
        path=ctx, tag=ref, buildargs={"BASE_IMAGE": base_image}, network_mode="none",
        rm=True, forcerm=True, decode=True, platform=platform,
    )
    for chunk in stream:
        if "stream" in chunk:
            text = chunk["stream"].rstrip()
            if text:
                lines.append(text)
                if text.startswith("Step "):
                    log.info("  %s", text)
        if "error" in chunk:
            tail = "\n".join(lines[-30:])
            raise ImageBuildError(
                f"docker build of {ref} failed: {chunk['error'].strip()}\n--- build log tail ---"
                f"\n{tail}"
            )
