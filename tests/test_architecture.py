"""Jobs' CPU architecture: the queue's, whatever the driver's."""

from __future__ import annotations

import platform

import pytest

from nipype_batch.errors import ConfigurationError, ImageBuildError
from nipype_batch.images.build import check_architecture
from nipype_batch.images.wheels import platform_tags
from nipype_batch.settings import BatchSettings


def test_wheels_are_for_the_queue_not_the_driver(monkeypatch):
    monkeypatch.setattr(platform, "machine", lambda: "arm64")  # an Apple Silicon laptop
    tags = platform_tags()
    assert tags[0] == "manylinux_2_17_x86_64" and tags[-1] == "manylinux2014_x86_64"
    assert all(tag.endswith("_aarch64") for tag in platform_tags("arm64"))
    assert not any("arm64" in tag for tag in platform_tags("arm64"))


def test_architecture_setting_takes_docker_and_pip_spellings():
    assert BatchSettings().architecture == "x86_64"
    assert BatchSettings.from_plugin_args({"architecture": "aarch64"}).architecture == "arm64"
    assert BatchSettings.from_plugin_args({"architecture": "amd64"}).architecture == "x86_64"
    with pytest.raises(ConfigurationError, match="architecture='sparc' is not known"):
        BatchSettings.from_plugin_args({"architecture": "sparc"})


class _Docker:
    def __init__(self, architecture: str) -> None:
        self.images = self
        self.attrs = {"Architecture": architecture}

    def get(self, _ref: str) -> _Docker:
        return self


def test_an_image_for_another_cpu_is_refused_naming_both():
    check_architecture(_Docker("amd64"), "base:1", "x86_64", "base image")
    check_architecture(_Docker("arm64"), "base:1", "arm64", "base image")
    with pytest.raises(ImageBuildError, match=r"base image 'base:1' is built for arm64, but the "
                       r"queue's instances are x86_64.*exec format error.*linux/amd64.*"
                       r"architecture='arm64'"):
        check_architecture(_Docker("arm64"), "base:1", "x86_64", "base image")


def test_the_default_base_image_follows_the_drivers_python():
    from nipype_batch.images.build import DEFAULT_BASE_IMAGE
    from nipype_batch.images.wheels import driver_python

    wanted = f"public.ecr.aws/docker/library/python:{driver_python()}-slim-bookworm"
    assert wanted == DEFAULT_BASE_IMAGE


def test_a_base_image_is_pulled_for_the_queues_cpu():
    from nipype_batch.images.docker import get_or_pull

    pulls = []

    class Daemon:
        def __init__(self) -> None:
            self.images = self

        def get(self, ref):
            raise LookupError(ref)

        def pull(self, ref, **kwargs):
            pulls.append((ref, kwargs))
            return "image"

    assert get_or_pull(Daemon(), "python:3.11", str, platform="linux/amd64") == "image"
    assert pulls == [("python:3.11", {"platform": "linux/amd64"})]
