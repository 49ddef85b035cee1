"""Makespan of the DIPY study (examples/dmri_workflow): AWSBatch on the local stack against
MultiProc on this machine, in the same process, on the same synthetic data.

For each subject count: a MultiProc run (the baseline), then AWSBatch with packing 'off' and
'auto', each on a fresh work directory; the job image is built (or found) before timing, as a
warm run would find it. Prints the makespans with ratios against MultiProc and 'off', then
per-stage times: each node's own run time (from its Nipype result) and, for jobs, the Batch
timings from ``_nipype_batch.json``.

    python bench/dmri_makespan.py [--subjects 4 16] [--size 64 64 30] [--n-procs 2] [--poll 2]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import nipype_batch  # noqa: F401  registers plugin='AWSBatch'
from examples.dmri_workflow.make_data import make_dataset
from examples.dmri_workflow.workflow import PACKAGES, build_workflow
from nipype_batch import BatchPlugin, build_images

STAGES = ("brain_mask", "denoise", "tensor", "group")


@dataclass
class Run:
    """One timed run and what its node directories recorded."""

    plugin: str
    subjects: int
    makespan_s: float
    node_s: dict[str, list[float]] = field(default_factory=dict)   # stage -> run times
    job_s: dict[str, list[float]] = field(default_factory=dict)    # stage -> job start-to-stop
    wait_s: dict[str, list[float]] = field(default_factory=dict)   # stage -> submit-to-start
    jobs: int = 0  # jobs submitted (AWSBatch)


def stage_times(run: Run, work: Path) -> None:
    """Fill ``run`` from the node directories of the workflow under ``work``."""
    from nipype.utils.filemanip import loadpkl

    for stage in STAGES:
        for result in sorted(work.glob(f"dmri/**/{stage}/result_{stage}.pklz")):
            run.node_s.setdefault(stage, []).append(float(loadpkl(result).runtime.duration))
            record = result.parent / "_nipype_batch.json"
            if record.exists():
                job = json.loads(record.read_text())["job"]
                run.job_s.setdefault(stage, []).append(
                    (job["stopped_at_ms"] - job["started_at_ms"]) / 1000.0)
                run.wait_s.setdefault(stage, []).append(
                    (job["started_at_ms"] - job["submitted_at_ms"]) / 1000.0)


def timed_run(root: Path, data: Path, subjects: list[str], plugin, plugin_args: dict | None,
              label: str, denoise: str) -> Run:
    wf = build_workflow(str(data), str(root / "out"), subjects, str(root / "work"),
                        denoise_method=denoise)
    started = time.perf_counter()
    wf.run(plugin=plugin, plugin_args=plugin_args)
    run = Run(label, len(subjects), time.perf_counter() - started)
    stage_times(run, root / "work")
    return run


def _mean(values: list[float] | None) -> str:
    return f"{statistics.mean(values):.2f}" if values else "-"


def print_tables(runs: list[Run], image: str, args: argparse.Namespace) -> None:
    size = "x".join(map(str, args.size))
    jobs = f", AWSBatch max_jobs {args.max_jobs}" if args.max_jobs else ""
    print(f"\nDIPY study ({args.denoise}), {size} voxels x 37 volumes per subject, poll "
          f"{args.poll} s{jobs}. {image}\n")
    print(f"| subjects | MultiProc(n_procs={args.n_procs}) s | AWSBatch packing='off' s (jobs) "
          "| AWSBatch packing='auto' s (jobs) | off / MultiProc | auto / off |")
    print("|---|---|---|---|---|---|")
    for n in args.subjects:
        base, off, auto = (next(r for r in runs if r.subjects == n and r.plugin == name)
                           for name in ("MultiProc", "AWSBatch off", "AWSBatch auto"))
        print(f"| {n} | {base.makespan_s:.1f} | {off.makespan_s:.1f} ({off.jobs}) | "
              f"{auto.makespan_s:.1f} ({auto.jobs}) | {off.makespan_s / base.makespan_s:.2f}x | "
              f"{auto.makespan_s / off.makespan_s:.2f}x |")
    print("\nPer stage, mean per node: the node's own run time (Nipype result) under each "
          "plugin; for\nAWSBatch also the job's start-to-stop and submit-to-start (Batch "
          "timestamps; the local\nstack stamps startedAt when a job gets its vCPUs, before its "
          "container starts, so container\nstart-up is inside start-to-stop).\n")
    print("| subjects | stage | MultiProc run s | AWSBatch off run s | job start-stop s "
          "| job submit-start s |")
    print("|---|---|---|---|---|---|")
    for n in args.subjects:
        base = next(r for r in runs if r.subjects == n and r.plugin == "MultiProc")
        batch = next(r for r in runs if r.subjects == n and r.plugin == "AWSBatch off")
        for stage in STAGES:
            print(f"| {n} | {stage} | {_mean(base.node_s.get(stage))} | "
                  f"{_mean(batch.node_s.get(stage))} | {_mean(batch.job_s.get(stage))} | "
                  f"{_mean(batch.wait_s.get(stage))} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, nargs="+", default=[4, 16],
                        help="subject counts to time (one pair of runs each)")
    parser.add_argument("--size", type=int, nargs=3, default=[64, 64, 30], metavar=("X", "Y", "Z"))
    parser.add_argument("--n-procs", type=int, default=2, help="MultiProc's processes")
    parser.add_argument("--poll", type=float, default=2.0,
                        help="Nipype's execution.poll_sleep_duration (its default is 2 s)")
    parser.add_argument("--denoise", default="nlmeans", choices=["nlmeans", "mppca", "none"])
    parser.add_argument("--max-jobs", type=int,
                        help="AWSBatch's max_jobs (the local stack runs every job at once)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("nipype.workflow").setLevel(logging.WARNING)
    from nipype import config

    config.set("execution", "poll_sleep_duration", str(args.poll))
    batch_args = {"backend": "local", "packages": PACKAGES}
    if args.max_jobs:
        batch_args["max_jobs"] = args.max_jobs
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="nipype-batch-dmri-bench-") as tmp:
        root = Path(tmp)
        os.environ["NIPYPE_BATCH_HISTORY"] = str(root / "history.sqlite")  # this run's own
        started = time.perf_counter()
        make_dataset(root / "bids", max(args.subjects), tuple(args.size), seed=0)
        data_s = time.perf_counter() - started

        started = time.perf_counter()
        images = build_images(build_workflow(str(root / "bids"), str(root / "warm-out"), ["01"],
                                             str(root / "warm")), batch_args)
        image_s = time.perf_counter() - started
        built = any(i.built for i in images)
        image = (f"Job image {'built and pushed' if built else 'already published'} in "
                 f"{image_s:.1f} s before timing; data made in {data_s:.1f} s.")

        for n in args.subjects:
            subjects = [f"{i:02d}" for i in range(1, n + 1)]
            runs.append(timed_run(root / f"mp{n}", root / "bids", subjects, "MultiProc",
                                  {"n_procs": args.n_procs}, "MultiProc", args.denoise))
            # 'off' first: its jobs measure every node into the run history, which 'auto'
            # then plans from, as a study's second run would
            for mode in ("off", "auto"):
                plugin = BatchPlugin({**batch_args, "packing": mode})
                runs.append(timed_run(root / f"batch{n}{mode}", root / "bids", subjects,
                                      plugin, None, f"AWSBatch {mode}", args.denoise))
                runs[-1].jobs = len(plugin.submitted_job_ids)
            print(f"{n} subjects: MultiProc {runs[-3].makespan_s:.1f} s, AWSBatch off "
                  f"{runs[-2].makespan_s:.1f} s, auto {runs[-1].makespan_s:.1f} s", flush=True)
    print_tables(runs, image, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
