"""The run report, its cost, and the ``report`` / ``logs`` / ``status`` commands.

Pure tests build ``_nipype_batch.json`` records by hand; the ``docker`` test runs a small
workflow on the local stack, asks the CLI about it, and opens the report in headless Chromium.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from nipype import Function, Node, Workflow

from nipype_batch.aws.batch import LOG_GROUP, BatchClient
from nipype_batch.aws.status import JobState, JobStatus
from nipype_batch.cli import main
from nipype_batch.errors import ConfigurationError, NipypeBatchError
from nipype_batch.logs import find_job, follow
from nipype_batch.report.collect import collect_jobs
from nipype_batch.report.cost import estimate, load_prices
from nipype_batch.report.gantt import FAILED, QUEUED, RUNNING, gantt_bars
from nipype_batch.report.html import render_html
from nipype_batch.report.write import write_report

T0 = 1_700_000_000_000  # ms


def _record(work: Path, node: str, job_id: str, *, vcpus: float = 1, memory_mb: int = 2048,
            submitted: int = T0, started: int | None = None, stopped: int | None = None,
            status: str = "SUCCEEDED", attempts: list[dict[str, Any]] | None = None,
            node_failed: bool = False, **job: Any) -> Path:
    node_dir = work / node
    node_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "runner": {"hostname": "ip-10-0-0-1", "node_failed": node_failed},
        "job": {
            "job_id": job_id, "job_name": f"nb-{node.replace('/', '-')}", "vcpus": vcpus,
            "memory_mb": memory_mb, "gpus": 0, "attempts_allowed": 3, "status": status,
            "status_reason": job.get("reason"), "exit_code": job.get("exit_code"),
            "attempts": len(attempts or []) or 1, "attempt_details": attempts or [],
            "log_group": LOG_GROUP, "log_stream": f"stream/{job_id}",
            "submitted_at_ms": submitted, "started_at_ms": started, "stopped_at_ms": stopped,
        },
    }
    (node_dir / "_nipype_batch.json").write_text(json.dumps(record))
    return node_dir


@pytest.fixture
def known_run(tmp_path: Path) -> Path:
    """Two jobs: 1 vCPU, 2048 MiB for 3600 s; 2 vCPUs, 4096 MiB for 1800 s."""
    work = tmp_path / "work"
    _record(work, "wf/first", "job-1", vcpus=1, memory_mb=2048, submitted=T0,
            started=T0 + 60_000, stopped=T0 + 60_000 + 3_600_000)
    _record(work, "wf/_subject_01/second", "job-2", vcpus=2, memory_mb=4096,
            submitted=T0 + 1_000, started=T0 + 10_000, stopped=T0 + 10_000 + 1_800_000)
    return work


# ---- cost ---------------------------------------------------------------------------------


def test_cost_of_a_known_run_matches_a_hand_computation(known_run):
    rows = collect_jobs(known_run)
    # by hand: 1 vCPU x 1 h + 2 vCPU x 0.5 h = 2 vCPU-h; 2 GB x 1 h + 4 GB x 0.5 h = 4 GB-h
    fargate = estimate(rows, load_prices("fargate"))
    assert fargate.vcpu_hours == pytest.approx(2.0)
    assert fargate.gb_hours == pytest.approx(4.0)
    # 2 x 0.04048 + 4 x 0.004445 (Fargate, us-east-1) = 0.09874; Spot at 70% off: 0.029622
    assert fargate.on_demand == pytest.approx(0.09874)
    assert fargate.on_spot == pytest.approx(0.029622)
    assert fargate.total == fargate.on_demand
    # EC2: 2 x 0.037 + 4 x 0.00275 = 0.085, one c5.large-hour; Spot at 65% off: 0.02975
    ec2_spot = estimate(rows, load_prices("ec2", spot=True))
    assert ec2_spot.on_demand == pytest.approx(0.085)
    assert ec2_spot.total == pytest.approx(0.02975)
    assert [round(job.on_demand, 6) for job in ec2_spot.jobs] == [0.0425, 0.0425]
    assert "USD 0.02975 (Spot, 65% off assumed)" in ec2_spot.summary()


def test_prices_are_data_with_a_date_and_can_be_overridden(tmp_path, known_run):
    packaged = load_prices("fargate")
    assert packaged.as_of and "fargate" in packaged.source and packaged.spot_discount == 0.7
    mine = tmp_path / "prices.json"
    mine.write_text(json.dumps({"as_of": "2031-01-01",
                                "platforms": {"fargate": {"vcpu_hour": 0.05}}}))
    prices = load_prices("fargate", override=mine)
    assert (prices.as_of, prices.vcpu_hour, prices.gb_hour) == ("2031-01-01", 0.05, 0.004445)
    cost = estimate(collect_jobs(known_run), prices)
    assert cost.on_demand == pytest.approx(2 * 0.05 + 4 * 0.004445)

    mine.write_text("{not json")
    with pytest.raises(ConfigurationError, match=r"cannot read prices file .*shaped like"):
        load_prices("ec2", override=mine)
    with pytest.raises(ConfigurationError, match="no prices for platform 'lambda'"):
        load_prices("lambda")
    with pytest.raises(ConfigurationError, match="write a fraction"):
        load_prices("ec2", override={"platforms": {"ec2": {"spot_discount": 70}}})


def test_fargate_bills_at_least_a_minute_per_attempt(tmp_path):
    _record(tmp_path, "wf/quick", "job-q", vcpus=1, memory_mb=1024, started=T0,
            stopped=T0 + 10_000)
    (row,) = collect_jobs(tmp_path)
    assert estimate([row], load_prices("fargate")).vcpu_hours == pytest.approx(60 / 3600)
    assert estimate([row], load_prices("ec2")).vcpu_hours == pytest.approx(10 / 3600)


# ---- records and the chart -----------------------------------------------------------------


def _retried(work: Path) -> Path:
    attempts = [
        {"startedAt": T0 + 5_000, "stoppedAt": T0 + 65_000,
         "statusReason": "Host EC2 (instance i-0abc) terminated.",
         "container": {"logStreamName": "stream/one", "exitCode": None}},
        {"startedAt": T0 + 80_000, "stoppedAt": T0 + 140_000,
         "container": {"logStreamName": "stream/two", "exitCode": 0}},
    ]
    return _record(work, "wf/flaky", "job-r", vcpus=2, memory_mb=1024, started=T0 + 80_000,
                   stopped=T0 + 140_000, attempts=attempts)


def test_retries_are_marked_and_every_attempt_is_billed(tmp_path):
    _retried(tmp_path)
    (row,) = collect_jobs(tmp_path)
    assert row.retried and row.queued_s == 5.0 and row.running_s == 120.0
    (bar,) = gantt_bars([row])
    assert [s.kind for s in bar.segments] == [QUEUED, FAILED, QUEUED, RUNNING]
    assert bar.retries_at_s == (80.0,)
    assert "Host EC2" in bar.segments[1].label
    cost = estimate([row], load_prices("ec2"))
    assert cost.vcpu_hours == pytest.approx(2 * 120 / 3600)  # both attempts, not the queue

    page = render_html([row], cost, {}, "work")
    assert page.count('class="retry"') == 1
    assert "2/3 ▼ retried" in page
    assert 'class="bar failed"' in page and 'class="bar running"' in page


def test_jobs_without_start_times_still_report(tmp_path):
    # failed in the queue (never started), and one whose start Batch did not stamp
    _record(tmp_path, "wf/never", "job-n", status="FAILED", stopped=T0 + 30_000,
            reason="CannotPullContainerError")
    _record(tmp_path, "wf/nostart", "job-s", started=None, stopped=None)
    rows = collect_jobs(tmp_path)
    assert [r.node for r in rows] == ["wf/never", "wf/nostart"]
    never = rows[0]
    assert never.failed and never.queued_s is None and never.running_s == 0
    bars = gantt_bars(rows)
    assert [s.kind for s in bars[0].segments] == [QUEUED]
    assert "never ran: CannotPullContainerError" in bars[0].segments[0].label
    assert bars[1].segments == ()
    assert estimate(rows, load_prices("fargate")).on_demand == 0
    assert "CannotPullContainerError" in render_html(rows, estimate(rows, load_prices()), {}, "w")


def test_log_tails_are_escaped_in_the_page(tmp_path):
    _record(tmp_path, "wf/bad", "job-b", started=T0 + 1_000, stopped=T0 + 2_000,
            node_failed=True, exit_code=3)
    rows = collect_jobs(tmp_path)
    tail = ["Traceback (most recent call last):", "<script>alert('x')</script> & <b>bold</b>"]
    page = render_html(rows, estimate(rows, load_prices()), {"job-b": tail}, "<work & co>")
    assert "<script" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in page
    assert "&lt;work &amp; co&gt;" in page
    assert "FAILED (node raised)" in page


def test_peak_memory_from_nipypes_resource_monitor(tmp_path):
    node_dir = _record(tmp_path, "wf/fit", "job-f", started=T0, stopped=T0 + 1_000)
    (node_dir / "_report").mkdir()
    (node_dir / "_report" / "report.rst").write_text(
        "Runtime info\n------------\n\n* duration : 1.0\n* mem_peak_gb : 0.5\n")
    (row,) = collect_jobs(tmp_path)
    assert row.peak_memory_mb == 512


def test_write_report_writes_html_and_png_next_to_the_workflow(known_run):
    _retried(known_run)
    paths = write_report(known_run, platform="fargate")
    assert paths.html == known_run.resolve() / "nipype_batch_report.html"
    assert paths.jobs == 3
    page = paths.html.read_text()
    assert page.count('class="bar ') >= 5 and "wf/_subject_01/second" in page
    assert "Fargate" in page or "fargate" in page
    assert paths.png is not None and paths.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_command_prints_paths_and_cost(known_run, capsys):
    assert main(["report", str(known_run), "--platform", "fargate", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["jobs"] == 2 and printed["cost"] == pytest.approx(0.09874)
    assert Path(printed["html"]).exists() and Path(printed["png"]).exists()

    out = tmp_out = known_run.parent / "elsewhere"
    assert main(["report", str(known_run), "--out", str(out), "--spot"]) == 0
    text = capsys.readouterr().out
    assert f"report: {tmp_out}/nipype_batch_report.html" in text
    assert "2 job(s); estimated cost USD 0.02975 (Spot, 65% off assumed)" in text

    assert main(["report", str(known_run.parent / "missing")]) == 1
    assert "no such work directory" in capsys.readouterr().err


# ---- finding a job's log -------------------------------------------------------------------


def test_find_job_by_node_name_fullname_path_or_id(known_run):
    _record(known_run, "wf/_subject_02/second", "job-3")
    assert find_job("first", str(known_run)).job_id == "job-1"
    assert find_job("wf.first", str(known_run)).job_id == "job-1"
    assert find_job("wf/_subject_02/second", str(known_run)).job_id == "job-3"
    assert find_job("job-2", str(known_run)).node == "wf/_subject_01/second"
    with pytest.raises(NipypeBatchError, match=r"'wf\.second' names 2 jobs"):
        find_job("wf.second", str(known_run))
    job_id = "0b5e8c1e-5a4f-4c52-9d7e-2f0f6a1b2c3d"
    assert find_job(job_id, None).job_id == job_id
    with pytest.raises(NipypeBatchError, match=r"not a Batch job id: .*--work-dir"):
        find_job("first", None)


class _ScriptedBatch(BatchClient):
    """A BatchClient whose DescribeJobs answers from a script (logs are moto's)."""

    def __init__(self, logs: Any, states: list[JobState]) -> None:
        super().__init__(batch=None, logs=logs)
        self.states = states

    def describe(self, job_ids):
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        return {job_id: JobStatus(job_id, state, log_stream="job/default/abc")
                for job_id in job_ids}


@pytest.fixture
def moto_logs(monkeypatch) -> Iterator[Any]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        logs = boto3.client("logs", region_name="us-east-1")
        logs.create_log_group(logGroupName=LOG_GROUP)
        yield logs


@pytest.mark.moto
def test_follow_pages_forward_until_the_job_ends(moto_logs):
    stream = "job/default/abc"
    batch = _ScriptedBatch(moto_logs, [JobState.RUNNABLE, JobState.RUNNING, JobState.RUNNING,
                                       JobState.SUCCEEDED])
    written = iter([["one", "two"], ["three"], []])

    def put(lines: list[str]) -> None:
        if lines and not moto_logs.describe_log_streams(logGroupName=LOG_GROUP)["logStreams"]:
            moto_logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
        if lines:
            moto_logs.put_log_events(logGroupName=LOG_GROUP, logStreamName=stream, logEvents=[
                {"timestamp": int(time.time() * 1000) + i, "message": line}
                for i, line in enumerate(lines)])

    streams: list[str] = []
    lines = list(follow(batch, "job-1", sleep=lambda _s: put(next(written, [])),
                        on_stream=streams.append))
    assert lines == ["one", "two", "three"]
    assert streams == [stream]


# ---- end to end ----------------------------------------------------------------------------


def _say(x):
    print(f"report-test says {x}", flush=True)
    return x


def _fail(x):
    raise ValueError(f"report-test failure {x} <b>not bold</b>")


def _small_workflow(base: Path) -> Workflow:
    wf = Workflow(name="rep", base_dir=str(base))
    say = Node(Function(input_names=["x"], output_names=["out"], function=_say), name="say")
    say.iterables = ("x", [1, 2])
    after = Node(Function(input_names=["x"], output_names=["out"], function=_say),
                 name="after", n_procs=2, mem_gb=1)
    bad = Node(Function(input_names=["x"], output_names=["out"], function=_fail), name="bad")
    bad.inputs.x = 9
    wf.connect(say, "out", after, "x")
    wf.add_nodes([bad])
    return wf


def chromium() -> str:
    """Debian's chromium, or skip (fail under CI, which must install it)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        if os.environ.get("CI"):
            pytest.fail("CI must install chromium (scripts/bootstrap.sh does)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return found


def headless(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium on ``page`` with ``args``; its console messages go to stderr."""
    return subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
         *args, page.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    )


@pytest.mark.docker
def test_cli_on_a_finished_local_run_and_the_report_in_chromium(tmp_path, local_args, capsys):
    work = tmp_path / "work"
    with pytest.raises(RuntimeError, match="report-test failure 9"):
        _small_workflow(work).run(plugin="AWSBatch", plugin_args=local_args)
    plugin_args = json.dumps(local_args)

    assert main(["status", str(work), "--plugin-args", plugin_args]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"no job in flight under {work}"
    assert lines[1].startswith("finished: ") and lines[1].endswith(" failed")
    assert any(line.startswith("FAILED ") for line in lines[2:])
    assert main(["status", str(work), "--plugin-args", plugin_args, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["in_flight"] == [] and {j["state"] for j in status["finished"]} == {
        "SUCCEEDED", "FAILED"}

    assert main(["logs", "rep/_x_1/after", "--work-dir", str(work), "--plugin-args",
                 plugin_args]) == 0
    captured = capsys.readouterr()
    assert "report-test says 1" in captured.out.splitlines()
    assert "report-test says 2" not in captured.out
    assert "(rep/_x_1/after) SUCCEEDED, log stream " in captured.err
    # `after` asks 2 vCPUs: a job per subject; the two short `say` nodes share one job
    assert main(["logs", "after", "--work-dir", str(work), "--plugin-args", plugin_args]) == 1
    assert "'after' names 2 jobs" in capsys.readouterr().err
    assert main(["logs", "say", "--work-dir", str(work), "--plugin-args", plugin_args]) == 0
    assert "report-test says 1" in capsys.readouterr().out
    assert main(["logs", "rep.bad", "--work-dir", str(work), "--follow", "--plugin-args",
                 plugin_args]) == 0
    assert "ValueError: report-test failure 9" in capsys.readouterr().out

    assert main(["report", str(work), "--plugin-args", plugin_args, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["jobs"] == 4  # say x2 (one job), after x2, bad
    rows = collect_jobs(work)
    by_hand = sum(r.vcpus * a.running_s / 3600 * 0.037 + r.memory_mb / 1024 * a.running_s /
                  3600 * 0.00275 for r in rows for a in r.attempts)
    assert printed["cost"] == pytest.approx(by_hand)
    assert {r.vcpus for r in rows if r.node.endswith("after")} == {2.0}
    page = Path(printed["html"])
    html = page.read_text()
    assert "ValueError: report-test failure 9 &lt;b&gt;not bold&lt;/b&gt;" in html

    profile = tmp_path / "chromium-profile"
    dom = headless(page, profile, "--dump-dom")
    # a bar per job: say x2 (one job) and after x2 ran, bad failed
    assert dom.stdout.count('class="bar running"') == 3
    assert dom.stdout.count('class="bar failed"') == 1
    problems = [line for line in dom.stderr.splitlines()
                if "Uncaught" in line or ":CONSOLE(" in line]
    assert problems == []
    shot = tmp_path / "report.png"
    headless(page, profile, f"--screenshot={shot}", "--window-size=1400,900")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def test_a_packs_nodes_are_one_job_in_the_report_counted_once():
    from nipype_batch.report.collect import merge_packs
    from nipype_batch.report.model import JobRow

    def row(node: str, job: str, stop: int, failed: bool = False) -> JobRow:
        return JobRow(node=node, node_dir=f"/w/{node}", job_id=job, job_name="j",
                      state="SUCCEEDED", vcpus=2, memory_mb=4096, started_ms=1000,
                      stopped_ms=stop, node_failed=failed, peak_memory_mb=float(stop // 100))

    rows = merge_packs([row("wf/b", "pack", 5000, failed=True), row("wf/a", "pack", 3000),
                        row("wf/c", "alone", 2000)])

    assert len(rows) == 2
    pack = next(r for r in rows if r.job_id == "pack")
    assert pack.nodes == ("wf/a", "wf/b")
    assert pack.node == "wf/b (+1 nodes in its job)"  # the failed node leads: its crash shows
    assert pack.node_dir == "/w/wf/b" and pack.failed
    assert (pack.started_ms, pack.stopped_ms, pack.peak_memory_mb) == (1000, 5000, 50.0)


def test_graviton_has_its_own_prices():
    from nipype_batch.report.cost import load_prices

    for platform in ("ec2", "fargate"):
        x86, arm = load_prices(platform), load_prices(platform, architecture="arm64")
        assert arm.vcpu_hour < x86.vcpu_hour and arm.gb_hour < x86.gb_hour
        assert arm.architecture == "arm64" and arm.minimum_s == x86.minimum_s
    assert load_prices("fargate", architecture="arm64").vcpu_hour == 0.03238


def test_cost_is_split_by_subject():
    from nipype_batch.report.cost import estimate, load_prices
    from nipype_batch.report.model import Attempt, JobRow

    def row(node, seconds):
        return JobRow(node=node, node_dir="/w/" + node, job_id=node, job_name=node,
                      state="SUCCEEDED", vcpus=1, memory_mb=1024,
                      attempts=(Attempt(0, seconds * 1000, None),))

    rows = [row("wf/_subject_01/fit", 3600), row("wf/_subject_01/prep", 3600),
            row("wf/_subject_02/fit", 3600), row("wf/group", 3600)]
    cost = estimate(rows, load_prices("ec2"))
    split = cost.by_subject(rows)
    assert [s[:2] for s in split] == [("_subject_01", 2), ("_subject_02", 1),
                                      ("(all subjects)", 1)]
    assert sum(s[2] for s in split) == pytest.approx(cost.total)


def test_the_report_sets_the_forecast_made_for_the_workflow_beside_the_run(tmp_path):
    from nipype_batch.history import RunHistory
    from nipype_batch.report.cost import estimate, load_prices
    from nipype_batch.report.html import render_html
    from nipype_batch.report.model import Attempt, JobRow
    from nipype_batch.report.write import forecast_for_run

    def row(node, job, seconds):
        return JobRow(node=node, node_dir="/w/" + node, job_id=job, job_name=job,
                      state="SUCCEEDED", vcpus=1, memory_mb=1024, submitted_ms=0,
                      stopped_ms=seconds * 1000, attempts=(Attempt(0, seconds * 1000, None),))

    rows = [row("wf/_subject_01/fit", "a", 1800), row("wf/_subject_01/prep", "a", 1800),
            row("wf/_subject_02/fit", "b", 3600)]
    cost = estimate(rows, load_prices("ec2"))
    assert forecast_for_run(rows, cost) is None  # none made: no section
    assert "Forecast and this run" not in render_html(rows, cost, {}, "t")

    def made(subjects, cost_usd):
        return {"workflow": "wf", "subjects": subjects, "platform": "ec2", "jobs": 2,
                "job_runs": 2, "makespan_s": {"low": 3000, "median": 3300, "high": 3900},
                "vcpu_hours": 2.2, "gb_hours": 2.2, "cost": cost_usd}

    history = RunHistory()
    history.keep_forecast("wf", 2, made(2, 0.1))
    history.keep_forecast("wf", 50, made(50, 9.9))  # later, for another study size
    history.keep_forecast("other", 2, made(2, 5.0))
    found = forecast_for_run(rows, cost)
    assert found["cost"] == 0.1  # the one for as many subjects as the run had
    page = render_html(rows, cost, {}, "t", forecast=found)
    section = page.split("<h2>Forecast and this run</h2>")[1].split("<h2>")[0]
    assert "<td>Jobs (array children counted)</td><td class=\"n\">2</td><td class=\"n\">2</td>" \
        in section
    assert "<td>vCPU-hours</td><td class=\"n\">2.200</td><td class=\"n\">2.000</td>" \
        "<td class=\"n\">1.10</td>" in section  # 2.2 forecast, 2 run
    assert "<td>Makespan</td><td class=\"n\">55.0 min (50.0 min - 65.0 min)</td>" \
        "<td class=\"n\">60.0 min</td><td class=\"n\">0.92</td>" in section
