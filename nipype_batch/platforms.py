"""Where jobs run: the one definition of each platform, how jobs run on it and how it is billed.

``plugin_args={'platform': ...}``, profiles and ``nipype-batch infra up --platform`` name a
platform; job definitions declare its capability; the report and the live cost price it.
Imports nothing of the package: every layer may read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PlatformName = Literal["ec2", "spot", "fargate"]


@dataclass(frozen=True)
class Platform:
    """What a queue's compute environment runs on.

    Parameters
    ----------
    name
        As settings, profiles and ``infra up --platform`` spell it.
    capability
        ``'ec2'`` or ``'fargate'``: what job definitions declare (``platformCapabilities``),
        and whose prices apply (the keys of ``report/prices.json``).
    spot
        Billed at the Spot discount.
    """

    name: PlatformName
    capability: Literal["ec2", "fargate"]
    spot: bool = False


EC2 = Platform("ec2", "ec2")
SPOT = Platform("spot", "ec2", spot=True)  # Spot instances are EC2 instances
FARGATE = Platform("fargate", "fargate")

PLATFORMS: dict[str, Platform] = {p.name: p for p in (EC2, SPOT, FARGATE)}
DEFAULT_PLATFORM = EC2.name  # the job definitions nipype-batch registers run on EC2
# The capabilities, which are also the price tables the report knows (`report --platform`).
CAPABILITIES = tuple(dict.fromkeys(p.capability for p in PLATFORMS.values()))
# For messages that refuse an unknown name.
CHOICES = "'ec2' (on-demand), 'spot' or 'fargate'"


def capability(name: str) -> str:
    """The capability jobs on platform ``name`` run with and are priced at."""
    return PLATFORMS[name].capability


@dataclass(frozen=True)
class Architecture:
    """The CPU of a queue's instances, in the spellings each tool wants.

    Parameters
    ----------
    name
        As settings and ``infra up --architecture`` spell it.
    docker
        Docker's ``--platform`` (builds and pulls) and an image's ``Architecture``.
    wheel
        The machine part of pip's manylinux platform tags.
    """

    name: Literal["x86_64", "arm64"]
    docker: str
    wheel: str

    @property
    def docker_platform(self) -> str:
        return f"linux/{self.docker}"


X86_64 = Architecture("x86_64", "amd64", "x86_64")
ARM64 = Architecture("arm64", "arm64", "aarch64")  # Graviton
ARCHITECTURES: dict[str, Architecture] = {"x86_64": X86_64, "amd64": X86_64,
                                          "arm64": ARM64, "aarch64": ARM64}
# AWS's 'optimal' instance types are x86: jobs run there unless told otherwise, whatever
# CPU the driver has (most laptops of the field are Apple Silicon, arm64).
DEFAULT_ARCHITECTURE = X86_64.name


def architecture(name: str) -> Architecture:
    """The architecture named ``name`` (aliases: amd64, aarch64); KeyError if unknown."""
    return ARCHITECTURES[name]
