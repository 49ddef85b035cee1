"""Registries: ECR on moto (metadata only, no push) and a plain registry over HTTP."""

from __future__ import annotations

import base64
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from nipype_batch.aws.session import ApiCallCounter
from nipype_batch.errors import ImageBuildError
from nipype_batch.images.registries import MANIFEST_TYPES, EcrRegistry, PlainRegistry

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account


@pytest.fixture
def ecr(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_ECR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        yield boto3.client("ecr", region_name=REGION)


# ---- ECR ---------------------------------------------------------------------------------


@pytest.mark.moto
def test_ensure_repository_creates_once_with_immutable_tags(ecr) -> None:
    counter = ApiCallCounter()
    counter.attach(ecr)
    registry = EcrRegistry(ecr, repository="nipype-batch-test")
    uri = registry.ensure_repository()
    assert uri == f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/nipype-batch-test"
    assert registry.ensure_repository() == uri
    assert counter.counts["ecr.CreateRepository"] == 1

    [repo] = ecr.describe_repositories(repositoryNames=["nipype-batch-test"])["repositories"]
    assert repo["imageTagMutability"] == "IMMUTABLE"
    assert repo["imageScanningConfiguration"] == {"scanOnPush": True}
    tags = ecr.list_tags_for_resource(resourceArn=repo["repositoryArn"])["tags"]
    assert {"Key": "nipype-batch", "Value": "1"} in tags


@pytest.mark.moto
def test_login_decodes_the_authorization_token(ecr) -> None:
    # moto's token is base64("AWS:<account>-auth-token"), like ECR's "AWS:<password>".
    assert EcrRegistry(ecr).login() == {
        "username": "AWS",
        "password": f"{ACCOUNT}-auth-token",
        "serveraddress": f"https://{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com",
    }


def test_login_keeps_colons_inside_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    client = boto3.client("ecr", region_name=REGION)
    token = base64.b64encode(b"AWS:pass:with:colons").decode()
    with Stubber(client) as stub:
        stub.add_response("get_authorization_token", {"authorizationData": [
            {"authorizationToken": token, "proxyEndpoint": "https://registry.example"}
        ]})
        credentials = EcrRegistry(client).login()
    assert credentials == {"username": "AWS", "password": "pass:with:colons",
                           "serveraddress": "https://registry.example"}


@pytest.mark.moto
def test_digest_of_missing_tag_or_repository_is_none(ecr) -> None:
    missing_repo = EcrRegistry(ecr, repository="never-created")
    assert missing_repo.digest_of("abc123") is None

    registry = EcrRegistry(ecr, repository="nipype-batch-test")
    registry.ensure_repository()
    assert registry.digest_of("abc123") is None


# ---- plain registry ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_plain_registry_not_listening_is_not_reachable() -> None:
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(ImageBuildError, match=rf"registry {address} is not reachable .*stack up"):
        PlainRegistry(address).digest_of("abc123")


class FakeRegistry(BaseHTTPRequestHandler):
    """Answers manifest HEADs: one known tag, 404 otherwise, 500 for tag 'broken'."""

    requests: list[tuple[str, str, str | None]] = []
    digest = "sha256:" + "c" * 64

    def do_HEAD(self) -> None:
        FakeRegistry.requests.append((self.command, self.path, self.headers.get("Accept")))
        if self.path.endswith("/manifests/known"):
            self.send_response(200)
            self.send_header("Docker-Content-Digest", self.digest)
        elif self.path.endswith("/manifests/broken"):
            self.send_response(500)
        else:
            self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def fake_registry() -> Iterator[str]:
    FakeRegistry.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeRegistry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_plain_registry_digest_of_known_and_missing_tags(fake_registry: str) -> None:
    registry = PlainRegistry(fake_registry, repository="nipype-batch/job")
    assert registry.digest_of("known") == FakeRegistry.digest
    assert registry.digest_of("unknown") is None
    assert FakeRegistry.requests[0] == (
        "HEAD", "/v2/nipype-batch/job/manifests/known", MANIFEST_TYPES
    )


def test_plain_registry_error_status_is_an_image_build_error(fake_registry: str) -> None:
    with pytest.raises(ImageBuildError, match=rf"registry {fake_registry} answered 500 for http"):
        PlainRegistry(fake_registry).digest_of("broken")


class _RacedDocker:
    """Docker whose push ECR refuses: another driver pushed the same tag a moment before."""

    def __init__(self) -> None:
        self.images = self
        self.api = self

    def get(self, _ref: str) -> Any:
        return self

    def tag(self, *_args: Any) -> None:
        pass

    def push(self, repository: str, tag: str, **_kwargs: Any) -> Iterator[dict[str, str]]:
        yield {"error": f"tag invalid: The image tag '{tag}' already exists in the "
                        "'nipype-batch' repository and cannot be overwritten because the "
                        "repository is immutable."}


@pytest.mark.moto
def test_a_tag_pushed_meanwhile_by_another_driver_is_used(ecr, monkeypatch) -> None:
    import json

    registry = EcrRegistry(ecr)
    uri = registry.ensure_repository()
    monkeypatch.setattr(registry, "login", lambda: {})
    looked = []
    original = registry.digest_of

    def digest_of(tag: str) -> str | None:
        looked.append(tag)
        if len(looked) == 1:  # our first look: not there; then the other driver pushes it
            ecr.put_image(repositoryName="nipype-batch", imageTag=tag, imageManifest=json.dumps(
                {"schemaVersion": 2,
                 "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                 "config": {"digest": "sha256:" + "c" * 64},
                 "layers": []}))
            return None
        return original(tag)

    monkeypatch.setattr(registry, "digest_of", digest_of)
    ref = registry.publish(_RacedDocker(), "local:ref", "abc123")
    assert ref.startswith(f"{uri}@sha256:") and looked == ["abc123", "abc123"]
