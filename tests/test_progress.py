"""Progress: plain lines off a terminal, one view redrawn in place in one, nothing when off;
and the run's log records kept in a file meanwhile."""

from __future__ import annotations

import io
import logging

import pytest
from rich.console import Console

from nipype_batch.driver.progress import Progress, Snapshot, StageRow, render
from nipype_batch.driver.run_log import RunLog


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _snapshot(done: int, jobs: dict[str, int], elapsed: float = 5.0) -> Snapshot:
    return Snapshot.of([StageRow("denoise", 4, done=done, running=1, queued=4 - done - 1),
                        StageRow("tensor", 4)], jobs, elapsed, "USD 0.0012")


def test_not_a_terminal_gets_one_plain_line_per_change_of_state():
    stream = io.StringIO()
    progress = Progress("auto", stream=stream)
    assert progress.mode == "lines"
    progress.update(_snapshot(1, {"RUNNING": 1, "RUNNABLE": 2}, elapsed=5))
    progress.update(_snapshot(1, {"RUNNING": 1, "RUNNABLE": 2}, elapsed=9))  # only time moved
    progress.update(_snapshot(2, {"RUNNING": 1, "RUNNABLE": 1}, elapsed=12))
    progress.close(["nipype-batch: 8 of 8 nodes done"])
    assert stream.getvalue().splitlines() == [
        "[ 12%] 1 of 8 nodes done, 1 running, 2 queued, 0 failed | AWS Batch jobs: 2 runnable,"
        " 1 running | 0:05 | est. USD 0.0012",
        "[ 25%] 2 of 8 nodes done, 1 running, 1 queued, 0 failed | AWS Batch jobs: 1 runnable,"
        " 1 running | 0:12 | est. USD 0.0012",
        "nipype-batch: 8 of 8 nodes done",
    ]
    assert "\x1b[" not in stream.getvalue()


def test_a_terminal_gets_a_view_and_then_only_the_summary():
    stream = _Terminal()
    progress = Progress("auto", stream=stream)
    assert progress.mode == "live"
    progress.update(_snapshot(1, {"RUNNING": 1}))
    progress.close(["nipype-batch: summary line"])
    out = stream.getvalue()
    assert "denoise" in out and "[ 25%] 1 of 4" in out
    assert out.rstrip().endswith("nipype-batch: summary line")


def test_off_shows_nothing():
    stream = _Terminal()
    progress = Progress("off", stream=stream)
    progress.update(_snapshot(1, {"RUNNING": 1}))
    progress.close(["summary"])
    assert stream.getvalue() == ""


def test_the_view_fits_80_columns_and_folds_finished_stages():
    stages = [StageRow(f"stage_{i:03d}_with_a_rather_long_name", 10, done=10) for i in range(195)]
    stages += [StageRow(f"busy{i}", 10, done=3, running=2, queued=5) for i in range(5)]
    console = Console(width=80, record=True, file=io.StringIO())
    console.print(render(Snapshot.of(stages, {"RUNNING": 10, "RUNNABLE": 25}, 3725.0)))
    text = console.export_text()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert len(lines) < 15
    assert "... and 195 finished stages (1950 nodes)" in text
    assert "1:02:05" in lines[0] and "[ 98%] 1965 of 2000 nodes" in lines[0]


def test_snapshot_drops_empty_batch_states_and_keeps_their_order():
    snap = Snapshot.of([], {"FAILED": 0, "RUNNING": 2, "SUBMITTED": 5})
    assert snap.jobs == (("SUBMITTED", 5), ("RUNNING", 2))


def test_run_log_sends_records_to_a_file_and_warnings_to_the_view(tmp_path):
    shown: list[str] = []
    nipype_logger = logging.getLogger("nipype.workflow")
    before = list(logging.getLogger("nipype").handlers)
    run_log = RunLog(str(tmp_path / "run.log"), shown.append, live=True)
    try:
        nipype_logger.info("[Node] Setting-up 'wf.denoise'")
        logging.getLogger("nipype_batch").warning("a job was retried")
    finally:
        run_log.restore()
    text = (tmp_path / "run.log").read_text()
    assert "Setting-up" in text and "a job was retried" in text
    assert shown == ["WARNING nipype_batch: a job was retried"]
    assert logging.getLogger("nipype").handlers == before


@pytest.mark.parametrize("value", ["loud", 3])
def test_unknown_progress_mode_is_refused(value):
    from nipype_batch.errors import ConfigurationError
    from nipype_batch.settings import BatchSettings

    with pytest.raises(ConfigurationError, match=r"progress=.*must be 'auto', 'live', 'lines'"):
        BatchSettings.from_plugin_args({"progress": value})
