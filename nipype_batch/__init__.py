"""Run Nipype workflows as AWS Batch jobs: ``import nipype_batch`` then
``wf.run(plugin='AWSBatch', plugin_args={...})``.

Importing the package registers the plugin where Nipype looks plugins up by name
(``nipype.pipeline.plugins.AWSBatchPlugin``); there is no entry-point mechanism for plugins.
"""

from __future__ import annotations

import nipype.pipeline.plugins as _nipype_plugins

from .api import build_images
from .errors import (
    BatchJobError,
    ConfigurationError,
    ImageBuildError,
    LocalStackError,
    NipypeBatchError,
    StagingError,
)
from .forecasting.forecast import Forecast, forecast
from .images.publish import PublishedImage
from .plugin import BatchPlugin
from .report import write_report
from .settings import BatchSettings

__version__ = "0.1.0"

_nipype_plugins.AWSBatchPlugin = BatchPlugin

__all__ = [
    "BatchJobError",
    "BatchPlugin",
    "BatchSettings",
    "ConfigurationError",
    "Forecast",
    "ImageBuildError",
    "LocalStackError",
    "NipypeBatchError",
    "PublishedImage",
    "StagingError",
    "build_images",
    "forecast",
    "write_report",
]
