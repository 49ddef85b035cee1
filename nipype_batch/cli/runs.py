"""``nipype-batch status``, ``cancel``, ``report`` and ``logs``: the commands about a run, found
by its work directory (the workflow's ``base_dir``) or a job id.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from ..errors import NipypeBatchError
from ..platforms import CAPABILITIES, DEFAULT_PLATFORM, capability
from .options import Argument, command, examples, json_option, plugin_args_option

WHERE_JOBS_ARE = "the run's plugin_args as JSON (where its jobs are: queue, region, endpoint)"
STATUS_HELP = ("show the jobs of the runs under WORK_DIR: in flight (asked of Batch) and "
               "finished (from the node directories)")
CANCEL_HELP = "terminate the jobs a run under WORK_DIR left in flight (after its driver died)"


def work_dir_argument() -> Any:
    """The ``WORK_DIR`` argument of the commands about a run."""
    return click.argument("work_dir", cls=Argument, help="the workflow's base_dir")


def _connect(plugin_args: dict[str, Any] | None) -> Any:
    from ..backend import connect
    from ..settings import BatchSettings

    return connect(BatchSettings.from_plugin_args(plugin_args or {}))


def _journalled(work_dir: str, plugin_args: dict[str, Any] | None
                ) -> tuple[Any, list[dict[str, Any]], dict[str, Any]]:
    """The cloud, the journal's entries under ``work_dir`` and their Batch statuses."""
    from ..backend import connect
    from ..journal import Journal
    from ..settings import BatchSettings

    if not Path(work_dir).is_dir():
        raise NipypeBatchError(f"no such work directory: {work_dir}")
    entries = list(Journal(work_dir).entries())
    settings = BatchSettings.from_plugin_args(plugin_args or {})
    if not entries:
        return None, [], {}
    cloud = connect(settings)
    return cloud, entries, cloud.batch.describe(e["job_id"] for e in entries)


@command(short_help=STATUS_HELP, help=STATUS_HELP)
@work_dir_argument()
@plugin_args_option(WHERE_JOBS_ARE)
@json_option("print JSON")
def status(work_dir: str, plugin_args: dict[str, Any] | None, as_json: bool) -> int:
    """Jobs in flight (from the journal, asked of Batch), then the finished ones by outcome."""
    from ..report import collect_jobs

    _cloud, entries, statuses = _journalled(work_dir, plugin_args)
    in_flight = []
    for entry in entries:
        job = statuses.get(entry["job_id"])
        in_flight.append({"state": job.state.value if job else "UNKNOWN",
                          "job_id": entry["job_id"], "job_name": entry["job_name"],
                          "node_dir": entry["node_dir"]})
    finished = [{"state": "FAILED" if row.failed else "SUCCEEDED", "job_id": row.job_id,
                 "node": row.node, "attempts": len(row.attempts) or 1, "reason": row.reason}
                for row in collect_jobs(work_dir)]
    if as_json:
        print(json.dumps({"in_flight": in_flight, "finished": finished}, indent=1))
        return 0
    if not in_flight:
        print(f"no job in flight under {work_dir}")
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


@command(short_help=CANCEL_HELP, help=CANCEL_HELP)
@work_dir_argument()
@plugin_args_option(WHERE_JOBS_ARE)
def cancel(work_dir: str, plugin_args: dict[str, Any] | None) -> int:
    from ..journal import Journal

    cloud, entries, statuses = _journalled(work_dir, plugin_args)
    live = [e for e in entries if (s := statuses.get(e["job_id"])) and not s.state.done]
    if cloud is not None and live:
        left = cloud.batch.terminate([e["job_id"] for e in live],
                                     reason=f"nipype-batch cancel {work_dir}")
        for entry in live:
            if entry["job_id"] not in left:
                Journal(work_dir).forget(entry["node_dir"], entry["hash"])
        print(f"terminated {len(live) - len(left)} job(s)"
              + (f"; could not terminate {', '.join(left)}" if left else ""))
        return 1 if left else 0
    print(f"no job in flight under {work_dir}")
    return 0


@command(short_help="write the run report under WORK_DIR: HTML page and PNG Gantt chart, "
                          "per-node resources, failures, estimated cost",
               epilog=examples("nipype-batch report work/",
                               "nipype-batch report work/ --platform fargate --spot --prices "
                               "my_prices.json --open"))
@work_dir_argument()
@click.option("--out", help="where to write (default: WORK_DIR)")
@click.option("--platform", type=click.Choice(CAPABILITIES), default=capability(DEFAULT_PLATFORM),
              help="whose prices (default: ec2)")
@click.option("--spot", is_flag=True, help="the jobs ran on Spot capacity")
@click.option("--prices", help="JSON file overriding the packaged prices (same shape as "
                               "nipype_batch/report/prices.json)")
@plugin_args_option("the run's plugin_args as JSON: fetch failed jobs' log tails from "
                    "CloudWatch")
@json_option("print paths and cost as JSON")
@click.option("--open", "open_page", is_flag=True, help="open the page in a browser")
def report(work_dir: str, out: str | None, platform: str, spot: bool, prices: str | None,
           plugin_args: dict[str, Any] | None, as_json: bool, open_page: bool) -> int:
    from ..report import collect_jobs, write_report

    tails = None
    if plugin_args is not None:  # where the jobs ran: failed jobs' log tails from CloudWatch
        from ..logs import failed_log_tails

        tails = failed_log_tails(_connect(plugin_args).batch, collect_jobs(work_dir))
    paths = write_report(work_dir, out_dir=out, prices=prices, log_tails=tails,
                         platform=platform, spot=spot)
    cost = paths.cost
    if as_json:
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
    if open_page:
        import webbrowser

        webbrowser.open(paths.html.as_uri())
    return 0


@command(short_help="print a job's log from CloudWatch (/aws/batch/job), by node or job id",
               epilog=examples("nipype-batch logs 0d6f...-job-id",
                               "nipype-batch logs fit --work-dir work/ --follow"))
@click.argument("name", cls=Argument, help="a Batch job id, or a node (name, fullname wf.node, "
                                           "or path under WORK_DIR) with --work-dir")
@click.option("--work-dir", help="the workflow's base_dir, to find nodes by name")
@click.option("--lines", type=int, default=40, help="how many last lines (default 40)")
@click.option("--follow", "keep_following", is_flag=True,
              help="keep printing new lines until the job ends")
@plugin_args_option(WHERE_JOBS_ARE)
def logs(name: str, work_dir: str | None, lines: int, keep_following: bool,
         plugin_args: dict[str, Any] | None) -> int:
    from ..logs import find_job, follow, job_status

    ref = find_job(name, work_dir)
    batch = _connect(plugin_args).batch
    about = f"job {ref.job_id}" + (f" ({ref.node})" if ref.node else "")
    if keep_following:
        for line in follow(batch, ref.job_id, lines=lines, on_stream=lambda stream: print(
                f"== {about}, log stream {stream}", file=sys.stderr)):
            print(line, flush=True)
        return 0
    job = job_status(batch, ref.job_id)
    tail = batch.log_tail(job.log_stream, lines)
    print(f"== {about} {job.state.value}, log stream {job.log_stream}", file=sys.stderr)
    if not tail:
        print(f"no log lines yet for {about} (Batch writes them once the container runs)",
              file=sys.stderr)
    for line in tail:
        print(line)
    return 0
