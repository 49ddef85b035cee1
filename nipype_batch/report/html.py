"""The run report as one self-contained HTML page: inline CSS and SVG, no script, no network.

Pure: :func:`render_html` turns records into a string. Everything that comes from a run
(node names, reasons, log lines) is escaped, since logs can hold any text.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from ..aws.status import JobState
from .colours import COLOURS, RETRY_COLOUR
from .cost import CostEstimate, significant
from .gantt import FAILED, QUEUED, RUNNING, Bar, gantt_bars, time_unit
from .model import JobRow, summarize

LABEL_W, CHART_W, ROW_H, BAR_H, AXIS_H = 300, 820, 20, 12, 28

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2330;
       margin: 24px 32px; max-width: 1200px; }
h1 { font-size: 22px; margin: 0 0 2px; } h2 { font-size: 17px; margin: 28px 0 8px; }
.sub { color: #5a6272; margin: 0 0 16px; word-break: break-all; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; }
.card { border: 1px solid #d8dce3; border-radius: 6px; padding: 8px 14px; min-width: 110px; }
.card b { display: block; font-size: 18px; } .card span { color: #5a6272; font-size: 12px; }
.bad { color: #b42323; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border-bottom: 1px solid #e3e6eb; padding: 3px 8px; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
th { background: #f3f5f8; position: sticky; top: 0; }
.legend span { display: inline-block; margin-right: 16px; }
.legend i { display: inline-block; width: 14px; height: 10px; margin-right: 5px;
            vertical-align: middle; }
pre { background: #f6f7f9; border: 1px solid #e3e6eb; padding: 8px; overflow-x: auto;
      font-size: 12px; max-height: 420px; }
.note { color: #5a6272; font-size: 12px; }
svg text { font: 11px system-ui, sans-serif; fill: #1d2330; }
"""


def _nice_step(span: float, ticks: int = 8) -> float:
    """A round tick step (1, 2 or 5 times a power of ten) giving about ``ticks`` ticks."""
    raw = max(span, 1e-3) / ticks
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def format_seconds(seconds: float | None) -> str:
    """``42.0 s``, ``3.5 min`` or ``2.10 h``."""
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def _short(text: str, width: int = 46) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1):]


def gantt_svg(bars: Sequence[Bar]) -> str:
    """The Gantt chart: one row per job, queue waits and runs in two colours, retries marked."""
    end = max((seg.end_s for bar in bars for seg in bar.segments), default=0.0) or 1.0
    unit, unit_s = time_unit(end)
    step = _nice_step(end / unit_s) * unit_s
    end = math.ceil(end / step) * step
    scale = CHART_W / end
    height = AXIS_H + ROW_H * max(len(bars), 1) + 8
    width = LABEL_W + CHART_W + 20
    out = [f'<svg id="gantt" xmlns="http://www.w3.org/2000/svg" width="{width}" '
           f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
           f'aria-label="Gantt chart of {len(bars)} jobs">']
    for i in range(round(end / step) + 1):
        x = LABEL_W + i * step * scale
        out.append(f'<line x1="{x:.1f}" y1="{AXIS_H - 6}" x2="{x:.1f}" y2="{height - 8}" '
                   'stroke="#e3e6eb"/>')
        out.append(f'<text x="{x:.1f}" y="{AXIS_H - 10}" text-anchor="middle">'
                   f"{round(i * step / unit_s, 6):g} {unit}</text>")
    for index, bar in enumerate(bars):
        y = AXIS_H + index * ROW_H
        row = bar.row
        if index % 2:
            out.append(f'<rect x="0" y="{y}" width="{width}" height="{ROW_H}" fill="#f7f8fa"/>')
        out.append(f'<text x="{LABEL_W - 8}" y="{y + ROW_H / 2 + 4:.1f}" text-anchor="end">'
                   f'<title>{escape(row.node)} ({escape(row.job_id)})'
                   f'{escape("".join(chr(10) + node for node in row.nodes))}</title>'
                   f'{escape(_short(row.node))}</text>')
        top = y + (ROW_H - BAR_H) / 2
        for seg in bar.segments:
            x = LABEL_W + seg.start_s * scale
            w = max((seg.end_s - seg.start_s) * scale, 1.5)  # a sub-pixel job stays visible
            out.append(f'<rect class="bar {seg.kind}" x="{x:.1f}" y="{top:.1f}" width="{w:.1f}" '
                       f'height="{BAR_H}" fill="{COLOURS[seg.kind]}"><title>'
                       f'{escape(row.node)}: {escape(seg.label)}</title></rect>')
        for at in bar.retries_at_s:
            x = LABEL_W + at * scale
            out.append(f'<path class="retry" d="M{x - 5:.1f},{top - 4:.1f} h10 l-5,7 z" '
                       f'fill="{RETRY_COLOUR}"><title>{escape(row.node)}: retried, attempt '
                       f'started at {escape(format_seconds(at))}</title></path>')
    out.append("</svg>")
    return "\n".join(out)


def _legend() -> str:
    items = [(COLOURS[QUEUED], "waiting in the queue"), (COLOURS[RUNNING], "running"),
             (COLOURS[FAILED], "attempt that failed")]
    spans = "".join(f'<span><i style="background:{c}"></i>{escape(t)}</span>' for c, t in items)
    return (f'<p class="legend">{spans}<span><b style="color:{RETRY_COLOUR}">▼</b> retry '
            "(a new attempt of the same job)</span></p>")


def _card(value: str, label: str, bad: bool = False) -> str:
    return (f'<div class="card"><b{" class=bad" if bad else ""}>{escape(value)}</b>'
            f"<span>{escape(label)}</span></div>")


def _state(row: JobRow) -> str:
    if row.node_failed and row.state == JobState.SUCCEEDED:
        return "FAILED (node raised)"
    return row.state


def _nodes_table(rows: Sequence[JobRow], cost: CostEstimate) -> str:
    head = ("Node", "Job", "State", "Attempts", "vCPUs", "Memory (MiB)", "Peak memory (MiB)",
            "Queued", "Ran", "vCPU-h", "GB-h", f"Cost ({cost.prices.currency})")
    lines = ["<table><thead><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead>"
             "<tbody>"]
    for row, job in zip(rows, cost.jobs, strict=True):
        peak = f"{row.peak_memory_mb:.0f}" if row.peak_memory_mb is not None else "-"
        attempts = f"{len(row.attempts)}/{row.attempts_allowed}"
        cells = [
            (escape(row.node), ""), (escape(row.job_id), ""),
            (escape(_state(row)), ' class="bad"' if row.failed else ""),
            (attempts + (" ▼ retried" if row.retried else ""), ' class="n"'),
            (f"{row.vcpus:g}", ' class="n"'), (str(row.memory_mb), ' class="n"'),
            (peak, ' class="n"'),
            (escape(format_seconds(row.queued_s)), ' class="n"'),
            (escape(format_seconds(row.running_s)), ' class="n"'),
            (significant(job.vcpu_hours), ' class="n"'), (significant(job.gb_hours), ' class="n"'),
            (significant(cost.charged(job)), ' class="n"'),
        ]
        lines.append("<tr>" + "".join(f"<td{attr}>{text}</td>" for text, attr in cells) + "</tr>")
    lines.append("</tbody></table>")
    return "\n".join(lines)


def _cost_section(cost: CostEstimate, rows: Sequence[JobRow] | None = None) -> str:
    p = cost.prices
    capacity = "Spot" if p.spot else "on demand"
    per_subject = ""
    if rows and cost.subject_count(rows) > 1:
        cells = "".join(f"<tr><td>{escape(name)}</td><td class=\"n\">{jobs}</td>"
                        f"<td class=\"n\">{significant(amount)}</td></tr>"
                        for name, jobs, amount in cost.by_subject(rows))
        per_subject = (f"<table><tr><th>Subject (outermost iterable)</th><th>Jobs</th>"
                       f"<th>Cost ({escape(p.currency)})</th></tr>{cells}</table>")
    return "\n".join([
        f"<p><b>{escape(p.currency)} {significant(cost.total)}</b> ({capacity}, "
        f"{escape(p.platform)}, {escape(p.region)}): {significant(cost.vcpu_hours)} vCPU-hours "
        f"&times; {p.vcpu_hour} + {significant(cost.gb_hours)} GB-hours &times; {p.gb_hour} = "
        f"{significant(cost.on_demand)} on demand; {significant(cost.on_spot)} on Spot at an "
        f"assumed {p.spot_discount:.0%} discount.</p>",
        '<p class="note">Each attempt is billed for the vCPUs and memory its job asked for over '
        "the seconds its container ran"
        + (f" (at least {p.minimum_s:g} s)" if p.minimum_s else "") + "; queue time is free. "
        "Not counted: S3, data transfer, CloudWatch Logs, the driver. "
        f"{escape(p.note)}</p>",
        f'<p class="note">Prices of {escape(p.as_of)}: {escape(p.source)} Override them with '
        "<code>nipype-batch report WORK_DIR --prices my_prices.json</code>.</p>",
        per_subject,
    ])


def _failures(rows: Sequence[JobRow], log_tails: Mapping[str, Sequence[str]]) -> str:
    failed = [row for row in rows if row.failed]
    if not failed:
        return "<p>None: every job succeeded.</p>"
    parts = []
    for row in failed:
        why = row.reason or ("the node raised" if row.node_failed else "no reason given")
        tail = list(log_tails.get(row.job_id) or [])
        body = (f"<pre>{escape(chr(10).join(tail))}</pre>" if tail else
                '<p class="note">No log tail here: see <code>nipype-batch logs '
                f"{escape(row.job_id)}</code>.</p>")
        parts.append(
            f'<details open class="failure"><summary><b>{escape(row.node)}</b> — job '
            f"{escape(row.job_id)} {escape(_state(row))}: {escape(why)} ("
            + (f"exit code {row.exit_code}, " if row.exit_code is not None else "")
            + f"{len(row.attempts)} attempt(s), log stream {escape(str(row.log_stream))})"
            f"</summary>{body}</details>"
        )
    return "\n".join(parts)


def _forecast_section(forecast: Mapping[str, Any], rows: Sequence[JobRow], cost: CostEstimate,
                      makespan_s: float | None) -> str:
    """The forecast made for this workflow beside what the run did."""
    subjects = cost.subject_count(rows) or None
    span = forecast.get("makespan_s") or {}
    p = cost.prices
    platform = f"{p.platform}{' Spot' if p.spot else ''}"
    items = [
        ("Subjects", str(forecast.get("subjects") or "-"), str(subjects or "-"), None),
        ("Platform", str(forecast.get("platform")), platform, None),
        ("Jobs (array children counted)", str(forecast.get("job_runs")),
         str(len({row.job_id for row in rows})), None),
        ("Makespan", f"{format_seconds(span.get('median'))} ({format_seconds(span.get('low'))}"
                     f" - {format_seconds(span.get('high'))})", format_seconds(makespan_s),
         (span.get("median"), makespan_s)),
        ("vCPU-hours", significant(forecast.get("vcpu_hours") or 0.0),
         significant(cost.vcpu_hours), (forecast.get("vcpu_hours"), cost.vcpu_hours)),
        ("GB-hours", significant(forecast.get("gb_hours") or 0.0), significant(cost.gb_hours),
         (forecast.get("gb_hours"), cost.gb_hours)),
        (f"Cost ({p.currency})", significant(forecast.get("cost") or 0.0),
         significant(cost.total), (forecast.get("cost"), cost.total)),
    ]
    cells = []
    for label, said, did, pair in items:
        ratio = (f"{pair[0] / pair[1]:.2f}" if pair and pair[0] is not None and pair[1]
                 else "")
        cells.append(f"<tr><td>{escape(label)}</td><td class=\"n\">{escape(said)}</td>"
                     f"<td class=\"n\">{escape(did)}</td><td class=\"n\">{ratio}</td></tr>")
    return (f"<table><tr><th></th><th>Forecast</th><th>This run</th><th>Forecast / run</th>"
            f"</tr>{''.join(cells)}</table>"
            '<p class="note">The latest <code>nipype-batch forecast</code> made for this '
            "workflow (for as many subjects, where one was): the makespan here runs from the "
            "first submission to the last job's end.</p>")


def render_html(
    rows: Sequence[JobRow],
    cost: CostEstimate,
    log_tails: Mapping[str, Sequence[str]],
    title: str,
    forecast: Mapping[str, Any] | None = None,
) -> str:
    """The whole report page.

    Parameters
    ----------
    rows : the run's jobs (:func:`~nipype_batch.report.collect.collect_jobs`)
    cost : their cost estimate
    log_tails : job id -> last log lines, shown for failed jobs
    title : what the run is (its work directory)
    forecast : the forecast made for this workflow (``Forecast.to_json()``), if one was
    """
    summary = summarize(list(rows))
    cards = "".join([
        _card(str(summary.jobs), "jobs"),
        _card(str(summary.failed), "failed", bad=summary.failed > 0),
        _card(str(summary.retried), "retried"),
        _card(format_seconds(summary.makespan_s), "first submission to last end"),
        _card(format_seconds(summary.running_s), "containers ran, in total"),
        _card(format_seconds(summary.queued_s), "waited in queues, in total"),
        _card(f"{cost.prices.currency} {significant(cost.total)}", "estimated cost"),
    ])
    generated = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    chart = gantt_svg(gantt_bars(rows)) if rows else "<p>No job ran under this directory.</p>"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>nipype-batch run report: {escape(title)}</title>
<style>{CSS}</style>
</head>
<body>
<h1>nipype-batch run report</h1>
<p class="sub">{escape(title)} — written {escape(generated)}</p>
<div class="cards">{cards}</div>
<h2>Jobs over time</h2>
{_legend()}
<div class="chart">{chart}</div>
<p class="note">Times from AWS Batch: submission (createdAt), each attempt's start (startedAt)
and end (stoppedAt). An emulator may start the clock before the container does, showing
almost no queue wait.</p>
<h2>Estimated cost</h2>
{_cost_section(cost, list(rows))}
{"<h2>Forecast and this run</h2>" + _forecast_section(forecast, rows, cost, summary.makespan_s)
 if forecast else ""}
<h2>Nodes</h2>
{_nodes_table(rows, cost)}
<p class="note">Peak memory is shown where it was measured: by the runner, or by Nipype's
resource monitor (<code>execution.resource_monitor = true</code>).</p>
<h2>Failures</h2>
{_failures(rows, log_tails)}
</body>
</html>
"""
