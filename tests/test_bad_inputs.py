"""Bad input is refused with a message naming the problem and the fix, and nothing is submitted.

Runs the AWS code path against the emulator, so the cloud checks (queue, bucket, capacity) are
the ones a real account gets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from nipype import Function, Node, Workflow

from nipype_batch import BatchPlugin, NipypeBatchError
from nipype_batch.local.stack import THROWAWAY_KEY

pytestmark = pytest.mark.docker


def _double(x):
    return 2 * x


def _needs_missing_module(x):
    import surely_not_installed_anywhere  # noqa: F401

    return x


def _workflow(base: Path, function=_double, **node_changes: Any) -> Workflow:
    wf = Workflow(name="bad", base_dir=str(base))
    node = Node(Function(input_names=["x"], output_names=["out"], function=function), name="n")
    node.inputs.x = 1
    for key, value in node_changes.items():
        setattr(node, key, value)
    wf.add_nodes([node])
    return wf


@pytest.fixture
def emulated_aws(local_stack, monkeypatch) -> dict[str, Any]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", THROWAWAY_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", THROWAWAY_KEY)
    local_stack.ensure_queue("bad-inputs-queue")
    local_stack.ensure_bucket("bad-inputs-bucket")
    return {"job_queue": "bad-inputs-queue", "bucket": "s3://bad-inputs-bucket/x",
            "region": "us-east-1", "endpoint_url": local_stack.endpoint_url,
            "aws_max_attempts": 2}


@pytest.fixture
def small_managed_queue(local_stack) -> str:
    """A MANAGED compute environment of at most 4 vCPUs behind its own queue."""
    ec2, batch, iam = (local_stack.client(s) for s in ("ec2", "batch", "iam"))
    if batch.describe_job_queues(jobQueues=["small-queue"])["jobQueues"]:
        return "small-queue"
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.9.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="small", Description="small",
                                      VpcId=vpc)["GroupId"]
    role = iam.get_role(RoleName="nipype-batch-local")["Role"]["Arn"]
    profile = iam.create_instance_profile(InstanceProfileName="small")["InstanceProfile"]["Arn"]
    env = batch.create_compute_environment(
        computeEnvironmentName="small-env", type="MANAGED", state="ENABLED", serviceRole=role,
        computeResources={"type": "EC2", "minvCpus": 0, "maxvCpus": 4, "desiredvCpus": 0,
                          "instanceTypes": ["optimal"], "subnets": [subnet],
                          "securityGroupIds": [group], "instanceRole": profile},
    )
    batch.create_job_queue(jobQueueName="small-queue", state="ENABLED", priority=1,
                           computeEnvironmentOrder=[{"order": 1, "computeEnvironment":
                                                     env["computeEnvironmentArn"]}])
    return "small-queue"


def _not_picklable():
    """A callback input: deep-copies (as Nipype does to the graph) but cannot be pickled."""
    return lambda value: value


def _main_interface():
    cls = type("ScriptInterface", (Function,), {"__module__": "__main__"})
    return cls(input_names=["x"], output_names=["out"], function=_double)


# (id, plugin_args changes, node changes or a workflow factory, message pattern)
CASES = [
    ("typo-in-key", {"job_queu": "q"}, {}, r"'job_queu' is not known\. Did you mean 'job_queue'"),
    ("multiproc-key", {"n_procs": 8}, {}, r"'n_procs' is not an AWSBatch setting.*max_jobs"),
    ("bucket-not-uri", {"bucket": "my-bucket"}, {}, r"must be an S3 URI such as 's3://"),
    ("bucket-no-name", {"bucket": "s3:///prefix"}, {}, r"must be an S3 URI"),
    ("aws-without-queue", {"job_queue": None}, {}, r"backend 'aws' needs job_queue"),
    ("zero-vcpus", {"vcpus": 0}, {}, r"vcpus=0 must be a whole number >= 1"),
    ("short-timeout", {"timeout_s": 30}, {}, r"timeout_s=30 .* >= 60"),
    ("too-many-attempts", {"attempts": 11}, {}, r"attempts=11 must be a whole number from 1 to 10"),
    ("secret-in-environment", {"endpoint_url": None,
                               "environment": {"AWS_SECRET_ACCESS_KEY": "x"}}, {},
     r"credentials must not travel in job environments.*job_role_arn"),
    ("node-key-typo", {}, {"plugin_args": {"vcpu": 2}}, r"'vcpu' is not known\. Did you mean"),
    ("node-negative-memory", {}, {"plugin_args": {"memory_mb": -5}}, r"memory_mb=-5 must be"),
    ("pin-against-driver", {"packages": ["nipype==1.8.6"]}, {},
     r"asks for nipype==1\.8\.6 but this driver has nipype"),
    ("missing-requirements-file", {"requirements": "/no/such/requirements.txt"}, {},
     r"requirements file '/no/such/requirements\.txt' cannot be read"),
    ("missing-queue", {"job_queue": "no-such-queue"}, {},
     r"job queue 'no-such-queue' does not exist in this account and region"),
    ("missing-bucket", {"bucket": "s3://no-such-bucket/x"}, {},
     r"cannot write to s3://no-such-bucket/x \(NoSuchBucket"),
    ("unpicklable-input", {}, {"inputs.x": _not_picklable()},
     r"1 node\(s\) cannot be pickled to travel to a job: bad\.n"),
    ("missing-module", {}, {"function": _needs_missing_module},
     r"imports 'surely_not_installed_anywhere', which this Python cannot import"),
    ("interface-in-main", {}, {"interface": _main_interface},
     r"interface ScriptInterface is defined in the script being run \(__main__\)"),
]


@pytest.mark.parametrize(("changes", "node_changes", "message"),
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_is_refused_before_submission(tmp_path, emulated_aws, local_stack, changes,
                                                node_changes, message):
    args = {**emulated_aws, **changes}
    args = {k: v for k, v in args.items() if v is not None}
    function = node_changes.get("function", _double)
    wf = _workflow(tmp_path, function=function)
    node = wf.get_node("n")
    if "plugin_args" in node_changes:
        node.plugin_args = node_changes["plugin_args"]
    if "inputs.x" in node_changes:
        node.inputs.x = node_changes["inputs.x"]
    if "interface" in node_changes:
        wf = Workflow(name="bad", base_dir=str(tmp_path))
        script_node = Node(node_changes["interface"](), name="n")
        script_node.inputs.x = 1
        wf.add_nodes([script_node])
    submitted = _submissions(local_stack)
    plugin = None
    with pytest.raises(NipypeBatchError, match=message):
        plugin = BatchPlugin(args)
        wf.run(plugin=plugin)
    assert plugin is None or plugin.submitted_job_ids == []
    assert _submissions(local_stack) == submitted


def test_job_larger_than_the_compute_environment(tmp_path, emulated_aws, local_stack,
                                                 small_managed_queue):
    wf = _workflow(tmp_path)
    wf.get_node("n").plugin_args = {"vcpus": 16}
    plugin = BatchPlugin({**emulated_aws, "job_queue": small_managed_queue})
    with pytest.raises(NipypeBatchError,
                       match=r"no compute environment of 'small-queue' can run a job of 16 vCPUs"
                             r".*maxvCpus 4"):
        wf.run(plugin=plugin)
    assert plugin.submitted_job_ids == []


def test_all_problems_are_reported_together(tmp_path, emulated_aws):
    wf = _workflow(tmp_path)
    wf.get_node("n").inputs.x = _not_picklable()
    with pytest.raises(NipypeBatchError, match=r"(?s)2 problem\(s\).*queue.*picklable"):
        wf.run(plugin=BatchPlugin({**emulated_aws, "job_queue": "no-such-queue"}))


def _submissions(stack) -> int:
    """Jobs in every queue of the emulator, in any state."""
    batch = stack.client("batch")
    total = 0
    for queue in batch.describe_job_queues()["jobQueues"]:
        for state in ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED",
                      "FAILED"):
            total += len(batch.list_jobs(jobQueue=queue["jobQueueName"],
                                         jobStatus=state)["jobSummaryList"])
    return total


def test_doctor_reports_a_misconfigured_setup_in_seconds(tmp_path, emulated_aws):
    import json
    import subprocess
    import sys
    import time

    args = {**emulated_aws, "job_queue": "no-such-queue", "bucket": "s3://no-such-bucket/x"}
    started = time.monotonic()
    doctor = subprocess.run(
        [sys.executable, "-m", "nipype_batch.cli", "doctor", "--json",
         "--plugin-args", json.dumps(args)],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert time.monotonic() - started < 30
    assert doctor.returncode == 1, doctor.stderr
    checks = {check["name"]: check for check in json.loads(doctor.stdout)}
    assert checks["credentials"]["ok"]
    assert not checks["bucket"]["ok"] and "NoSuchBucket" in checks["bucket"]["detail"]
    assert not checks["queue no-such-queue"]["ok"]
    assert "does not exist" in checks["queue no-such-queue"]["detail"]

    good = subprocess.run(
        [sys.executable, "-m", "nipype_batch.cli", "doctor", "--plugin-args",
         json.dumps(emulated_aws)], capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert good.returncode == 0, good.stdout + good.stderr
    assert "BAD" not in good.stdout
