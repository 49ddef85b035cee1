"""Fault drills on the local stack: each disturbs a run and compares it with an undisturbed one."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from nipype import Function, Node, Workflow

from nipype_batch import BatchPlugin

pytestmark = pytest.mark.docker


def _slow_square(x, seconds):
    import os
    import time

    time.sleep(seconds)
    out = os.path.abspath("square.txt")
    with open(out, "w") as fh:
        fh.write(f"{x * x}\n")
    return out


def _add_one(in_file):
    import os

    with open(in_file) as fh:
        value = int(fh.read()) + 1
    out = os.path.abspath("plus_one.txt")
    with open(out, "w") as fh:
        fh.write(f"{value}\n")
    return out


def _two_step(base: Path, name: str, seconds: float) -> Workflow:
    wf = Workflow(name=name, base_dir=str(base))
    square = Node(Function(input_names=["x", "seconds"], output_names=["out"],
                           function=_slow_square), name="square")
    square.inputs.x, square.inputs.seconds = 7, seconds
    plus = Node(Function(input_names=["in_file"], output_names=["out"], function=_add_one),
                name="plus")
    wf.connect(square, "out", plus, "in_file")
    return wf


def _kill_first_container(docker, name_part: str, after_s: float, done: threading.Event,
                          killed: list[str]) -> None:
    """Kill the first running container whose name holds ``name_part``, ``after_s`` into its run."""
    deadline = time.monotonic() + 120
    while not done.is_set() and time.monotonic() < deadline:
        for container in docker.containers.list(filters={"name": name_part}):
            time.sleep(after_s)
            container.kill()
            killed.append(container.name)
            return
        time.sleep(0.1)


def test_container_killed_mid_run_is_retried(tmp_path, local_args, local_stack):
    _two_step(tmp_path / "calm", "drill", 0).run(plugin="Linear")

    done, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_first_container,
                              args=(local_stack.docker, "drill_square", 1.0, done, killed))
    killer.start()
    try:
        plugin = BatchPlugin(local_args)
        _two_step(tmp_path / "killed", "drill", 4).run(plugin=plugin)
    finally:
        done.set()
        killer.join()

    assert killed, "the drill never found the container to kill"
    node_dir = tmp_path / "killed" / "drill" / "square"
    record = json.loads((node_dir / "_nipype_batch.json").read_text())["job"]
    assert record["attempts"] == 2
    assert record["attempt_details"][0]["container"]["exitCode"] == 137  # SIGKILL
    assert len(plugin.submitted_job_ids) == 2  # the kill cost a retry, not a resubmission
    for rel in ("square/square.txt", "plus/plus_one.txt"):
        calm = (tmp_path / "calm" / "drill" / rel).read_text()
        assert (tmp_path / "killed" / "drill" / rel).read_text() == calm


def _raise_value_error(x):
    raise ValueError("a bug in the node, not in the cloud")


def test_a_nodes_own_exception_is_not_retried(tmp_path, local_args):
    wf = Workflow(name="noretry", base_dir=str(tmp_path))
    node = Node(Function(input_names=["x"], output_names=["out"], function=_raise_value_error),
                name="bug")
    node.inputs.x = 1
    wf.add_nodes([node])
    with pytest.raises(RuntimeError, match="a bug in the node"):
        wf.run(plugin="AWSBatch", plugin_args={**local_args, "attempts": 3})
    record = json.loads((tmp_path / "noretry" / "bug" / "_nipype_batch.json").read_text())
    assert record["job"]["attempts"] == 1
    assert record["job"]["exit_code"] == 3
