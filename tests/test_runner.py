"""The runner inside a job, run in-process against moto's S3: how a node that cannot load fails."""

from __future__ import annotations

import base64
import importlib
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
    return JobPayload(bucket=BUCKET, prefix=PREFIX, node_dir=node_dir, node_name=node.name,
                      inputs=[], node_pickle=base64.b64encode(
                          (tmp_path / "node.pklz").read_bytes()).decode())


def test_a_node_that_cannot_load_fails_as_a_node_with_its_traceback(tmp_path, monkeypatch, s3):  # noqa: F811
    payload = _payload_naming_a_module_the_job_lacks(tmp_path, monkeypatch)
    stager = Stager(s3, BUCKET, PREFIX)

    # A node failure (3) is final; a runner failure (2) would be retried by Batch in vain.
    assert run_payload(payload, stager) == EXIT_NODE_FAILED
    node_dir = Path(payload.node_dir)
    result = loadpkl(str(node_dir / "result_uses_lab_module.pklz"))
    assert result["result"] is None
    assert "No module named 'lab_only'" in "".join(result["traceback"])
    assert not (node_dir / "_nipype_batch_node.pklz").exists()
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert any(k.endswith("uses_lab_module/result_uses_lab_module.pklz") for k in keys)


def test_a_payload_round_trips_and_another_version_is_refused_with_the_fix():
    payload = JobPayload(bucket="b", prefix="p", node_dir="/w/n", node_name="n",
                         node_pickle="eA==", inputs=[{"path": "/d/x", "kind": "file"}],
                         string_paths=["/d/out"])
    assert JobPayload.from_json(payload.to_json()) == payload
    older = payload.to_json().replace(f'"version": {PAYLOAD_VERSION}'.encode(), b'"version": 2')
    with pytest.raises(PayloadVersionError, match=r"version 2.*reads version .*drop plugin_args"):
        JobPayload.from_json(older)
