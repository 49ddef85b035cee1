"""Which nodes share a job (packs), and when the driver launches a pack.

The plan comes from :func:`nipype_batch.packing.plan_packs` over the execution graph, with
each node's runtime from the run history. Nipype still offers nodes one by one as they become
ready: the first node of a pack that Nipype offers launches the pack once everything its
nodes need from outside it is done; the pack's later nodes, when Nipype offers them, wait for
their own marker in the running job (see :class:`~nipype_batch.driver.poll.JobsInFlight`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from typing import Any

from nipype.pipeline.engine import MapNode

from ..history import NodeHistory, RunHistory, history_key
from ..latency import AWS_EC2, AWS_FARGATE
from ..packing import Pack, PackingModel, PackPlan, PlanNode, chunk_size, plan_packs
from ..resources import JobResources, resources_for
from ..settings import BatchSettings
from .jobs import PreparedJob, SubmittedJob

log = logging.getLogger("nipype_batch")

# A node the history has not seen is taken to be this long: most Nipype nodes are seconds.
SHORT_NODE_S = 10.0


def job_overhead_s(cloud: Any, settings: BatchSettings) -> float:
    """The backend's estimate of the seconds each job waits before it runs: its own, else
    AWS's on the run's platform (from the figures cited in :mod:`nipype_batch.latency`), with one
    status poll."""
    value = getattr(cloud, "job_overhead_s", None)
    if value is not None:
        return float(value)
    profile = AWS_FARGATE if settings.platform == "fargate" else AWS_EC2
    return profile.job_overhead_s() + settings.poll_min_s


def run_history() -> list[NodeHistory]:
    """What the run history knows; nothing, never an error, if it cannot be read."""
    try:
        return RunHistory().nodes()
    except Exception as exc:  # a broken history must never break a run
        log.warning("The run history cannot be read (%s): planning without it", exc)
        return []


@dataclass(eq=False)  # one per pack: held in sets and dicts by identity
class PackRun:
    """One pack on its way: the nodes Nipype has offered, then the job that runs them."""

    pack: Pack
    # node dir -> (task id, node, inputs' hash) of the nodes Nipype has offered
    offered: dict[str, tuple[int, Any, str]] = field(default_factory=dict)
    prepared: PreparedJob | None = None
    single: bool = False  # only one of its nodes was left to run: a plain job
    views: dict[str, SubmittedJob] = field(default_factory=dict)  # dir -> its view of the job

    @property
    def launched(self) -> bool:
        return self.prepared is not None or self.single


class Packing:
    """The run's packs, by node directory (a node alone in its pack has none)."""

    def __init__(self, plan: PackPlan | None = None,
                 after: dict[str, tuple[str, ...]] | None = None,
                 model: PackingModel | None = None,
                 runtimes: dict[str, float] | None = None,
                 records: list[PlanNode] | None = None) -> None:
        self.plan = plan
        self.records = records or []  # every node as the planner saw it
        self.after = after or {}
        self.model = model or PackingModel()
        self.runtimes = runtimes or {}  # history key -> median runtime
        self._runs: dict[str, PackRun] = {}
        for pack in plan.packs if plan else ():
            if len(pack.members) > 1:
                run = PackRun(pack)
                self._runs.update(dict.fromkeys(pack.members, run))

    @classmethod
    def for_graph(cls, graph: Any, settings: BatchSettings, on_driver: set[Any],
                  compatible: Any, default_queue: str, history: list[NodeHistory],
                  job_overhead_s: float, base_dir: str | None,
                  max_vcpus: int | None = None) -> Packing:
        """Plan the packs of Nipype's execution graph.

        ``compatible(resources)`` names what nodes sharing a job must share besides
        vCPUs and memory (the image); ``history`` gives the nodes' runtimes; ``max_vcpus``
        caps a pack's vCPUs (the local stack: this machine's).
        """
        model = PackingModel(target_s=float(settings.pack_target_s),
                             job_overhead_s=float(job_overhead_s))
        if max_vcpus is not None:
            model = replace(model, max_vcpus=max(1, min(model.max_vcpus, max_vcpus)))
        runtimes = {h.node: h.median_runtime_s for h in history}
        memory = {h.node: h.peak_memory_mb for h in history}
        dirs = {node: node.output_dir() for node in graph.nodes()}
        after = {dirs[node]: tuple(sorted(dirs[p] for p in graph.predecessors(node)))
                 for node in graph.nodes()}
        records, known = [], 0  # known: nodes the history has seen
        for node in sorted(graph.nodes(), key=lambda n: dirs[n]):
            key = dirs[node]
            if node in on_driver:
                records.append(PlanNode(key, after[key], "", "", 1, 0, 0.0, packable=False,
                                        on_driver=True))
                continue
            resources = resources_for(node, settings)
            name = history_key(key, base_dir or node.base_dir)
            seen = name in runtimes
            known += seen
            records.append(PlanNode(
                key=key, after=after[key], image=compatible(resources),
                queue=resources.job_queue or default_queue, vcpus=resources.vcpus,
                memory_mb=max(resources.memory_mb, int(memory.get(name, 0))),
                runtime_s=runtimes.get(name, SHORT_NODE_S),
                packable=resources.pack and not isinstance(node, MapNode)
                and (seen or not asks_for_more(node, resources, settings))))
        if settings.packing == "off":
            return cls(None, after, model, runtimes, records)
        if len(set(dirs.values())) < len(dirs):  # e.g. parameterize_dirs=False
            log.info("Packing off for this run: some nodes share a directory")
            return cls(None, after, model, runtimes, records)
        plan = plan_packs(records, model)
        packed = sum(len(p.members) for p in plan.packs if len(p.members) > 1)
        log.info("Packing: %d job nodes in %d jobs (%d nodes share a job; target %g s, "
                 "%g s waiting per job, %d nodes with a run history)",
                 len(records) - len(on_driver), len(plan.packs), packed, model.target_s,
                 model.job_overhead_s, known)
        return cls(plan, after, model, runtimes, records)

    def resume(self, job: SubmittedJob) -> None:
        """A pack an earlier driver launched still runs: its nodes wait for its markers
        rather than for a pack of this run's plan."""
        dirs = job.pack_dirs or []
        views = {}
        for index, node_dir in enumerate(dirs):
            bundle = job.bundle_key
            if bundle and job.pack_index is not None:
                bundle = bundle.replace(f"-{job.pack_index}.tar", f"-{index}.tar")
            views[node_dir] = replace(job, node_dir=node_dir, pack_index=index, hashvalue="",
                                      bundle_key=bundle, node_name=os.path.basename(node_dir))
        run = PackRun(Pack(tuple(dirs), job.resources.vcpus, job.resources.memory_mb, 0.0,
                           job.image, job.queue), single=True, views=views)
        self._runs.update(dict.fromkeys(dirs, run))

    def run_for(self, node_dir: str) -> PackRun | None:
        """The pack a node belongs to, if it shares a job."""
        return self._runs.get(node_dir)

    def held(self) -> list[PackRun]:
        """Packs with nodes offered that wait for something outside them."""
        return [run for run in dict.fromkeys(self._runs.values())
                if run.offered and not run.launched]

    def holds(self, taskid: int) -> bool:
        """Whether a task is a node offered to a pack that has not been launched."""
        return any(taskid == offered[0] for run in self.held()
                   for offered in run.offered.values())

    def chunk(self, history_name: str, count: int) -> int:
        """How many of a MapNode's ``count`` subnodes each job (array child) runs."""
        if self.plan is None:
            return 1
        runtime = self.runtimes.get(history_name, SHORT_NODE_S)
        return chunk_size(runtime, count, self.model)


def asks_for_more(node: Any, resources: JobResources, settings: BatchSettings) -> bool:
    """Whether a node with no history says it is not short: more vCPUs or memory than the
    defaults, or resources of its own in ``plugin_args``."""
    args = getattr(node, "plugin_args", None) or {}
    own = {"vcpus", "memory_mb", "gpus", "timeout_s"} & set(args)
    return (resources.vcpus > settings.vcpus or resources.memory_mb > settings.memory_mb
            or resources.gpus > 0 or bool(own))


def load_outside_inputs(node: Any, inside: set[str]) -> None:
    """Set the inputs a node of a pack takes from outside the pack, from their result files
    (on the driver, as those nodes are done); the job sets the others from the pack's own
    results when the node runs."""
    sources = node.input_source
    outside = {k: v for k, v in sources.items() if os.path.dirname(v[0]) not in inside}
    node.input_source = outside
    node._got_inputs = False
    try:
        node._get_inputs()
    finally:
        node.input_source = {k: v for k, v in sources.items() if k not in outside}
        node._got_inputs = False


def pack_resources(resources: JobResources, pack: Pack) -> JobResources:
    """A pack's job resources: its first node's, with the pack's vCPUs and memory."""
    from dataclasses import replace

    return replace(resources, vcpus=max(resources.vcpus, pack.vcpus),
                   memory_mb=max(resources.memory_mb, pack.memory_mb))
