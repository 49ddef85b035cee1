"""Least-privilege IAM policy documents for the roles a run needs.

A job reads its payload and inputs and writes its node directory, all under the staging
prefix, and nothing else: its role needs no other bucket, no other prefix and no other
service. (Pulling the image and shipping logs are the execution role's or the instance's
job, not the job role's.)
"""

from __future__ import annotations

from typing import Any


def job_role_policy(bucket: str, prefix: str = "", partition: str = "aws") -> dict[str, Any]:
    """Policy for the job role: objects under ``s3://bucket/prefix/`` only.

    ``ListBucket`` is limited to the prefix by condition, since a job lists its own node
    directory (to mirror it) and the directories it stages in. ``AbortMultipartUpload`` lets
    a managed transfer that fails clean up its parts (else they are billed until a lifecycle
    rule removes them). ``partition`` is the account's: ``aws``, ``aws-cn`` (China),
    ``aws-us-gov`` (GovCloud).
    """
    prefix = prefix.strip("/")
    bucket_arn = f"arn:{partition}:s3:::{bucket}"
    objects = f"{bucket_arn}/{prefix}/*" if prefix else f"{bucket_arn}/*"
    listed = [f"{prefix}/*", prefix] if prefix else ["*"]
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "StagingObjects",
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject",
                           "s3:AbortMultipartUpload"],
                "Resource": objects,
            },
            {
                "Sid": "ListStagingPrefix",
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": bucket_arn,
                "Condition": {"StringLike": {"s3:prefix": listed}},
            },
            {
                "Sid": "EncryptedUploadsOnly",
                "Effect": "Deny",
                "Action": "s3:PutObject",
                "Resource": objects,
                "Condition": {"Null": {"s3:x-amz-server-side-encryption": "true"}},
            },
        ],
    }


def batch_trust_policy() -> dict[str, Any]:
    """Trust policy letting ECS tasks (which run Batch jobs) assume the job role."""
    return {
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": "ecs-tasks.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }],
    }
