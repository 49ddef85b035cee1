"""Preflight checks against compute environments shaped as DescribeComputeEnvironments gives."""

from __future__ import annotations

from nipype_batch.preflight import check_gpus, check_job_role, check_platform
from nipype_batch.settings import BatchSettings


def _env(name: str, kind: str, types: list[str] | None = None) -> dict:
    resources = {"type": kind, "maxvCpus": 64, "subnets": ["subnet-1"]}
    if types is not None:
        resources["instanceTypes"] = types
    return {"computeEnvironmentName": name, "type": "MANAGED", "state": "ENABLED",
            "status": "VALID", "computeResources": resources}


def test_an_ec2_run_on_a_fargate_queue_is_refused_naming_the_platform_to_set():
    check = check_platform("q", [_env("ce", "FARGATE")], "ec2")
    assert not check.ok
    assert "runs on FARGATE but the run's platform is 'ec2'" in check.detail
    assert "plugin_args['platform'] = 'fargate'" in check.detail
    assert check_platform("q", [_env("ce", "FARGATE_SPOT")], "fargate").ok
    assert check_platform("q", [_env("ce", "SPOT")], "spot").ok
    assert not check_platform("q", [_env("ce", "SPOT")], "fargate").ok


def test_gpus_need_gpu_instance_types_on_ec2_too():
    check = check_gpus("q", [_env("ce", "EC2", ["optimal"])], 1)
    assert not check.ok and "no compute environment of 'q' has GPU instance types" in check.detail
    assert "optimal" in check.detail and "--instance-types g4dn.xlarge" in check.detail
    assert check_gpus("q", [_env("cpu", "EC2", ["c5"]), _env("gpu", "EC2", ["g5.xlarge"])], 1).ok
    assert check_gpus("q", [_env("ce", "EC2", ["p3.2xlarge"])], 4).ok


def test_jobs_on_aws_need_a_job_role():
    settings = BatchSettings(backend="aws", region="us-east-1", job_queue="q", bucket="s3://b/p")
    check = check_job_role(settings)
    assert not check.ok and "plugin_args['job_role_arn']" in check.detail
    assert check_job_role(BatchSettings(
        backend="aws", region="us-east-1", job_queue="q", bucket="s3://b/p",
        job_role_arn="arn:aws:iam::123456789012:role/job")).ok
    assert check_job_role(BatchSettings(backend="local")).ok


def test_the_local_stack_refuses_a_job_larger_than_this_machine():
    from nipype_batch.cloud import Machine
    from nipype_batch.preflight import check_machine
    from nipype_batch.resources import JobResources

    machine = Machine(vcpus=2, memory_mb=24_000, gpus=0)

    def job(vcpus=1, memory_mb=2048, gpus=0):
        return JobResources(vcpus=vcpus, memory_mb=memory_mb, gpus=gpus, timeout_s=None,
                            job_queue=None, image=None, base_image=None, run_on_driver=False)

    assert check_machine(machine, job(vcpus=2, memory_mb=20_000)).ok
    check = check_machine(machine, job(vcpus=1000, memory_mb=10_000_000, gpus=1))
    assert not check.ok
    assert "1000 vCPUs (this machine has 2)" in check.detail
    assert "10000000 MiB (this machine has 24000)" in check.detail
    assert "1 GPUs (this machine has 0)" in check.detail


def test_a_bucket_anyone_may_write_is_refused(monkeypatch):
    import json

    import boto3
    from moto import mock_aws

    from nipype_batch.preflight import check_bucket_policy

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="lab")
        assert check_bucket_policy(s3, "lab", "study").ok  # no policy
        s3.put_bucket_policy(Bucket="lab", Policy=json.dumps({
            "Version": "2012-10-17", "Statement": [
                {"Sid": "ReadForAll", "Effect": "Allow", "Principal": "*",
                 "Action": "s3:GetObject", "Resource": "arn:aws:s3:::lab/*"}]}))
        assert check_bucket_policy(s3, "lab", "study").ok  # reading is not running code
        s3.put_bucket_policy(Bucket="lab", Policy=json.dumps({
            "Version": "2012-10-17", "Statement": [
                {"Sid": "Dropbox", "Effect": "Allow", "Principal": {"AWS": "*"},
                 "Action": ["s3:PutObject"], "Resource": "arn:aws:s3:::lab/*"}]}))
        check = check_bucket_policy(s3, "lab", "study")
        assert not check.ok and "statement Dropbox" in check.detail
        assert "can run code on your driver" in check.detail


def test_images_for_one_cpu_are_refused_on_a_queue_of_another():
    from nipype_batch.preflight import check_queue_architecture

    graviton = [_env("ce", "EC2", ["m7g", "c7g.xlarge", "r7gd"])]
    check = check_queue_architecture("q", graviton, "x86_64")
    assert not check.ok
    assert "runs arm64 instances but the run builds images for x86_64" in check.detail
    assert "plugin_args['architecture'] = 'arm64'" in check.detail
    assert check_queue_architecture("q", graviton, "arm64").ok
    assert check_queue_architecture("q", [_env("ce", "EC2", ["optimal"])], "x86_64").ok
    assert not check_queue_architecture("q", [_env("ce", "EC2", ["g4dn.xlarge"])], "arm64").ok
    assert check_queue_architecture("q", [_env("ce", "FARGATE")], "arm64").ok
