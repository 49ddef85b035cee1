"""What one node asks of AWS Batch: vCPUs, memory, GPUs, time limit, queue and image.

Pure functions of the node and the settings, so they are checked for every node before
anything is submitted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .errors import ConfigurationError, closest_key, unknown_key_message
from .settings import BatchSettings, check_resources

NODE_KEYS = {"vcpus", "memory_mb", "gpus", "timeout_s", "attempts", "job_queue", "image",
             "base_image", "run_on_driver", "overwrite"}
# How close a node key must be to one of ours to be taken for a typo of it rather than another
# plugin's key (difflib's ratio; 'vcpu' is, 'qsub_args' is not).
NEAR_MISS = 0.75


@dataclass(frozen=True)
class JobResources:
    """Resources of one job, after node overrides."""

    vcpus: int
    memory_mb: int
    gpus: int
    timeout_s: int | None
    job_queue: str | None
    image: str | None
    base_image: str | None
    run_on_driver: bool
    attempts: int = 1


def node_plugin_args(node: Any) -> dict[str, Any]:
    """The node's ``plugin_args`` restricted to our keys; a near-miss key is an error.

    Keys of other plugins (``qsub_args``, ``sbatch_args``...) are left alone so that one
    workflow can run under several plugins.
    """
    args = getattr(node, "plugin_args", None) or {}
    if not isinstance(args, dict):
        raise ConfigurationError(
            f"node {node.fullname!r}: plugin_args must be a dict, e.g. {{'vcpus': 4}}; "
            f"got {type(args).__name__}."
        )
    ours = {}
    for key, value in args.items():
        if key in NODE_KEYS:
            ours[key] = value
        elif closest_key(key, NODE_KEYS, NEAR_MISS):
            raise ConfigurationError(unknown_key_message(
                key, NODE_KEYS, f"node {node.fullname!r}: plugin_args", cutoff=NEAR_MISS,
                list_known=False))
    check_resources(ours, where=f"node {node.fullname!r} plugin_args")
    return ours


def resources_for(node: Any, settings: BatchSettings) -> JobResources:
    """Resolve a node's resources.

    ``node.n_procs`` and ``node.mem_gb`` raise the plugin-level ``vcpus`` and ``memory_mb``
    (which act as floors: Nipype's default mem_gb of 0.2 is an estimate, not a limit to
    enforce); a value in ``node.plugin_args`` replaces both. Nipype's ``overwrite`` flag means
    "replace rather than extend": for these single values the node's value always wins.
    """
    args = node_plugin_args(node)
    n_procs = int(getattr(node, "n_procs", 1) or 1)
    mem_gb = float(getattr(node, "mem_gb", 0) or 0)
    vcpus = args.get("vcpus", max(settings.vcpus, n_procs))
    memory_mb = args.get("memory_mb", max(settings.memory_mb, math.ceil(mem_gb * 1024)))
    return JobResources(
        vcpus=vcpus,
        memory_mb=memory_mb,
        gpus=args.get("gpus", settings.gpus),
        timeout_s=args.get("timeout_s", settings.timeout_s),
        job_queue=args.get("job_queue", settings.job_queue),
        image=args.get("image", settings.image),
        base_image=args.get("base_image", settings.base_image),
        run_on_driver=bool(args.get("run_on_driver", False)),
        attempts=args.get("attempts", settings.attempts),
    )


def runs_on_driver(node: Any, settings: BatchSettings) -> bool:
    """Whether a node runs on the driver rather than as a job (see ``_belongs_on_driver``)."""
    return resources_for(node, settings).run_on_driver or _belongs_on_driver(node)


def _belongs_on_driver(node: Any) -> bool:
    """Nodes that only move values or read or write the user's disk run on the driver.

    IdentityInterface, Merge, Select and Split only rearrange values: a job would add latency
    and no work. File finders (SelectFiles,
    DataGrabber, DataFinder) only glob the driver's disk: as jobs they would have to stage the
    whole dataset, while on the driver they hand each downstream job just the files it names.
    A DataSink must write where the user will look for its outputs. Those reading or writing
    ``s3://`` locations stay jobs.
    """
    from nipype.interfaces import io
    from nipype.interfaces.utility import IdentityInterface, Merge, Select, Split

    interface = node.interface
    if isinstance(interface, IdentityInterface | Merge | Select | Split):
        return True
    location_input = {
        io.DataSink: "base_directory",
        io.SelectFiles: "base_directory",
        io.DataGrabber: "base_directory",
        io.DataFinder: "root_paths",
    }
    for kind, name in location_input.items():
        if isinstance(interface, kind):
            where = getattr(interface.inputs, name, None)
            return not (isinstance(where, str) and where.startswith("s3://"))
    return False


# Fargate's vCPU sizes and, for each, the memory it allows (MiB): least, most, step.
FARGATE_SHAPES = {1: (2048, 8192, 1024), 2: (4096, 16384, 1024), 4: (8192, 30720, 1024),
                  8: (16384, 61440, 4096), 16: (32768, 122880, 8192)}


def fargate_fit(resources: JobResources) -> JobResources:
    """The smallest Fargate size holding ``resources`` (Fargate takes only fixed shapes)."""
    from dataclasses import replace

    for vcpus, (least, most, step) in FARGATE_SHAPES.items():
        if vcpus < resources.vcpus or most < resources.memory_mb:
            continue
        memory = max(least, -(-resources.memory_mb // step) * step)
        return replace(resources, vcpus=vcpus, memory_mb=memory)
    raise ConfigurationError(
        f"a job of {resources.vcpus} vCPUs and {resources.memory_mb} MiB does not fit Fargate "
        "(at most 16 vCPUs and 120 GiB): use an EC2 compute environment (platform='ec2')."
    )
