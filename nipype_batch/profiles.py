"""Named profiles: what ``nipype-batch infra up`` made, for ``plugin_args={'profile': NAME}``.

A profile is a small JSON file, ``$NIPYPE_BATCH_HOME/profiles/NAME.json`` (default
``~/.config/nipype-batch``). It names resources and holds no secret: credentials stay wherever
boto3 finds them.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigurationError

HOME_ENV = "NIPYPE_BATCH_HOME"


@dataclass
class Profile:
    """The outcome of ``infra up``.

    Parameters
    ----------
    name
        The infrastructure's name (``--name``), also the profile's.
    settings
        ``plugin_args`` defaults for a run on it: backend, job_queue, bucket, region,
        job_role_arn, ecr_repository and, for an emulator, endpoint_url.
    resources
        Kind -> ARN of each resource ``up`` made, for reference (``down`` finds them by name
        and tag, not from this file).
    spec
        The :class:`~nipype_batch.infra.InfraSpec` ``up`` was given (platform, max_vcpus, ...),
        the defaults of the next ``up``.
    """

    name: str
    settings: dict[str, Any]
    resources: dict[str, str] = field(default_factory=dict)
    spec: dict[str, Any] = field(default_factory=dict)


def profiles_dir() -> Path:
    """Where profiles live: ``$NIPYPE_BATCH_HOME/profiles``."""
    home = os.environ.get(HOME_ENV) or "~/.config/nipype-batch"
    return Path(home).expanduser() / "profiles"


def profile_path(name: str) -> Path:
    """The file of profile ``name``."""
    return profiles_dir() / f"{name}.json"


def save_profile(profile: Profile) -> Path:
    """Write ``profile`` atomically; return its path."""
    path = profile_path(profile.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(asdict(profile), indent=1, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


def load_profile(name: str) -> Profile:
    """Read profile ``name``; a missing one is an error saying how to make it."""
    path = profile_path(name)
    try:
        return Profile(**json.loads(path.read_text()))
    except FileNotFoundError:
        known = sorted(p.stem for p in profiles_dir().glob("*.json"))
        raise ConfigurationError(
            f"no profile {name!r} in {profiles_dir()} (known: {', '.join(known) or 'none'}): "
            f"create it with `nipype-batch infra up --name {name}`."
        ) from None
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigurationError(
            f"profile {name!r} cannot be read from {path}: {exc}. Rewrite it with "
            f"`nipype-batch infra up --name {name}`."
        ) from exc


def delete_profile(name: str) -> bool:
    """Remove profile ``name``; False if there was none."""
    path = profile_path(name)
    existed = path.exists()
    path.unlink(missing_ok=True)
    return existed
