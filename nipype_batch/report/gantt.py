"""The Gantt chart's geometry, shared by the HTML and PNG renderers: a bar per job, made of
queue waits and attempts, in seconds since the run's first submission.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .model import JobRow

QUEUED, RUNNING, FAILED = "queued", "running", "failed"


@dataclass(frozen=True)
class Segment:
    """A stretch of one job's bar, in seconds since the run's first submission."""

    kind: str  # QUEUED, RUNNING, or FAILED (an attempt that ended in failure)
    start_s: float
    end_s: float
    label: str


@dataclass(frozen=True)
class Bar:
    """One job's row of the Gantt chart."""

    row: JobRow
    segments: tuple[Segment, ...]
    retries_at_s: tuple[float, ...]  # where each attempt after the first started


def time_unit(span_s: float) -> tuple[str, float]:
    """The unit a time axis spanning ``span_s`` seconds reads best in, and its seconds."""
    if span_s <= 180:
        return "s", 1.0
    if span_s <= 3 * 3600:
        return "min", 60.0
    return "h", 3600.0


def _s(ms: int, origin_ms: int) -> float:
    return (ms - origin_ms) / 1000


def gantt_bars(rows: Sequence[JobRow]) -> list[Bar]:
    """The chart's bars: queue waits, then each attempt's run; failed attempts apart."""
    origins = [t for r in rows for t in (r.submitted_ms, r.first_start_ms) if t is not None]
    if not origins:
        return [Bar(row, (), ()) for row in rows]
    origin = min(origins)
    bars = []
    for row in rows:
        segments: list[Segment] = []
        retries: list[float] = []
        cursor = row.submitted_ms
        for number, attempt in enumerate(row.attempts, start=1):
            if attempt.started_ms is None:
                continue
            if cursor is not None and attempt.started_ms > cursor:
                what = "queued" if number == 1 else f"queued again before attempt {number}"
                segments.append(Segment(QUEUED, _s(cursor, origin), _s(attempt.started_ms, origin),
                                        f"{what}: {(attempt.started_ms - cursor) / 1000:.1f} s"))
            if number > 1:
                retries.append(_s(attempt.started_ms, origin))
            end = attempt.stopped_ms or row.stopped_ms or attempt.started_ms
            last = number == len(row.attempts)
            kind = FAILED if (not last or row.failed) else RUNNING
            outcome = f": {attempt.reason}" if attempt.reason and kind == FAILED else ""
            ran_s = (end - attempt.started_ms) / 1000
            segments.append(Segment(
                kind, _s(attempt.started_ms, origin), _s(end, origin),
                f"attempt {number}/{len(row.attempts)} ran {ran_s:.1f} s{outcome}",
            ))
            cursor = end
        if not row.attempts and row.submitted_ms is not None and row.stopped_ms is not None:
            segments.append(Segment(
                QUEUED, _s(row.submitted_ms, origin), _s(row.stopped_ms, origin),
                f"queued, never ran: {row.reason or row.state}",
            ))
        bars.append(Bar(row, tuple(segments), tuple(retries)))
    return bars
