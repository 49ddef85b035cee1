"""Errors raised by nipype-batch: each names the resource, the problem and the fix."""

import difflib
from collections.abc import Collection


class NipypeBatchError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigurationError(NipypeBatchError):
    """The plugin arguments or a node's plugin_args are invalid; raised before any submission."""


class LocalStackError(NipypeBatchError):
    """The local stack (Docker daemon, registry, emulated AWS) cannot be started or reached."""


class ImageBuildError(NipypeBatchError):
    """The job image could not be built or pushed; the message holds the failing step's log."""


class StagingError(NipypeBatchError):
    """A file could not be moved between the driver, S3 and a job."""


class BatchJobError(NipypeBatchError):
    """AWS Batch refused a request or lost a job."""


class BudgetExceededError(NipypeBatchError):
    """The run stopped submitting jobs at its ``budget_usd``; a rerun with more continues."""


class InfrastructureError(NipypeBatchError):
    """``nipype-batch infra`` cannot make, show or remove the resources a run needs."""


def closest_key(key: str, known: Collection[str], cutoff: float = 0.6) -> str | None:
    """The known key that ``key`` most likely misspells, if one is close enough (difflib)."""
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=cutoff)
    return close[0] if close else None


def unknown_key_message(key: str, known: Collection[str], where: str, *, cutoff: float = 0.6,
                        list_known: bool = True) -> str:
    """Say that ``key`` is unknown in ``where``, suggesting the closest known key if any.

    Every "did you mean" of the package (plugin-level and node-level keys) is worded here.
    """
    close = closest_key(key, known, cutoff)
    hint = f" Did you mean {close!r}?" if close else ""
    listed = f" Known keys: {', '.join(sorted(known))}." if list_known else ""
    return f"{where} key {key!r} is not known.{hint}{listed}"
