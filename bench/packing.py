"""Makespan and billed vCPU-hours of many short nodes on AWS Batch, with and without packing.

Runs the fMRIPrep-shaped synthetic workflow (examples/scale/fmriprep_shaped.py: 40 sleeping
nodes and a MapNode of 200 one-second subnodes per subject, a JoinNode across subjects) on a
simulated Batch with a latency profile (default AWS_EC2: jobs wait tens of seconds, the first
ones minutes for hosts to launch), once per packing mode, and prints a table with ratios
against the lower bound and against packing='off'. Two engines:

- ``--engine driver`` (default): the real plugin and runner on the simulated Batch
  (nipype_batch.simulated), played on a scaled clock. Real CPU work (the driver, and each
  job's staging in its worker) counts 1 / time-scale times over, so makespans are pessimistic
  by that much; "pool wait" is how long jobs waited for a free worker process, which real
  Batch does not have: if it is not small against the makespan, give more --workers.
- ``--engine playback``: the same plan (the plugin's planner over the expanded graph, the run
  history holding the nodes' true runtimes) played in virtual time through the same profile
  and host placement (nipype_batch.forecasting.playback): no node runs, so 100 subjects take
  seconds, for each queue size of --max-vcpus and each seed of --seeds.

    python bench/packing.py --subjects 2 [--time-scale 0.1] [--workers 64]
    python bench/packing.py --engine playback --subjects 100 --max-vcpus 64 256 1024 --seeds 5

Times are simulated seconds.
"""

from __future__ import annotations

import argparse
import graphlib
import logging
import os
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from examples.scale.fmriprep_shaped import (
    GROUP_S,
    MAPNODE,
    STEPS,
    VOLUME_S,
    critical_path_s,
    fmriprep_shaped,
    node_count,
    total_node_s,
)
from nipype_batch.forecasting.playback import play
from nipype_batch.forecasting.workflow import PlannedRun, plan_run
from nipype_batch.history import NodeHistory, RunHistory
from nipype_batch.latency import PROFILES, LatencyProfile
from nipype_batch.packing import PlanNode
from nipype_batch.settings import BatchSettings
from nipype_batch.simulated import SimulatedStack


@dataclass
class Row:
    """One run's figures."""

    mode: str
    max_vcpus: int | None
    nodes: int
    jobs: int
    submit_calls: int
    makespan_s: float  # simulated
    vcpu_h: float  # jobs' startedAt..stoppedAt x vCPUs
    host_vcpu_h: float  # hosts' launch..end of run x vCPUs (what EC2 bills)
    pool_wait_s: float  # mean wait for a worker process (a simulation artefact)
    real_s: float
    cpu_load: float  # CPU seconds used per real second and core, start-up included
    bound_s: float | None = None  # the lower bound, when not the fMRIPrep-shaped one


def _cpu_s() -> float:
    """CPU seconds of this process and of its reaped children (the workers, once stopped)."""
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                  resource.getrusage(resource.RUSAGE_CHILDREN)))


def lower_bound_s(subjects: int, profile: LatencyProfile) -> float:
    """No schedule beats the critical path plus one job's waiting and the cold start, nor the
    cold start and the total node time spread over the queue's vCPUs."""
    path = critical_path_s() + profile.job_overhead_s() + profile.cold_start_s()
    spread = total_node_s(subjects) / profile.max_vcpus if profile.max_vcpus else 0.0
    return max(path, profile.cold_start_s() + spread)


def run(mode: str | None, args: argparse.Namespace, profile: LatencyProfile) -> Row:
    scale = args.time_scale
    plugin_args = {
        "report": False, "progress": False, "fetch_outputs": False,
        # the plugin's default polling (0.5 s to 10 s) in simulated time, above its floor
        "poll_min_s": max(0.05, 0.5 * scale), "poll_max_s": max(0.05, 10.0 * scale),
    }
    if mode is not None:
        plugin_args["packing"] = mode
    cpu_before, wall_before = _cpu_s(), time.monotonic()
    with tempfile.TemporaryDirectory(prefix="nipype-batch-packing-") as tmp:
        stack = SimulatedStack(workers=args.workers, s3_directory=f"{tmp}/s3", profile=profile,
                               time_scale=scale)
        try:
            plugin = stack.plugin(plugin_args)
            wf = fmriprep_shaped(args.subjects, f"{tmp}/work")
            started = time.monotonic()
            wf.run(plugin=plugin)
            real_s = time.monotonic() - started
            end = stack.batch.now()
            jobs = [j for j in stack.batch.jobs.values() if not j.children]
            if args.timeline:  # each job's name, vCPUs and state changes, for a closer look
                import json

                with open(f"{args.timeline}.{mode or 'off'}.json", "w") as fh:
                    json.dump([{"name": j.name, "vcpus": j.vcpus, **j.timeline}
                               for j in jobs], fh)
            vcpu_s = sum((j.stopped_at - j.started_at) / 1000 * j.vcpus for j in jobs
                         if j.started_at is not None and j.stopped_at is not None)
            host_s = sum((end - h.launched_at) * h.vcpus for h in stack.batch.hosts)
            waits = [j.timeline["RUNNING"] - j.timeline["DISPATCHED"] for j in jobs
                     if "RUNNING" in j.timeline and "DISPATCHED" in j.timeline]
            row = Row(mode or "off", profile.max_vcpus, node_count(args.subjects),
                      len(plugin.submitted_job_ids),
                      stack.cloud.api_calls.counts.get("batch.SubmitJob", 0), real_s / scale,
                      vcpu_s / 3600, host_s / 3600, statistics.mean(waits) if waits else 0.0,
                      real_s, 0.0)
        finally:
            stack.stop()
    wall = time.monotonic() - wall_before
    row.cpu_load = (_cpu_s() - cpu_before) / (wall * (os.cpu_count() or 1))
    return row


def _table(rows: list[Row], subjects: int, profile: LatencyProfile, pool: bool) -> None:
    """The rows, each against the bound of its queue size and the 'off' row before it."""
    print("| max vCPUs | packing | nodes | SubmitJob calls | jobs | nodes/job | makespan s "
          "| vCPU-h (jobs) | vCPU-h (hosts) | lower bound s | makespan/bound | vs off |"
          + (" pool wait s | real s |" if pool else " real s |"))
    print("|---" * (13 if pool else 12) + "|")
    base = rows[0].makespan_s
    for r in rows:
        if r.mode == "off":
            base = r.makespan_s
        bound = r.bound_s or lower_bound_s(subjects, replace(profile, max_vcpus=r.max_vcpus))
        print(f"| {r.max_vcpus or 'none'} | {r.mode} | {r.nodes} | {r.submit_calls} | "
              f"{r.jobs} | {r.nodes / max(r.jobs, 1):.1f} | {r.makespan_s:.0f} | "
              f"{r.vcpu_h:.2f} | {r.host_vcpu_h:.2f} | {bound:.0f} | "
              f"{r.makespan_s / bound:.2f}x | {r.makespan_s / base:.2f}x |"
              + (f" {r.pool_wait_s:.1f} |" if pool else "") + f" {r.real_s:.0f} |")


def true_history() -> list[NodeHistory]:
    """The run history a first run would leave: every node's own runtime."""
    runtimes = {name: seconds for name, (seconds, _) in STEPS.items()}
    runtimes[MAPNODE[0]] = VOLUME_S
    runtimes["group_summary"] = GROUP_S
    return [NodeHistory(f"fmriprep_shaped.{name}", "nipype.interfaces.utility.Function", 1,
                        seconds, seconds, 0.0, 0.0) for name, seconds in runtimes.items()]


def dmri_history() -> list[NodeHistory]:
    """The DIPY study's runtimes from the run history of this machine's earlier runs."""
    found = [h for h in RunHistory().nodes() if h.node.startswith("dmri.")]
    if not found:
        sys.exit("bench/packing.py --workflow dmri plays runtimes measured by a real run: run "
                 "the example first, as the README's first command does (python3 "
                 "examples/dmri_workflow/run.py BIDS_DIR OUT_DIR participant); "
                 "bench/dmri_makespan.py keeps a run history of its own")
    return found


def workflow_for(args: argparse.Namespace, base_dir: str) -> tuple[Any, list[NodeHistory]]:
    """The workflow to play and the history its runtimes come from."""
    if args.workflow == "dmri":
        from examples.dmri_workflow.workflow import build_workflow

        labels = [f"{i:02d}" for i in range(1, args.subjects + 1)]
        os.makedirs(f"{base_dir}/bids")  # SelectFiles wants it to exist; nothing is read
        return (build_workflow(f"{base_dir}/bids", f"{base_dir}/out", labels, base_dir),
                dmri_history())
    return fmriprep_shaped(args.subjects, base_dir), true_history()


def planned_bound_s(planned: PlannedRun, profile: LatencyProfile) -> float:
    """:func:`lower_bound_s` of any planned run: its critical path of node runtimes (a
    MapNode's subnodes side by side) plus one job's waiting and the cold start, or the cold
    start and all its node time over the queue's vCPUs."""
    own = {r.key: planned.maps[r.key].subnode_s if r.key in planned.maps else r.runtime_s
           for r in planned.records}
    total = sum(planned.maps[r.key].count * planned.maps[r.key].subnode_s * r.vcpus
                if r.key in planned.maps else r.runtime_s * r.vcpus for r in planned.records)
    finish: dict[str, float] = {}
    for record in _in_order(planned.records):
        finish[record.key] = own[record.key] + max((finish[p] for p in record.after),
                                                   default=0.0)
    path = max(finish.values()) + profile.job_overhead_s() + profile.cold_start_s()
    spread = total / profile.max_vcpus if profile.max_vcpus else 0.0
    return max(path, profile.cold_start_s() + spread)


def _in_order(records: list[PlanNode]) -> list[PlanNode]:
    by_key = {r.key: r for r in records}
    order = graphlib.TopologicalSorter({r.key: r.after for r in records}).static_order()
    return [by_key[k] for k in order]


def play_back(mode: str, args: argparse.Namespace, profile: LatencyProfile) -> Row:
    """One run played in virtual time (median makespan of the seeds)."""
    settings = BatchSettings(packing=mode, pack_target_s=args.pack_target_s)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="nipype-batch-packing-") as tmp:
        wf, history = workflow_for(args, f"{tmp}/work")
        planned = plan_run(wf, settings, history, profile.job_overhead_s() + settings.poll_min_s)
    runs = [play(planned.records, planned.plan, profile.with_seed(seed), maps=planned.maps,
                 poll_s=settings.poll_min_s) for seed in range(args.seeds)]
    run = sorted(runs, key=lambda r: r.makespan_s)[len(runs) // 2]
    real_s = time.monotonic() - started
    nodes = sum(planned.maps[r.key].count if r.key in planned.maps else 1
                for r in planned.records if not r.on_driver)
    return Row(mode, profile.max_vcpus, nodes, len(run.jobs), run.submit_calls,
               run.makespan_s, run.vcpu_s / 3600, run.host_vcpu_s / 3600, 0.0, real_s, 0.0,
               planned_bound_s(planned, profile))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=10,
                        help="subjects (each 40 nodes and 200 subnodes); 10 take ~2 min real "
                        "per mode, 100 ~15 min or more")
    parser.add_argument("--time-scale", type=float, default=0.1,
                        help="real seconds per simulated second")
    parser.add_argument("--workers", type=int, default=64,
                        help="worker processes running the jobs (they mostly sleep)")
    parser.add_argument("--profile", default="aws-ec2", choices=sorted(PROFILES))
    parser.add_argument("--engine", default="driver", choices=["driver", "playback"],
                        help="run the plugin on the simulated Batch, or play its plan back")
    parser.add_argument("--max-vcpus", type=int, nargs="+",
                        help="queue sizes (maxvCpus) to play; default the profile's")
    parser.add_argument("--workflow", default="fmriprep", choices=["fmriprep", "dmri"],
                        help="playback: the synthetic workflow, or the DIPY study with the "
                        "runtimes its earlier runs left in the run history")
    parser.add_argument("--pack-target-s", type=float,
                        default=BatchSettings.__dataclass_fields__["pack_target_s"].default,
                        help="the planner's pack_target_s (playback engine)")
    parser.add_argument("--seeds", type=int, default=3,
                        help="playback: seeds of the profile's delays (median shown)")
    parser.add_argument("--timeline", metavar="PREFIX",
                        help="write each job's state changes to PREFIX.<mode>.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("nipype.workflow").setLevel(logging.WARNING)
    profile = PROFILES[args.profile]

    if args.engine == "playback":
        rows = []
        for max_vcpus in args.max_vcpus or [profile.max_vcpus]:
            sized = replace(profile, max_vcpus=max_vcpus)
            rows += [play_back(mode, args, sized) for mode in ("off", "auto")]
        name = "DIPY study" if args.workflow == "dmri" else "fMRIPrep-shaped workflow"
        print(f"\n{name}, {args.subjects} subjects, profile {profile.name} "
              f"(job overhead {profile.job_overhead_s():.0f} s, cold start "
              f"{profile.cold_start_s():.0f} s), played back (median of {args.seeds} seeds). "
              "Simulated seconds.\n")
        _table(rows, args.subjects, profile, pool=False)
        return 0
    if "packing" in BatchSettings.__dataclass_fields__:
        modes: list[str | None] = ["off", "auto"]
    else:
        modes = [None]
        print("note: this nipype-batch has no 'packing' plugin argument yet: timing 'off' only")
    rows = []
    # A history of its own: 'off' runs first and measures every node, as a first run of a
    # study would; 'auto' then plans from it.
    history = tempfile.mkdtemp(prefix="nipype-batch-history-")
    os.environ["NIPYPE_BATCH_HISTORY"] = os.path.join(history, "history.sqlite")
    if args.max_vcpus:
        profile = replace(profile, max_vcpus=args.max_vcpus[0])
    for mode in modes:
        rows.append(run(mode, args, profile))
        print(f"packing={rows[-1].mode}: {rows[-1].real_s:.0f} s real, CPU load "
              f"{rows[-1].cpu_load:.0%}", file=sys.stderr)

    print(f"\nfMRIPrep-shaped workflow, {args.subjects} subjects, profile {profile.name} "
          f"(job overhead {profile.job_overhead_s():.0f} s, cold start "
          f"{profile.cold_start_s():.0f} s), time scale 1/{1 / args.time_scale:.0f}, "
          f"{args.workers} workers. Simulated seconds.\n")
    _table(rows, args.subjects, profile, pool=True)
    if max(r.cpu_load for r in rows) > 0.7:
        print(f"\nwarning: the machine's CPUs were {max(r.cpu_load for r in rows):.0%} busy: "
              "real CPU work, scaled up, inflates the simulated times. Give a larger "
              "--time-scale or fewer --subjects.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
