"""Workflows as the field writes them run unchanged: Nipype's own DIPY interfaces over a BIDS
tree (their packages imported lazily), a CommandLine tool in its own base image with paths
inside ``args``, and a node whose module imports what no trace can see.

Every AWSBatch run is compared with Nipype's Linear run of the same workflow.
"""

from __future__ import annotations

import importlib.util
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from nipype import DataSink, Function, Node, SelectFiles, Workflow
from nipype.interfaces.base import CommandLine
from nipype.interfaces.dipy import DTI, Denoise
from nipype.interfaces.io import S3DataGrabber
from nipype.interfaces.utility import IdentityInterface

from examples.dmri_workflow.make_data import make_dataset
from nipype_batch import BatchPlugin
from nipype_batch.errors import ConfigurationError
from nipype_batch.images.build import DEFAULT_BASE_IMAGE
from nipype_batch.images.load_check import check_nodes_load
from nipype_batch.runner import point_sdks_at
from tests.helpers import assert_same_tree

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.docker

BIDS = {"dwi": "sub-{subject}/dwi/sub-{subject}_dwi.nii.gz",
        "bval": "sub-{subject}/dwi/sub-{subject}_dwi.bval",
        "bvec": "sub-{subject}/dwi/sub-{subject}_dwi.bvec"}


def _dipy_study(bids: Path, out: Path, base: Path) -> Workflow:
    """SelectFiles over BIDS -> Nipype's dipy.Denoise -> dipy.DTI -> DataSink, per subject."""
    wf = Workflow(name="dipy_study", base_dir=str(base))
    subjects = Node(IdentityInterface(fields=["subject"]), name="subjects")
    subjects.iterables = ("subject", ["01", "02"])
    select = Node(SelectFiles(BIDS, base_directory=str(bids)), name="select")
    denoise = Node(Denoise(snr=20.0, block_radius=2), name="denoise")
    tensor = Node(DTI(), name="tensor")
    sink = Node(DataSink(base_directory=str(out)), name="sink")
    wf.connect([
        (subjects, select, [("subject", "subject")]),
        (select, denoise, [("dwi", "in_file")]),
        (denoise, tensor, [("out_file", "in_file")]),
        (select, tensor, [("bval", "in_bval"), ("bvec", "in_bvec")]),
        (tensor, sink, [("fa_file", "dti.@fa"), ("md_file", "dti.@md")]),
        (denoise, sink, [("out_file", "denoised")]),
    ])
    return wf


def test_nipype_dipy_interfaces_over_bids(tmp_path, local_args):
    """dipy is imported inside Nipype's _run_interface: traced into the image all the same.

    DIPY's nlmeans runs one OpenMP thread per core, and with more than one thread two runs
    differ by tens of intensity units in about 1% of voxels; OpenMP reads its thread count
    once per process, so both runs pin it through the environment: Linear in a process of
    its own, the jobs through ``environment``. Outputs are then byte-identical.
    """
    bids = tmp_path / "bids"
    make_dataset(bids, 2, shape=(20, 20, 8))
    linear = (f"from tests.test_existing_workflows import _dipy_study; from pathlib import Path; "
              f"_dipy_study(Path({str(bids)!r}), Path({str(tmp_path / 'linear-out')!r}), "
              f"Path({str(tmp_path / 'linear')!r})).run(plugin='Linear')")
    subprocess.run([sys.executable, "-c", linear], cwd=ROOT, check=True, capture_output=True,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    args = {**local_args, "environment": {"OMP_NUM_THREADS": "1"}}
    plugin = BatchPlugin(args)
    _dipy_study(bids, tmp_path / "batch-out", tmp_path / "batch").run(plugin=plugin)
    assert len(plugin.submitted_job_ids) == 2  # denoise and tensor: one job per subject
    assert assert_same_tree(tmp_path / "linear-out", tmp_path / "batch-out") == 6

    rerun = BatchPlugin(args)
    _dipy_study(bids, tmp_path / "batch-out", tmp_path / "batch").run(plugin=rerun)
    assert rerun.submitted_job_ids == []


# A command-line tool as a lab packages it: a script in its own image, not on PyPI.
TOOL = textwrap.dedent("""\
    #!/bin/sh
    # bvalstat -i BVAL [-r REF] -o OUT: count the b-values (and the reference's words) into OUT
    while [ $# -gt 0 ]; do
      case "$1" in
        -i) in="$2"; shift 2;;
        --ref=*) ref="${1#--ref=}"; shift;;
        -o) out="$2"; shift 2;;
        *) echo "bvalstat: unknown option $1" >&2; exit 2;;
      esac
    done
    n=$(wc -w < "$in") || exit 1
    if [ -n "$ref" ]; then r=$(wc -w < "$ref") || exit 1; else r=0; fi
    echo "bvalues $n reference $r" > "$out"
    echo "$n" > counted.txt
    """)


@pytest.fixture(scope="module")
def tool_image(local_stack, tmp_path_factory):
    """A base image of our own with the tool in it, built FROM the default base."""
    ctx = tmp_path_factory.mktemp("tool-image")
    (ctx / "bvalstat").write_text(TOOL)
    (ctx / "Dockerfile").write_text(
        f"FROM {DEFAULT_BASE_IMAGE}\nCOPY bvalstat /usr/local/bin/bvalstat\n"
        "RUN chmod 755 /usr/local/bin/bvalstat\n")
    ref = "nipype-batch-test-tool:bvalstat"
    subprocess.run(["docker", "build", "-q", "--network", "none", "-t", ref, str(ctx)],
                   check=True, capture_output=True)
    tool_bin = tmp_path_factory.mktemp("tool-bin")
    script = tool_bin / "bvalstat"
    script.write_text(TOOL)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return ref, str(tool_bin)


def _tool_workflow(base: Path, bids: Path, out_dir: Path, image: str | None) -> Workflow:
    wf = Workflow(name="tool", base_dir=str(base))
    bval = bids / "sub-01" / "dwi" / "sub-01_dwi.bval"
    ref = bids / "my study" / "ref.txt"  # a path with a space, quoted
    count = Node(CommandLine(
        command="bvalstat",
        args=f"-i {bval} --ref=\"{ref}\" -o {out_dir / 'sub-01_bvalstat.txt'}",
        terminal_output="allatonce"), name="count")
    if image:
        count.plugin_args = {"base_image": image}
    wf.add_nodes([count])
    return wf


def test_command_line_paths_inside_args(tmp_path, local_args, tool_image, monkeypatch):
    """Input paths inside ``args`` are staged; an output path inside them comes back."""
    image, tool_bin = tool_image
    bids = tmp_path / "bids"
    (bids / "sub-01" / "dwi").mkdir(parents=True)
    (bids / "sub-01" / "dwi" / "sub-01_dwi.bval").write_text("0 1000 1000 2000\n")
    (bids / "my study").mkdir()
    (bids / "my study" / "ref.txt").write_text("one two three\n")
    for run in ("linear", "batch"):
        (tmp_path / f"{run}-out").mkdir()

    monkeypatch.setenv("PATH", f"{tool_bin}{os.pathsep}{os.environ['PATH']}")
    _tool_workflow(tmp_path / "linear", bids, tmp_path / "linear-out", None).run(plugin="Linear")
    plugin = BatchPlugin(local_args)
    _tool_workflow(tmp_path / "batch", bids, tmp_path / "batch-out", image).run(plugin=plugin)

    assert len(plugin.submitted_job_ids) == 1
    made = (tmp_path / "batch-out" / "sub-01_bvalstat.txt").read_text()
    assert made == "bvalues 4 reference 3\n"
    assert_same_tree(tmp_path / "linear-out", tmp_path / "batch-out")
    assert (tmp_path / "batch" / "tool" / "count" / "counted.txt").read_text() == "4\n"


DYNAMIC_MODULE = textwrap.dedent('''\
    """Interfaces of a lab: one loads a plugin package by name, which no trace can see."""
    import importlib

    from nipype.interfaces.base import BaseInterface, BaseInterfaceInputSpec, TraitedSpec

    plugins = importlib.import_module("pluggy")


    class Noop(BaseInterface):
        input_spec = BaseInterfaceInputSpec
        output_spec = TraitedSpec

        def _run_interface(self, runtime):
            return runtime

        def _list_outputs(self):
            return {}
    ''')


def test_a_node_that_cannot_load_in_its_image_is_refused_before_submitting(
        tmp_path, local_args, local_stack, monkeypatch):
    lab = tmp_path / "labcode"
    lab.mkdir()
    (lab / "dyn_interfaces.py").write_text(DYNAMIC_MODULE)
    monkeypatch.syspath_prepend(str(lab))
    monkeypatch.delitem(sys.modules, "dyn_interfaces", raising=False)
    from dyn_interfaces import Noop

    def workflow() -> Workflow:
        wf = Workflow(name="dynamic", base_dir=str(tmp_path / "work"))
        wf.add_nodes([Node(Noop(), name="noop")])
        return wf

    plugin = BatchPlugin(local_args)
    with pytest.raises(ConfigurationError, match=r"node 'dynamic.noop' cannot be loaded in its "
                       r"job image .*No module named 'pluggy'.*'packages': \['pluggy'\]"):
        workflow().run(plugin=plugin)
    assert plugin.submitted_job_ids == []

    fixed = BatchPlugin({**local_args, "packages": ["pluggy"]})
    workflow().run(plugin=fixed)
    assert len(fixed.submitted_job_ids) == 1
    # verified once per image: the next run starts no container to check again
    image = fixed.published_images[0]
    assert check_nodes_load(local_stack.docker, image.ref, [Node(Noop(), name="noop")]) == 0


def _count_words(in_file):
    import os

    out = os.path.abspath("counts.txt")
    with open(in_file) as src, open(out, "w") as dst:
        dst.write(f"{len(src.read().split())}\n")
    return out


def _s3_study(base: Path, raw: Path, sink_uri: str) -> Workflow:
    """Nipype's S3 I/O as a lab writes it: S3DataGrabber in, DataSink to ``s3://`` out."""
    wf = Workflow(name="s3_study", base_dir=str(base))
    grab = Node(S3DataGrabber(infields=["subject"], outfields=["anat"]), name="grab")
    grab.inputs.bucket = "study-raw"
    grab.inputs.bucket_path = "bids/"
    grab.inputs.local_directory = str(raw)
    grab.inputs.template = "%s/anat/%s_T1w.txt"
    grab.inputs.template_args = {"anat": [["subject", "subject"]]}
    grab.inputs.sort_filelist = True
    grab.inputs.subject = "sub-01"
    count = Node(Function(input_names=["in_file"], output_names=["out"],
                          function=_count_words), name="count")
    sink = Node(DataSink(base_directory=sink_uri, parameterization=False), name="sink")
    wf.connect([(grab, count, [("anat", "in_file")]), (count, sink, [("out", "counts")])])
    return wf


@pytest.mark.skipif(importlib.util.find_spec("boto") is None,
                    reason="S3DataGrabber needs legacy boto (Python < 3.12)")
def test_nipype_s3_io_runs_in_jobs(tmp_path, local_args, local_stack, monkeypatch):
    """S3DataGrabber (legacy boto) and a DataSink to s3:// (boto3) reach the emulator from
    jobs, as they reach AWS from jobs on the aws backend."""
    s3 = local_stack.client("s3")
    for bucket in ("study-raw", "study-derivatives"):
        local_stack.ensure_bucket(bucket)
    s3.put_object(Bucket="study-raw", Key="bids/sub-01/anat/sub-01_T1w.txt",
                  Body=b"a phantom head of five words\n")
    # Linear runs here: point this process's SDKs at the emulator as the runner does in jobs.
    for name, value in local_stack.job_environment().items():
        monkeypatch.setenv(name, value)
    pointed: dict[str, str] = {}
    point_sdks_at(local_stack.endpoint_url, str(tmp_path), pointed)
    for name, value in pointed.items():  # undone after the test: later tests use moto
        monkeypatch.setenv(name, value)
    for run in ("linear", "batch"):
        (tmp_path / f"{run}-raw").mkdir()
    _s3_study(tmp_path / "linear", tmp_path / "linear-raw",
              "s3://study-derivatives/linear").run(plugin="Linear")

    plugin = BatchPlugin(local_args)
    _s3_study(tmp_path / "batch", tmp_path / "batch-raw",
              "s3://study-derivatives/batch").run(plugin=plugin)
    # the grabber, the count and the sink run in jobs: one chain, one job
    assert len(plugin.submitted_job_ids) == 1
    for run in ("linear", "batch"):
        body = s3.get_object(Bucket="study-derivatives", Key=f"{run}/counts/counts.txt")["Body"]
        assert body.read() == b"6\n"
    assert (tmp_path / "batch-raw" / "sub-01" / "anat" / "sub-01_T1w.txt").exists()
