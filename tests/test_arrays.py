"""MapNodes as AWS Batch array jobs: grouping (pure), and end to end on the local stack."""

from __future__ import annotations

import glob
from pathlib import Path

import pytest
from nipype import Function, MapNode, Node, Workflow
from nipype.utils.filemanip import loadcrash

from nipype_batch import BatchPlugin
from nipype_batch.driver.arrays import array_job_name, group_for_arrays, mapflow_parent
from nipype_batch.protocol import payload_uri_for
from tests.helpers import assert_same_tree, node_dirs

# ---- pure -----------------------------------------------------------------------------------


def test_siblings_group_into_arrays_of_at_most_10000():
    items = [("a", i) for i in range(10_001)] + [("b", 0), (None, 1), ("c", 0), ("c", 1)]
    groups = group_for_arrays(items, key=lambda item: item[0])
    sizes = sorted(len(g) for g in groups)
    assert sizes == [1, 1, 1, 2, 10_000]  # a: 10,000 + a lone remainder; b alone; None alone
    big = next(g for g in groups if len(g) == 10_000)
    assert [i for _k, i in big] == list(range(10_000))  # order kept: index = place


def test_mapflow_parent_and_names():
    assert mapflow_parent("/w/wf/square/mapflow/_square12") == "/w/wf/square"
    assert mapflow_parent("/w/wf/square") is None
    assert array_job_name("local-nipype-wf_square12") == "local-nipype-wf_square"


def test_array_child_finds_its_own_payload():
    template = "s3://b/control/run/7-x/{array_index}.json"
    assert payload_uri_for(template, {"AWS_BATCH_JOB_ARRAY_INDEX": "24"}).endswith("/24.json")
    assert payload_uri_for("s3://b/k.json", {}) == "s3://b/k.json"
    with pytest.raises(ValueError, match="AWS_BATCH_JOB_ARRAY_INDEX"):
        payload_uri_for(template, {})


# ---- end to end -------------------------------------------------------------------------------


def _square(x):
    import os

    out = os.path.abspath(f"square_{x}.txt")
    with open(out, "w") as fh:
        fh.write(f"{x * x}\n")
    return out


def _total(in_files):
    import os

    total = 0
    for path in in_files:
        with open(path) as fh:
            total += int(fh.read())
    out = os.path.abspath("total.txt")
    with open(out, "w") as fh:
        fh.write(f"{total}\n")
    return out


def _square_unless_3(x):
    if x == 3:
        raise ValueError("three refused on purpose")
    return x * x


def _mapped(base: Path, n: int, function=_square) -> Workflow:
    wf = Workflow(name="mapped", base_dir=str(base))
    square = MapNode(Function(input_names=["x"], output_names=["out"], function=function),
                     iterfield=["x"], name="square")
    square.inputs.x = list(range(n))
    total = Node(Function(input_names=["in_files"], output_names=["out"], function=_total),
                 name="total")
    wf.connect(square, "out", total, "in_files")
    return wf


@pytest.mark.docker
def test_mapnode_of_25_is_one_array_job_with_linears_outputs(tmp_path, local_args):
    _mapped(tmp_path / "linear", 25).run(plugin="Linear")
    plugin = BatchPlugin(local_args)
    _mapped(tmp_path / "batch", 25).run(plugin=plugin)

    assert len(plugin.array_job_ids) == 1
    children = [j for j in plugin.submitted_job_ids if j.startswith(plugin.array_job_ids[0])]
    assert sorted(children) == sorted(f"{plugin.array_job_ids[0]}:{i}" for i in range(25))
    calls = plugin.cloud.api_calls.counts
    # the array, then `total`; the MapNode itself is collated on the driver, not submitted
    assert len(plugin.submitted_job_ids) == 26
    assert node_dirs(tmp_path / "linear" / "mapped") == node_dirs(tmp_path / "batch" / "mapped")
    assert assert_same_tree(tmp_path / "linear" / "mapped", tmp_path / "batch" / "mapped") >= 26
    total = tmp_path / "batch" / "mapped" / "total" / "total.txt"
    assert total.read_text() == f"{sum(i * i for i in range(25))}\n"
    assert calls["batch.SubmitJob"] >= 2

    rerun = BatchPlugin(local_args)
    _mapped(tmp_path / "batch", 25).run(plugin=rerun)
    assert rerun.submitted_job_ids == []


@pytest.mark.docker
def test_a_failing_child_crashes_its_subnode_only(tmp_path, local_args):
    wf = _mapped(tmp_path, 6, function=_square_unless_3)
    wf.config["execution"]["crashdump_dir"] = str(tmp_path / "crashes")
    plugin = BatchPlugin(local_args)
    with pytest.raises(RuntimeError, match="three refused on purpose"):
        wf.run(plugin=plugin)
    assert len(plugin.array_job_ids) == 1
    crashes = glob.glob(str(tmp_path / "crashes" / "crash-*.pklz"))
    assert len(crashes) == 1
    traceback = "".join(loadcrash(crashes[0])["traceback"])
    assert "three refused on purpose" in traceback
    mapflow = tmp_path / "mapped" / "square" / "mapflow"
    done = sorted(p.parent.name for p in mapflow.glob("_square*/result_*.pklz"))
    assert len(done) == 5 and "_square3" not in done
    assert not (tmp_path / "mapped" / "total").exists()
