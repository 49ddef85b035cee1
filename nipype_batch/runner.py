"""Entry point inside a job's container: ``python -m nipype_batch.runner``.

Reads the job payload named by ``$NIPYPE_BATCH_PAYLOAD``, puts the node's inputs at their
driver paths, runs the node as Nipype's batch plugins do (a node that raises leaves a result
file holding its traceback), and uploads the node directory, the result file last.

Exit codes: 0 the node ran; 3 the node raised (its traceback is in the result file);
2 the runner itself failed (staging, payload), which AWS Batch may retry.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import socket
import sys
import time
import traceback
from collections.abc import MutableMapping
from typing import Any

from .protocol import (
    ENDPOINT_ENV,
    EXIT_NODE_FAILED,
    EXIT_RUNNER_FAILED,
    NODE_PICKLE,
    PAYLOAD_ENV,
    PROVENANCE_FILE,
    JobPayload,
    PayloadVersionError,
    payload_uri_for,
    result_path,
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


def run_payload(payload: JobPayload, stager: Any) -> int:
    """Stage in, run the node, stage out; return the process exit code."""
    # Variables too large for the job's container overrides travel in the payload; set them
    # before Nipype (and numpy, which reads OMP_NUM_THREADS and the like) is imported.
    os.environ.update(payload.environment or {})
    from nipype import config, logging
    from nipype.utils.filemanip import loadpkl

    from .aws.staging import StagedPath, find_paths

    timings: dict[str, float] = {"start": time.time()}
    node_dir = payload.node_dir
    fetched = sum(stager.download(StagedPath(**item)) for item in payload.inputs)
    # Paths named inside a command line that the driver did not have: the tool may write
    # them, so their folders must exist here as they do on the driver.
    string_paths = list(payload.string_paths)
    for path in string_paths:
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
    pickle_path = os.path.join(node_dir, NODE_PICKLE)
    os.makedirs(node_dir, exist_ok=True)
    with open(pickle_path, "wb") as fh:
        fh.write(base64.b64decode(payload.node_pickle))
    timings["staged_in"] = time.time()

    error: list[str] | None = None
    output_files: list[str] = []
    try:
        info = loadpkl(pickle_path)
    except Exception:
        # The node's pickle names a module this image lacks: the node fails as a node that
        # raised does (a result file with the traceback, the crash file on the driver), not
        # as the runner, which Batch would retry to the same end.
        info = None
        error = _fail(node_dir, payload.node_name, None)
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
            error = _fail(node_dir, node.name, failed)
    timings["ran"] = time.time()
    # Written by the tool at a path its command line named: an output like any other.
    written = [p for p in string_paths if os.path.exists(p) and p not in output_files
               and not (os.path.isfile(p) and stager.holds(p))]
    output_files = sorted([*output_files, *written])

    outside = [p for p in output_files
               if not (p == node_dir or p.startswith(node_dir.rstrip("/") + "/"))]
    runner_info = {
        "hostname": socket.gethostname(),
        "python": sys.version.split()[0],
        "files_staged_in": fetched,
        "bytes_staged_in": stager.bytes_down,
        "bytes_to_stage_out": _new_bytes(stager, [node_dir, *outside]),
        "peak_memory_mb": _peak_memory_mb(),
        "output_files": output_files,
        "node_failed": error is not None,
        "timings": timings,
    }
    with open(os.path.join(node_dir, PROVENANCE_FILE), "w") as fh:
        json.dump({"runner": runner_info}, fh, indent=1)
    # Outputs written outside the node directory (a Function writing into a derivatives
    # folder) go up too, before the result file commits the node; staged-in inputs that come
    # back as outputs are skipped, their stamps being known.
    for path in outside:
        stager.ensure_uploaded(path)
    stager.upload_tree(node_dir, bundle_key=payload.bundle_key)
    return EXIT_NODE_FAILED if error else 0


def _fail(node_dir: str, node_name: str, result: Any) -> list[str]:
    """Write the result file of a node that failed, holding the traceback being handled."""
    from nipype.utils.filemanip import savepkl

    error = traceback.format_exception(*sys.exc_info())
    sys.stderr.write("".join(error))
    os.makedirs(node_dir, exist_ok=True)
    savepkl(result_path(node_dir, node_name),
            {"result": result, "hostname": socket.gethostname(), "traceback": error})
    return error


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
