"""Progress: plain lines when not a terminal, a live panel in one, nothing when off."""

from __future__ import annotations

import io
import logging

import pytest

from nipype_batch.progress import Progress, Snapshot


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_not_a_terminal_gets_plain_lines_only_when_counts_change(caplog):
    stream = io.StringIO()
    progress = Progress("auto", stream=stream)
    assert progress.mode == "lines"
    with caplog.at_level(logging.INFO, logger="nipype_batch"):
        progress.update({"waiting": 3, "submitted": 2}, {"RUNNING": 1, "RUNNABLE": 1})
        progress.update({"waiting": 3, "submitted": 2}, {"RUNNING": 1, "RUNNABLE": 1})
        progress.update({"waiting": 3, "done": 2}, {})
    progress.close()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "nodes: 3 waiting, 2 submitted, 0 done, 0 failed | AWS Batch jobs: 1 runnable, 1 running",
        "nodes: 3 waiting, 0 submitted, 2 done, 0 failed | AWS Batch jobs: none in flight",
    ]
    assert stream.getvalue() == ""  # lines go through logging, no escape codes anywhere
    assert not any("\x1b[" in line for line in lines)


def test_a_terminal_gets_a_live_panel(caplog):
    stream = _Terminal()
    progress = Progress("auto", stream=stream)
    assert progress.mode == "live"
    with caplog.at_level(logging.INFO, logger="nipype_batch"):
        progress.update({"waiting": 1, "submitted": 4}, {"RUNNING": 4})
        progress.close()
    assert "nodes submitted" in stream.getvalue() and "4 running" in stream.getvalue()
    assert not caplog.records


def test_off_shows_nothing(caplog):
    stream = _Terminal()
    progress = Progress("off", stream=stream)
    with caplog.at_level(logging.INFO, logger="nipype_batch"):
        progress.update({"waiting": 1}, {"RUNNING": 1})
    assert stream.getvalue() == "" and not caplog.records


def test_snapshot_keeps_stage_order_and_drops_empty_states():
    snap = Snapshot.of({"failed": 1, "waiting": 2}, {"FAILED": 0, "SUBMITTED": 5})
    assert snap.nodes == (("waiting", 2), ("submitted", 0), ("done", 0), ("failed", 1))
    assert snap.jobs == (("SUBMITTED", 5),)


@pytest.mark.parametrize("value", ["loud", 3])
def test_unknown_progress_mode_is_refused(value):
    from nipype_batch.errors import ConfigurationError
    from nipype_batch.settings import BatchSettings

    with pytest.raises(ConfigurationError, match=r"progress=.*must be 'auto', 'live', 'lines'"):
        BatchSettings.from_plugin_args({"progress": value})
