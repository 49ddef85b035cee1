"""A small workflow with everything the plugin must carry: files between nodes, iterables, a
MapNode, a JoinNode and a DataSink. Used by the README's first command and by the tests.

Run it: ``python examples/demo/workflow.py [--plugin AWSBatch|Linear|MultiProc] [--work-dir D]``
"""

from __future__ import annotations

import argparse
import os
import sys

from nipype import Function, IdentityInterface, JoinNode, MapNode, Node, Workflow
from nipype.interfaces.io import DataSink

SUBJECTS = ["01", "02"]


def make_inputs(data_dir: str, subjects: list[str] = SUBJECTS) -> str:
    """Write one small 'recording' per subject; return the data directory."""
    os.makedirs(data_dir, exist_ok=True)
    for i, subject in enumerate(subjects):
        path = os.path.join(data_dir, f"sub-{subject}.txt")
        if not os.path.exists(path):
            with open(path, "w") as fh:
                fh.write("\n".join(str((i + 1) * k) for k in range(1, 6)) + "\n")
    return data_dir


def load_signal(data_dir, subject):
    """Copy the subject's recording into the node directory as numbers."""
    import os

    with open(os.path.join(data_dir, f"sub-{subject}.txt")) as fh:
        values = [float(line) for line in fh if line.strip()]
    out = os.path.abspath(f"signal_{subject}.txt")
    with open(out, "w") as fh:
        fh.write("\n".join(f"{v:.3f}" for v in values) + "\n")
    return out


def scale(in_file, factor):
    """Multiply a recording by a factor (one MapNode subnode per factor)."""
    import os

    with open(in_file) as fh:
        values = [float(line) * factor for line in fh if line.strip()]
    out = os.path.abspath(f"scaled_x{factor}.txt")
    with open(out, "w") as fh:
        fh.write("\n".join(f"{v:.3f}" for v in values) + "\n")
    return out


def summarise(in_files):
    """Sum of each scaled recording, as JSON."""
    import json
    import os

    sums = {}
    for path in in_files:
        with open(path) as fh:
            sums[os.path.basename(path)] = sum(float(line) for line in fh if line.strip())
    out = os.path.abspath("summary.json")
    with open(out, "w") as fh:
        json.dump(sums, fh, sort_keys=True, indent=1)
    return out


def group_table(summaries, subjects):
    """One CSV row per subject (the JoinNode over the subject iterable)."""
    import json
    import os

    out = os.path.abspath("group.csv")
    with open(out, "w") as fh:
        fh.write("subject,total\n")
        for subject, path in zip(subjects, summaries, strict=True):
            with open(path) as summary:
                fh.write(f"{subject},{sum(json.load(summary).values()):.3f}\n")
    return out


def build_workflow(base_dir: str, data_dir: str, output_dir: str,
                   subjects: list[str] = SUBJECTS) -> Workflow:
    """The demo workflow over ``subjects`` reading ``data_dir``, sinking to ``output_dir``."""
    wf = Workflow(name="demo", base_dir=base_dir)
    source = Node(IdentityInterface(fields=["subject"]), name="source")
    source.iterables = ("subject", subjects)
    load = Node(Function(input_names=["data_dir", "subject"], output_names=["out_file"],
                         function=load_signal), name="load")
    load.inputs.data_dir = data_dir
    scaler = MapNode(Function(input_names=["in_file", "factor"], output_names=["out_file"],
                              function=scale), iterfield=["factor"], name="scale")
    scaler.inputs.factor = [1, 2, 3]
    summary = Node(Function(input_names=["in_files"], output_names=["out_file"],
                            function=summarise), name="summarise")
    group = JoinNode(Function(input_names=["summaries", "subjects"], output_names=["out_file"],
                              function=group_table),
                     joinsource="source", joinfield=["summaries", "subjects"], name="group")
    sink = Node(DataSink(base_directory=output_dir), name="sink")
    wf.connect([
        (source, load, [("subject", "subject")]),
        (load, scaler, [("out_file", "in_file")]),
        (scaler, summary, [("out_file", "in_files")]),
        (summary, group, [("out_file", "summaries")]),
        (source, group, [("subject", "subjects")]),
        (group, sink, [("out_file", "@group")]),
        (summary, sink, [("out_file", "summaries")]),
    ])
    return wf


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plugin", default="AWSBatch", choices=["AWSBatch", "Linear", "MultiProc"])
    parser.add_argument("--work-dir", default=os.path.abspath("demo-work"))
    args = parser.parse_args(argv)
    import nipype_batch  # noqa: F401  registers plugin='AWSBatch'

    work = os.path.abspath(args.work_dir)
    data = make_inputs(os.path.join(work, "data"))
    wf = build_workflow(os.path.join(work, "work"), data, os.path.join(work, "output"))
    plugin_args = {"backend": "local"} if args.plugin == "AWSBatch" else {}
    wf.run(plugin=args.plugin, plugin_args=plugin_args)
    table = os.path.join(work, "output", "group.csv")
    print(f"group table: {table}")
    with open(table) as fh:
        print(fh.read())
    return 0


if __name__ == "__main__":
    sys.exit(main())
