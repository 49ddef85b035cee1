"""A finished node's bookkeeping files as one object, so the driver fetches a node in one GET.

The runner still uploads every file of the node directory one by one (downstream jobs and
reruns read them at their paths); the bundle is an extra copy of the small files the driver
needs to continue the graph (result, hash, inputs, report, provenance), written just before
the result file commits the node. Without it, collecting a node costs a listing and one GET
per file: most of the driver's time per job at scale.
"""

from __future__ import annotations

import io
import os
import tarfile

from ..protocol import PARTIAL_SUFFIX, is_bookkeeping, is_result_file


def pack_bookkeeping(node_dir: str, files: list[str]) -> bytes:
    """A tar of the bookkeeping files among ``files`` (paths under ``node_dir``)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in files:
            rel = os.path.relpath(path, node_dir)
            if is_bookkeeping(rel):
                tar.add(path, arcname=rel, recursive=False)
    return out.getvalue()


def unpack_bookkeeping(data: bytes, node_dir: str) -> bool:
    """Write a bundle's files under ``node_dir``, the result file last; False if it has none.

    Members are checked to stay inside ``node_dir``; a file lands under a temporary name and is
    renamed, so a driver that dies mid-way never sees a half-written result as a cache hit.
    """
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
        root = os.path.realpath(node_dir)
        for member in members:
            target = os.path.realpath(os.path.join(node_dir, member.name))
            if not target.startswith(root + os.sep):
                raise ValueError(f"bundle member {member.name!r} escapes {node_dir}")
        members.sort(key=lambda m: is_result_file(m.name))
        if not members or not is_result_file(members[-1].name):
            return False
        for member in members:
            target = os.path.join(node_dir, member.name)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            source = tar.extractfile(member)
            assert source is not None
            with open(target + PARTIAL_SUFFIX, "wb") as fh:
                fh.write(source.read())
            os.replace(target + PARTIAL_SUFFIX, target)
            os.utime(target, (member.mtime, member.mtime))
    return True
