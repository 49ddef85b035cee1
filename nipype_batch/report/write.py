"""Writing the run report: the HTML page (:mod:`.html`) and the PNG chart (:mod:`.png`) of a
run's jobs (:mod:`.collect`), with their estimated cost (:mod:`.cost`), next to the workflow.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .collect import collect_jobs, crash_traceback
from .cost import DEFAULT_PRICES, CostEstimate, Prices, estimate, load_prices
from .gantt import gantt_bars
from .html import render_html
from .model import JobRow

log = logging.getLogger(__name__)

HTML_NAME = "nipype_batch_report.html"
PNG_NAME = "nipype_batch_report.png"
PNG_MAX_JOBS = 500


@dataclass(frozen=True)
class ReportPaths:
    """What :func:`write_report` wrote, and the cost it estimated."""

    html: Path
    png: Path | None  # None when matplotlib is not installed
    cost: CostEstimate
    jobs: int


def forecast_for_run(rows: Sequence[JobRow], cost: CostEstimate) -> dict | None:
    """The latest forecast made for the run's workflow (the top folder of its nodes), for as
    many subjects if there is one; None if none was made (or the history cannot be read)."""
    names = {row.node.split("/")[0] for row in rows}
    if len(names) != 1:
        return None
    subjects = cost.subject_count(rows) or None
    try:
        from ..history import RunHistory

        return RunHistory().forecast_for(names.pop(), subjects)
    except Exception:  # the report never fails for a forecast
        return None


def write_report(
    work_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    prices: Prices | str | os.PathLike[str] | None = None,
    log_tails: Mapping[str, Sequence[str]] | None = None,
    *,
    platform: str | None = None,
    spot: bool = False,
    architecture: str = "x86_64",
    title: str | None = None,
) -> ReportPaths:
    """Write ``nipype_batch_report.html`` (and ``.png``, the Gantt chart) for a run.

    Parameters
    ----------
    work_dir : path
        The workflow's ``base_dir``: every ``_nipype_batch.json`` below it is reported.
    out_dir : path, optional
        Where to write; ``work_dir`` by default, next to the workflow.
    prices : Prices or path, optional
        :class:`~nipype_batch.report.cost.Prices`, or a JSON file overriding the packaged prices.
    log_tails : mapping, optional
        Job id -> last log lines, shown under each failed job. Without one, a failed node's
        remote traceback (from its ``crashstore.pklz``) is shown.
    platform, spot, architecture :
        Where the jobs ran, when ``prices`` is not a :class:`Prices` (EC2 on demand, x86, by
        default).
    title : str, optional
        The page's heading (the work directory by default).
    """
    rows = collect_jobs(work_dir)
    if not isinstance(prices, Prices):
        prices = load_prices(platform or DEFAULT_PRICES, spot=spot, override=prices,
                             architecture=architecture)
    cost = estimate(rows, prices)
    tails = {job_id: list(lines) for job_id, lines in (log_tails or {}).items()}
    for row in rows:
        if row.failed and row.job_id not in tails:
            tails[row.job_id] = crash_traceback(row.node_dir)
    out = Path(out_dir or work_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    html_path = out / HTML_NAME
    html_path.write_text(render_html(rows, cost, tails, title or str(Path(work_dir).resolve()),
                                     forecast=forecast_for_run(rows, cost)),
                         encoding="utf-8")
    png_path: Path | None = out / PNG_NAME
    if len(rows) > PNG_MAX_JOBS:
        # a bar per job stops being readable long before this, and matplotlib takes ~10 ms
        # per bar: a 10,000-job run would wait minutes for a picture nobody can read
        log.info("No PNG chart for %d jobs (more than %d); the HTML page has every job",
                 len(rows), PNG_MAX_JOBS)
        png_path = None
    else:
        try:
            from .png import render_png
        except ImportError as exc:
            log.warning("No PNG chart (%s): pip install 'nipype-batch[report]'", exc)
            png_path = None
        else:
            render_png(gantt_bars(rows), png_path)
    log.info("Run report: %s (%d jobs; %s)", html_path, len(rows), cost.summary())
    return ReportPaths(html=html_path, png=png_path, cost=cost, jobs=len(rows))
