"""The driver's parts of one run, wired to each other once the run has nodes to submit."""

from __future__ import annotations

import tempfile
from typing import Any

from ..history import RunHistory, record_quietly
from ..journal import Journal
from ..settings import BatchSettings
from .collect import Collector
from .poll import JobsInFlight
from .resume import Resumer
from .submit import Submitter


class RunParts:
    """Submit, resume, poll and collect, sharing one journal and one set of jobs in flight.

    Until :meth:`wire` the run has no cloud: nothing is in flight, and the journal is a
    placeholder (a run of driver-only nodes never needs either).
    """

    def __init__(self, settings: BatchSettings) -> None:
        self.journal = Journal(tempfile.gettempdir())
        self.flight = JobsInFlight(None, settings, self.journal)
        self.submitter: Submitter | None = None
        self.resumer: Resumer | None = None
        self.collector: Collector | None = None

    def wire(self, cloud: Any, settings: BatchSettings, run_id: str, images: Any,
             base_dir: str | None) -> None:
        """Build the parts on ``cloud``; the journal lives under the workflow's base dir."""
        self.journal = Journal(base_dir or tempfile.gettempdir())
        self.flight = JobsInFlight(cloud.batch, settings, self.journal, cloud.stager)
        self.submitter = Submitter(cloud, settings, run_id, images.image_for, self.flight,
                                   base_dir)
        self.resumer = Resumer(cloud.batch, cloud.stager, settings, self.journal)
        self.collector = Collector(cloud.batch, cloud.stager, settings, run_id)

    @property
    def work_dir(self) -> str:
        """The directory the journal (and so the run report) belongs to."""
        return str(self.journal.directory.parent.parent)

    def record_history(self) -> int:
        """Add what this run's jobs measured to the run history (never fails the run)."""
        if self.collector is None or not self.collector.observations:
            return 0
        return record_quietly(RunHistory(), self.collector.observations)

    @property
    def log_tails(self) -> dict[str, list[str]]:
        return self.collector.log_tails if self.collector else {}
