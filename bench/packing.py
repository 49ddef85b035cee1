"""Makespan and billed vCPU-hours of many short nodes on AWS Batch, with and without packing.

Runs the fMRIPrep-shaped synthetic workflow (examples/scale/fmriprep_shaped.py: 40 sleeping
nodes and a MapNode of 200 one-second subnodes per subject, a JoinNode across subjects) on the
simulated Batch with a latency profile (default AWS_EC2: jobs wait tens of seconds, the first
ones minutes for hosts to launch), played on a scaled clock, once per packing mode, and
prints a table with ratios against the analytic lower bound and against packing='off'.

    python bench/packing.py [--subjects 10] [--time-scale 0.1] [--workers 64]

Times are simulated seconds (real seconds / time scale). Real CPU work (the driver, and each
job's staging in its worker) counts 1 / time-scale times over, so makespans are pessimistic by
that much; "pool wait" is how long jobs waited for a free worker process, which real Batch
does not have: if it is not small against the makespan, give more --workers.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from examples.scale.fmriprep_shaped import (
    critical_path_s,
    fmriprep_shaped,
    node_count,
    total_node_s,
)
from nipype_batch.latency import PROFILES, LatencyProfile
from nipype_batch.settings import BatchSettings
from nipype_batch.simulated import SimulatedStack


@dataclass
class Row:
    """One run's figures."""

    mode: str
    nodes: int
    jobs: int
    submit_calls: int
    makespan_s: float  # simulated
    vcpu_h: float  # jobs' startedAt..stoppedAt x vCPUs
    host_vcpu_h: float  # hosts' launch..end of run x vCPUs (what EC2 bills)
    pool_wait_s: float  # mean wait for a worker process (a simulation artefact)
    real_s: float
    cpu_load: float  # CPU seconds used per real second and core, start-up included


def _cpu_s() -> float:
    """CPU seconds of this process and of its reaped children (the workers, once stopped)."""
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                  resource.getrusage(resource.RUSAGE_CHILDREN)))


def lower_bound_s(subjects: int, profile: LatencyProfile) -> float:
    """No schedule beats the critical path plus one job's waiting and the cold start, nor
    the total node time spread over the queue's vCPUs."""
    path = critical_path_s() + profile.job_overhead_s() + profile.cold_start_s()
    spread = total_node_s(subjects) / profile.max_vcpus if profile.max_vcpus else 0.0
    return max(path, spread)


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
            row = Row(mode or "off", node_count(args.subjects), len(plugin.submitted_job_ids),
                      stack.cloud.api_calls.counts.get("batch.SubmitJob", 0), real_s / scale,
                      vcpu_s / 3600, host_s / 3600, statistics.mean(waits) if waits else 0.0,
                      real_s, 0.0)
        finally:
            stack.stop()
    wall = time.monotonic() - wall_before
    row.cpu_load = (_cpu_s() - cpu_before) / (wall * (os.cpu_count() or 1))
    return row


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
    parser.add_argument("--timeline", metavar="PREFIX",
                        help="write each job's state changes to PREFIX.<mode>.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("nipype.workflow").setLevel(logging.WARNING)
    profile = PROFILES[args.profile]

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
    for mode in modes:
        rows.append(run(mode, args, profile))
        print(f"packing={rows[-1].mode}: {rows[-1].real_s:.0f} s real, CPU load "
              f"{rows[-1].cpu_load:.0%}", file=sys.stderr)

    bound = lower_bound_s(args.subjects, profile)
    base = rows[0].makespan_s
    print(f"\nfMRIPrep-shaped workflow, {args.subjects} subjects, profile {profile.name} "
          f"(job overhead {profile.job_overhead_s():.0f} s, cold start "
          f"{profile.cold_start_s():.0f} s, {profile.max_vcpus} vCPUs), time scale "
          f"1/{1 / args.time_scale:.0f}, {args.workers} workers. Simulated seconds.\n")
    print("| packing | nodes | jobs | SubmitJob calls | nodes/job | makespan s | vCPU-h (jobs) "
          "| vCPU-h (hosts) | lower bound s | makespan/bound | vs off | pool wait s | real s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r.mode} | {r.nodes} | {r.jobs} | {r.submit_calls} | "
              f"{r.nodes / max(r.jobs, 1):.1f} | {r.makespan_s:.0f} | {r.vcpu_h:.2f} | "
              f"{r.host_vcpu_h:.2f} | {bound:.0f} | {r.makespan_s / bound:.2f}x | "
              f"{r.makespan_s / base:.2f}x | {r.pool_wait_s:.1f} | {r.real_s:.0f} |")
    if max(r.cpu_load for r in rows) > 0.7:
        print(f"\nwarning: the machine's CPUs were {max(r.cpu_load for r in rows):.0%} busy: "
              "real CPU work, scaled up, inflates the simulated times. Give a larger "
              "--time-scale or fewer --subjects.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
