"""End to end on the local stack: real containers, real registry, emulated AWS.

Every AWSBatch run is compared with Nipype's own Linear run of the same workflow.
"""

from __future__ import annotations

import glob
import json
import pickle
from pathlib import Path

import pytest
from nipype import Function, Node, Workflow
from nipype.utils.filemanip import loadcrash, loadpkl

from examples.demo.workflow import build_workflow, make_inputs
from nipype_batch import BatchPlugin
from tests.helpers import assert_same_tree, node_dirs

pytestmark = pytest.mark.docker


def _demo(root: Path, data: str):
    return build_workflow(str(root / "work"), data, str(root / "output"))


@pytest.mark.parametrize("packing", ["auto", "off"])
def test_demo_matches_linear_and_rerun_submits_nothing(tmp_path, local_args, packing):
    data = make_inputs(str(tmp_path / "data"))
    _demo(tmp_path / "linear", data).run(plugin="Linear")

    # a status callback plain pickle cannot carry: the MapNodes' pickles must not hold it
    events = []
    local_args = {**local_args, "packing": packing}
    plugin = BatchPlugin({**local_args, "status_callback": lambda n, s: events.append(s)})
    _demo(tmp_path / "batch", data).run(plugin=plugin)
    assert events.count("start") == events.count("end") > 0

    # files between nodes, a MapNode (3 subnodes x 2 subjects, each MapNode collated on the
    # driver), iterables and a JoinNode
    # A job per node: 2 loads, 6 subnodes (2 arrays), 2 summaries, group. Packed alike but
    # for the two loads (short, waiting on nothing), which share a job side by side: a
    # MapNode sits between each load and summary, and without a run history a subnode is
    # taken to run 10 s, longer than a job waits on the local stack, so each runs alone.
    assert len(plugin.submitted_job_ids) == 2 + 6 + 2 + 1 - (packing == "auto")
    assert len(plugin.array_job_ids) == 2
    assert node_dirs(tmp_path / "linear" / "work") == node_dirs(tmp_path / "batch" / "work")
    compared = assert_same_tree(tmp_path / "linear" / "work", tmp_path / "batch" / "work")
    assert compared >= 10
    assert_same_tree(tmp_path / "linear" / "output", tmp_path / "batch" / "output")
    assert (tmp_path / "batch" / "output" / "group.csv").read_text().startswith("subject,total")

    rerun = BatchPlugin(local_args)
    _demo(tmp_path / "batch", data).run(plugin=rerun)
    assert rerun.submitted_job_ids == []


def _boom(x):
    raise ValueError(f"boom-{x}: this node fails on purpose")


def _write(x):
    import os

    out = os.path.abspath("ok.txt")
    with open(out, "w") as fh:
        fh.write(f"ok {x}\n")
    return out


def _after(in_file):
    return in_file


def _failing_workflow(base: Path) -> Workflow:
    wf = Workflow(name="fails", base_dir=str(base))
    wf.config["execution"]["crashdump_dir"] = str(base / "crashes")
    bad = Node(Function(input_names=["x"], output_names=["out"], function=_boom), name="bad")
    bad.inputs.x = 7
    after_bad = Node(Function(input_names=["in_file"], output_names=["out"], function=_after),
                     name="after_bad")
    good = Node(Function(input_names=["x"], output_names=["out"], function=_write), name="good")
    good.inputs.x = 1
    after_good = Node(Function(input_names=["in_file"], output_names=["out"], function=_after),
                      name="after_good")
    wf.connect([(bad, after_bad, [("out", "in_file")]), (good, after_good, [("out", "in_file")])])
    return wf


@pytest.mark.parametrize("packing", ["auto", "off"])
def test_failing_node_gives_crash_file_and_other_branches_finish(tmp_path, local_args, packing):
    plugin = BatchPlugin({**local_args, "packing": packing})
    with pytest.raises(RuntimeError, match="boom-7"):
        _failing_workflow(tmp_path).run(plugin=plugin)

    crashes = glob.glob(str(tmp_path / "crashes" / "crash-*-bad-*.pklz"))
    assert len(crashes) == 1
    crash_text = "".join(loadcrash(crashes[0])["traceback"])
    assert "ValueError: boom-7: this node fails on purpose" in crash_text
    assert "log lines of job" in crash_text  # the job's log tail travels with it
    assert (tmp_path / "fails" / "good" / "ok.txt").read_text() == "ok 1\n"
    assert (tmp_path / "fails" / "after_good" / "result_after_good.pklz").exists()
    assert not (tmp_path / "fails" / "after_bad").exists()
    # bad, good, after_good; packed, each branch is one job
    assert len(plugin.submitted_job_ids) == (2 if packing == "auto" else 3)
    # the failed node is not mistaken for a cached one on the next run
    assert not (tmp_path / "fails" / "bad" / "result_bad.pklz").exists()


def _double(x):
    return 2 * x


def test_a_packs_middle_node_fails_alone_its_siblings_and_other_branches_finish(
        tmp_path, local_args):
    wf = Workflow(name="mid", base_dir=str(tmp_path))
    wf.config["execution"]["crashdump_dir"] = str(tmp_path / "crashes")
    first = Node(Function(["x"], ["out"], _double), name="first")
    first.inputs.x = 3
    middle = Node(Function(["x"], ["out"], _boom), name="middle")
    last = Node(Function(["x"], ["out"], _double), name="last")
    sibling = Node(Function(["x"], ["out"], _double), name="sibling")
    other = Node(Function(["x"], ["out"], _double), name="other")
    other.inputs.x = 5
    wf.connect([(first, middle, [("out", "x")]), (middle, last, [("out", "x")]),
                (first, sibling, [("out", "x")])])
    wf.add_nodes([other])
    # as on AWS, where a job waits a minute: the sibling is worth queueing behind `middle`
    plugin = BatchPlugin({**local_args, "job_overhead_s": 60})
    with pytest.raises(RuntimeError, match="boom-6"):
        wf.run(plugin=plugin)

    # first..sibling in one job, and other (short, waiting on nothing) beside them
    assert len(plugin.submitted_job_ids) == 1
    crashes = glob.glob(str(tmp_path / "crashes" / "crash-*-middle-*.pklz"))
    assert len(crashes) == 1
    crash = loadcrash(crashes[0])
    assert "ValueError: boom-6: this node fails on purpose" in "".join(crash["traceback"])
    assert "/opt/nipype-batch/" in "".join(crash["traceback"])  # raised in the job
    assert not (tmp_path / "mid" / "last").exists()  # its downstream: skipped
    for name, value in (("first", 6), ("sibling", 12), ("other", 10)):
        result = loadpkl(str(tmp_path / "mid" / name / f"result_{name}.pklz"))
        assert result.outputs.out == value
    record = json.loads((tmp_path / "mid" / "sibling" / "_nipype_batch.json").read_text())
    assert sorted(record["runner"]["pack"]["nodes"]) == [
        "first", "last", "middle", "other", "sibling"]
    assert record["job"]["job_id"] == json.loads(
        (tmp_path / "mid" / "first" / "_nipype_batch.json").read_text())["job"]["job_id"]


def _touch(x):
    return x


def test_per_node_resources_reach_the_job(tmp_path, local_args, local_stack):
    wf = Workflow(name="res", base_dir=str(tmp_path))
    big = Node(Function(input_names=["x"], output_names=["out"], function=_touch), name="big",
               n_procs=2, mem_gb=3)
    big.inputs.x = 1
    pinned = Node(Function(input_names=["x"], output_names=["out"], function=_touch),
                  name="pinned")
    pinned.inputs.x = 2
    pinned.plugin_args = {"vcpus": 2, "memory_mb": 5000, "timeout_s": 120, "overwrite": True,
                          "sbatch_args": "--ignored-by-us"}
    wf.add_nodes([big, pinned])
    wf.run(plugin="AWSBatch", plugin_args=local_args)

    batch = local_stack.client("batch")
    expected = {"big": (2, 3072, None), "pinned": (2, 5000, 120)}
    for name, (vcpus, memory, timeout) in expected.items():
        record = json.loads((tmp_path / "res" / name / "_nipype_batch.json").read_text())["job"]
        assert (record["vcpus"], record["memory_mb"], record["timeout_s"]) == (vcpus, memory,
                                                                             timeout)
        for key in ("job_id", "job_queue", "job_definition", "image", "attempts", "log_stream",
                    "submitted_at_ms", "started_at_ms", "stopped_at_ms"):
            assert record[key], key
        assert "@sha256:" in record["image"]
        job = batch.describe_jobs(jobs=[record["job_id"]])["jobs"][0]
        asked = {r["type"]: r["value"] for r in job["container"]["resourceRequirements"]}
        assert asked == {"VCPU": str(vcpus), "MEMORY": str(memory)}
        assert job.get("timeout", {}).get("attemptDurationSeconds") == timeout


def test_plugin_survives_pickle_round_trip():
    plugin = BatchPlugin({"backend": "local", "vcpus": 2, "packages": ["dipy"],
                          "environment": {"OMP_NUM_THREADS": "1"}})
    clone = pickle.loads(pickle.dumps(plugin))
    assert clone.settings == plugin.settings
    assert clone._cloud is None  # clients are not pickled; they reconnect on use


def _raise_on_driver(x):
    raise OSError(f"driver-side failure {x}")


def test_driver_side_node_failure_fails_the_run(tmp_path):
    # Nipype's DistributedPluginBase swallows these; MultiProc and we must not.
    wf = Workflow(name="drv", base_dir=str(tmp_path))
    node = Node(Function(input_names=["x"], output_names=["out"], function=_raise_on_driver),
                name="local_only")
    node.inputs.x = 3
    node.plugin_args = {"run_on_driver": True}
    wf.add_nodes([node])
    plugin = BatchPlugin({"backend": "local"})
    with pytest.raises(RuntimeError, match="driver-side failure 3"):
        wf.run(plugin=plugin)
    assert plugin.submitted_job_ids == []
    assert plugin._cloud is None  # nothing needed the cloud: no job node


def _count_lines(in_file):
    import os

    with open(in_file) as fh:
        n = sum(1 for _ in fh)
    out = os.path.abspath("count.txt")
    with open(out, "w") as fh:
        fh.write(f"{os.path.basename(in_file)} {n}\n")
    return out


def test_selectfiles_runs_on_driver_and_feeds_jobs(tmp_path, local_args):
    from nipype.interfaces.io import SelectFiles

    data = Path(make_inputs(str(tmp_path / "bids")))
    (data / "unrelated-big-file.bin").write_bytes(b"\0" * 1_000_000)
    wf = Workflow(name="sel", base_dir=str(tmp_path / "work"))
    select = Node(SelectFiles({"rec": "sub-{subject}.txt"}, base_directory=str(data)),
                  name="select")
    select.iterables = ("subject", ["01", "02"])
    count = Node(Function(input_names=["in_file"], output_names=["out"], function=_count_lines),
                 name="count")
    wf.connect(select, "rec", count, "in_file")
    plugin = BatchPlugin(local_args)
    wf.run(plugin=plugin)
    assert len(plugin.submitted_job_ids) == 1  # only the counts are jobs: the two share one
    out = tmp_path / "work" / "sel" / "_subject_02" / "count" / "count.txt"
    assert out.read_text() == "sub-02.txt 5\n"
    # the job staged each count's one input file, not the dataset
    record = json.loads((out.parent / "_nipype_batch.json").read_text())
    assert record["runner"]["files_staged_in"] == 2


def _imports_pluggy(x):
    import pluggy

    return f"{x} {pluggy.__version__}"


def _imports_pluggy_dynamically(x):
    import importlib

    return f"{x} {importlib.import_module('pluggy').__version__}"


def _one_node_workflow(base: Path, name: str, function) -> Workflow:
    wf = Workflow(name=name, base_dir=str(base))
    node = Node(Function(input_names=["x"], output_names=["out"], function=function), name="use")
    node.inputs.x = "pluggy"
    wf.add_nodes([node])
    return wf


def test_function_imports_are_found_and_pinned_to_the_driver(tmp_path, local_args):
    import pluggy  # not in the default image: found in the node's source

    result = _one_node_workflow(tmp_path, "static", _imports_pluggy).run(
        plugin="AWSBatch", plugin_args=local_args)
    (node,) = result.nodes()
    assert node.result.outputs.out == f"pluggy {pluggy.__version__}"


def test_dynamic_import_needs_packages_and_the_error_says_so(tmp_path, local_args):
    import pluggy

    with pytest.raises(RuntimeError, match="No module named 'pluggy'"):
        _one_node_workflow(tmp_path, "without", _imports_pluggy_dynamically).run(
            plugin="AWSBatch", plugin_args=local_args)
    crash = glob.glob(str(tmp_path / "crash-*-use-*.pklz"))
    assert "Add its package to plugin_args" in "".join(loadcrash(crash[0])["traceback"])

    result = _one_node_workflow(tmp_path, "with", _imports_pluggy_dynamically).run(
        plugin="AWSBatch", plugin_args={**local_args, "packages": ["pluggy"]})
    (node,) = result.nodes()
    assert node.result.outputs.out == f"pluggy {pluggy.__version__}"


def _numbers(n):
    import os

    out = os.path.abspath(f"numbers_{n}.txt")
    with open(out, "w") as fh:
        fh.write("\n".join(str(i) for i in range(n)) + "\n")
    return out


def _total_lines(in_files):
    total = 0
    for path in in_files:
        with open(path) as fh:
            total += sum(1 for _ in fh)
    return total


def test_utility_nodes_run_on_the_driver_without_a_base_dir(local_args):
    from nipype.interfaces.utility import Merge

    wf = Workflow(name="utils")  # no base_dir: Nipype works in a temporary directory
    three = Node(Function(input_names=["n"], output_names=["out"], function=_numbers),
                 name="three")
    three.inputs.n = 3
    four = Node(Function(input_names=["n"], output_names=["out"], function=_numbers),
                name="four")
    four.inputs.n = 4
    merge = Node(Merge(2), name="merge")
    total = Node(Function(input_names=["in_files"], output_names=["out"],
                          function=_total_lines), name="total")
    wf.connect([(three, merge, [("out", "in1")]), (four, merge, [("out", "in2")]),
                (merge, total, [("out", "in_files")])])
    plugin = BatchPlugin(local_args)
    result = wf.run(plugin=plugin)
    # three and four share a job (side by side), then total; the merge ran here
    assert len(plugin.submitted_job_ids) == 2
    (done,) = [n for n in result.nodes() if n.name == "total"]
    assert done.result.outputs.out == 7


def _read_environment(names):
    import os

    return [os.environ.get(name) for name in names]


def test_environment_too_large_for_overrides_travels_in_the_payload(tmp_path, local_args):
    big = {f"VAR_{i}": f"{i}-" + "x" * 120 for i in range(80)}  # ~10,000 characters
    wf = Workflow(name="bigenv", base_dir=str(tmp_path))
    node = Node(Function(input_names=["names"], output_names=["values"],
                         function=_read_environment), name="read")
    node.inputs.names = ["VAR_0", "VAR_79"]
    wf.add_nodes([node])
    plugin = BatchPlugin({**local_args, "environment": big})
    wf.run(plugin=plugin)

    result = loadpkl(str(tmp_path / "bigenv" / "read" / "result_read.pklz"))
    assert result.outputs.values == [big["VAR_0"], big["VAR_79"]]
    (job,) = plugin.cloud.batch.batch.describe_jobs(jobs=plugin.submitted_job_ids)["jobs"]
    sent = {e["name"] for e in job["container"]["environment"]}
    assert "VAR_0" not in sent and "NIPYPE_BATCH_PAYLOAD" in sent
