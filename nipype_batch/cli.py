"""``nipype-batch``: the command line.

    nipype-batch build my_study.py:workflow     # build and push the job images ahead of a run
    nipype-batch build my_study.py:make_wf --plugin-args '{"packages": ["dipy"]}' --json
    nipype-batch doctor my_study.py:make_wf --plugin-args '{"job_queue": "q", "bucket": "s3://b"}'
    nipype-batch report work/                   # the run's HTML report, Gantt chart and cost

Exit codes: 0 done; 1 a nipype-batch error (its message says what to fix); 2 bad usage.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import sys
from pathlib import Path
from typing import Any

from .errors import NipypeBatchError
from .platforms import CAPABILITIES, DEFAULT_PLATFORM, PLATFORMS, capability

EXAMPLES = """examples:
  nipype-batch doctor --plugin-args '{"job_queue": "my-queue", "bucket": "s3://my-bucket/x"}'
  nipype-batch build my_study.py:workflow
  nipype-batch build my_study.py:make_workflow --plugin-args '{"backend": "local"}'
  nipype-batch build mylab.pipelines:dwi_workflow --json
  nipype-batch infra up --name lab --region us-east-1   # bucket, roles, queue; profile 'lab'
"""

INFRA_EXAMPLES = """examples:
  nipype-batch infra up --name lab --platform spot --max-vcpus 256 --region us-east-1
  nipype-batch infra show --name lab
  nipype-batch infra down --name lab          # asks first; refuses while jobs run
  nipype-batch infra up --local --name try    # on the shared local stack (nipype-batch local up)
"""


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


def _build(args: argparse.Namespace) -> int:
    from .api import build_images

    plugin_args = json.loads(args.plugin_args) if args.plugin_args else {}
    images = build_images(load_workflow(args.workflow), plugin_args)
    if args.json:
        print(json.dumps([vars(image) for image in images], indent=1))
        return 0
    for image in images:
        action = ("built and pushed" if image.built else "pushed" if image.pushed
                  else "already published")
        print(f"{image.ref}  {action} in {image.seconds:.1f} s")
    if not images:
        print("no node of this workflow runs as a job: nothing to build")
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from .cloud import connect
    from .images.build import ensure_base_image
    from .images.docker import connect_docker
    from .images.plan import plan_images
    from .preflight import Check, run_checks
    from .resources import runs_on_driver
    from .settings import BatchSettings

    checks: list[Check] = []
    settings = BatchSettings.from_plugin_args(
        json.loads(args.plugin_args) if args.plugin_args else {})
    checks.append(Check("settings", True, f"backend {settings.backend}"))
    nodes: list[Any] = []
    if args.workflow:
        graph = load_workflow(args.workflow)._create_flat_graph()
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
    if args.json:
        print(json.dumps([vars(check) for check in checks], indent=1))
    else:
        for check in checks:
            print(f"{'ok ' if check.ok else 'BAD'}  {check.name}: {check.detail}")
    return 0 if all(check.ok for check in checks) else 1


def _local(args: argparse.Namespace) -> int:
    from .local import stack

    if args.action == "up":
        running = stack.up()
        print(f"local stack up: emulator {running.endpoint_url} (pid {running.server.pid}), "
              f"registry {running.registry_address}, queue {running.job_queue}, "
              f"bucket s3://{running.bucket}")
        print("runs with backend 'local' now use it and leave their jobs running if they die; "
              "stop it with `nipype-batch local down`")
        return 0
    if args.action == "down":
        print("local stack stopped" if stack.down() else "no shared local stack was running")
        return 0
    shared = stack.shared_emulator()
    if shared is None:
        print("no shared local stack (each run starts its own)")
        return 1
    print(f"local stack up: emulator http://127.0.0.1:{shared.port} (pid {shared.pid})")
    return 0


def _policy(args: argparse.Namespace) -> int:
    from .aws.iam import job_role_policy

    if not args.location.startswith("s3://"):
        raise NipypeBatchError(f"{args.location!r} is not an S3 URI: write s3://bucket/prefix")
    bucket, _, prefix = args.location[len("s3://"):].partition("/")
    print(json.dumps(job_role_policy(bucket, prefix), indent=2))
    return 0


def _journalled(args: argparse.Namespace) -> tuple[Any, list[dict[str, Any]], dict[str, Any]]:
    from .cloud import connect
    from .journal import Journal
    from .settings import BatchSettings

    if not Path(args.work_dir).is_dir():
        raise NipypeBatchError(f"no such work directory: {args.work_dir}")
    entries = list(Journal(args.work_dir).entries())
    settings = BatchSettings.from_plugin_args(
        json.loads(args.plugin_args) if args.plugin_args else {})
    if not entries:
        return None, [], {}
    cloud = connect(settings)
    return cloud, entries, cloud.batch.describe(e["job_id"] for e in entries)


def _status(args: argparse.Namespace) -> int:
    """Jobs in flight (from the journal, asked of Batch), then the finished ones by outcome."""
    from .report import collect_jobs

    _cloud, entries, statuses = _journalled(args)
    in_flight = []
    for entry in entries:
        status = statuses.get(entry["job_id"])
        in_flight.append({"state": status.state.value if status else "UNKNOWN",
                          "job_id": entry["job_id"], "job_name": entry["job_name"],
                          "node_dir": entry["node_dir"]})
    finished = [{"state": "FAILED" if row.failed else "SUCCEEDED", "job_id": row.job_id,
                 "node": row.node, "attempts": len(row.attempts) or 1, "reason": row.reason}
                for row in collect_jobs(args.work_dir)]
    if args.json:
        print(json.dumps({"in_flight": in_flight, "finished": finished}, indent=1))
        return 0
    if not in_flight:
        print(f"no job in flight under {args.work_dir}")
    for job in in_flight:
        state = job["state"] if job["state"] != "UNKNOWN" else "UNKNOWN (not found in Batch)"
        print(f"{state:<10} {job['job_id']}  {job['job_name']}  {job['node_dir']}")
    if finished:
        failed = [job for job in finished if job["state"] == "FAILED"]
        print(f"finished: {len(finished)} jobs, {len(finished) - len(failed)} succeeded, "
              f"{len(failed)} failed")
        for job in failed:
            print(f"FAILED     {job['job_id']}  {job['node']}  {job['reason'] or ''}".rstrip())
    return 0


def _cancel(args: argparse.Namespace) -> int:
    from .journal import Journal

    cloud, entries, statuses = _journalled(args)
    live = [e for e in entries if (s := statuses.get(e["job_id"])) and not s.state.done]
    if cloud is not None and live:
        left = cloud.batch.terminate([e["job_id"] for e in live],
                                     reason=f"nipype-batch cancel {args.work_dir}")
        for entry in live:
            if entry["job_id"] not in left:
                Journal(args.work_dir).forget(entry["node_dir"], entry["hash"])
        print(f"terminated {len(live) - len(left)} job(s)"
              + (f"; could not terminate {', '.join(left)}" if left else ""))
        return 1 if left else 0
    print(f"no job in flight under {args.work_dir}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from .report import collect_jobs, write_report

    tails = None
    if args.plugin_args:  # where the jobs ran: failed jobs' log tails come from CloudWatch
        from .logs import failed_log_tails

        tails = failed_log_tails(_connect(args).batch, collect_jobs(args.work_dir))
    paths = write_report(args.work_dir, out_dir=args.out, prices=args.prices, log_tails=tails,
                         platform=args.platform, spot=args.spot)
    cost = paths.cost
    if args.json:
        print(json.dumps({
            "html": str(paths.html), "png": str(paths.png) if paths.png else None,
            "jobs": paths.jobs, "vcpu_hours": cost.vcpu_hours, "gb_hours": cost.gb_hours,
            "on_demand": cost.on_demand, "on_spot": cost.on_spot, "cost": cost.total,
            "currency": cost.prices.currency, "platform": cost.prices.platform,
            "spot": cost.prices.spot, "prices_as_of": cost.prices.as_of,
        }, indent=1))
    else:
        print(f"report: {paths.html}")
        print(f"chart:  {paths.png or 'not drawn (pip install nipype-batch[report])'}")
        print(f"{paths.jobs} job(s); {cost.summary()}")
    if args.open:
        import webbrowser

        webbrowser.open(paths.html.as_uri())
    return 0


def _logs(args: argparse.Namespace) -> int:
    from .logs import find_job, follow, job_status

    ref = find_job(args.name, args.work_dir)
    batch = _connect(args).batch
    about = f"job {ref.job_id}" + (f" ({ref.node})" if ref.node else "")
    if args.follow:
        for line in follow(batch, ref.job_id, lines=args.lines, on_stream=lambda stream: print(
                f"== {about}, log stream {stream}", file=sys.stderr)):
            print(line, flush=True)
        return 0
    status = job_status(batch, ref.job_id)
    lines = batch.log_tail(status.log_stream, args.lines)
    print(f"== {about} {status.state.value}, log stream {status.log_stream}", file=sys.stderr)
    if not lines:
        print(f"no log lines yet for {about} (Batch writes them once the container runs)",
              file=sys.stderr)
    for line in lines:
        print(line)
    return 0


def _connect(args: argparse.Namespace) -> Any:
    from .cloud import connect
    from .settings import BatchSettings

    return connect(BatchSettings.from_plugin_args(
        json.loads(args.plugin_args) if args.plugin_args else {}))


def _infra(args: argparse.Namespace) -> int:
    from .infra.command import run

    return run(args)


def parser() -> argparse.ArgumentParser:
    """The argument parser (also used to document the CLI)."""
    top = argparse.ArgumentParser(
        prog="nipype-batch", description="Run Nipype workflows as AWS Batch jobs.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("-v", "--verbose", action="store_true", help="log progress")
    sub = top.add_subparsers(dest="command", required=True)
    build = sub.add_parser(
        "build", help="build and push the job images of a workflow ahead of a run",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    build.add_argument("workflow", help="FILE.py:NAME or MODULE:NAME of a Workflow (or a "
                                        "function returning one)")
    build.add_argument("--plugin-args", help="the run's plugin_args as JSON")
    build.add_argument("--json", action="store_true", help="print the images as JSON")
    build.set_defaults(func=_build)
    doctor = sub.add_parser(
        "doctor", help="check credentials, bucket, queue, capacity, Docker and a workflow's "
                       "dependencies without submitting anything",
        epilog="examples:\n  nipype-batch doctor --plugin-args '{\"job_queue\": \"q\", "
               "\"bucket\": \"s3://b/p\"}'\n  nipype-batch doctor my_study.py:workflow\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    doctor.add_argument("workflow", nargs="?", help="FILE.py:NAME or MODULE:NAME (optional)")
    doctor.add_argument("--plugin-args", help="the run's plugin_args as JSON")
    doctor.add_argument("--json", action="store_true", help="print the checks as JSON")
    doctor.set_defaults(func=_doctor)
    local = sub.add_parser(
        "local", help="start, stop or show a shared local stack that outlives runs",
        description="Without a shared stack each run starts its own emulator, which ends (and "
                    "terminates its jobs) with the run. A shared one behaves like AWS: jobs "
                    "keep running when their driver dies, and a rerun finds them.",
    )
    local.add_argument("action", choices=["up", "down", "status"])
    local.set_defaults(func=_local)
    policy = sub.add_parser(
        "policy", help="print the job role's least-privilege IAM policy for a staging location",
        epilog="example:\n  nipype-batch policy s3://my-bucket/nipype > job-role-policy.json\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    policy.add_argument("location", help="the run's bucket, s3://bucket/prefix")
    policy.set_defaults(func=_policy)
    for name, func, text in (
        ("status", _status, "show the jobs of the runs under WORK_DIR: in flight (asked of "
                            "Batch) and finished (from the node directories)"),
        ("cancel", _cancel, "terminate the jobs a run under WORK_DIR left in flight (after its "
                            "driver died)"),
    ):
        command = sub.add_parser(name, help=text, description=text)
        command.add_argument("work_dir", help="the workflow's base_dir")
        command.add_argument("--plugin-args", help="the run's plugin_args as JSON (where its "
                                                   "jobs are: queue, region, endpoint)")
        if name == "status":
            command.add_argument("--json", action="store_true", help="print JSON")
        command.set_defaults(func=func)
    report = sub.add_parser(
        "report", help="write the run report under WORK_DIR: HTML page and PNG Gantt chart, "
                       "per-node resources, failures, estimated cost",
        epilog="examples:\n  nipype-batch report work/\n  nipype-batch report work/ "
               "--platform fargate --spot --prices my_prices.json --open\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    report.add_argument("work_dir", help="the workflow's base_dir")
    report.add_argument("--out", help="where to write (default: WORK_DIR)")
    report.add_argument("--platform", choices=CAPABILITIES, default=capability(DEFAULT_PLATFORM),
                        help="whose prices (default: ec2)")
    report.add_argument("--spot", action="store_true", help="the jobs ran on Spot capacity")
    report.add_argument("--prices", help="JSON file overriding the packaged prices (same "
                                         "shape as nipype_batch/report/prices.json)")
    report.add_argument("--plugin-args", help="the run's plugin_args as JSON: fetch failed "
                                              "jobs' log tails from CloudWatch")
    report.add_argument("--json", action="store_true", help="print paths and cost as JSON")
    report.add_argument("--open", action="store_true", help="open the page in a browser")
    report.set_defaults(func=_report)
    logs = sub.add_parser(
        "logs", help="print a job's log from CloudWatch (/aws/batch/job), by node or job id",
        epilog="examples:\n  nipype-batch logs 0d6f...-job-id\n  nipype-batch logs fit "
               "--work-dir work/ --follow\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    logs.add_argument("name", help="a Batch job id, or a node (name, fullname wf.node, or "
                                   "path under WORK_DIR) with --work-dir")
    logs.add_argument("--work-dir", help="the workflow's base_dir, to find nodes by name")
    logs.add_argument("--lines", type=int, default=40, help="how many last lines (default 40)")
    logs.add_argument("--follow", action="store_true",
                      help="keep printing new lines until the job ends")
    logs.add_argument("--plugin-args", help="the run's plugin_args as JSON (where its jobs "
                                            "are: queue, region, endpoint)")
    logs.set_defaults(func=_logs)
    infra = sub.add_parser(
        "infra", help="create, show or remove the AWS resources a run needs (bucket, ECR "
                      "repository, roles, compute environment, queue) and their named profile",
        epilog=INFRA_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    infra.add_argument("action", choices=["up", "down", "show"])
    infra.add_argument("--name", default="default",
                       help="names the set and its profile: plugin_args={'profile': NAME}")
    infra.add_argument("--platform", choices=list(PLATFORMS),
                       help="on-demand EC2 (default), Spot, or Fargate")
    infra.add_argument("--max-vcpus", type=int, help="most vCPUs at once (default 64)")
    listed = lambda text: [item for item in text.split(",") if item]  # noqa: E731
    infra.add_argument("--instance-types", type=listed,
                       help="comma-separated types or families (default: optimal)")
    infra.add_argument("--subnets", type=listed, help="comma-separated (default: default VPC)")
    infra.add_argument("--security-groups", type=listed,
                       help="comma-separated (default: the default VPC's default group)")
    infra.add_argument("--expire-days", type=int,
                       help="days before staging data is deleted by the lifecycle rule (30)")
    infra.add_argument("--yes", action="store_true", help="down: do not ask for confirmation")
    infra.add_argument("--json", action="store_true", help="print the result as JSON")
    infra.add_argument("--local", action="store_true",
                       help="on the shared local stack (`nipype-batch local up`)")
    infra.add_argument("--region", help="AWS region (default: boto3's, or the profile's)")
    infra.add_argument("--endpoint-url", help="an AWS-compatible endpoint (emulators)")
    infra.add_argument("--aws-profile", help="named AWS profile for credentials")
    infra.set_defaults(func=_infra)
    return top


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``nipype-batch`` command."""
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")
    try:
        return args.func(args)
    except (NipypeBatchError, json.JSONDecodeError) as exc:
        print(f"nipype-batch: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
