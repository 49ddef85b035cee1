"""The real-AWS code path (``backend='aws'``), exercised against the emulator.

The plugin is given only what a real AWS user gives it (queue, bucket, region) plus an endpoint:
no local-stack shortcut is involved, and outputs stay in S3 unless a driver-side node needs them.
"""

from __future__ import annotations

import time

import pytest

from examples.demo.workflow import build_workflow, make_inputs
from nipype_batch import BatchPlugin, build_images
from nipype_batch.local.stack import THROWAWAY_KEY
from tests.helpers import assert_same_tree


@pytest.fixture
def aws_args(local_stack, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", THROWAWAY_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", THROWAWAY_KEY)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    local_stack.ensure_bucket("aws-path-bucket")
    local_stack.ensure_queue("aws-path-queue")
    (published,) = build_images(build_workflow("/tmp/unused", "/tmp/unused", "/tmp/unused"),
                                {"backend": "local"})
    return {
        "job_queue": "aws-path-queue",
        "bucket": "s3://aws-path-bucket/studies/demo",
        "region": "us-east-1",
        "endpoint_url": local_stack.endpoint_url,
        "image": published.ref,  # a ready image, used as is (and checked)
        # on AWS the job role gives credentials; the emulator takes any key
        "environment": {"AWS_ACCESS_KEY_ID": THROWAWAY_KEY,
                        "AWS_SECRET_ACCESS_KEY": THROWAWAY_KEY},
    }


@pytest.mark.docker
def test_aws_backend_runs_demo_with_outputs_left_in_s3(tmp_path, aws_args, local_stack):
    data = make_inputs(str(tmp_path / "data"))
    build_workflow(str(tmp_path / "linear"), data, str(tmp_path / "linear-out")).run(
        plugin="Linear"
    )
    plugin = BatchPlugin(aws_args)
    assert plugin.settings.backend == "aws" and plugin.settings.fetch_outputs is False
    started = time.monotonic()
    build_workflow(str(tmp_path / "aws"), data, str(tmp_path / "aws-out")).run(plugin=plugin)
    elapsed = time.monotonic() - started

    # 2 MapNodes of 3 subnodes, each MapNode collated on the driver. The aws backend weighs
    # AWS's ~33 s per job: each MapNode's 3 subnodes (taken as 10 s each) share one job, and
    # the two loads (short, waiting on nothing) share one.
    assert len(plugin.submitted_job_ids) == 1 + 2 + 2 + 1
    assert plugin.array_job_ids == []
    assert_same_tree(tmp_path / "linear-out", tmp_path / "aws-out")  # the DataSink's copy
    s3 = local_stack.client("s3")
    staged = s3.list_objects_v2(Bucket="aws-path-bucket", Prefix="studies/demo/files/")
    keys = [obj["Key"] for obj in staged.get("Contents", [])]
    assert any(k.endswith("/group/group.csv") for k in keys)
    # one DescribeJobs for all jobs in flight, at most once per poll_min_s, and one for the
    # children of each array once it has ended
    counts = plugin.cloud.api_calls.counts
    assert counts["batch.SubmitJob"] == len(plugin.submitted_job_ids)
    assert counts["batch.RegisterJobDefinition"] <= 1
    assert 0 < counts["batch.DescribeJobs"] <= elapsed / plugin.settings.poll_min_s + 1 + 2

    rerun = BatchPlugin(aws_args)
    build_workflow(str(tmp_path / "aws"), data, str(tmp_path / "aws-out")).run(plugin=rerun)
    assert rerun.submitted_job_ids == []
