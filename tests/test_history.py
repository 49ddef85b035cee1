"""The run history: keys that find a node again, the store, and runs that feed it."""

from __future__ import annotations

import json
import logging

import pytest

from nipype_batch.cli import main
from nipype_batch.history import (
    Observation,
    RunHistory,
    history_key,
    record_quietly,
)
from nipype_batch.simulated import SimulatedStack

from .test_simulated_batch import _mapped

DENOISE = "nipype.interfaces.dipy.preprocess.Denoise"


@pytest.mark.parametrize(("node_dir", "key"), [
    ("/w/dmri/_subject_01/denoise", "dmri.denoise"),
    ("/w/dmri/_subject_02/denoise", "dmri.denoise"),
    ("/w/dmri/_session_b_subject_02/denoise/mapflow/_denoise3", "dmri.denoise"),
    ("/w/study/sub/_x_1/fit", "study.sub.fit"),
    ("/w/dmri/group", "dmri.group"),
])
def test_a_node_has_one_key_for_every_subject_and_subnode(node_dir, key):
    assert history_key(node_dir, "/w") == key


def _seen(node: str, runtime: float, memory: float = 100.0, succeeded: bool = True,
          at: float = 1.0) -> Observation:
    return Observation(node, DENOISE, runtime, memory, 1, 2048, succeeded, "run", at)


def test_the_store_answers_median_max_and_peak_of_successful_runs(tmp_path):
    store = RunHistory(tmp_path / "h.sqlite")
    assert store.nodes() == [] and not store.path.exists()  # reading creates nothing
    store.record([_seen("dmri.denoise", 10), _seen("dmri.denoise", 30, 300, at=5),
                  _seen("dmri.denoise", 20), _seen("dmri.denoise", 999, 9999, succeeded=False)])
    store.record([_seen("dmri.fit", 2)])
    denoise = store.lookup("dmri.denoise", DENOISE)
    assert (denoise.runs, denoise.median_runtime_s, denoise.max_runtime_s,
            denoise.peak_memory_mb, denoise.last_run_at) == (3, 20, 30, 300, 5)
    assert [n.node for n in store.nodes()] == ["dmri.denoise", "dmri.fit"]
    assert store.lookup("dmri.denoise", "other.Interface") is None


def test_a_broken_history_is_a_warning_never_a_failure(tmp_path, caplog):
    store = RunHistory(tmp_path / "h.sqlite")
    store.path.write_bytes(b"not a database, e.g. a disk that filled up half-way")
    with caplog.at_level(logging.WARNING, logger="nipype_batch"):
        assert record_quietly(store, [_seen("dmri.denoise", 1)]) == 0
        assert store.nodes() == []
    assert "delete the file" in caplog.text


@pytest.mark.simulated
def test_a_run_adds_each_job_s_measurements(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NIPYPE_BATCH_CACHE", str(tmp_path / "cache"))
    stack = SimulatedStack(workers=2)
    try:
        _mapped(tmp_path / "a", 6).run(plugin=stack.plugin({"report": False}))
        _mapped(tmp_path / "b", 4).run(plugin=stack.plugin({"report": False}))
    finally:
        stack.stop()
    nodes = {n.node: n for n in RunHistory().nodes()}
    # the MapNode's 6 + 4 subnodes count under it; its own collating job does not
    assert nodes["mapped.each"].runs == 10 and nodes["mapped.total"].runs == 2
    assert nodes["mapped.each"].interface == "nipype.interfaces.utility.wrappers.Function"
    assert 0 < nodes["mapped.each"].median_runtime_s < 60
    assert nodes["mapped.each"].peak_memory_mb > 0
    capsys.readouterr()
    assert main(["history", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {n["node"]: n["runs"] for n in listed["nodes"]} == {"mapped.each": 10,
                                                               "mapped.total": 2}
