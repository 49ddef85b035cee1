"""Play a planned run through Batch's delays and capacity in virtual time, running nothing.

The simulated Batch (:mod:`nipype_batch.local.simulated_batch`) runs every job's runner for
real on a scaled clock, so a benchmark of hours of Batch takes minutes, but the real CPU work
of thousands of nodes on this machine, scaled up, inflates what it measures. This module plays
the same run as a discrete-event simulation instead: the same latency profile, the same
placement on hosts (:class:`~nipype_batch.capacity.Capacity`), and the driver's own rules:

- a job (a pack, a node alone, or a MapNode's array of chunks) is submitted once every node
  it needs from outside it is done and the driver has seen it (its next status poll, every
  ``poll_s`` while jobs run);
- a pack runs its members in dependency order, up to ``parallel`` at once; the driver sees
  each member done at the first poll after it ends (its marker), so the next pack starts
  before the job has exited;
- a node alone is seen done at the first poll after its job's SUCCEEDED; a MapNode after its
  array's last child;
- nodes that run on the driver take no time.

It plays one attempt per job (no failures, no retries) and nodes as long as ``runtime_s``
says (plus ``node_overhead_s``, the runner's own work per node, and ``job_setup_s`` per job).
Everything is a pure function of its inputs and the profile's seed.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..capacity import Capacity, Host
from ..latency import LatencyProfile
from ..packing import PackPlan, PlanNode

# events after which a RUNNABLE job may find room (one arrives: hosts scale up; the
# scheduler considers one; a host is ready; one leaves)
_CAPACITY_CHANGES = frozenset({"runnable", "considered", "host_ready", "exit"})


@dataclass(frozen=True)
class MapShape:
    """A MapNode's subnodes as the driver submits them: ``count`` of ``subnode_s`` each,
    ``chunk`` per array child, run one after the other."""

    count: int
    subnode_s: float
    chunk: int = 1

    @property
    def children(self) -> int:
        return max(1, math.ceil(self.count / max(1, self.chunk)))


@dataclass(eq=False)
class PlayedJob:
    """One job (or array child) as played: what it asked for and when it entered each state."""

    name: str
    vcpus: float
    memory_mb: int
    nodes: int  # nodes (or subnodes) it ran
    image: str
    number: int
    index: int | None = None
    rng: Any = None
    host: Host | None = None
    submitted: float = 0.0
    running: float | None = None
    exited: float | None = None
    done: float | None = None


@dataclass
class Playback:
    """The played run."""

    makespan_s: float  # run start to the driver seeing the last node done
    submit_calls: int  # SubmitJob calls (an array counts once)
    jobs: list[PlayedJob]  # every job and array child
    hosts: list[Host]
    finished: dict[str, float] = field(repr=False)  # node key -> when the driver saw it done

    @property
    def vcpu_s(self) -> float:
        """vCPU-seconds the jobs held, from their start to their exit."""
        return sum((j.exited - j.running) * j.vcpus for j in self.jobs
                   if j.running is not None and j.exited is not None)

    @property
    def gb_s(self) -> float:
        """GB-seconds (memory) the jobs held, from their start to their exit."""
        return sum((j.exited - j.running) * j.memory_mb / 1024 for j in self.jobs
                   if j.running is not None and j.exited is not None)

    @property
    def host_vcpu_s(self) -> float:
        """vCPU-seconds of the hosts from their launch to the run's end (what EC2 bills);
        on Fargate, each job's from its start to its exit."""
        if self.hosts and all(h.vcpus == 0 for h in self.hosts):  # Fargate: gone with its job
            return self.vcpu_s
        return sum((self.makespan_s - h.launched_at) * h.vcpus for h in self.hosts
                   if h.launched_at > -math.inf and math.isfinite(h.vcpus))


@dataclass(eq=False)  # one per job: held in dicts by identity
class _Unit:
    """What the driver submits as one SubmitJob call."""

    name: str
    members: list[PlanNode]
    vcpus: int
    memory_mb: int
    image: str
    parallel: int = 1
    shape: MapShape | None = None
    waiting: int = 0  # outside nodes not yet seen done
    children_left: int = 0


def play(nodes: Sequence[PlanNode], plan: PackPlan | None, profile: LatencyProfile, *,
         maps: Mapping[str, MapShape] | None = None, poll_s: float = 0.5,
         node_overhead_s: float = 0.0, job_setup_s: float = 0.0) -> Playback:
    """Play a run of ``nodes`` as ``plan`` packs them (None: one job per node).

    ``maps`` gives the MapNodes' subnodes (by node key); a MapNode not named runs as one job
    of its ``runtime_s``. Raises ValueError for a job no host of the profile can hold (Batch
    would leave it RUNNABLE for ever).
    """
    return _Playback(nodes, plan, profile, dict(maps or {}), poll_s, node_overhead_s,
                     job_setup_s).run()


class _Playback:
    def __init__(self, nodes: Sequence[PlanNode], plan: PackPlan | None,
                 profile: LatencyProfile, maps: dict[str, MapShape], poll_s: float,
                 node_overhead_s: float, job_setup_s: float) -> None:
        if poll_s <= 0:
            raise ValueError(f"poll_s must be above 0, not {poll_s}")
        self.profile = profile
        self.poll_s = poll_s
        self.node_overhead_s = node_overhead_s
        self.job_setup_s = job_setup_s
        self.nodes = {n.key: n for n in nodes}
        self.events: list[tuple[float, int, str, Any]] = []
        self.tie = itertools.count()
        self.numbers = itertools.count()
        self.capacity = Capacity(profile, on_launch=lambda host: self._at(
            host.ready_at, "host_ready", host), on_placed=lambda job, at: self._at(
            at, "starting", job))
        self.jobs: list[PlayedJob] = []
        self.unit_of_job: dict[int, _Unit] = {}  # id(job) -> unit
        self.finished: dict[str, float] = {}
        self.submit_calls = 0
        self.units: dict[str, _Unit] = {}  # node key -> its unit (None on the driver)
        for node in nodes:
            if node.on_driver:
                continue
            pack = plan.pack_of(node.key) if plan is not None else None
            if pack is not None and len(pack.members) > 1:
                if node.key not in self.units:
                    unit = _Unit(pack.members[0], [self.nodes[k] for k in pack.members],
                                 pack.vcpus, pack.memory_mb, pack.image,
                                 parallel=pack.vcpus)  # as the runner: up to its vCPUs
                    self.units.update(dict.fromkeys(pack.members, unit))
            else:
                self.units[node.key] = _Unit(node.key, [node], node.vcpus, node.memory_mb,
                                             node.image, shape=maps.get(node.key))
        # who waits on whom: a unit on its outside needs, a driver node on its inputs
        self.dependents: dict[str, list[Any]] = {k: [] for k in self.nodes}
        self.driver_waiting: dict[str, int] = {}
        for node in nodes:
            if node.on_driver:
                self.driver_waiting[node.key] = len(node.after)
                for before in node.after:
                    self.dependents[before].append(node.key)
        for unit in dict.fromkeys(self.units.values()):
            inside = {m.key for m in unit.members}
            outside = {p for m in unit.members for p in m.after if p not in inside}
            unit.waiting = len(outside)
            for before in outside:
                self.dependents[before].append(unit)

    def run(self) -> Playback:
        ready = [unit for unit in dict.fromkeys(self.units.values()) if unit.waiting == 0]
        for unit in ready:  # before the driver's first nodes release more
            self._submit(unit, 0.0)
        for key in [k for k, waiting in self.driver_waiting.items() if waiting == 0]:
            self._seen_done(key, 0.0)
        while self.events:
            when, _tie, action, subject = heapq.heappop(self.events)
            getattr(self, f"_on_{action}")(subject, when)
            if action in _CAPACITY_CHANGES:  # only these can let a RUNNABLE job in
                self.capacity.place(when)
        missing = set(self.nodes) - set(self.finished)
        if missing:
            stuck = self.capacity.waiting
            raise ValueError(f"{len(missing)} nodes never ran (e.g. {sorted(missing)[0]!r}); "
                             f"{len(stuck)} jobs left RUNNABLE")
        makespan = max(self.finished.values(), default=0.0)
        return Playback(makespan, self.submit_calls, self.jobs, self.capacity.hosts,
                        self.finished)

    # ---- the driver ---------------------------------------------------------------------------

    def _tick(self, t: float) -> float:
        """When the driver sees something that happened at ``t``: its next poll."""
        return math.ceil(t / self.poll_s - 1e-9) * self.poll_s

    def _seen_done(self, key: str, at: float) -> None:
        """The driver sees a node done: submit what waited only on it."""
        self.finished[key] = at
        for dependent in self.dependents[key]:
            if isinstance(dependent, str):  # a node on the driver: runs at once
                self.driver_waiting[dependent] -= 1
                if self.driver_waiting[dependent] == 0:
                    self._seen_done(dependent, at)
            else:
                dependent.waiting -= 1
                if dependent.waiting == 0:
                    self._submit(dependent, at)

    def _submit(self, unit: _Unit, at: float) -> None:
        self.submit_calls += 1
        number = next(self.numbers)
        shape = unit.shape
        if shape is not None and shape.children > 1:
            unit.children_left = shape.children
            for index in range(shape.children):
                count = min(shape.chunk, shape.count - index * shape.chunk)
                self._job(unit, number, index, count, at)
        else:
            self._job(unit, number, None, shape.count if shape else len(unit.members), at)

    def _job(self, unit: _Unit, number: int, index: int | None, count: int,
             at: float) -> None:
        job = PlayedJob(unit.name, unit.vcpus, unit.memory_mb, count, unit.image, number,
                        index, rng=self.profile.rng("job", number, index), submitted=at)
        self.jobs.append(job)
        self.unit_of_job[id(job)] = unit
        if not self.capacity.fits(job.vcpus):
            raise ValueError(f"job {unit.name!r} asks {job.vcpus:g} vCPUs: no host of profile "
                             f"{self.profile.name!r} holds it")
        self._at(at + self.profile.submitted_to_runnable.draw(job.rng), "runnable", job)

    # ---- Batch ---------------------------------------------------------------------------------

    def _at(self, when: float, action: str, subject: Any) -> None:
        heapq.heappush(self.events, (when, next(self.tie), action, subject))

    def _on_runnable(self, job: PlayedJob, at: float) -> None:
        self._at(self.capacity.enqueue(job, at), "considered", job)

    def _on_considered(self, job: PlayedJob, at: float) -> None:
        pass  # the scheduler's delay is over: placed by the pass after this event

    def _on_host_ready(self, host: Host, at: float) -> None:
        pass  # placed by the pass after every event

    def _on_starting(self, job: PlayedJob, at: float) -> None:
        ready = (self.capacity.image_ready(job, job.image, at)
                 + self.profile.starting_to_running.draw(job.rng))
        self._at(ready, "running", job)

    def _on_running(self, job: PlayedJob, at: float) -> None:
        job.running = at
        unit = self.unit_of_job[id(job)]
        start = at + self.job_setup_s
        if unit.shape is not None:
            duration = job.nodes * (unit.shape.subnode_s + self.node_overhead_s)
        else:
            ends = self._schedule(unit)
            duration = max(ends.values(), default=0.0)
            if len(unit.members) > 1:  # a pack: each member seen by its marker
                for key, end in ends.items():
                    self._at(self._tick(start + end), "marker", key)
        self._at(start + duration, "exit", job)

    def _schedule(self, unit: _Unit) -> dict[str, float]:
        """When each member of a job ends, from the job's start: in dependency order, up to
        ``parallel`` at once (list scheduling, first ready first)."""
        inside = {m.key for m in unit.members}
        order = {m.key: i for i, m in enumerate(unit.members)}
        left = {m.key: sum(p in inside for p in m.after) for m in unit.members}
        after_me: dict[str, list[str]] = {m.key: [] for m in unit.members}
        for m in unit.members:
            for p in m.after:
                if p in inside:
                    after_me[p].append(m.key)
        ready = [(order[k], k) for k, n in left.items() if n == 0]
        heapq.heapify(ready)
        running: list[tuple[float, str]] = []
        ends: dict[str, float] = {}
        now = 0.0
        while ready or running:
            while ready and len(running) < max(1, unit.parallel):
                _, key = heapq.heappop(ready)
                end = now + self.nodes[key].runtime_s + self.node_overhead_s
                heapq.heappush(running, (end, key))
            now, key = heapq.heappop(running)
            ends[key] = now
            for follower in after_me[key]:
                left[follower] -= 1
                if left[follower] == 0:
                    heapq.heappush(ready, (order[follower], follower))
        return ends

    def _on_marker(self, key: str, at: float) -> None:
        self._seen_done(key, at)

    def _on_exit(self, job: PlayedJob, at: float) -> None:
        job.exited = at
        self.capacity.release(job)
        self._at(at + self.profile.running_to_done.draw(job.rng), "done", job)

    def _on_done(self, job: PlayedJob, at: float) -> None:
        job.done = at
        unit = self.unit_of_job[id(job)]
        if len(unit.members) > 1:
            return  # its members were seen by their markers
        if job.index is not None:
            unit.children_left -= 1
            if unit.children_left:
                return
        self._at(self._tick(at), "marker", unit.members[0].key)
