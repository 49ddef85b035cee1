"""What a running workflow shows: its stages, the Batch jobs behind them, time and cost.

In a terminal, one view (rich) redrawn in place: a row per stage (a node's name without its
iterable parameterisation) with done/total, running, queued and failed, then the jobs by Batch
state, the elapsed time and the cost so far. Elsewhere (CI, ``nohup``, a notebook writing to a
file) one plain line each time a count changes. Off with ``plugin_args={'progress': False}``.
Log records go to a file meanwhile (:mod:`run_log`), so nothing scrolls the view away.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TextIO

from ..aws.status import JobState

BATCH_STATES = tuple(state.value for state in JobState)  # in the order a job goes through them
_FOLD_AFTER = 12  # stage rows shown before the finished ones fold into one line
_NAME_WIDTH = 28


@dataclass(frozen=True)
class StageRow:
    """One stage's nodes: how many in all, done, running, queued (in Batch) and failed."""

    name: str
    total: int
    done: int = 0
    running: int = 0
    queued: int = 0
    failed: int = 0

    @property
    def finished(self) -> bool:
        """Every node of the stage is done."""
        return self.done == self.total

    def fraction(self) -> str:
        """``[ 50%] 2 of 4``, as Nextflow shows a process."""
        percent = 100 * self.done // self.total if self.total else 100
        return f"[{percent:3d}%] {self.done} of {self.total}"


@dataclass(frozen=True)
class Snapshot:
    """Counts at one moment, with the run's elapsed time and cost so far."""

    stages: tuple[StageRow, ...]
    jobs: tuple[tuple[str, int], ...]  # Batch state -> jobs in flight, in BATCH_STATES order
    elapsed_s: float = 0.0
    cost: str | None = None  # e.g. "USD 0.0123"

    @classmethod
    def of(cls, stages: list[StageRow], jobs: Mapping[str, int], elapsed_s: float = 0.0,
           cost: str | None = None) -> Snapshot:
        return cls(tuple(stages), tuple((s, jobs[s]) for s in BATCH_STATES if jobs.get(s)),
                   elapsed_s, cost)

    def counts(self) -> tuple:
        """What a change of state is: everything but the clock and the cost."""
        return self.stages, self.jobs

    def totals(self) -> StageRow:
        """All stages added up."""
        return StageRow("all", *(sum(getattr(r, f) for r in self.stages)
                                 for f in ("total", "done", "running", "queued", "failed")))

    def line(self) -> str:
        """One plain line: ``[ 50%] 4 of 8 nodes done, 2 running, ... | jobs: ... | 0:12``."""
        all_ = self.totals()
        jobs = ", ".join(f"{n} {s.lower()}" for s, n in self.jobs) or "none in flight"
        cost = f" | est. {self.cost}" if self.cost else ""
        return (f"{all_.fraction()} nodes done, {all_.running} running, {all_.queued} queued, "
                f"{all_.failed} failed | AWS Batch jobs: {jobs} | {clock(self.elapsed_s)}{cost}")


def clock(seconds: float) -> str:
    """``1:02:03`` or ``2:03``."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """Shows snapshots; ``mode`` is 'auto', 'live', 'lines' or 'off'."""

    def __init__(self, mode: str = "auto", stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "live" if _is_terminal(self.stream) else "lines"
        self.mode = mode
        self._last: tuple | None = None
        self._latest: Snapshot | None = None
        self._live: Any = None
        self._console: Any = None

    @property
    def console(self) -> Any:
        """The rich console the live view draws on (warnings are printed above it)."""
        if self._console is None:
            from rich.console import Console

            self._console = Console(file=self.stream)
        return self._console

    def say(self, text: str) -> None:
        """A line above the view (or on its own, off a terminal)."""
        if self.mode == "off":
            return
        if self.mode == "live":
            self.console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def update(self, snapshot: Snapshot) -> None:
        """Redraw the view; off a terminal, write a line if a count changed."""
        if self.mode == "off":
            return
        self._latest = snapshot
        changed = snapshot.counts() != self._last
        self._last = snapshot.counts()
        if self.mode == "lines":
            if changed:
                self.say(snapshot.line())
            return
        if self._live is None:
            from rich.live import Live

            self._live = Live(_Render(self), console=self.console, refresh_per_second=4,
                              transient=True, redirect_stdout=True, redirect_stderr=True)
            self._live.start()
        else:
            self._live.refresh()

    def close(self, summary: list[str] | None = None) -> None:
        """Stop redrawing (the view leaves the screen) and leave ``summary`` instead."""
        if self._live is not None:
            self._live.stop()
            self._live = None
        if self.mode == "off":
            return
        for text in summary or []:
            self.say(text)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class _Render:
    """The view of the latest snapshot at the console's width (rich calls it on refresh)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def __rich__(self) -> Any:
        snapshot = self.progress._latest
        return render(snapshot) if snapshot is not None else ""


def render(snapshot: Snapshot) -> Any:
    """A header line and a table of stages; finished stages fold into one line when many."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    all_ = snapshot.totals()
    jobs = ", ".join(f"{n} {s.lower()}" for s, n in snapshot.jobs) or "none in flight"
    header = Text.assemble(
        ("nipype-batch ", "bold"), f"{clock(snapshot.elapsed_s)}  ",
        f"{all_.fraction()} nodes  ", (f"est. {snapshot.cost}" if snapshot.cost else ""))
    table = Table(box=None, padding=(0, 1), show_edge=False, header_style="bold")
    table.add_column("stage", no_wrap=True, max_width=_NAME_WIDTH, overflow="ellipsis")
    table.add_column("done", justify="right", no_wrap=True)
    table.add_column("running", justify="right")
    table.add_column("queued", justify="right")
    table.add_column("failed", justify="right")
    rows = list(snapshot.stages)
    folded = [r for r in rows if r.finished] if len(rows) > _FOLD_AFTER else []
    for row in rows:
        if row in folded:
            continue
        table.add_row(row.name, row.fraction(), str(row.running or ""), str(row.queued or ""),
                      Text(str(row.failed), style="red") if row.failed else "")
    parts: list[Any] = [header, table]
    if folded:
        parts.append(Text(f"  ... and {len(folded)} finished stages "
                          f"({sum(r.total for r in folded)} nodes)", style="dim"))
    parts.append(Text(f"AWS Batch jobs: {jobs}", style="dim"))
    return Group(*parts)
