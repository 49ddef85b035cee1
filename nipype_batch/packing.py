"""Packing: which workflow nodes share one AWS Batch job.

On AWS Batch a job waits tens of seconds to minutes before it runs (scheduling, placement,
container start) while most Nipype nodes run for seconds, so short nodes are better run
together: one job (a *pack*) runs several nodes, one after the other or side by side. This
module only plans; it reads no file, imports neither Nipype nor boto3, and the driver turns
its plan into jobs.

The plan keeps these rules:

1. Contracting each pack (and each node that runs on the driver) to one vertex leaves a DAG,
   so no pack waits on itself through another, and none waits on a pack that waits on it.
2. A pack's nodes share one image and one queue. A node that is not packable, runs on the
   driver, or runs for ``target_s`` or more alone is never packed with another.
3. A pack asks the most vCPUs and memory of its members and runs them one after the other;
   when it holds branches that can run side by side it may ask up to ``max_vcpus`` vCPUs, and
   memory enough for the members that run at once, to run them in parallel.
4. A node joins a pack only while the pack's estimated duration stays within ``target_s``,
   and only when the job it saves (``job_overhead_s`` of waiting, per vCPU) is worth more
   than what the bigger pack reserves beyond what the node alone would.
5. A node joins a pack only when everything it needs from outside the pack already comes
   before the pack: the driver launches a pack once all its members' outside inputs are done,
   so joining must add nothing for the pack's earlier members to wait for. (This also keeps
   rule 1: adding a node adds only edges into the pack from groups that already reach it.)
   Except: an input from a pack that does not come before is expected, by the runtimes and
   one job's waiting per pack, done before the driver would submit the pack anyway, and the
   pack does not reach that input's pack (checked, so rule 1 holds); so is an input from a
   driver node of the run's start (one that waits on such driver nodes only: a subject's
   infosource and SelectFiles), done before the pack is submitted. Packs are then listed in
   a topological order of the quotient rather than the order they were built.
6. A node joins a pack only when it would wait there, behind members it does not need, no
   longer than ``job_overhead_s``: no longer than a job of its own would wait. So a short node
   does not queue behind a long sibling, and the branch after it is not held back. A pack that
   runs ``p`` members at once queues a node until one of its slots comes free; the pack keeps
   the width its members need, so a later member cannot turn it back into a line.
7. Once other packs wait on a pack, nodes that join it may lengthen it by ``job_overhead_s``
   at most, so a long node does not hold back the branch beside it (which waits on the pack
   for what its first members make).

Nodes are visited in one topological order (ties broken by key, so the plan depends on the
nodes and the model only, not on their order in the input); a node tries the packs of its
predecessors, the one on its critical path first, then the packs that already wait on one of
those (its siblings' packs, and those of the branch beside it: they start after its inputs
anyway), the latest first, and starts a pack of its own when none takes it. A node that waits
on driver nodes of the run's start only, and whose longest path onwards fits in a pack, also
tries the latest packs that wait so too: several short subjects share a job side by side, a
job per subject being far less than 10 nodes for a study like the DIPY example. Packs are built
forward only.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

# A reachability search through the packs visits at most this many; when it is cut short the
# node does not join (refusing is always safe). Real workflows stay far below it.
_SEARCH_LIMIT = 128
# Packs a node tries before it starts its own (a join node of many subjects tries a few).
_CANDIDATES = 8
# Of the packs that wait on a predecessor's pack, the latest this many are candidates (the
# earlier packs of a wide fan-out, or of the subjects after one driver node, are full already).
_FOLLOWING_PACKS = 2


@dataclass(frozen=True)
class PlanNode:
    """One node of the execution graph, as the planner sees it."""

    key: str  # unique id (the node's output directory)
    after: tuple[str, ...]  # keys of its direct predecessors (any kind of node)
    image: str  # nodes of one pack share an image...
    queue: str  # ...and a queue
    vcpus: int
    memory_mb: int
    runtime_s: float  # estimated run time (from history, or the default for "short")
    packable: bool = True  # False: always a job of its own (pack=False, a MapNode, ...)
    on_driver: bool = False  # runs on the driver: in no pack, but part of the graph

    def __post_init__(self) -> None:
        if self.vcpus < 1:
            raise ValueError(f"node {self.key!r}: vcpus must be 1 or more, not {self.vcpus}")
        if self.memory_mb < 0:
            raise ValueError(f"node {self.key!r}: memory_mb must be 0 or more, "
                             f"not {self.memory_mb}")
        if not 0 <= self.runtime_s < math.inf:
            raise ValueError(f"node {self.key!r}: runtime_s must be a finite number of "
                             f"seconds, 0 or more, not {self.runtime_s}")


@dataclass(frozen=True)
class PackingModel:
    """What a job costs and how long a pack may run."""

    target_s: float = 180.0  # pack while the job's estimated duration stays under this
    job_overhead_s: float = 60.0  # what one more job costs in waiting (scheduling), seconds
    max_vcpus: int = 4  # most vCPUs a pack may take to run parallel branches side by side
    gb_per_vcpu_price: float = 0.11  # 1 GB-hour costs this many vCPU-hours (Fargate us-east-1)

    def __post_init__(self) -> None:
        if not self.target_s > 0:
            raise ValueError(f"PackingModel: target_s must be above 0, not {self.target_s}")
        if self.job_overhead_s < 0 or self.gb_per_vcpu_price < 0:
            raise ValueError("PackingModel: job_overhead_s and gb_per_vcpu_price must be 0 "
                             f"or more, not {self.job_overhead_s} and {self.gb_per_vcpu_price}")
        if self.max_vcpus < 1:
            raise ValueError(f"PackingModel: max_vcpus must be 1 or more, not {self.max_vcpus}")


@dataclass(frozen=True)
class Pack:
    """Nodes that run in one job, and what that job asks for."""

    members: tuple[str, ...]  # keys, in a dependency (topological) order
    vcpus: int  # what the pack's job asks for
    memory_mb: int
    duration_s: float  # estimated
    image: str
    queue: str
    parallel: int = 1  # most members running at once; 1: one after the other


@dataclass(frozen=True)
class PackPlan:
    """Every node not on the driver in exactly one pack; packs in a topological order."""

    packs: tuple[Pack, ...]
    _index: dict[str, int | None] = field(default_factory=dict, repr=False, compare=False)
    _after: tuple[tuple[int, ...], ...] = field(default=(), repr=False, compare=False)
    _needs: tuple[tuple[str, ...], ...] = field(default=(), repr=False, compare=False)

    @property
    def jobs(self) -> int:
        """How many jobs the plan submits (one per pack)."""
        return len(self.packs)

    def pack_of(self, key: str) -> Pack | None:
        """The pack that runs the node ``key``; None for a node on the driver.

        Raises KeyError for a key that was not planned.
        """
        index = self._index[key]
        return None if index is None else self.packs[index]

    def after(self, pack: Pack) -> tuple[Pack, ...]:
        """The packs that ``pack`` waits for directly (a job's dependencies)."""
        return tuple(self.packs[i] for i in self._after[self._position(pack)])

    def needs(self, pack: Pack) -> tuple[str, ...]:
        """Keys outside ``pack`` that its members read: nodes of other packs and of the driver.

        The driver launches the pack once all of them are done.
        """
        return self._needs[self._position(pack)]

    def _position(self, pack: Pack) -> int:
        index = self._index.get(pack.members[0])
        if index is None or self.packs[index] != pack:
            raise KeyError(f"pack of {pack.members[0]!r} is not in this plan")
        return index


class _Group:
    """A pack being built, or a node on the driver: one vertex of the quotient graph."""

    __slots__ = (
        "at_start",
        "critical_s",
        "driver",
        "duration_s",
        "followed_at_s",
        "following",
        "image",
        "max_member_vcpus",
        "members",
        "memories",
        "memory_mb",
        "min_member_vcpus",
        "need_parallel",
        "open",
        "parallel",
        "preds",
        "queue",
        "reserved",
        "start_s",
        "total_s",
        "vcpus",
        "work",
    )

    def __init__(self, node: PlanNode, position: int, preds: dict[int, None],
                 model: PackingModel, is_open: bool, start_s: float,
                 at_start: bool = False) -> None:
        self.members = [position]
        # a driver node that waits on driver nodes only (a subject's infosource and
        # SelectFiles): done before any job is submitted
        self.at_start = at_start
        self.start_s = start_s  # estimated, on unlimited capacity
        self.preds = preds  # groups with an edge into this one (a dict keeps their order)
        self.following: dict[int, None] = {}  # groups with an edge from this one, latest last
        self.followed_at_s = math.inf  # its duration when a first group came to wait on it
        self.driver = node.on_driver
        self.open = is_open
        self.image, self.queue = node.image, node.queue
        self.total_s = self.critical_s = self.duration_s = node.runtime_s
        self.work = node.runtime_s * node.vcpus
        self.vcpus = self.max_member_vcpus = self.min_member_vcpus = node.vcpus
        self.memory_mb = node.memory_mb
        self.memories = [node.memory_mb]  # the largest member memories, largest first
        self.parallel = 1
        # the fewest members that must run at once so that none waits behind members it does
        # not need longer than a job of its own would (1: one after the other will do)
        self.need_parallel = 1
        self.reserved = _reserved(model, node.vcpus, node.memory_mb, node.runtime_s)


@dataclass(frozen=True)
class _Shape:
    """What a pack would ask and cost, were one node added."""

    vcpus: int
    memory_mb: int
    duration_s: float
    parallel: int
    reserved: float


def _reserved(model: PackingModel, vcpus: int, memory_mb: int, duration_s: float) -> float:
    """What a job reserves, in vCPU-seconds (its memory priced in vCPUs)."""
    return duration_s * (vcpus + model.gb_per_vcpu_price * memory_mb / 1024)


def _parallel_needed(model: PackingModel, pack: _Group, line_ready_s: float,
                     ready_s: float) -> int:
    """Rule 6: the fewest members ``pack`` must run at once for a node joining it to wait
    there no longer than ``job_overhead_s`` behind members it does not need; above
    ``model.max_vcpus`` when none will do.

    ``line_ready_s`` is when its inputs in the pack are done were the members run one after
    the other, ``ready_s`` when they are done side by side. Run ``p`` at a time, the first slot
    to come free does so, at the latest, when the members' run time spread over the ``p``
    slots ends, or over the ``p - 1`` slots left beside the pack's critical path (a chain and
    a branch beside it: the branch does not wait).
    """
    if pack.total_s - line_ready_s <= model.job_overhead_s:
        return 1
    for p in range(2, model.max_vcpus + 1):
        free_s = min(pack.total_s / p, (pack.total_s - pack.critical_s) / (p - 1))
        if free_s - ready_s <= model.job_overhead_s:
            return p
    return model.max_vcpus + 1


def _cheapest_shape(model: PackingModel, count: int, total_s: float, work: float,
                    critical_s: float, max_member_vcpus: int, min_member_vcpus: int,
                    memories: list[int], need_parallel: int = 1,
                    longest_s: float = math.inf) -> _Shape | None:
    """The vCPU count that reserves least while the pack lasts at most the target and
    ``longest_s``; None if none does.

    With as many vCPUs as its largest member, a pack runs its members one after the other,
    unless ``need_parallel`` (rule 6) says a member would queue there too long. With more, it
    runs up to ``vcpus // smallest member vcpus`` at once (at least ``need_parallel``), holds
    their memory together, and lasts at least its critical path and its work spread over its
    vCPUs.
    """
    best: _Shape | None = None
    for vcpus in range(max_member_vcpus, max(model.max_vcpus, max_member_vcpus) + 1):
        if vcpus == max_member_vcpus:
            if need_parallel > 1:
                continue
            parallel, duration, memory = 1, total_s, memories[0]
        else:
            parallel = min(count, vcpus // min_member_vcpus)
            if parallel < max(2, need_parallel):
                continue
            duration = max(critical_s, work / vcpus)
            memory = sum(memories[:parallel])
        if duration > min(model.target_s, longest_s):
            continue
        reserved = _reserved(model, vcpus, memory, duration)
        if best is None or reserved < best.reserved:
            best = _Shape(vcpus, memory, duration, parallel, reserved)
    return best


def _topological(nodes: Sequence[PlanNode]) -> tuple[list[PlanNode], list[list[int]]]:
    """Nodes in a topological order (smallest key first among the ready), with their
    predecessors as positions in that order."""
    index: dict[str, int] = {}
    for i, node in enumerate(nodes):
        if node.key in index:
            raise ValueError(f"two nodes have the key {node.key!r}; keys must be unique")
        index[node.key] = i
    succs: list[list[int]] = [[] for _ in nodes]
    waiting = [0] * len(nodes)
    for i, node in enumerate(nodes):
        for key in dict.fromkeys(node.after):
            if key not in index:
                raise ValueError(f"node {node.key!r} comes after {key!r}, which is not among "
                                 "the nodes planned; list every predecessor, or none")
            succs[index[key]].append(i)
            waiting[i] += 1
    ready = [(node.key, i) for i, node in enumerate(nodes) if not waiting[i]]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        _, i = heapq.heappop(ready)
        order.append(i)
        for j in succs[i]:
            waiting[j] -= 1
            if not waiting[j]:
                heapq.heappush(ready, (nodes[j].key, j))
    if len(order) < len(nodes):
        stuck = sorted(node.key for i, node in enumerate(nodes) if waiting[i])
        raise ValueError(f"the nodes' dependencies form a cycle, through some of {stuck[:5]}")
    position = {i: p for p, i in enumerate(order)}
    ordered = [nodes[i] for i in order]
    preds = [[position[index[key]] for key in dict.fromkeys(node.after)] for node in ordered]
    return ordered, preds


def _tails(ordered: list[PlanNode], preds: list[list[int]]) -> list[float]:
    """Each node's run time plus the longest path of run times after it."""
    tail = [node.runtime_s for node in ordered]
    for position in range(len(ordered) - 1, -1, -1):
        for p in preds[position]:
            tail[p] = max(tail[p], ordered[p].runtime_s + tail[position])
    return tail


def _all_reach(groups: list[_Group], target: int, sources: Sequence[int]) -> bool:
    """Whether every group of ``sources`` already has a path to ``target`` (False when unsure)."""
    missing = {s for s in sources if s not in groups[target].preds}
    if not missing:
        return True
    seen = {target}
    frontier = [target]
    while frontier and len(seen) < _SEARCH_LIMIT:
        following = []
        for g in frontier:
            for pred in groups[g].preds:
                if pred not in seen:
                    seen.add(pred)
                    missing.discard(pred)
                    following.append(pred)
        if not missing:
            return True
        frontier = following
    return False


def _reaches(groups: list[_Group], source: int, targets: set[int]) -> bool:
    """Whether ``source`` has a path to any of ``targets`` (True when unsure)."""
    seen = {source}
    frontier = [source]
    while frontier:
        following = []
        for g in frontier:
            for after in groups[g].following:
                if after in targets:
                    return True
                if after not in seen:
                    seen.add(after)
                    following.append(after)
        if len(seen) >= _SEARCH_LIMIT:
            return True
        frontier = following
    return False


def _done_before(model: PackingModel, groups: list[_Group], group_of: list[int],
                 finish_in_pack: list[float], g: int, node_preds: list[int],
                 outside: list[int]) -> bool:
    """Rule 5's exception: the node's inputs from packs that do not come before pack ``g``
    are expected done before the driver would submit ``g`` anyway (by the runtimes and one
    job's waiting each), and waiting on them closes no cycle."""
    new = {h for h in outside if h not in groups[g].preds}
    if any(groups[h].driver and not groups[h].at_start for h in new) or _reaches(
            groups, g, new):
        return False
    # a driver node of the run's start need only be done when the pack would be submitted
    ready = max((groups[group_of[p]].start_s + finish_in_pack[p]
                 + (0.0 if groups[group_of[p]].at_start else model.job_overhead_s)
                 for p in node_preds if group_of[p] in new), default=0.0)
    return ready <= groups[g].start_s


def _candidates(groups: list[_Group], pred_groups: list[int], starts: list[int],
                short: bool) -> list[int]:
    """Packs a node tries: its predecessors', then the latest that wait on one of those; a
    ``short`` node (all it leads to fits in a pack) that waits on driver nodes of the run's
    start only, or on nothing, also tries the latest packs that do so too: another subject's
    first pack, so that several short subjects share one job. (A long subject would only
    take the first of its packs there, cutting the other subject's.)"""
    found = dict.fromkeys(pred_groups)
    for h in pred_groups[:_CANDIDATES]:
        for g in itertools.islice(reversed(groups[h].following), _FOLLOWING_PACKS):
            found.setdefault(g)
    if short and all(groups[h].at_start for h in pred_groups):
        for g in itertools.islice(reversed(starts), _FOLLOWING_PACKS):
            found.setdefault(g)
    return list(found)


def plan_packs(nodes: Sequence[PlanNode], model: PackingModel = PackingModel()) -> PackPlan:
    """Group the nodes into packs, each one AWS Batch job.

    Parameters
    ----------
    nodes
        The execution graph: every node, and in ``after`` every predecessor, once.
    model
        What a job costs and how long a pack may run.

    Returns
    -------
    PackPlan
        Each node not on the driver in exactly one pack (a pack of one is a plain job).

    Raises
    ------
    ValueError
        When two nodes share a key, a predecessor is not among the nodes, or they form a cycle.
    """
    ordered, preds = _topological(nodes)
    tail_s = _tails(ordered, preds)
    groups: list[_Group] = []
    group_of = [0] * len(ordered)
    finish_in_pack = [0.0] * len(ordered)  # from the start of the node's pack
    finish_in_line = [0.0] * len(ordered)  # from the start of its pack, one after the other
    finish_alone = [0.0] * len(ordered)  # from the start of the run, were no one waiting
    starts: list[int] = []  # packs that wait on driver nodes of the run's start only
    for position, node in enumerate(ordered):
        node_preds = preds[position]
        finish_alone[position] = node.runtime_s + max(
            (finish_alone[p] for p in node_preds), default=0.0)
        # the predecessor on the node's critical path first
        ranked = sorted(node_preds, key=lambda p: (-finish_alone[p], ordered[p].key))
        pred_groups = list(dict.fromkeys(group_of[p] for p in ranked))
        joined = None
        if node.packable and not node.on_driver and node.runtime_s < model.target_s:
            joined = _join(model, groups, group_of, finish_in_pack, finish_in_line, node,
                           node_preds, pred_groups,
                           _candidates(groups, pred_groups, starts,
                                       tail_s[position] < model.target_s))
        if joined is None:
            alone = node.on_driver or not node.packable or node.runtime_s >= model.target_s
            inputs_s = max((groups[group_of[p]].start_s + finish_in_pack[p] for p in node_preds),
                           default=0.0)
            at_start = all(groups[h].at_start for h in pred_groups)
            groups.append(_Group(node, position, dict.fromkeys(pred_groups), model,
                                 is_open=not alone, start_s=inputs_s + (
                                     0.0 if node.on_driver else model.job_overhead_s),
                                 at_start=node.on_driver and at_start))
            group_of[position] = len(groups) - 1
            if at_start and not alone:
                starts.append(len(groups) - 1)
            finish_in_pack[position] = node.runtime_s
        else:
            group_of[position], finish_in_pack[position] = joined
            groups[joined[0]].members.append(position)
        group = group_of[position]
        finish_in_line[position] = groups[group].total_s
        for h in pred_groups:
            if h != group:  # the latest used last
                waited_on = groups[h]
                waited_on.following.pop(group, None)
                waited_on.following[group] = None
                waited_on.followed_at_s = min(waited_on.followed_at_s, waited_on.duration_s)
    return _plan(ordered, preds, groups, group_of)


def _join(model: PackingModel, groups: list[_Group], group_of: list[int],
          finish_in_pack: list[float], finish_in_line: list[float], node: PlanNode,
          node_preds: list[int], pred_groups: list[int],
          candidates: list[int]) -> tuple[int, float] | None:
    """Add the node to the first of the candidate packs that takes it: (group, finish)."""
    alone = _reserved(model, node.vcpus, node.memory_mb, node.runtime_s)
    saved = model.job_overhead_s * node.vcpus
    tried = 0
    for g in candidates:
        pack = groups[g]
        if not pack.open or pack.image != node.image or pack.queue != node.queue:
            continue
        tried += 1
        if tried > _CANDIDATES:
            return None
        finish = node.runtime_s + max(
            (finish_in_pack[p] for p in node_preds if group_of[p] == g), default=0.0)
        # every member's wait counts: a later member must not turn the pack back into a line
        need = max(pack.need_parallel, _parallel_needed(
            model, pack, max((finish_in_line[p] for p in node_preds if group_of[p] == g),
                             default=0.0),
            max((finish_in_pack[p] for p in node_preds if group_of[p] == g), default=0.0)))
        if need > model.max_vcpus:
            continue
        memories = sorted([*pack.memories, node.memory_mb], reverse=True)[:model.max_vcpus]
        shape = _cheapest_shape(
            model, len(pack.members) + 1, pack.total_s + node.runtime_s,
            pack.work + node.runtime_s * node.vcpus, max(pack.critical_s, finish),
            max(pack.max_member_vcpus, node.vcpus), min(pack.min_member_vcpus, node.vcpus),
            memories, need, pack.followed_at_s + model.job_overhead_s)
        if shape is None or saved <= shape.reserved - pack.reserved - alone:
            continue
        outside = [h for h in pred_groups if h != g]
        if not _all_reach(groups, g, outside) and not _done_before(
                model, groups, group_of, finish_in_pack, g, node_preds, outside):
            continue
        pack.preds.update(dict.fromkeys(outside))
        pack.total_s += node.runtime_s
        pack.work += node.runtime_s * node.vcpus
        pack.critical_s = max(pack.critical_s, finish)
        pack.max_member_vcpus = max(pack.max_member_vcpus, node.vcpus)
        pack.min_member_vcpus = min(pack.min_member_vcpus, node.vcpus)
        pack.memories = memories
        pack.need_parallel = need
        pack.vcpus, pack.memory_mb = shape.vcpus, shape.memory_mb
        pack.duration_s, pack.parallel, pack.reserved = (shape.duration_s, shape.parallel,
                                                         shape.reserved)
        return g, finish
    return None


def _plan(ordered: list[PlanNode], preds: list[list[int]], groups: list[_Group],
          group_of: list[int]) -> PackPlan:
    """The records the driver reads, from the groups built, in a topological order."""
    order = _group_order(groups)
    pack_index: dict[int, int] = {}
    for g in order:
        if not groups[g].driver:
            pack_index[g] = len(pack_index)
    packs, after, needs = [], [], []
    for g in order:
        group = groups[g]
        if group.driver:
            continue
        packs.append(Pack(tuple(ordered[p].key for p in group.members), group.vcpus,
                          group.memory_mb, group.duration_s, group.image, group.queue,
                          group.parallel))
        after.append(tuple(pack_index[h] for h in group.preds if h in pack_index))
        needs.append(tuple(dict.fromkeys(
            ordered[p].key for m in group.members for p in preds[m] if group_of[p] != g)))
    index: dict[str, int | None] = {
        node.key: pack_index.get(group_of[p]) for p, node in enumerate(ordered)}
    return PackPlan(tuple(packs), index, tuple(after), tuple(needs))


def _group_order(groups: list[_Group]) -> list[int]:
    """Groups in a topological order, earliest built first among the ready: the order they
    were built in, but for a pack that came to wait on a later one (rule 5's exception)."""
    waiting = [len(group.preds) for group in groups]
    ready = [g for g, n in enumerate(waiting) if n == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        g = heapq.heappop(ready)
        order.append(g)
        for after in groups[g].following:
            waiting[after] -= 1
            if waiting[after] == 0:
                heapq.heappush(ready, after)
    assert len(order) == len(groups), "the packs' quotient graph has a cycle"
    return order


def chunk_size(subnode_runtime_s: float, count: int, model: PackingModel) -> int:
    """How many of a MapNode's subnodes each array child runs.

    A child should work at least about ``job_overhead_s`` (so it waits no longer than it
    works) and at most ``target_s``: the size starts at ``ceil(job_overhead_s / runtime)``,
    capped at ``floor(target_s / runtime)`` and at ``count``, and is then evened out over the
    children (200 subnodes of 1 s with overhead 60 s and target 180 s: 3 children of 67).
    Subnodes of ``target_s`` or more run one per child.

    Parameters
    ----------
    subnode_runtime_s
        Estimated run time of one subnode, seconds; 0 or less means unknown but negligible.
    count
        How many subnodes the MapNode has (1 or more).
    model
        The same model the packs are planned with.
    """
    if count < 1:
        raise ValueError(f"chunk_size: a MapNode has 1 subnode or more, not {count}")
    if subnode_runtime_s <= 0:
        return count
    most = max(1, math.floor(model.target_s / subnode_runtime_s))
    least = min(max(1, math.ceil(model.job_overhead_s / subnode_runtime_s)), most, count)
    children = max(1, count // least)
    size = math.ceil(count / children)
    if size > most:
        size = math.ceil(count / math.ceil(count / most))
    return size
