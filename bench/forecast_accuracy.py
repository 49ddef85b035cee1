"""A forecast against the run it forecasts: the DIPY study on the local stack, real containers.

Runs the study for a few subjects (packing 'auto', which fills the run history), forecasts
it for more (``nipype_batch.forecast(wf, plugin_args)``: the local stack's latency profile,
this machine's vCPUs, the runner's time as the history measured it), then runs it for that
many and prints jobs and makespan, forecast against actual. The makespan is wf.run's wall
time; the forecast plays the jobs only (the driver's own start, a few seconds, is not in it).

    python bench/forecast_accuracy.py [--first 2] [--subjects 8] [--size 64 64 30]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import nipype_batch  # noqa: F401  registers plugin='AWSBatch'
from examples.dmri_workflow.make_data import make_dataset
from examples.dmri_workflow.workflow import PACKAGES, build_workflow
from nipype_batch import BatchPlugin, build_images, forecast


def _subjects(n: int) -> list[str]:
    return [f"{i:02d}" for i in range(1, n + 1)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--first", type=int, default=2, help="subjects run to fill the history")
    parser.add_argument("--subjects", type=int, nargs="+", default=[8],
                        help="subject counts forecast, then run")
    parser.add_argument("--size", type=int, nargs=3, default=[64, 64, 30],
                        metavar=("X", "Y", "Z"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("nipype.workflow").setLevel(logging.WARNING)
    batch_args = {"backend": "local", "packages": PACKAGES, "report": False,
                  "progress": False}
    rows = []
    with tempfile.TemporaryDirectory(prefix="nipype-batch-forecast-bench-") as tmp:
        root = Path(tmp)
        os.environ["NIPYPE_BATCH_HISTORY"] = str(root / "history.sqlite")  # this run's own
        make_dataset(root / "bids", max([args.first, *args.subjects]), tuple(args.size), seed=0)
        build_images(build_workflow(str(root / "bids"), str(root / "warm-out"), ["01"],
                                    str(root / "warm")), batch_args)

        def run(n: int, label: str) -> tuple[float, int]:
            wf = build_workflow(str(root / "bids"), str(root / f"out-{label}"), _subjects(n),
                                str(root / f"work-{label}"))
            plugin = BatchPlugin(batch_args)
            started = time.perf_counter()
            wf.run(plugin=plugin)
            return time.perf_counter() - started, len(plugin.submitted_job_ids)

        first_s, first_jobs = run(args.first, "first")
        print(f"{args.first} subjects run: {first_s:.1f} s, {first_jobs} jobs", flush=True)
        for n in args.subjects:
            started = time.perf_counter()
            wf = build_workflow(str(root / "bids"), str(root / f"out-f{n}"),
                                _subjects(args.first), str(root / f"work-f{n}"))
            predicted = forecast(wf, batch_args, subjects=n)
            forecast_s = time.perf_counter() - started
            actual_s, jobs = run(n, f"run{n}")
            low, mid, high = predicted.makespan_s
            rows.append((n, predicted.jobs, jobs, low, mid, high, actual_s, forecast_s))
            print(f"{n} subjects: forecast {predicted.jobs} jobs {mid:.1f} s, ran {jobs} jobs "
                  f"{actual_s:.1f} s", flush=True)
        runner = predicted.runner
    print(f"\nDIPY study, {'x'.join(map(str, args.size))} voxels, local stack; history from "
          f"{args.first} subjects ({first_jobs} jobs, {first_s:.1f} s)"
          + (f"; runner measured {runner.setup_s:.2f} s per job, {runner.handoff_s:.2f} s per "
             f"node" if runner else "") + ".\n")
    print("| subjects | jobs forecast | jobs run | makespan forecast s (range) | makespan run s "
          "| forecast / run | forecast took s |")
    print("|---|---|---|---|---|---|---|")
    for n, fjobs, jobs, low, mid, high, actual, took in rows:
        print(f"| {n} | {fjobs} | {jobs} | {mid:.1f} ({low:.1f}-{high:.1f}) | {actual:.1f} | "
              f"{mid / actual:.2f} | {took:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
