"""Python API beyond the plugin itself."""

from __future__ import annotations

from typing import Any

from .backend import connect
from .driver.images import JobImages
from .images.publish import PublishedImage
from .resources import runs_on_driver
from .settings import BatchSettings


def build_images(workflow: Any, plugin_args: dict[str, Any] | None = None) -> list[PublishedImage]:
    """Build and publish the job images ``workflow`` needs, ahead of a run.

    Takes the same ``plugin_args`` as ``wf.run(plugin='AWSBatch', ...)``; a later run with them
    finds the images by their content tags and builds nothing.
    """
    settings = BatchSettings.from_plugin_args(plugin_args)
    graph = workflow._create_flat_graph()
    nodes = [node for node in graph.nodes() if not runs_on_driver(node, settings)]
    return JobImages(connect(settings), settings).publish(nodes) if nodes else []
