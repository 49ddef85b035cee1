"""Bytes moved through S3 for a run, against the bytes its nodes really read and wrote.

Runs the demo workflow (examples/demo) on the local stack twice: a first run and a rerun.
Moved: what the driver uploaded and downloaded (its Stager counters) plus what each job
staged in and out (recorded by the runner in the node's _nipype_batch.json). Needed: the
sizes of the files each node's inputs name plus the files in its node directory, from a
Linear run of the same workflow (the baseline, measured in the same run).

    python bench/s3_bytes.py [--subjects 4] [--fetch-outputs]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import nipype_batch  # noqa: E402, F401
from examples.demo.workflow import build_workflow, make_inputs  # noqa: E402
from nipype_batch import BatchPlugin  # noqa: E402
from nipype_batch.aws.staging import find_paths  # noqa: E402


def node_bytes(work: Path) -> int:
    """Bytes each node read (files its inputs name) and wrote (its directory), summed."""
    from nipype.utils.filemanip import loadpkl

    total = 0
    for inputs_file in work.rglob("_inputs.pklz"):
        node_dir = inputs_file.parent
        for path in find_paths(loadpkl(str(inputs_file))):
            if os.path.isfile(path):
                total += os.path.getsize(path)
        total += sum(p.stat().st_size for p in node_dir.rglob("*") if p.is_file())
    return total


def moved_by_jobs(work: Path) -> tuple[int, int]:
    """(bytes in, bytes out) the runners recorded."""
    down = up = 0
    for record in work.rglob("_nipype_batch.json"):
        runner = json.loads(record.read_text()).get("runner", {})
        down += runner.get("bytes_staged_in", 0)
        up += runner.get("bytes_to_stage_out", 0)
    return down, up


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--fetch-outputs", action="store_true",
                        help="download every output to the driver (the local default)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("nipype.workflow").setLevel(logging.WARNING)
    subjects = [f"{i:02d}" for i in range(1, args.subjects + 1)]
    plugin_args = {"backend": "local", "fetch_outputs": args.fetch_outputs}
    rows = []
    with tempfile.TemporaryDirectory(prefix="nipype-batch-bytes-") as tmp:
        root = Path(tmp)
        data = make_inputs(str(root / "data"), subjects)
        build_workflow(str(root / "linear"), data, str(root / "lin-out"), subjects).run(
            plugin="Linear")
        needed = node_bytes(root / "linear")
        for label in ("first run", "rerun (all cached)"):
            plugin = BatchPlugin(plugin_args)
            before = moved_by_jobs(root / "batch")
            build_workflow(str(root / "batch"), data, str(root / "out"), subjects).run(
                plugin=plugin)
            after = moved_by_jobs(root / "batch")
            stager = plugin.cloud.stager
            rows.append((label, stager.bytes_up, stager.bytes_down,
                         after[0] - before[0], after[1] - before[1]))
    print(f"\nS3 bytes, demo workflow, {args.subjects} subjects, fetch_outputs="
          f"{args.fetch_outputs}; nodes read and wrote {needed:,} bytes (Linear baseline)\n")
    print("| run | driver up | driver down | jobs in | jobs out | total moved | vs needed |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, up, down, job_in, job_out in rows:
        total = up + down + job_in + job_out
        print(f"| {label} | {up:,} | {down:,} | {job_in:,} | {job_out:,} | {total:,} | "
              f"{total / needed:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
