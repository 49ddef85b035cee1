"""What one node asks of AWS Batch: vCPUs, memory, GPUs, time limit, queue and image.

:data:`NODE_OPTIONS` is the one list of the keys a node may set in ``node.plugin_args``: each
with its check, its help and how it becomes a field of :class:`JobResources`. Node validation,
the near-miss check, the plugin-level checks of the same values (:mod:`.settings`) and
:func:`resources_for` all read it. Pure functions of the node and the settings, so they are
checked for every node before anything is submitted.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError, closest_key, unknown_key_message

if TYPE_CHECKING:
    from .settings import BatchSettings

# How close a node key must be to one of ours to be taken for a typo of it rather than another
# plugin's key (difflib's ratio; 'vcpu' is, 'qsub_args' is not).
NEAR_MISS = 0.75


def _whole_number(least: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            return f"must be a whole number >= {least}."
        return None
    return check


def _attempts(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10:
        return "must be a whole number from 1 to 10 (AWS Batch's retry limits); 1 means no retry."
    return None


def _timeout(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 60:
        return ("must be a whole number of seconds >= 60 (AWS Batch's shortest attempt "
                "timeout).")
    return None


def _flag(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be True or False."


def _vcpus(node: Any, settings: BatchSettings) -> int:
    return max(settings.vcpus, int(getattr(node, "n_procs", 1) or 1))


def _memory_mb(node: Any, settings: BatchSettings) -> int:
    return max(settings.memory_mb, math.ceil(float(getattr(node, "mem_gb", 0) or 0) * 1024))


@dataclass(frozen=True)
class NodeOption:
    """One key a node may set in ``node.plugin_args``.

    Parameters
    ----------
    name
        The key, and the :class:`JobResources` field it sets (unless ``job_field`` is False).
    help
        One line for the docs.
    check
        What is wrong with a value (the end of the error message), or None when it is fine;
        None for keys taken as given. Plugin-level settings of the same name are checked
        with it too.
    default
        The job's value when the node sets none, from the node and the settings; None means
        the plugin-level setting of the same name.
    convert
        Applied to the value the job gets (given or default).
    job_field
        False for a key accepted but not a resource (Nipype's ``overwrite``).
    """

    name: str
    help: str
    check: Callable[[Any], str | None] | None = None
    default: Callable[[Any, BatchSettings], Any] | None = None
    convert: Callable[[Any], Any] | None = None
    job_field: bool = True


# In the order their values are checked (the first bad one is reported).
NODE_OPTIONS = (
    NodeOption("vcpus", "vCPUs of the node's job (instead of node.n_procs and the plugin's).",
               _whole_number(1), default=_vcpus),
    NodeOption("memory_mb", "Memory of the node's job in MiB (instead of node.mem_gb and the "
               "plugin's).", _whole_number(4), default=_memory_mb),
    NodeOption("gpus", "GPUs of the node's job.", _whole_number(0)),
    NodeOption("attempts", "Attempts of the node's job (1-10).", _attempts),
    NodeOption("timeout_s", "Per-attempt time limit of the node's job in seconds (>= 60).",
               _timeout),
    NodeOption("job_queue", "Job queue of the node's job."),
    NodeOption("image", "A ready image for the node's job, used as is."),
    NodeOption("base_image", "Image the node's job image is built on."),
    NodeOption("run_on_driver", "Run the node on the driver, not as a job.",
               default=lambda node, settings: False, convert=bool),
    NodeOption("pack", "Whether the node may share a job with other short nodes (packing); "
               "False: always a job of its own.", _flag, default=lambda node, settings: True,
               convert=bool),
    NodeOption("overwrite", "Nipype's flag, accepted: for these single values the node's "
               "value always wins.", job_field=False),
)
NODE_KEYS = frozenset(option.name for option in NODE_OPTIONS)


@dataclass(frozen=True)
class JobResources:
    """Resources of one job, after node overrides (a field per job option of NODE_OPTIONS)."""

    vcpus: int
    memory_mb: int
    gpus: int
    timeout_s: int | None
    job_queue: str | None
    image: str | None
    base_image: str | None
    run_on_driver: bool
    attempts: int = 1
    pack: bool = True


def check_option_values(values: dict[str, Any], where: str) -> None:
    """Raise :class:`ConfigurationError` for the first value of ``values`` its option refuses.

    Used for a node's plugin_args and for the plugin-level settings of the same names; None
    stands for "not set".
    """
    for option in NODE_OPTIONS:
        value = values.get(option.name)
        if option.check is None or value is None:
            continue
        problem = option.check(value)
        if problem:
            raise ConfigurationError(f"{where} {option.name}={value!r} {problem}")


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
    check_option_values(ours, where=f"node {node.fullname!r} plugin_args")
    return ours


def resources_for(node: Any, settings: BatchSettings) -> JobResources:
    """Resolve a node's resources.

    ``node.n_procs`` and ``node.mem_gb`` raise the plugin-level ``vcpus`` and ``memory_mb``
    (which act as floors: Nipype's default mem_gb of 0.2 is an estimate, not a limit to
    enforce); a value in ``node.plugin_args`` replaces both. Nipype's ``overwrite`` flag means
    "replace rather than extend": for these single values the node's value always wins.
    """
    args = node_plugin_args(node)
    values = {}
    for option in NODE_OPTIONS:
        if not option.job_field:
            continue
        if option.name in args:
            value = args[option.name]
        elif option.default is not None:
            value = option.default(node, settings)
        else:
            value = getattr(settings, option.name)
        values[option.name] = option.convert(value) if option.convert else value
    return JobResources(**values)


def describe_node_options() -> list[tuple[str, str]]:
    """``(key, help)`` of every per-node option, for docs and the CLI (as
    :func:`~nipype_batch.settings.describe_settings` for the plugin-level ones)."""
    return [(option.name, option.help) for option in NODE_OPTIONS]


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
