"""Job images for a whole workflow: which image each node runs in.

Nodes are grouped by the base image they name (``base_image`` per node or for the run); each
group gets one image holding the union of its nodes' needs. A ready ``image`` is used as is
(:mod:`.load_check` checks it holds what jobs need).
"""

from __future__ import annotations

import logging
from typing import Any

from ..resources import resources_for
from ..settings import BatchSettings
from .build import ImageSpec
from .dependencies import Dependencies, node_dependencies
from .wheels import read_requirements

log = logging.getLogger(__name__)


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
            architecture=settings.architecture,
        )
        for base, dep in needs.items()
    }
    return {node_id: specs[base] for node_id, base in base_of.items()}, ready
