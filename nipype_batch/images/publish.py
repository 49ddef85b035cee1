"""Publishing job images: found in the registry by their content tag, or built and pushed.

The registry is asked for the image's content tag before anything is built, so an unchanged
workflow builds and pushes nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from .build import LOCAL_REPOSITORY, ImageSpec, build_image, prepare_image
from .registries import Registry


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
