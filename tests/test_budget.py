"""``budget_usd``: the run submits no job that would pass it, ends with an error naming the
spend and what remains, and a rerun with more continues from the cache."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from examples.scale.workflows import independent_workflow
from nipype_batch.aws.status import JobState, JobStatus
from nipype_batch.driver.budget import Budget
from nipype_batch.driver.jobs import PreparedJob, SubmittedJob
from nipype_batch.driver.packs import SHORT_NODE_S
from nipype_batch.errors import BudgetExceededError, ConfigurationError
from nipype_batch.report.cost import load_prices, usage_cost
from nipype_batch.resources import JobResources
from nipype_batch.settings import BatchSettings
from tests.helpers import assert_same_tree

PRICES = load_prices("ec2")
SUBJECTS = 8


def _job(name: str, key: str, vcpus: int = 1, memory_mb: int = 2048) -> PreparedJob:
    view = SubmittedJob(job_id="", job_name=name, node_name=name, node_dir=f"/w/{name}",
                        is_mapnode=False, queue="q", definition="d", image="i",
                        resources=JobResources(vcpus, memory_mb, 0, None, None, None, None, False),
                        hashvalue="", history_key=key)
    return PreparedJob(taskid=0, job=view, payload=None, environment={}, tags={},
                       array_group=None, members=[(0, view)])


def _cost(seconds: float, vcpus: int = 1, memory_mb: int = 2048) -> float:
    return usage_cost(vcpus, memory_mb, seconds, PRICES)


def test_jobs_are_admitted_until_the_next_would_pass_the_budget_then_none() -> None:
    budget = Budget(_cost(100) * 3.5, PRICES, {"wf.slow": 100.0}, SHORT_NODE_S)
    jobs = [_job(f"slow{i}", "wf.slow") for i in range(5)]
    admitted = budget.admit(jobs, 0.0, {}, set())
    assert [j.job.node_name for j in admitted] == ["slow0", "slow1", "slow2"]
    assert budget.stop is not None and budget.stop.next_job == "slow3"
    assert budget.stop.spent == pytest.approx(_cost(100) * 3)
    # stopped for good: a cheap job later is held too, as are the ones refused
    assert budget.admit([_job("cheap", "wf.unknown")], 0.0, {}, set()) == []
    assert [j.job.node_name for j in budget.held] == ["slow3", "slow4", "cheap"]


def test_the_projection_counts_what_running_jobs_still_owe_and_what_ended_billed() -> None:
    budget = Budget(1.0, PRICES, {"wf.a": 3600.0}, SHORT_NODE_S)  # an hour: USD 0.0425
    [first] = budget.admit([_job("a0", "wf.a")], 0.0, {}, set())
    first.job.job_id = "job-1"
    hour = _cost(3600)
    open_ids = {"job-1"}
    assert budget.projected(0.0, {}, open_ids) == pytest.approx(hour)  # not started yet
    import time

    half_an_hour_ago = (time.time() - 1800) * 1000
    running = {"job-1": JobStatus("job-1", JobState.RUNNING, started_at=int(half_an_hour_ago))}
    # half billed (in the spend so far), half still to come
    assert budget.projected(hour / 2, running, open_ids) == pytest.approx(hour, rel=1e-3)
    done = {"job-1": JobStatus("job-1", JobState.SUCCEEDED, started_at=1, stopped_at=2)}
    assert budget.projected(0.123, done, open_ids) == 0.123  # billed in full, in the spend
    # collected and forgotten (no status, no longer open): in the spend too
    budget._expected.append((first.job, hour))
    assert budget.projected(0.123, {}, set()) == 0.123


def test_a_job_killed_for_memory_goes_again_only_within_the_budget() -> None:
    budget = Budget(_cost(100, memory_mb=4096) * 1.5, PRICES, {"wf.big": 100.0}, SHORT_NODE_S)
    [killed] = budget.admit([_job("big", "wf.big")], 0.0, {}, set())
    killed.job.job_id = "oom"
    # its first attempt billed 100 s at 2 GiB; at 4 GiB it is expected to cost _cost(100, 4096)
    assert not budget.admit_again(killed.job, 8192, _cost(100), {}, set())
    assert budget.stop is not None and budget.stop.next_job == "big"
    roomy = Budget(1.0, PRICES, {"wf.big": 100.0}, SHORT_NODE_S)
    assert roomy.admit_again(killed.job, 4096, _cost(100), {}, set())


def test_a_node_without_history_is_assumed_short_and_a_pack_runs_its_nodes_in_turn() -> None:
    budget = Budget(1.0, PRICES, {"wf.a": 30.0}, SHORT_NODE_S, setup_s=2.0)
    pack = _job("a", "wf.a", vcpus=2)
    other = _job("b", "wf.b", vcpus=2).job
    pack.members.append((None, other))
    assert budget.expected_cost(pack) == pytest.approx(_cost(2 + 30 + SHORT_NODE_S, vcpus=2))


@pytest.mark.parametrize(("given", "problem"), [
    ({"budget_usd": 0}, "budget_usd=0 must be a positive number"),
    ({"budget_usd": "10"}, "budget_usd='10' must be a positive number"),
    ({"budget_usd": True}, "budget_usd=True must be a positive number"),
    ({"budget_action": "stop"}, "budget_action='stop' must be 'finish'"),
])
def test_bad_budget_settings_name_the_fix(given, problem) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        BatchSettings.from_plugin_args({"backend": "local", **given})


# ---- on the simulated Batch: real runner, real S3 emulator, the plugin's own loop ----------

# Without history a node is taken to run SHORT_NODE_S: the budget lets three of the eight
# first jobs (1 vCPU, 2 GiB, the plugin's default) through, and not the fourth.
THREE_JOBS = usage_cost(1, 2048, SHORT_NODE_S, PRICES) * 3.5


@pytest.fixture(scope="module")
def simulated():
    from nipype_batch.simulated import SimulatedStack

    stack = SimulatedStack(workers=2)
    yield stack
    stack.stop()


def _outputs(work: Path) -> set[str]:
    return {str(p.relative_to(work)) for p in work.rglob("result_each.pklz")}


@pytest.mark.simulated
@pytest.mark.parametrize("action", ["finish", "cancel"])
def test_a_run_stopped_by_its_budget_submits_no_more_and_a_rerun_with_more_completes(
        tmp_path, simulated, action) -> None:
    independent_workflow(str(tmp_path / "linear"), SUBJECTS).run(plugin="Linear")
    args = {"packing": "off", "report": False, "budget_action": action}

    stopped = simulated.plugin({**args, "budget_usd": THREE_JOBS})
    with pytest.raises(BudgetExceededError) as raised:
        independent_workflow(str(tmp_path / "batch"), SUBJECTS).run(plugin=stopped)
    message = str(raised.value)
    assert f"of budget_usd={THREE_JOBS:g}" in message
    assert re.search(r"\b[3-8] of 8 nodes are not done \(each: [3-8]\)", message), message
    assert "Run again with a larger budget_usd" in message
    # no job past the budget: three submitted, none after the stop
    assert len(stopped.submitted_job_ids) == 3
    jobs = [simulated.batch.jobs[i] for i in stopped.submitted_job_ids]
    assert all(job.status in ("SUCCEEDED", "FAILED") for job in jobs)  # none left running
    finished = _outputs(tmp_path / "batch")
    if action == "finish":
        assert all(job.status == "SUCCEEDED" for job in jobs) and len(finished) == 3
        assert "finished and their results are kept" in message
        assert "5 of 8 nodes are not done (each: 5)" in message
    else:
        assert "were cancelled (budget_action='cancel')" in message
        assert len(finished) < 3 or all(job.status == "SUCCEEDED" for job in jobs)

    rerun = simulated.plugin({**args, "budget_usd": 1.0})
    independent_workflow(str(tmp_path / "batch"), SUBJECTS).run(plugin=rerun)
    # the rest only: a cancelled job may yet have committed its node to S3, which counts
    if action == "finish":
        assert len(rerun.submitted_job_ids) == SUBJECTS - 3
    else:
        assert SUBJECTS - 3 <= len(rerun.submitted_job_ids) <= SUBJECTS - len(finished)
    assert_same_tree(tmp_path / "linear" / "independent", tmp_path / "batch" / "independent")


def test_a_pack_s_cost_is_counted_once_while_its_other_nodes_run() -> None:
    import time
    from dataclasses import replace

    from nipype_batch.driver.view import RunCost
    from nipype_batch.platforms import PLATFORMS

    cost = RunCost(PLATFORMS["ec2"])
    job = _job("a", "wf.a").job
    job.job_id = "pack"
    an_hour_ago = (time.time() - 3600) * 1000
    running = JobStatus("pack", JobState.RUNNING, started_at=int(an_hour_ago))
    # its first node resolved after half an hour: that slice is collected, as the plugin does
    cost.add_collected(job, replace(running, stopped_at=int(an_hour_ago + 1800_000)))
    cost.costed_to["pack"] = an_hour_ago + 1800_000
    assert cost.total([job], {"pack": running}) == pytest.approx(_cost(3600), rel=1e-3)


def _slow(x):
    import time

    time.sleep(0.5)
    return x


def _chains(base: Path, subjects: int):
    """Each subject a chain of three nodes: packed into one job, whose later nodes Nipype
    asks for only after the first one's result came home."""
    from nipype import Function, IdentityInterface, Node, Workflow

    wf = Workflow(name="chains", base_dir=str(base))
    source = Node(IdentityInterface(fields=["x"]), name="source")
    source.iterables = ("x", list(range(subjects)))
    previous, field = source, "x"
    for name in ("first", "second", "third"):
        node = Node(Function(input_names=["x"], output_names=["y"], function=_slow), name=name)
        wf.connect(previous, field, node, "x")
        previous, field = node, "y"
    return wf


@pytest.mark.simulated
def test_finish_waits_for_a_pack_s_job_that_no_node_waits_for_yet(tmp_path, simulated) -> None:
    # one job per subject (three nodes); two fit the budget. A pack just the chain's length
    # keeps the subjects from sharing a job side by side (they would with a longer target)
    two_packs = usage_cost(1, 2048, 3 * SHORT_NODE_S, PRICES) * 2.5
    plugin = simulated.plugin({"report": False, "job_overhead_s": 60.0,
                               "pack_target_s": 3 * SHORT_NODE_S, "budget_usd": two_packs})
    with pytest.raises(BudgetExceededError, match="finished and their results are kept"):
        _chains(tmp_path, 4).run(plugin=plugin)
    assert len(plugin.submitted_job_ids) == 2
    jobs = [simulated.batch.jobs[i] for i in plugin.submitted_job_ids]
    assert [job.status for job in jobs] == ["SUCCEEDED", "SUCCEEDED"]  # not left running
    assert len(list(tmp_path.rglob("result_third.pklz"))) == 2  # each pack's last node home


def test_a_stopped_run_terminates_the_jobs_no_node_waits_for_yet_unless_all_is_done() -> None:
    from nipype_batch.driver.poll import JobsInFlight

    class Batch:
        terminated: list[str] = []

        def describe(self, ids):
            known = {"ended": JobState.SUCCEEDED, "packing": JobState.RUNNING}
            return {i: JobStatus(i, known[i]) for i in ids if i in known}

        def terminate(self, ids, reason):
            self.terminated += ids
            return []

    batch = Batch()
    flight = JobsInFlight(batch, BatchSettings(), journal=None)
    flight.open_jobs = {"ended", "packing", "unknown"}
    flight.cancel("run", untracked=False)  # every node done: what is open is only exiting
    assert batch.terminated == []
    flight.open_jobs = {"ended", "packing", "unknown"}
    flight.cancel("run")
    assert batch.terminated == ["packing", "unknown"] and flight.open_jobs == set()
