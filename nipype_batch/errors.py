"""Errors raised by nipype-batch: each names the resource, the problem and the fix."""


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


class InfrastructureError(NipypeBatchError):
    """``nipype-batch infra`` cannot make, show or remove the resources a run needs."""
