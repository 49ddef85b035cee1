"""What the commands share: ``--plugin-args`` (parsed and checked once), ``--json``, and a
command class that lists its positional arguments with their help, as argparse did.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

EXAMPLE = '{"job_queue": "my-queue", "bucket": "s3://my-bucket/x"}'
_JSON_KINDS = {list: "array", str: "string", int: "number", float: "number", bool: "boolean",
               type(None): "null"}


class PluginArgsError(click.BadParameter):
    """A ``--plugin-args`` that is not a JSON object; exit code 1, as before click."""

    exit_code = 1


class PluginArgs(click.ParamType):
    """The run's ``plugin_args``: a JSON object, given to the command as a dict.

    An empty string counts as not given (as it always has), so ``--plugin-args "$ARGS"`` works
    with ``ARGS`` unset.
    """

    name = "json"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> dict[str, Any] | None:
        if isinstance(value, dict) or value is None:
            return value
        if value == "":
            return None
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as exc:
            raise PluginArgsError(
                f"not JSON ({exc.msg} at line {exc.lineno} column {exc.colno}): write one JSON "
                f"object, quoted for the shell, e.g. --plugin-args '{EXAMPLE}'", ctx, param
            ) from exc
        if not isinstance(parsed, dict):
            kind = _JSON_KINDS.get(type(parsed), type(parsed).__name__)
            raise PluginArgsError(
                f"a JSON {kind}, not an object of plugin_args: write e.g. --plugin-args "
                f"'{EXAMPLE}'", ctx, param)
        return parsed


def plugin_args_option(help: str = "the run's plugin_args as JSON") -> Callable[[Any], Any]:
    """``--plugin-args JSON``, given to the command as ``plugin_args`` (a dict, or None)."""
    return click.option("--plugin-args", "plugin_args", type=PluginArgs(), metavar="JSON",
                        help=help)


def json_option(help: str) -> Callable[[Any], Any]:
    """``--json``: print the result as JSON (given to the command as ``as_json``)."""
    return click.option("--json", "as_json", is_flag=True, help=help)


class Argument(click.Argument):
    """A positional argument with a help text (click's have none)."""

    def __init__(self, *args: Any, help: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help = help


class Command(click.Command):
    """A command whose help lists its arguments' help texts before its options."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(p.human_readable_name, p.help) for p in self.params
                if isinstance(p, Argument) and p.help]
        if rows:
            with formatter.section("Arguments"):
                formatter.write_dl(rows)
        super().format_options(ctx, formatter)


def command(**kwargs: Any) -> Callable[[Any], Command]:
    """``click.command`` making a :class:`Command`."""
    return click.command(cls=Command, **kwargs)


class Group(click.Group):
    """The ``nipype-batch`` group: its commands listed in the order they were added."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


def examples(*lines: str) -> str:
    """An epilog of example command lines, kept as written (not rewrapped)."""
    return "\b\nexamples:\n" + "\n".join(f"  {line}" for line in lines)
