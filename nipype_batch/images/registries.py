"""Where job images are pushed and pulled: a plain registry (the local stack's) or ECR."""

from __future__ import annotations

import base64
import logging
import urllib.error
import urllib.request
from typing import Any, Protocol

from botocore.exceptions import ClientError

from ..errors import ImageBuildError

log = logging.getLogger(__name__)

MANIFEST_TYPES = ", ".join([
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
])


class Registry(Protocol):
    """A place jobs pull images from."""

    def find(self, tag: str) -> str | None:
        """By-digest reference of ``tag`` if the registry has it, else None."""

    def publish(self, docker: Any, local_ref: str, tag: str) -> str:
        """Push ``local_ref`` as ``tag`` unless present; return a by-digest reference."""


def _push(docker: Any, repository: str, tag: str, auth: dict[str, str] | None = None) -> str:
    """Push and return the manifest digest the registry reported."""
    digest = None
    for chunk in docker.api.push(repository, tag, stream=True, decode=True, auth_config=auth):
        if "error" in chunk:
            raise ImageBuildError(
                f"pushing {repository}:{tag} failed: {chunk['error']}"
            )
        aux = chunk.get("aux") or {}
        digest = aux.get("Digest", digest)
    if not digest:
        raise ImageBuildError(f"pushing {repository}:{tag} reported no digest")
    return digest


class PlainRegistry:
    """A Docker registry over HTTP on loopback (Debian's docker-registry on the local stack)."""

    def __init__(self, address: str, repository: str = "nipype-batch/job") -> None:
        self.address = address
        self.repository = repository

    def digest_of(self, tag: str) -> str | None:
        """Manifest digest of ``tag`` in the registry, or None if it is not there."""
        url = f"http://{self.address}/v2/{self.repository}/manifests/{tag}"
        request = urllib.request.Request(url, method="HEAD", headers={"Accept": MANIFEST_TYPES})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.headers.get("Docker-Content-Digest")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise ImageBuildError(f"registry {self.address} answered {exc.code} for {url}") from exc
        except OSError as exc:
            raise ImageBuildError(
                f"registry {self.address} is not reachable ({exc}); is the local stack up?"
            ) from exc

    def find(self, tag: str) -> str | None:
        """``address/repo@sha256:...`` of ``tag``, or None if the registry lacks it."""
        digest = self.digest_of(tag)
        return f"{self.address}/{self.repository}@{digest}" if digest else None

    def publish(self, docker: Any, local_ref: str, tag: str) -> str:
        """Push unless the registry has ``tag``; return ``address/repo@sha256:...``."""
        remote = f"{self.address}/{self.repository}"
        digest = self.digest_of(tag)
        docker.images.get(local_ref).tag(remote, tag)
        if digest is None:
            log.info("Pushing %s:%s", remote, tag)
            digest = _push(docker, remote, tag)
        return f"{remote}@{digest}"


class EcrRegistry:
    """An ECR repository in the account of the given client, created if missing."""

    def __init__(self, ecr: Any, repository: str = "nipype-batch") -> None:
        self.ecr = ecr
        self.repository = repository

    def ensure_repository(self) -> str:
        """URI of the repository, creating it (immutable tags, scan on push) if needed."""
        try:
            found = self.ecr.describe_repositories(repositoryNames=[self.repository])
            return found["repositories"][0]["repositoryUri"]
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "RepositoryNotFoundException":
                raise ImageBuildError(
                    f"cannot read ECR repository {self.repository}: {exc}"
                ) from exc
        created = self.ecr.create_repository(
            repositoryName=self.repository,
            imageTagMutability="IMMUTABLE",
            imageScanningConfiguration={"scanOnPush": True},
            tags=[{"Key": "nipype-batch", "Value": "1"}],
        )
        return created["repository"]["repositoryUri"]

    def login(self) -> dict[str, str]:
        """Docker credentials from ECR's authorization token (no AWS CLI involved)."""
        data = self.ecr.get_authorization_token()["authorizationData"][0]
        user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
        return {"username": user, "password": password,
                "serveraddress": data["proxyEndpoint"]}

    def digest_of(self, tag: str) -> str | None:
        """Digest of ``tag`` in the repository, or None."""
        try:
            found = self.ecr.describe_images(
                repositoryName=self.repository, imageIds=[{"imageTag": tag}]
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("ImageNotFoundException",
                                                 "RepositoryNotFoundException"):
                return None
            raise ImageBuildError(f"cannot read ECR images of {self.repository}: {exc}") from exc
        details = found.get("imageDetails") or []
        return details[0]["imageDigest"] if details else None

    def find(self, tag: str) -> str | None:
        """``uri@sha256:...`` of ``tag``, or None if the repository (or tag) is missing."""
        digest = self.digest_of(tag)
        if digest is None:
            return None
        return f"{self.ensure_repository()}@{digest}"

    def publish(self, docker: Any, local_ref: str, tag: str) -> str:
        """Push unless ECR has ``tag``; return ``uri@sha256:...``."""
        uri = self.ensure_repository()
        digest = self.digest_of(tag)
        if digest is None:
            docker.images.get(local_ref).tag(uri, tag)
            log.info("Pushing %s:%s to ECR", uri, tag)
            try:
                digest = _push(docker, uri, tag, auth=self.login())
            except ImageBuildError as exc:
                # Another driver pushed the same content-hash tag since we looked: the
                # repository's immutable tags refuse ours, and theirs is the same image.
                digest = self.digest_of(tag) if "already exists" in str(exc) else None
                if digest is None:
                    raise
                log.info("%s:%s was pushed meanwhile by another run: using %s", uri, tag,
                         digest)
        return f"{uri}@{digest}"
