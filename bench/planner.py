"""What planning packs costs the driver, against a plain topological sort of the same graph.

Shapes: a study (subjects of 40-node chains of diamonds after one driver node and one shared
template, runtimes mixed from seconds to minutes, a group node joining every subject); a wide
fan-out (one node, then all others after it, then a join of them all); a long chain of 2 s
nodes. Baseline in the same run: ``graphlib.TopologicalSorter.static_order`` on the same
graph, which any driver pays to order its nodes. Best of ``--repeat`` runs.

    python3 bench/planner.py [--sizes 1000 10000 30000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import graphlib
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nipype_batch.packing import PlanNode, plan_packs

SUBJECT_NODES = 40
# a study's node runtimes, seconds: mostly seconds, some minutes, a few longer than a pack
RUNTIMES = [1.0, 2.0, 2.0, 5.0, 5.0, 10.0, 10.0, 30.0, 120.0, 400.0]


def _node(key: str, after: list[str], runtime: float, vcpus: int = 1,
          on_driver: bool = False) -> PlanNode:
    return PlanNode(key, tuple(after), "study:1", "default", vcpus, 2048, runtime,
                    on_driver=on_driver)


def study(count: int) -> list[PlanNode]:
    """Subjects of 40 nodes (a chain of diamonds), a shared template, a group node at the end."""
    rng = random.Random(1)
    nodes = [_node("bids", [], 1.0, on_driver=True), _node("template", [], 40.0)]
    subjects = max(1, (count - 3) // SUBJECT_NODES)
    for s in range(subjects):
        previous = ["bids", "template"]
        for d in range(SUBJECT_NODES // 4):  # split -> two branches -> merge
            keys = [f"sub{s:04d}/d{d}_{part}" for part in ("split", "left", "right", "merge")]
            runtime = [rng.choice(RUNTIMES) for _ in keys]
            vcpus = rng.choice([1, 1, 1, 2])
            nodes += [_node(keys[0], previous, runtime[0]),
                      _node(keys[1], keys[:1], runtime[1], vcpus),
                      _node(keys[2], keys[:1], runtime[2], vcpus),
                      _node(keys[3], keys[1:3], runtime[3])]
            previous = keys[3:]
    nodes.append(_node("group", [f"sub{s:04d}/d{SUBJECT_NODES // 4 - 1}_merge"
                                 for s in range(subjects)], 30.0))
    return nodes


def fan_out(count: int) -> list[PlanNode]:
    """One node, count - 2 after it, one after them all."""
    middle = [f"leaf{i:05d}" for i in range(count - 2)]
    return ([_node("root", [], 5.0)] + [_node(key, ["root"], 2.0) for key in middle]
            + [_node("gather", middle, 5.0)])


def chain(count: int) -> list[PlanNode]:
    """count nodes of 2 s, each after the one before."""
    return [_node(f"step{i:05d}", [f"step{i - 1:05d}"] if i else [], 2.0) for i in range(count)]


def _best(action: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 30000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print("| nodes | shape | plan ms | topological sort ms (baseline) | x baseline | jobs | "
          "nodes per job |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for size in args.sizes:
        for name, make in [("study", study), ("wide fan-out", fan_out), ("long chain", chain)]:
            nodes = make(size)
            graph = {n.key: n.after for n in nodes}
            baseline = _best(lambda g=graph: list(graphlib.TopologicalSorter(g).static_order()),
                             args.repeat)
            planning = _best(lambda n=nodes: plan_packs(n), args.repeat)
            plan = plan_packs(nodes)
            in_jobs = sum(len(p.members) for p in plan.packs)
            print(f"| {len(nodes):,} | {name} | {planning * 1000:.1f} | {baseline * 1000:.1f} | "
                  f"{planning / baseline:.1f} | {plan.jobs:,} | {in_jobs / plan.jobs:.1f} |")


if __name__ == "__main__":
    main()
