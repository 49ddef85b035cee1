"""Before anything is submitted, check that jobs can load in their images.

A ready image (``image``, used as is) is asked once for its Python, nipype and cloudpickle,
which must be the driver's. Then each kind of node is loaded inside its job image.
Tracing what a node imports (:mod:`.dependencies`) reads source; this asks the image itself.
A node that cannot be unpickled in its job fails every attempt of every job and wastes the
queue's time, so each distinct kind of node (interface class, Function source) is loaded once
in a throwaway container of its image, with no network: every module and class its pickle names
is imported, then the pickle itself is loaded. A failure names the node, the missing module
and the fix, with nothing submitted. Verified kinds are cached by image, so an unchanged rerun
starts no container.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import logging
import pickle
import tarfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..cache import cache_dir
from ..errors import ConfigurationError, ImageBuildError
from .dependencies import pickled_references, without_plugin
from .docker import get_or_pull, probe_image
from .wheels import driver_python

log = logging.getLogger(__name__)

CHECK_DIR = "/tmp/nipype-batch-check"
_TIMEOUT_S = 300

# Runs inside the image with its own python3; prints one JSON list of problems, last.
_CHECK_SCRIPT = r"""
import importlib, json, pickle, sys
folder = sys.argv[1]
with open(folder + "/kinds.json") as fh:
    kinds = json.load(fh)

def problem(exc, module, name):
    missing = exc.name if isinstance(exc, ImportError) else None
    return {"module": module, "name": name, "error": "%s: %s" % (type(exc).__name__, exc),
            "missing": missing, "import_error": isinstance(exc, ImportError)}

found = []
for kind in kinds:
    failure = None
    for module, name in kind["references"]:
        try:
            target = importlib.import_module(module)
            for part in name.split("."):
                target = getattr(target, part)
        except BaseException as exc:
            failure = problem(exc, module, name)
            break
    if failure is None:
        try:
            with open(folder + "/" + kind["pickle"], "rb") as fh:
                pickle.load(fh)
        except (ImportError, AttributeError) as exc:
            failure = problem(exc, None, None)
        except BaseException:
            pass  # data, not code: e.g. an input file that the job stages in before loading
    if failure is not None:
        failure["kind"] = kind["kind"]
        found.append(failure)
print(json.dumps(found))
"""


# Runs inside a ready image: what of the job's needs it has, as one JSON line.
_READY_PROBE = (
    "import json, sys\n"
    "found = {'python': '%d.%d' % sys.version_info[:2]}\n"
    "for name in ('nipype', 'cloudpickle', 'boto3', 'nipype_batch.runner'):\n"
    "    try:\n"
    "        module = __import__(name, fromlist=['_'])\n"
    "        found[name] = getattr(module, '__version__', 'present')\n"
    "    except Exception as exc:\n"
    "        found[name] = None\n"
    "print(json.dumps(found))\n"
)


def check_ready_image(docker: Any, ref: str) -> None:
    """Refuse an as-is image whose Python, nipype or cloudpickle differ from the driver's."""
    _image, found = probe_image(
        docker, ref, _READY_PROBE, cache_name="ready-images.json",
        parse=lambda out: json.loads(out.splitlines()[-1]),
        unavailable=lambda exc: (
            f"image {ref!r} is neither local nor pullable ({exc.__class__.__name__}): "
            "check its name and that you are logged in to its registry."),
        cannot_run=lambda exc: (
            f"image {ref!r} cannot run `python3` ({exc.__class__.__name__}); jobs need it."),
    )
    wanted = {
        "python": driver_python(),
        "nipype": importlib.metadata.version("nipype"),
        "cloudpickle": importlib.metadata.version("cloudpickle"),
    }
    problems = [f"{name} {found.get(name) or 'missing'} (driver: {version})"
                for name, version in wanted.items() if found.get(name) != version]
    if not found.get("nipype_batch.runner"):
        problems.append("nipype_batch missing (the job runner)")
    if not found.get("boto3"):
        problems.append("boto3 missing (the runner's S3 client)")
    if problems:
        raise ImageBuildError(
            f"image {ref!r} cannot run this workflow's jobs: {'; '.join(problems)}. Pickled "
            "nodes need the driver's Python minor version, nipype and cloudpickle. Give it as "
            "plugin_args={'base_image': ...} instead, and nipype-batch will add the packages."
        )


@dataclass(frozen=True)
class NodeKind:
    """Nodes that load alike: one interface class (and Function source), one set of names."""

    key: str
    node: Any  # the first node of this kind: it is the one loaded
    references: tuple[tuple[str, str], ...]


def node_kinds(nodes: Iterable[Any]) -> list[NodeKind]:
    """One :class:`NodeKind` per distinct interface class, Function source and references."""
    kinds: dict[str, NodeKind] = {}
    for node in nodes:
        cls = type(node.interface)
        references = tuple(sorted(pickled_references(node)))
        source = getattr(getattr(node.interface, "inputs", None), "function_str", None)
        digest = hashlib.sha256(json.dumps(
            [cls.__module__, cls.__qualname__, source if isinstance(source, str) else None,
             references]).encode()).hexdigest()[:20]
        key = f"{cls.__module__}.{cls.__qualname__}:{digest}"
        kinds.setdefault(key, NodeKind(key, node, references))
    return list(kinds.values())


def check_nodes_load(docker: Any, image_ref: str, nodes: list[Any],
                     local_ref: str | None = None) -> int:
    """Refuse nodes that cannot be unpickled in ``image_ref``; return how many kinds were
    loaded in a container (0 when every kind was verified before in this image).

    ``local_ref`` is the image's name in this Docker daemon, if it was built here.
    """
    kinds = node_kinds(nodes)
    cache = cache_dir() / "pickle-checks.json"
    try:
        verified: dict[str, list[str]] = json.loads(cache.read_text())
    except (OSError, ValueError):
        verified = {}
    done = set(verified.get(image_ref, []))
    pending = [kind for kind in kinds if kind.key not in done]
    if not pending:
        return 0
    started = time.monotonic()
    failures = _load_in_container(docker, _local_image(docker, image_ref, local_ref), pending)
    if failures:
        by_key = {kind.key: kind for kind in pending}
        raise ConfigurationError("\n".join(
            _explain(by_key[failure["kind"]].node, image_ref, failure) for failure in failures))
    verified[image_ref] = sorted(done | {kind.key for kind in pending})
    cache.write_text(json.dumps(verified))
    log.info("Loaded %d kinds of node in job image %s in %.1f s: all load", len(pending),
             image_ref, time.monotonic() - started)
    return len(pending)


def _local_image(docker: Any, image_ref: str, local_ref: str | None) -> str:
    """A name of the image that this daemon has, pulling it if it has none."""
    if local_ref:
        try:
            docker.images.get(local_ref)
            return local_ref
        except Exception:
            pass
    get_or_pull(docker, image_ref, what="job image", unavailable=lambda exc: (
        f"job image {image_ref!r} cannot be pulled to check that nodes load in it "
        f"({exc.__class__.__name__}: {exc}). Check that you are logged in to its registry."))
    return image_ref


def _load_in_container(docker: Any, ref: str, kinds: list[NodeKind]) -> list[dict[str, Any]]:
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        folder = tarfile.TarInfo(CHECK_DIR.lstrip("/"))
        folder.type, folder.mode = tarfile.DIRTYPE, 0o755  # readable by any user of the image
        tar.addfile(folder)
        listing = []
        for index, kind in enumerate(kinds):
            with without_plugin(kind.node):
                data = pickle.dumps(kind.node, protocol=pickle.HIGHEST_PROTOCOL)
            _add(tar, f"{index}.pkl", data)
            listing.append({"kind": kind.key, "pickle": f"{index}.pkl",
                            "references": [list(r) for r in kind.references]})
        _add(tar, "kinds.json", json.dumps(listing).encode())
    container = docker.containers.create(
        ref, ["python3", "-c", _CHECK_SCRIPT, CHECK_DIR], entrypoint=[],
        network_disabled=True, working_dir="/",
    )
    try:
        container.put_archive("/", archive.getvalue())
        container.start()
        exit_code = container.wait(timeout=_TIMEOUT_S).get("StatusCode")
        out = container.logs(stdout=True, stderr=False).decode(errors="replace").strip()
        err = container.logs(stdout=False, stderr=True).decode(errors="replace").strip()
    finally:
        container.remove(force=True)
    lines = out.splitlines()
    if exit_code != 0 or not lines:
        tail = "\n".join(err.splitlines()[-15:])
        raise ImageBuildError(
            f"job image {ref!r} cannot run `python3` to load this workflow's nodes (exit "
            f"code {exit_code}):\n{tail}\nJobs need python3 in the image, with the driver's "
            "minor version."
        )
    return json.loads(lines[-1])


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(f"{CHECK_DIR.lstrip('/')}/{name}")
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _explain(node: Any, image_ref: str, failure: dict[str, Any]) -> str:
    """One failure as an error line: the node, what is missing, and the fix."""
    what = f"node {node.fullname!r} cannot be loaded in its job image {image_ref}"
    where = f" (importing {failure['module']})" if failure.get("module") else ""
    missing = failure.get("missing")
    if missing:
        top = missing.split(".")[0]
        dists = importlib.metadata.packages_distributions().get(top, [])
        if dists:
            version = importlib.metadata.version(dists[0])
            fix = (f"add it with plugin_args={{'packages': [{dists[0]!r}]}} (pinned to this "
                   f"driver's {dists[0]} {version})")
        else:
            fix = (f"install the package that provides {top!r} on the driver (`pip install "
                   f"...`), then add it with plugin_args={{'packages': [...]}}")
        return f"{what}: {failure['error']}{where}; {fix}."
    if failure.get("import_error"):
        return (f"{what}: {failure['error']}{where}; a compiled module lacks a system library "
                "in the image: use a base_image that has it (plugin_args={'base_image': ...}).")
    return f"{what}: {failure['error']}{where}."
