"""Where a run's log records go while its progress shows: a file, and only warnings on screen.

Nipype logs a few lines per node (``[Node] Setting-up``, ``Submitting``, ``Pending[3] ...``)
and so do we; in a terminal they would scroll the live view away, and off one they bury the
progress lines. While a run shows progress, every record of Nipype's loggers and ours goes to
``nipype_batch.log`` in the workflow's base directory, and warnings and errors are still
shown, through the view's own console. Off a terminal, Nipype's loggers are left alone when the
user set their levels, and ours when the application configured logging itself.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from typing import Any

from nipype import config as nipype_config

LOG_NAME = "nipype_batch.log"
NIPYPE_DEFAULT_LEVELS = {"workflow_level": "INFO", "interface_level": "INFO",
                         "utils_level": "INFO"}
_FORMAT = "%(asctime)s %(name)s %(levelname)s: %(message)s"
OURS = "nipype_batch"  # a StreamHandler of ours carries this attribute (see plugin)


class _Shown(logging.Handler):
    """Warnings and errors, handed to the view to print above itself."""

    def __init__(self, show: Callable[[str], None]) -> None:
        super().__init__(logging.WARNING)
        self.show = show
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.show(self.format(record))
        except Exception:
            self.handleError(record)


class RunLog:
    """Reroutes Nipype's and our loggers for one run; :meth:`restore` puts them back."""

    def __init__(self, path: str, show: Callable[[str], None], live: bool) -> None:
        self.path = path
        self.file = logging.FileHandler(path, encoding="utf-8")
        self.file.setFormatter(logging.Formatter(_FORMAT))
        self.shown = _Shown(show)
        self._saved: list[tuple[logging.Logger, list[logging.Handler], bool]] = []
        for name in ("nipype", "nipype_batch"):
            logger = logging.getLogger(name)
            if live or self._ours_to_reroute(logger):
                self._saved.append((logger, list(logger.handlers), logger.propagate))
                logger.handlers = [self.file, self.shown]
                # In a terminal nothing may write around the view, a root handler included.
                logger.propagate = logger.propagate and not live

    @staticmethod
    def _ours_to_reroute(logger: logging.Logger) -> bool:
        if logger.name == "nipype":
            return _nipype_levels_untouched()
        return any(getattr(h, OURS, False) for h in logger.handlers)

    @property
    def rerouted(self) -> list[str]:
        """Names of the loggers now writing to the file."""
        return [logger.name for logger, _handlers, _propagate in self._saved]

    def take(self, records: list[logging.LogRecord]) -> None:
        """Write records held since the plugin was made (see :class:`HeldRecords`)."""
        for record in records:
            self.file.handle(record)

    def restore(self) -> None:
        """Give every logger back its handlers; close the file."""
        for logger, handlers, propagate in self._saved:
            logger.handlers = handlers
            logger.propagate = propagate
        self._saved.clear()
        self.file.close()


def _nipype_levels_untouched() -> bool:
    """Whether Nipype's logging levels are its defaults (the user did not choose them)."""
    return all(str(nipype_config.get("logging", key, default)).upper() == default
               for key, default in NIPYPE_DEFAULT_LEVELS.items())


def start_run_log(path: str, progress: Any, held: HeldRecords | None = None) -> RunLog | None:
    """Reroute logging for a run showing ``progress``; None when progress is off."""
    # Nipype's own handlers go back first: RunLog saves and replaces them.
    records = held.hand_over() if held is not None else []
    if progress.mode == "off":
        return None
    run_log = RunLog(path, progress.say, live=progress.mode == "live")
    run_log.take(records)
    if run_log.rerouted:
        progress.say(f"nipype-batch: the log of this run is {path}")
    return run_log


class HeldRecords(logging.Handler):
    """Holds Nipype's records from the plugin's creation until its run starts.

    ``Workflow.run`` makes the plugin, then logs its settings, then calls the plugin's run:
    in a terminal those lines would land above the view. They are held, then written to the
    run's log file; if the run never starts they go, late, where they would have gone.
    """

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.logger = logging.getLogger("nipype")
        self.handlers = list(self.logger.handlers)
        self.logger.handlers = [self]
        self._finalizer = weakref.finalize(self, _give_back, self.logger, self.handlers,
                                           self.records)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def hand_over(self) -> list[logging.LogRecord]:
        """Put Nipype's handlers back and hand over what was held."""
        held = list(self.records)
        self.records.clear()
        self._finalizer()
        return held


def _give_back(logger: logging.Logger, handlers: list[logging.Handler],
               records: list[logging.LogRecord]) -> None:
    logger.handlers = handlers
    for record in records:
        for handler in handlers:
            if record.levelno >= handler.level:
                handler.handle(record)


def hold_nipype_records(progress_setting: Any, stream: Any) -> HeldRecords | None:
    """Hold Nipype's records if this run will draw a live view on ``stream``."""
    live = progress_setting == "live" or (progress_setting in ("auto", True)
                                          and _is_terminal(stream))
    if not live or any(isinstance(h, HeldRecords) for h in logging.getLogger("nipype").handlers):
        return None
    return HeldRecords()


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def show_our_log() -> None:
    """Make our INFO lines visible next to Nipype's when the application set up no logging."""
    package_log = logging.getLogger("nipype_batch")
    if package_log.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler()
    setattr(handler, OURS, True)  # a run's log may take this handler's records (RunLog)
    handler.setFormatter(logging.Formatter("%(asctime)s nipype_batch %(levelname)s: %(message)s",
                                           "%y%m%d-%H:%M:%S"))
    package_log.addHandler(handler)
    package_log.setLevel(logging.INFO)
