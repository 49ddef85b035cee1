"""Bookkeeping bundles: what goes in, what comes out, and what is refused."""

from __future__ import annotations

import io
import os
import tarfile

import pytest

from nipype_batch.aws.bundles import pack_bookkeeping, unpack_bookkeeping


def _node_dir(root) -> list[str]:
    node = root / "node"
    (node / "_report").mkdir(parents=True)
    files = {"result_node.pklz": b"result", "_0xabc.json": b"{}", "_inputs.pklz": b"in",
             "_report/report.rst": b"report", "big_output.nii.gz": b"x" * 10_000}
    for name, data in files.items():
        (node / name).write_bytes(data)
    return [str(node / name) for name in files]


def test_bundle_holds_bookkeeping_only_and_restores_it(tmp_path):
    files = _node_dir(tmp_path)
    bundle = pack_bookkeeping(str(tmp_path / "node"), files)
    target = tmp_path / "driver" / "node"
    assert unpack_bookkeeping(bundle, str(target)) is True
    got = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    assert got == ["_0xabc.json", "_inputs.pklz", "_report/report.rst", "result_node.pklz"]
    assert (target / "result_node.pklz").read_bytes() == b"result"
    assert not list(target.rglob("*.nbpart"))


def test_bundle_without_result_file_is_no_commit(tmp_path):
    files = [f for f in _node_dir(tmp_path) if "result_" not in f]
    bundle = pack_bookkeeping(str(tmp_path / "node"), files)
    assert unpack_bookkeeping(bundle, str(tmp_path / "out")) is False
    assert not (tmp_path / "out" / "result_node.pklz").exists()


def test_a_member_escaping_the_node_directory_is_refused(tmp_path):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo("../../etc/evil")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(ValueError, match="escapes"):
        unpack_bookkeeping(out.getvalue(), str(tmp_path / "node"))
    assert not os.path.exists(tmp_path / "etc")
