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
