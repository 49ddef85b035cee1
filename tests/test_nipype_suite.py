"""Nipype's own workflow-running tests, with every ``Workflow.run`` forced through AWSBatch.

The tests are those of the *installed* nipype (its engine, plugin and utility-interface tests),
run in place by a pytest plugin (:mod:`tests.nipype_suite.force_plugin`), first under ``Linear``
to learn which run a workflow and pass, then those under ``AWSBatch`` on the local stack. Every
test that passes under ``Linear`` must pass under ``AWSBatch``, except those in
:data:`CANNOT_PASS`, each with its reason.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nipype
import pytest

ROOT = Path(__file__).resolve().parent.parent
NIPYPE_DIR = Path(nipype.__file__).parent
SUITES = ("pipeline/engine/tests", "pipeline/plugins/tests", "interfaces/utility/tests")
_MODULE_STATE = ("counts calls in a module-level global of the test module; each job runs in "
                 "its own process, so the driver's global never changes")

# Tests that pass under Linear and cannot pass under any plugin that runs nodes elsewhere.
CANNOT_PASS: dict[str, str] = {
    "pipeline/engine/tests/test_join.py::test_identity_join_node": _MODULE_STATE,
    "pipeline/engine/tests/test_join.py::test_itersource_join_source_node": _MODULE_STATE,
    "pipeline/engine/tests/test_join.py::test_join_expansion[false]": _MODULE_STATE,
    "pipeline/engine/tests/test_join.py::test_join_expansion[true]": _MODULE_STATE,
    "pipeline/engine/tests/test_join.py::test_multifield_join_node": _MODULE_STATE,
    "pipeline/engine/tests/test_join.py::test_multiple_join_nodes": _MODULE_STATE,
    "pipeline/engine/tests/test_join.py::test_set_join_node": _MODULE_STATE,
    "pipeline/engine/tests/test_join.py::test_synchronize_join_node": _MODULE_STATE,
    "pipeline/engine/tests/test_join.py::test_unique_join_node": _MODULE_STATE,
}
_PLUGIN_PARAM = re.compile(r"(?<=[\[-])(Linear|MultiProc|LegacyMultiProc)(?=[\]-])")

pytestmark = [pytest.mark.docker, pytest.mark.nipype_suite]


def _run_suite(plugin: str, targets: list[str], report: Path) -> dict[str, dict]:
    env = dict(os.environ, NIPYPE_SUITE_PLUGIN=plugin, NIPYPE_SUITE_REPORT=str(report),
               PYTHONDONTWRITEBYTECODE="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           "-p", "tests.nipype_suite.force_plugin", "--rootdir", str(NIPYPE_DIR), "-c", os.devnull,
           "--basetemp", str(report.parent / f"tmp-{plugin}"), "-W", "ignore::DeprecationWarning",
           *[str(NIPYPE_DIR / t) for t in targets]]
    done = subprocess.run(cmd, cwd=report.parent, env=env, capture_output=True, text=True)
    assert report.exists(), f"the {plugin} run wrote no report:\n{done.stdout[-3000:]}{done.stderr}"
    return json.loads(report.read_text())


def _without_plugin_param(nodeid: str) -> str:
    """The test a plugin-parametrised id stands for once every plugin is forced to one."""
    return _PLUGIN_PARAM.sub("*", nodeid)


def test_nipypes_own_workflow_tests_pass_under_awsbatch(tmp_path, local_stack):
    linear = _run_suite("Linear", list(SUITES), tmp_path / "linear.json")
    ran = {k: v for k, v in linear.items() if v["forced"]}
    passing = sorted(k for k, v in ran.items() if v["outcome"] == "passed")
    stale = sorted(set(CANNOT_PASS) - set(passing))
    assert not stale, f"CANNOT_PASS names tests that do not pass under Linear: {stale}"
    chosen: dict[str, str] = {}
    for nodeid in passing:
        if nodeid not in CANNOT_PASS:
            chosen.setdefault(_without_plugin_param(nodeid), nodeid)

    batch = _run_suite("AWSBatch", sorted(chosen.values()), tmp_path / "awsbatch.json")
    failed = {k: batch.get(k, {}).get("error", "not run") for k in chosen.values()
              if batch.get(k, {}).get("outcome") != "passed"}
    counts = [("Nipype tests collected", len(linear)),
              ("that run a workflow (forced)", len(ran)),
              ("of those, pass under Linear", len(passing)),
              ("cannot pass elsewhere (listed)", len(CANNOT_PASS)),
              ("same test under another plugin name", len(passing) - len(CANNOT_PASS)
               - len(chosen)),
              ("run under AWSBatch", len(chosen)),
              ("pass under AWSBatch", len(chosen) - len(failed))]
    print("\n" + "\n".join(f"{label:<40}{n:>5}" for label, n in counts))
    assert not failed, "\n\n".join(f"{k}:\n{v}" for k, v in failed.items())
