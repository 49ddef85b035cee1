"""The job images of a run: published once before the first job, then looked up per job."""

from __future__ import annotations

import logging
from typing import Any

from ..images.build import check_architecture
from ..images.load_check import check_nodes_load, check_ready_image
from ..images.plan import plan_images
from ..images.publish import ImageBuilder, PublishedImage
from ..resources import JobResources
from ..settings import BatchSettings

log = logging.getLogger("nipype_batch")


class JobImages:
    """Builds (where missing) and publishes the images a run's nodes need.

    One image per base image, holding what all its nodes import; ready images (``image``)
    are checked, not built. Every kind of node is then loaded in its image once.
    """

    def __init__(self, cloud: Any, settings: BatchSettings) -> None:
        self.cloud = cloud
        self.settings = settings
        self.published: list[PublishedImage] = []
        self._by_base: dict[str, str] = {}

    def plan(self, nodes: list[Any]) -> tuple[dict[str, Any], dict[str, str]]:
        """What each node imports, and so which image it needs (no I/O: the cheapest check)."""
        return plan_images(nodes, self.settings, self.cloud.base_image)

    def publish(self, nodes: list[Any], plan: tuple[dict[str, Any], dict[str, str]] | None = None
                ) -> list[PublishedImage]:
        """Build, push and check the images ``plan`` (by default, a fresh plan) names."""
        specs, ready = plan or self.plan(nodes)
        docker = self.cloud.docker()
        builder = ImageBuilder(docker, self.cloud.registry)
        local_refs: dict[str, str] = {}
        for spec in dict.fromkeys(specs.values()):
            image = builder.ensure(spec)
            self._by_base[spec.base_image] = image.ref
            local_refs[image.ref] = image.local_ref
            self.published.append(image)
            log.info("Job image %s on %s: %s in %.1f s", image.ref, spec.base_image,
                     "built and pushed" if image.built else
                     "pushed" if image.pushed else "already published", image.seconds)
        for ref in sorted(set(ready.values())):
            check_architecture(docker, ref, self.settings.architecture, "image")
            check_ready_image(docker, ref)
        # Before any submission: every kind of node must load in the image it will run in.
        by_image: dict[str, list[Any]] = {}
        for node in nodes:
            ref = ready.get(node._id) or self._by_base[specs[node._id].base_image]
            by_image.setdefault(ref, []).append(node)
        for ref, image_nodes in by_image.items():
            check_nodes_load(docker, ref, image_nodes, local_ref=local_refs.get(ref))
        return self.published

    def image_for(self, resources: JobResources) -> str:
        """The image a job with these resources runs (a MapNode's subnodes share its own)."""
        if resources.image:
            return resources.image
        return self._by_base[resources.base_image or self.cloud.base_image]
