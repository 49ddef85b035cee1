"""Makespan of the demo workflow: Linear and MultiProc against AWSBatch on the local stack.

Runs all three in one process on fresh work directories (the job image is built and published
before timing, as a warm run would find it) and prints a table with ratios against Linear, then
the AWS API calls the AWSBatch run made, by kind.

    python bench/core_makespan.py [--subjects 4] [--poll 2.0]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import nipype_batch  # noqa: F401
from examples.demo.workflow import build_workflow, make_inputs
from nipype_batch import BatchPlugin, build_images


def timed_run(root: Path, data: str, subjects: list[str], plugin, plugin_args=None) -> float:
    wf = build_workflow(str(root / "work"), data, str(root / "out"), subjects=subjects)
    started = time.perf_counter()
    wf.run(plugin=plugin, plugin_args=plugin_args)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--poll", type=float, default=2.0,
                        help="Nipype's execution.poll_sleep_duration (its default is 2 s)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from nipype import config

    config.set("execution", "poll_sleep_duration", str(args.poll))
    subjects = [f"{i:02d}" for i in range(1, args.subjects + 1)]
    with tempfile.TemporaryDirectory(prefix="nipype-batch-bench-") as tmp:
        root = Path(tmp)
        data = make_inputs(str(root / "data"), subjects)
        started = time.perf_counter()
        build_images(build_workflow(str(root / "warm"), data, str(root / "warm-out")),
                     {"backend": "local"})
        image_s = time.perf_counter() - started

        rows = [("Linear", timed_run(root / "linear", data, subjects, "Linear"))]
        rows.append(("MultiProc(n_procs=2)", timed_run(root / "mp", data, subjects, "MultiProc",
                                                       {"n_procs": 2})))
        batch = BatchPlugin({"backend": "local"})
        rows.append(("AWSBatch (local stack)", timed_run(root / "batch", data, subjects, batch)))
        rerun = BatchPlugin({"backend": "local"})
        rows.append(("AWSBatch rerun (all cached)",
                     timed_run(root / "batch", data, subjects, rerun)))

    base = rows[0][1]
    print(f"\nDemo workflow, {args.subjects} subjects, poll {args.poll} s "
          f"(image ready in {image_s:.1f} s before timing)\n")
    print(f"| {'plugin':<28} | {'makespan s':>10} | {'vs Linear':>9} |")
    print(f"|{'-' * 30}|{'-' * 12}|{'-' * 11}|")
    for name, seconds in rows:
        print(f"| {name:<28} | {seconds:>10.2f} | {seconds / base:>8.2f}x |")
    print(f"\nJobs submitted: {len(batch.submitted_job_ids)} (rerun: "
          f"{len(rerun.submitted_job_ids)})\n")
    print("| AWS API call (AWSBatch run)        | count |")
    print("|------------------------------------|-------|")
    for name, count in sorted(batch.cloud.api_calls.counts.items()):
        print(f"| {name:<34} | {count:>5} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
