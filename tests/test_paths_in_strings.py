"""Paths hidden inside string inputs (``args='-ref /data/tpl.nii.gz'``), found and staged."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from moto import mock_aws

from nipype_batch.aws.staging import StagedPath, Stager, paths_in_strings
from nipype_batch.driver.inputs import is_system_path


@pytest.mark.parametrize(("value", "expected"), [
    ("-R -s length /data/sub-01/dwi/sub-01_dwi.bval", {"/data/sub-01/dwi/sub-01_dwi.bval"}),
    ("-ref /data/tpl.nii.gz -dof 6", {"/data/tpl.nii.gz"}),
    ("--ref=/data/tpl.nii.gz", {"/data/tpl.nii.gz"}),
    ('-i "/data/my study/t1.nii" -o out.nii', {"/data/my study/t1.nii"}),
    ("-i '/data/my study/t1.nii'", {"/data/my study/t1.nii"}),
    (["-a /x/one.txt", {"k": "-b /x/two.txt"}], {"/x/one.txt", "/x/two.txt"}),
    ("-i /data//sub-01/../sub-02/t1.nii", {"/data/sub-02/t1.nii"}),
    ('unbalanced "quote /data/a.txt', {"/data/a.txt"}),
])
def test_paths_inside_command_lines_are_found(value, expected):
    assert paths_in_strings(value) == expected


@pytest.mark.parametrize("value", [
    "/data/whole/path.nii",  # a whole path: found by find_paths, not here
    str(Path(__file__)),  # an existing whole path, even with spaces in it
    "def f(x):\n    return open('/data/a.txt')\n",  # source code, not a command line
    "-s 3 -x / -o relative/out.nii",  # '/' alone and relative paths are not staged
    "no paths at all",
    42,
])
def test_whole_paths_source_text_and_plain_words_are_left_alone(value, tmp_path):
    assert paths_in_strings(value) == set()
    spaced = tmp_path / "my study" / "t1 w.nii"
    spaced.parent.mkdir()
    spaced.write_text("")
    assert paths_in_strings(str(spaced)) == set()


def test_system_and_python_paths_stay_in_the_image():
    assert is_system_path("/usr/share/fsl/data/standard/MNI152_T1_2mm.nii.gz")
    assert is_system_path("/etc/passwd")
    assert is_system_path("/tmp")
    assert is_system_path(sys.prefix + "/lib/python3/x.py")
    assert not is_system_path("/data/tpl.nii.gz")
    assert not is_system_path("/tmp/study/tpl.nii.gz")
    assert not is_system_path("/home/me/study/sub-01.nii.gz")


@mock_aws
def test_an_empty_directory_is_made_where_the_job_runs(tmp_path: Path):
    """A Directory(exists=True) input may be empty (a download folder): it must exist in
    the job before the node is unpickled, though S3 holds nothing under it."""
    import boto3

    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="staging")
    empty = tmp_path / "downloads"
    empty.mkdir()
    Stager(s3, "staging").ensure_uploaded(str(empty))
    empty.rmdir()
    assert Stager(s3, "staging").download(StagedPath(str(empty), "dir")) == 0
    assert empty.is_dir()
