"""Stager against moto's S3: bytes, mtimes, skip logic, commit order and bookkeeping filters."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from moto import mock_aws

from nipype_batch.aws.session import ApiCallCounter
from nipype_batch.aws.staging import MTIME_META, StagedPath, Stager, find_paths
from nipype_batch.errors import StagingError
from nipype_batch.protocol import is_bookkeeping, is_result_file

REGION = "us-east-1"
BUCKET = "staging-bucket"
PREFIX = "runs/42"
# A distinctive mtime with nanoseconds that a float round trip would lose.
MTIME_NS = 1_600_000_000_123_456_789


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A boto3 S3 client on moto with the staging bucket created."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        client = boto3.client("s3", region_name=REGION)
        client.create_bucket(Bucket=BUCKET)
        yield client


@pytest.fixture
def stager(s3: Any) -> Stager:
    return Stager(s3, BUCKET, PREFIX)


class OperationLog:
    """Records (operation, Key) of every S3 call, in order, through botocore's event hooks."""

    def __init__(self, client: Any) -> None:
        self.calls: list[tuple[str, str | None]] = []
        client.meta.events.register("before-parameter-build.s3", self._record)

    def _record(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self.calls.append((model.name, params.get("Key")))

    def keys(self, operation: str) -> list[str | None]:
        return [key for name, key in self.calls if name == operation]


def write(path: Path, data: bytes, mtime_ns: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def local_tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def remote_keys(s3: Any) -> set[str]:
    listing = s3.list_objects_v2(Bucket=BUCKET)
    return {obj["Key"] for obj in listing.get("Contents", [])}


# ---- single files ------------------------------------------------------------------------


@pytest.mark.moto
def test_file_round_trip_keeps_bytes_and_mtime_ns(tmp_path: Path, stager: Stager, s3) -> None:
    data = bytes(range(256)) * 40
    path = write(tmp_path / "in" / "T1w.nii", data, MTIME_NS)

    stager.upload_file(str(path))
    head = s3.head_object(Bucket=BUCKET, Key=stager.key_for(str(path)))
    assert head["Metadata"] == {MTIME_META: str(MTIME_NS)}
    assert stager.bytes_up == len(data)

    path.unlink()
    assert stager.download(StagedPath(str(path), "file")) == 1
    assert path.read_bytes() == data
    assert path.stat().st_mtime_ns == MTIME_NS
    assert stager.bytes_down == len(data)
    assert not list(path.parent.glob("*.nbpart"))


@pytest.mark.moto
def test_ensure_uploaded_skips_unchanged_and_reuploads_changed(
    tmp_path: Path, stager: Stager, s3
) -> None:
    counter = ApiCallCounter()
    counter.attach(s3)
    path = write(tmp_path / "data.txt", b"first version", MTIME_NS)

    stager.ensure_uploaded(str(path))
    stager.ensure_uploaded(str(path))
    assert counter.counts["s3.PutObject"] == 1
    assert counter.counts["s3.CreateMultipartUpload"] == 0
    assert stager.bytes_up == len(b"first version")

    # A new Stager has no memory of the upload: it asks S3 (HeadObject) and still skips.
    fresh = Stager(s3, BUCKET, PREFIX)
    fresh.ensure_uploaded(str(path))
    assert counter.counts["s3.PutObject"] == 1
    assert counter.counts["s3.HeadObject"] >= 1
    assert fresh.bytes_up == 0

    # Same size, new mtime: uploaded again.
    os.utime(path, ns=(MTIME_NS + 1, MTIME_NS + 1))
    stager.ensure_uploaded(str(path))
    assert counter.counts["s3.PutObject"] == 2

    # New content: uploaded again, and S3 holds the new bytes.
    write(path, b"second, longer version", MTIME_NS + 2)
    stager.ensure_uploaded(str(path))
    assert counter.counts["s3.PutObject"] == 3
    body = s3.get_object(Bucket=BUCKET, Key=stager.key_for(str(path)))["Body"].read()
    assert body == b"second, longer version"


@pytest.mark.moto
def test_large_file_comes_down_in_ranged_parts_with_its_mtime(tmp_path: Path, stager, s3) -> None:
    data = os.urandom(300 * 1024)
    path = write(tmp_path / "big" / "dwi.nii", data, MTIME_NS)
    stager.upload_file(str(path))
    path.unlink()

    # Above the threshold: the first GET only tells size and mtime; the bytes come in parts.
    small_parts = TransferConfig(multipart_threshold=64 * 1024, multipart_chunksize=64 * 1024)
    managed = Stager(s3, BUCKET, PREFIX, transfer_config=small_parts)
    log = OperationLog(s3)
    assert managed.download(StagedPath(str(path), "file")) == 1
    assert path.read_bytes() == data
    assert path.stat().st_mtime_ns == MTIME_NS
    assert managed.bytes_down == len(data)
    assert log.keys("GetObject").count(stager.key_for(str(path))) == 1 + 5  # 300 KiB / 64 KiB
    assert not list(path.parent.glob("*.nbpart*"))


@pytest.mark.moto
def test_many_files_move_concurrently_and_the_result_file_last(tmp_path: Path, stager, s3) -> None:
    node_dir = tmp_path / "wf" / "many"
    names = [f"out/{i:03d}.txt" for i in range(40)] + ["_0xabc.json", "result_many.pklz"]
    for i, rel in enumerate(names):
        write(node_dir / rel, rel.encode(), MTIME_NS + i)
    log = OperationLog(s3)
    stager.upload_tree(str(node_dir))
    assert log.keys("PutObject")[-1] == stager.key_for(str(node_dir / "result_many.pklz"))
    assert len(log.keys("PutObject")) == len(names)

    for item in sorted(node_dir.rglob("*"), reverse=True):
        item.unlink() if item.is_file() else item.rmdir()
    log.calls.clear()
    assert stager.fetch_node_dir(str(node_dir), everything=True) is True
    assert log.keys("GetObject")[-1] == stager.key_for(str(node_dir / "result_many.pklz"))
    assert len(log.keys("GetObject")) == len(names)
    for i, rel in enumerate(names):
        assert (node_dir / rel).stat().st_mtime_ns == MTIME_NS + i


@pytest.mark.moto
def test_download_missing_file_returns_zero(tmp_path: Path, stager: Stager) -> None:
    path = tmp_path / "never" / "uploaded.txt"
    assert stager.download(StagedPath(str(path), "file")) == 0
    assert not path.exists()


@pytest.mark.moto
def test_download_file_not_missing_ok_raises(tmp_path: Path, stager: Stager) -> None:
    key = stager.key_for(str(tmp_path / "gone.txt"))
    with pytest.raises(StagingError, match=rf"could not download s3://{BUCKET}/{key}"):
        stager.download_file(key, str(tmp_path / "gone.txt"), missing_ok=False)


@pytest.mark.moto
def test_put_and_get_bytes(stager: Stager) -> None:
    key = stager.control_key("job-1", "payload.json")
    assert key == f"{PREFIX}/control/job-1/payload.json"
    assert stager.put_bytes(key, b'{"a": 1}') == f"s3://{BUCKET}/{key}"
    assert stager.get_bytes(key) == b'{"a": 1}'
    assert (stager.bytes_up, stager.bytes_down) == (8, 8)


# ---- directories -------------------------------------------------------------------------


def make_tree(root: Path) -> dict[str, int]:
    """A small tree; returns relpath -> mtime_ns."""
    mtimes = {"a.txt": MTIME_NS, "sub/b.bin": MTIME_NS + 10, "sub/deeper/c.txt": MTIME_NS + 20}
    for rel, mtime in mtimes.items():
        write(root / rel, f"content of {rel}".encode(), mtime)
    return mtimes


@pytest.mark.parametrize("kind", ["dir", "remote"])
@pytest.mark.moto
def test_directory_round_trip_restores_tree(tmp_path: Path, stager: Stager, kind: str) -> None:
    root = tmp_path / "outputs"
    mtimes = make_tree(root)
    before = local_tree(root)
    stager.ensure_uploaded(str(root))

    # A sibling whose name starts with the same characters must not come down with it.
    write(tmp_path / "outputs2" / "other.txt", b"not mine")
    stager.ensure_uploaded(str(tmp_path / "outputs2"))

    for path in (root, tmp_path / "outputs2"):
        for item in sorted(path.rglob("*"), reverse=True):
            item.unlink() if item.is_file() else item.rmdir()
        path.rmdir()

    assert stager.download(StagedPath(str(root), kind)) == 3
    assert local_tree(root) == before
    for rel, mtime in mtimes.items():
        assert (root / rel).stat().st_mtime_ns == mtime
    assert not (tmp_path / "outputs2").exists()


@pytest.mark.moto
def test_remote_file_is_found_as_a_file(tmp_path: Path, stager: Stager) -> None:
    path = write(tmp_path / "result.txt", b"x", MTIME_NS)
    stager.upload_file(str(path))
    path.unlink()
    assert stager.download(StagedPath(str(path), "remote")) == 1
    assert path.read_bytes() == b"x"


@pytest.mark.moto
def test_download_of_missing_remote_path_returns_zero(tmp_path: Path, stager: Stager) -> None:
    assert stager.download(StagedPath(str(tmp_path / "nothing"), "remote")) == 0
    assert not (tmp_path / "nothing").exists()


@pytest.mark.moto
def test_upload_tree_puts_result_last_and_deletes_stale_keys(
    tmp_path: Path, stager: Stager, s3
) -> None:
    node_dir = tmp_path / "wf" / "bet"
    for rel in ("result_bet.pklz", "_0xabc.json", "_report/report.rst", "brain.nii",
                "mapflow/_bet0/result_bet0.pklz", "z_last_alphabetically.txt"):
        write(node_dir / rel, rel.encode())
    # Leftovers of a previous attempt under the node dir, and a neighbour's file.
    stale = [stager.key_for(str(node_dir / "_0xold.json")),
             stager.key_for(str(node_dir / "old" / "out.nii"))]
    neighbour = stager.key_for(str(tmp_path / "wf" / "bet_mask" / "mask.nii"))
    for key in (*stale, neighbour):
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"old")

    log = OperationLog(s3)
    files = stager.upload_tree(str(node_dir))

    assert files[-1] == str(node_dir / "result_bet.pklz")
    put_keys = log.keys("PutObject")
    assert len(put_keys) == 6
    assert put_keys[-1] == stager.key_for(str(node_dir / "result_bet.pklz"))
    # The stale commit marker is gone before the new one goes up.
    assert log.calls.index(("DeleteObjects", None)) < log.calls.index(("PutObject", put_keys[-1]))

    expected = {stager.key_for(p) for p in files} | {neighbour}
    assert remote_keys(s3) == expected


@pytest.mark.moto
def test_upload_tree_without_stale_keys_makes_no_delete_call(tmp_path: Path, stager, s3) -> None:
    node_dir = tmp_path / "node"
    write(node_dir / "result_node.pklz", b"r")
    log = OperationLog(s3)
    stager.upload_tree(str(node_dir))
    assert "DeleteObjects" not in [name for name, _ in log.calls]


BOOKKEEPING_FILES = [
    "result_bet.pklz", "_0xabc.json", "_inputs.pklz", "_node.pklz", "_report/report.rst",
    "_nipype_batch.json", "mapflow/_bet0/result_bet0.pklz", "mapflow/_bet0/_0xdef.json",
    "mapflow/_bet0/_report/report.rst",
]
DATA_FILES = ["brain.nii.gz", "sub/result_notmine.txt", "mapflow/_bet0/brain.nii.gz",
              "command.txt"]


@pytest.mark.moto
def test_fetch_node_dir_brings_only_bookkeeping(tmp_path: Path, stager: Stager, s3) -> None:
    node_dir = tmp_path / "wf" / "bet"
    for rel in BOOKKEEPING_FILES + DATA_FILES:
        write(node_dir / rel, rel.encode(), MTIME_NS)
    stager.upload_tree(str(node_dir))
    for item in sorted(node_dir.rglob("*"), reverse=True):
        item.unlink() if item.is_file() else item.rmdir()

    log = OperationLog(s3)
    assert stager.fetch_node_dir(str(node_dir), everything=False) is True
    assert set(local_tree(node_dir)) == set(BOOKKEEPING_FILES)
    assert (node_dir / "result_bet.pklz").stat().st_mtime_ns == MTIME_NS
    assert log.keys("GetObject")[-1] == stager.key_for(str(node_dir / "result_bet.pklz"))

    assert stager.fetch_node_dir(str(node_dir), everything=True) is True
    assert set(local_tree(node_dir)) == set(BOOKKEEPING_FILES + DATA_FILES)


@pytest.mark.moto
def test_fetch_node_dir_without_result_returns_false(tmp_path: Path, stager: Stager) -> None:
    node_dir = tmp_path / "wf" / "crashed"
    # A mapflow child's result is not the node's own result (the commit marker).
    for rel in ("_0xabc.json", "_report/report.rst", "mapflow/_crashed0/result_crashed0.pklz"):
        write(node_dir / rel, b"x")
    stager.upload_tree(str(node_dir))
    for item in sorted(node_dir.rglob("*"), reverse=True):
        item.unlink() if item.is_file() else item.rmdir()

    assert stager.fetch_node_dir(str(node_dir), everything=True) is False
    assert stager.fetch_node_dir(str(node_dir), everything=False) is False
    assert stager.fetch_node_dir(str(tmp_path / "never-ran"), everything=False) is False
    assert local_tree(node_dir) == {}


# ---- errors ------------------------------------------------------------------------------


@pytest.mark.moto
def test_missing_bucket_gives_staging_error(tmp_path: Path, s3) -> None:
    stager = Stager(s3, "no-such-bucket", PREFIX)
    path = write(tmp_path / "f.txt", b"x")
    with pytest.raises(StagingError, match=r"s3://no-such-bucket/.*Check that the bucket exists"):
        stager.put_bytes(stager.control_key("a"), b"x")
    with pytest.raises(StagingError, match=r"could not list s3://no-such-bucket/.*NoSuchBucket"):
        stager.download(StagedPath(str(tmp_path), "dir"))
    with pytest.raises(StagingError, match=r"could not download s3://no-such-bucket/"):
        stager.download(StagedPath(str(path), "file"))
    with pytest.raises(StagingError, match=r"s3://no-such-bucket/"):
        stager.ensure_uploaded(str(path))
    with pytest.raises(StagingError, match=r"could not list s3://no-such-bucket/"):
        stager.fetch_node_dir(str(tmp_path), everything=False)


@pytest.mark.moto
def test_upload_file_to_missing_bucket_gives_staging_error(tmp_path: Path, s3) -> None:
    stager = Stager(s3, "no-such-bucket", PREFIX)
    path = write(tmp_path / "f.txt", b"x")
    with pytest.raises(StagingError, match=r"could not upload .*Check that the bucket exists"):
        stager.upload_file(str(path))


# ---- pure helpers ------------------------------------------------------------------------


def test_find_paths_in_nested_values() -> None:
    value = {
        "in_file": "/data/sub-01/T1w.nii.gz",
        "list": ["/a/b", ("/c/../d/e", {"deep": ["/f/g/"]})],
        "set": {"/h"},
        "relative": "sub/file.nii",
        "root": "/",
        "multi_line": "/not\na path",
        "number": 3,
        "none": None,
        "flag": True,
    }
    assert find_paths(value) == {"/data/sub-01/T1w.nii.gz", "/a/b", "/d/e", "/f/g", "/h"}
    assert find_paths("/x" + "y" * 5000) == set()
    assert find_paths([]) == set()


@pytest.mark.parametrize(
    ("relpath", "expected"),
    [
        ("result_bet.pklz", True),
        ("_0x0123abcd.json", True),
        ("_inputs.pklz", True),
        ("_node.pklz", True),
        ("_report/report.rst", True),
        ("_nipype_batch.json", True),
        ("mapflow/_bet0/result_bet0.pklz", True),
        ("mapflow/_bet0/_0xabc.json", True),
        ("mapflow/_bet0/_report/report.rst", True),
        ("brain.nii.gz", False),
        ("mapflow/_bet0/brain.nii.gz", False),
        ("result_bet.txt", False),
        ("_0xabc.txt", False),
        ("sub/result_x.pklz", False),
        ("sub/_0xabc.json", False),
    ],
)
def test_is_bookkeeping(relpath: str, expected: bool) -> None:
    assert is_bookkeeping(relpath) is expected


@pytest.mark.parametrize(
    ("relpath", "expected"),
    [
        ("result_bet.pklz", True),
        ("mapflow/_bet0/result_bet0.pklz", False),
        ("sub/result_bet.pklz", False),
        ("result_bet.pklz.tmp", False),
        ("_0xabc.json", False),
    ],
)
def test_is_result_file(relpath: str, expected: bool) -> None:
    assert is_result_file(relpath) is expected


@pytest.mark.parametrize(
    ("prefix", "base"),
    [("", "files"), ("runs/42", "runs/42/files"), ("/runs/42/", "runs/42/files")],
)
def test_key_for_and_path_for_are_inverse(prefix: str, base: str) -> None:
    stager = Stager(s3=None, bucket=BUCKET, prefix=prefix)
    path = "/work/wf/bet/result_bet.pklz"
    key = stager.key_for(path)
    assert key == f"{base}/work/wf/bet/result_bet.pklz"
    assert stager.path_for(key) == path
    assert stager.key_for("/work/wf/../wf/bet/") == f"{base}/work/wf/bet"


def test_key_for_makes_relative_paths_absolute(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    stager = Stager(s3=None, bucket=BUCKET, prefix="p")
    assert stager.key_for("out/x.nii") == f"p/files{tmp_path}/out/x.nii"
    assert stager.path_for(stager.key_for("out/x.nii")) == str(tmp_path / "out" / "x.nii")


def test_control_key_without_prefix() -> None:
    assert Stager(s3=None, bucket=BUCKET).control_key("j", "node.pklz") == "control/j/node.pklz"


def test_a_missing_object_read_under_the_job_role_is_absent_not_an_error() -> None:
    """Under the job role (ListBucket on its prefix only) S3 answers 403 for a missing key."""
    from botocore.stub import Stubber

    client = boto3.client("s3", region_name="us-east-1", aws_access_key_id="k",
                          aws_secret_access_key="k")
    stager = Stager(client, "labbucket", "study")
    key = "study/control/run/packs/3/0.succeeded"
    with Stubber(client) as stub:
        for operation in ("get_object", "head_object"):
            stub.add_client_error(operation, service_error_code="AccessDenied",
                                  http_status_code=403)
            stub.add_response("list_objects_v2", {"KeyCount": 0, "IsTruncated": False},
                              {"Bucket": "labbucket", "Prefix": key, "MaxKeys": 1})
        assert stager.get_bytes(key, missing_ok=True) is None
        assert stager._head(key) is None
        # a 403 on an object that is there is a real denial
        stub.add_client_error("get_object", service_error_code="AccessDenied",
                              http_status_code=403)
        stub.add_response("list_objects_v2", {"Contents": [{"Key": key}], "KeyCount": 1,
                                              "IsTruncated": False},
                          {"Bucket": "labbucket", "Prefix": key, "MaxKeys": 1})
        with pytest.raises(StagingError, match="AccessDenied"):
            stager.get_bytes(key, missing_ok=True)
        stub.assert_no_pending_responses()
