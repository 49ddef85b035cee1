"""One node inside a job: run it as Nipype's batch plugins do, then commit it to S3.

:func:`run_member` runs the node (a node that raises leaves a result file holding its
traceback); :func:`commit_member` writes its provenance and uploads its directory, the result
file last, which marks the node as done. The runner calls both for a job of one node; a pack
runs each member in a process of its own and commits it from the job's main process.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import sys
import time
import traceback
from typing import Any

from .protocol import NODE_PICKLE, PROVENANCE_FILE, PackMember, result_path


def _outputs_dict(outputs: Any) -> dict[str, Any]:
    """Output values of a node's result: a traits spec, or a Bunch for a MapNode."""
    if outputs is None:
        return {}
    if hasattr(outputs, "trait_get"):
        return outputs.trait_get()
    return dict(outputs.items())


def _peak_memory_mb() -> float:
    """Peak resident memory of this process and the tools it ran (Linux reports KiB)."""
    import resource

    usage = [resource.getrusage(who).ru_maxrss for who in
             (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return round(max(usage) / 1024, 1)


def _new_bytes(stager: Any, roots: list[str]) -> int:
    """Bytes of the files under ``roots`` that S3 does not hold yet (as far as we know)."""
    total = 0
    for root in roots:
        walk = os.walk(root) if os.path.isdir(root) else [("", [], [root])]
        for dirpath, _dirs, names in walk:
            for name in names:
                path = os.path.join(dirpath, name)
                if not stager.holds(path):
                    total += os.path.getsize(path)
    return total


def run_member(member: PackMember, stager: Any) -> dict[str, Any]:
    """Run one node here, as Nipype's batch plugins do; what came of it, for
    :func:`commit_member` (a node that raises leaves a result file with its traceback)."""
    from nipype import config, logging
    from nipype.utils.filemanip import loadpkl

    from .aws.staging import find_paths

    ran_from = time.time()
    node_dir = member.node_dir
    # Paths named inside a command line that the driver did not have: the tool may write
    # them, so their folders must exist here as they do on the driver.
    string_paths = list(member.string_paths)
    for path in string_paths:
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
    pickle_path = os.path.join(node_dir, NODE_PICKLE)
    os.makedirs(node_dir, exist_ok=True)
    with open(pickle_path, "wb") as fh:
        fh.write(base64.b64decode(member.node_pickle))
    error: list[str] | None = None
    output_files: list[str] = []
    try:
        info = loadpkl(pickle_path)
    except Exception:
        # The node's pickle names a module this image lacks: the node fails as a node that
        # raised does (a result file with the traceback, the crash file on the driver), not
        # as the runner, which Batch would retry to the same end.
        info = None
        error = fail_node(node_dir, member.node_name, None)
    os.remove(pickle_path)
    if info is not None:
        node = info["node"]
        config.update_config(node.config or {})
        logging.update_logging(config)
        try:
            result = node.run(updatehash=info["updatehash"])
            outputs = _outputs_dict(result.outputs if result is not None else None)
            output_files = sorted(p for p in find_paths(outputs) if os.path.exists(p))
        except Exception:
            try:
                failed = node.result
            except Exception:
                failed = None
            error = fail_node(node_dir, node.name, failed)
    ran = time.time()
    # Written by the tool at a path its command line named: an output like any other.
    written = [p for p in string_paths if os.path.exists(p) and p not in output_files
               and not (os.path.isfile(p) and stager.holds(p))]
    return {"node_failed": error is not None, "output_files": sorted([*output_files, *written]),
            "peak_memory_mb": _peak_memory_mb(), "ran_from": ran_from, "ran": ran}


def commit_member(member: PackMember, info: dict[str, Any], staged: dict[str, Any],
                  stager: Any, pack: dict[str, Any] | None = None) -> None:
    """Write the node's provenance and upload its directory, the result file last: from then
    on the node is done, whatever happens to the rest of the job."""
    node_dir = member.node_dir
    output_files = info["output_files"]
    outside = [p for p in output_files
               if not (p == node_dir or p.startswith(node_dir.rstrip("/") + "/"))]
    # A node in a pack ran after its predecessors: its own run starts when it did.
    timings = {"start": staged["start"], "staged_in": staged["staged_in"],
               "job_staged_in": staged["staged_in"]}
    if pack is not None:
        timings["staged_in"] = max(staged["staged_in"], info["ran_from"])
    if info.get("after_ran"):
        timings["after_ran"] = info["after_ran"]
    timings["ran"] = info["ran"]
    runner_info = {
        "hostname": socket.gethostname(),
        "python": sys.version.split()[0],
        "files_staged_in": staged["files"],
        "bytes_staged_in": stager.bytes_down,
        "bytes_to_stage_out": _new_bytes(stager, [node_dir, *outside]),
        "peak_memory_mb": info["peak_memory_mb"],
        "output_files": output_files,
        "node_failed": info["node_failed"],
        "timings": timings,
    }
    if pack is not None:
        runner_info["pack"] = pack
    os.makedirs(node_dir, exist_ok=True)
    with open(os.path.join(node_dir, PROVENANCE_FILE), "w") as fh:
        json.dump({"runner": runner_info}, fh, indent=1)
    # Outputs written outside the node directory (a Function writing into a derivatives
    # folder) go up too, before the result file commits the node; staged-in inputs that come
    # back as outputs are skipped, their stamps being known.
    for path in outside:
        stager.ensure_uploaded(path)
    stager.upload_tree(node_dir, bundle_key=member.bundle_key)


def fail_node(node_dir: str, node_name: str, result: Any) -> list[str]:
    """Write the result file of a node that failed, holding the traceback being handled."""
    from nipype.utils.filemanip import savepkl

    error = traceback.format_exception(*sys.exc_info())
    sys.stderr.write("".join(error))
    os.makedirs(node_dir, exist_ok=True)
    savepkl(result_path(node_dir, node_name),
            {"result": result, "hostname": socket.gethostname(), "traceback": error})
    return error
