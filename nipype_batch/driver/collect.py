"""A finished job's node directory comes home; a failed one becomes a Nipype crash."""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import replace
from typing import Any

from nipype.utils.filemanip import loadpkl

from ..aws.bundles import unpack_bookkeeping
from ..aws.staging import StagedPath, Stager
from ..aws.status import JobState, JobStatus, out_of_memory
from ..history import Observation
from ..protocol import CRASH_FILE, result_path
from ..provenance import job_record, output_files, read_provenance, write_job_record
from ..settings import BatchSettings
from .inputs import is_within
from .jobs import SubmittedJob, nipype_result


class Collector:
    """Brings node directories from S3 to the driver: finished jobs', and the upstream outputs
    a ready node's inputs name. Keeps each failed job's log tail for the report."""

    def __init__(self, batch: Any, stager: Stager, settings: BatchSettings,
                 run_id: str = "") -> None:
        self.batch = batch
        self.run_id = run_id
        self.stager = stager
        self.settings = settings
        self.log_tails: dict[str, list[str]] = {}
        self.observations: list[Observation] = []  # for the run history
        self._materialised: set[str] = set()
        self._observed: set[str] = set()  # node directories measured into the history

    def materialise_upstream(self, node: Any) -> None:
        """Upstream outputs must exist on the driver before Nipype checks a node's cache or
        sets its inputs (File(exists=True) traits); fetch the ones jobs produced."""
        if node._id in self._materialised:
            return
        for results_fname, _conn in node.input_source.values():
            for path in output_files(os.path.dirname(results_fname)):
                if not os.path.exists(path):
                    self.stager.download(StagedPath(path, "remote"))
        self._materialised.add(node._id)

    def collect(self, job: SubmittedJob, status: JobStatus) -> dict[str, Any]:
        """Bring a finished job's node directory home and answer as Nipype expects."""
        if not job.is_mapnode and not job.in_pack:  # (a pack's: emptied when it was prepared)
            shutil.rmtree(job.node_dir, ignore_errors=True)  # as Nipype empties a re-run node
        fetched = self._fetch_finished(job)
        runner = read_provenance(job.node_dir).get("runner", {})
        if job.in_pack and status.stopped_at is None:  # its job still runs its other nodes
            status = replace(status, stopped_at=int(time.time() * 1000))
        record = job_record(
            job_id=job.job_id, job_name=job.job_name, job_queue=job.queue,
            job_definition=job.definition, image=job.image, resources=job.resources,
            status=status, log_stream=status.log_stream,
        )
        if job.array_job_id is not None:
            record.update(array_job_id=job.array_job_id, array_index=job.array_index)
        write_job_record(job.node_dir, record)
        self._observe(job, runner, status)
        if status.state is JobState.SUCCEEDED and fetched and not runner.get("node_failed"):
            return nipype_result(hostname=runner.get("hostname"))
        return nipype_result(self._failure(job, status, fetched and runner.get("node_failed")),
                             hostname=runner.get("hostname"))

    def observe_committed(self, job: SubmittedJob, status: JobStatus | None) -> None:
        """A node of this run's pack that Nipype found done on the driver (its pack fetched
        it with an earlier node) rather than collected: its measurements count too."""
        runner = read_provenance(job.node_dir).get("runner", {})
        if runner:
            self._observe(job, runner, status or JobStatus(job.job_id, JobState.SUCCEEDED))

    def _observe(self, job: SubmittedJob, runner: dict[str, Any], status: JobStatus) -> None:
        """What the runner measured, for the run history (a MapNode's own job only collates
        its subnodes' results: its time is not the node's)."""
        timings = runner.get("timings") or {}
        if (job.is_mapnode or not job.history_key or "ran" not in timings
                or job.node_dir in self._observed):
            return
        self._observed.add(job.node_dir)
        self.observations.append(Observation(
            node=job.history_key, interface=job.interface,
            runtime_s=timings["ran"] - timings.get("staged_in", timings["ran"]),
            peak_memory_mb=float(runner.get("peak_memory_mb") or 0.0),
            vcpus=job.resources.vcpus, memory_mb=job.resources.memory_mb,
            succeeded=status.state is JobState.SUCCEEDED and not runner.get("node_failed"),
            run_id=self.run_id, recorded_at=time.time(),
            **runner_overheads(timings, status, job.in_pack),
            backend=self.settings.backend or ""))

    def _failure(self, job: SubmittedJob, status: JobStatus, node_raised: bool) -> list[str]:
        """The crash file's traceback: the node's own, or why the job left none; then the
        job's last log lines and, for a missing module, how to add it."""
        result_file = result_path(job.node_dir, job.node_name)
        if node_raised:
            traceback = list(loadpkl(result_file).get("traceback") or [])
            os.replace(result_file, os.path.join(job.node_dir, CRASH_FILE))
        else:
            where = f"s3://{self.stager.bucket}/{self.stager.key_for(job.node_dir)}/"
            traceback = [
                f"AWS Batch job {job.job_id} ({job.job_name}) for node {job.node_name} ended "
                f"{status.state.value}: {status.reason or 'no reason given'} (exit code "
                f"{status.exit_code}). It left no result file under {where}.\n"
            ]
            if out_of_memory(status):
                traceback.append(
                    f"\nThe container was killed for memory ({status.container_reason}): "
                    f"the node needs more than the {job.resources.memory_mb} MiB its job "
                    "asked. Give it more with the node's mem_gb, or "
                    "node.plugin_args={'memory_mb': ...}; the run history's peak memory of "
                    "earlier runs (`nipype-batch history`) is a guide.\n")
        tail = self.batch.log_tail(status.log_stream)
        self.log_tails[job.job_id] = tail
        if tail:
            traceback.append(
                f"\n--- last {len(tail)} log lines of job {job.job_id} "
                f"(log stream {status.log_stream}) ---\n" + "\n".join(tail) + "\n"
            )
        missing = missing_module(traceback)  # in the reason or in the job's own log
        if missing:
            traceback.append(
                f"\nHint: the job image has no module {missing!r}. Add its package to "
                f"plugin_args={{'packages': [...]}} (pinned to your installed version).\n"
            )
        return traceback

    def _fetch_finished(self, job: SubmittedJob) -> bool:
        """A finished job's node directory: its bundle in one GET, else file by file."""
        stager, everything = self.stager, bool(self.settings.fetch_outputs)
        bundle = stager.get_bytes(job.bundle_key, missing_ok=True) if job.bundle_key else None
        if not bundle or not unpack_bookkeeping(bundle, job.node_dir):
            fetched = stager.fetch_node_dir(job.node_dir, everything=everything)
        else:
            if everything:
                stager.fetch_node_dir(job.node_dir, everything=True, data_only=True)
            fetched = True
        if fetched and everything:  # and what it wrote elsewhere, as a local run leaves it
            for path in output_files(job.node_dir):
                if not is_within(path, job.node_dir):
                    stager.download(StagedPath(path, "remote"))
        return fetched


def missing_module(traceback: list[str]) -> str | None:
    """The module a remote ModuleNotFoundError names, if that is how the node failed."""
    found = re.findall(r"ModuleNotFoundError: No module named '([\w.]+)'", "".join(traceback))
    return found[-1] if found else None


def runner_overheads(timings: dict[str, float], status: JobStatus, in_pack: bool
                     ) -> dict[str, float | None]:
    """The runner's own seconds around one node, from its timings and Batch's clock:
    ``setup_s`` from the job's start to its inputs staged in (interpreter, imports,
    downloads), ``handoff_s`` from the node's end to what follows it (in a pack, the next
    node's start; a job of its own, the job's end: outputs staged out, result committed).
    Clocks of two machines: a negative difference is none."""
    setup = handoff = None
    staged_in = timings.get("job_staged_in")
    if staged_in is not None and status.started_at:
        setup = max(0.0, staged_in - status.started_at / 1000)
    if "after_ran" in timings:
        handoff = max(0.0, timings.get("staged_in", timings["ran"]) - timings["after_ran"])
    elif not in_pack and status.stopped_at and "ran" in timings:
        handoff = max(0.0, status.stopped_at / 1000 - timings["ran"])
    return {"setup_s": setup, "handoff_s": handoff}

