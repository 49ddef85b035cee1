"""The local stack's S3 reads only the bytes a ranged GET asks for, as S3 does (adjustment 7)."""

from __future__ import annotations

import os

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from moto import mock_aws
from moto.s3.models import FakeKey
from moto.s3.responses import S3Response

from nipype_batch.local import moto_adjustments

pytestmark = pytest.mark.moto

SIZE = 3 * 1024 * 1024 + 17


@pytest.fixture
def s3(monkeypatch):
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setattr(S3Response, "get_object", S3Response.get_object)  # undone after
    moto_adjustments._read_ranges_only()
    whole_reads = []
    value = FakeKey.value

    def counted(key):
        whole_reads.append(key.name)
        return value.fget(key)

    monkeypatch.setattr(FakeKey, "value", property(counted, value.fset))
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="staging")
        client.put_object(Bucket="staging", Key="big", Body=DATA)
        whole_reads.clear()
        yield client, whole_reads


DATA = os.urandom(SIZE)


@pytest.mark.parametrize(("first", "last"), [(0, 99), (1000, 2_000_000), (SIZE - 10, SIZE + 500),
                                             (7, "")])
def test_a_ranged_get_returns_the_range_without_reading_the_object(s3, first, last):
    client, whole_reads = s3
    got = client.get_object(Bucket="staging", Key="big", Range=f"bytes={first}-{last}")
    end = SIZE - 1 if last == "" else min(last, SIZE - 1)
    assert got["Body"].read() == DATA[first:end + 1]
    assert got["ContentRange"] == f"bytes {first}-{end}/{SIZE}"
    assert whole_reads == []


def test_other_gets_are_moto_s_own(s3):
    client, whole_reads = s3
    assert client.get_object(Bucket="staging", Key="big")["Body"].read() == DATA
    suffix = client.get_object(Bucket="staging", Key="big", Range="bytes=-10")
    assert suffix["Body"].read() == DATA[-10:]
    assert whole_reads == ["big", "big"]


def test_a_managed_download_in_parts_gets_the_same_bytes(s3, tmp_path):
    client, whole_reads = s3
    path = tmp_path / "big"
    client.download_file("staging", "big", str(path), Config=TransferConfig(
        multipart_threshold=1024 * 1024, multipart_chunksize=1024 * 1024))
    assert path.read_bytes() == DATA
    assert whole_reads == []
