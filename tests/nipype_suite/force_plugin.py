"""A pytest plugin: run Nipype's own tests with every ``Workflow.run`` forced through a plugin.

Loaded into a pytest run over the *installed* nipype package (``-p
tests.nipype_suite.force_plugin``), so Nipype's files are used where they are, not copied.
``NIPYPE_SUITE_PLUGIN`` names the plugin ('Linear' or 'AWSBatch', on the local stack);
``NIPYPE_SUITE_REPORT`` is the JSON file written at the end: for every test, its outcome, whether
it ran a workflow through the forced plugin, and why not when it could not be forced.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from nipype.pipeline.engine.workflows import Workflow

from nipype_batch.settings import NIPYPE_KEYS

_RUN = Workflow.run
_current: dict[str, Any] = {}


def _forced_run(self: Workflow, plugin: Any = None, plugin_args: dict | None = None,
                updatehash: bool = False) -> Any:
    if plugin is not None and not isinstance(plugin, str):
        # An instance is a test of that plugin's own machinery: it runs as written.
        _current["not_forced"] = f"passes a {type(plugin).__name__} instance"
        return _RUN(self, plugin=plugin, plugin_args=plugin_args, updatehash=updatehash)
    _current["forced"] = True
    forced = os.environ["NIPYPE_SUITE_PLUGIN"]
    # Nipype's own keys (status_callback, max_jobs) keep their meaning; process-pool keys
    # (n_procs, memory_gb, ...) have none for a plugin that runs each node as a job.
    kept = {k: v for k, v in (plugin_args or {}).items() if k in NIPYPE_KEYS}
    if forced == "AWSBatch":
        kept.update(backend="local", progress=False)
    return _RUN(self, plugin=forced, plugin_args=kept, updatehash=updatehash)


def pytest_configure(config: pytest.Config) -> None:
    Workflow.run = _forced_run  # type: ignore[method-assign]
    config._nipype_suite = {}  # type: ignore[attr-defined]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: Any) -> Any:
    _current.clear()
    _current.update(outcome="passed", forced=False)
    yield
    item.config._nipype_suite[item.nodeid] = dict(_current)  # type: ignore[attr-defined]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.failed:
        _current["outcome"] = "failed"
        _current.setdefault("error", report.longreprtext[-2000:])
    elif report.skipped and report.when in ("setup", "call"):
        _current["outcome"] = "skipped"


def pytest_unconfigure(config: pytest.Config) -> None:
    Workflow.run = _RUN  # type: ignore[method-assign]
    path = os.environ.get("NIPYPE_SUITE_REPORT")
    results = getattr(config, "_nipype_suite", None)
    if path and results is not None:
        with open(path, "w") as out:
            json.dump(results, out, indent=1, sort_keys=True)
