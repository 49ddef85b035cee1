"""Plugin settings: one typed object, validated at construction, defaults in one place.

Every field carries a one-line ``help`` that the docs and error messages reuse. Node-level
overrides (``node.plugin_args``) are defined and resolved in :mod:`nipype_batch.resources`,
whose checks also apply to the settings of the same names (``vcpus``, ``attempts``...).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from .errors import ConfigurationError, unknown_key_message
from .platforms import ARCHITECTURES, CHOICES, DEFAULT_ARCHITECTURE, DEFAULT_PLATFORM, PLATFORMS
from .resources import NODE_OPTIONS, check_option_values

BACKEND_ENV = "NIPYPE_BATCH_BACKEND"
Backend = Literal["local", "aws"]

# Credentials that must never travel in a job's environment (jobs get theirs from a role).
SECRET_NAMES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID")

# Keys Nipype's DistributedPluginBase itself reads from plugin_args.
NIPYPE_KEYS = {"max_jobs", "status_callback"}

# Keys users bring from other plugins, with what to write instead.
FOREIGN_KEYS = {
    "n_procs": "AWSBatch runs every node as its own job: limit concurrency with 'max_jobs', "
    "and give a node more vCPUs with node.n_procs or node.plugin_args={'vcpus': N}",
    "memory_gb": "memory is asked per node: set node.mem_gb or node.plugin_args={'memory_mb': N}",
    "qsub_args": "that is an SGE/PBS setting: use 'job_queue', 'vcpus' and 'memory_mb'",
    "sbatch_args": "that is a SLURM setting: use 'job_queue', 'vcpus' and 'memory_mb'",
}


def _meta(help_text: str) -> dict[str, Any]:
    return {"help": help_text}


@dataclass
class BatchSettings:
    """Settings of one AWSBatch run, built from ``plugin_args``.

    Parameters are documented by each field's ``help`` metadata; see :func:`describe_settings`.
    """

    profile: str | None = field(
        default=None,
        metadata=_meta(
            "Name of a profile made by `nipype-batch infra up --name NAME`: its queue, bucket, "
            "region, job role and repository become the defaults of the other keys."
        ),
    )
    backend: Backend | None = field(
        default=None,
        metadata=_meta(
            "'local' runs on the emulated stack on this machine; 'aws' on real AWS Batch. "
            "Default: 'aws' when job_queue or bucket is given, else 'local'."
        ),
    )
    job_queue: str | None = field(
        default=None, metadata=_meta("AWS Batch job queue (name or ARN); required on 'aws'.")
    )
    bucket: str | None = field(
        default=None,
        metadata=_meta("S3 staging location 's3://bucket/prefix'; required on 'aws'."),
    )
    region: str | None = field(
        default=None,
        metadata=_meta("AWS region; default from the AWS config/env."),
    )
    aws_profile: str | None = field(
        default=None, metadata=_meta("Named AWS profile for credentials.")
    )
    endpoint_url: str | None = field(
        default=None,
        metadata=_meta("Custom endpoint for an AWS-compatible service (emulators)."),
    )
    aws_max_attempts: int = field(
        default=10,
        metadata=_meta(
            "Tries of each AWS call before its error is raised; throttling and network failures "
            "are retried with backoff in between (about 2 minutes at 10)."
        ),
    )
    image: str | None = field(
        default=None,
        metadata=_meta(
            "A ready image for every job, used as is (checked: same Python, nipype and "
            "cloudpickle as the driver, and nipype-batch inside)."
        ),
    )
    ecr_repository: str = field(
        default="nipype-batch",
        metadata=_meta("ECR repository of the job images on 'aws' (created if missing)."),
    )
    base_image: str | None = field(
        default=None,
        metadata=_meta("Image to add the Python packages to; default: the official Python "
                       "image of the driver's minor version (ECR Public), for the queue's CPU."),
    )
    packages: list[str] = field(
        default_factory=list,
        metadata=_meta(
            "Extra pip requirements of the jobs, pinned to the driver's versions (the imports of "
            "Function nodes and the modules of interfaces are found without this)."
        ),
    )
    requirements: str | None = field(
        default=None,
        metadata=_meta("Path of a pip requirements file whose packages every job image gets."),
    )
    environment: dict[str, str] = field(
        default_factory=dict,
        metadata=_meta(
            "Extra environment variables for every job, e.g. {'OMP_NUM_THREADS': '1'}. Beyond "
            "what a job's overrides hold (about 7000 characters) they travel in its S3 payload."
        ),
    )
    platform: str = field(
        default=DEFAULT_PLATFORM,
        metadata=_meta(
            "What the queue's compute environment runs on: 'ec2' (on-demand), 'spot' (EC2 Spot: "
            "the report prices it so) or 'fargate' (job definitions and sizes follow). An infra "
            "profile sets it."
        ),
    )
    execution_role_arn: str | None = field(
        default=None,
        metadata=_meta("On Fargate: the role that pulls the image and writes logs."),
    )
    job_role_arn: str | None = field(
        default=None, metadata=_meta("IAM role the jobs assume (S3 access to the bucket).")
    )
    vcpus: int = field(default=1, metadata=_meta("Least vCPUs of a job (node.n_procs raises it)."))
    memory_mb: int = field(
        default=2048, metadata=_meta("Least memory of a job in MiB (node.mem_gb raises it).")
    )
    gpus: int = field(default=0, metadata=_meta("GPUs of a job."))
    attempts: int = field(
        default=3,
        metadata=_meta(
            "Attempts per job (1-10). A lost host, a Spot reclaim or a container killed from "
            "outside is retried; a node's own exception never is."
        ),
    )
    timeout_s: int | None = field(
        default=None, metadata=_meta("Per-attempt time limit in seconds (>= 60).")
    )
    architecture: str = field(
        default=DEFAULT_ARCHITECTURE,
        metadata=_meta(
            "CPU of the queue's instances: 'x86_64' (AWS's 'optimal' types) or 'arm64' "
            "(Graviton). Images and their wheels are built for it, whatever the driver's CPU."
        ),
    )
    ephemeral_storage_gb: int | None = field(
        default=None,
        metadata=_meta(
            "Scratch disk of each job on Fargate, 21-200 GiB (Fargate gives 20 without it): "
            "for nodes whose inputs, outputs and temporary files exceed that. On EC2 jobs "
            "share the instance's disk (Batch's default AMI: a 30 GiB volume)."
        ),
    )
    memory_retry: bool = field(
        default=True,
        metadata=_meta(
            "A job killed for memory is submitted again with twice the memory, twice at most "
            "(within this machine's memory on the local stack, Fargate's 120 GiB); False "
            "ends it as failed."
        ),
    )
    budget_usd: float | None = field(
        default=None,
        metadata=_meta(
            "Most the run may spend, in US dollars, at the report's prices: the driver keeps "
            "a running estimate from the jobs' own times (and their run history) and submits "
            "no job that would pass it; the run then ends with an error naming the spend and "
            "what remains. Run again with more: finished nodes come from the cache."
        ),
    )
    budget_action: str = field(
        default="finish",
        metadata=_meta(
            "What happens to running jobs when the budget stops a run: 'finish' (let them end "
            "and keep their results; they may pass the budget by what they still run) or "
            "'cancel' (terminate them at once)."
        ),
    )
    fetch_outputs: bool | None = field(
        default=None,
        metadata=_meta(
            "Download every output file to the driver after each job. Default: yes on 'local' "
            "(the emulated S3 lives in memory), no on 'aws' (outputs stay in S3 and come down "
            "only when a node on the driver needs them)."
        ),
    )
    packing: str = field(
        default="auto",
        metadata=_meta(
            "'auto' packs short nodes into one job (sized from the run history: AWS Batch "
            "spends tens of seconds on each job before it runs); 'off' runs every node as a "
            "job of its own."
        ),
    )
    pack_target_s: float = field(
        default=180.0,
        metadata=_meta("Longest estimated run of a packed job, in seconds (AWS advises jobs "
                       "of 3-5 minutes)."),
    )
    job_overhead_s: float | None = field(
        default=None,
        metadata=_meta(
            "Seconds a job waits before it runs, which packing saves per job avoided. "
            "Default: the backend's (measured on the local stack; AWS's published figures)."
        ),
    )
    poll_min_s: float = field(
        default=0.5,
        metadata=_meta("Shortest interval between status polls, used while jobs run."),
    )
    poll_max_s: float = field(
        default=10.0,
        metadata=_meta(
            "Longest interval between status polls, reached while every job is queued. "
            "(These replace Nipype's poll_sleep_duration, which would cost each dependency "
            "level a full interval.)"
        ),
    )
    runnable_warning_s: float = field(
        default=600.0,
        metadata=_meta(
            "Warn, with the reason Batch gives, about a job still RUNNABLE (waiting for an "
            "instance) after this many seconds. A reason Batch calls MISCONFIGURATION ends "
            "the run at once: that job would never start."
        ),
    )
    progress: str | bool = field(
        default="auto",
        metadata=_meta(
            "Progress while the run works: 'live' (a panel redrawn in a terminal), 'lines' "
            "(a log line per change), 'auto' (live in a terminal, else lines) or False (off)."
        ),
    )
    report: bool = field(
        default=True,
        metadata=_meta(
            "After the run, write nipype_batch_report.html (Gantt chart, resources, failures, "
            "estimated cost) and its .png next to the workflow (in its base_dir)."
        ),
    )
    job_name_prefix: str = field(
        default="nipype", metadata=_meta("Prefix of every Batch job name.")
    )
    max_jobs: float = field(
        default=float("inf"), metadata=_meta("Most jobs in flight at once (Nipype's max_jobs).")
    )
    status_callback: Any = field(
        default=None, metadata=_meta("Nipype status callback, called on the driver.")
    )

    @classmethod
    def from_plugin_args(cls, plugin_args: dict[str, Any] | None) -> BatchSettings:
        """Build and validate settings, naming any unknown key with a suggestion."""
        plugin_args = dict(plugin_args or {})
        known = {f.name for f in fields(cls)}
        for key in plugin_args:
            if key in known:
                continue
            if key in FOREIGN_KEYS:
                raise ConfigurationError(
                    f"plugin_args key {key!r} is not an AWSBatch setting: {FOREIGN_KEYS[key]}."
                )
            raise ConfigurationError(unknown_key_message(key, known, "plugin_args"))
        if plugin_args.get("profile"):
            from .profiles import load_profile

            plugin_args = {**load_profile(plugin_args["profile"]).settings, **plugin_args}
        settings = cls(**plugin_args)
        settings._resolve_defaults()
        settings.validate()
        return settings

    def _resolve_defaults(self) -> None:
        if self.backend is None:
            env = os.environ.get(BACKEND_ENV)
            if env:
                self.backend = env  # type: ignore[assignment]
            else:
                self.backend = "aws" if (self.job_queue or self.bucket) else "local"
        if self.region is None:
            self.region = (
                os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None
            )
        if self.fetch_outputs is None:
            self.fetch_outputs = self.backend == "local"
        if isinstance(self.packages, str):
            self.packages = [self.packages]

    def validate(self) -> None:
        """Raise :class:`ConfigurationError` naming the first invalid value and its fix."""
        if self.backend not in ("local", "aws"):
            raise ConfigurationError(
                f"backend={self.backend!r} is not known: use 'local' (emulated stack on this "
                "machine) or 'aws'."
            )
        if self.backend == "aws":
            missing = [k for k in ("job_queue", "bucket") if not getattr(self, k)]
            if missing:
                raise ConfigurationError(
                    f"backend 'aws' needs {' and '.join(missing)}: e.g. plugin_args="
                    "{'job_queue': 'my-queue', 'bucket': 's3://my-bucket/nipype'}; "
                    "or use plugin_args={'backend': 'local'} to try the workflow on this machine."
                )
        if self.bucket is not None and (
            not str(self.bucket).startswith("s3://") or not self.bucket_and_prefix()[0]
        ):
            raise ConfigurationError(
                f"bucket={self.bucket!r} must be an S3 URI such as 's3://my-bucket/prefix'."
            )
        # the defaults of the node options of the same names, checked as those are
        check_option_values({option.name: getattr(self, option.name, None)
                             for option in NODE_OPTIONS}, where="plugin_args")
        if (isinstance(self.aws_max_attempts, bool) or not isinstance(self.aws_max_attempts, int)
                or not 1 <= self.aws_max_attempts <= 50):
            raise ConfigurationError(
                f"aws_max_attempts={self.aws_max_attempts!r} must be a whole number from 1 to 50."
            )
        numbers = (isinstance(self.poll_min_s, int | float)
                   and isinstance(self.poll_max_s, int | float))
        if not (numbers and 0.05 <= self.poll_min_s <= self.poll_max_s <= 600):
            raise ConfigurationError(
                f"poll_min_s={self.poll_min_s!r} and poll_max_s={self.poll_max_s!r} must be "
                "seconds with 0.05 <= poll_min_s <= poll_max_s <= 600."
            )
        if not isinstance(self.packages, list | tuple) or not all(
            isinstance(p, str) for p in self.packages
        ):
            raise ConfigurationError(
                f"packages={self.packages!r} must be a list of pip requirements, "
                "e.g. ['dipy', 'scikit-learn==1.5.2']."
            )
        if not isinstance(self.environment, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.environment.items()
        ):
            raise ConfigurationError(
                f"environment={self.environment!r} must map names to string values, "
                "e.g. {'OMP_NUM_THREADS': '1'}."
            )
        reserved = sorted(k for k in self.environment if k.startswith("AWS_BATCH"))
        if reserved:
            raise ConfigurationError(
                f"plugin_args['environment'] holds {', '.join(reserved)}: AWS Batch reserves "
                "the names that start with AWS_BATCH for its own variables and refuses the "
                "job. Rename them."
            )
        leaked = sorted(set(self.environment) & set(SECRET_NAMES))
        if leaked and self.backend == "aws" and not self.endpoint_url:
            raise ConfigurationError(
                f"plugin_args['environment'] holds {', '.join(leaked)}: credentials must not "
                "travel in job environments, where DescribeJobs shows them to anyone who can "
                "list jobs. Give the jobs a role with plugin_args['job_role_arn'] instead."
            )
        if self.platform not in PLATFORMS:
            raise ConfigurationError(
                f"platform={self.platform!r} is not known: use {CHOICES}."
            )
        if self.platform == "fargate" and self.backend == "aws" and not self.execution_role_arn:
            raise ConfigurationError(
                "platform 'fargate' needs execution_role_arn (the role that pulls the image "
                "and writes logs): `nipype-batch infra up --platform fargate` makes one and "
                "its profile sets it."
            )
        if self.architecture not in ARCHITECTURES:
            raise ConfigurationError(
                f"architecture={self.architecture!r} is not known: use 'x86_64' (default; "
                "AWS's optimal instance types) or 'arm64' (Graviton).")
        self.architecture = ARCHITECTURES[self.architecture].name
        if self.ephemeral_storage_gb is not None and (
                isinstance(self.ephemeral_storage_gb, bool)
                or not isinstance(self.ephemeral_storage_gb, int)
                or not 21 <= self.ephemeral_storage_gb <= 200):
            raise ConfigurationError(
                f"ephemeral_storage_gb={self.ephemeral_storage_gb!r} must be a whole number of "
                "GiB from 21 to 200 (Fargate's range; without it a job gets 20 GiB).")
        if not isinstance(self.memory_retry, bool):
            raise ConfigurationError(
                f"memory_retry={self.memory_retry!r} must be True (a job killed for memory is "
                "submitted again with more) or False.")
        if self.budget_usd is not None and (
                isinstance(self.budget_usd, bool) or not isinstance(self.budget_usd, int | float)
                or not self.budget_usd > 0):
            raise ConfigurationError(
                f"budget_usd={self.budget_usd!r} must be a positive number of US dollars, "
                "e.g. 25.0 (or None: no budget).")
        if self.budget_action not in ("finish", "cancel"):
            raise ConfigurationError(
                f"budget_action={self.budget_action!r} must be 'finish' (running jobs end, "
                "their results kept) or 'cancel' (running jobs are terminated).")
        if self.packing not in ("auto", "off"):
            raise ConfigurationError(
                f"packing={self.packing!r} must be 'auto' (short nodes share jobs) or 'off' "
                "(a job per node).")
        for name, least in (("pack_target_s", 1.0), ("job_overhead_s", 0.0),
                            ("runnable_warning_s", 0.0)):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(
                    value, int | float) or value < least):
                raise ConfigurationError(
                    f"{name}={value!r} must be a number of seconds >= {least:g}.")
        if self.progress not in ("auto", "live", "lines", "off", False, True):
            raise ConfigurationError(
                f"progress={self.progress!r} must be 'auto', 'live', 'lines' or False."
            )
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", str(self.job_name_prefix)):
            raise ConfigurationError(
                f"job_name_prefix={self.job_name_prefix!r} must start with a letter or digit "
                "and hold only ASCII letters, digits, '-' and '_' (Batch job name rules), "
                "e.g. 'mystudy'."
            )

    def bucket_and_prefix(self) -> tuple[str, str]:
        """Split ``s3://bucket/prefix`` into ``(bucket, prefix)``; prefix has no slashes at ends."""
        assert self.bucket is not None
        rest = self.bucket[len("s3://") :]
        name, _, prefix = rest.partition("/")
        return name, prefix.strip("/")


def describe_settings() -> list[tuple[str, str, str]]:
    """``(name, default, help)`` of every setting, for docs and the CLI."""
    rows = []
    for f in fields(BatchSettings):
        default = f.default_factory() if callable(f.default_factory) else f.default  # type: ignore[misc]
        rows.append((f.name, repr(default), f.metadata.get("help", "")))
    return rows
