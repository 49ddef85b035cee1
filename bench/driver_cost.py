"""Driver CPU time and peak memory per 1,000 jobs, at 1,000 and 10,000 jobs.

Each measurement runs in a fresh process (so peak memory is its own): a MapNode of N subnodes
on the simulated Batch (jobs run the real runner in 2 worker processes, without containers;
objects in a directory-backed S3). The driver's CPU is its process time; the workers' is not
in it. The directory S3 skips botocore, so the S3 requests the driver makes are measured
separately against the emulator and their botocore cost added back (column "+ S3 requests").
Baseline in the same run: Nipype's Linear plugin running the same nodes in process.

    python bench/driver_cost.py [--sizes 1000 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def measure(mode: str, n: int) -> dict:
    """In this process: run one configuration; return CPU, wall, peak RSS and S3 calls."""
    import logging

    from examples.scale.workflows import mapnode_workflow

    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("nipype.workflow").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="nipype-batch-cost-") as tmp:
        wf = mapnode_workflow(f"{tmp}/work", n)
        if mode == "linear":
            cpu, wall = time.process_time(), time.perf_counter()
            wf.run(plugin="Linear")
            s3_calls = 0
        else:
            from nipype_batch.simulated import SimulatedStack

            stack = SimulatedStack(workers=2, s3_directory=f"{tmp}/s3")
            try:
                plugin = stack.plugin({"fetch_outputs": False})
                cpu, wall = time.process_time(), time.perf_counter()
                wf.run(plugin=plugin)
                s3_calls = sum(v for k, v in stack.cloud.api_calls.counts.items()
                               if k.startswith("s3."))
            finally:
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                stack.stop()
            return {"cpu_s": cpu, "wall_s": wall, "rss_mb": _peak_mb(), "s3_calls": s3_calls}
        return {"cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall,
                "rss_mb": _peak_mb(), "s3_calls": s3_calls}


def botocore_cpu_per_s3_call(calls: int = 300) -> float:
    """Driver CPU seconds of one small PutObject or GetObject through botocore (emulator S3)."""
    import boto3

    from nipype_batch.local.stack import THROWAWAY_KEY, start_emulator

    emulator = start_emulator()
    try:
        s3 = boto3.Session(aws_access_key_id=THROWAWAY_KEY, aws_secret_access_key=THROWAWAY_KEY,
                           region_name="us-east-1").client(
            "s3", endpoint_url=f"http://127.0.0.1:{emulator.port}")
        s3.create_bucket(Bucket="bench")
        s3.put_object(Bucket="bench", Key="warm", Body=b"x")
        started = time.process_time()
        for i in range(calls // 2):
            s3.put_object(Bucket="bench", Key=f"k{i}", Body=b"x" * 2048)
            s3.get_object(Bucket="bench", Key=f"k{i}")["Body"].read()
        return (time.process_time() - started) / calls
    finally:
        emulator.stop()


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--one", nargs=2, metavar=("MODE", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one[0], int(args.one[1]))))
        return 0

    def child(mode: str, n: int) -> dict:
        out = subprocess.run([sys.executable, __file__, "--one", mode, str(n)], check=True,
                             capture_output=True, text=True, env={**os.environ})
        return json.loads(out.stdout.strip().splitlines()[-1])

    per_call = botocore_cpu_per_s3_call()
    base = child("linear", args.sizes[0])
    rows = [(f"Linear, {args.sizes[0]} nodes in process (baseline)", args.sizes[0], base, 0.0)]
    for n in args.sizes:
        got = child("batch", n)
        rows.append((f"AWSBatch driver, {n}-way MapNode", n, got, got["s3_calls"] * per_call))
    base_cpu = base["cpu_s"] / args.sizes[0] * 1000
    print(f"\nDriver cost on the simulated Batch (botocore: {per_call * 1000:.2f} ms CPU per S3 "
          "request, measured against the emulator)\n")
    print("| run | jobs | wall s | driver CPU s | CPU s per 1,000 jobs | + S3 requests | "
          "vs Linear | peak RSS MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, n, got, s3_cpu in rows:
        per_1000 = (got["cpu_s"] + s3_cpu) / n * 1000
        print(f"| {name} | {n} | {got['wall_s']:.1f} | {got['cpu_s']:.1f} | "
              f"{got['cpu_s'] / n * 1000:.2f} | {per_1000:.2f} | {per_1000 / base_cpu:.1f}x | "
              f"{got['rss_mb']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
