"""Workflow shapes a neuroimager writes, each run with AWSBatch and compared with Linear."""

from __future__ import annotations

from pathlib import Path

import pytest
from nipype import Function, JoinNode, MapNode, Node, Workflow
from nipype.interfaces.io import DataSink
from nipype.interfaces.utility import IdentityInterface, Merge, Rename

from nipype_batch import BatchPlugin
from tests.helpers import assert_same_tree, node_dirs

pytestmark = pytest.mark.docker


def _split_runs(subject, session, n_runs):
    """One file per run of a session."""
    import os

    outs = []
    for run in range(1, n_runs + 1):
        out = os.path.abspath(f"sub-{subject}_ses-{session}_run-{run}.txt")
        with open(out, "w") as fh:
            fh.write(f"{subject} {session} {run}\n" * run)
        outs.append(out)
    return outs


def _count(in_file):
    import os

    with open(in_file) as fh:
        lines = len(fh.read().splitlines())
    out = os.path.abspath(os.path.basename(in_file).replace(".txt", "_count.txt"))
    with open(out, "w") as fh:
        fh.write(f"{lines}\n")
    return out


def _bundle(in_files):
    """A directory output: every input copied into one folder."""
    import os
    import shutil

    out = os.path.abspath("bundle")
    os.makedirs(out, exist_ok=True)
    for path in in_files:
        shutil.copy(path, out)
    return out


def _summarise(bundle_dir, renamed):
    import os

    names = sorted(os.listdir(bundle_dir))
    with open(renamed) as fh:
        first = fh.read().strip()
    out = os.path.abspath("summary.txt")
    with open(out, "w") as fh:
        fh.write(f"{len(names)} files; first count {first}\n" + "\n".join(names) + "\n")
    return out


def _group(summaries, subjects):
    import os

    out = os.path.abspath("group.tsv")
    with open(out, "w") as fh:
        for subject, path in zip(subjects, summaries, strict=True):
            with open(path) as summary:
                fh.write(f"{subject}\t{summary.readline().strip()}\n")
    return out


def _study(base: Path, sink_dir: Path) -> Workflow:
    """Main workflow with a nested per-session workflow, synchronised iterables, a MapNode over
    files, a Rename (a real interface moving files), a Merge, a directory output, a JoinNode and
    a DataSink with substitutions."""
    source = Node(IdentityInterface(fields=["subject", "session"]), name="source")
    source.iterables = [("subject", ["01", "02"]), ("session", ["a", "b"])]
    source.synchronize = True  # (01, a) and (02, b) only

    session = Workflow(name="session")
    inputs = Node(IdentityInterface(fields=["subject", "session"]), name="inputs")
    split = Node(Function(input_names=["subject", "session", "n_runs"], output_names=["runs"],
                          function=_split_runs), name="split")
    split.inputs.n_runs = 3
    count = MapNode(Function(input_names=["in_file"], output_names=["out"], function=_count),
                    iterfield=["in_file"], name="count")
    count.n_procs = 2
    rename = Node(Rename(format_string="first_%(subject)s.txt", keep_ext=False), name="rename")
    merge = Node(Merge(2), name="merge")
    bundle = Node(Function(input_names=["in_files"], output_names=["out"], function=_bundle),
                  name="bundle")
    summary = Node(Function(input_names=["bundle_dir", "renamed"], output_names=["out"],
                            function=_summarise), name="summary")
    session.connect([
        (inputs, split, [("subject", "subject"), ("session", "session")]),
        (split, count, [("runs", "in_file")]),
        (count, rename, [(("out", _first), "in_file")]),
        (inputs, rename, [("subject", "subject")]),
        (split, merge, [("runs", "in1")]),
        (count, merge, [("out", "in2")]),
        (merge, bundle, [("out", "in_files")]),
        (bundle, summary, [("out", "bundle_dir")]),
        (rename, summary, [("out_file", "renamed")]),
    ])

    study = Workflow(name="study", base_dir=str(base))
    group = JoinNode(Function(input_names=["summaries", "subjects"], output_names=["out"],
                              function=_group),
                     joinsource="source", joinfield=["summaries", "subjects"], name="group")
    sink = Node(DataSink(base_directory=str(sink_dir), container="derivatives"), name="sink")
    sink.inputs.substitutions = [("_subject_", "sub-"), ("_session_", "ses-")]
    sink.inputs.regexp_substitutions = [(r"sub-(\d+)_ses-", r"sub-\1/ses-")]
    study.connect([
        (source, session, [("subject", "inputs.subject"), ("session", "inputs.session")]),
        (session, group, [("summary.out", "summaries")]),
        (source, group, [("subject", "subjects")]),
        (session, sink, [("summary.out", "summaries"), ("bundle.out", "bundles")]),
        (group, sink, [("out", "@group")]),
    ])
    return study


def _first(files):
    return files[0]


@pytest.mark.parametrize("fetch_outputs", [True, False], ids=["fetch-all", "lean"])
def test_nested_synchronised_mapnode_rename_join_sink_match_linear(tmp_path, local_args,
                                                                   fetch_outputs):
    _study(tmp_path / "linear", tmp_path / "linear-out").run(plugin="Linear")
    args = {**local_args, "fetch_outputs": fetch_outputs}
    plugin = BatchPlugin(args)
    _study(tmp_path / "batch", tmp_path / "batch-out").run(plugin=plugin)

    assert node_dirs(tmp_path / "linear") == node_dirs(tmp_path / "batch")
    assert_same_tree(tmp_path / "linear-out", tmp_path / "batch-out")  # the DataSink's copies
    if fetch_outputs:  # every node's files came home
        assert assert_same_tree(tmp_path / "linear", tmp_path / "batch") >= 20
    group = (tmp_path / "batch-out" / "derivatives" / "group.tsv").read_text()
    assert group.splitlines()[0].startswith("01\t6 files; first count 1")
    # identity, merge and sink stay on the driver; the rest are jobs
    # per session: split, 3 counts (one array job; the MapNode collates on the driver),
    # rename, bundle, summary; plus group. The two sessions' splits (after the driver's
    # identity nodes only, and short) share one job, side by side
    assert len(plugin.submitted_job_ids) == 2 * (1 + 3 + 1 + 1 + 1) + 1 - 1
    assert len(plugin.array_job_ids) == 2

    rerun = BatchPlugin(args)
    _study(tmp_path / "batch", tmp_path / "batch-out").run(plugin=rerun)
    assert rerun.submitted_job_ids == []


def _write_outside(out_dir, name):
    """Writes its output into a shared folder, not its node directory (allowed by Nipype)."""
    import os

    os.makedirs(out_dir, exist_ok=True)
    out = os.path.join(out_dir, f"{name}.txt")
    with open(out, "w") as fh:
        fh.write(f"made by {name}\n")
    return out


def _read_both(first, second):
    import os

    out = os.path.abspath("both.txt")
    with open(out, "w") as fh:
        for path in (first, second):
            with open(path) as part:
                fh.write(part.read())
    return out


def _outside_workflow(base: Path, shared: Path) -> Workflow:
    wf = Workflow(name="outside", base_dir=str(base))
    one = Node(Function(input_names=["out_dir", "name"], output_names=["out"],
                        function=_write_outside), name="one")
    two = Node(Function(input_names=["out_dir", "name"], output_names=["out"],
                        function=_write_outside), name="two")
    one.inputs.out_dir = two.inputs.out_dir = str(shared)
    one.inputs.name, two.inputs.name = "one", "two"
    both = Node(Function(input_names=["first", "second"], output_names=["out"],
                         function=_read_both), name="both")
    wf.connect([(one, both, [("out", "first")]), (two, both, [("out", "second")])])
    return wf


@pytest.mark.parametrize("fetch_outputs", [True, False], ids=["fetch-all", "lean"])
def test_outputs_written_outside_the_node_directory(tmp_path, local_args, fetch_outputs):
    _outside_workflow(tmp_path / "linear", tmp_path / "linear-shared").run(plugin="Linear")
    plugin = BatchPlugin({**local_args, "fetch_outputs": fetch_outputs})
    _outside_workflow(tmp_path / "batch", tmp_path / "batch-shared").run(plugin=plugin)
    both = tmp_path / "batch" / "outside" / "both" / "both.txt"
    if fetch_outputs:
        assert both.read_text() == "made by one\nmade by two\n"
    # the driver materialised the shared files the 'both' node needed
    assert (tmp_path / "batch-shared" / "one.txt").read_text() == "made by one\n"
