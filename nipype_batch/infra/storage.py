"""The staging bucket and the ECR repository of an infra set: find, make or repair, delete."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from botocore.exceptions import ClientError

from .spec import Found, InfraSpec, Resource, error_code, tag_dict, tag_list

LIFECYCLE_RULE_ID = "nipype-batch-staging"
_PUBLIC_ACCESS_BLOCKED = dict.fromkeys(
    ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets"), True)


class Bucket:
    """The staging bucket: SSE-S3 by default, no public access, staging data expiring."""

    def __init__(self, s3: Any, spec: InfraSpec, region: str, partition: str = "aws") -> None:
        self.s3 = s3
        self.spec = spec
        self.region = region
        self.partition = partition

    def arn(self, name: str) -> str:
        """The bucket's ARN."""
        return f"arn:{self.partition}:s3:::{name}"

    def find(self, name: str) -> Found:
        """ARN and tags; tags None if another account owns the name (bucket names are global)."""
        try:
            self.s3.head_bucket(Bucket=name)
        except ClientError as exc:
            if error_code(exc) in ("404", "NoSuchBucket", "NotFound"):
                return None
            if error_code(exc) in ("403", "AccessDenied", "Forbidden"):
                return self.arn(name), None
            raise
        try:
            tags = self.s3.get_bucket_tagging(Bucket=name)["TagSet"]
        except ClientError as exc:
            if error_code(exc) != "NoSuchTagSet":
                raise
            tags = []
        return self.arn(name), tag_dict(tags)

    def ensure(self, resource: Resource) -> Resource:
        """Create the bucket if absent (tagged at once), then set what is not as it should be."""
        s3, name = self.s3, resource.name
        if resource.state == "absent":
            s3.create_bucket(Bucket=name, **({} if self.region == "us-east-1" else {
                "CreateBucketConfiguration": {"LocationConstraint": self.region}}))
            s3.put_bucket_tagging(Bucket=name, Tagging={"TagSet": tag_list(self.spec.tags)})
            resource = resource.created(self.arn(name))
        changed = []
        if not self._encrypted(name):
            s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={"Rules": [
                {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
            changed.append("encryption")
        try:
            block = s3.get_public_access_block(Bucket=name)["PublicAccessBlockConfiguration"]
        except ClientError as exc:
            if error_code(exc) != "NoSuchPublicAccessBlockConfiguration":
                raise
            block = {}
        if block != _PUBLIC_ACCESS_BLOCKED:
            s3.put_public_access_block(Bucket=name,
                                       PublicAccessBlockConfiguration=_PUBLIC_ACCESS_BLOCKED)
            changed.append("public access block")
        if self._ensure_lifecycle(name):
            changed.append("lifecycle rule")
        return resource.outcome(changed)

    def _encrypted(self, name: str) -> bool:
        """Any default encryption counts (a KMS key someone set is kept)."""
        try:
            config = self.s3.get_bucket_encryption(Bucket=name)
        except ClientError as exc:
            if error_code(exc) != "ServerSideEncryptionConfigurationNotFoundError":
                raise
            return False
        return any(rule.get("ApplyServerSideEncryptionByDefault", {}).get("SSEAlgorithm")
                   for rule in config["ServerSideEncryptionConfiguration"]["Rules"])

    def _ensure_lifecycle(self, name: str) -> bool:
        """Our rule among the bucket's lifecycle rules (others kept); True if it was written."""
        rule = {"ID": LIFECYCLE_RULE_ID, "Status": "Enabled",
                "Filter": {"Prefix": f"{self.spec.staging_prefix}/"},
                "Expiration": {"Days": self.spec.staging_expiry_days},
                "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7}}
        try:
            rules = self.s3.get_bucket_lifecycle_configuration(Bucket=name)["Rules"]
        except ClientError as exc:
            if error_code(exc) != "NoSuchLifecycleConfiguration":
                raise
            rules = []
        ours = [r for r in rules if r.get("ID") == LIFECYCLE_RULE_ID]
        if ours and all(ours[0].get(key) == value for key, value in rule.items()):
            return False
        others = [r for r in rules if r.get("ID") != LIFECYCLE_RULE_ID]
        self.s3.put_bucket_lifecycle_configuration(
            Bucket=name, LifecycleConfiguration={"Rules": [*others, rule]})
        return True

    def delete(self, name: str) -> None:
        """Empty the bucket (every version, unfinished uploads), then delete it."""
        s3 = self.s3
        for upload in s3.list_multipart_uploads(Bucket=name).get("Uploads", []):
            s3.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
        chunk: list[dict[str, str]] = []
        for key in self._object_versions(name):
            chunk.append(key)
            if len(chunk) == 1000:  # DeleteObjects' limit
                s3.delete_objects(Bucket=name, Delete={"Objects": chunk, "Quiet": True})
                chunk = []
        if chunk:
            s3.delete_objects(Bucket=name, Delete={"Objects": chunk, "Quiet": True})
        s3.delete_bucket(Bucket=name)

    def _object_versions(self, name: str) -> Iterator[dict[str, str]]:
        for page in self.s3.get_paginator("list_object_versions").paginate(Bucket=name):
            for item in page.get("Versions", []) + page.get("DeleteMarkers", []):
                yield {"Key": item["Key"], "VersionId": item["VersionId"]}


class Repository:
    """The ECR repository of the job images."""

    def __init__(self, ecr: Any, spec: InfraSpec) -> None:
        self.ecr = ecr
        self.spec = spec

    def find(self, name: str) -> Found:
        """ARN and tags of the repository, or None."""
        try:
            repo = self.ecr.describe_repositories(repositoryNames=[name])["repositories"][0]
        except ClientError as exc:
            if error_code(exc) == "RepositoryNotFoundException":
                return None
            raise
        tags = self.ecr.list_tags_for_resource(resourceArn=repo["repositoryArn"]).get("tags", [])
        return repo["repositoryArn"], tag_dict(tags)

    def ensure(self, resource: Resource) -> Resource:
        """Create the repository if absent: immutable tags, scan on push, as EcrRegistry does."""
        if resource.state != "absent":
            return resource.outcome([])
        repo = self.ecr.create_repository(
            repositoryName=resource.name, imageTagMutability="IMMUTABLE",
            imageScanningConfiguration={"scanOnPush": True},
            encryptionConfiguration={"encryptionType": "AES256"},
            tags=tag_list(self.spec.tags),
        )["repository"]
        return resource.created(repo["repositoryArn"])

    def delete(self, name: str) -> None:
        """Delete the repository and its images."""
        self.ecr.delete_repository(repositoryName=name, force=True)
