"""An arm64 (Graviton) run on an x86 machine: wheels, image and jobs for the queue's CPU.

The local stack runs the arm64 job containers emulated (qemu-user-static through binfmt_misc,
which `scripts/bootstrap.sh --arm64` sets up); the base image is made by containers/base-image.sh
with mmdebstrap for arm64. Minutes under emulation, so not in the default selection:
`python3 -m pytest -m arm64`.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from nipype import Function, Node, Workflow

from nipype_batch import BatchPlugin

pytestmark = [pytest.mark.docker, pytest.mark.arm64]

ARM64_BASE = "nipype-batch-base:bookworm-arm64"
EMULATION = "/proc/sys/fs/binfmt_misc/qemu-aarch64"


@pytest.fixture(scope="module")
def arm64_base(local_stack) -> str:
    if not os.path.exists(EMULATION):
        pytest.fail("no arm64 emulation here (qemu-user-static and binfmt_misc): "
                    "`scripts/bootstrap.sh --arm64` sets them up")
    root = Path(__file__).resolve().parent.parent
    subprocess.run([str(root / "containers" / "base-image.sh"), ARM64_BASE, "arm64"],
                   check=True, cwd=root)
    return ARM64_BASE


def _square_where(x):
    import platform

    return x * x, platform.machine()


def _workflow(base_dir) -> Workflow:
    wf = Workflow(name="graviton", base_dir=str(base_dir))
    node = Node(Function(input_names=["x"], output_names=["square", "machine"],
                         function=_square_where), name="square")
    node.inputs.x = 7
    wf.add_nodes([node])
    return wf


def test_an_arm64_run_builds_for_arm64_and_runs_there(tmp_path, local_args, local_stack,
                                                      arm64_base):
    [linear] = _workflow(tmp_path / "linear").run(plugin="Linear").nodes()
    plugin = BatchPlugin({**local_args, "architecture": "arm64", "base_image": arm64_base})
    [ran] = _workflow(tmp_path / "arm").run(plugin=plugin).nodes()
    assert ran.result.outputs.square == linear.result.outputs.square == 49
    assert ran.result.outputs.machine == "aarch64"  # the job ran on arm64 (emulated)
    [image] = plugin.images.published
    built = local_stack.docker.images.get(image.local_ref)
    assert built.attrs["Architecture"] == "arm64"
    # the x86 default base is refused for an arm64 queue, naming both
    refused = BatchPlugin({**local_args, "architecture": "arm64"})
    with pytest.raises(Exception, match=r"built for amd64, but the queue's instances are arm64"):
        _workflow(tmp_path / "refused").run(plugin=refused)
    assert refused.submitted_job_ids == []
