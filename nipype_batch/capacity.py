"""A compute environment's hosts, and which RUNNABLE job goes on which, in simulated time.

Shared by the simulated Batch (:mod:`nipype_batch.local.simulated_batch`, which runs the
jobs) and the forecast (:mod:`nipype_batch.forecasting`, which only plays them back), so both
place jobs the same way: a RUNNABLE job is considered once the scheduler's delay (the
profile's RUNNABLE -> STARTING) has passed, holding no vCPUs meanwhile (AWS: "Resources are
locked once the job moves to STARTING and are then unlocked when the job moves to SUCCEEDED or
FAILED", https://docs.aws.amazon.com/batch/latest/userguide/resource-aware-scheduling-how-to-for-jobs.html);
then first come first served (a job that does not fit holds the ones behind it, as at the
head of a Batch queue), hosts of the profile's size launched for the
vCPUs that wait up to the queue's ``max_vcpus``, each ready after its launch delay; on Fargate
a host of the job's own size per job. Only vCPUs count as capacity (memory does not), and a
launched host stays (no scale-in).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .latency import LatencyProfile


@dataclass
class Host:
    """One instance of the compute environment (simulated)."""

    number: int
    vcpus: float
    ready_at: float  # simulated seconds
    launched_at: float = -math.inf
    used: float = 0.0
    images: dict[str, float] = field(default_factory=dict)  # image -> when its pull ends

    @property
    def free(self) -> float:
        return self.vcpus - self.used


class Placeable(Protocol):
    """What capacity needs of a job: its size, its random stream, and a slot for its host."""

    vcpus: float
    rng: Any
    host: Host | None


class Capacity:
    """Hosts and the queue of RUNNABLE jobs of one simulated job queue.

    ``on_launch(host)`` is called for each host launched (the caller wakes at
    ``host.ready_at`` to place again); ``on_placed(job, starting_at)`` for each job placed,
    with the simulated time it goes STARTING (on Fargate, once its host is up).
    """

    def __init__(self, profile: LatencyProfile, on_launch: Callable[[Host], None],
                 on_placed: Callable[[Any, float], None]) -> None:
        self.profile = profile
        self.hosts: list[Host] = []
        self.runnable: deque[Placeable] = deque()  # considered, waiting for room, in order
        # RUNNABLE jobs the scheduler has not considered yet: (when it will, order, job)
        self.pending: list[tuple[float, int, Placeable]] = []
        self._order = itertools.count()
        self.waiting_vcpus = 0.0  # what the RUNNABLE jobs ask for
        self.in_use = 0.0  # vCPUs of the jobs placed and not yet exited
        self._on_launch = on_launch
        self._on_placed = on_placed
        if profile.host_vcpus is None and not profile.host_per_job:
            # no capacity model: one warm host of unlimited size, holding every image
            self.hosts.append(Host(0, math.inf, ready_at=-math.inf))

    def fits(self, vcpus: float) -> bool:
        """Whether any host the queue can launch holds a job this large (else Batch leaves
        the job RUNNABLE for ever)."""
        limit = self.profile.max_vcpus or math.inf
        if not self.profile.host_per_job:
            limit = min(limit, self.profile.host_vcpus or math.inf)
        return vcpus <= limit

    def enqueue(self, job: Placeable, now: float) -> float:
        """A job became RUNNABLE at ``now``; return when the scheduler considers it (the
        caller places again then)."""
        considered = now + self.profile.runnable_to_starting.draw(job.rng)
        heapq.heappush(self.pending, (considered, next(self._order), job))
        self.waiting_vcpus += job.vcpus
        return considered

    def withdraw(self, job: Placeable) -> None:
        """A RUNNABLE job was terminated."""
        if job in self.runnable:
            self.runnable.remove(job)
            self.waiting_vcpus -= job.vcpus
            return
        for index, (_at, _n, each) in enumerate(self.pending):
            if each is job:
                self.pending.pop(index)
                heapq.heapify(self.pending)
                self.waiting_vcpus -= job.vcpus
                return

    @property
    def waiting(self) -> list[Placeable]:
        """Every RUNNABLE job, considered or not."""
        return [*self.runnable, *(job for _at, _n, job in sorted(self.pending))]

    def place(self, now: float) -> bool:
        """Put RUNNABLE jobs on hosts with room, launching hosts as the queue allows; True if
        a job was placed with no delay left (to apply on this pass)."""
        while self.pending and self.pending[0][0] <= now:
            self.runnable.append(heapq.heappop(self.pending)[2])
        placed_now = False
        while self.runnable:
            job = self.runnable[0]
            host = self._host_for(job, now)
            if host is None:
                break
            self.runnable.popleft()
            self.waiting_vcpus -= job.vcpus
            self.in_use += job.vcpus
            host.used += job.vcpus
            job.host = host
            starting = max(now, host.ready_at)
            self._on_placed(job, starting)
            placed_now |= starting <= now
        if ((self.runnable or self.pending) and not self.profile.host_per_job
                and self.profile.host_vcpus is not None):  # else one host holds everything
            self._scale_up(now)
        return placed_now

    def image_ready(self, job: Placeable, image: str, at: float) -> float:
        """When the job's image is on its host: pulled once per host; a job arriving during
        the pull waits for its end."""
        host = job.host
        assert host is not None
        pulled = host.images.get(image)
        if pulled is None:
            pulled = host.images[image] = at + self.profile.pull_s
        return max(at, pulled)

    def release(self, job: Placeable) -> None:
        """Give the job's vCPUs back to its host (a Fargate host goes away with its job)."""
        host, job.host = job.host, None
        if host is None:
            return
        host.used -= job.vcpus
        self.in_use -= job.vcpus
        if self.profile.host_per_job:
            host.vcpus = 0.0

    def _host_for(self, job: Placeable, now: float) -> Host | None:
        """A ready host with room for the job (on Fargate: a new one of its size), or None."""
        profile = self.profile
        if profile.host_per_job:
            if self.in_use + job.vcpus > (profile.max_vcpus or math.inf):
                return None
            return self._launch(job.vcpus, now)
        return next((h for h in self.hosts if h.ready_at <= now and h.free >= job.vcpus), None)

    def _scale_up(self, now: float) -> None:
        """Launch hosts for the vCPUs that wait, beyond what hosts being launched will give."""
        size = self.profile.host_vcpus
        assert size is not None
        coming = sum(h.free for h in self.hosts if h.ready_at > now)
        total = sum(h.vcpus for h in self.hosts)
        limit = self.profile.max_vcpus or math.inf
        while self.waiting_vcpus > coming and total + size <= limit:
            host = self._launch(size, now)
            coming += host.vcpus
            total += host.vcpus

    def _launch(self, vcpus: float, now: float) -> Host:
        number = len(self.hosts)
        ready = now + self.profile.host_launch.draw(self.profile.rng("host", number))
        host = Host(number, vcpus, ready_at=ready, launched_at=now)
        self.hosts.append(host)
        self._on_launch(host)
        return host
