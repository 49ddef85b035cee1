"""``nipype-batch build`` and ``doctor``: the commands that load a user's workflow."""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import click

from ..errors import NipypeBatchError
from .options import Argument, command, examples, json_option, plugin_args_option

EXAMPLES = examples(
    """nipype-batch doctor --plugin-args '{"job_queue": "my-queue", "bucket": "s3://my-bucket/x"}'""",
    "nipype-batch build my_study.py:workflow",
    """nipype-batch build my_study.py:make_workflow --plugin-args '{"backend": "local"}'""",
    "nipype-batch build mylab.pipelines:dwi_workflow --json",
    "nipype-batch infra up --name lab --region us-east-1   # bucket, roles, queue; profile 'lab'",
)


def load_workflow(target: str) -> Any:
    """A Workflow from ``file.py:NAME`` or ``module:NAME``; NAME may be a function returning it.

    The script is imported, not run: code under ``if __name__ == '__main__':`` does not execute.
    """
    where, _, name = target.rpartition(":")
    if not where or not name:
        raise NipypeBatchError(
            f"{target!r} names no workflow: write FILE.py:NAME or MODULE:NAME, e.g. "
            "my_study.py:workflow"
        )
    if where.endswith(".py"):
        path = Path(where).resolve()
        if not path.exists():
            raise NipypeBatchError(f"no such file: {path}")
        sys.path.insert(0, str(path.parent))  # the script's own helper modules
        spec = importlib.util.spec_from_file_location(path.stem, path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(where)
    try:
        found = getattr(module, name)
    except AttributeError as exc:
        raise NipypeBatchError(f"{where} has no attribute {name!r}") from exc
    workflow = found() if callable(found) and not hasattr(found, "run") else found
    if not hasattr(workflow, "_create_flat_graph"):
        raise NipypeBatchError(
            f"{target} is a {type(workflow).__name__}, not a Nipype Workflow (or a function "
            "returning one)"
        )
    return workflow


@command(short_help="build and push the job images of a workflow ahead of a run",
               epilog=EXAMPLES)
@click.argument("workflow", cls=Argument, help="FILE.py:NAME or MODULE:NAME of a Workflow (or "
                                               "a function returning one)")
@plugin_args_option()
@json_option("print the images as JSON")
def build(workflow: str, plugin_args: dict[str, Any] | None, as_json: bool) -> int:
    from ..api import build_images

    images = build_images(load_workflow(workflow), plugin_args or {})
    if as_json:
        print(json.dumps([vars(image) for image in images], indent=1))
        return 0
    for image in images:
        action = ("built and pushed" if image.built else "pushed" if image.pushed
                  else "already published")
        print(f"{image.ref}  {action} in {image.seconds:.1f} s")
    if not images:
        print("no node of this workflow runs as a job: nothing to build")
    return 0


@command(short_help="forecast a workflow's jobs, time and cost before running it",
         epilog=examples("nipype-batch forecast my_study.py:workflow --subjects 1000",
                         "nipype-batch forecast my_study.py:workflow --platform fargate --json",
                         "nipype-batch forecast my_study.py:workflow --max-vcpus 256"))
@click.argument("workflow", cls=Argument, help="FILE.py:NAME or MODULE:NAME of a Workflow (or "
                                               "a function returning one)")
@plugin_args_option()
@click.option("--subjects", type=click.IntRange(min=1),
              help="give the outermost iterable this many values (scale a forecast from a "
                   "few subjects already run)")
@click.option("--platform", type=click.Choice(["ec2", "spot", "fargate"]),
              help="where the jobs would run (default: the plugin_args', else ec2)")
@click.option("--max-vcpus", type=click.IntRange(min=1), default=64, show_default=True,
              help="the queue's vCPU limit (its compute environment's maxvCpus)")
@json_option("print the forecast as JSON")
def forecast(workflow: str, plugin_args: dict[str, Any] | None, subjects: int | None,
             platform: str | None, max_vcpus: int, as_json: bool) -> int:
    from ..forecasting.forecast import forecast as make_forecast

    args = dict(plugin_args or {})
    if platform:
        args["platform"] = platform
    result = make_forecast(load_workflow(workflow), args, subjects=subjects,
                           max_vcpus=max_vcpus)
    print(json.dumps(result.to_json(), indent=1) if as_json else result.text())
    return 0


@command(short_help="check credentials, bucket, queue, capacity, Docker and a workflow's "
                          "dependencies without submitting anything",
               epilog=examples("""nipype-batch doctor --plugin-args '{"job_queue": "q", """
                               """"bucket": "s3://b/p"}'""",
                               "nipype-batch doctor my_study.py:workflow"))
@click.argument("workflow", cls=Argument, required=False,
                help="FILE.py:NAME or MODULE:NAME (optional)")
@plugin_args_option()
@json_option("print the checks as JSON")
def doctor(workflow: str | None, plugin_args: dict[str, Any] | None, as_json: bool) -> int:
    from ..backend import connect
    from ..images.build import ensure_base_image
    from ..images.docker import connect_docker
    from ..images.plan import plan_images
    from ..preflight import Check, run_checks
    from ..resources import runs_on_driver
    from ..settings import BatchSettings

    checks: list[Check] = []
    settings = BatchSettings.from_plugin_args(plugin_args or {})
    checks.append(Check("settings", True, f"backend {settings.backend}"))
    nodes: list[Any] = []
    if workflow:
        graph = load_workflow(workflow)._create_flat_graph()
        nodes = [n for n in graph.nodes() if not runs_on_driver(n, settings)]
        checks.append(Check("workflow", True, f"{len(nodes)} node(s) run as jobs"))
    docker = None
    if not settings.image:
        try:
            docker = connect_docker()
            checks.append(Check("docker", True, "daemon answers"))
        except NipypeBatchError as exc:
            checks.append(Check("docker", False, str(exc)))
    try:
        cloud = connect(settings)
        checks.extend(run_checks(settings, cloud, nodes))
        if nodes:
            specs, _ready = plan_images(nodes, settings, cloud.base_image)
            checks.append(Check("dependencies", True, f"{len(set(specs.values()))} image(s)"))
            for spec in dict.fromkeys(specs.values()):
                if docker is not None:
                    ensure_base_image(docker, spec.base_image)
                    checks.append(Check(f"base image {spec.base_image}", True,
                                        "present, Python matches"))
    except NipypeBatchError as exc:
        checks.append(Check("set-up", False, str(exc)))
    if as_json:
        print(json.dumps([vars(check) for check in checks], indent=1))
    else:
        for check in checks:
            print(f"{'ok ' if check.ok else 'BAD'}  {check.name}: {check.detail}")
    return 0 if all(check.ok for check in checks) else 1
