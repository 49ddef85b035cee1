"""What a running workflow shows: its nodes by stage and the Batch states behind them.

In a terminal, one live panel (rich) redrawn in place; elsewhere (CI logs, notebooks writing to
files, ``nohup``) a plain log line each time the counts change. Off with
``plugin_args={'progress': False}``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TextIO

log = logging.getLogger("nipype_batch")

NODE_STAGES = ("waiting", "submitted", "done", "failed")
BATCH_STATES = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED",
                "FAILED")


@dataclass(frozen=True)
class Snapshot:
    """Counts at one moment: nodes by stage, jobs in flight by Batch state."""

    nodes: tuple[tuple[str, int], ...]
    jobs: tuple[tuple[str, int], ...]

    @classmethod
    def of(cls, nodes: Mapping[str, int], jobs: Mapping[str, int]) -> Snapshot:
        return cls(tuple((s, nodes.get(s, 0)) for s in NODE_STAGES),
                   tuple((s, jobs[s]) for s in BATCH_STATES if jobs.get(s)))

    def line(self) -> str:
        """One plain line, e.g. ``nodes: 3 waiting, 10 submitted, 2 done, 0 failed | jobs: ...``."""
        nodes = ", ".join(f"{n} {s}" for s, n in self.nodes)
        jobs = ", ".join(f"{n} {s.lower()}" for s, n in self.jobs) or "none in flight"
        return f"nodes: {nodes} | AWS Batch jobs: {jobs}"


class Progress:
    """Shows :class:`Snapshot` updates; ``mode`` is 'auto', 'live', 'lines' or 'off'."""

    def __init__(self, mode: str = "auto", stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "live" if _is_terminal(self.stream) else "lines"
        self.mode = mode
        self._last: Snapshot | None = None
        self._live: Any = None

    def update(self, nodes: Mapping[str, int], jobs: Mapping[str, int]) -> None:
        """Show the counts if they changed since the last update."""
        snapshot = Snapshot.of(nodes, jobs)
        if snapshot == self._last or self.mode == "off":
            return
        self._last = snapshot
        if self.mode == "lines":
            log.info("%s", snapshot.line())
            return
        if self._live is None:
            from rich.console import Console
            from rich.live import Live

            self._live = Live(_panel(snapshot), console=Console(file=self.stream),
                              refresh_per_second=4, transient=False)
            self._live.start()
        else:
            self._live.update(_panel(snapshot))

    def close(self) -> None:
        """Leave the last panel on screen and stop redrawing."""
        if self._live is not None:
            self._live.stop()
            self._live = None


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _panel(snapshot: Snapshot) -> Any:
    from rich.table import Table

    table = Table(title="nipype-batch", show_header=True, header_style="bold")
    for stage, _count in snapshot.nodes:
        table.add_column(f"nodes {stage}", justify="right")
    table.add_column("AWS Batch jobs in flight")
    jobs = ", ".join(f"{n} {s.lower()}" for s, n in snapshot.jobs) or "none"
    table.add_row(*(str(n) for _s, n in snapshot.nodes), jobs)
    return table
