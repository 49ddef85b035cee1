"""A workflow's execution graph and packs, planned as the plugin would plan its run.

No image is built and nothing is submitted: the graph is expanded as ``Workflow.run`` expands
it, nodes that run on the driver are the plugin's, and the packs come from the same planner
with the run history's runtimes (:meth:`~nipype_batch.driver.packs.Packing.for_graph`).
"""

from __future__ import annotations

import os
from copy import deepcopy
from dataclasses import dataclass, field
from typing import Any

from nipype import config
from nipype.pipeline.engine import MapNode
from nipype.pipeline.engine.utils import generate_expanded_graph, merge_dict

from ..driver.packs import SHORT_NODE_S, Packing
from ..history import NodeHistory, history_key
from ..packing import PackPlan, PlanNode
from ..resources import JobResources, runs_on_driver
from ..settings import BatchSettings
from .playback import MapShape


@dataclass
class PlannedRun:
    """What a run would submit."""

    records: list[PlanNode]  # every node, runtimes from the history
    plan: PackPlan | None  # None: packing off
    maps: dict[str, MapShape]  # MapNodes' subnodes, by node key
    packing: Packing
    base_dir: str | None = None  # the workflow's (history keys are relative to it)
    # history keys of nodes the history has not seen, and what was assumed for them
    assumed: dict[str, str] = field(default_factory=dict)


def execution_graph(wf: Any) -> Any:
    """Nipype's execution graph of ``wf``, expanded as ``Workflow.run`` expands it."""
    flat = wf._create_flat_graph()
    wf_config = merge_dict(deepcopy(config._sections), wf.config)
    wf._set_needed_outputs(flat)
    graph = generate_expanded_graph(deepcopy(flat))
    base_dir = os.path.abspath(wf.base_dir or os.getcwd())
    for index, node in enumerate(graph.nodes()):
        node.config = merge_dict(deepcopy(wf_config), node.config)
        node.base_dir = base_dir
        node.index = index
    return graph


def plan_run(wf: Any, settings: BatchSettings, history: list[NodeHistory],
             job_overhead_s: float, base_image: str = "base",
             max_vcpus: int | None = None) -> PlannedRun:
    """Plan ``wf``'s jobs as the plugin would, with ``history`` for runtimes (and, as on
    the local stack, ``max_vcpus`` for the largest pack)."""
    graph = execution_graph(wf)
    on_driver = {n for n in graph.nodes() if runs_on_driver(n, settings)}

    def compatible(resources: JobResources) -> str:  # as the plugin's, images not built
        image = resources.image or resources.base_image or base_image
        return "|".join(map(str, (image, resources.gpus, resources.attempts,
                                  resources.timeout_s)))

    base_dir = next(iter(graph.nodes())).base_dir if graph.nodes() else None
    packing = Packing.for_graph(graph, settings, on_driver, compatible, "queue", history,
                                job_overhead_s, base_dir, max_vcpus=max_vcpus)
    known = {h.node for h in history}
    assumed: dict[str, str] = {}
    maps: dict[str, MapShape] = {}
    for node in graph.nodes():
        if node in on_driver:
            continue
        name = history_key(node.output_dir(), base_dir)
        if name not in known:
            assumed[name] = f"{SHORT_NODE_S:g} s (no run history)"
        if isinstance(node, MapNode):
            count = _subnode_count(node)
            if count is None:
                count = 1
                assumed[name] = assumed.get(name, "history") + "; 1 subnode (its list " \
                    "comes from upstream)"
            runtime = packing.runtimes.get(name, SHORT_NODE_S)
            maps[node.output_dir()] = MapShape(count, runtime, packing.chunk(name, count))
    return PlannedRun(packing.records, packing.plan, maps, packing, base_dir, assumed)


def _subnode_count(node: MapNode) -> int | None:
    """How many subnodes a MapNode will have, when its iterfields are set before the run."""
    lengths = set()
    for name in node.iterfield:
        value = getattr(node.inputs, name)
        if not isinstance(value, list | tuple):
            return None
        lengths.add(len(value))
    return max(lengths) if lengths else None
