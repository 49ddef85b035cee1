"""Plugin overhead: 50 trivial independent nodes through AWSBatch, against the same 50 jobs
submitted directly with boto3, on the same local stack (real containers).

The plugin's run goes first and leaves its job payloads in S3; the baseline resubmits exactly
those jobs (same job definition, resources and environment, so the same container work) with
plain SubmitJob calls and waits for them with one DescribeJobs per 0.5 s, as a hand-written
script would. The ratio is the cost of everything the plugin adds: staging, payloads,
collecting results into the Nipype graph. Goal: <= 1.10x.

    python bench/plugin_overhead.py [--n 50] [--repeat 2]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import nipype_batch  # noqa: E402, F401
from examples.scale.workflows import independent_workflow  # noqa: E402
from nipype_batch import BatchPlugin, build_images  # noqa: E402


def direct_run(plugin: BatchPlugin) -> float:
    """Resubmit the plugin's jobs as they were, with boto3 only; return the makespan."""
    batch = plugin.cloud.batch.batch
    described = []
    for start in range(0, len(plugin.submitted_job_ids), 100):
        described += batch.describe_jobs(jobs=plugin.submitted_job_ids[start:start + 100])["jobs"]
    started = time.perf_counter()
    ids = []
    for job in described:
        container = job["container"]
        ids.append(batch.submit_job(
            jobName=job["jobName"], jobQueue=job["jobQueue"], jobDefinition=job["jobDefinition"],
            containerOverrides={"environment": container["environment"],
                                "resourceRequirements": container["resourceRequirements"]},
        )["jobId"])
    waiting = set(ids)
    while waiting:
        time.sleep(0.5)
        found = []
        for start in range(0, len(ids), 100):
            found += batch.describe_jobs(jobs=ids[start:start + 100])["jobs"]
        waiting = {j["jobId"] for j in found if j["status"] not in ("SUCCEEDED", "FAILED")}
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("nipype.workflow").setLevel(logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory(prefix="nipype-batch-overhead-") as tmp:
        build_images(independent_workflow(f"{tmp}/warm", 2), {"backend": "local"})
        for attempt in range(args.repeat):
            plugin = BatchPlugin({"backend": "local", "fetch_outputs": False})
            started = time.perf_counter()
            independent_workflow(f"{tmp}/run{attempt}", args.n).run(plugin=plugin)
            through_plugin = time.perf_counter() - started
            rows.append((through_plugin, direct_run(plugin)))
    print(f"\n{args.n} trivial independent nodes on the local stack (2 vCPUs, real containers)\n")
    print("| run | direct boto3 s (baseline) | AWSBatch plugin s | ratio |")
    print("|---|---:|---:|---:|")
    for i, (plugin_s, direct_s) in enumerate(rows, 1):
        print(f"| {i} | {direct_s:.1f} | {plugin_s:.1f} | {plugin_s / direct_s:.2f}x |")
    total_p, total_d = sum(r[0] for r in rows), sum(r[1] for r in rows)
    print(f"| all | {total_d:.1f} | {total_p:.1f} | {total_p / total_d:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
