"""A study's time and cost before it is paid for: its jobs planned and played back.

:func:`forecast` plans the workflow's jobs as the plugin would (the run history's runtimes and
peak memory; a node the history has not seen is named, with what was assumed for it), plays
them through the backend's latency profile and the queue's vCPU limit a few times (the
profile's spread gives the range), and prices the jobs as the run report does.
"""

from __future__ import annotations

import logging
import statistics
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any

from ..driver.packs import run_history
from ..history import Overheads, RunHistory, history_key, measured_overheads
from ..latency import AWS_EC2, AWS_FARGATE, LOCAL_STACK, LatencyProfile
from ..platforms import PLATFORMS
from ..report.cost import load_prices, usage_cost
from ..settings import BatchSettings
from .playback import Playback, play
from .workflow import PlannedRun, plan_run

log = logging.getLogger("nipype_batch")

DEFAULT_MAX_VCPUS = 64  # what `nipype-batch infra up` makes


@dataclass(frozen=True)
class StageShare:
    """One step of the workflow (a node across subjects): its node time and cost share."""

    stage: str
    nodes: int
    node_hours: float  # vCPU-hours of its nodes' own runtimes
    share: float  # of all node time


@dataclass
class Forecast:
    """What a run is expected to take and cost."""

    subjects: int | None  # values of the outermost iterable, when there is one
    platform: str
    max_vcpus: int | None
    jobs: int  # SubmitJob calls
    job_runs: int  # jobs and array children
    makespan_s: tuple[float, float, float]  # fastest, median, slowest of the seeds
    vcpu_hours: float
    gb_hours: float
    cost: float
    currency: str
    prices_as_of: str
    stages: list[StageShare] = field(default_factory=list)
    assumed: dict[str, str] = field(default_factory=dict)  # stage -> what was assumed
    what_if: list[str] = field(default_factory=list)
    runner: Overheads | None = None  # measured setup per job, hand-off per node
    workflow: str = ""
    backend: str = "aws"

    @property
    def cost_per_subject(self) -> float | None:
        return self.cost / self.subjects if self.subjects else None

    def text(self) -> str:
        """The forecast as the CLI prints it."""
        low, mid, high = self.makespan_s
        lines = [
            f"Forecast: {self.jobs} jobs ({self.job_runs} with array children) on "
            f"{self.platform}, {self.max_vcpus or 'unlimited'} vCPUs"
            + (f", {self.subjects} subjects" if self.subjects else ""),
            f"  makespan   {_hours(mid)} (range {_hours(low)} - {_hours(high)})",
            f"  compute    {self.vcpu_hours:.2f} vCPU-hours, {self.gb_hours:.2f} GB-hours",
            f"  cost       {self.currency} {self.cost:.2f}"
            + (f" ({self.currency} {self.cost_per_subject:.3f} per subject)"
               if self.cost_per_subject is not None else "")
            + f", prices of {self.prices_as_of}",
        ]
        lines.append(
            f"  runner     {self.runner.setup_s:.1f} s per job, {self.runner.handoff_s:.1f} s "
            f"per node besides their runs (measured by {self.runner.jobs} jobs)"
            if self.runner else f"  runner     its own time not measured on {self.backend!r} "
            "yet: none assumed (a first run measures it)")
        if self.stages:
            lines.append("  largest steps (share of node time):")
            lines += [f"    {s.stage}: {s.share:.0%} ({s.nodes} nodes, {s.node_hours:.2f} h)"
                      for s in self.stages[:5]]
        if self.what_if:
            lines.append("  what would change it most:")
            lines += [f"    {line}" for line in self.what_if]
        if self.assumed:
            lines.append("  no run history for (assumed):")
            lines += [f"    {stage}: {what}" for stage, what in sorted(self.assumed.items())]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """The forecast as JSON-able data (``nipype-batch forecast --json``)."""
        return {
            "workflow": self.workflow,
            "subjects": self.subjects, "platform": self.platform, "max_vcpus": self.max_vcpus,
            "jobs": self.jobs, "job_runs": self.job_runs,
            "makespan_s": {"low": self.makespan_s[0], "median": self.makespan_s[1],
                           "high": self.makespan_s[2]},
            "vcpu_hours": self.vcpu_hours, "gb_hours": self.gb_hours, "cost": self.cost,
            "cost_per_subject": self.cost_per_subject, "currency": self.currency,
            "prices_as_of": self.prices_as_of,
            "stages": [vars(s) for s in self.stages], "assumed": self.assumed,
            "what_if": self.what_if,
            "runner": vars(self.runner) if self.runner else None,
        }


def forecast(wf: Any, plugin_args: dict[str, Any] | None = None, *,
             subjects: int | None = None, max_vcpus: int | None = DEFAULT_MAX_VCPUS,
             seeds: int = 5) -> Forecast:
    """Forecast a run of ``wf`` with ``plugin_args``, before anything is built or submitted.

    Parameters
    ----------
    wf : nipype Workflow
    plugin_args : dict
        As ``wf.run(plugin='AWSBatch', plugin_args=...)`` takes them (``platform``,
        ``packing``, ``pack_target_s``...).
    subjects : int, optional
        Give the outermost iterable this many values: forecast a study from a few subjects
        run before (their runtimes are in the run history).
    max_vcpus : int or None
        The queue's vCPU limit (its compute environment's maxvCpus); None: unlimited.
    seeds : int
        Replays of the profile's random delays: the makespan's range.
    """
    args = dict(plugin_args or {})
    if args.get("platform") == "fargate":  # a forecast needs no role, only the platform
        args.setdefault("execution_role_arn", "arn:aws:iam::000000000000:role/forecast")
    settings = BatchSettings.from_plugin_args(args)
    if subjects is not None:
        set_subjects(wf, subjects)
    profile = profile_for(settings, max_vcpus)
    history = run_history()
    overhead = (settings.job_overhead_s if settings.job_overhead_s is not None
                else profile.job_overhead_s() + settings.poll_min_s)  # as the plugin plans
    planned = plan_run(wf, settings, history, overhead,
                       max_vcpus=profile.max_vcpus if settings.backend == "local" else None)
    runner = measured_overheads(settings.backend or "")
    runs = [_play(planned, profile.with_seed(seed), settings, runner)
            for seed in range(max(1, seeds))]
    spans = sorted(run.makespan_s for run in runs)
    median_run = sorted(runs, key=lambda r: r.makespan_s)[len(runs) // 2]
    platform = PLATFORMS[settings.platform]
    prices = load_prices(platform.capability, spot=platform.spot,
                         architecture=settings.architecture)
    discount = (1 - prices.spot_discount) if platform.spot else 1.0
    vcpu_h, gb_h = median_run.vcpu_s / 3600, median_run.gb_s / 3600
    result = Forecast(
        subjects=subjects if subjects is not None else _subject_count(wf),
        platform=settings.platform, max_vcpus=max_vcpus, jobs=median_run.submit_calls,
        job_runs=len(median_run.jobs),
        makespan_s=(spans[0], statistics.median(spans), spans[-1]),
        vcpu_hours=vcpu_h, gb_hours=gb_h,
        # priced job by job as the run report prices them (Fargate bills a minute at least)
        cost=discount * sum(usage_cost(j.vcpus, j.memory_mb, j.exited - j.running, prices)
                            for j in median_run.jobs
                            if j.running is not None and j.exited is not None),
        currency=prices.currency, prices_as_of=prices.as_of,
        stages=_stages(planned), assumed=planned.assumed, runner=runner, workflow=wf.name,
        backend=settings.backend or "aws")
    result.what_if = _what_if(planned, profile, settings, result, runner)
    try:  # for the report of a run of this workflow; a forecast never fails for it
        RunHistory().keep_forecast(wf.name, result.subjects, result.to_json())
    except Exception as exc:
        log.warning("The forecast could not be kept in the run history (%s): the run's "
                    "report will not compare with it", exc)
    return result


def profile_for(settings: BatchSettings, max_vcpus: int | None) -> LatencyProfile:
    """The latency profile of the run's backend and platform, with the queue's vCPUs."""
    if settings.backend == "local":
        from ..local.moto_adjustments import local_vcpus

        vcpus = local_vcpus()
        return replace(LOCAL_STACK, host_vcpus=vcpus, max_vcpus=vcpus)
    base = AWS_FARGATE if settings.platform == "fargate" else AWS_EC2
    return replace(base, max_vcpus=max_vcpus)


def set_subjects(wf: Any, count: int) -> None:
    """Give the outermost iterable ``count`` values (its own first, then made-up ones: only
    the graph's shape matters to a forecast)."""
    node = _outermost_iterable(wf)
    if node is None:
        raise ValueError("subjects=N needs a workflow with an iterable (e.g. "
                         "inputnode.iterables = ('subject', [...])); this one has none")
    name, values = node.iterables if isinstance(node.iterables, tuple) else node.iterables[0]
    values = list(values)[:count]
    values += [f"forecast{i:05d}" for i in range(len(values), count)]
    node.iterables = (name, values)


def _outermost_iterable(wf: Any) -> Any:
    graph = wf._create_flat_graph()
    import networkx as nx

    for node in nx.topological_sort(graph):
        if getattr(node, "iterables", None):
            return wf.get_node(node.fullname.split(".", 1)[1]) or node
    return None


def _subject_count(wf: Any) -> int | None:
    node = _outermost_iterable(wf)
    if node is None:
        return None
    _name, values = node.iterables if isinstance(node.iterables, tuple) else node.iterables[0]
    return len(list(values))


def _play(planned: PlannedRun, profile: LatencyProfile, settings: BatchSettings,
          runner: Overheads | None) -> Playback:
    return play(planned.records, planned.plan, profile, maps=planned.maps,
                poll_s=settings.poll_min_s,
                node_overhead_s=runner.handoff_s if runner else 0.0,
                job_setup_s=runner.setup_s if runner else 0.0)


def _stages(planned: PlannedRun) -> list[StageShare]:
    """Node time by step of the workflow, the largest first."""
    node_s: dict[str, float] = defaultdict(float)
    nodes: dict[str, int] = defaultdict(int)
    base = planned.base_dir
    for record in planned.records:
        if record.on_driver:
            continue
        stage = history_key(record.key, base)
        shape = planned.maps.get(record.key)
        count = shape.count if shape else 1
        seconds = (shape.count * shape.subnode_s if shape else record.runtime_s) * record.vcpus
        node_s[stage] += seconds
        nodes[stage] += count
    total = sum(node_s.values()) or 1.0
    return sorted((StageShare(stage, nodes[stage], node_s[stage] / 3600, node_s[stage] / total)
                   for stage in node_s), key=lambda s: -s.node_hours)


def _what_if(planned: PlannedRun, profile: LatencyProfile, settings: BatchSettings,
             now: Forecast, runner: Overheads | None) -> list[str]:
    """The change of queue size that would change the makespan most (4x the vCPUs)."""
    lines = []
    if profile.max_vcpus and settings.backend != "local":
        bigger = replace(profile, max_vcpus=profile.max_vcpus * 4)
        faster = _play(planned, bigger, settings, runner).makespan_s
        if faster < 0.9 * now.makespan_s[1]:
            lines.append(f"max-vcpus {bigger.max_vcpus} -> {_hours(faster)} instead of "
                         f"{_hours(now.makespan_s[1])}")
    return lines


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.1f} min"
