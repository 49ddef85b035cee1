"""The live view in a real terminal: a run under Debian's tmux, its screen read back.

One view redrawn in place while the run goes, no log line of Nipype's or ours on the screen
(they are in the run's log file), and at the end only the summary.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parent.parent
HEADER = re.compile(r"nipype-batch \d+:\d\d  \[")  # the view's first line
LOG_LINES = ("[Node] Setting-up", "Submitting:", "Pending[", "Submitted ", "[Job ",
             "Running in parallel", "settings: [")

SCRIPT = textwrap.dedent("""\
    import sys
    sys.path.insert(0, {root!r})
    import nipype_batch  # noqa: F401
    from examples.demo.workflow import build_workflow, make_inputs

    data = make_inputs({data!r})
    wf = build_workflow({work!r}, data, {out!r})
    wf.run(plugin="AWSBatch", plugin_args={{"backend": "local", "progress": "live"}})
    print("RUN-ENDED")
    """)


def _tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], check=True, capture_output=True, text=True).stdout


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs Debian's tmux")
def test_one_view_in_place_then_the_summary(tmp_path, local_stack):
    work = tmp_path / "work"
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(root=str(ROOT), data=str(tmp_path / "data"),
                                    work=str(work), out=str(tmp_path / "out")))
    session = f"nb-live-{tmp_path.name[-12:]}"
    _tmux("new-session", "-d", "-s", session, "-x", "160", "-y", "45",
          f"{sys.executable} {script}; sleep 600")
    try:
        screens = []
        deadline = time.monotonic() + 420
        while time.monotonic() < deadline:
            screen = _tmux("capture-pane", "-p", "-t", session)
            screens.append(screen)
            if "RUN-ENDED" in screen or "Traceback" in screen:
                break
            time.sleep(1)
        history = _tmux("capture-pane", "-p", "-S", "-", "-t", session)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False)

    assert "RUN-ENDED" in history, history[-3000:]
    during = [s for s in screens if HEADER.search(s)]
    assert during, "the view never showed"
    assert all(len(HEADER.findall(s)) == 1 for s in during), "the view was drawn twice"
    assert re.search(r" load +\[.*\] \d of 2", during[-1])  # a stage row
    # nothing but the view, then the summary: no log line of Nipype's or ours
    assert not [line for line in history.splitlines() if any(m in line for m in LOG_LINES)]
    assert not HEADER.search(history)  # the view leaves the screen at the end...
    summary = history[history.index("nipype-batch: "):]
    assert re.search(r"nipype-batch: \d+ of \d+ nodes done, 0 failed, 10 jobs submitted", summary)
    assert "report: " in summary and "estimated cost: USD " in summary
    log_file = work / "nipype_batch.log"
    assert f"the log of this run is {log_file}" in history
    text = log_file.read_text()
    assert "Setting-up" in text and "Submitted " in text
