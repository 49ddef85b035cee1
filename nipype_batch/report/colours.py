"""The chart's colours, one per kind of bar segment: the HTML page and the PNG chart agree."""

from __future__ import annotations

from .gantt import FAILED, QUEUED, RUNNING

COLOURS = {QUEUED: "#e8a33d", RUNNING: "#3b7dd8", FAILED: "#d64545"}
RETRY_COLOUR = "#222222"  # the ▼ where Batch started another attempt of a job
