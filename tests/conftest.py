"""Shared fixtures. Test tiers: pure unit tests, ``moto`` (in-process emulated AWS, no Docker),
and ``docker`` (end to end on the local stack: real containers, registry and emulator).

End-to-end tests skip when no Docker daemon answers, except under CI (``$CI`` set), where a
missing daemon is a failure: CI must set everything up itself.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # examples/ is importable as a package in tests

import nipype_batch  # noqa: E402,F401  registers plugin='AWSBatch'


def _docker_problem() -> str | None:
    try:
        from nipype_batch.images.docker import connect_docker

        connect_docker()
    except Exception as exc:
        return str(exc)
    return None


@pytest.fixture(scope="session")
def local_stack():
    """The process-wide local stack (started once for the whole test session)."""
    problem = _docker_problem()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide Docker: {problem}")
        pytest.skip(problem)
    from nipype_batch.local import LocalStack

    return LocalStack.get()


@pytest.fixture
def local_args(local_stack):
    """plugin_args for the local stack."""
    return {"backend": "local"}


@pytest.fixture(autouse=True)
def _run_history_of_the_test(tmp_path, monkeypatch):
    """Each test starts with no run history: what earlier tests measured would change how the
    planner packs this one's nodes."""
    monkeypatch.setenv("NIPYPE_BATCH_HISTORY", str(tmp_path / "history.sqlite"))


@pytest.fixture(autouse=True)
def _crash_files_in_tmp(tmp_path, monkeypatch):
    """Nipype writes crash files to the directory it started in: keep them in the test's tmp."""
    from nipype import config

    monkeypatch.chdir(tmp_path)
    before = config.get("execution", "crashdump_dir", None)
    config.set("execution", "crashdump_dir", str(tmp_path))
    yield
    if before is None:
        config._sections["execution"].pop("crashdump_dir", None)
    else:
        config.set("execution", "crashdump_dir", before)
