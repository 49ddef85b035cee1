"""The pure parts of the image builder: pinning to the driver's versions and the source hash."""

from __future__ import annotations

import importlib.metadata
import re

import pytest

from nipype_batch.errors import ConfigurationError
from nipype_batch.images.build import source_digest
from nipype_batch.images.wheels import driver_constraints, pin_to_driver

NIPYPE_VERSION = importlib.metadata.version("nipype")


def test_bare_installed_name_is_pinned_to_the_driver_version() -> None:
    assert pin_to_driver("nipype") == f"nipype=={NIPYPE_VERSION}"
    assert pin_to_driver("boto3") == f"boto3=={importlib.metadata.version('boto3')}"


@pytest.mark.parametrize(
    "requirement",
    ["foo>=1", "nipype>=1.8", "dipy[viz]", "git+https://example.org/x.git",
     "surely-not-an-installed-distribution-xyz", "./local/path"],
)
def test_anything_else_is_kept_as_given(requirement: str) -> None:
    assert pin_to_driver(requirement) == requirement


def test_exact_pin_of_the_drivers_version_is_kept() -> None:
    assert pin_to_driver(f"nipype=={NIPYPE_VERSION}") == f"nipype=={NIPYPE_VERSION}"
    assert pin_to_driver("tomli==2.0.1") == "tomli==2.0.1"  # not on the driver: any version


def test_exact_pin_contradicting_the_driver_is_refused() -> None:
    with pytest.raises(ConfigurationError,
                       match=rf"asks for nipype==1\.8\.6 but this driver has nipype "
                             rf"{re.escape(NIPYPE_VERSION)}.*write just 'nipype'"):
        pin_to_driver("nipype==1.8.6")


@pytest.mark.parametrize(
    "requirement",
    ["nipype; python_version >= '3'", f"nipype=={NIPYPE_VERSION}; os_name == 'posix'",
     "nipype @ https://example.org/nipype.whl", "nipype==1.0,<2"],
)
def test_markers_urls_and_ranges_are_kept_as_given(requirement: str) -> None:
    assert pin_to_driver(requirement) == requirement


def test_arbitrary_equality_is_an_exact_pin_too() -> None:
    assert pin_to_driver(f"nipype==={NIPYPE_VERSION}") == f"nipype=={NIPYPE_VERSION}"
    with pytest.raises(ConfigurationError, match=r"asks for nipype===1\.0 but this driver"):
        pin_to_driver("nipype===1.0")


def test_driver_constraints_pin_every_distribution() -> None:
    constraints = driver_constraints()
    assert f"nipype=={NIPYPE_VERSION}" in constraints
    assert f"boto3=={importlib.metadata.version('boto3')}" in constraints
    assert all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*==\S+", line) for line in constraints)
    # Sorted and one line per distribution.
    assert constraints == sorted(constraints)
    names = [line.split("==")[0].lower() for line in constraints]
    assert len(names) == len(set(names))


def test_driver_constraints_leave_out_this_package() -> None:
    # nipype-batch is copied into the image from source, not installed from an index.
    assert not [line for line in driver_constraints() if line.lower().startswith("nipype-batch")]


def test_source_digest_is_a_stable_sha256() -> None:
    digest = source_digest()
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert source_digest() == digest
