"""The README's first command, as a new user runs it (after scripts/bootstrap.sh, which CI runs)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.docker


def _first_command() -> str:
    text = (ROOT / "README.md").read_text()
    block = text.split("```bash\n", 1)[1].split("```", 1)[0]
    first = block.splitlines()[0]
    assert first.startswith("scripts/bootstrap.sh && ")
    return first.removeprefix("scripts/bootstrap.sh && ")


def test_readme_first_command_runs_the_study(tmp_path, local_stack):
    # run from a copy of the command's relative paths: scripts from the checkout, data in tmp
    command = _first_command().replace("examples/", f"{ROOT}/examples/")
    done = subprocess.run(command, shell=True, cwd=tmp_path, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = tmp_path / "study" / "derivatives" / "group_model-tensor_regions.tsv"
    rows = table.read_text().splitlines()
    assert rows[0].startswith("participant_id\tregion") and len(rows) == 1 + 4 * 2
    assert "group table" in done.stdout
    fa = tmp_path / "study/derivatives/sub-04/dwi/sub-04_model-tensor_param-fa_dwimap.nii.gz"
    assert fa.exists()
