"""Polling array jobs against responses shaped as AWS's DescribeJobs documents them."""

from __future__ import annotations

import boto3
from botocore.stub import Stubber

from nipype_batch.aws.batch import BatchClient
from nipype_batch.aws.status import JobState, JobStatus
from nipype_batch.driver.jobs import SubmittedJob
from nipype_batch.driver.poll import JobsInFlight
from nipype_batch.resources import JobResources
from nipype_batch.settings import BatchSettings

PARENT = "0f7c2d8e-1111-2222-3333-444455556666"


def _description(job_id: str, status: str, **extra) -> dict:
    return {"jobId": job_id, "jobName": "n", "jobQueue": "q", "status": status,
            "jobDefinition": "d", "startedAt": 1, "createdAt": 1, **extra}


def _child(job_id: str) -> SubmittedJob:
    index = int(job_id.rsplit(":", 1)[1])
    resources = JobResources(vcpus=1, memory_mb=2048, gpus=0, timeout_s=None, job_queue=None,
                             image=None, base_image=None, run_on_driver=False)
    return SubmittedJob(job_id, "n", "n", f"/w/n/mapflow/_n{index}", False, "q", "d", "i",
                        resources, "", array_job_id=PARENT, array_index=index)


def test_a_child_still_running_after_its_parent_ended_is_polled_again():
    client = boto3.client("batch", region_name="us-east-1", aws_access_key_id="k",
                          aws_secret_access_key="k")
    parent = _description(PARENT, "SUCCEEDED", arrayProperties={
        "size": 2, "statusSummary": {"SUCCEEDED": 2}})
    with Stubber(client) as stub:
        stub.add_response("describe_jobs", {"jobs": [parent]}, {"jobs": [PARENT]})
        stub.add_response("describe_jobs", {"jobs": [
            _description(f"{PARENT}:0", "SUCCEEDED", arrayProperties={"index": 0}),
            _description(f"{PARENT}:1", "RUNNING", arrayProperties={"index": 1})]},
            {"jobs": [f"{PARENT}:0", f"{PARENT}:1"]})
        stub.add_response("describe_jobs", {"jobs": [parent]}, {"jobs": [PARENT]})
        stub.add_response("describe_jobs", {"jobs": [
            _description(f"{PARENT}:1", "SUCCEEDED", arrayProperties={"index": 1})]},
            {"jobs": [f"{PARENT}:1"]})
        flight = JobsInFlight(BatchClient(client, None), BatchSettings(), journal=None)
        for task in (0, 1):
            flight.track(task, _child(f"{PARENT}:{task}"), submitted=False)
        flight.refresh()
        assert flight.finished_status(0).state is JobState.SUCCEEDED
        assert flight.finished_status(1) is None
        flight.refresh()
        assert flight.finished_status(1).state is JobState.SUCCEEDED
        stub.assert_no_pending_responses()


def test_an_array_parent_is_known_by_its_size_before_it_has_a_summary():
    pending = JobStatus.from_description(_description(
        PARENT, "PENDING", arrayProperties={"size": 3, "statusSummary": {}}))
    assert pending.array_summary == {}
    child = JobStatus.from_description(_description(
        f"{PARENT}:0", "RUNNABLE", arrayProperties={"index": 0}))
    assert child.array_summary is None


def _plain(job_id: str) -> SubmittedJob:
    resources = JobResources(vcpus=64, memory_mb=2048, gpus=0, timeout_s=None, job_queue=None,
                             image=None, base_image=None, run_on_driver=False)
    return SubmittedJob(job_id, "big", "big", "/w/big", False, "q", "d", "i", resources, "")


def _runnable(client, job_id: str, reason: str) -> None:
    description = _description(job_id, "RUNNABLE", statusReason=reason)
    client.add_response("describe_jobs", {"jobs": [description]}, {"jobs": [job_id]})


def test_a_job_that_can_never_start_ends_the_run_naming_the_fix():
    import pytest

    from nipype_batch.errors import BatchJobError

    client = boto3.client("batch", region_name="us-east-1", aws_access_key_id="k",
                          aws_secret_access_key="k")
    with Stubber(client) as stub:
        _runnable(stub, "job-1", "MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT - The job resource "
                  "requirement (vCPU/memory/GPU) is higher than that can be met by the CE(s) "
                  "attached to the job queue.")
        flight = JobsInFlight(BatchClient(client, None), BatchSettings(), journal=None)
        flight.track(0, _plain("job-1"), submitted=False)
        with pytest.raises(BatchJobError, match=r"job-1 \(big\) can never start.*"
                           r"JOB_RESOURCE_REQUIREMENT.*lower the node's vcpus"):
            flight.refresh()


def test_a_job_waiting_long_for_capacity_is_warned_about_once_with_batchs_reason(caplog):
    import logging

    caplog.set_level(logging.INFO, logger="nipype_batch")
    client = boto3.client("batch", region_name="us-east-1", aws_access_key_id="k",
                          aws_secret_access_key="k")
    reason = "CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY - Service cannot fulfill the capacity"
    with Stubber(client) as stub:
        _runnable(stub, "job-1", reason)
        _runnable(stub, "job-1", reason)
        flight = JobsInFlight(BatchClient(client, None),
                              BatchSettings(runnable_warning_s=0.0), journal=None)
        flight.track(0, _plain("job-1"), submitted=False)
        flight.refresh()
        flight.refresh()
    warnings = [r.getMessage() for r in caplog.records if "RUNNABLE" in r.getMessage()]
    assert len(warnings) == 1 and "INSUFFICIENT_INSTANCE_CAPACITY" in warnings[0]
    shown = [r.getMessage() for r in caplog.records if "waits for an instance" in r.getMessage()]
    assert len(shown) == 1 and "INSUFFICIENT_INSTANCE_CAPACITY" in shown[0]  # once, not per poll
