"""AWS API calls by kind: a 1,000-way MapNode against 1,000 independent nodes.

Both run against the simulated Batch (jobs run the real runner in worker processes, no
containers; see nipype_batch/local/simulated_batch.py), with objects in a directory-backed S3,
and every call is counted with botocore's event hooks. The independent nodes are the baseline:
one plain job each. Prints a markdown table.

    python bench/api_calls.py [--n 1000]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from examples.scale.workflows import independent_workflow, mapnode_workflow
from nipype_batch.simulated import SimulatedStack


def counted_run(build, n: int) -> tuple[dict[str, int], float, int]:
    """Run one workflow on a fresh simulated stack; return (calls, seconds, polls)."""
    with tempfile.TemporaryDirectory(prefix="nipype-batch-api-") as tmp:
        stack = SimulatedStack(workers=2, s3_directory=f"{tmp}/s3")
        try:
            plugin = stack.plugin({"fetch_outputs": False})
            started = time.perf_counter()
            build(f"{tmp}/work", n).run(plugin=plugin)
            return dict(stack.cloud.api_calls.counts), time.perf_counter() - started, \
                plugin.poll_count
        finally:
            stack.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("nipype.workflow").setLevel(logging.WARNING)
    base, base_s, base_polls = counted_run(independent_workflow, args.n)
    mapped, mapped_s, mapped_polls = counted_run(mapnode_workflow, args.n)
    print(f"\nAPI calls, {args.n} jobs on the simulated Batch (2 worker processes)\n")
    print(f"| call | {args.n} independent nodes | {args.n}-way MapNode | MapNode / independent |")
    print("|---|---:|---:|---:|")
    for name in sorted(set(base) | set(mapped)):
        b, m = base.get(name, 0), mapped.get(name, 0)
        ratio = f"{m / b:.3f}x" if b else "-"
        print(f"| {name} | {b} | {m} | {ratio} |")
    batch_b = sum(v for k, v in base.items() if k.startswith("batch."))
    batch_m = sum(v for k, v in mapped.items() if k.startswith("batch."))
    print(f"| **all Batch calls** | {batch_b} | {batch_m} | {batch_m / batch_b:.3f}x |")
    print(f"| status polls | {base_polls} | {mapped_polls} | |")
    print(f"| makespan s | {base_s:.1f} | {mapped_s:.1f} | {mapped_s / base_s:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
