"""Entry point inside a job's container: ``python -m nipype_batch.runner``.

Reads the job payload named by ``$NIPYPE_BATCH_PAYLOAD``, puts the inputs at their driver
paths, runs the node as Nipype's batch plugins do (a node that raises leaves a result file
holding its traceback), and uploads the node directory, the result file last. A payload of
several nodes is a pack: its members run in dependency order, each committed as it ends.

Exit codes: 0 the node ran; 3 a node raised (its traceback is in its result file);
2 the runner itself failed (staging, payload), which AWS Batch may retry.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import MutableMapping
from typing import Any

from .node_run import commit_member, fail_node, run_member
from .protocol import (
    ENDPOINT_ENV,
    EXIT_NODE_FAILED,
    EXIT_RUNNER_FAILED,
    MEMBER_FAILED,
    MEMBER_SKIPPED,
    MEMBER_SUCCEEDED,
    PAYLOAD_ENV,
    JobPayload,
    PackMember,
    PayloadVersionError,
    member_marker,
    payload_uri_for,
    read_marker,
)


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> ``(bucket, key)``."""
    rest = uri[len("s3://"):]
    bucket, _, key = rest.partition("/")
    return bucket, key


@functools.cache  # one per process: a simulated Batch runs many jobs in one worker
def _s3_client() -> Any:
    import boto3

    from .aws.session import client_config

    return boto3.client("s3", endpoint_url=os.environ.get(ENDPOINT_ENV) or None,
                        config=client_config())


def run_payload(payload: JobPayload, stager: Any) -> int:
    """Stage in once, run the job's node (or its pack of nodes), stage each one out as it
    finishes; return the process exit code (3 if any node raised)."""
    # Variables too large for the job's container overrides travel in the payload; set them
    # before Nipype (and numpy, which reads OMP_NUM_THREADS and the like) is imported.
    os.environ.update(payload.environment or {})
    from .aws.staging import StagedPath

    started = time.time()
    fetched = sum(stager.download(StagedPath(**item)) for item in payload.inputs)
    staged = {"start": started, "staged_in": time.time(), "files": fetched}
    if len(payload.members) == 1 and payload.done_prefix is None:
        member = payload.members[0]
        info = run_member(member, stager)
        commit_member(member, info, staged, stager)
        return EXIT_NODE_FAILED if info["node_failed"] else 0
    return run_pack(payload, stager, staged)


def run_pack(payload: JobPayload, stager: Any, staged: dict[str, Any]) -> int:
    """Run a pack: each member once its predecessors succeeded, up to ``payload.parallel`` at
    once, each in a process of its own (Nipype changes directory while a node runs, and each
    node's peak memory is its own); commit each as it ends. A member whose predecessor failed
    is skipped; the others still run. Members an earlier attempt committed are not run again.
    """
    members, done_prefix = payload.members, payload.done_prefix or ""
    state: dict[int, str] = {}
    for name in stager.list_control(done_prefix):
        found = read_marker(name)
        if found is not None and found[0] < len(members):
            state[found[0]] = found[1]
    waited_for = {a for member in members for a in member.after}
    for index in sorted(state):  # an earlier attempt's: what later members read comes home
        if state[index] == MEMBER_SUCCEEDED and index in waited_for:
            stager.fetch_node_dir(members[index].node_dir, everything=True)
    if state:
        print(f"nipype-batch runner: {len(state)} of {len(members)} nodes were done by an "
              "earlier attempt", file=sys.stderr)

    def mark(index: int, outcome: str) -> None:
        state[index] = outcome
        stager.put_bytes(member_marker(done_prefix, index, outcome), b"")

    job = os.environ.get("AWS_BATCH_JOB_ID", "")
    running: dict[int, int] = {}  # pid -> member index
    ran_at: dict[int, float] = {}  # member index -> when its node's run ended
    with tempfile.TemporaryDirectory(prefix="nipype-batch-pack-") as infos:
        while True:
            for index, member in enumerate(members):  # in dependency order
                if index not in state and any(
                        state.get(a) in (MEMBER_FAILED, MEMBER_SKIPPED) for a in member.after):
                    mark(index, MEMBER_SKIPPED)
            busy = set(running.values())
            ready = [i for i, m in enumerate(members) if i not in state and i not in busy
                     and all(state.get(a) == MEMBER_SUCCEEDED for a in m.after)]
            for index in ready[:max(1, payload.parallel) - len(running)]:
                running[_run_forked(members[index], stager, infos, index)] = index
            if not running:
                break
            index, status = _wait_any(running)
            info = _read_info(infos, index) or _killed(members[index], status)
            ran_at[index] = info["ran"]
            preceding = [ran_at[a] for a in members[index].after if a in ran_at]
            if preceding:  # the hand-off: its predecessors' commits, and its own start
                info["after_ran"] = max(preceding)
            commit_member(members[index], info, staged, stager, pack={
                "job_id": job, "index": index, "size": len(members),
                "nodes": [m.node_name for m in members]})
            mark(index, MEMBER_FAILED if info["node_failed"] else MEMBER_SUCCEEDED)
    return EXIT_NODE_FAILED if any(s != MEMBER_SUCCEEDED for s in state.values()) else 0


def _run_forked(member: PackMember, stager: Any, infos: str, index: int) -> int:
    """Start a process that runs one member and leaves what came of it in ``infos``."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:
        info = run_member(member, stager)
        path = os.path.join(infos, f"{index}.json")
        with open(path + ".tmp", "w") as fh:
            json.dump(info, fh)
        os.replace(path + ".tmp", path)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _wait_any(running: dict[int, int]) -> tuple[int, int]:
    """The first of ``running`` to end: (member index, wait status). Only our own
    children are waited for (a test may run a pack in a process that has others)."""
    while True:
        for pid in list(running):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return running.pop(pid), status
        time.sleep(0.01)


def _read_info(infos: str, index: int) -> dict[str, Any] | None:
    try:
        with open(os.path.join(infos, f"{index}.json")) as fh:
            return json.load(fh)
    except OSError:
        return None


def _killed(member: PackMember, status: int) -> dict[str, Any]:
    """A member's process ended without saying how: the node failed, and its result file
    says why (a kill by signal 9 is most often the container running out of memory)."""
    if os.WIFSIGNALED(status):
        why = f"was killed by signal {os.WTERMSIG(status)}"
        if os.WTERMSIG(status) == 9:
            why += " (most often: out of memory; give the node more with mem_gb)"
    else:
        why = f"exited with code {os.WEXITSTATUS(status)} before it finished"
    try:
        raise RuntimeError(f"the process running node {member.node_name} {why}")
    except RuntimeError:
        fail_node(member.node_dir, member.node_name, None)
    now = time.time()
    return {"node_failed": True, "output_files": [], "peak_memory_mb": 0.0,
            "ran_from": now, "ran": now}


def point_sdks_at(endpoint: str, config_dir: str,
                  environ: MutableMapping[str, str] = os.environ) -> None:
    """Send the node's own S3 calls (DataSink to ``s3://``, S3DataGrabber) to ``endpoint``.

    Our runner passes its endpoint explicitly; Nipype's interfaces build their own clients.
    boto3 reads ``AWS_ENDPOINT_URL``. Legacy boto (S3DataGrabber) has no endpoint setting
    but honours a proxy in its config file, and an emulator answers absolute-URI requests as
    a proxy would. Settings the job already has are kept.
    """
    environ.setdefault("AWS_ENDPOINT_URL", endpoint)
    if "BOTO_CONFIG" not in environ:
        from urllib.parse import urlsplit

        parts = urlsplit(endpoint)
        path = os.path.join(config_dir, "nipype-batch-boto.cfg")
        with open(path, "w") as fh:
            fh.write(f"[Boto]\nis_secure = {parts.scheme == 'https'}\n"
                     f"proxy = {parts.hostname}\nproxy_port = {parts.port or 80}\n"
                     "[s3]\ncalling_format = boto.s3.connection.OrdinaryCallingFormat\n")
        environ["BOTO_CONFIG"] = path


def main() -> int:
    """Run the job named by the environment; see the module docstring for exit codes."""
    os.environ.setdefault("NIPYPE_NO_ET", "1")  # no telemetry calls from jobs
    if os.environ.get(ENDPOINT_ENV):
        import tempfile

        point_sdks_at(os.environ[ENDPOINT_ENV], tempfile.gettempdir())
    from .aws.staging import Stager

    uri = os.environ.get(PAYLOAD_ENV)
    if not uri:
        sys.stderr.write(f"nipype-batch runner: ${PAYLOAD_ENV} is not set\n")
        return EXIT_RUNNER_FAILED
    try:
        s3 = _s3_client()
        bucket, key = split_s3_uri(payload_uri_for(uri, dict(os.environ)))
        payload = JobPayload.from_json(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except PayloadVersionError as exc:
        sys.stderr.write(f"nipype-batch runner: {exc}\n")
        return EXIT_NODE_FAILED  # final: a retry would read the same payload
    except Exception:
        sys.stderr.write("nipype-batch runner failed:\n" + traceback.format_exc())
        return EXIT_RUNNER_FAILED
    try:
        return run_payload(payload, Stager(s3, payload.bucket, payload.prefix))
    except Exception:
        sys.stderr.write("nipype-batch runner failed:\n" + traceback.format_exc())
        return EXIT_RUNNER_FAILED


if __name__ == "__main__":
    sys.exit(main())
