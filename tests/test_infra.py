"""``nipype-batch infra``: up, up again, down, against in-process moto and the local stack."""

from __future__ import annotations

import json
import time
from typing import Any

import boto3
import pytest
from moto import mock_aws
from nipype import Function, Node, Workflow

from nipype_batch.aws.iam import job_role_policy
from nipype_batch.cli import main
from nipype_batch.errors import ConfigurationError, InfrastructureError
from nipype_batch.infra import TAG_KEY, Clients, InfraSpec, Infrastructure, connect_infra
from nipype_batch.profiles import Profile, load_profile, profile_path, save_profile
from nipype_batch.provenance import read_provenance
from nipype_batch.settings import BatchSettings

REGION = "us-east-1"
BUCKET = "nipype-batch-lab-123456789012-us-east-1"  # moto's account


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Profiles in the test's own directory; no region or backend from the machine."""
    monkeypatch.setenv("NIPYPE_BATCH_HOME", str(tmp_path / "home"))
    for name in ("NIPYPE_BATCH_BACKEND", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def clients():
    """Clients of an in-process moto account that knows AWS's managed policies, as IAM does."""
    with mock_aws(config={"iam": {"load_aws_managed_policies": True}}):
        yield Clients.from_session(boto3.Session(region_name=REGION))


def infra(clients: Clients, **spec: Any) -> Infrastructure:
    return Infrastructure(InfraSpec(**{"name": "lab", **spec}), clients, iam_settle_s=0,
                          poll_s=0.01, wait_timeout_s=10)


def yes(_resources: Any) -> bool:
    return True


def inventory(c: Clients) -> dict[str, set[str]]:
    """Every resource of the kinds infra makes, by name, tagged or not."""
    return {
        "buckets": {b["Name"] for b in c.s3.list_buckets()["Buckets"]},
        "repositories": {r["repositoryName"]
                         for r in c.ecr.describe_repositories()["repositories"]},
        # Batch's service-linked role is the account's, kept by AWS: up makes it if missing
        # and down leaves it, as other sets and other Batch users share it
        "roles": {r["RoleName"] for r in c.iam.list_roles()["Roles"]
                  if not r.get("Path", "").startswith("/aws-service-role/")},
        "instance profiles": {p["InstanceProfileName"]
                              for p in c.iam.list_instance_profiles()["InstanceProfiles"]},
        "compute environments": {e["computeEnvironmentName"] for e in
                                 c.batch.describe_compute_environments()["computeEnvironments"]},
        "job queues": {q["jobQueueName"] for q in c.batch.describe_job_queues()["jobQueues"]},
    }


def leftovers(c: Clients, name: str) -> list[str]:
    """Resources named for infra ``name`` that still exist."""
    return sorted(n for names in inventory(c).values() for n in names
                  if n.startswith(f"nipype-batch-{name}"))


def snapshot(c: Clients) -> dict[str, Any]:
    """What a second ``up`` could change: configurations, policies, tags, states."""
    roles = sorted(inventory(c)["roles"])
    return {
        "bucket": [c.s3.get_bucket_encryption(Bucket=BUCKET)["ServerSideEncryptionConfiguration"],
                   c.s3.get_public_access_block(Bucket=BUCKET)["PublicAccessBlockConfiguration"],
                   c.s3.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"],
                   c.s3.get_bucket_tagging(Bucket=BUCKET)["TagSet"]],
        "repositories": c.ecr.describe_repositories()["repositories"],
        "roles": [(c.iam.get_role(RoleName=r)["Role"],
                   c.iam.list_attached_role_policies(RoleName=r)["AttachedPolicies"],
                   c.iam.list_role_policies(RoleName=r)["PolicyNames"]) for r in roles],
        "instance profiles": c.iam.list_instance_profiles()["InstanceProfiles"],
        "compute environments": c.batch.describe_compute_environments()["computeEnvironments"],
        "job queues": c.batch.describe_job_queues()["jobQueues"],
    }


# ---- up ----------------------------------------------------------------------------------


@pytest.mark.moto
def test_up_makes_a_tagged_secured_set_and_its_profile(clients: Clients) -> None:
    profile, resources = infra(clients).up()

    assert {r.state for r in resources} == {"created"}
    assert [r.kind for r in resources] == [
        "bucket", "repository", "job-role", "execution-role", "batch-service-role",
        "instance-role", "instance-profile", "compute-environment", "job-queue"]
    s3, iam, batch = clients.s3, clients.iam, clients.batch
    assert s3.get_bucket_tagging(Bucket=BUCKET)["TagSet"] == [{"Key": TAG_KEY, "Value": "lab"}]
    (rule,) = s3.get_bucket_encryption(Bucket=BUCKET)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}
    assert all(s3.get_public_access_block(Bucket=BUCKET)["PublicAccessBlockConfiguration"]
               .values())
    (lifecycle,) = s3.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]
    assert lifecycle["Filter"] == {"Prefix": "nipype/"} and lifecycle["Expiration"] == {"Days": 30}
    job_policy = iam.get_role_policy(RoleName="nipype-batch-lab-job", PolicyName="nipype-batch")
    assert job_policy["PolicyDocument"] == job_role_policy(BUCKET, "nipype")
    assert not iam.list_attached_role_policies(RoleName="nipype-batch-lab-job")["AttachedPolicies"]
    (execution,) = iam.list_attached_role_policies(
        RoleName="nipype-batch-lab-execution")["AttachedPolicies"]
    assert execution["PolicyArn"].endswith("service-role/AmazonECSTaskExecutionRolePolicy")
    (ce,) = batch.describe_compute_environments()["computeEnvironments"]
    assert ce["tags"] == {TAG_KEY: "lab"} and ce["status"] == "VALID"
    assert ce["computeResources"]["type"] == "EC2"
    assert ce["computeResources"]["maxvCpus"] == 64 and ce["computeResources"]["minvCpus"] == 0
    assert ce["computeResources"]["instanceRole"].endswith(
        ":instance-profile/nipype-batch-lab-instance")
    # Batch's service-linked role, not one that may not have reached Batch yet
    # (AWS names it AWSServiceRoleForBatch; moto spells its end in lower case)
    assert ":role/aws-service-role/batch.amazonaws.com/AWSServiceRoleFor" in ce["serviceRole"]
    (queue,) = batch.describe_job_queues()["jobQueues"]
    assert queue["state"] == "ENABLED" and queue["tags"] == {TAG_KEY: "lab"}
    assert queue["computeEnvironmentOrder"][0]["computeEnvironment"] == ce["computeEnvironmentArn"]

    assert profile.settings == {
        "backend": "aws", "region": REGION, "job_queue": "nipype-batch-lab",
        "bucket": f"s3://{BUCKET}/nipype", "ecr_repository": "nipype-batch-lab",
        "job_role_arn": "arn:aws:iam::123456789012:role/nipype-batch-lab-job",
    }
    written = profile_path("lab").read_text()
    assert load_profile("lab") == profile
    credentials = boto3.Session().get_credentials()
    assert credentials.access_key not in written and credentials.secret_key not in written


@pytest.mark.moto
def test_up_for_graviton_picks_arm_families_and_the_profile_says_arm64(clients) -> None:
    profile, _resources = infra(clients, architecture="arm64").up()
    (ce,) = clients.batch.describe_compute_environments()["computeEnvironments"]
    assert ce["computeResources"]["instanceTypes"] == ["m7g", "c7g", "r7g"]
    assert profile.settings["architecture"] == "arm64"
    with pytest.raises(InfrastructureError, match="architecture 'sparc' is not known"):
        InfraSpec(name="lab", architecture="sparc")


@pytest.mark.moto
def test_up_twice_changes_nothing(clients: Clients) -> None:
    infra(clients).up()
    before = snapshot(clients)
    _profile, again = infra(clients).up()
    assert {r.state for r in again} == {"unchanged"}
    assert snapshot(clients) == before


@pytest.mark.moto
def test_up_again_repairs_what_drifted(clients: Clients) -> None:
    infra(clients).up()
    clients.s3.delete_public_access_block(Bucket=BUCKET)
    clients.batch.update_job_queue(jobQueue="nipype-batch-lab", state="DISABLED")
    _profile, again = infra(clients).up()
    changed = {r.kind: r.detail for r in again if r.state == "updated"}
    assert changed == {"bucket": "public access block", "job-queue": "enabled"}
    assert clients.batch.describe_job_queues()["jobQueues"][0]["state"] == "ENABLED"


@pytest.mark.moto
def test_up_refuses_a_name_taken_by_a_resource_it_did_not_make(clients: Clients) -> None:
    clients.iam.create_role(RoleName="nipype-batch-lab-job", AssumeRolePolicyDocument="{}")
    before = inventory(clients)
    with pytest.raises(InfrastructureError,
                       match=r"job-role nipype-batch-lab-job exists, not tagged "
                             r"nipype-batch:infra=lab.*choose another --name"):
        infra(clients).up()
    assert inventory(clients) == before  # nothing was created
    infra(clients).down(yes)
    assert "nipype-batch-lab-job" in inventory(clients)["roles"]


@pytest.mark.moto
def test_a_changed_platform_is_refused_not_half_applied(clients: Clients) -> None:
    infra(clients).up()
    with pytest.raises(InfrastructureError, match=r"runs EC2 .* not FARGATE.*infra down"):
        infra(clients, platform="fargate").up()


@pytest.mark.parametrize("bad, match", [
    ({"name": "Lab_1"}, "lowercase letters"),
    ({"platform": "gpu"}, "'ec2' \\(on-demand\\), 'spot' or 'fargate'"),
    ({"max_vcpus": 0}, "max_vcpus=0"),
    ({"instance_types": []}, "\\['optimal'\\]"),
])
def test_spec_is_validated(bad: dict, match: str) -> None:
    with pytest.raises(InfrastructureError, match=match):
        InfraSpec(**bad)


# ---- down --------------------------------------------------------------------------------


@pytest.mark.moto
@pytest.mark.parametrize("platform", ["ec2", "spot", "fargate"])
def test_down_removes_exactly_what_up_made(clients: Clients, platform: str) -> None:
    clients.s3.create_bucket(Bucket="someone-elses-data")
    clients.iam.create_role(RoleName="unrelated", AssumeRolePolicyDocument="{}")
    before = inventory(clients)
    infra(clients, name="other").up()  # another set, which must survive
    with_other = inventory(clients)
    profile, _made = infra(clients, platform=platform).up()
    ce = clients.batch.describe_compute_environments(
        computeEnvironments=["nipype-batch-lab"])["computeEnvironments"][0]
    assert ce["computeResources"]["type"] == platform.upper()
    # a Fargate set's profile makes the plugin register Fargate job definitions
    assert profile.settings.get("platform", "ec2") == platform
    assert bool(profile.settings.get("execution_role_arn")) == (platform == "fargate")
    clients.s3.put_object(Bucket=BUCKET, Key="nipype/work/node/result.pklz", Body=b"staged")

    asked: list[str] = []
    deleted = infra(clients).down(lambda ours: asked.extend(r.name for r in ours) or True)

    assert BUCKET in asked
    assert {r.state for r in deleted} <= {"deleted", "absent"}
    assert inventory(clients) == with_other
    assert not profile_path("lab").exists() and profile_path("other").exists()
    infra(clients, name="other").down(yes)
    assert inventory(clients) == before


@pytest.mark.moto
def test_down_unconfirmed_deletes_nothing(clients: Clients) -> None:
    infra(clients).up()
    made = inventory(clients)
    assert infra(clients).down(lambda _ours: False) == []
    assert inventory(clients) == made and profile_path("lab").exists()


@pytest.mark.moto
def test_down_refuses_while_a_job_is_in_flight(clients: Clients) -> None:
    infra(clients).up()
    made = inventory(clients)
    batch = clients.batch
    batch.register_job_definition(
        jobDefinitionName="waits", type="container",
        containerProperties={"image": "busybox", "command": ["true"], "resourceRequirements": [
            {"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "128"}]})
    # waits for a job that never ends, so it stays in flight without a container
    job = batch.submit_job(jobName="fit-subject-01", jobQueue="nipype-batch-lab",
                           jobDefinition="waits", dependsOn=[{"jobId": "never-ends"}])
    try:
        asked = []
        with pytest.raises(InfrastructureError,
                           match=r"job\(s\) in flight: fit-subject-01 "
                                 r"\((SUBMITTED|PENDING|RUNNABLE)\).*nipype-batch cancel"):
            infra(clients).down(asked.append)
        assert asked == []  # refused before asking
        assert inventory(clients) == made
    finally:
        batch.terminate_job(jobId=job["jobId"], reason="test over")
    deadline = time.monotonic() + 10
    while infra(clients).jobs_in_flight() and time.monotonic() < deadline:
        time.sleep(0.05)
    infra(clients).down(yes)
    assert leftovers(clients, "lab") == []


@pytest.mark.moto
def test_down_refuses_a_job_submitted_while_it_asked(clients: Clients) -> None:
    infra(clients).up()
    batch = clients.batch
    batch.register_job_definition(
        jobDefinitionName="waits", type="container",
        containerProperties={"image": "busybox", "command": ["true"], "resourceRequirements": [
            {"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "128"}]})
    jobs = []

    def submit_then_confirm(_ours: Any) -> bool:
        jobs.append(batch.submit_job(jobName="late", jobQueue="nipype-batch-lab",
                                     jobDefinition="waits", dependsOn=[{"jobId": "never"}]))
        return True

    try:
        with pytest.raises(InfrastructureError, match="late"):
            infra(clients).down(submit_then_confirm)
        assert batch.describe_job_queues()["jobQueues"][0]["state"] == "ENABLED"
    finally:
        for job in jobs:
            batch.terminate_job(jobId=job["jobId"], reason="test over")


@pytest.mark.moto
def test_down_command_needs_yes_without_a_terminal(clients: Clients, capsys) -> None:
    infra(clients).up()
    made = inventory(clients)
    assert main(["infra", "down", "--name", "lab", "--region", REGION]) == 1
    assert "pass --yes" in capsys.readouterr().err
    assert inventory(clients) == made

    assert main(["infra", "show", "--name", "lab", "--json"]) == 0  # region from the profile
    shown = json.loads(capsys.readouterr().out)
    assert {r["state"] for r in shown["resources"]} == {"ours"}

    assert main(["infra", "down", "--name", "lab", "--yes"]) == 0
    assert "profile removed" in capsys.readouterr().out
    assert leftovers(clients, "lab") == []


@pytest.mark.moto
def test_up_command_keeps_the_last_spec_and_refuses_a_changed_platform(clients, capsys) -> None:
    infra(clients, platform="spot", max_vcpus=16).up()  # roles exist: no wait for IAM below
    assert main(["infra", "up", "--name", "lab", "--region", REGION, "--json"]) == 0
    done = json.loads(capsys.readouterr().out)
    assert {r["state"] for r in done["resources"]} == {"unchanged"}  # still spot, 16 vCPUs
    assert done["settings"]["job_queue"] == "nipype-batch-lab"
    assert main(["infra", "up", "--name", "lab", "--platform", "ec2"]) == 1
    assert "runs SPOT" in capsys.readouterr().err


def test_local_command_needs_the_shared_local_stack(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("NIPYPE_BATCH_LOCAL_STATE", str(tmp_path / "none.json"))
    assert main(["infra", "show", "--local"]) == 1
    assert "nipype-batch local up" in capsys.readouterr().err


# ---- profiles ----------------------------------------------------------------------------


def test_profile_gives_queue_and_bucket_under_explicit_plugin_args() -> None:
    save_profile(Profile("x", {"backend": "aws", "job_queue": "nipype-batch-x",
                               "bucket": "s3://nipype-batch-x-1-us-east-1/nipype",
                               "region": "us-west-2", "ecr_repository": "nipype-batch-x",
                               "job_role_arn": "arn:aws:iam::1:role/nipype-batch-x-job"}))
    settings = BatchSettings.from_plugin_args({"profile": "x"})
    assert (settings.backend, settings.job_queue, settings.bucket, settings.region) == (
        "aws", "nipype-batch-x", "s3://nipype-batch-x-1-us-east-1/nipype", "us-west-2")
    assert settings.ecr_repository == "nipype-batch-x"
    assert settings.job_role_arn == "arn:aws:iam::1:role/nipype-batch-x-job"
    mine = BatchSettings.from_plugin_args({"profile": "x", "job_queue": "gpu", "vcpus": 4})
    assert (mine.job_queue, mine.vcpus, mine.bucket) == ("gpu", 4, settings.bucket)


def test_unknown_profile_says_how_to_make_it() -> None:
    with pytest.raises(ConfigurationError, match=r"no profile 'nope'.*infra up --name nope"):
        BatchSettings.from_plugin_args({"profile": "nope"})


# ---- the local stack ---------------------------------------------------------------------


def _double(x):
    return 2 * x


@pytest.mark.docker
def test_up_run_on_its_profile_and_down_on_the_local_stack(local_stack, tmp_path) -> None:
    spec = InfraSpec(name="e2e", platform="spot", max_vcpus=8)
    local = connect_infra(spec, local=True)
    before = inventory(local.clients)
    profile, made = local.up()
    assert {r.state for r in made} == {"created"}
    assert {r.state for r in connect_infra(spec, local=True).up()[1]} == {"unchanged"}
    assert profile.settings["backend"] == "local"

    wf = Workflow(name="on_profile", base_dir=str(tmp_path))
    node = Node(Function(input_names=["x"], output_names=["y"], function=_double), name="double")
    node.inputs.x = 21
    wf.add_nodes([node])
    wf.run(plugin="AWSBatch", plugin_args={"profile": "e2e"})
    record = read_provenance(str(tmp_path / "on_profile" / "double"))
    assert record["job"]["job_queue"] == "nipype-batch-e2e"
    bucket = profile.settings["bucket"].removeprefix("s3://").split("/")[0]
    assert local.clients.s3.list_objects_v2(Bucket=bucket)["KeyCount"] > 0  # staged there

    local.down(yes)
    assert inventory(local.clients) == before


class _SlowRoleBatch:
    """Batch as it answers while a new service role has not reached it: the compute
    environment goes INVALID until the role is sent again (shaped as DescribeComputeEnvironments
    documents it)."""

    def __init__(self, status: str = "INVALID") -> None:
        self.status, self.updates = status, []

    def describe_compute_environments(self, computeEnvironments):
        return {"computeEnvironments": [{
            "computeEnvironmentName": computeEnvironments[0], "computeEnvironmentArn": "arn:ce",
            "status": self.status, "state": "ENABLED", "statusReason": (
                "CLIENT_ERROR - Not authorized to perform sts:AssumeRole"
                if self.status == "INVALID" else "ComputeEnvironment Healthy"),
            "computeResources": {"type": "EC2", "maxvCpus": 64, "instanceTypes": ["optimal"]},
        }]}

    def update_compute_environment(self, **update):
        self.updates.append(update)
        self.status = "VALID" if "serviceRole" in update else "UPDATING"


def test_an_environment_invalid_for_a_role_not_yet_propagated_gets_the_role_again() -> None:
    from nipype_batch.infra.compute import ComputeEnvironment, Waiter
    from nipype_batch.infra.spec import Resource

    batch = _SlowRoleBatch()
    ce = ComputeEnvironment(batch, None, InfraSpec(name="lab"), Waiter(5, 0.01),
                            role_retry_s=(0.0,))
    resource = Resource("compute-environment", "nipype-batch-lab", "ours", "arn:ce")
    ce.ensure(resource, "arn:role/service", "arn:profile")
    assert {"computeEnvironment": "nipype-batch-lab", "serviceRole": "arn:role/service"} in \
        batch.updates
    # and `down` deletes an INVALID one rather than waiting for VALID for ever
    stuck = _SlowRoleBatch()
    stuck.delete_compute_environment = lambda **_: setattr(stuck, "status", "DELETED")
    stuck.update_compute_environment = lambda **_: None
    ComputeEnvironment(stuck, None, InfraSpec(name="lab"), Waiter(5, 0.01)).delete(
        "nipype-batch-lab")
    assert stuck.status == "DELETED"
