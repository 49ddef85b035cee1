"""How long a forecast takes: the fMRIPrep-shaped workflow at growing subject counts.

Plans and plays each (nipype_batch.forecast, 5 seeds and one what-if replay) with the
workflow's true runtimes as its run history, on the AWS EC2 profile and 64 vCPUs, and prints
the forecast's own wall time against the smallest count's.

    python bench/forecast.py [--subjects 10 100 1000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.packing import true_history
from examples.scale.fmriprep_shaped import fmriprep_shaped
from nipype_batch.forecasting import forecast as forecasting

AWS = {"backend": "aws", "job_queue": "q", "bucket": "s3://b/p", "region": "us-east-1"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, nargs="+", default=[10, 100, 1000])
    args = parser.parse_args(argv)
    os.environ["NIPYPE_BATCH_HISTORY"] = os.path.join(tempfile.mkdtemp(), "history.sqlite")
    forecasting.run_history = true_history  # a study whose every step has been measured
    rows = []
    for subjects in args.subjects:
        with tempfile.TemporaryDirectory() as tmp:
            started = time.monotonic()
            result = forecasting.forecast(fmriprep_shaped(2, tmp), AWS, subjects=subjects)
            rows.append((subjects, result, time.monotonic() - started))
    base = rows[0][2]
    print("| subjects | nodes planned | jobs | forecast makespan | forecast s | vs first |")
    print("|---:|---:|---:|---:|---:|---:|")
    for subjects, result, seconds in rows:
        print(f"| {subjects} | {subjects * 240 + 1} | {result.jobs} | "
              f"{result.makespan_s[1] / 3600:.2f} h | {seconds:.1f} | {seconds / base:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
