"""A map of trivial tasks: AWSBatch (packing 'off' and 'auto') against the floor of plain boto3
array jobs of a minimal image, on the same local stack in the same run.

The floor is what the simplest possible Batch client pays for the same work: an image holding
only boto3 and cloudpickle, one pickle in and one out per child, ``x ** 2``, one array job, a
DescribeJobs poll every 0.5 s, the outputs read back. AWSBatch runs a MapNode of the same tasks
(``x ** 2`` each), so the ratio is what Nipype's bookkeeping, staging and our runner add.

    python bench/seed_floor.py [--tasks 20 200]
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import nipype_batch  # noqa: F401  registers plugin='AWSBatch'
from examples.scale.workflows import mapnode_workflow, square
from nipype_batch import BatchPlugin, build_images
from nipype_batch.images.build import DEFAULT_BASE_IMAGE, ensure_base_image
from nipype_batch.images.wheels import driver_python, resolve_wheels
from nipype_batch.local import LocalStack

FLOOR_IMAGE = "nipype-batch-bench-floor:1"
TASK = '''
import os, boto3, cloudpickle
s3 = boto3.client("s3", endpoint_url=os.environ["NIPYPE_BATCH_ENDPOINT_URL"])
index = os.environ["AWS_BATCH_JOB_ARRAY_INDEX"]
bucket, prefix = os.environ["FLOOR_BUCKET"], os.environ["FLOOR_PREFIX"]
func, x = cloudpickle.loads(s3.get_object(Bucket=bucket, Key=f"{prefix}/in/{index}")["Body"].read())
s3.put_object(Bucket=bucket, Key=f"{prefix}/out/{index}", Body=cloudpickle.dumps(func(x)))
'''
RECIPE = '''FROM {base}
COPY wheels/ /tmp/wheels/
RUN python3 -m venv /venv && /venv/bin/pip install --no-index --no-cache-dir \\
    --disable-pip-version-check --find-links /tmp/wheels boto3 cloudpickle && rm -rf /tmp/wheels
COPY task.py /task.py
ENV PATH=/venv/bin:/usr/bin:/bin
'''


def build_floor_image(stack: LocalStack) -> None:
    """The minimal image: the local base, boto3 and cloudpickle (wheels resolved here)."""
    ensure_base_image(stack.docker, DEFAULT_BASE_IMAGE)
    wheel_dir, names = resolve_wheels(["boto3", "cloudpickle"], driver_python())
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        recipe = RECIPE.format(base=DEFAULT_BASE_IMAGE)
        for name, data in (("Dockerfile", recipe), ("task.py", TASK)):
            info = tarfile.TarInfo(name)
            info.size = len(data.encode())
            tar.addfile(info, io.BytesIO(data.encode()))
        for name in names:
            tar.add(wheel_dir / name, arcname=f"wheels/{name}")
    context.seek(0)
    stack.docker.images.build(fileobj=context, custom_context=True, tag=FLOOR_IMAGE,
                              network_mode="none", rm=True)


def floor_run(stack: LocalStack, tasks: int, prefix: str) -> float:
    """Seconds for ``tasks`` children of one plain array job, inputs up to outputs read."""
    import cloudpickle

    batch, s3 = stack.client("batch"), stack.client("s3")
    definition = batch.register_job_definition(
        jobDefinitionName="bench-floor", type="container", containerProperties={
            "image": FLOOR_IMAGE, "command": ["python", "/task.py"],
            "resourceRequirements": [{"type": "VCPU", "value": "1"},
                                     {"type": "MEMORY", "value": "512"}]})["jobDefinitionArn"]
    started = time.perf_counter()
    for index in range(tasks):
        s3.put_object(Bucket=stack.bucket, Key=f"{prefix}/in/{index}",
                      Body=cloudpickle.dumps((lambda x: x ** 2, index)))  # by value
    environment = [{"name": k, "value": v} for k, v in {
        **stack.job_environment(), "FLOOR_BUCKET": stack.bucket, "FLOOR_PREFIX": prefix}.items()]
    job = batch.submit_job(jobName=f"{stack.job_name_prefix}floor", jobQueue=stack.job_queue,
                           jobDefinition=definition, arrayProperties={"size": tasks},
                           containerOverrides={"environment": environment})["jobId"]
    children = [f"{job}:{i}" for i in range(tasks)]
    while True:
        states = [j["status"] for start in range(0, tasks, 100)
                  for j in batch.describe_jobs(jobs=children[start:start + 100])["jobs"]]
        if all(s in ("SUCCEEDED", "FAILED") for s in states):
            break
        time.sleep(0.5)
    results = [cloudpickle.loads(s3.get_object(Bucket=stack.bucket,
                                               Key=f"{prefix}/out/{i}")["Body"].read())
               for i in range(tasks)]
    elapsed = time.perf_counter() - started
    assert results == [i * i for i in range(tasks)], "the floor's children failed"
    return elapsed


def batch_run(root: Path, tasks: int, packing: str) -> tuple[float, int]:
    plugin = BatchPlugin({"backend": "local", "packing": packing, "report": False,
                          "progress": False})
    wf = mapnode_workflow(str(root / packing), tasks, square)
    started = time.perf_counter()
    wf.run(plugin=plugin)
    return time.perf_counter() - started, len(plugin.submitted_job_ids)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, nargs="+", default=[20, 200])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("nipype.workflow").setLevel(logging.WARNING)
    stack = LocalStack.get()
    build_floor_image(stack)
    rows = []
    with tempfile.TemporaryDirectory(prefix="nipype-batch-floor-") as tmp:
        root = Path(tmp)
        os.environ["NIPYPE_BATCH_HISTORY"] = str(root / "history.sqlite")  # its own
        build_images(mapnode_workflow(str(root / "warm"), 2, square), {"backend": "local"})
        for tasks in args.tasks:
            floor = floor_run(stack, tasks, f"floor/{tasks}")
            # 'off' first: it measures the subnodes, which 'auto' then chunks by
            off, off_jobs = batch_run(root / f"t{tasks}", tasks, "off")
            auto, auto_jobs = batch_run(root / f"t{tasks}", tasks, "auto")
            rows.append((tasks, floor, off, off_jobs, auto, auto_jobs))
            print(f"{tasks} tasks: floor {floor:.1f} s, off {off:.1f} s, auto {auto:.1f} s",
                  file=sys.stderr, flush=True)
    print(f"\nA MapNode of x**2 against plain boto3 array children of a minimal image "
          f"({FLOOR_IMAGE}: boto3, cloudpickle), local stack, {os.cpu_count()} CPUs.\n")
    print("| tasks | floor s | AWSBatch off s (jobs) | AWSBatch auto s (jobs) | off / floor "
          "| auto / floor |")
    print("|---:|---:|---:|---:|---:|---:|")
    for tasks, floor, off, off_jobs, auto, auto_jobs in rows:
        print(f"| {tasks} | {floor:.1f} | {off:.1f} ({off_jobs}) | {auto:.1f} ({auto_jobs}) | "
              f"{off / floor:.2f}x | {auto / floor:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
