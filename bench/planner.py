"""What planning packs costs the driver, against a plain topological sort of the same graph.

Shapes: a study (subjects of 40-node chains of diamonds after one driver node and one shared
template, runtimes mixed from seconds to minutes, a group node joining every subject); an
fMRIPrep-like study (subjects of 40 nodes after one driver node: an anatomical and a functional
branch, each with one node of 2-2.5 min and diamonds of 1-10 s nodes, meeting in a tail; the
shape ``tests/test_packing.py`` pins); a wide fan-out (one node, then all others after it, then
a join of them all); a long chain of 2 s nodes. Baseline in the same run:
``graphlib.TopologicalSorter.static_order`` on the same graph, which any driver pays to order
its nodes. Best of ``--repeat`` runs.

The estimated makespans are coarse: a job starts ``job_overhead_s`` after the jobs it waits
for end, and its nodes' outputs count only once it ends; "one job per node" is the same graph
with no packing.

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

from nipype_batch.packing import PackingModel, PackPlan, PlanNode, plan_packs
from tests.packing_shapes import fmriprep_study

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


def fmriprep(count: int) -> list[PlanNode]:
    """fMRIPrep-like subjects of 40 nodes after one driver node."""
    return fmriprep_study(max(1, count // SUBJECT_NODES))


def makespan(nodes: list[PlanNode], plan: PackPlan, overhead_s: float) -> float:
    """When the last job ends, were each started ``overhead_s`` after what it waits for."""
    by_key = {n.key: n for n in nodes}
    vertex: dict[str, object] = {key: i for i, p in enumerate(plan.packs) for key in p.members}
    graph: dict[object, set[object]] = {}
    for i, pack in enumerate(plan.packs):
        graph[i] = {vertex.get(key, key) for key in plan.needs(pack)}
    for n in nodes:
        if n.on_driver:
            vertex[n.key] = n.key
            graph[n.key] = {vertex.get(key, key) for key in n.after}
    end: dict[object, float] = {}
    for v in graphlib.TopologicalSorter(graph).static_order():
        ready = max((end[u] for u in graph[v]), default=0.0)
        if isinstance(v, int):
            end[v] = ready + overhead_s + plan.packs[v].duration_s
        else:
            end[v] = ready + by_key[v].runtime_s
    return max(end.values(), default=0.0)


def one_job_per_node(nodes: list[PlanNode], overhead_s: float) -> float:
    """When the last job ends, every node a job of its own."""
    by_key = {n.key: n for n in nodes}
    graph = {n.key: n.after for n in nodes}
    end: dict[str, float] = {}
    for key in graphlib.TopologicalSorter(graph).static_order():
        n = by_key[key]
        end[key] = (max((end[p] for p in n.after), default=0.0) + n.runtime_s
                    + (0.0 if n.on_driver else overhead_s))
    return max(end.values(), default=0.0)


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
    overhead_s = PackingModel().job_overhead_s
    print("| nodes | shape | plan ms | topological sort ms (baseline) | x baseline | jobs | "
          "nodes per job | est. makespan min | one job per node, min |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for size in args.sizes:
        for name, make in [("study", study), ("fMRIPrep-like", fmriprep),
                           ("wide fan-out", fan_out), ("long chain", chain)]:
            nodes = make(size)
            graph = {n.key: n.after for n in nodes}
            baseline = _best(lambda g=graph: list(graphlib.TopologicalSorter(g).static_order()),
                             args.repeat)
            planning = _best(lambda n=nodes: plan_packs(n), args.repeat)
            plan = plan_packs(nodes)
            in_jobs = sum(len(p.members) for p in plan.packs)
            packed = makespan(nodes, plan, overhead_s) / 60
            alone = one_job_per_node(nodes, overhead_s) / 60
            print(f"| {len(nodes):,} | {name} | {planning * 1000:.1f} | {baseline * 1000:.1f} | "
                  f"{planning / baseline:.1f} | {plan.jobs:,} | {in_jobs / plan.jobs:.1f} | "
                  f"{packed:,.0f} | {alone:,.0f} |")


if __name__ == "__main__":
    main()
