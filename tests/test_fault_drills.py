"""Fault drills on the local stack: each disturbs a run and compares it with an undisturbed one."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from nipype import Function, Node, Workflow
from nipype.utils.filemanip import loadpkl

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
    local_args = {**local_args, "packing": "off"}  # a job per node (a pack: the drill below)
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


def _stamp(x):
    import os
    import time

    out = os.path.abspath("stamp.txt")
    with open(out, "w") as fh:
        fh.write(f"{x} {time.time_ns()}\n")
    return out


def _first_plus_one(in_file):
    with open(in_file) as fh:
        return int(fh.read().split()[0]) + 1


def _wait_then_pass(in_file, seconds):
    import time

    time.sleep(seconds)
    return in_file


def _kill_once_committed(docker, stager, prefix: str, name_part: str, done: threading.Event,
                         seen: dict[str, str]) -> None:
    """Once a pack's first node has committed, keep what S3 holds of it and kill the job."""
    deadline = time.monotonic() + 120
    while not done.is_set() and time.monotonic() < deadline:
        if any(name.endswith("/0.succeeded") for name in stager.list_control(prefix)):
            for container in docker.containers.list(filters={"name": name_part}):
                seen["stamp"] = stager.get_bytes(stager.key_for(seen["path"])).decode()
                container.kill()
                seen["killed"] = container.name
                return
        time.sleep(0.1)


def test_a_pack_killed_after_its_first_node_committed_does_not_run_it_again(
        tmp_path, local_args, local_stack):
    wf = Workflow(name="killpack", base_dir=str(tmp_path))
    stamp = Node(Function(["x"], ["out"], _stamp), name="stamp")
    stamp.inputs.x = 3
    wait = Node(Function(["in_file", "seconds"], ["out"], _wait_then_pass), name="wait")
    wait.inputs.seconds = 6
    plus = Node(Function(["in_file"], ["out"], _first_plus_one), name="plus")
    wf.connect([(stamp, wait, [("out", "in_file")]), (wait, plus, [("out", "in_file")])])
    plugin = BatchPlugin({**local_args, "attempts": 2})
    stager = plugin.cloud.stager
    done = threading.Event()
    seen = {"path": str(tmp_path / "killpack" / "stamp" / "stamp.txt")}
    killer = threading.Thread(target=_kill_once_committed, args=(
        local_stack.docker, stager, stager.control_key(plugin.run_id, "packs"),
        "killpack_stamp", done, seen))
    killer.start()
    try:
        wf.run(plugin=plugin)
    finally:
        done.set()
        killer.join()

    assert seen.get("killed"), "the drill never saw the first node commit"
    assert len(plugin.submitted_job_ids) == 1  # one job for the three nodes
    record = json.loads((tmp_path / "killpack" / "plus" / "_nipype_batch.json").read_text())
    assert record["job"]["attempts"] == 2
    # the retry did not run the committed node again: its output is the first attempt's
    assert (tmp_path / "killpack" / "stamp" / "stamp.txt").read_text() == seen["stamp"]
    assert loadpkl(str(tmp_path / "killpack" / "plus" / "result_plus.pklz")).outputs.out == 4


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


class Throttler:
    """Answers a share of requests with the service's own throttling error, before sending.

    This is the edge of what can run here: AWS throttles by account, the emulator never does.
    """

    def __init__(self, share: float, seed: int = 7) -> None:
        import random

        self.share, self.rng, self.injected = share, random.Random(seed), 0

    def attach(self, client) -> None:
        xml = client.meta.service_model.protocol == "rest-xml"
        client.meta.events.register("before-send", lambda request, **_: self._answer(xml))

    def _answer(self, xml: bool):
        from botocore.awsrequest import AWSResponse

        if self.rng.random() >= self.share:
            return None
        self.injected += 1
        if xml:  # S3
            body = (b"<Error><Code>SlowDown</Code>"
                    b"<Message>Please reduce your request rate.</Message></Error>")
            return AWSResponse("https://throttled", 503, {"content-type": "application/xml"},
                               _Raw(body))
        body = b'{"__type": "ThrottlingException", "message": "Rate exceeded"}'
        return AWSResponse("https://throttled", 400,
                           {"x-amzn-ErrorType": "ThrottlingException",
                            "content-type": "application/x-amz-json-1.1"}, _Raw(body))


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, *args, **kwargs):
        yield self.body


def test_run_completes_with_30_percent_of_calls_throttled(tmp_path, local_args):
    _two_step(tmp_path / "calm", "throttled", 0).run(plugin="Linear")
    plugin = BatchPlugin(local_args)
    throttler = Throttler(0.3)
    cloud = plugin.cloud
    for client in (cloud.batch.batch, cloud.batch.logs, cloud.stager.s3):
        throttler.attach(client)
    _two_step(tmp_path / "busy", "throttled", 0).run(plugin=plugin)
    assert throttler.injected >= 5
    for rel in ("square/square.txt", "plus/plus_one.txt"):
        calm = (tmp_path / "calm" / "throttled" / rel).read_text()
        assert (tmp_path / "busy" / "throttled" / rel).read_text() == calm


def test_emulator_gone_mid_run_is_a_clear_error(tmp_path, local_stack, monkeypatch):
    from nipype_batch import BatchJobError, build_images
    from nipype_batch.local import LocalStack
    from nipype_batch.local.stack import THROWAWAY_KEY

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", THROWAWAY_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", THROWAWAY_KEY)
    private = LocalStack()  # an emulator of its own, to kill without harming other tests
    private.start()
    (image,) = build_images(_two_step(tmp_path, "gone", 0), {"backend": "local"})
    plugin = BatchPlugin({
        "job_queue": private.job_queue, "bucket": f"s3://{private.bucket}/drill",
        "region": "us-east-1", "endpoint_url": private.endpoint_url, "image": image.ref,
        "aws_max_attempts": 2,  # give up on the dead endpoint quickly
        "environment": {"AWS_ACCESS_KEY_ID": THROWAWAY_KEY,
                        "AWS_SECRET_ACCESS_KEY": THROWAWAY_KEY,
                        "AWS_DEFAULT_REGION": "us-east-1"},
    })

    def kill_emulator_once_running():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if local_stack.docker.containers.list(filters={"name": "gone_square"}):
                private.server.proc.kill()
                return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_emulator_once_running)
    killer.start()
    started = time.monotonic()
    try:
        with pytest.raises(BatchJobError, match="lost contact with AWS Batch"):
            _two_step(tmp_path / "run", "gone", 5).run(plugin=plugin)
    finally:
        killer.join()
        for container in local_stack.docker.containers.list(all=True,
                                                            filters={"name": "gone_square"}):
            container.remove(force=True)  # its emulator died: nobody else will
    assert time.monotonic() - started < 60
    assert not (tmp_path / "run" / "gone" / "plus").exists()  # nothing ran on a guess


DRIVER = '''
import sys
sys.path.insert(0, {root!r})
import nipype_batch
from tests.test_fault_drills import _two_step
from pathlib import Path
wf = _two_step(Path({base!r}), "interrupted", 60)
wf.run(plugin="AWSBatch", plugin_args={{"backend": "local"}})
'''


def test_sigint_terminates_every_submitted_job(tmp_path, local_stack):
    import signal
    import subprocess
    import sys

    root = str(Path(__file__).resolve().parent.parent)
    script = tmp_path / "driver.py"
    script.write_text(DRIVER.format(root=root, base=str(tmp_path)))
    log = open(tmp_path / "driver.log", "w")  # noqa: SIM115 - closed below
    driver = subprocess.Popen([sys.executable, str(script)], stdout=log, stderr=log, cwd=tmp_path)
    docker = local_stack.docker
    try:
        deadline = time.monotonic() + 120
        while not docker.containers.list(filters={"name": "interrupted_square"}):
            assert driver.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.2)
        started = time.monotonic()
        driver.send_signal(signal.SIGINT)
        driver.wait(timeout=60)
    finally:
        if driver.poll() is None:
            driver.kill()
        log.close()
    output = (tmp_path / "driver.log").read_text()
    assert "KeyboardInterrupt" in output
    assert "terminating" in output and "jobs in flight" in output
    while docker.containers.list(all=True, filters={"name": "interrupted_square"}):
        assert time.monotonic() - started < 30, "a job container outlived the interrupt"
        time.sleep(0.2)


RESUMABLE_DRIVER = '''
import json, sys
sys.path.insert(0, {root!r})
import nipype_batch
from nipype_batch import BatchPlugin
from tests.test_fault_drills import _two_step
from pathlib import Path
plugin = BatchPlugin({{"backend": "local", "packing": {packing!r}}})
_two_step(Path({base!r}), "resumed", 10).run(plugin=plugin)
print("RESULT " + json.dumps({{"submitted": plugin.submitted_job_ids,
                              "resumed": plugin.resumed_job_ids}}))
'''


def _kill_driver_once_its_job_runs(tmp_path: Path, local_stack, packing: str = "off") -> Path:
    """Start RESUMABLE_DRIVER, SIGKILL it once its first job's container runs; the script."""
    import signal
    import subprocess
    import sys

    root = str(Path(__file__).resolve().parent.parent)
    script = tmp_path / "driver.py"
    script.write_text(RESUMABLE_DRIVER.format(root=root, base=str(tmp_path / "run"),
                                              packing=packing))
    driver = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not local_stack.docker.containers.list(filters={"name": "resumed_square"}):
        assert driver.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    return script


def _jobs_named(batch, suffix: str) -> list[str]:
    found = []
    for state in ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED",
                  "FAILED"):
        for job in batch.list_jobs(jobQueue="nipype-batch-local",
                                   jobStatus=state)["jobSummaryList"]:
            if job["jobName"].endswith(suffix) or f"{suffix}-and-" in job["jobName"]:
                found.append(job["jobId"])
    return found


@pytest.mark.parametrize("packing", ["off", "auto"])
def test_driver_killed_then_rerun_resumes_without_duplicates(tmp_path, local_stack, monkeypatch,
                                                              packing):
    import shutil
    import subprocess
    import sys

    from nipype_batch.local import stack as local

    # A shared stack behaves like AWS: jobs outlive the driver that submitted them.
    monkeypatch.setenv("NIPYPE_BATCH_LOCAL_STATE", str(tmp_path / "local-stack.json"))
    shared = local.up()
    try:
        _two_step(tmp_path / "calm", "resumed", 0).run(plugin="Linear")
        script = _kill_driver_once_its_job_runs(tmp_path, local_stack, packing)
        # the job is Batch's, not the driver's: it runs on
        assert local_stack.docker.containers.list(filters={"name": "resumed_square"})

        def rerun() -> dict:
            done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, timeout=300,
                                  capture_output=True, text=True)
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
            line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
            return json.loads(line[len("RESULT "):])

        second = rerun()
        batch = shared.client("batch")
        (square_job,) = _jobs_named(batch, "resumed_square")  # never submitted twice
        assert second["resumed"] == [square_job]
        if packing == "off":
            assert len(second["submitted"]) == 1  # only plus, which had not been submitted
        else:  # plus ran in square's job: it waited for that job's marker
            assert second["submitted"] == []
        for rel in ("square/square.txt", "plus/plus_one.txt"):
            calm = (tmp_path / "calm" / "resumed" / rel).read_text()
            assert (tmp_path / "run" / "resumed" / rel).read_text() == calm

        # a node whose result is committed in S3 is fetched, not run again
        shutil.rmtree(tmp_path / "run" / "resumed" / "plus")
        third = rerun()
        assert third["submitted"] == [] and third["resumed"] == []
        assert (tmp_path / "run" / "resumed" / "plus" / "plus_one.txt").read_text() == \
            (tmp_path / "calm" / "resumed" / "plus" / "plus_one.txt").read_text()
        assert len(_jobs_named(batch, "resumed_plus")) == (1 if packing == "off" else 0)
    finally:
        local.down()


def test_result_deleted_from_the_bucket_is_a_clear_error(tmp_path, local_args, local_stack):
    plugin = BatchPlugin(local_args)
    stager = plugin.cloud.stager
    square_dir = str(tmp_path / "deleted" / "square")
    deleted = []

    def delete_result_before_the_driver_looks(params, **_):
        # someone else removes the committed result (and its bundle) just as the driver comes
        # to fetch it
        if "/bundles/" not in params.get("Key", "") or deleted:
            return
        key = stager.key_for(f"{square_dir}/result_square.pklz")
        other = local_stack.client("s3")
        if other.list_objects_v2(Bucket=stager.bucket, Prefix=key).get("KeyCount"):
            other.delete_object(Bucket=stager.bucket, Key=key)  # the job had committed it
            other.delete_object(Bucket=stager.bucket, Key=params["Key"])
            deleted.append(key)

    stager.s3.meta.events.register("before-parameter-build.s3.GetObject",
                                   delete_result_before_the_driver_looks)
    with pytest.raises(RuntimeError, match=r"ended SUCCEEDED.*left no result file"):
        _two_step(tmp_path, "deleted", 0).run(plugin=plugin)
    assert deleted
    assert not (tmp_path / "deleted" / "plus").exists()  # nothing ran on a missing result
    assert not (tmp_path / "deleted" / "square" / "result_square.pklz").exists()


def test_cancel_terminates_what_a_killed_driver_left(tmp_path, local_stack, monkeypatch):
    import subprocess
    import sys

    from nipype_batch.local import stack as local

    monkeypatch.setenv("NIPYPE_BATCH_LOCAL_STATE", str(tmp_path / "local-stack.json"))
    local.up()
    try:
        _kill_driver_once_its_job_runs(tmp_path, local_stack)
        deadline = time.monotonic() + 120

        def cli(*args):
            return subprocess.run([sys.executable, "-m", "nipype_batch.cli", *args,
                                   str(tmp_path / "run")], capture_output=True, text=True,
                                  cwd=tmp_path, timeout=120)

        status = cli("status")
        assert status.returncode == 0 and "RUNNING" in status.stdout, status.stderr
        cancel = cli("cancel")
        assert cancel.returncode == 0 and "terminated 1 job(s)" in cancel.stdout, cancel.stderr
        while local_stack.docker.containers.list(all=True, filters={"name": "resumed_square"}):
            assert time.monotonic() < deadline, "the cancelled job's container lived on"
            time.sleep(0.2)
        assert "no job in flight" in cli("status").stdout
    finally:
        local.down()
