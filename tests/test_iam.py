"""The job role's policy, enforced by moto's IAM evaluation for keys it issued."""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.core import set_initial_no_auth_action_count

from nipype_batch.aws.iam import job_role_policy

pytestmark = pytest.mark.moto


@set_initial_no_auth_action_count(7)  # the set-up calls below run unchecked
@mock_aws
def test_job_role_reaches_only_its_prefix_and_only_encrypted() -> None:
    iam = boto3.client("iam", region_name="us-east-1")
    admin_s3 = boto3.client("s3", region_name="us-east-1")
    admin_s3.create_bucket(Bucket="labbucket")
    # (moto checks CreateMultipartUpload as an IAM action of that name, which AWS does not
    # have: AWS checks s3:PutObject. So the upload is made here, unchecked.)
    upload = admin_s3.create_multipart_upload(Bucket="labbucket", Key="study/x/files/big")
    iam.create_user(UserName="job")
    iam.put_user_policy(UserName="job", PolicyName="nipype-batch-job",
                        PolicyDocument=json.dumps(job_role_policy("labbucket", "study/x")))
    key = iam.create_access_key(UserName="job")["AccessKey"]
    s3 = boto3.client("s3", region_name="us-east-1", aws_access_key_id=key["AccessKeyId"],
                      aws_secret_access_key=key["SecretAccessKey"])

    s3.put_object(Bucket="labbucket", Key="study/x/files/a", Body=b"1",
                  ServerSideEncryption="AES256")
    assert s3.get_object(Bucket="labbucket", Key="study/x/files/a")["Body"].read() == b"1"
    s3.list_objects_v2(Bucket="labbucket", Prefix="study/x/files/")
    # a managed transfer that fails aborts its multipart upload, so its parts are not billed
    s3.abort_multipart_upload(Bucket="labbucket", Key="study/x/files/big",
                              UploadId=upload["UploadId"])
    for denied in (
        lambda: s3.put_object(Bucket="labbucket", Key="study/x/files/b", Body=b"1"),  # no SSE
        lambda: s3.put_object(Bucket="labbucket", Key="other/a", Body=b"1",
                              ServerSideEncryption="AES256"),
        lambda: s3.get_object(Bucket="labbucket", Key="study/y/files/a"),
    ):
        with pytest.raises(ClientError, match="AccessDenied"):
            denied()


def test_listing_is_limited_to_the_prefix() -> None:
    # moto does not evaluate s3:prefix conditions, so this one is checked as written
    (listing,) = [s for s in job_role_policy("labbucket", "/study/x/")["Statement"]
                  if s["Action"] == "s3:ListBucket"]
    assert listing["Resource"] == "arn:aws:s3:::labbucket"
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["study/x/*", "study/x"]}}


def test_the_policy_names_the_accounts_partition() -> None:
    document = json.dumps(job_role_policy("labbucket", "study/x", partition="aws-cn"))
    assert '"arn:aws-cn:s3:::labbucket"' in document
    assert '"arn:aws-cn:s3:::labbucket/study/x/*"' in document
    assert "arn:aws:" not in document


def test_policy_command_prints_the_document(capsys) -> None:
    from nipype_batch.cli import main

    assert main(["policy", "s3://labbucket/study/x"]) == 0
    assert json.loads(capsys.readouterr().out) == job_role_policy("labbucket", "study/x")
    assert main(["policy", "s3://labbucket/x", "--partition", "aws-us-gov"]) == 0
    assert "arn:aws-us-gov:s3:::labbucket/x/*" in capsys.readouterr().out
    assert main(["policy", "labbucket"]) == 1
    assert "is not an S3 URI" in capsys.readouterr().err
