"""The runner inside a job, run in-process against moto's S3: how a node that cannot load fails."""

from __future__ import annotations

import base64
import importlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from nipype import Node
from nipype.interfaces.utility import IdentityInterface
from nipype.utils.filemanip import loadpkl, savepkl

from nipype_batch.aws.staging import Stager
from nipype_batch.protocol import (
    EXIT_NODE_FAILED,
    PAYLOAD_VERSION,
    JobPayload,
    PackMember,
    PayloadVersionError,
)
from nipype_batch.runner import run_payload

from .test_staging import BUCKET, PREFIX, s3  # noqa: F401  (fixture)

pytestmark = pytest.mark.moto


def _payload_naming_a_module_the_job_lacks(tmp_path: Path, monkeypatch: Any) -> JobPayload:
    (tmp_path / "lab_only.py").write_text("class Setting:\n    level = 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("lab_only")
    node = Node(IdentityInterface(fields=["setting"]), name="uses_lab_module",
                base_dir=str(tmp_path / "work"))
    node.inputs.setting = module.Setting()
    savepkl(str(tmp_path / "node.pklz"), {"node": node, "updatehash": False})
    node_dir = node.output_dir()
    # The job's image has no such module.
    monkeypatch.delitem(sys.modules, "lab_only")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(tmp_path)])
    return JobPayload(bucket=BUCKET, prefix=PREFIX, inputs=[], members=[PackMember(
        node_dir=node_dir, node_name=node.name,
        node_pickle=base64.b64encode((tmp_path / "node.pklz").read_bytes()).decode())])


def test_a_node_that_cannot_load_fails_as_a_node_with_its_traceback(tmp_path, monkeypatch, s3):  # noqa: F811
    payload = _payload_naming_a_module_the_job_lacks(tmp_path, monkeypatch)
    stager = Stager(s3, BUCKET, PREFIX)

    # A node failure (3) is final; a runner failure (2) would be retried by Batch in vain.
    assert run_payload(payload, stager) == EXIT_NODE_FAILED
    node_dir = Path(payload.members[0].node_dir)
    result = loadpkl(str(node_dir / "result_uses_lab_module.pklz"))
    assert result["result"] is None
    assert "No module named 'lab_only'" in "".join(result["traceback"])
    assert not (node_dir / "_nipype_batch_node.pklz").exists()
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert any(k.endswith("uses_lab_module/result_uses_lab_module.pklz") for k in keys)


def test_a_payload_round_trips_and_another_version_is_refused_with_the_fix():
    payload = JobPayload(bucket="b", prefix="p", inputs=[{"path": "/d/x", "kind": "file"}],
                         members=[PackMember(node_dir="/w/n", node_name="n", node_pickle="eA==",
                                             string_paths=["/d/out"], after=[])],
                         done_prefix="control/r/packs/1", parallel=2)
    assert JobPayload.from_json(payload.to_json()) == payload
    older = payload.to_json().replace(f'"version": {PAYLOAD_VERSION}'.encode(), b'"version": 3')
    with pytest.raises(PayloadVersionError, match=r"version 3.*reads version .*drop plugin_args"):
        JobPayload.from_json(older)


# ---- packs: several nodes in one job -------------------------------------------------------

def _count_and_add(x, runs_file):
    with open(runs_file, "a") as fh:
        fh.write("ran\n")
    return x + 1


def _fails(x):
    raise ValueError(f"bad value {x}")


def _double(x):
    return 2 * x


def _exec_nodes(tmp_path: Path, runs_file: str) -> dict[str, Any]:
    """a -> b (raises) -> c, and a -> d: Nipype's execution graph, configured as a run's."""
    from nipype import Function, Workflow

    wf = Workflow("pack", base_dir=str(tmp_path / "work"))
    a = Node(Function(["x", "runs_file"], ["out"], _count_and_add), name="a")
    a.inputs.x, a.inputs.runs_file = 1, runs_file
    b = Node(Function(["x"], ["out"], _fails), name="b")
    c = Node(Function(["x"], ["out"], _double), name="c")
    d = Node(Function(["x"], ["out"], _double), name="d")
    wf.connect([(a, b, [("out", "x")]), (b, c, [("out", "x")]), (a, d, [("out", "x")])])
    from nipype.pipeline.engine.utils import generate_expanded_graph

    flat = wf._create_flat_graph()
    wf._set_needed_outputs(flat)
    graph = generate_expanded_graph(flat)
    for node in graph.nodes():
        node.base_dir = wf.base_dir
    wf._configure_exec_nodes(graph)
    return {node.name: node for node in graph.nodes()}


def _member(node: Any, after: list[int], tmp_path: Path) -> PackMember:
    path = tmp_path / f"{node.name}.pklz"
    savepkl(str(path), {"node": node, "updatehash": False})
    return PackMember(node_dir=node.output_dir(), node_name=node.name,
                      node_pickle=base64.b64encode(path.read_bytes()).decode(), after=after)


def _markers(client: Any, prefix: str) -> set[str]:
    listing = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix + "/").get("Contents", [])
    return {o["Key"].rsplit("/", 1)[1] for o in listing}


def test_a_pack_runs_in_order_a_failure_skips_only_its_downstream(tmp_path, s3):  # noqa: F811
    runs = str(tmp_path / "runs.txt")
    nodes = _exec_nodes(tmp_path, runs)
    order = ["a", "b", "c", "d"]
    after = {"a": [], "b": [0], "c": [1], "d": [0]}
    done = f"{PREFIX}/control/run/packs/7"
    payload = JobPayload(bucket=BUCKET, prefix=PREFIX, inputs=[], done_prefix=done, parallel=2,
                         members=[_member(nodes[n], after[n], tmp_path) for n in order])

    assert run_payload(payload, Stager(s3, BUCKET, PREFIX)) == EXIT_NODE_FAILED

    assert _markers(s3, done) == {"0.succeeded", "1.failed", "2.skipped", "3.succeeded"}
    d_result = loadpkl(str(Path(nodes["d"].output_dir()) / "result_d.pklz"))
    assert d_result.outputs.out == 4  # d read a's result, made in the same job
    b_result = loadpkl(str(Path(nodes["b"].output_dir()) / "result_b.pklz"))
    assert "bad value 2" in "".join(b_result["traceback"])
    assert not Path(nodes["c"].output_dir()).exists()
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    for name in ("a", "b", "d"):  # each committed, with what it ran in
        assert any(k.endswith(f"/{name}/result_{name}.pklz") for k in keys)
    provenance = json.loads((Path(nodes["d"].output_dir()) / "_nipype_batch.json").read_text())
    assert provenance["runner"]["pack"]["nodes"] == order


def test_a_retried_pack_does_not_run_again_what_an_earlier_attempt_committed(tmp_path, s3):  # noqa: F811
    runs = tmp_path / "runs.txt"
    nodes = _exec_nodes(tmp_path, str(runs))
    done = f"{PREFIX}/control/run/packs/8"
    stager = Stager(s3, BUCKET, PREFIX)
    # The first attempt committed a, then its container was killed before d ran.
    first = JobPayload(bucket=BUCKET, prefix=PREFIX, inputs=[], done_prefix=done,
                       members=[_member(nodes["a"], [], tmp_path)])
    assert run_payload(first, stager) == 0
    shutil.rmtree(nodes["a"].output_dir())  # a new container: nothing local
    retry = JobPayload(bucket=BUCKET, prefix=PREFIX, inputs=[], done_prefix=done,
                       members=[_member(nodes[n], [] if n == "a" else [0], tmp_path)
                                for n in ("a", "d")])

    assert run_payload(retry, Stager(s3, BUCKET, PREFIX)) == 0

    assert runs.read_text().splitlines() == ["ran"]  # a ran once
    assert loadpkl(str(Path(nodes["d"].output_dir()) / "result_d.pklz")).outputs.out == 4
    assert _markers(s3, done) == {"0.succeeded", "1.succeeded"}
