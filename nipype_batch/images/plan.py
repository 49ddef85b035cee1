"""Job images for a whole workflow: which image each node runs in, built only when missing.

Nodes are grouped by the base image they name (``base_image`` per node or for the run); each
group gets one image holding the union of its nodes' needs. The registry is asked for the
image's content tag before anything is built, so an unchanged workflow builds and pushes
nothing. A ready ``image`` is used as is, once checked to hold what jobs need.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from ..cache import cache_dir
from ..errors import ImageBuildError
from ..resources import resources_for
from ..settings import BatchSettings
from .build import (
    LOCAL_REPOSITORY,
    ImageSpec,
    build_image,
    driver_python,
    prepare_image,
)
from .dependencies import Dependencies, node_dependencies, read_requirements
from .registries import Registry

log = logging.getLogger(__name__)

_PROBE = (
    "import json, sys\n"
    "found = {'python': '%d.%d' % sys.version_info[:2]}\n"
    "for name in ('nipype', 'cloudpickle', 'boto3', 'nipype_batch.runner'):\n"
    "    try:\n"
    "        module = __import__(name, fromlist=['_'])\n"
    "        found[name] = getattr(module, '__version__', 'present')\n"
    "    except Exception as exc:\n"
    "        found[name] = None\n"
    "print(json.dumps(found))\n"
)


@dataclass(frozen=True)
class PublishedImage:
    """A job image in the registry jobs pull from."""

    ref: str  # by digest
    tag: str
    built: bool
    pushed: bool
    seconds: float

    @property
    def local_ref(self) -> str:
        """Its name in the Docker daemon that built it."""
        return f"{LOCAL_REPOSITORY}:{self.tag}"


class ImageBuilder:
    """Builds job images with one Docker daemon and publishes them to one registry."""

    def __init__(self, docker: Any, registry: Registry) -> None:
        self.docker = docker
        self.registry = registry

    def ensure(self, spec: ImageSpec) -> PublishedImage:
        """The published image for ``spec``: found by its tag, or built and pushed."""
        started = time.monotonic()
        prepared = prepare_image(self.docker, spec)
        found = self.registry.find(prepared.tag)
        if found:
            return PublishedImage(found, prepared.tag, built=False, pushed=False,
                                  seconds=time.monotonic() - started)
        built = build_image(self.docker, prepared)
        ref = self.registry.publish(self.docker, prepared.local_ref, prepared.tag)
        return PublishedImage(ref, prepared.tag, built=built, pushed=True,
                              seconds=time.monotonic() - started)


def check_ready_image(docker: Any, ref: str) -> None:
    """Refuse an as-is image whose Python, nipype or cloudpickle differ from the driver's."""
    try:
        image = docker.images.get(ref)
    except Exception:
        try:
            image = docker.images.pull(ref)
        except Exception as exc:
            raise ImageBuildError(
                f"image {ref!r} is neither local nor pullable ({exc.__class__.__name__}): "
                "check its name and that you are logged in to its registry."
            ) from exc
    cache = cache_dir() / "ready-images.json"
    known = json.loads(cache.read_text()) if cache.exists() else {}
    if image.id not in known:
        try:
            out = docker.containers.run(ref, ["python3", "-c", _PROBE], remove=True,
                                        network_mode="none", entrypoint=[])
            known[image.id] = json.loads(out.decode().strip().splitlines()[-1])
        except Exception as exc:
            raise ImageBuildError(
                f"image {ref!r} cannot run `python3` ({exc.__class__.__name__}); jobs need it."
            ) from exc
        cache.write_text(json.dumps(known))
    found = known[image.id]
    wanted = {
        "python": driver_python(),
        "nipype": importlib.metadata.version("nipype"),
        "cloudpickle": importlib.metadata.version("cloudpickle"),
    }
    problems = [f"{name} {found.get(name) or 'missing'} (driver: {version})"
                for name, version in wanted.items() if found.get(name) != version]
    if not found.get("nipype_batch.runner"):
        problems.append("nipype_batch missing (the job runner)")
    if not found.get("boto3"):
        problems.append("boto3 missing (the runner's S3 client)")
    if problems:
        raise ImageBuildError(
            f"image {ref!r} cannot run this workflow's jobs: {'; '.join(problems)}. Pickled "
            "nodes need the driver's Python minor version, nipype and cloudpickle. Give it as "
            "plugin_args={'base_image': ...} instead, and nipype-batch will add the packages."
        )


def plan_images(nodes: list[Any], settings: BatchSettings,
                default_base: str) -> tuple[dict[str, ImageSpec], dict[str, str]]:
    """Per node id: the spec of the image to build, or the ready image to use as is.

    Every node's imports are traced before anything is built, so a missing module is an
    error naming the node before the first build or submission.
    """
    extra = [*settings.packages]
    if settings.requirements:
        extra += read_requirements(settings.requirements)
    needs: dict[str, Dependencies] = {}
    base_of: dict[str, str] = {}
    ready: dict[str, str] = {}
    for node in nodes:
        resources = resources_for(node, settings)
        if resources.image:
            ready[node._id] = resources.image
            continue
        base = resources.base_image or settings.base_image or default_base
        needs.setdefault(base, Dependencies()).update(node_dependencies(node))
        base_of[node._id] = base
    for base, dep in needs.items():
        traced = sorted(f"{req} ({dep.reasons[req]})" for req in dep.requirements
                        if req in dep.reasons)
        log.info("Job image on %s: traced %d packages: %s%s", base, len(traced),
                 "; ".join(traced) or "none",
                 f"; local code: {', '.join(sorted(dep.local_code))}" if dep.local_code else "")
    specs = {
        base: ImageSpec(
            base_image=base,
            requirements=tuple(sorted(dep.requirements | set(extra))),
            local_code=tuple(sorted(dep.local_code)),
        )
        for base, dep in needs.items()
    }
    return {node_id: specs[base] for node_id, base in base_of.items()}, ready
