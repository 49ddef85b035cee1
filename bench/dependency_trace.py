"""What tracing a workflow's dependencies costs the driver, against pickling its nodes.

Every node is pickled once to list what it names (see nipype_batch.images.dependencies), and the
modules named are read once per process. Baseline: pickling the same nodes, which every run
does anyway to submit them.

    python3 bench/dependency_trace.py [--nodes 500]
"""

from __future__ import annotations

import argparse
import pickle
import time

from nipype import Function, Node
from nipype.interfaces.dipy import DTI, Denoise
from nipype.interfaces.utility import Rename

from nipype_batch.images.dependencies import _installed_module_needs, node_dependencies
from nipype_batch.images.load_check import node_kinds


def _scale(x, factor=2):
    import numpy as np

    return np.asarray(x) * factor


def make_nodes(count: int) -> list[Node]:
    """A mix as a study has: DIPY interfaces, Function nodes and utilities."""
    makers = [lambda i: Node(Denoise(snr=20.0), name=f"denoise{i}"),
              lambda i: Node(DTI(), name=f"tensor{i}"),
              lambda i: Node(Rename(format_string=f"sub-{i}"), name=f"rename{i}"),
              lambda i: Node(Function(input_names=["x"], output_names=["out"], function=_scale),
                             name=f"scale{i}")]
    return [makers[i % len(makers)](i) for i in range(count)]


def _seconds(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=500)
    args = parser.parse_args()
    nodes = make_nodes(args.nodes)
    baseline = _seconds(lambda: [pickle.dumps(n) for n in nodes])
    _installed_module_needs.clear()
    first = _seconds(lambda: [node_dependencies(n) for n in nodes])
    again = _seconds(lambda: [node_dependencies(n) for n in nodes])
    kinds = _seconds(lambda: node_kinds(nodes))
    print(f"{args.nodes} nodes ({len(node_kinds(nodes))} kinds)")
    print(f"{'step':<40} {'seconds':>8} {'x pickling':>11}")
    for label, seconds in [("pickle every node (baseline)", baseline),
                           ("trace dependencies, first in process", first),
                           ("trace dependencies, modules cached", again),
                           ("group into kinds for the load check", kinds)]:
        print(f"{label:<40} {seconds:>8.3f} {seconds / baseline:>11.1f}")


if __name__ == "__main__":
    main()
