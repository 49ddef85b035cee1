"""A synthetic workflow shaped like fMRIPrep, whose nodes only sleep: for latency benchmarks.

Per subject (an iterable), 40 Function nodes in an anatomical and a functional branch joined
by the registration steps, with fan-out/fan-in diamonds (tissue classes, confounds), most
sleeping 1-10 s and two of minutes (skull stripping 150 s, spatial normalisation 120 s), plus
one MapNode of 200 one-second subnodes (per-volume transforms); a JoinNode summarises all
subjects. The durations are made up to resemble the shape of a real run, not measured.

:func:`critical_path_s` and :func:`total_node_s` give the analytic lower bounds a benchmark
compares a makespan with.
"""

from __future__ import annotations

from nipype import Function, IdentityInterface, JoinNode, MapNode, Node, Workflow

# name: (seconds, upstream nodes); "subject" is the iterable source
STEPS: dict[str, tuple[float, tuple[str, ...]]] = {
    # anatomical
    "anat_validate": (1, ("subject",)),
    "anat_conform": (3, ("anat_validate",)),
    "anat_n4": (8, ("anat_conform",)),
    "anat_skullstrip": (150, ("anat_n4",)),
    "anat_seg": (10, ("anat_skullstrip",)),
    "seg_gm": (2, ("anat_seg",)),
    "seg_wm": (2, ("anat_seg",)),
    "seg_csf": (2, ("anat_seg",)),
    "anat_tpms": (3, ("seg_gm", "seg_wm", "seg_csf")),
    "anat_norm": (120, ("anat_skullstrip",)),
    "anat_mni_mask": (2, ("anat_norm",)),
    "anat_surfaces_prep": (5, ("anat_tpms",)),
    "anat_reports": (4, ("anat_tpms", "anat_mni_mask")),
    # functional
    "func_validate": (1, ("subject",)),
    "func_ref": (5, ("func_validate",)),
    "func_hmc": (10, ("func_ref",)),
    "func_sdc": (8, ("func_ref",)),
    "func_stc": (6, ("func_validate",)),
    "func_coreg": (9, ("func_ref", "anat_skullstrip")),
    "func_unwarp": (4, ("func_sdc", "func_hmc", "func_stc")),
    "func_t1w_xfm": (3, ("func_coreg",)),
    "func_resample_t1w": (7, ("func_unwarp", "func_t1w_xfm", "func_volumes")),
    "func_resample_mni": (8, ("func_unwarp", "func_t1w_xfm", "anat_norm")),
    "confounds_dvars": (3, ("func_resample_t1w",)),
    "confounds_fd": (2, ("func_hmc",)),
    "confounds_acompcor": (6, ("func_resample_t1w", "anat_tpms")),
    "confounds_tcompcor": (5, ("func_resample_t1w",)),
    "confounds_merge": (2, ("confounds_dvars", "confounds_fd", "confounds_acompcor",
                            "confounds_tcompcor")),
    "func_mask": (2, ("func_resample_mni",)),
    "func_smooth": (5, ("func_resample_mni",)),
    "func_carpet": (4, ("confounds_merge", "func_mask")),
    "func_reports": (3, ("func_carpet", "anat_reports")),
    # derivatives and quality control
    "ds_anat": (1, ("anat_tpms", "anat_mni_mask", "anat_surfaces_prep")),
    "ds_func": (1, ("func_resample_mni",)),
    "ds_confounds": (1, ("confounds_merge",)),
    "ds_reports": (1, ("func_reports",)),
    "qc_metrics": (3, ("func_smooth", "confounds_merge")),
    "qc_report": (2, ("qc_metrics",)),
    "subject_summary": (1, ("ds_reports", "qc_report", "ds_anat", "ds_func")),
}
VOLUMES = 200  # subnodes of the MapNode "func_volumes", one second each, after func_hmc
VOLUME_S = 1.0
MAPNODE = ("func_volumes", (VOLUME_S, ("func_hmc",)))
GROUP_S = 2.0  # the JoinNode across subjects, after each subject_summary
INPUTS = ("a", "b", "c", "d")  # most upstream nodes a step takes (the rest are ordered after)


def step(seconds, a=None, b=None, c=None, d=None):
    """Sleep like a tool that runs ``seconds``; return them."""
    import time

    time.sleep(seconds)
    return seconds


def volume(seconds, index, a=None):
    """One volume's transform: sleep ``seconds``."""
    import time

    time.sleep(seconds)
    return index


def group(summaries):
    """The group step: sleep, then count the subjects."""
    import time

    time.sleep(2.0)
    return len(summaries)


def fmriprep_shaped(subjects: int, base_dir: str) -> Workflow:
    """The workflow over ``subjects`` subjects (``sub-001``...): 40 nodes and a MapNode of
    200 each, and one JoinNode."""
    wf = Workflow(name="fmriprep_shaped", base_dir=base_dir)
    source = Node(IdentityInterface(fields=["subject_id"]), name="subject")
    source.iterables = ("subject_id", [f"sub-{i:03d}" for i in range(1, subjects + 1)])
    nodes: dict[str, Node] = {"subject": source}
    volumes = MapNode(Function(input_names=["seconds", "index", "a"], output_names=["out"],
                               function=volume), iterfield=["index"], name=MAPNODE[0])
    volumes.inputs.seconds = VOLUME_S
    volumes.inputs.index = list(range(VOLUMES))
    nodes[MAPNODE[0]] = volumes
    for name, (seconds, _upstream) in STEPS.items():
        node = Node(Function(input_names=["seconds", *INPUTS], output_names=["out"],
                             function=step), name=name)
        node.inputs.seconds = seconds
        nodes[name] = node
    for name, (_seconds, upstream) in [*STEPS.items(), MAPNODE]:
        for parent, field in zip(upstream, INPUTS, strict=False):
            output = "subject_id" if parent == "subject" else "out"
            wf.connect(nodes[parent], output, nodes[name], field)
    summary = JoinNode(Function(input_names=["summaries"], output_names=["out"],
                                function=group),
                       joinsource="subject", joinfield=["summaries"], name="group_summary")
    wf.connect(nodes["subject_summary"], "out", summary, "summaries")
    return wf


def workflow() -> Workflow:
    """Two subjects in a temporary work directory: for ``nipype-batch forecast
    examples/scale/fmriprep_shaped.py:workflow --subjects N``."""
    import tempfile

    return fmriprep_shaped(2, tempfile.mkdtemp(prefix="fmriprep-shaped-"))


def _finish_times() -> dict[str, float]:
    """Earliest finish of every step of one subject, each starting when its inputs are done."""
    durations = {name: seconds for name, (seconds, _) in STEPS.items()}
    durations[MAPNODE[0]] = VOLUME_S  # its subnodes run side by side
    upstream = {name: parents for name, (_, parents) in [*STEPS.items(), MAPNODE]}
    done: dict[str, float] = {"subject": 0.0}

    def finish(name: str) -> float:
        if name not in done:
            done[name] = max(finish(p) for p in upstream[name]) + durations[name]
        return done[name]

    for name in upstream:
        finish(name)
    return done


def critical_path_s() -> float:
    """Longest chain of node runtimes, subject to group summary (any subject count)."""
    return max(_finish_times().values()) + GROUP_S


def total_node_s(subjects: int) -> float:
    """Sum of every node's runtime: the vCPU-seconds a perfect run would bill."""
    per_subject = sum(seconds for seconds, _ in STEPS.values()) + VOLUMES * VOLUME_S
    return subjects * per_subject + GROUP_S


def node_count(subjects: int) -> int:
    """Nodes the plugin runs: each subject's steps, MapNode and subnodes, and the JoinNode."""
    return subjects * (len(STEPS) + 1 + VOLUMES) + 1
