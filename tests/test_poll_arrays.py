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
