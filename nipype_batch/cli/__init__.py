"""``nipype-batch``: the command line.

    nipype-batch build my_study.py:workflow     # build and push the job images ahead of a run
    nipype-batch build my_study.py:make_wf --plugin-args '{"packages": ["dipy"]}' --json
    nipype-batch doctor my_study.py:make_wf --plugin-args '{"job_queue": "q", "bucket": "s3://b"}'
    nipype-batch report work/                   # the run's HTML report, Gantt chart and cost

Exit codes: 0 done; 1 a nipype-batch error (its message says what to fix, a bad --plugin-args
too); 2 bad usage.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence

import click

from ..errors import NipypeBatchError
from .environment import infra, local, policy
from .history import history
from .options import Group
from .runs import cancel, logs, report, status
from .workflow import EXAMPLES, build, doctor, forecast, load_workflow

__all__ = ["group", "load_workflow", "main"]


@click.group(cls=Group, help="Run Nipype workflows as AWS Batch jobs.", epilog=EXAMPLES,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="log progress")
def group(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")


for _command in (build, doctor, forecast, local, policy, status, cancel, report, logs, history,
                 infra):
    group.add_command(_command)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nipype-batch`` command: run it on ``argv``, return the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        with group.make_context("nipype-batch", args) as ctx:
            return group.invoke(ctx)
    except click.exceptions.Exit as done:  # --help
        return done.exit_code
    except click.ClickException as exc:  # bad usage, or a bad --plugin-args
        exc.show()
        return exc.exit_code
    except (NipypeBatchError, json.JSONDecodeError) as exc:
        print(f"nipype-batch: {exc}", file=sys.stderr)
        return 1
