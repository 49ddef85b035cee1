"""Wide workflows for scale tests and benchmarks: one MapNode of N, and N independent nodes."""

from __future__ import annotations

from nipype import Function, IdentityInterface, MapNode, Node, Workflow


def double(x):
    return 2 * x


def square(x):
    return x ** 2


def add(values):
    return sum(values)


def mapnode_workflow(base_dir: str, n: int, function=double) -> Workflow:
    """One MapNode of ``n`` subnodes (one array job) applying ``function``, then their sum."""
    wf = Workflow(name="mapped", base_dir=base_dir)
    each = MapNode(Function(input_names=["x"], output_names=["out"], function=function),
                   iterfield=["x"], name="each")
    each.inputs.x = list(range(n))
    total = Node(Function(input_names=["values"], output_names=["out"], function=add),
                 name="total")
    wf.connect(each, "out", total, "values")
    return wf


def independent_workflow(base_dir: str, n: int) -> Workflow:
    """``n`` independent nodes (iterables, expanded before the plugin sees them)."""
    wf = Workflow(name="independent", base_dir=base_dir)
    source = Node(IdentityInterface(fields=["x"]), name="source")
    source.iterables = ("x", list(range(n)))
    each = Node(Function(input_names=["x"], output_names=["out"], function=double), name="each")
    wf.connect(source, "x", each, "x")
    return wf
