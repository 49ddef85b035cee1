"""The local stack: clear error without Docker, orphan sweep, nothing left running."""

from __future__ import annotations

import time

import pytest
from nipype import Function, Node, Workflow

from nipype_batch import BatchPlugin, LocalStackError
from nipype_batch.images.docker import connect_docker
from nipype_batch.local.stack import sweep_containers


def test_no_docker_daemon_says_how_to_start_one(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such.sock")
    with pytest.raises(LocalStackError, match=r"no Docker daemon answers.*dockerd.*docker\.io"):
        connect_docker()


@pytest.mark.docker
def test_sweep_removes_containers_of_dead_processes_only(local_stack):
    docker = local_stack.docker
    dead = docker.containers.create("nipype-batch-base:bookworm", ["sleep", "60"],
                                    name="nbl999999-left-by-a-crash")
    mine = docker.containers.create("nipype-batch-base:bookworm", ["sleep", "60"],
                                    name=f"{local_stack.job_name_prefix}still-mine")
    try:
        assert sweep_containers(docker) == 1
        names = {c.name for c in docker.containers.list(all=True)}
        assert dead.name not in names and mine.name in names
    finally:
        mine.remove(force=True)


def _sleep(seconds):
    import time

    time.sleep(seconds)
    return seconds


def _fail(seconds):
    raise RuntimeError("fails fast")


@pytest.mark.docker
def test_stop_on_first_crash_terminates_jobs_in_flight(tmp_path, local_args, local_stack):
    wf = Workflow(name="stops", base_dir=str(tmp_path))
    wf.config["execution"]["stop_on_first_crash"] = "true"
    slow = Node(Function(input_names=["seconds"], output_names=["out"], function=_sleep),
                name="slow")
    slow.inputs.seconds = 120
    fast = Node(Function(input_names=["seconds"], output_names=["out"], function=_fail),
                name="fast")
    fast.inputs.seconds = 0
    wf.add_nodes([slow, fast])
    plugin = BatchPlugin(local_args)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="fails fast"):
        wf.run(plugin=plugin)
    # the two short-looking nodes share a job, side by side: the run stops as `fast` fails
    # (not when the job ends) and the job running `slow` is terminated
    assert time.monotonic() - started < 60
    assert not (tmp_path / "stops" / "slow" / "result_slow.pklz").exists()
    batch = local_stack.client("batch")
    deadline = time.monotonic() + 20
    jobs = batch.describe_jobs(jobs=plugin.submitted_job_ids)["jobs"]
    while any(j["status"] != "FAILED" for j in jobs) and time.monotonic() < deadline:
        time.sleep(0.5)
        jobs = batch.describe_jobs(jobs=plugin.submitted_job_ids)["jobs"]
    assert jobs and all(j["status"] == "FAILED" for j in jobs)
    assert any("stopped" in j.get("statusReason", "") for j in jobs)
    while time.monotonic() < deadline and _containers_of(local_stack, "stops_"):
        time.sleep(0.5)
    assert _containers_of(local_stack, "stops_") == []


def _containers_of(stack, suffix):
    return [c.name for c in stack.docker.containers.list(all=True) if suffix in c.name]


def _write(x):
    import os

    with open("out.txt", "w") as fh:
        fh.write(str(x))
    return os.path.abspath("out.txt")


@pytest.mark.docker
def test_relative_base_dir_is_made_absolute(tmp_path, local_args):
    wf = Workflow(name="rel", base_dir=".")  # the tests run in tmp_path (conftest)
    node = Node(Function(input_names=["x"], output_names=["out"], function=_write), name="w")
    node.inputs.x = 42
    wf.add_nodes([node])
    wf.run(plugin="AWSBatch", plugin_args=local_args)
    assert (tmp_path / "rel" / "w" / "out.txt").read_text() == "42"


def _busy_window(index):
    import time

    started = time.time()
    time.sleep(1.5)
    return [started, time.time()]


@pytest.mark.docker
def test_the_local_stack_runs_no_more_jobs_at_once_than_the_machine_has_vcpus(tmp_path,
                                                                               local_args):
    from nipype import MapNode

    from nipype_batch.local.moto_adjustments import local_vcpus

    count = local_vcpus() + 3
    wf = Workflow(name="crowd", base_dir=str(tmp_path))
    each = MapNode(Function(input_names=["index"], output_names=["window"],
                            function=_busy_window), iterfield=["index"], name="each")
    each.inputs.index = list(range(count))
    wf.add_nodes([each])
    # a job per subnode, all submitted at once, as a large MapNode's array
    graph = wf.run(plugin="AWSBatch", plugin_args={**local_args, "packing": "off"})
    [node] = [n for n in graph.nodes() if n.name == "each"]
    windows = node.result.outputs.window
    assert len(windows) == count
    edges = sorted([(start, 1) for start, _ in windows] + [(end, -1) for _, end in windows])
    running = most = 0
    for _, change in edges:
        running += change
        most = max(most, running)
    assert most <= local_vcpus()


def _hog(megabytes):
    block = bytearray(megabytes * 2**20)
    for i in range(0, len(block), 4096):  # touch every page: resident, not just reserved
        block[i] = 1
    return len(block)


def _hog_workflow(base_dir, memory_mb=400):
    wf = Workflow(name="oom", base_dir=str(base_dir))
    hog = Node(Function(input_names=["megabytes"], output_names=["out"], function=_hog),
               name="hog")
    hog.inputs.megabytes = 900
    hog.plugin_args = {"memory_mb": memory_mb}
    wf.add_nodes([hog])
    return wf


@pytest.mark.docker
def test_a_job_over_its_memory_is_killed_as_on_batch_and_not_retried_as_is(tmp_path,
                                                                          local_args):
    import glob
    import json

    from nipype.utils.filemanip import loadpkl

    with pytest.raises(RuntimeError):
        _hog_workflow(tmp_path).run(plugin="AWSBatch", plugin_args={
            **local_args, "attempts": 3, "memory_retry": False})
    job = json.loads((tmp_path / "oom" / "hog" / "_nipype_batch.json").read_text())["job"]
    assert job["container_reason"].startswith("OutOfMemoryError")
    assert job["exit_code"] == 137
    assert job["attempts"] == 1  # the same memory would fail again: not retried as is
    [crash] = glob.glob(str(tmp_path / "crash-*hog*.pklz"))
    text = "".join(loadpkl(crash)["traceback"])
    assert "killed for memory" in text and "400 MiB" in text


@pytest.mark.docker
def test_a_job_killed_for_memory_goes_again_with_more_and_the_run_completes(tmp_path,
                                                                            local_args):
    import json

    from nipype_batch.report.collect import collect_jobs

    linear = _hog_workflow(tmp_path / "linear").run(plugin="Linear")
    plugin = BatchPlugin({**local_args, "packing": "off"})
    graph = _hog_workflow(tmp_path / "batch").run(plugin=plugin)
    [ran] = graph.nodes()
    [expected] = linear.nodes()
    assert ran.result.outputs.out == expected.result.outputs.out == 900 * 2**20
    job = json.loads((tmp_path / "batch" / "oom" / "hog" / "_nipype_batch.json").read_text())
    job = job["job"]
    # 400 MiB killed, 800 MiB killed, 1600 MiB ran
    assert [k["memory_mb"] for k in job["memory_raised"]] == [400, 800]
    assert all(k["reason"].startswith("OutOfMemoryError") for k in job["memory_raised"])
    assert job["memory_mb"] == 1600 and job["status"] == "SUCCEEDED"
    assert len(plugin.submitted_job_ids) == 3
    [row] = collect_jobs(tmp_path / "batch")
    assert "killed for memory at 400 MiB, 800 MiB; ran with 1600 MiB" in row.reason

    # the next run starts where it ran: from the run history's peak, one job
    again = BatchPlugin({**local_args, "packing": "off"})
    _hog_workflow(tmp_path / "again").run(plugin=again)
    job = json.loads((tmp_path / "again" / "oom" / "hog" / "_nipype_batch.json").read_text())
    assert len(again.submitted_job_ids) == 1
    assert 900 * 1.25 <= job["job"]["memory_mb"] <= 1600 and "memory_raised" not in job["job"]
