"""Simulated time for the simulated Batch: hours of Batch played in minutes.

A :class:`ScaledClock` runs ``1 / scale`` times faster than the wall clock, from a common
origin: simulated seconds = real seconds / ``scale``. The simulated service reads it for its
state delays and timestamps; each worker process installs it in place of the ``time`` module's
clocks and ``time.sleep`` (:func:`install`), so a node that sleeps 10 s takes 10 simulated
seconds, and the runner's timings, Nipype's node runtimes and the run history are in simulated
seconds too.

What is scaled: ``time.time``, ``time.time_ns``, ``time.monotonic``, ``time.perf_counter`` and
``time.sleep`` in the workers, Nipype's ``utcnow`` there (node runtimes), and the service's
own clock. What is not: CPU work. A worker's real CPU seconds (Nipype running a node,
staging) and the driver's (it keeps the real clock: poll intervals are real seconds) count
``1 / scale`` times as long in simulated time, which makes every simulated run pessimistic
by that much.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

_real_time = time.time
_real_monotonic = time.monotonic
_real_perf_counter = time.perf_counter
_real_sleep = time.sleep


@dataclass(frozen=True)
class ScaledClock:
    """Simulated time running ``1 / scale`` times as fast as the real one.

    Simulated and real time agree at the moment the clock was made (``origin``).
    """

    scale: float = 1.0
    origin: float = field(default_factory=_real_time)
    origin_monotonic: float = field(default_factory=_real_monotonic)
    origin_perf: float = field(default_factory=_real_perf_counter)

    def __post_init__(self) -> None:
        if not self.scale > 0:
            raise ValueError(f"time_scale must be > 0 (real seconds per simulated one), "
                             f"got {self.scale!r}")

    def time(self) -> float:
        """Simulated epoch seconds (``time.time`` of the simulation)."""
        return self.origin + (_real_time() - self.origin) / self.scale

    def monotonic(self) -> float:
        return self.origin_monotonic + (_real_monotonic() - self.origin_monotonic) / self.scale

    def perf_counter(self) -> float:
        return self.origin_perf + (_real_perf_counter() - self.origin_perf) / self.scale

    def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` of simulated time."""
        _real_sleep(max(0.0, seconds) * self.scale)

    def real_seconds(self, simulated: float) -> float:
        """Real seconds that ``simulated`` seconds take."""
        return simulated * self.scale


def install(clock: ScaledClock) -> None:
    """Make this process's clocks and sleep simulated (in a worker process only)."""
    if clock.scale == 1.0:
        return
    time.time = clock.time
    time.time_ns = lambda: int(clock.time() * 1e9)
    time.monotonic = clock.monotonic
    time.perf_counter = clock.perf_counter
    time.sleep = clock.sleep
    # Nipype times a node with datetimes (interfaces.base.support imports utcnow by name)
    from datetime import UTC, datetime

    import nipype.interfaces.base.support as support
    import nipype.utils.datetime as nipype_datetime

    def utcnow() -> datetime:
        return datetime.fromtimestamp(clock.time(), UTC)

    nipype_datetime.utcnow = utcnow
    support.utcnow = utcnow
