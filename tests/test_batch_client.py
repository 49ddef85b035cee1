"""BatchClient: job definitions on moto, request shapes checked with botocore's Stubber.

No job is started on moto here: moto runs every submitted job as a Docker container, so
SubmitJob is checked against the API model with the Stubber instead.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from nipype_batch.aws.batch import (
    DESCRIBE_CHUNK,
    LOG_GROUP,
    RETRY_RULES,
    RUNNER_COMMAND,
    BatchClient,
    container_overrides,
    job_definition_spec,
    retry_strategy,
)
from nipype_batch.aws.session import ApiCallCounter
from nipype_batch.aws.status import JobState, JobStatus
from nipype_batch.errors import BatchJobError
from nipype_batch.protocol import EXIT_NODE_FAILED
from nipype_batch.resources import JobResources

REGION = "us-east-1"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/nipype-batch@sha256:" + "a" * 64
ROLE = "arn:aws:iam::123456789012:role/nipype-job"


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_BATCH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


@pytest.fixture
def moto_batch(aws_env: None) -> Iterator[dict[str, Any]]:
    """An IAM role, an unmanaged compute environment and a job queue on moto."""
    with mock_aws():
        iam = boto3.client("iam", region_name=REGION)
        trust = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": {"Service": "batch.amazonaws.com"},
                           "Action": "sts:AssumeRole"}],
        }
        role = iam.create_role(RoleName="nipype-batch-test",
                               AssumeRolePolicyDocument=json.dumps(trust))["Role"]
        batch = boto3.client("batch", region_name=REGION)
        env = batch.create_compute_environment(
            computeEnvironmentName="nipype-batch-test", type="UNMANAGED", state="ENABLED",
            serviceRole=role["Arn"],
        )
        queue = batch.create_job_queue(
            jobQueueName="nipype-batch-test", state="ENABLED", priority=1,
            computeEnvironmentOrder=[{"order": 1,
                                      "computeEnvironment": env["computeEnvironmentArn"]}],
        )
        yield {
            "batch": batch,
            "logs": boto3.client("logs", region_name=REGION),
            "queue": queue["jobQueueName"],
            "role": role["Arn"],
        }


@pytest.fixture
def stubbed(aws_env: None) -> Iterator[tuple[BatchClient, Stubber, Stubber]]:
    """A BatchClient whose clients answer only what the test queues (no network)."""
    batch = boto3.client("batch", region_name=REGION)
    logs = boto3.client("logs", region_name=REGION)
    with Stubber(batch) as batch_stub, Stubber(logs) as logs_stub:
        yield BatchClient(batch, logs), batch_stub, logs_stub
        batch_stub.assert_no_pending_responses()
        logs_stub.assert_no_pending_responses()


def resources(**changes: Any) -> JobResources:
    values = {"vcpus": 2, "memory_mb": 4096, "gpus": 0, "timeout_s": None,
              "job_queue": "q", "image": None, "base_image": None, "run_on_driver": False}
    return JobResources(**{**values, **changes})


# ---- pure payload builders ---------------------------------------------------------------


def test_job_definition_spec_is_named_by_content() -> None:
    name, props = job_definition_spec(IMAGE, None)
    assert name.startswith("nipype-batch-")
    assert len(name) == len("nipype-batch-") + 16
    assert props == {
        "image": IMAGE,
        "command": RUNNER_COMMAND,
        "resourceRequirements": [{"type": "VCPU", "value": "1"},
                                 {"type": "MEMORY", "value": "2048"}],
    }
    assert job_definition_spec(IMAGE, None)[0] == name
    assert job_definition_spec(IMAGE + "b", None)[0] != name
    with_role_name, with_role = job_definition_spec(IMAGE, ROLE)
    assert with_role["jobRoleArn"] == ROLE
    assert with_role_name != name


def test_container_overrides_without_gpu() -> None:
    assert container_overrides(resources(), {"B": "2", "A": "1"}) == {
        "resourceRequirements": [{"type": "VCPU", "value": "2"},
                                 {"type": "MEMORY", "value": "4096"}],
        "environment": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
    }


def test_container_overrides_with_gpu() -> None:
    overrides = container_overrides(resources(vcpus=8, memory_mb=30000, gpus=2), {})
    assert overrides["resourceRequirements"] == [
        {"type": "VCPU", "value": "8"}, {"type": "MEMORY", "value": "30000"},
        {"type": "GPU", "value": "2"},
    ]
    assert overrides["environment"] == []


# ---- job definitions on moto -------------------------------------------------------------


@pytest.mark.moto
def test_job_definition_is_registered_once_and_found_by_a_new_client(moto_batch) -> None:
    counter = ApiCallCounter()
    counter.attach(moto_batch["batch"])
    first = BatchClient(moto_batch["batch"], moto_batch["logs"])
    arn = first.ensure_job_definition(IMAGE)
    assert first.ensure_job_definition(IMAGE) == arn
    assert counter.counts["batch.RegisterJobDefinition"] == 1
    assert counter.counts["batch.DescribeJobDefinitions"] == 1  # second call from the cache

    second = BatchClient(moto_batch["batch"], moto_batch["logs"])
    assert second.ensure_job_definition(IMAGE) == arn
    assert counter.counts["batch.RegisterJobDefinition"] == 1
    assert counter.counts["batch.DescribeJobDefinitions"] == 2

    name, _props = job_definition_spec(IMAGE, None)
    found = moto_batch["batch"].describe_job_definitions(jobDefinitionName=name)
    [definition] = found["jobDefinitions"]
    assert definition["jobDefinitionArn"] == arn
    assert definition["status"] == "ACTIVE"
    assert definition["containerProperties"]["image"] == IMAGE
    assert definition["containerProperties"]["command"] == RUNNER_COMMAND


@pytest.mark.moto
def test_other_image_or_role_gets_its_own_definition(moto_batch) -> None:
    client = BatchClient(moto_batch["batch"], moto_batch["logs"])
    arns = {
        client.ensure_job_definition(IMAGE),
        client.ensure_job_definition(IMAGE.replace("a" * 64, "b" * 64)),
        client.ensure_job_definition(IMAGE, job_role_arn=moto_batch["role"]),
    }
    assert len(arns) == 3
    listed = moto_batch["batch"].describe_job_definitions(status="ACTIVE")["jobDefinitions"]
    assert len({d["jobDefinitionName"] for d in listed}) == 3


@pytest.mark.moto
def test_inactive_definition_is_not_reused(moto_batch) -> None:
    arn = BatchClient(moto_batch["batch"], moto_batch["logs"]).ensure_job_definition(IMAGE)
    moto_batch["batch"].deregister_job_definition(jobDefinition=arn)

    again = BatchClient(moto_batch["batch"], moto_batch["logs"]).ensure_job_definition(IMAGE)
    assert again != arn
    assert again.endswith(":2")


@pytest.mark.moto
def test_submit_to_unknown_queue_names_queue_and_resources(moto_batch) -> None:
    client = BatchClient(moto_batch["batch"], moto_batch["logs"])
    definition = client.ensure_job_definition(IMAGE)
    with pytest.raises(
        BatchJobError,
        match=r"AWS Batch refused job n1 on queue 'no-such-queue'.*queue exists and is ENABLED"
        r".*fit 2 vCPUs and 4096 MiB",
    ):
        client.submit("n1", "no-such-queue", definition, resources(), {}, {})


@pytest.mark.moto
def test_describe_unknown_ids_on_moto_returns_nothing(moto_batch) -> None:
    client = BatchClient(moto_batch["batch"], moto_batch["logs"])
    assert client.describe(["00000000-0000-0000-0000-000000000000"]) == {}


# ---- requests checked against the API model (Stubber) ------------------------------------


def test_submit_sends_overrides_environment_and_timeout(stubbed) -> None:
    client, batch_stub, _ = stubbed
    batch_stub.add_response(
        "submit_job",
        {"jobName": "nipype-wf_bet", "jobId": "job-1"},
        expected_params={
            "jobName": "nipype-wf_bet",
            "jobQueue": "gpu-queue",
            "jobDefinition": "arn:aws:batch:us-east-1:123456789012:job-definition/jd:1",
            "containerOverrides": {
                "resourceRequirements": [
                    {"type": "VCPU", "value": "4"},
                    {"type": "MEMORY", "value": "8192"},
                    {"type": "GPU", "value": "1"},
                ],
                "environment": [{"name": "NIPYPE_BATCH_PAYLOAD", "value": "s3://b/p.json"}],
            },
            "tags": {"nipype-node": "wf.bet"},
            "propagateTags": True,
            "retryStrategy": {"attempts": 2, "evaluateOnExit": RETRY_RULES},
            "timeout": {"attemptDurationSeconds": 900},
        },
    )
    job_id = client.submit(
        "nipype-wf_bet", "gpu-queue", "arn:aws:batch:us-east-1:123456789012:job-definition/jd:1",
        resources(vcpus=4, memory_mb=8192, gpus=1, timeout_s=900, attempts=2),
        {"NIPYPE_BATCH_PAYLOAD": "s3://b/p.json"}, {"nipype-node": "wf.bet"},
    )
    assert job_id == "job-1"


def test_submit_without_timeout_sends_no_timeout(stubbed) -> None:
    client, batch_stub, _ = stubbed
    batch_stub.add_response(
        "submit_job",
        {"jobName": "n", "jobId": "job-2"},
        expected_params=_plain_submission({}),
    )
    assert client.submit("n", "q", "jd", resources(), {}, {}) == "job-2"


def _plain_submission(tags: dict[str, str]) -> dict[str, Any]:
    """SubmitJob's parameters for job "n" of ``resources()`` on queue "q", definition "jd"."""
    return {
        "jobName": "n", "jobQueue": "q", "jobDefinition": "jd",
        "containerOverrides": {
            "resourceRequirements": [{"type": "VCPU", "value": "2"},
                                     {"type": "MEMORY", "value": "4096"}],
            "environment": [],
        },
        "tags": tags, "propagateTags": True,
        "retryStrategy": {"attempts": 1, "evaluateOnExit": RETRY_RULES},
    }


def job_detail(job_id: str, status: str = "RUNNING", **extra: Any) -> dict[str, Any]:
    return {"jobName": f"name-{job_id}", "jobId": job_id, "jobQueue": "q", "status": status,
            "startedAt": 1_700_000_000_000, "jobDefinition": "jd", **extra}


def test_describe_splits_ids_into_chunks_of_100(stubbed) -> None:
    client, batch_stub, _ = stubbed
    ids = [f"job-{i:03d}" for i in range(250)]
    for start in range(0, 250, DESCRIBE_CHUNK):
        chunk = ids[start:start + DESCRIBE_CHUNK]
        # AWS leaves unknown ids out: answer for the first half of each chunk only.
        batch_stub.add_response(
            "describe_jobs",
            {"jobs": [job_detail(job_id) for job_id in chunk[: len(chunk) // 2]]},
            expected_params={"jobs": chunk},
        )
    statuses = client.describe(ids + ids[:10])  # duplicates are asked for once
    assert len(statuses) == 50 + 50 + 25
    assert statuses["job-000"].state is JobState.RUNNING
    assert "job-099" not in statuses
    assert "job-200" in statuses


def test_describe_nothing_makes_no_call(stubbed) -> None:
    client, _, _ = stubbed
    assert client.describe([]) == {}


def test_describe_failure_is_a_batch_job_error(stubbed) -> None:
    client, batch_stub, _ = stubbed
    batch_stub.add_client_error("describe_jobs", "ClientException", "boom")
    with pytest.raises(BatchJobError,
                       match=r"lost contact with AWS Batch: DescribeJobs for 2 jobs failed .*boom"):
        client.describe(["a", "b"])


def test_definition_failure_names_definition_and_image(stubbed) -> None:
    client, batch_stub, _ = stubbed
    batch_stub.add_client_error("describe_job_definitions", "ServerException", "down")
    name, _ = job_definition_spec(IMAGE, None)
    with pytest.raises(
        BatchJobError, match=rf"could not find or register job definition {name} for image"
    ):
        client.ensure_job_definition(IMAGE)


def test_terminate_reports_the_ids_it_could_not_stop(stubbed) -> None:
    client, batch_stub, _ = stubbed
    batch_stub.add_response("terminate_job", {}, {"jobId": "a", "reason": "cancelled"})
    batch_stub.add_client_error("terminate_job", "ClientException", "no such job",
                                expected_params={"jobId": "b", "reason": "cancelled"})
    batch_stub.add_response("terminate_job", {}, {"jobId": "c", "reason": "cancelled"})
    assert client.terminate(["a", "b", "c"], "cancelled") == ["b"]


def test_log_tail_asks_for_the_last_lines(stubbed) -> None:
    client, _, logs_stub = stubbed
    logs_stub.add_response(
        "get_log_events",
        {"events": [{"timestamp": 1, "message": "one"}, {"timestamp": 2, "message": "two"}]},
        expected_params={"logGroupName": LOG_GROUP, "logStreamName": "s", "limit": 2,
                         "startFromHead": False},
    )
    assert client.log_tail("s", lines=2) == ["one", "two"]
    assert client.log_tail(None) == []
    assert client.log_tail("") == []


# ---- logs on moto ------------------------------------------------------------------------


@pytest.mark.moto
def test_log_tail_on_moto(moto_batch) -> None:
    logs = moto_batch["logs"]
    logs.create_log_group(logGroupName=LOG_GROUP)
    logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName="jd/default/abc")
    now_ms = int(time.time() * 1000)  # CloudWatch rejects events older than 14 days
    answer = logs.put_log_events(
        logGroupName=LOG_GROUP, logStreamName="jd/default/abc",
        logEvents=[{"timestamp": now_ms - 60 + i, "message": f"line {i}"} for i in range(60)],
    )
    assert "rejectedLogEventsInfo" not in answer
    client = BatchClient(moto_batch["batch"], logs)
    assert client.log_tail("jd/default/abc", lines=3) == ["line 57", "line 58", "line 59"]
    assert client.log_tail("jd/default/abc") == [f"line {i}" for i in range(20, 60)]
    assert client.log_tail("jd/default/missing") == []


@pytest.mark.moto
def test_log_tail_without_log_group_is_empty(moto_batch) -> None:
    client = BatchClient(moto_batch["batch"], moto_batch["logs"])
    assert client.log_tail("jd/default/abc") == []


# ---- status mapping ----------------------------------------------------------------------


def test_status_from_a_failed_description() -> None:
    status = JobStatus.from_description(job_detail(
        "job-9", "FAILED",
        statusReason="Essential container in task exited",
        createdAt=1, stoppedAt=3,
        container={"exitCode": 137, "logStreamName": "jd/default/current"},
        attempts=[{"container": {"logStreamName": "jd/default/old"}}],
    ))
    assert status == JobStatus(
        job_id="job-9", state=JobState.FAILED, reason="Essential container in task exited",
        exit_code=137, created_at=1, started_at=1_700_000_000_000, stopped_at=3,
        log_stream="jd/default/current",
        attempts=[{"container": {"logStreamName": "jd/default/old"}}],
    )
    assert status.state.done


def test_log_stream_comes_from_the_last_attempt_when_container_lacks_it() -> None:
    status = JobStatus.from_description(job_detail(
        "job-8", "SUCCEEDED", container={"exitCode": 0},
        attempts=[{"container": {"logStreamName": "first"}},
                  {"container": {"logStreamName": "second"}}],
    ))
    assert status.log_stream == "second"
    assert status.exit_code == 0
    assert status.reason is None


def test_minimal_description() -> None:
    status = JobStatus.from_description({"jobId": "j", "status": "SUBMITTED"})
    assert status == JobStatus(job_id="j", state=JobState.SUBMITTED)
    assert not status.state.done


@pytest.mark.parametrize(
    ("state", "done"),
    [("SUBMITTED", False), ("PENDING", False), ("RUNNABLE", False), ("STARTING", False),
     ("RUNNING", False), ("SUCCEEDED", True), ("FAILED", True)],
)
def test_job_state_done(state: str, done: bool) -> None:
    assert JobState(state).done is done


def test_unknown_state_is_rejected() -> None:
    with pytest.raises(ValueError, match="'DELETED' is not a valid JobState"):
        JobStatus.from_description({"jobId": "j", "status": "DELETED"})


def test_retry_rules_never_retry_the_nodes_own_exception() -> None:
    # first match wins: the node's exit code comes before the catch-all retry
    assert RETRY_RULES[0] == {"onExitCode": str(EXIT_NODE_FAILED), "action": "EXIT"}
    assert RETRY_RULES[-1]["action"] == "RETRY"
    assert len(RETRY_RULES) <= 5  # Batch's limit
    assert retry_strategy(4) == {"attempts": 4, "evaluateOnExit": RETRY_RULES}


def test_poll_interval_is_short_while_jobs_run_and_backs_off_while_queued() -> None:
    from nipype_batch.aws.status import JobState, next_poll_interval

    queued = [JobState.RUNNABLE, JobState.SUBMITTED]
    assert next_poll_interval(queued, 0.5, 0.5, 10) == 1.0
    assert next_poll_interval(queued, 8, 0.5, 10) == 10
    assert next_poll_interval([*queued, JobState.RUNNING], 8, 0.5, 10) == 0.5
    assert next_poll_interval([JobState.SUCCEEDED], 8, 0.5, 10) == 0.5
    assert next_poll_interval([], 8, 0.5, 10) == 0.5


# ---- Fargate -------------------------------------------------------------------------------


def test_fargate_definition_names_its_execution_role_and_a_public_ip() -> None:
    ec2_name, ec2 = job_definition_spec(IMAGE, ROLE)
    name, props = job_definition_spec(IMAGE, ROLE, "fargate", ROLE + "-execution")
    assert name != ec2_name and "executionRoleArn" not in ec2
    assert props["executionRoleArn"] == ROLE + "-execution"
    assert props["networkConfiguration"] == {"assignPublicIp": "ENABLED"}
    assert props["runtimePlatform"] == {"operatingSystemFamily": "LINUX",
                                        "cpuArchitecture": "X86_64"}
    assert "ephemeralStorage" not in props


def test_fargate_definition_takes_graviton_and_more_scratch_disk(stubbed) -> None:
    name, props = job_definition_spec(IMAGE, ROLE, "fargate", ROLE + "-execution", "arm64", 100)
    assert props["runtimePlatform"]["cpuArchitecture"] == "ARM64"
    assert props["ephemeralStorage"] == {"sizeInGiB": 100}
    assert name != job_definition_spec(IMAGE, ROLE, "fargate", ROLE + "-execution")[0]
    # as RegisterJobDefinition takes it (checked against the API model)
    client, batch_stub, _ = stubbed
    batch_stub.add_response("describe_job_definitions", {"jobDefinitions": []})
    batch_stub.add_response(
        "register_job_definition",
        {"jobDefinitionName": name, "revision": 1,
         "jobDefinitionArn": f"arn:aws:batch:us-east-1:1:job-definition/{name}:1"})
    client.ensure_job_definition(IMAGE, ROLE, "fargate", ROLE + "-execution", "arm64", 100)


def test_ephemeral_storage_is_fargates_range() -> None:
    from nipype_batch.errors import ConfigurationError
    from nipype_batch.settings import BatchSettings

    assert BatchSettings.from_plugin_args({"ephemeral_storage_gb": 50}).ephemeral_storage_gb == 50
    with pytest.raises(ConfigurationError, match="from 21 to 200"):
        BatchSettings.from_plugin_args({"ephemeral_storage_gb": 500})


@pytest.mark.moto
def test_fargate_definition_registers_with_fargate_capability(moto_batch) -> None:
    client = BatchClient(moto_batch["batch"], moto_batch["logs"])
    arn = client.ensure_job_definition(IMAGE, moto_batch["role"], "fargate", moto_batch["role"])
    (found,) = moto_batch["batch"].describe_job_definitions(jobDefinitions=[arn])[
        "jobDefinitions"]
    assert found["platformCapabilities"] == ["FARGATE"]
    assert found["containerProperties"]["executionRoleArn"] == moto_batch["role"]


@pytest.mark.parametrize(("asked", "fitted"), [
    ((1, 2048), (1, 2048)), ((1, 3000), (1, 3072)), ((1, 512), (1, 2048)),
    ((3, 2048), (4, 8192)), ((2, 20000), (4, 20480)), ((16, 122880), (16, 122880)),
    ((1, 9000), (2, 9216)),
])
def test_fargate_fit_takes_the_smallest_shape_that_holds_the_job(asked, fitted) -> None:
    from nipype_batch.resources import fargate_fit

    got = fargate_fit(resources(vcpus=asked[0], memory_mb=asked[1]))
    assert (got.vcpus, got.memory_mb) == fitted


def test_a_job_larger_than_fargate_is_refused() -> None:
    from nipype_batch.errors import ConfigurationError
    from nipype_batch.resources import fargate_fit

    with pytest.raises(ConfigurationError, match=r"does not fit Fargate.*platform='ec2'"):
        fargate_fit(resources(vcpus=32, memory_mb=4096))


def test_fargate_on_aws_needs_an_execution_role() -> None:
    from nipype_batch.errors import ConfigurationError
    from nipype_batch.settings import BatchSettings

    args = {"job_queue": "q", "bucket": "s3://b/p", "platform": "fargate"}
    with pytest.raises(ConfigurationError, match=r"needs execution_role_arn.*--platform fargate"):
        BatchSettings.from_plugin_args(args)
    BatchSettings.from_plugin_args({**args, "execution_role_arn": "arn:aws:iam::1:role/x"})


def test_tags_are_sent_as_batch_and_ecs_accept_them(stubbed) -> None:
    client, batch_stub, _ = stubbed
    long_path = "/data/" + "x" * 300 + "/sub-01 (copy)/#1,é"
    batch_stub.add_response(
        "submit_job",
        {"jobName": "n", "jobId": "job-3"},
        # ECS refuses ( ) # , in tag values; a value keeps its last 256 characters
        expected_params=_plain_submission(
            {"nipype-batch:node": ("/data/" + "x" * 300 + "/sub-01 _copy_/_1_é")[-256:]}),
    )
    assert client.submit("n", "q", "jd", resources(), {},
                         {"nipype-batch:node": long_path}) == "job-3"


def test_fargate_scratch_disk_is_sized_from_the_staged_inputs(tmp_path) -> None:
    from types import SimpleNamespace

    from nipype_batch.aws.staging import StagedPath
    from nipype_batch.driver.submit import Submitter
    from nipype_batch.settings import BatchSettings

    big = tmp_path / "dwi.nii.gz"
    with open(big, "wb") as fh:
        fh.truncate(20 * 2**30)  # sparse: 20 GiB by its size, no disk used
    small = tmp_path / "bval"
    small.write_text("0 1000")

    def scratch(paths, **settings):
        me = SimpleNamespace(settings=BatchSettings(**settings))
        return Submitter._scratch_gb(me, [StagedPath(str(p), "file") for p in paths])

    assert scratch([big], platform="fargate") == 50  # 2 x 20 + 5 GiB, in steps of 25
    assert scratch([small], platform="fargate") is None  # Fargate's 20 GiB will do
    assert scratch([big]) is None  # EC2: the instance's disk
    assert scratch([small], platform="fargate", ephemeral_storage_gb=30) == 30
