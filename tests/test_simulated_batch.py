"""The simulated Batch (jobs run the real runner in worker processes, without containers), and
the driver at scale against it: array jobs, API call budgets, failures.

Needs the emulator (moto server) but not Docker.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from nipype import Workflow

from examples.scale.workflows import double, mapnode_workflow
from nipype_batch.simulated import SimulatedStack
from tests.helpers import assert_same_tree, node_dirs

pytestmark = pytest.mark.simulated


def _fails_on_7(x):
    if x == 7:
        raise RuntimeError("seven fails on purpose")
    return x


def _mapped(base: Path, n: int, function=double) -> Workflow:
    return mapnode_workflow(str(base), n, function)


@pytest.fixture(scope="module")
def simulated():
    stack = SimulatedStack(workers=2)
    yield stack
    stack.stop()


@pytest.fixture
def directory_stack(tmp_path):
    stack = SimulatedStack(workers=2, s3_directory=str(tmp_path / "s3"))
    yield stack
    stack.stop()


def test_mapnode_on_the_simulated_batch_matches_linear(tmp_path, simulated, capsys):
    _mapped(tmp_path / "linear", 40).run(plugin="Linear")
    plugin = simulated.plugin()
    before = dict(simulated.cloud.api_calls.counts)
    capsys.readouterr()
    _mapped(tmp_path / "sim", 40).run(plugin=plugin)
    # not a terminal: progress comes as plain lines on stderr, one per change of state
    err = capsys.readouterr().err
    progress = [line for line in err.splitlines() if "| AWS Batch jobs:" in line]
    assert progress and progress[0].startswith("[  0%] 0 of 41 nodes done")
    assert "nipype-batch: 41 of 41 nodes done, 0 failed" in err
    assert "\x1b[" not in err
    assert len(progress) == len(set(progress)), "a line repeats an unchanged state"
    calls = {k: v - before.get(k, 0) for k, v in simulated.cloud.api_calls.counts.items()}

    assert node_dirs(tmp_path / "linear" / "mapped") == node_dirs(tmp_path / "sim" / "mapped")
    assert_same_tree(tmp_path / "linear" / "mapped", tmp_path / "sim" / "mapped")
    assert len(plugin.array_job_ids) == 1 and len(plugin.submitted_job_ids) == 41
    assert calls["batch.SubmitJob"] == 2  # the array and `total`
    # the array's children are described once, after it ends, in one call of <= 100 ids
    children = simulated.batch.jobs[plugin.array_job_ids[0]].children
    assert len(children) == 40 and all(c.status == "SUCCEEDED" for c in children)


def test_a_failing_child_fails_its_subnode_and_the_array(tmp_path, simulated):
    wf = _mapped(tmp_path, 12, function=_fails_on_7)
    wf.config["execution"]["crashdump_dir"] = str(tmp_path / "crashes")
    plugin = simulated.plugin()
    with pytest.raises(RuntimeError, match="seven fails on purpose"):
        wf.run(plugin=plugin)
    parent = simulated.batch.jobs[plugin.array_job_ids[0]]
    assert parent.status == "FAILED" and parent.reason == "1 child jobs failed"
    assert len(list((tmp_path / "crashes").glob("crash-*_each7-*.pklz"))) == 1
    assert not (tmp_path / "mapped" / "total").exists()


def test_describe_jobs_refuses_more_than_100_ids(simulated):
    client = simulated.cloud.batch.batch
    with pytest.raises(ClientError, match="at most 100"):
        client.describe_jobs(jobs=[f"id-{i}" for i in range(101)])


@pytest.mark.scale
def test_a_10000_way_mapnode_completes_within_the_api_budget(tmp_path, directory_stack):
    n = 10_000
    plugin = directory_stack.plugin({"fetch_outputs": False})
    _mapped(tmp_path, n).run(plugin=plugin)

    calls = directory_stack.cloud.api_calls.counts
    assert len(plugin.array_job_ids) == 1
    assert calls["batch.SubmitJob"] == 2  # one array of 10,000, then `total`
    assert calls["batch.RegisterJobDefinition"] == 1
    # per poll: one DescribeJobs for the array (its summary), then 100 for its children
    # once, when it has ended; `total` adds one per poll
    polls = plugin.poll_count
    assert calls["batch.DescribeJobs"] <= polls + math.ceil(n / 100)
    # the driver's S3 requests: a payload per job and a bundle fetched per job (and the
    # preflight's probe); no listing per node
    assert calls["s3.PutObject"] == n + 1 + 1
    assert calls["s3.GetObject"] == n + 1 + 1
    assert calls["s3.ListObjectsV2"] <= 20
    total = Path(tmp_path / "mapped" / "total" / "result_total.pklz")
    assert total.exists()


def test_subnodes_deleted_locally_are_recovered_from_s3_without_jobs(tmp_path, simulated):
    import shutil

    first = simulated.plugin({"report": False})
    _mapped(tmp_path, 6).run(plugin=first)
    shutil.rmtree(tmp_path / "mapped")  # the driver's copy is gone; S3 still holds the results

    rerun = simulated.plugin({"report": False})
    _mapped(tmp_path, 6).run(plugin=rerun)
    # each subnode found its committed files in the one listing of their mapflow folder
    assert rerun.submitted_job_ids == []
    assert len(list((tmp_path / "mapped" / "each" / "mapflow").glob("_each*/result_*.pklz"))) == 6
    assert (tmp_path / "mapped" / "total" / "result_total.pklz").exists()
