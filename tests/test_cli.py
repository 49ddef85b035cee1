"""The command line: ``--plugin-args`` is one shared option, checked before anything runs."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from nipype_batch.cli import group, main
from nipype_batch.cli.options import PluginArgs

TAKES_PLUGIN_ARGS = {
    "build": ["build", "study.py:workflow"],
    "forecast": ["forecast", "study.py:workflow"],
    "doctor": ["doctor"],
    "status": ["status", "work"],
    "cancel": ["cancel", "work"],
    "report": ["report", "work"],
    "logs": ["logs", "fit", "--work-dir", "work"],
}


def test_every_plugin_args_is_the_shared_option() -> None:
    declared = {name for name, command in group.commands.items()
                for param in command.params if param.name == "plugin_args"}
    assert declared == set(TAKES_PLUGIN_ARGS)
    assert all(isinstance(param.type, PluginArgs) for command in group.commands.values()
               for param in command.params if param.name == "plugin_args")


@pytest.fixture
def nothing_may_run(monkeypatch):
    """Fail the test if a command gets as far as loading a workflow or connecting."""
    import nipype_batch.api
    import nipype_batch.backend
    import nipype_batch.cli.workflow

    def forbidden(*_args, **_kwargs):
        raise AssertionError("a command ran with bad --plugin-args")

    monkeypatch.setattr(nipype_batch.cli.workflow, "load_workflow", forbidden)
    monkeypatch.setattr(nipype_batch.backend, "connect", forbidden)
    monkeypatch.setattr(nipype_batch.api, "build_images", forbidden)


@pytest.mark.parametrize("command", sorted(TAKES_PLUGIN_ARGS))
@pytest.mark.parametrize(("given", "problem"), [
    ("{job_queue: q}", r"not JSON \(Expecting property name .* at line 1 column 2\)"),
    ("job_queue=q", r"not JSON \(Expecting value at line 1 column 1\)"),
    ('["job_queue", "q"]', r"a JSON array, not an object of plugin_args"),
    ('"q"', r"a JSON string, not an object of plugin_args"),
])
def test_bad_plugin_args_fail_clearly_before_anything_runs(command, given, problem, tmp_path,
                                                           monkeypatch, capsys,
                                                           nothing_may_run) -> None:
    monkeypatch.chdir(tmp_path)  # "work" does not exist: the command must not get that far
    assert main([*TAKES_PLUGIN_ARGS[command], "--plugin-args", given]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "Invalid value for '--plugin-args': " in captured.err
    assert """e.g. --plugin-args '{"job_queue": "my-queue", "bucket": "s3://""" in captured.err
    assert re.search(problem, captured.err), captured.err


def test_plugin_args_parse_to_a_dict_and_empty_means_none() -> None:
    parse = PluginArgs().convert
    assert parse('{"backend": "local", "packages": ["dipy"]}', None, None) == {
        "backend": "local", "packages": ["dipy"]}
    assert parse("{}", None, None) == {}
    assert parse("", None, None) is None  # `--plugin-args "$UNSET"` as before


def test_usage_errors_and_help_keep_their_exit_codes(capsys) -> None:
    assert main(["--help"]) == 0
    assert "Run Nipype workflows as AWS Batch jobs." in capsys.readouterr().out
    assert main(["report", "-h"]) == 0
    assert "WORK_DIR  the workflow's base_dir" in capsys.readouterr().out
    assert main([]) == 2
    assert main(["frobnicate"]) == 2
    assert main(["logs", "x", "--lines", "many"]) == 2
    assert "'many' is not a valid integer" in capsys.readouterr().err


def test_module_runs_as_the_command() -> None:
    done = subprocess.run([sys.executable, "-m", "nipype_batch.cli", "policy", "b"],
                          capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr == "nipype-batch: 'b' is not an S3 URI: write s3://bucket/prefix\n"
