"""Asking an image a question, against a stand-in Docker client (no Docker)."""

from __future__ import annotations

import importlib.metadata
import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from nipype_batch.errors import ImageBuildError
from nipype_batch.images.build import ensure_base_image
from nipype_batch.images.docker import get_or_pull, probe_image
from nipype_batch.images.load_check import check_ready_image
from nipype_batch.images.wheels import driver_python


@dataclass
class _Image:
    id: str


@dataclass
class _Docker:
    """Images by name (some only pullable) and what ``python3 -c`` prints in each."""

    local: dict[str, str] = field(default_factory=dict)  # name -> image id
    remote: dict[str, str] = field(default_factory=dict)
    output: dict[str, bytes] = field(default_factory=dict)  # image id -> stdout
    runs: list[dict[str, Any]] = field(default_factory=list)
    pulls: list[str] = field(default_factory=list)

    @property
    def images(self) -> _Docker:
        return self

    @property
    def containers(self) -> _Docker:
        return self

    def get(self, ref: str) -> _Image:
        if ref not in self.local:
            raise LookupError(ref)
        return _Image(self.local[ref])

    def pull(self, ref: str, platform: str | None = None) -> _Image:
        if ref not in self.remote:
            raise PermissionError(ref)
        self.pulls.append(ref)
        self.local[ref] = self.remote[ref]
        return _Image(self.local[ref])

    def run(self, ref: str, command: list[str], **options: Any) -> bytes:
        self.runs.append({"ref": ref, "command": command, **options})
        out = self.output[self.local[ref]]
        if out is None:
            raise RuntimeError("exec: python3: not found")
        return out


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NIPYPE_BATCH_CACHE", str(tmp_path))


def _probe(docker: _Docker, ref: str, **options: Any) -> tuple[Any, Any]:
    return probe_image(docker, ref, "print(42)", cache_name="answers.json", parse=int,
                       unavailable=lambda exc: f"no {ref} ({exc.__class__.__name__})",
                       cannot_run=lambda exc: f"{ref} cannot run ({exc})", **options)


def test_an_image_is_asked_once_by_its_id(tmp_path):
    docker = _Docker(local={"a:1": "sha256:a", "a:latest": "sha256:a"},
                     output={"sha256:a": b"42\n"})
    assert _probe(docker, "a:1") == (_Image("sha256:a"), 42)
    assert _probe(docker, "a:latest")[1] == 42  # another name, same image: no container
    assert len(docker.runs) == 1
    assert docker.runs[0] == {"ref": "a:1", "command": ["python3", "-c", "print(42)"],
                              "remove": True, "network_mode": "none", "entrypoint": []}
    assert json.loads((tmp_path / "answers.json").read_text()) == {"sha256:a": 42}


def test_a_missing_image_is_pulled_then_asked():
    docker = _Docker(remote={"r/b:2": "sha256:b"}, output={"sha256:b": b"42"})
    assert _probe(docker, "r/b:2", keep_entrypoint=True)[1] == 42
    assert docker.pulls == ["r/b:2"]
    assert "entrypoint" not in docker.runs[0]


def test_an_image_neither_local_nor_pullable_is_worded_by_the_caller():
    with pytest.raises(ImageBuildError, match=r"^no r/c:3 \(PermissionError\)$"):
        get_or_pull(_Docker(), "r/c:3", lambda exc: f"no r/c:3 ({exc.__class__.__name__})")


def test_an_image_that_cannot_answer_is_refused_and_not_cached(tmp_path):
    docker = _Docker(local={"d:1": "sha256:d"}, output={"sha256:d": None})
    with pytest.raises(ImageBuildError, match=r"^d:1 cannot run \(exec: python3: not found\)$"):
        _probe(docker, "d:1")
    docker.output["sha256:d"] = b"not a number"
    with pytest.raises(ImageBuildError, match=r"^d:1 cannot run \(invalid literal"):
        _probe(docker, "d:1")
    assert not (tmp_path / "answers.json").exists()


def test_base_image_python_must_be_the_drivers():
    docker = _Docker(local={"base:1": "sha256:e"}, output={"sha256:e": b"2.7\n"})
    with pytest.raises(ImageBuildError, match=rf"base image 'base:1' has Python 2\.7 but this "
                                              rf"driver runs Python {driver_python()}"):
        ensure_base_image(docker, "base:1")
    assert "entrypoint" not in docker.runs[0]  # the base image's probe keeps its entrypoint
    docker.local["base:2"], docker.output["sha256:f"] = "sha256:f", driver_python().encode()
    assert ensure_base_image(docker, "base:2") == _Image("sha256:f")


def test_base_image_nowhere_says_how_to_get_one():
    with pytest.raises(ImageBuildError, match=r"base image 'nope:1' is neither in the local "
                                              r"Docker daemon nor pullable \(PermissionError\)"):
        ensure_base_image(_Docker(), "nope:1")


def test_ready_image_lacking_the_runner_is_refused():
    found = {"python": driver_python(), "nipype": importlib.metadata.version("nipype"),
             "cloudpickle": importlib.metadata.version("cloudpickle"), "boto3": "1",
             "nipype_batch.runner": None}
    docker = _Docker(remote={"lab/tool:1": "sha256:g"},
                     output={"sha256:g": b"noise\n" + json.dumps(found).encode()})
    with pytest.raises(ImageBuildError, match=r"image 'lab/tool:1' cannot run this workflow's "
                                              r"jobs: nipype_batch missing \(the job runner\)"):
        check_ready_image(docker, "lab/tool:1")
    assert docker.runs[0]["entrypoint"] == []
    found["nipype_batch.runner"] = "present"
    docker.local["lab/tool:2"], docker.output["sha256:h"] = "sha256:h", json.dumps(found).encode()
    check_ready_image(docker, "lab/tool:2")
