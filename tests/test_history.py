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


def test_the_runner_s_own_time_is_the_median_of_recent_jobs_on_that_backend(tmp_path):
    from dataclasses import replace

    store = RunHistory(tmp_path / "h.sqlite")
    assert store.overheads("local") is None
    store.record([replace(_seen("a", 1, at=i), setup_s=s, handoff_s=h, backend="local")
                  for i, (s, h) in enumerate([(2.0, 0.3), (3.0, None), (9.0, 0.5)])])
    store.record([replace(_seen("a", 1), setup_s=60.0, handoff_s=5.0, backend="aws")])
    local = store.overheads("local")
    assert (local.setup_s, local.handoff_s, local.jobs) == (3.0, 0.4, 3)
    assert store.overheads("aws").setup_s == 60.0


def test_a_history_written_before_the_runner_s_time_was_kept_gains_its_columns(tmp_path):
    import sqlite3

    path = tmp_path / "h.sqlite"
    with sqlite3.connect(path) as old:  # the first version's table
        old.execute("CREATE TABLE observations (node, interface, runtime_s, peak_memory_mb, "
                    "vcpus, memory_mb, succeeded, run_id, recorded_at)")
        old.execute("INSERT INTO observations VALUES ('a', ?, 4.0, 10, 1, 512, 1, 'r', 1)",
                    (DENOISE,))
    store = RunHistory(path)
    assert record_quietly(store, [_seen("a", 6)]) == 1
    assert store.nodes()[0].median_runtime_s == 5.0
    assert store.overheads("") is None  # no measurement among them


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
    runner = RunHistory().overheads("local")  # the runner's own time, for forecasts
    assert runner.jobs == 12 and 0 <= runner.setup_s < 30 and 0 < runner.handoff_s < 30
    capsys.readouterr()
    assert main(["history", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {n["node"]: n["runs"] for n in listed["nodes"]} == {"mapped.each": 10,
                                                               "mapped.total": 2}


def test_the_runner_s_time_is_read_from_its_timings_and_batch_s_clock():
    from nipype_batch.aws.status import JobState, JobStatus
    from nipype_batch.driver.collect import runner_overheads

    ended = JobStatus("j", JobState.SUCCEEDED, started_at=100_000, stopped_at=110_500)
    alone = {"start": 101.0, "job_staged_in": 102.5, "staged_in": 102.5, "ran": 110.0}
    assert runner_overheads(alone, ended, in_pack=False) == {"setup_s": 2.5, "handoff_s": 0.5}
    # in a pack: from its predecessor's end to its own start; the job may still run
    running = JobStatus("j", JobState.RUNNING, started_at=100_000)
    member = {**alone, "staged_in": 107.0, "after_ran": 106.2}
    assert runner_overheads(member, running, in_pack=True) == pytest.approx(
        {"setup_s": 2.5, "handoff_s": 0.8})
    first = {**alone, "staged_in": 102.5}
    assert runner_overheads(first, running, in_pack=True) == {"setup_s": 2.5, "handoff_s": None}
    # another machine's clock ahead of Batch's: no negative time
    skewed = JobStatus("j", JobState.SUCCEEDED, started_at=103_000, stopped_at=109_000)
    assert runner_overheads(alone, skewed, in_pack=False) == {"setup_s": 0.0, "handoff_s": 0.0}
