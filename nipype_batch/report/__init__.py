"""The run report: what a run's jobs did and cost, as an HTML page and a PNG Gantt chart.

Modules, each importing only those above it in this list:

- :mod:`.model`: the records, :class:`~.model.JobRow` (one node's job) and its attempts, and
  the totals over a run;
- :mod:`.gantt`: the chart's geometry (a bar per job: queue waits, attempts);
- :mod:`.cost`: prices (``prices.json``) and the one rule for what an attempt costs;
- :mod:`.collect`: the records read back from a work directory's node directories (no AWS);
- :mod:`.colours`: the colours the two renderers share;
- :mod:`.html`, :mod:`.png`: the renderers (the PNG needs matplotlib);
- :mod:`.write`: :func:`write_report`, which writes both files next to the workflow.
"""

from .collect import collect_jobs
from .write import ReportPaths, write_report

__all__ = ["ReportPaths", "collect_jobs", "write_report"]
