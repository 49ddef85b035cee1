"""What a run's jobs cost: vCPU-hours and GB-hours times a platform's prices.

Each attempt that ran is billed for the vCPUs and memory its job asked for, over the seconds
its container ran; time in the queue is free. Prices are data (``prices.json``, with their
date and source), overridable by a file of the same shape. An estimate, not a bill: S3, data
transfer, CloudWatch Logs and, on EC2, idle instance capacity are not counted.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from ..errors import ConfigurationError
from ..platforms import DEFAULT_PLATFORM, capability
from .model import JobRow

DEFAULT_PRICES = capability(DEFAULT_PLATFORM)  # whose prices apply when none are named


def significant(amount: float, digits: int = 4) -> str:
    """``amount`` with ``digits`` significant digits, never in exponent form (0.0000123)."""
    if amount == 0:
        return "0"
    decimals = max(2, digits - 1 - math.floor(math.log10(abs(amount))))
    return f"{amount:.{decimals}f}"


@dataclass(frozen=True)
class Prices:
    """Per-hour prices of one platform, and where they come from."""

    platform: str
    vcpu_hour: float
    gb_hour: float  # per GiB of memory (Batch's MEMORY is in MiB: 1024 MiB = 1 GB here)
    spot_discount: float  # fraction off on Spot, e.g. 0.7
    minimum_s: float  # seconds billed at least per attempt that ran
    as_of: str
    region: str
    currency: str
    source: str
    note: str = ""
    spot: bool = False  # the run used Spot capacity: its cost is the discounted one
    architecture: str = "x86_64"  # Graviton (arm64) has prices of its own


def _merged(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged


def _override_data(override: str | os.PathLike[str] | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(override, Mapping):
        return override
    try:
        with open(override) as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ConfigurationError(
            f"cannot read prices file {override}: {exc}. It is JSON shaped like "
            'nipype_batch/report/prices.json, e.g. {"as_of": "2025-01-01", "platforms": {"ec2": '
            '{"vcpu_hour": 0.04, "gb_hour": 0.004}}}'
        ) from exc
    if not isinstance(data, dict):
        raise ConfigurationError(f"prices file {override} holds no JSON object")
    return data


def load_prices(
    platform: str = DEFAULT_PRICES,
    spot: bool = False,
    override: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    architecture: str = "x86_64",
) -> Prices:
    """The prices of ``platform``: the packaged ones, with ``override`` merged over them.

    Parameters
    ----------
    platform : {"ec2", "fargate"}
        Where the jobs ran: a platform's capability (:mod:`nipype_batch.platforms`).
    spot : bool
        The compute environment used Spot capacity.
    override : path or mapping, optional
        Same shape as ``nipype_batch/report/prices.json``; only the keys given replace the
        packaged ones (``{"as_of": ..., "platforms": {"ec2": {"vcpu_hour": ...}}}``).
    architecture : {"x86_64", "arm64"}
        The instances' CPU: a platform's ``arm64`` entry (Graviton) replaces its prices.
    """
    data = json.loads(resources.files(__package__).joinpath("prices.json").read_text())
    if override is not None:
        data = _merged(data, _override_data(override))
    platforms = data.get("platforms") or {}
    if platform not in platforms:
        raise ConfigurationError(
            f"no prices for platform {platform!r}: choose one of {', '.join(sorted(platforms))}"
            " or add it to a prices file"
        )
    entry = platforms[platform]
    if architecture == "arm64" and isinstance(entry.get("arm64"), Mapping):
        entry = {**entry, **entry["arm64"]}
    try:
        prices = Prices(
            platform=platform,
            vcpu_hour=float(entry["vcpu_hour"]),
            gb_hour=float(entry["gb_hour"]),
            spot_discount=float(entry.get("spot_discount", 0.0)),
            minimum_s=float(entry.get("minimum_s", 0.0)),
            as_of=str(data.get("as_of", "unknown date")),
            region=str(data.get("region", "")),
            currency=str(data.get("currency", "USD")),
            source=str(data.get("source", "")),
            note=str(entry.get("note", "")),
            spot=spot,
            architecture=architecture,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"prices of platform {platform!r} need numbers vcpu_hour and gb_hour: {exc}"
        ) from exc
    if not 0 <= prices.spot_discount < 1:
        raise ConfigurationError(
            f"spot_discount of {platform!r} is {prices.spot_discount}: write a fraction, "
            "0.7 for 70% off"
        )
    return prices


@dataclass(frozen=True)
class JobCost:
    """One job's usage over all its attempts, and its on-demand price."""

    job_id: str
    node: str
    billed_s: float
    vcpu_hours: float
    gb_hours: float
    on_demand: float


@dataclass(frozen=True)
class CostEstimate:
    """A run's usage and cost at ``prices``."""

    prices: Prices
    jobs: tuple[JobCost, ...]

    @property
    def vcpu_hours(self) -> float:
        """vCPU-hours over every attempt of every job."""
        return sum(job.vcpu_hours for job in self.jobs)

    @property
    def gb_hours(self) -> float:
        """GB-hours (GiB of memory asked times hours run)."""
        return sum(job.gb_hours for job in self.jobs)

    @property
    def on_demand(self) -> float:
        """Cost at on-demand prices."""
        return self.vcpu_hours * self.prices.vcpu_hour + self.gb_hours * self.prices.gb_hour

    @property
    def on_spot(self) -> float:
        """Cost at the assumed Spot discount."""
        return self.on_demand * (1 - self.prices.spot_discount)

    @property
    def total(self) -> float:
        """The run's cost: on Spot if it used Spot, else on demand."""
        return self.on_spot if self.prices.spot else self.on_demand

    def charged(self, job: JobCost) -> float:
        """One job's cost, on Spot if the run used Spot."""
        return job.on_demand * ((1 - self.prices.spot_discount) if self.prices.spot else 1)

    def by_subject(self, rows: Sequence[JobRow]) -> list[tuple[str, int, float]]:
        """(subject, jobs, cost) per value of the outermost iterable, the costliest first: a
        node's first parameterisation folder (``_subject_01`` in ``wf/_subject_01/fit``);
        jobs of no subject (a group step) under ``(all subjects)``."""
        found: dict[str, list[float]] = {}
        for row, job in zip(rows, self.jobs, strict=True):
            subject = next((part for part in row.node.split("/") if part.startswith("_")),
                           "(all subjects)")
            found.setdefault(subject, []).append(self.charged(job))
        return sorted(((subject, len(costs), sum(costs)) for subject, costs in found.items()),
                      key=lambda item: -item[2])

    def subject_count(self, rows: Sequence[JobRow]) -> int:
        """How many values of the outermost iterable the jobs ran for (see by_subject)."""
        return sum(name != "(all subjects)" for name, _jobs, _cost in self.by_subject(rows))

    def summary(self) -> str:
        """One line: usage, cost, and the prices used."""
        p = self.prices
        capacity = (f"Spot, {p.spot_discount:.0%} off assumed" if p.spot else
                    f"on demand; {significant(self.on_spot)} on Spot at {p.spot_discount:.0%} off")
        return (f"estimated cost {p.currency} {significant(self.total)} ({capacity}): "
                f"{significant(self.vcpu_hours)} vCPU-h x {p.vcpu_hour} + "
                f"{significant(self.gb_hours)} GB-h x {p.gb_hour}, {p.platform} {p.region} "
                f"prices of {p.as_of}")


def usage_cost(vcpus: float, memory_mb: float, seconds: float, prices: Prices) -> float:
    """On-demand cost of ``seconds`` of one attempt (at least ``minimum_s``)."""
    hours = max(seconds, prices.minimum_s) / 3600
    return hours * (vcpus * prices.vcpu_hour + memory_mb / 1024 * prices.gb_hour)


def job_cost(row: JobRow, prices: Prices) -> JobCost:
    """Usage of one job: each attempt's running seconds (at least ``minimum_s``)."""
    billed = sum(max(attempt.running_s, prices.minimum_s)
                 for attempt in row.attempts if attempt.started_ms is not None)
    hours = billed / 3600
    vcpu_hours = row.vcpus * hours
    gb_hours = row.memory_mb / 1024 * hours
    return JobCost(
        job_id=row.job_id, node=row.node, billed_s=billed, vcpu_hours=vcpu_hours,
        gb_hours=gb_hours, on_demand=vcpu_hours * prices.vcpu_hour + gb_hours * prices.gb_hour,
    )


def estimate(rows: list[JobRow], prices: Prices) -> CostEstimate:
    """The cost of ``rows`` at ``prices``."""
    return CostEstimate(prices=prices, jobs=tuple(job_cost(row, prices) for row in rows))
