"""The simulated Batch (jobs run the real runner in worker processes, without containers), and
the driver at scale against it: array jobs, API call budgets, failures.

Needs the emulator (moto server) but not Docker.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from nipype import Workflow

from examples.scale.workflows import double, mapnode_workflow
from nipype_batch.driver.packs import SHORT_NODE_S
from nipype_batch.packing import PackingModel, chunk_size
from nipype_batch.simulated import SimulatedStack
from tests.helpers import assert_same_tree, node_dirs

pytestmark = pytest.mark.simulated


def _fails_on_7(x):
    if x == 7:
        raise RuntimeError("seven fails on purpose")
    return x


def _mapped(base: Path, n: int, function=double) -> Workflow:
    return mapnode_workflow(str(base), n, function)


@pytest.fixture(scope="module")
def simulated():
    stack = SimulatedStack(workers=2)
    yield stack
    stack.stop()


@pytest.fixture
def directory_stack(tmp_path):
    stack = SimulatedStack(workers=2, s3_directory=str(tmp_path / "s3"))
    yield stack
    stack.stop()


def test_mapnode_on_the_simulated_batch_matches_linear(tmp_path, simulated, capsys):
    _mapped(tmp_path / "linear", 40).run(plugin="Linear")
    plugin = simulated.plugin()
    before = dict(simulated.cloud.api_calls.counts)
    capsys.readouterr()
    _mapped(tmp_path / "sim", 40).run(plugin=plugin)
    # not a terminal: progress comes as plain lines on stderr, one per change of state
    err = capsys.readouterr().err
    progress = [line for line in err.splitlines() if "| AWS Batch jobs:" in line]
    assert progress and progress[0].startswith("[  0%] 0 of 41 nodes done")
    assert "nipype-batch: 41 of 41 nodes done, 0 failed" in err
    assert "\x1b[" not in err
    assert len(progress) == len(set(progress)), "a line repeats an unchanged state"
    calls = {k: v - before.get(k, 0) for k, v in simulated.cloud.api_calls.counts.items()}

    assert node_dirs(tmp_path / "linear" / "mapped") == node_dirs(tmp_path / "sim" / "mapped")
    assert_same_tree(tmp_path / "linear" / "mapped", tmp_path / "sim" / "mapped")
    assert len(plugin.array_job_ids) == 1 and len(plugin.submitted_job_ids) == 41
    assert calls["batch.SubmitJob"] == 2  # the array and `total`
    # the array's children are described once, after it ends, in one call of <= 100 ids
    children = simulated.batch.jobs[plugin.array_job_ids[0]].children
    assert len(children) == 40 and all(c.status == "SUCCEEDED" for c in children)


def test_a_failing_child_fails_its_subnode_and_the_array(tmp_path, simulated):
    wf = _mapped(tmp_path, 12, function=_fails_on_7)
    wf.config["execution"]["crashdump_dir"] = str(tmp_path / "crashes")
    plugin = simulated.plugin()
    with pytest.raises(RuntimeError, match="seven fails on purpose"):
        wf.run(plugin=plugin)
    parent = simulated.batch.jobs[plugin.array_job_ids[0]]
    assert parent.status == "FAILED" and parent.reason == "1 child jobs failed"
    assert len(list((tmp_path / "crashes").glob("crash-*_each7-*.pklz"))) == 1
    assert not (tmp_path / "mapped" / "total").exists()


def test_describe_jobs_refuses_more_than_100_ids(simulated):
    client = simulated.cloud.batch.batch
    with pytest.raises(ClientError, match="at most 100"):
        client.describe_jobs(jobs=[f"id-{i}" for i in range(101)])


@pytest.mark.scale
def test_a_10000_way_mapnode_completes_within_the_api_budget(tmp_path, directory_stack):
    n = 10_000
    plugin = directory_stack.plugin({"fetch_outputs": False})
    _mapped(tmp_path, n).run(plugin=plugin)

    calls = directory_stack.cloud.api_calls.counts
    assert len(plugin.array_job_ids) == 1
    assert calls["batch.SubmitJob"] == 2  # one array of 10,000, then `total`
    assert calls["batch.RegisterJobDefinition"] == 1
    # per poll: one DescribeJobs for the array (its summary), then 100 for its children
    # once, when it has ended; `total` adds one per poll
    polls = plugin.poll_count
    assert calls["batch.DescribeJobs"] <= polls + math.ceil(n / 100)
    # the driver's S3 requests: a payload per job and a bundle fetched per job (and the
    # preflight's probe); no listing per node
    assert calls["s3.PutObject"] == n + 1 + 1
    assert calls["s3.GetObject"] == n + 1 + 1
    assert calls["s3.ListObjectsV2"] <= 20
    total = Path(tmp_path / "mapped" / "total" / "result_total.pklz")
    assert total.exists()


def test_subnodes_deleted_locally_are_recovered_from_s3_without_jobs(tmp_path, simulated):
    import shutil

    first = simulated.plugin({"report": False})
    _mapped(tmp_path, 6).run(plugin=first)
    shutil.rmtree(tmp_path / "mapped")  # the driver's copy is gone; S3 still holds the results

    rerun = simulated.plugin({"report": False})
    _mapped(tmp_path, 6).run(plugin=rerun)
    # each subnode found its committed files in the one listing of their mapflow folder
    assert rerun.submitted_job_ids == []
    assert len(list((tmp_path / "mapped" / "each" / "mapflow").glob("_each*/result_*.pklz"))) == 6
    assert (tmp_path / "mapped" / "total" / "result_total.pklz").exists()


# ---- Batch's latency, played back from a profile ------------------------------------------


def _sleeps(seconds):
    import time

    time.sleep(seconds)
    return seconds


class _Service:
    """A SimulatedBatch spoken to through its botocore client, with one job definition.

    Its jobs carry no payload: the runner exits at once (code 2), which is all it takes to
    watch Batch's states and timings around them.
    """

    def __init__(self, profile, time_scale):
        import boto3

        from nipype_batch.local.simulated_batch import REGION, SimulatedBatch

        self.batch = SimulatedBatch({}, workers=2, profile=profile, time_scale=time_scale)
        session = boto3.Session(aws_access_key_id="x", aws_secret_access_key="x",
                                region_name=REGION)
        self.client = self.batch.client(session)
        self.definition = self.client.register_job_definition(
            jobDefinitionName="no-payload", type="container",
            containerProperties={"image": "job:1", "resourceRequirements": [
                {"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "512"}]},
        )["jobDefinitionArn"]

    def submit(self, count=1):
        return [self.client.submit_job(jobName=f"j{i}", jobQueue="simulated",
                                       jobDefinition=self.definition)["jobId"]
                for i in range(count)]

    def wait(self, ids, timeout_s=20.0):
        """Poll until every job has finished; return the distinct statuses each went through."""
        import time

        seen: dict[str, list[str]] = {i: [] for i in ids}
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for job in self.client.describe_jobs(jobs=ids)["jobs"]:
                if not seen[job["jobId"]] or seen[job["jobId"]][-1] != job["status"]:
                    seen[job["jobId"]].append(job["status"])
            if all(s and s[-1] in ("SUCCEEDED", "FAILED") for s in seen.values()):
                return seen
            time.sleep(0.005)
        raise AssertionError(f"jobs still unfinished after {timeout_s} s: {seen}")

    def timeline(self, job_id):
        return self.batch.jobs[job_id].timeline


@pytest.fixture
def service(request):
    made = []

    def make(profile, time_scale=1 / 100):
        made.append(_Service(profile, time_scale))
        return made[-1]

    yield make
    for each in made:
        each.batch.shutdown()


def _profile(**delays):
    from nipype_batch.latency import Delay, LatencyProfile

    return LatencyProfile("test", **{k: Delay.fixed(v) if isinstance(v, int | float) and
                                     k not in ("image_mb", "pull_mb_per_s", "host_vcpus",
                                               "max_vcpus") else v
                                     for k, v in delays.items()})


def test_a_job_goes_through_batch_states_in_order_in_simulated_time(service):
    import time

    svc = service(_profile(submitted_to_runnable=10, runnable_to_starting=20,
                           starting_to_running=30, running_to_done=5))
    started = time.monotonic()
    [job_id] = svc.submit()
    seen = svc.wait([job_id])[job_id]
    real_s = time.monotonic() - started

    # RUNNING lasts as long as the runner (milliseconds): a poll may miss it
    assert [s for s in seen if s != "RUNNING"] == ["SUBMITTED", "RUNNABLE", "STARTING", "FAILED"]
    t = svc.timeline(job_id)
    assert t["RUNNABLE"] - t["SUBMITTED"] == pytest.approx(10, abs=0.01)
    assert t["STARTING"] - t["RUNNABLE"] == pytest.approx(20, abs=0.01)
    # the worker starts the job a few real milliseconds after it is due (x100 here)
    assert t["RUNNING"] - t["STARTING"] == pytest.approx(30, abs=2)
    # DescribeJobs' timestamps are simulated milliseconds: a minute passed in under a second
    [job] = svc.client.describe_jobs(jobs=[job_id])["jobs"]
    assert (job["startedAt"] - job["createdAt"]) / 1000 == pytest.approx(60, abs=2)
    assert t["FAILED"] - job["stoppedAt"] / 1000 == pytest.approx(5, abs=0.01)
    assert real_s < 5


def test_jobs_wait_runnable_while_the_queue_s_vcpus_are_taken(service):
    svc = service(_profile(starting_to_running=20, host_vcpus=2, max_vcpus=2))
    ids = svc.submit(4)
    svc.wait(ids)
    first, second, third, fourth = (svc.timeline(i) for i in ids)
    assert len(svc.batch.hosts) == 1  # the queue allows one host of 2 vCPUs
    # two start at once; the others stay RUNNABLE until a container exits
    assert first["STARTING"] == pytest.approx(first["SUBMITTED"], abs=0.01)
    assert second["STARTING"] == pytest.approx(second["SUBMITTED"], abs=0.01)
    # each late job is placed the moment an earlier one's container exits: not before (no
    # room), not later (the wait is the container's, whatever real time the runner took)
    exits = sorted(job["EXITED"] for job in (first, second))
    starts = sorted(job["STARTING"] for job in (third, fourth))
    assert starts == pytest.approx(exits, abs=0.05)
    assert min(starts) >= min(job["STARTING"] for job in (first, second)) + 20  # a start's wait


def test_the_first_jobs_pay_the_scale_up_and_later_ones_do_not(service):
    svc = service(_profile(host_launch=120, starting_to_running=1, host_vcpus=4, max_vcpus=4),
                  time_scale=1 / 200)
    cold = svc.submit(2)
    svc.wait(cold)
    warm = svc.submit(2)
    svc.wait(warm)
    [host] = svc.batch.hosts
    for job_id in cold:  # submitted a few real milliseconds apart: within 1 s of the launch
        t = svc.timeline(job_id)
        assert t["STARTING"] == host.ready_at
        assert t["STARTING"] - t["SUBMITTED"] == pytest.approx(120, abs=1)
    for job_id in warm:
        t = svc.timeline(job_id)
        assert t["STARTING"] - t["SUBMITTED"] == pytest.approx(0, abs=0.01)


def test_the_image_is_pulled_once_per_host(service):
    svc = service(_profile(host_launch=5, image_mb=100, pull_mb_per_s=10, host_vcpus=2,
                           max_vcpus=4))
    first = svc.submit(4)  # two hosts of 2 vCPUs, each pulling for 10 s
    svc.wait(first)
    again = svc.submit(2)
    svc.wait(again)
    assert len(svc.batch.hosts) == 2
    for job_id in first:
        t = svc.timeline(job_id)
        assert t["RUNNING"] - t["STARTING"] == pytest.approx(10, abs=2)
    for job_id in again:
        t = svc.timeline(job_id)
        assert t["RUNNING"] - t["STARTING"] == pytest.approx(0, abs=2)


def test_a_job_larger_than_any_host_stays_runnable_with_batch_s_reason(service):
    svc = service(_profile(host_vcpus=2, max_vcpus=4))
    arn = svc.client.register_job_definition(
        jobDefinitionName="big", type="container",
        containerProperties={"image": "job:1", "resourceRequirements": [
            {"type": "VCPU", "value": "8"}, {"type": "MEMORY", "value": "512"}]},
    )["jobDefinitionArn"]
    job_id = svc.client.submit_job(jobName="big", jobQueue="simulated", jobDefinition=arn)["jobId"]
    [job] = svc.client.describe_jobs(jobs=[job_id])["jobs"]
    assert job["status"] == "RUNNABLE"
    assert job["statusReason"].startswith("MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT")


def test_draws_repeat_with_the_seed_and_differ_with_another():
    from nipype_batch.latency import AWS_EC2

    def draws(profile):
        return [profile.runnable_to_starting.draw(profile.rng("job", n, None))
                for n in range(20)]

    assert draws(AWS_EC2) == draws(AWS_EC2)
    assert draws(AWS_EC2) != draws(AWS_EC2.with_seed(1))
    assert all(5.0 <= d <= 30.0 for d in draws(AWS_EC2))


def test_named_profiles_overheads_are_in_their_measured_ranges():
    from nipype_batch.latency import AWS_EC2, AWS_FARGATE, LOCAL_STACK, ZERO

    assert ZERO.job_overhead_s() == 0 and ZERO.cold_start_s() == 0
    # NOTES.md: ~1.2 s submit-to-SUCCEEDED for a trivial job on the local stack
    assert LOCAL_STACK.job_overhead_s() == pytest.approx(1.2, abs=0.1)
    # "tens of seconds to minutes" per job on AWS; Fargate launches a host for every job
    assert 20 <= AWS_EC2.job_overhead_s() <= 120
    assert AWS_FARGATE.job_overhead_s() > AWS_EC2.job_overhead_s()
    assert AWS_EC2.cold_start_s() > 60 and AWS_FARGATE.cold_start_s() == 0


def test_a_node_sleeping_a_minute_takes_a_simulated_minute_in_a_second(tmp_path):
    import time

    from nipype import Function, Node, Workflow

    from nipype_batch.latency import LOCAL_STACK

    stack = SimulatedStack(workers=2, profile=LOCAL_STACK, time_scale=1 / 60)
    try:
        wf = Workflow(name="slow", base_dir=str(tmp_path))
        node = Node(Function(input_names=["seconds"], output_names=["out"], function=_sleeps),
                    name="sleeper")
        node.inputs.seconds = 60
        wf.add_nodes([node])
        plugin = stack.plugin({"report": False, "poll_min_s": 0.05, "poll_max_s": 0.2})
        started = time.monotonic()
        wf.run(plugin=plugin)
        real_s = time.monotonic() - started
        [job_id] = plugin.submitted_job_ids
        job = stack.batch.jobs[job_id]
    finally:
        stack.stop()
    from nipype.utils.filemanip import loadpkl

    result = loadpkl(tmp_path / "slow" / "sleeper" / "result_sleeper.pklz")
    assert result.runtime.duration == pytest.approx(60, abs=3)  # Nipype's own timing
    # the job also stages its files: real CPU work, which counts 60 times over in simulated
    # time (sim_clock's caveat), bounded by the run's real duration
    assert 60 <= (job.stopped_at - job.started_at) / 1000 < 60 + real_s * 60
    assert real_s < 10


def test_a_mapnode_measured_short_runs_in_chunks_and_matches_linear(tmp_path, simulated):
    _mapped(tmp_path / "linear", 40).run(plugin="Linear")
    # Without a history a subnode is taken as 10 s: chunks of a few, as long as a job waits.
    first = simulated.plugin({"report": False, "job_overhead_s": 30})
    _mapped(tmp_path / "first", 40).run(plugin=first)
    size = chunk_size(SHORT_NODE_S, 40, PackingModel(job_overhead_s=30))
    assert 1 < size < 40
    assert len(first.array_job_ids) == 1
    assert len(first.submitted_job_ids) == math.ceil(40 / size) + 1

    # The first run measured them (milliseconds each): one job runs them all.
    chunked = simulated.plugin({"report": False, "job_overhead_s": 30})
    _mapped(tmp_path / "sim", 40).run(plugin=chunked)

    assert len(chunked.submitted_job_ids) == 2  # every subnode in one job, then `total`
    assert node_dirs(tmp_path / "linear" / "mapped") == node_dirs(tmp_path / "sim" / "mapped")
    assert_same_tree(tmp_path / "linear" / "mapped", tmp_path / "sim" / "mapped")
    off = simulated.plugin({"report": False, "job_overhead_s": 30, "packing": "off"})
    _mapped(tmp_path / "off", 40).run(plugin=off)
    assert len(off.submitted_job_ids) == 41  # 'off': a job per subnode, history or not
