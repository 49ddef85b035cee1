"""Forecasts: a workflow's jobs, time and cost from the run history, before anything runs."""

from __future__ import annotations

import json

import pytest
from nipype import Function, IdentityInterface, MapNode, Node, Workflow

import nipype_batch
from nipype_batch.history import Observation, RunHistory

AWS = {"backend": "aws", "job_queue": "q", "bucket": "s3://b/p", "region": "us-east-1"}


def _step(x):
    return x


def _study(base_dir, subjects=2) -> Workflow:
    wf = Workflow(name="study", base_dir=str(base_dir))
    source = Node(IdentityInterface(fields=["subject"]), name="source")
    source.iterables = ("subject", [f"{i:02d}" for i in range(1, subjects + 1)])
    previous, field = source, "subject"
    for name in ("prep", "fit", "stats"):
        node = Node(Function(input_names=["x"], output_names=["y"], function=_step), name=name)
        wf.connect(previous, field, node, "x")
        previous, field = node, "y"
    volumes = MapNode(Function(input_names=["x"], output_names=["y"], function=_step),
                      iterfield=["x"], name="volumes")
    volumes.inputs.x = list(range(30))
    wf.add_nodes([volumes])
    return wf


def _measured(**seconds: float) -> None:
    RunHistory().record(Observation(f"study.{name}", "Function", s, 100.0, 1, 2048, True, "r",
                                    0.0) for name, s in seconds.items())


def test_a_forecast_scales_a_study_from_the_run_history(tmp_path):
    _measured(prep=20.0, fit=120.0, stats=5.0, volumes=1.0)
    two = nipype_batch.forecast(_study(tmp_path / "a"), AWS)
    many = nipype_batch.forecast(_study(tmp_path / "b"), AWS, subjects=40)
    assert two.subjects == 2 and many.subjects == 40
    # each subject's chain of 145 s, and the MapNode outside the iterable (30 x 1 s) once
    assert two.vcpu_hours == pytest.approx((2 * 145 + 30) / 3600)
    assert many.vcpu_hours == pytest.approx((40 * 145 + 30) / 3600)
    assert many.jobs > two.jobs and many.cost > 18 * two.cost > 0
    low, mid, high = many.makespan_s
    assert low <= mid <= high and mid > 145  # at least the chain of node runtimes
    assert many.stages[0].stage == "study.fit" and many.stages[0].nodes == 40
    assert many.assumed == {}
    # kept for the report of a run of the study, by its size
    assert RunHistory().forecast_for("study", 40)["jobs"] == many.jobs
    assert RunHistory().forecast_for("study", 2)["jobs"] == two.jobs
    text = many.text()
    assert "40 subjects" in text and "prices of" in text and "study.fit" in text


def test_each_job_is_priced_as_the_report_prices_it(tmp_path):
    # Fargate bills each job a minute at least: 2 subjects x 3 one-second nodes, a job each
    # (and 30 one-second array children) cost 36 minutes, not 36 seconds
    from nipype_batch.report.cost import load_prices, usage_cost

    _measured(prep=1.0, fit=1.0, stats=1.0, volumes=1.0)
    args = {**AWS, "platform": "fargate", "packing": "off"}
    result = nipype_batch.forecast(_study(tmp_path), args)
    assert result.job_runs == 2 * 3 + 30
    prices = load_prices("fargate")
    assert prices.minimum_s == 60
    minute = usage_cost(1, 2048, 60.0, prices)
    assert result.cost >= result.job_runs * minute * 0.99
    assert result.vcpu_hours < result.job_runs * 60 / 3600  # what the jobs held, not billed


def test_a_node_without_history_is_named_with_its_assumption(tmp_path):
    _measured(prep=20.0, fit=120.0)
    result = nipype_batch.forecast(_study(tmp_path), AWS)
    assert set(result.assumed) == {"study.stats", "study.volumes"}
    assert "10 s (no run history)" in result.assumed["study.stats"]
    assert "no run history for" in result.text()


def test_a_queue_too_small_for_the_study_says_what_more_vcpus_would_give(tmp_path):
    _measured(prep=60.0, fit=60.0, stats=60.0, volumes=60.0)
    result = nipype_batch.forecast(_study(tmp_path), AWS, subjects=200, max_vcpus=16)
    assert result.what_if and result.what_if[0].startswith("max-vcpus 64 ->")


def test_the_forecast_command_prints_text_and_json(tmp_path, capsys, monkeypatch):
    from nipype_batch.cli import main

    _measured(prep=20.0, fit=120.0, stats=5.0, volumes=1.0)
    script = tmp_path / "study_script.py"
    script.write_text(
        "from tests.test_forecast import _study\n"
        f"def workflow():\n    return _study({str(tmp_path / 'w')!r})\n")
    args = ["forecast", f"{script}:workflow", "--plugin-args", json.dumps(AWS)]
    assert main([*args, "--subjects", "10"]) == 0
    assert "10 subjects" in capsys.readouterr().out
    assert main([*args, "--platform", "fargate", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["platform"] == "fargate" and data["subjects"] == 2
    assert set(data["makespan_s"]) == {"low", "median", "high"}


@pytest.mark.simulated
@pytest.mark.parametrize("packing", ["auto", "off"])
def test_the_forecast_plans_the_jobs_the_run_then_submits(tmp_path, packing):
    """Run 2 subjects (the history), forecast 8, run 8: the same jobs, array children too."""
    from nipype_batch.simulated import SimulatedStack

    args = {"backend": "local", "packing": packing, "report": False, "job_overhead_s": 30.0}
    stack = SimulatedStack(workers=2)
    try:
        _study(tmp_path / "two").run(plugin=stack.plugin(args))
        predicted = nipype_batch.forecast(_study(tmp_path / "forecast"), args, subjects=8)
        plugin = stack.plugin(args)
        before = stack.cloud.api_calls.counts["batch.SubmitJob"]
        _study(tmp_path / "eight", subjects=8).run(plugin=plugin)
        submits = stack.cloud.api_calls.counts["batch.SubmitJob"] - before
    finally:
        stack.stop()
    assert predicted.assumed == {}  # every node ran in the first run
    assert (predicted.jobs, predicted.job_runs) == (submits, len(plugin.submitted_job_ids))
    if packing == "auto":  # the subjects' short chains share a job; the MapNode's chunks an array
        assert predicted.jobs == 2
