"""The run report's Gantt chart as a PNG, for a paper or a ticket (needs matplotlib).

Draws on its own Agg canvas: no pyplot, so the caller's matplotlib backend and figures are
left alone (a report written at the end of a run in a notebook changes nothing there).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from .colours import COLOURS, RETRY_COLOUR
from .gantt import FAILED, QUEUED, RUNNING, Bar, time_unit

MAX_LABELLED_ROWS = 60  # beyond this, row labels would overlap: the rows stay, labels go


def render_png(bars: Sequence[Bar], path: str | Path, dpi: int = 150) -> Path:
    """Draw the chart of ``bars`` into ``path``; return the path."""
    rows = max(len(bars), 1)
    fig = Figure(figsize=(11, min(1.6 + 0.22 * rows, 14)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    unit, unit_s = time_unit(max((s.end_s for b in bars for s in b.segments), default=0.0))
    for index, bar in enumerate(bars):
        for seg in bar.segments:
            ax.broken_barh([(seg.start_s / unit_s, max(seg.end_s - seg.start_s, 1e-9) / unit_s)],
                           (index - 0.35, 0.7), facecolors=COLOURS[seg.kind], linewidth=0)
        retries = [at / unit_s for at in bar.retries_at_s]
        if retries:
            ax.scatter(retries, [index - 0.5] * len(retries), marker="v", s=28,
                       color=RETRY_COLOUR, zorder=3)
    ax.set_ylim(rows - 0.5, -0.8)
    if len(bars) <= MAX_LABELLED_ROWS:
        ax.set_yticks(range(len(bars)))
        ax.set_yticklabels([_short(bar.row.node) for bar in bars], fontsize=7)
    else:
        ax.set_yticks([])
        ax.set_ylabel(f"{len(bars)} jobs")
    ax.set_xlim(left=0)
    ax.set_xlabel(f"time since the first submission ({unit})")
    ax.grid(axis="x", color="#e3e6eb")
    ax.set_axisbelow(True)
    ax.set_title(f"nipype-batch: {len(bars)} jobs", fontsize=10, loc="right")
    handles = [Patch(color=COLOURS[QUEUED], label="queued"),
               Patch(color=COLOURS[RUNNING], label="running"),
               Patch(color=COLOURS[FAILED], label="failed attempt"),
               Line2D([], [], marker="v", linestyle="", color=RETRY_COLOUR, label="retry")]
    # above the chart, left of the title: inside it would hide bars
    ax.legend(handles=handles, loc="lower left", bbox_to_anchor=(0, 1), ncol=4, fontsize=7,
              frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    return Path(path)


def _short(text: str, width: int = 40) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1):]
