"""The structure stays as written down: import-linter's contracts in pyproject.toml hold.

The layers (entry points over the Nipype glue, over the driver, the backends, the AWS seam
and the records everyone shares) and the layers inside each package are stated there; any
import from a lower layer into a higher one, at module level or inside a function, breaks them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from .conftest import ROOT


def test_the_import_contracts_hold():
    lint = shutil.which("lint-imports")
    assert lint, "import-linter is a test dependency: pip install -e '.[test]'"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, lint, "--no-cache"], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr
    assert "0 broken" in done.stdout
