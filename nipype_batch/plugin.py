"""``BatchPlugin``: Nipype's distributed plugin loop, with each node run as an AWS Batch job.

Only Nipype's hooks live here. They wire the driver's parts (:mod:`nipype_batch.driver`),
which take their collaborators in their constructors and never call back, to Nipype's loop;
this is the one module that reads Nipype's own bookkeeping (``procs``, ``proc_done``, ...).
"""

from __future__ import annotations

import copy
import logging
import os
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from traceback import format_exception
from typing import Any

import numpy as np
from nipype.pipeline.plugins.base import DistributedPluginBase
from nipype.utils.misc import str2bool

from .aws.status import JobState, JobStatus, out_of_memory
from .backend import connect
from .cloud import Cloud
from .driver.budget import Budget
from .driver.images import JobImages
from .driver.jobs import SubmittedJob, nipype_result
from .driver.packs import (
    SHORT_NODE_S,
    Packing,
    PackRun,
    job_overhead_s,
    load_outside_inputs,
    pack_resources,
    run_history,
)
from .driver.parts import RunParts
from .driver.progress import Progress, Snapshot
from .driver.resume import collate_mapnode_here
from .driver.run_log import LOG_NAME, RunLog, hold_nipype_records, show_our_log, start_run_log
from .driver.submit import PackNode
from .driver.view import NodeState, RunCost, stage_rows, summary_lines, write_run_report
from .errors import BatchJobError, BudgetExceededError, ConfigurationError
from .history import measured_overheads
from .images.publish import PublishedImage
from .platforms import PLATFORMS
from .preflight import preflight
from .provenance import note_memory_raised
from .report.cost import significant
from .resources import JobResources, fargate_fit, resources_for, runs_on_driver
from .settings import BatchSettings

log = logging.getLogger("nipype_batch")

LOOP_TICK_S = 0.1  # how often Nipype's loop passes; Batch is polled less often
MEMORY_RETRIES = 2  # a job killed for memory goes again with 2x, then 4x its memory


class BatchPlugin(DistributedPluginBase):
    """Run every node of a Nipype workflow as an AWS Batch job.

    Use ``wf.run(plugin='AWSBatch', plugin_args={...})`` after ``import nipype_batch``.
    Without ``job_queue``/``bucket`` it runs on the local stack (emulated AWS, real Docker).
    See :class:`nipype_batch.settings.BatchSettings` for every argument. ``cloud`` and
    ``images`` replace the clients and the image publisher (the simulated Batch passes both).
    """

    def __init__(self, plugin_args: dict[str, Any] | None = None, cloud: Cloud | None = None,
                 images: Any = None) -> None:
        self.settings = BatchSettings.from_plugin_args(plugin_args)
        super().__init__(plugin_args=plugin_args)
        self.max_jobs = self.settings.max_jobs
        self.run_id = uuid.uuid4().hex[:10]
        self._cloud = cloud
        self._images = images
        self._held_records = hold_nipype_records(self.settings.progress, sys.stderr)
        self._reset_run_state()

    def _reset_run_state(self) -> None:
        self._parts = RunParts(self.settings)
        self._cost = RunCost(PLATFORMS[self.settings.platform], self.settings.architecture)
        self._done_here: set[int] = set()  # collated on the driver, or recovered from S3
        self._local_failures: dict[int, list[str]] = {}
        self._next_taskid = 0
        self._graph_changed = True
        self._fatal: Exception | None = None
        self._fail_fast = False  # Nipype's stop_on_first_crash, read as the run starts
        # node dir -> the jobs killed for memory before the one that ran it (memory_retry)
        self._memory_raised: dict[str, list[dict[str, Any]]] = {}
        self._progress = Progress("off")
        self._run_log: RunLog | None = None
        self._started = time.monotonic()
        self._failed_nodes: set[int] = set()  # id() of nodes that raised, and of those skipped
        self._skipped_nodes: set[int] = set()
        self._crash_files: list[tuple[str, str]] = []  # (node, crash file)
        self._proc_dirs: dict[int, str] = {}  # Nipype's node index -> its directory
        self._jobids: dict[str, int] = {}  # and back, for the nodes of packs
        self._packing = Packing()
        self._updatehash = False
        self._budget: Budget | None = None
        self._held_by_budget: set[int] = set()  # task ids whose jobs the budget held
        self.resumed_job_ids: list[str] = []

    # ---- pickling: settings travel, clients and run state do not -------------------------

    def __getstate__(self) -> dict[str, Any]:
        return {"plugin_args": self.plugin_args}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["plugin_args"])

    @property
    def cloud(self) -> Cloud:
        """Clients and resources of this run (the local stack starts on first use)."""
        if self._cloud is None:
            self._cloud = connect(self.settings)
        return self._cloud

    @property
    def images(self) -> Any:
        """The run's job images (see :class:`~nipype_batch.driver.images.JobImages`)."""
        if self._images is None:
            self._images = JobImages(self.cloud, self.settings)
        return self._images

    @property
    def published_images(self) -> list[PublishedImage]:
        return self.images.published

    @property
    def submitted_job_ids(self) -> list[str]:
        return self._parts.flight.submitted_job_ids

    @property
    def array_job_ids(self) -> list[str]:
        return self._parts.flight.array_job_ids

    @property
    def poll_count(self) -> int:
        """Status polls (each one DescribeJobs per 100 jobs or arrays)."""
        return self._parts.flight.polls

    # ---- the run --------------------------------------------------------------------------

    def run(self, graph: Any, config: Any, updatehash: bool = False) -> Any:
        """Run the graph; whatever ends the run, no job it submitted is left running."""
        self._reset_run_state()
        show_our_log()
        mode = {True: "auto", False: "off"}.get(self.settings.progress, self.settings.progress)
        self._progress = Progress(str(mode))
        self._started = time.monotonic()
        # Nipype sleeps poll_sleep_duration (2 s) after every pass of its loop, so each
        # dependency level waits a full interval. Let the loop tick fast; _get_result polls
        # Batch on its own adaptive schedule (poll_min_s..poll_max_s).
        config = copy.deepcopy(config)
        self._fail_fast = str2bool(config["execution"].get("stop_on_first_crash", False))
        config["execution"]["poll_sleep_duration"] = str(min(LOOP_TICK_S, self.settings.poll_min_s))
        every_node_done = False
        try:
            result = super().run(graph, config, updatehash=updatehash)
            every_node_done = True
            return result
        finally:
            self._parts.flight.cancel(self.run_id, untracked=not every_node_done)
            self._parts.record_history()
            if self._held_records is not None:  # the run ended before its first check
                self._held_records.hand_over()
                self._held_records = None
            report = self._write_report()
            self._progress.close(self._summary(report))
            if self._run_log is not None:
                self._run_log.restore()
                self._run_log = None

    def _prerun_check(self, graph: Any) -> None:
        """Everything that can fail, fails here: before any job is submitted."""
        job_nodes = []
        for node in graph.nodes():
            if node.base_dir:
                node.base_dir = os.path.abspath(node.base_dir)
            if runs_on_driver(node, self.settings):  # also validates node plugin_args
                node.run_without_submitting = True
            else:
                job_nodes.append(node)
        work_dir = next((n.base_dir for n in graph.nodes() if n.base_dir), tempfile.gettempdir())
        held, self._held_records = self._held_records, None
        self._run_log = start_run_log(os.path.join(work_dir, LOG_NAME), self._progress, held)
        if not job_nodes:
            return
        cloud, settings = self.cloud, self.settings
        self._parts.wire(cloud, settings, self.run_id, self.images, job_nodes[0].base_dir)
        self._parts.flight.fail_fast = self._fail_fast
        for queue in sorted({resources_for(n, settings).job_queue or cloud.job_queue
                             for n in job_nodes}):
            cloud.ensure_queue(queue)
        # cheapest first: what the nodes import (no I/O), the cloud, then images
        plan = self.images.plan(job_nodes)
        preflight(settings, cloud, job_nodes)
        self.images.publish(job_nodes, plan)
        history = run_history()
        self._budget = self._make_budget(history)
        self._parts.submitter.peak_memory = {h.node: h.peak_memory_mb for h in history}
        self._parts.submitter.memory_cap_mb = getattr(getattr(cloud, "machine", None),
                                                      "memory_mb", None)
        self._packing = Packing.for_graph(
            graph, settings, set(graph.nodes()) - set(job_nodes), self._compatibility,
            cloud.job_queue, history, self._job_overhead_s(), job_nodes[0].base_dir,
            max_vcpus=getattr(getattr(cloud, "machine", None), "vcpus", None))
        if self._packing.plan is not None:
            self._parts.submitter.chunk = self._packing.chunk

    def _make_budget(self, history: list[Any]) -> Budget | None:
        """The run's budget, if it has one, priced as the report prices its jobs."""
        limit = self.settings.budget_usd
        if limit is None:
            return None
        prices = self._cost.load()
        if prices is None or prices.currency != "USD":
            raise ConfigurationError(
                f"budget_usd={limit} needs the report's prices in USD for platform "
                f"{self.settings.platform!r}, which could not be read"
                + (f" (they are in {prices.currency})" if prices is not None else "")
                + ": check nipype_batch/report/prices.json, or run without budget_usd.")
        runner = measured_overheads(self.settings.backend or "")
        return Budget(limit, prices, {h.node: h.median_runtime_s for h in history},
                      SHORT_NODE_S, setup_s=runner.setup_s if runner else 0.0,
                      handoff_s=runner.handoff_s if runner else 0.0)

    def _admit(self, prepared: list[Any]) -> list[Any]:
        """The pass's jobs that the budget lets through; the others are held for good."""
        assert self._budget is not None
        admitted = self._budget.admit(prepared, self._spent(), self._parts.flight.statuses,
                                      self._open_job_ids())
        self._held_by_budget = self._budget.held_taskids()
        return admitted

    def _spent(self) -> float:
        """The run's cost so far, as the progress line shows it."""
        flight = self._parts.flight
        return self._cost.total(flight.jobs.values(), flight.statuses) or 0.0

    def _open_job_ids(self) -> set[str]:
        """Jobs (or arrays) in flight: waited for by a task, or not seen to end."""
        flight = self._parts.flight
        return {j.array_job_id or j.job_id for j in flight.jobs.values()} | flight.open_jobs

    def _check_budget(self) -> None:
        """Once the budget stopped submissions: end the run, after the running jobs ended
        ('finish') or at once ('cancel': the run's end terminates them)."""
        budget = self._budget
        if budget is None or budget.stop is None or self._fatal is not None:
            return
        cancel = self.settings.budget_action == "cancel"
        flight = self._parts.flight
        if not cancel and not flight.jobs and flight.open_jobs and flight.due():
            flight.refresh()  # a pack's job no task waits for: it still runs nodes
        if not cancel and (flight.jobs or flight.open_jobs):
            return
        spent = self._spent()
        states = self._node_states()
        left: dict[str, int] = {}
        for state in states:
            if not (state.done or state.failed or state.skipped):
                left[state.stage] = left.get(state.stage, 0) + 1
        what_left = ", ".join(f"{stage}: {n}" for stage, n in sorted(left.items()))
        stop = budget.stop
        self._fatal = BudgetExceededError(
            f"The run stopped at its budget: it has spent est. USD {significant(spent)} of "
            f"budget_usd={budget.limit:g}, and the next job (of {stop.next_job}, est. USD "
            f"{significant(stop.next_cost)}) would have passed it. "
            f"{sum(left.values())} of {len(states)} nodes are not done "
            f"({what_left}). "
            + ("The jobs running then were cancelled (budget_action='cancel'). " if cancel
               else "The jobs running then finished and their results are kept. ")
            + "Run again with a larger budget_usd (`nipype-batch forecast` says how much the "
            "rest needs): the nodes that finished come from the cache.")
        log.error("%s", self._fatal)

    def _compatibility(self, resources: JobResources) -> str:
        """What nodes sharing a job must share, besides vCPUs and memory."""
        return "|".join(map(str, (self.images.image_for(resources), resources.gpus,
                                  resources.attempts, resources.timeout_s)))

    def _job_overhead_s(self) -> float:
        if self.settings.job_overhead_s is not None:
            return float(self.settings.job_overhead_s)
        return job_overhead_s(self.cloud, self.settings)

    def _write_report(self) -> str | None:
        if not self.settings.report or not (self.submitted_job_ids or self.resumed_job_ids):
            return None
        return write_run_report(self._parts.work_dir, self._parts.log_tails,
                                PLATFORMS[self.settings.platform], self.settings.architecture)

    def _summary(self, report: str | None) -> list[str]:
        """What the run leaves on screen when it ends: outcome, crash files, report, cost."""
        if self.procs is None:
            return []
        cost = self._cost.so_far(self._parts.flight.jobs.values(), self._parts.flight.statuses)
        return summary_lines(stage_rows(self._node_states()), self._crash_files,
                             len(self.submitted_job_ids), time.monotonic() - self._started,
                             report, f"{cost} ({self._cost.note()})" if cost else None)

    # ---- Nipype's hooks -------------------------------------------------------------------

    def _send_procs_to_workers(self, updatehash: bool = False, graph: Any = None) -> None:
        self._check_budget()
        if self._fatal is not None:
            raise self._fatal
        # Nothing can have become ready unless a task ended since the last pass. Then wait
        # for the next status poll here: each pass of Nipype's loop walks every pending task
        # and the whole dependency matrix, most of the driver's CPU at 10,000 jobs.
        if not self._graph_changed:
            delay = self._parts.flight.next_poll - time.monotonic()
            if self._parts.flight.jobs and delay > 0:
                time.sleep(delay)
            return
        self._graph_changed = False
        for run in self._packing.held():  # what they waited for may be done now
            self._launch_if_ready(run)
        if self._parts.collector is not None:
            for jobid in np.nonzero(~self.proc_done & (self.depidx.sum(0) == 0))[1]:
                self._parts.collector.materialise_upstream(self.procs[jobid])
        try:
            super()._send_procs_to_workers(updatehash=updatehash, graph=graph)
        finally:
            # Everything made ready in this pass goes out now, siblings as one array job.
            if self._parts.submitter is not None:
                self._local_failures.update(self._parts.submitter.flush(
                    self._admit if self._budget is not None else None))

    def _submit_job(self, node: Any, updatehash: bool = False) -> int:
        taskid = self._next_taskid
        self._next_taskid += 1
        self._updatehash = updatehash
        try:
            node_dir = node.output_dir()
            run = self._packing.run_for(node_dir)
            if run is not None and node_dir in run.views:  # its pack runs already
                self._join(run, node_dir, taskid)
                return taskid
            node._get_inputs()
            hashvalue = node._get_hashval()[1]
            # before the resume check, which would list every subnode's files in S3
            if collate_mapnode_here(node):
                self._done_here.add(taskid)
                return taskid
            job = self._parts.resumer.job_in_flight(node, hashvalue)
            if job is not None:
                self._parts.flight.track(taskid, job, submitted=False)
                self.resumed_job_ids.append(job.job_id)
                if job.in_pack:  # its pack's other nodes wait for the same job
                    self._packing.resume(job)
            elif self._parts.resumer.fetch_committed(node, hashvalue):
                self._done_here.add(taskid)
            elif run is not None and not run.launched:
                run.offered[node_dir] = (taskid, node, hashvalue)
                self._launch_if_ready(run)
            else:
                self._parts.submitter.prepare(node, updatehash, taskid, hashvalue)
        except Exception:
            self._local_failures[taskid] = format_exception(*sys.exc_info())
        return taskid

    # ---- packs: several nodes in one job --------------------------------------------------

    def _launch_if_ready(self, run: PackRun) -> None:
        """Prepare the pack's job once all its nodes need from outside it is done; only
        the nodes not done yet go (an earlier run, or this one's cache, did the others)."""
        remaining = [d for d in run.pack.members if not self._is_done(d)]
        inside = set(remaining)
        if any(not self._is_done(p) for d in remaining for p in self._packing.after[d]
               if p not in inside):
            return
        try:
            if len(remaining) == 1 and remaining[0] in run.offered:
                taskid, node, hashvalue = run.offered[remaining[0]]
                run.single = True
                self._parts.submitter.prepare(node, self._updatehash, taskid, hashvalue)
                return
            index = {d: i for i, d in enumerate(remaining)}
            nodes = []
            for node_dir in remaining:
                if node_dir in run.offered:
                    taskid, node, hashvalue = run.offered[node_dir]
                else:
                    taskid, hashvalue = None, ""
                    node = copy.deepcopy(self.procs[self._jobid_of(node_dir)])
                    load_outside_inputs(node, inside)
                nodes.append(PackNode(node, taskid, hashvalue, tuple(
                    index[p] for p in self._packing.after[node_dir] if p in index)))
            resources = pack_resources(resources_for(nodes[0].node, self.settings), run.pack)
            first = min(taskid for taskid, _node, _hash in run.offered.values())
            run.prepared = self._parts.submitter.prepare_pack(nodes, resources,
                                                              self._updatehash, first)
            run.views = {view.node_dir: view for _taskid, view in run.prepared.members}
        except Exception:
            run.single = True  # not again: its offered nodes fail as a node would
            failure = format_exception(*sys.exc_info())
            for taskid, _node, _hash in run.offered.values():
                self._local_failures[taskid] = failure

    def _join(self, run: PackRun, node_dir: str, taskid: int) -> None:
        """Nipype offers a node of a pack that is prepared or running: wait for its marker."""
        view = run.views[node_dir]
        if not view.job_id and run.prepared is not None:  # submitted at the end of the pass
            members = run.prepared.members
            members[[v for _t, v in members].index(view)] = (taskid, view)
        else:
            self._parts.flight.track(taskid, view)

    def _is_done(self, node_dir: str) -> bool:
        """Whether Nipype is done with a node (finished, failed, or skipped)."""
        jobid = self._jobid_of(node_dir)
        return bool(self.proc_done[jobid] and not self.proc_pending[jobid])

    def _jobid_of(self, node_dir: str) -> int:
        if not self._jobids:
            self._jobids = {self._output_dir_of(j): j for j in range(len(self.procs))}
        return self._jobids[node_dir]

    def _get_result(self, taskid: int) -> dict[str, Any] | None:
        if taskid in self._done_here:
            return nipype_result()
        if taskid in self._local_failures:
            return nipype_result(self._local_failures[taskid], here=True)
        if taskid in self._held_by_budget:
            return None  # never submitted: the run ends once the budget says so
        if taskid not in self._parts.flight.jobs and self._packing.holds(taskid):
            return None  # its pack waits for nodes outside it
        if self._parts.flight.due():  # one batched poll for every job in flight
            try:
                states = self._parts.flight.refresh()
            except BatchJobError as exc:
                # Not a node's failure: no job's state is known. End the run (raised from
                # _send_procs_to_workers, which Nipype does not catch) rather than crash nodes.
                self._fatal = exc
                return None
            self._show(states)
        try:
            status = self._parts.flight.finished_status(taskid)
            if status is None:
                return None
            job = self._parts.flight.jobs[taskid]
            if self._more_memory(job, status):
                return None  # its nodes wait for the job submitted again
            self._count_cost(job, status)
            result = self._parts.collector.collect(job, status)
            if self._memory_raised.get(job.node_dir):
                note_memory_raised(job.node_dir, self._memory_raised[job.node_dir])
            return result
        except Exception:
            return nipype_result(format_exception(*sys.exc_info()), here=True)

    def _more_memory(self, job: SubmittedJob, status: JobStatus) -> bool:
        """A job killed for memory goes again with twice the memory (``memory_retry``), up
        to MEMORY_RETRIES times and within what the backend can give; True if it went."""
        if not (self.settings.memory_retry and status.state is JobState.FAILED
                and out_of_memory(status)):
            return False
        raised = self._memory_raised.setdefault(job.node_dir, [])
        if len(raised) >= MEMORY_RETRIES:
            return False
        bigger = job.resources.memory_mb * 2
        machine = getattr(self.cloud, "machine", None)
        if machine is not None and bigger > machine.memory_mb:
            return False
        if self.settings.platform == "fargate":
            try:
                bigger = fargate_fit(replace(job.resources, memory_mb=bigger)).memory_mb
            except ConfigurationError:
                return False
        if self._budget is not None and not self._budget.admit_again(
                job, bigger, self._spent(), self._parts.flight.statuses, self._open_job_ids()):
            return False
        old_id, old_memory = job.job_id, job.resources.memory_mb
        if not job.in_pack:
            self._count_cost(job, status)  # the killed job was billed too
        new_id = self._parts.submitter.resubmit(job, bigger)
        if new_id is None:
            return False
        for node_dir in job.pack_dirs or [job.node_dir]:
            self._memory_raised.setdefault(node_dir, []).append(
                {"job_id": old_id, "memory_mb": old_memory, "reason": status.container_reason})
        log.warning("Job %s (%s) was killed for memory at %d MiB: submitted again with %d MiB "
                    "as job %s. Give the node more (mem_gb) to start there next time.",
                    old_id, job.node_name, old_memory, bigger, new_id)
        return True

    def _count_cost(self, job: SubmittedJob, status: JobStatus) -> None:
        """A collected job's cost; a pack's in slices, up to the moment each node resolves."""
        if not job.in_pack:
            self._cost.add_collected(job, status)
            return
        whole = self._parts.flight.statuses.get(job.job_id, status)
        if not whole.started_at:
            return
        since = self._cost.costed_to.get(job.job_id, whole.started_at)
        until = whole.stopped_at or time.time() * 1000
        if until > since:
            self._cost.add_collected(job, replace(whole, started_at=since, stopped_at=until))
            self._cost.costed_to[job.job_id] = until

    def _task_finished_cb(self, jobid: int, cached: bool = False) -> None:
        self._graph_changed = True
        if cached and self._parts.collector is not None:
            node_dir = self._output_dir_of(jobid)
            run = self._packing.run_for(node_dir)
            view = run.views.get(node_dir) if run is not None else None
            if view is not None and view.job_id:  # done by this run's pack job
                self._parts.collector.observe_committed(
                    view, self._parts.flight.statuses.get(view.job_id))
        super()._task_finished_cb(jobid, cached=cached)

    def _clear_task(self, taskid: int) -> None:
        self._parts.flight.forget(taskid)
        self._done_here.discard(taskid)
        self._local_failures.pop(taskid, None)

    def _clean_queue(self, jobid: int, graph: Any, result: dict[str, Any] | None = None) -> Any:
        self._graph_changed = True
        # The base class records errors only for submitted jobs; a node run on the driver
        # (run_without_submitting) that raises must fail the run too, as with MultiProc.
        if result is None and sys.exc_info()[0] is not None:
            self._run_errors.append("".join(format_exception(*sys.exc_info())))
        self._failed_nodes.add(id(self.procs[jobid]))
        removed = super()._clean_queue(jobid, graph, result=result)
        for node in (removed or {}).get("dependents", [])[1:]:
            self._skipped_nodes.add(id(node))
        return removed

    def _report_crash(self, node: Any, result: dict[str, Any] | None = None) -> str:
        crash_file = super()._report_crash(node, result=result)
        self._crash_files.append((node.fullname, str(crash_file)))
        return crash_file

    # ---- what the view shows, from Nipype's bookkeeping -----------------------------------

    def _show(self, states: Any) -> None:
        self._progress.update(Snapshot.of(
            stage_rows(self._node_states()), {s.value: n for s, n in states.items()},
            time.monotonic() - self._started,
            self._cost.so_far(self._parts.flight.jobs.values(), self._parts.flight.statuses)))

    def _node_states(self) -> list[NodeState]:
        """Every node of the graph with its stage, and its job's state while one runs.
        Nipype pops pending tasks while it asks for results, so jobs are found by directory."""
        job_states = self._parts.flight.states_by_dir()
        parents = set(self.mapnodesubids.values())
        nodes = []
        for jobid, node in enumerate(self.procs):
            if jobid in parents:
                continue  # the MapNode itself: its subnodes are its work
            parent = self.mapnodesubids.get(jobid)
            pending = self.proc_done[jobid] and self.proc_pending[jobid]
            nodes.append(NodeState(
                stage=self.procs[parent].name if parent is not None else node.name,
                done=bool(self.proc_done[jobid] and not self.proc_pending[jobid]),
                failed=id(node) in self._failed_nodes, skipped=id(node) in self._skipped_nodes,
                job_state=job_states.get(self._output_dir_of(jobid)) if pending else None))
        return nodes

    def _output_dir_of(self, jobid: int) -> str:
        if jobid not in self._proc_dirs:
            self._proc_dirs[jobid] = self.procs[jobid].output_dir()
        return self._proc_dirs[jobid]

