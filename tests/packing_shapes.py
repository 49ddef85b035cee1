"""Workflow shapes the packing planner is measured on, shared by its tests and bench/planner.py."""

from __future__ import annotations

import random

from nipype_batch.packing import PlanNode


def _node(key: str, after: tuple[str, ...], runtime: float) -> PlanNode:
    return PlanNode(key, after, "img", "q", 1, 1024, runtime)


def _steps(names: list[str], after: tuple[str, ...], rng: random.Random,
           runtimes: dict[str, float] | None = None) -> list[PlanNode]:
    """A chain of 1-10 s nodes, unless ``runtimes`` says otherwise."""
    nodes = []
    for name in names:
        nodes.append(_node(name, after, (runtimes or {}).get(name, rng.uniform(1, 10))))
        after = (name,)
    return nodes


def _diamond(prefix: str, after: tuple[str, ...], rng: random.Random,
             width: int = 2) -> list[PlanNode]:
    """``prefix``, then ``width`` branches after it, then ``prefix_m`` after them: 1-10 s each."""
    branches = tuple(f"{prefix}_{c}" for c in "abcd"[:width])
    return [_node(prefix, after, rng.uniform(1, 10)),
            *(_node(b, (prefix,), rng.uniform(1, 10)) for b in branches),
            _node(f"{prefix}_m", branches, rng.uniform(1, 10))]


def fmriprep_subject(subject: str, after: tuple[str, ...] = ("driver",)) -> list[PlanNode]:
    """40 nodes shaped like one fMRIPrep subject.

    An anatomical and a functional branch, both after ``after``, each a chain with one long
    node (150 s and 130 s) and diamonds of 1-10 s nodes; they meet in a tail with a diamond and
    a fan-out of 4. Runtimes are drawn from a generator seeded by ``subject``.
    """
    rng = random.Random(subject)
    p = f"{subject}/"
    anat = _steps([p + "anat_conform", p + "anat_n4", p + "anat_template"], after, rng)
    anat += _diamond(p + "anat_brain", (anat[-1].key,), rng)
    anat += _steps([p + "anat_norm", p + "anat_surf"], (anat[-1].key,), rng,
                   {p + "anat_norm": 150.0})
    anat += _diamond(p + "anat_seg", (anat[-1].key,), rng, width=3)
    anat += _steps([p + "anat_ds", p + "anat_report"], (anat[-1].key,), rng)
    func = _steps([p + "func_ref", p + "func_validate", p + "func_mask"], after, rng)
    func += _steps([p + "func_hmc", p + "func_stc"], (func[-1].key,), rng,
                   {p + "func_hmc": 130.0})
    func += _diamond(p + "func_sdc", (func[-1].key,), rng)
    func += _steps([p + "func_ref2"], (func[-1].key,), rng)
    tail = _steps([p + "coreg", p + "xfm"], (p + "anat_seg_m", func[-1].key), rng)
    tail += _diamond(p + "resample", (tail[-1].key,), rng)
    tail += _diamond(p + "confounds", (tail[-1].key,), rng, width=4)
    tail += _steps([p + "ds_bold", p + "report"], (tail[-1].key,), rng)
    return anat + func + tail


def fmriprep_study(subjects: int) -> list[PlanNode]:
    """A driver node, then ``subjects`` independent :func:`fmriprep_subject` after it."""
    nodes = [PlanNode("driver", (), "img", "q", 1, 1024, 1.0, on_driver=True)]
    for s in range(subjects):
        nodes += fmriprep_subject(f"sub{s:04d}")
    return nodes
