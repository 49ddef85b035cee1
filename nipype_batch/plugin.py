"""``BatchPlugin``: Nipype's distributed plugin loop, with each node run as an AWS Batch job.

Only Nipype glue lives here; AWS calls are in :mod:`aws.batch`, file moves in
:mod:`aws.staging`, the container side in :mod:`runner`.
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import os
import re
import shutil
import socket
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from traceback import format_exception
from typing import Any

import numpy as np
from nipype.pipeline.engine import MapNode
from nipype.pipeline.plugins.base import DistributedPluginBase
from nipype.utils.filemanip import loadpkl, savepkl

from .arrays import array_job_name, group_for_arrays, mapflow_parent
from .aws.batch import child_job_id, fits_overrides
from .aws.bundles import unpack_bookkeeping
from .aws.staging import StagedPath, find_paths, paths_in_strings
from .aws.status import JobState, JobStatus, next_poll_interval
from .builder import ImageBuilder, PublishedImage, check_ready_image, plan_images
from .cloud import Cloud, connect
from .cost import Prices, significant, usage_cost
from .errors import BatchJobError
from .journal import Journal
from .pickle_check import check_nodes_load
from .preflight import preflight
from .progress import Progress, Snapshot, StageRow, clock
from .protocol import (
    ARRAY_INDEX_PLACEHOLDER,
    CRASH_FILE,
    PAYLOAD_ENV,
    hash_file_name,
    result_file_name,
    result_path,
)
from .provenance import (
    job_record,
    output_files,
    read_provenance,
    write_collated,
    write_job_record,
)
from .resources import JobResources, fargate_fit, resources_for, runs_on_driver
from .run_log import LOG_NAME, OURS, RunLog, hold_nipype_records, start_run_log
from .settings import BatchSettings

log = logging.getLogger("nipype_batch")

LOOP_TICK_S = 0.1  # how often Nipype's loop passes; Batch is polled less often
_JOB_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_DONE_STATES = (JobState.SUCCEEDED, JobState.FAILED)


@dataclass
class SubmittedJob:
    """A node in flight as a Batch job."""

    job_id: str
    job_name: str
    node_name: str
    node_dir: str
    is_mapnode: bool
    queue: str
    definition: str
    image: str
    resources: JobResources
    hashvalue: str
    array_job_id: str | None = None  # set for a child of an array job
    array_index: int | None = None
    bundle_key: str | None = None  # the node's bookkeeping in one object (see bundles)


@dataclass
class PreparedJob:
    """A node staged and pickled, waiting for the end of the pass to be submitted."""

    taskid: int
    job: SubmittedJob
    payload: dict[str, Any]
    environment: dict[str, str]
    tags: dict[str, str]
    array_group: str | None  # the MapNode directory of a subnode: its siblings share an array


class BatchPlugin(DistributedPluginBase):
    """Run every node of a Nipype workflow as an AWS Batch job.

    Use ``wf.run(plugin='AWSBatch', plugin_args={...})`` after ``import nipype_batch``.
    Without ``job_queue``/``bucket`` it runs on the local stack (emulated AWS, real Docker).
    See :class:`nipype_batch.settings.BatchSettings` for every argument.
    """

    def __init__(self, plugin_args: dict[str, Any] | None = None) -> None:
        self.settings = BatchSettings.from_plugin_args(plugin_args)
        super().__init__(plugin_args=plugin_args)
        self.max_jobs = self.settings.max_jobs
        self.run_id = uuid.uuid4().hex[:10]
        self._cloud: Cloud | None = None
        self._held_records = hold_nipype_records(self.settings.progress, sys.stderr)
        self._reset_run_state()

    def _reset_run_state(self) -> None:
        self._jobs: dict[int, SubmittedJob] = {}
        self._prepared: list[PreparedJob] = []
        self._array_statuses: dict[str, JobStatus] = {}
        self._array_children: Counter[str] = Counter()  # children in flight per array
        self._done_on_driver: set[int] = set()
        self._listings: dict[str, dict[str, set[str]]] = {}  # mapflow folder -> subnode -> names
        self._local_failures: dict[int, list[str]] = {}
        self._statuses: dict[str, JobStatus] = {}
        self._next_poll = 0.0
        self._graph_changed = True
        self._poll_interval = self.settings.poll_min_s
        self._fatal: Exception | None = None
        self._materialised: set[str] = set()
        self._image_by_base: dict[str, str] = {}
        self.published_images: list[PublishedImage] = []
        self._next_taskid = 0
        self._progress = Progress("off")
        self._run_log: RunLog | None = None
        self._started = time.monotonic()
        self._failed_nodes: set[int] = set()  # id() of nodes that raised, and of those skipped
        self._skipped_nodes: set[int] = set()
        self._crash_files: list[tuple[str, str]] = []  # (node, crash file)
        self._prices: Prices | None = None
        self._cost_collected = 0.0  # of jobs already collected
        self._proc_dirs: dict[int, str] = {}  # Nipype's node index -> its directory
        self._log_tails: dict[str, list[str]] = {}
        self.submitted_job_ids: list[str] = []
        self.array_job_ids: list[str] = []
        self.poll_count = 0  # status polls (each one DescribeJobs per 100 jobs or arrays)
        self.resumed_job_ids: list[str] = []
        self._recovered: set[int] = set()
        self._journal = Journal(tempfile.gettempdir())

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

    # ---- the run --------------------------------------------------------------------------

    def run(self, graph: Any, config: Any, updatehash: bool = False) -> Any:
        """Run the graph; whatever ends the run, no job it submitted is left running."""
        self._reset_run_state()
        _show_progress()
        mode = {True: "auto", False: "off"}.get(self.settings.progress, self.settings.progress)
        self._progress = Progress(str(mode))
        self._started = time.monotonic()
        # Nipype sleeps poll_sleep_duration (2 s) after every pass of its loop, so each
        # dependency level waits a full interval. Let the loop tick fast; _get_result polls
        # Batch on its own adaptive schedule (poll_min_s..poll_max_s).
        config = copy.deepcopy(config)
        config["execution"]["poll_sleep_duration"] = str(min(LOOP_TICK_S, self.settings.poll_min_s))
        try:
            return super().run(graph, config, updatehash=updatehash)
        finally:
            self._cancel_in_flight()
            if self._held_records is not None:  # the run ended before its first check
                self._held_records.hand_over()
                self._held_records = None
            report = self._write_report()
            self._progress.close(self._summary(report))
            if self._run_log is not None:
                self._run_log.restore()
                self._run_log = None

    def _write_report(self) -> str | None:
        """The run report next to the workflow; a failure here never hides the run's own."""
        if not self.settings.report or not (self.submitted_job_ids or self.resumed_job_ids):
            return None
        try:
            from .report import write_report

            paths = write_report(self._journal.directory.parent.parent, log_tails=self._log_tails,
                                 platform=_billing(self.settings.platform),
                                 spot=self.settings.platform == "spot")
            log.debug("Run report of %d jobs written to %s", paths.jobs, paths.html)
            return str(paths.html)
        except Exception as exc:
            log.warning("Could not write the run report: %s", exc)
            return None

    def _summary(self, report: str | None) -> list[str]:
        """What the run leaves on screen when it ends: outcome, crash files, report, cost."""
        if self.procs is None:
            return []
        rows = self._stage_rows()
        done = sum(r.done for r in rows)
        total = sum(r.total for r in rows)
        failed = len(self._crash_files)
        lines = [f"nipype-batch: {done} of {total} nodes done, {failed} failed, "
                 f"{len(self.submitted_job_ids)} jobs submitted in "
                 f"{clock(time.monotonic() - self._started)}"]
        lines += [f"  failed: {node}: crash file {path}" for node, path in self._crash_files]
        if report:
            lines.append(f"  report: {report}")
        cost = self._cost_so_far()
        if cost:
            lines.append(f"  estimated cost: {cost} ({self._prices_note()})")
        return lines

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
        self._journal = Journal(job_nodes[0].base_dir or tempfile.gettempdir())
        queues = {resources_for(n, self.settings).job_queue or self.cloud.job_queue
                  for n in job_nodes}
        for queue in sorted(queues):
            self.cloud.ensure_queue(queue)
        # cheapest first: what the nodes import (no I/O), the cloud, then images
        plan = plan_images(job_nodes, self.settings, self.cloud.base_image)
        preflight(self.settings, self.cloud, job_nodes)
        self._publish(*plan, nodes=job_nodes)

    def publish_images(self, nodes: list[Any]) -> list[PublishedImage]:
        """Build (where missing) and publish the job images ``nodes`` need.

        One image per base image, holding what all its nodes import; ready images (``image``)
        are checked, not built. Every kind of node is then loaded in its image once.
        """
        return self._publish(*plan_images(nodes, self.settings, self.cloud.base_image),
                             nodes=nodes)

    def _publish(self, specs: dict[str, Any], ready: dict[str, str],
                 nodes: list[Any]) -> list[PublishedImage]:
        docker = self.cloud.docker()
        builder = ImageBuilder(docker, self.cloud.registry)
        local_refs: dict[str, str] = {}
        for spec in dict.fromkeys(specs.values()):
            image = builder.ensure(spec)
            self._image_by_base[spec.base_image] = image.ref
            local_refs[image.ref] = image.local_ref
            self.published_images.append(image)
            log.info("Job image %s on %s: %s in %.1f s", image.ref, spec.base_image,
                     "built and pushed" if image.built else
                     "pushed" if image.pushed else "already published", image.seconds)
        for ref in sorted(set(ready.values())):
            check_ready_image(docker, ref)
        # Before any submission: every kind of node must load in the image it will run in.
        by_image: dict[str, list[Any]] = {}
        for node in nodes:
            ref = ready.get(node._id) or self._image_by_base[specs[node._id].base_image]
            by_image.setdefault(ref, []).append(node)
        for ref, image_nodes in by_image.items():
            check_nodes_load(docker, ref, image_nodes, local_ref=local_refs.get(ref))
        return self.published_images

    def _image_for(self, resources: JobResources) -> str:
        # A MapNode's subnodes inherit its plugin_args, so they resolve to its image.
        if resources.image:
            return resources.image
        base = resources.base_image or self.cloud.base_image
        return self._image_by_base[base]

    def _send_procs_to_workers(self, updatehash: bool = False, graph: Any = None) -> None:
        if self._fatal is not None:
            raise self._fatal
        # Nothing can have become ready unless a task ended since the last pass. Then wait
        # for the next status poll here: each pass of Nipype's loop walks every pending task
        # and the whole dependency matrix, most of the driver's CPU at 10,000 jobs.
        if not self._graph_changed:
            delay = self._next_poll - time.monotonic()
            if self._jobs and delay > 0:
                time.sleep(delay)
            return
        self._graph_changed = False
        # Upstream outputs must exist on the driver before Nipype checks a node's cache or
        # sets its inputs (File(exists=True) traits); fetch the ones jobs produced.
        ready = np.nonzero(~self.proc_done & (self.depidx.sum(0) == 0))[1]
        for jobid in ready:
            self._materialise_upstream(self.procs[jobid])
        try:
            super()._send_procs_to_workers(updatehash=updatehash, graph=graph)
        finally:
            # Everything made ready in this pass goes out now, siblings as one array job.
            self._submit_prepared()

    def _materialise_upstream(self, node: Any) -> None:
        if node._id in self._materialised:
            return
        for results_fname, _conn in node.input_source.values():
            for path in output_files(os.path.dirname(results_fname)):
                if not os.path.exists(path):
                    self.cloud.stager.download(StagedPath(path, "remote"))
        self._materialised.add(node._id)

    # ---- submission ----------------------------------------------------------------------

    def _submit_job(self, node: Any, updatehash: bool = False) -> int:
        taskid = self._next_taskid
        self._next_taskid += 1
        try:
            node._get_inputs()
            hashvalue = node._get_hashval()[1]
            # before the resume check, which would list every subnode's files in S3
            if self._collect_mapnode_on_driver(node):
                self._done_on_driver.add(taskid)
                return taskid
            if self._resume(node, hashvalue, taskid):
                return taskid
            self._prepared.append(self._prepare(node, updatehash, taskid, hashvalue))
        except Exception:
            self._local_failures[taskid] = format_exception(*sys.exc_info())
        return taskid

    def _collect_mapnode_on_driver(self, node: Any) -> bool:
        """Finish a MapNode whose subnodes all ran as jobs, here rather than as one more job.

        Nipype runs a MapNode after its subnodes, re-running each as a cache hit to collate
        their results. Their results are already on the driver; a job would download every
        subnode directory first. Falls back to a job if any subnode's result is missing here.
        """
        if not isinstance(node, MapNode):
            return False
        count = node.num_subnodes()
        if count < 2:
            return False
        subnodes = (sub for _index, sub in node._make_nodes(node.output_dir()))
        if not all(os.path.exists(result_path(sub.output_dir(), sub.name))
                   for sub in subnodes):
            return False
        node.use_plugin = None  # holds the user's plugin_args, maybe unpicklable
        started = time.monotonic()
        node.run()
        write_collated(node.output_dir())
        log.info("Collated %s from %d subnode results on the driver in %.1f s", node.fullname,
                 count, time.monotonic() - started)
        return True

    def _submit_prepared(self) -> None:
        prepared, self._prepared = self._prepared, []
        for group in group_for_arrays(prepared, lambda p: (
                p.array_group and (p.array_group, p.job.queue, p.job.definition,
                                   p.job.resources))):
            try:
                if len(group) == 1:
                    self._submit_one(group[0])
                else:
                    self._submit_array(group)
            except Exception:
                failure = format_exception(*sys.exc_info())
                for item in group:
                    self._local_failures[item.taskid] = failure

    def _submit_one(self, item: PreparedJob) -> None:
        stager = self.cloud.stager
        key = stager.control_key(self.run_id, f"{item.taskid}-{item.job.job_name}.json")
        payload_uri = stager.put_bytes(key, json.dumps(item.payload).encode())
        job = item.job
        job.job_id = self.cloud.batch.submit(
            job.job_name, job.queue, job.definition, job.resources,
            {**item.environment, PAYLOAD_ENV: payload_uri}, item.tags,
        )
        self._track(item.taskid, job)
        log.info("Submitted %s as job %s (%d vCPU, %d MiB)", item.tags["nipype-batch:node"],
                 job.job_id, job.resources.vcpus, job.resources.memory_mb)

    def _submit_array(self, group: list[PreparedJob]) -> None:
        """One array job for ``group``; child ``i`` reads payload ``<prefix>/i.json``."""
        stager = self.cloud.stager
        first = group[0].job
        name = array_job_name(first.job_name)
        folder = stager.control_key(self.run_id, f"{group[0].taskid}-{name}")
        for index, item in enumerate(group):
            stager.put_bytes(f"{folder}/{index}.json", json.dumps(item.payload).encode())
        template = f"s3://{stager.bucket}/{folder}/{ARRAY_INDEX_PLACEHOLDER}.json"
        tags = {**group[0].tags, "nipype-batch:node": group[0].array_group[-256:]}
        tags.pop("nipype-batch:hash", None)
        array_id = self.cloud.batch.submit(
            name, first.queue, first.definition, first.resources,
            {**group[0].environment, PAYLOAD_ENV: template}, tags, array_size=len(group),
        )
        self.array_job_ids.append(array_id)
        for index, item in enumerate(group):
            item.job.job_id = child_job_id(array_id, index)
            item.job.array_job_id, item.job.array_index = array_id, index
            self._track(item.taskid, item.job)
        log.info("Submitted %d nodes of %s as array job %s (%d vCPU, %d MiB each)", len(group),
                 group[0].array_group, array_id, first.resources.vcpus, first.resources.memory_mb)

    def _track(self, taskid: int, job: SubmittedJob) -> None:
        self._jobs[taskid] = job
        if job.array_job_id:
            self._array_children[job.array_job_id] += 1
        self.submitted_job_ids.append(job.job_id)
        self._journal.record(job.node_dir, job.hashvalue, _journal_entry(job))

    def _resume(self, node: Any, hashvalue: str, taskid: int) -> bool:
        """Pick up what an earlier driver left: a job still in flight, or a finished result.

        A driver that died leaves its jobs running (they are Batch's, not its own) and their
        journal entries behind; a rerun with the same inputs waits for those jobs. A job that
        finished after its driver died left a committed result in S3, fetched instead of
        running the node again.
        """
        node_dir = node.output_dir()
        entry = self._journal.find(node_dir, hashvalue)
        if entry is not None:
            status = self.cloud.batch.describe([entry["job_id"]]).get(entry["job_id"])
            if status is not None and status.state is not JobState.FAILED:
                job = _job_from_entry(entry)
                self._jobs[taskid] = job
                self.resumed_job_ids.append(job.job_id)
                log.info("Resumed %s: job %s (%s), submitted by an earlier driver",
                         node.fullname, job.job_id, status.state.value)
                return True
            self._journal.forget(node_dir, hashvalue)
        if self._fetch_committed(node, node_dir, hashvalue):
            self._recovered.add(taskid)
            log.info("Recovered %s from S3: a job finished it after its driver stopped",
                     node.fullname)
            return True
        return False

    def _fetch_committed(self, node: Any, node_dir: str, hashvalue: str) -> bool:
        """Fetch a successful result for these exact inputs from S3, if one was committed."""
        stager = self.cloud.stager
        names = self._committed_names(node_dir)
        if result_file_name(node.name) not in names or hash_file_name(hashvalue) not in names:
            return False
        if not isinstance(node, MapNode):
            shutil.rmtree(node_dir, ignore_errors=True)
        fetched = stager.fetch_node_dir(node_dir, everything=bool(self.settings.fetch_outputs))
        if fetched and not read_provenance(node_dir).get("runner", {}).get("node_failed"):
            return True
        if not isinstance(node, MapNode):  # a crash is no cache: run the node again
            shutil.rmtree(node_dir, ignore_errors=True)
        return False

    def _committed_names(self, node_dir: str) -> set[str]:
        """Names of the files S3 holds for a node directory.

        A MapNode's subnodes are looked up with one listing of their shared ``mapflow``
        folder, grouped by subnode, rather than one listing each.
        """
        stager = self.cloud.stager
        parent = mapflow_parent(node_dir)
        if parent is None:
            return {os.path.relpath(stager.path_for(key), node_dir)
                    for key, _size in stager.list_tree(node_dir)}
        folder = os.path.join(parent, "mapflow")
        if folder not in self._listings:
            by_subnode: dict[str, set[str]] = {}
            for key, _size in stager.list_tree(folder):
                subnode, _, name = os.path.relpath(stager.path_for(key), folder).partition("/")
                by_subnode.setdefault(subnode, set()).add(name)
            self._listings[folder] = by_subnode
        return self._listings[folder].get(os.path.basename(node_dir.rstrip("/")), set())

    def _prepare(self, node: Any, updatehash: bool, taskid: int,
                 hashvalue: str) -> PreparedJob:
        cloud = self.cloud
        resources = resources_for(node, self.settings)
        if self.settings.platform == "fargate":
            resources = fargate_fit(resources)
        image = self._image_for(resources)
        definition = cloud.batch.ensure_job_definition(
            image, self.settings.job_role_arn, _billing(self.settings.platform),
            self.settings.execution_role_arn)
        node_dir = node.output_dir()
        staged, may_write = self._stage_inputs(node, node_dir)
        if isinstance(node, MapNode):  # the parent re-uses its subnodes' directories
            staged.append(StagedPath(node_dir, "remote"))
        job_name = self._job_name(node)
        if hasattr(node, "use_plugin"):
            node.use_plugin = None  # holds the user's plugin_args, maybe unpicklable
        with tempfile.TemporaryDirectory() as tmp:
            pickle_path = os.path.join(tmp, "node.pklz")
            savepkl(pickle_path, {"node": node, "updatehash": updatehash})
            with open(pickle_path, "rb") as fh:
                node_pickle = base64.b64encode(fh.read()).decode()
        bundle_key = cloud.stager.control_key(self.run_id, "bundles", f"{taskid}.tar")
        payload = {
            "version": 2,
            "bucket": cloud.stager.bucket,
            "prefix": cloud.stager.prefix,
            "node_dir": node_dir,
            "node_name": node.name,  # names the result file even if the pickle cannot load
            "node_pickle": node_pickle,  # in the payload: one object per job, not two
            "bundle_key": bundle_key,
            "inputs": [vars(s) for s in staged],
            "string_paths": may_write,
        }
        environment = {**self.settings.environment, **cloud.job_environment}
        # the longest payload URI this job may get (an array child's is a little longer)
        uri = "s3://{}/{}/{}".format(cloud.stager.bucket, cloud.stager.control_key(
            self.run_id, f"{taskid}-{job_name}"), "x" * 24)
        if not fits_overrides(resources, {**environment, PAYLOAD_ENV: uri}):
            # Too large for Batch's 8192-character overrides: the runner sets them instead.
            payload["environment"] = self.settings.environment
            environment = dict(cloud.job_environment)
        queue = resources.job_queue or cloud.job_queue
        tags = {
            "nipype-batch:run": self.run_id,
            "nipype-batch:node": node.fullname[-256:],
            "nipype-batch:hash": hashvalue,
        }
        job = SubmittedJob(
            job_id="", job_name=job_name, node_name=node.name, node_dir=node_dir,
            is_mapnode=isinstance(node, MapNode), queue=queue, definition=definition,
            image=image, resources=resources, hashvalue=hashvalue, bundle_key=bundle_key,
        )
        return PreparedJob(taskid=taskid, job=job, payload=payload, environment=environment,
                           tags=tags, array_group=mapflow_parent(node_dir))

    def _stage_inputs(self, node: Any, node_dir: str) -> tuple[list[StagedPath], list[str]]:
        """Upload the local files a node's inputs name; list every path the job must fetch,
        and the paths inside strings the node may write (see :func:`paths_in_strings`)."""
        base_dir = os.path.abspath(node.base_dir or "/")
        staged, may_write = [], []
        # A MapNode keeps its iterfields in node.inputs and the rest on its interface.
        values = [node.inputs.get(), node.interface.inputs.get()]
        whole = find_paths(values)
        in_strings = {path for path in paths_in_strings(values) - whole
                      if not _is_system_path(path)}
        for path in sorted(whole | in_strings):
            if _is_within(path, node_dir) or _is_within(base_dir, path):
                continue  # its own outputs, or a directory holding the whole work tree
            if os.path.isfile(path):
                self.cloud.stager.ensure_uploaded(path)
                staged.append(StagedPath(path, "file"))
            elif os.path.isdir(path):
                self.cloud.stager.ensure_uploaded(path)
                staged.append(StagedPath(path, "dir"))
            else:
                staged.append(StagedPath(path, "remote"))
                if path in in_strings and os.path.isdir(os.path.dirname(path)):
                    may_write.append(path)  # e.g. '-o /data/out.nii.gz': the tool writes it
        return staged, may_write

    def _job_name(self, node: Any) -> str:
        name = f"{self.cloud.job_name_prefix}{self.settings.job_name_prefix}-{node.fullname}"
        return _JOB_NAME_UNSAFE.sub("_", name)[:128]

    # ---- status and results ----------------------------------------------------------------

    def _get_result(self, taskid: int) -> dict[str, Any] | None:
        if taskid in self._recovered or taskid in self._done_on_driver:
            return {"result": None, "traceback": None, "hostname": None}
        if taskid in self._local_failures:
            return {"result": None, "traceback": self._local_failures[taskid],
                    "hostname": socket.gethostname()}
        job = self._jobs[taskid]
        if time.monotonic() >= self._next_poll:  # one batched poll for every job in flight
            try:
                self._refresh_statuses()
            except BatchJobError as exc:
                # Not a node's failure: no job's state is known. End the run (raised from
                # _send_procs_to_workers, which Nipype does not catch) rather than crash nodes.
                self._fatal = exc
                return None
        try:
            status = self._statuses.get(job.job_id)
            if status is None or status.state not in _DONE_STATES:
                return None
            return self._collect(job, status)
        except Exception:
            return {"result": None, "traceback": format_exception(*sys.exc_info()),
                    "hostname": socket.gethostname()}

    def _refresh_statuses(self) -> None:
        """One DescribeJobs per 100 jobs or arrays in flight; an array's children are described
        only once the array has ended, to learn each one's outcome."""
        self.poll_count += 1
        in_flight = list(self._jobs.values())
        top = {job.array_job_id or job.job_id for job in in_flight}
        for job_id, status in self.cloud.batch.describe(top).items():
            if job_id in self._array_statuses or status.array_summary is not None:
                self._array_statuses[job_id] = status
            else:
                self._statuses[job_id] = status
        ended = {a for a, status in self._array_statuses.items() if status.state.done}
        waiting: dict[str, list[int]] = {}
        for job in in_flight:
            if job.array_job_id in ended and job.job_id not in self._statuses:
                waiting.setdefault(job.array_job_id, []).append(job.array_index)
        for array_id, indices in waiting.items():
            self._statuses.update(self.cloud.batch.describe_children(array_id, indices))
        states = self._current_states(in_flight, top)
        self._poll_interval = next_poll_interval(
            states.elements(), self._poll_interval, self.settings.poll_min_s,
            self.settings.poll_max_s)
        self._next_poll = time.monotonic() + self._poll_interval
        self._progress.update(Snapshot.of(
            self._stage_rows(), {s.value: n for s, n in states.items()},
            time.monotonic() - self._started, self._cost_so_far()))

    def _stage_rows(self) -> list[StageRow]:
        """Nodes by stage (the node's name; a MapNode's subnodes count under its name), from
        Nipype's own bookkeeping and the Batch state of each node's job."""
        # Nipype pops pending_tasks while it asks for results, so jobs are found by directory.
        job_in = {job.node_dir: job for job in self._jobs.values()}
        # An array's children are not described until it ends: its summary says how many
        # are in each state, and they all count under one stage.
        from_summary = {array_id: _states_in_order(status.array_summary or {})
                        for array_id, status in self._array_statuses.items()}
        parents = set(self.mapnodesubids.values())
        counts: dict[str, Counter] = {}
        for jobid, node in enumerate(self.procs):
            if jobid in parents:
                continue  # the MapNode itself: its subnodes are its work
            parent = self.mapnodesubids.get(jobid)
            row = counts.setdefault(self.procs[parent].name if parent is not None else node.name,
                                    Counter())
            row["total"] += 1
            pending = self.proc_done[jobid] and self.proc_pending[jobid]
            job = job_in.get(self._output_dir_of(jobid)) if pending else None
            if id(node) in self._failed_nodes:
                row["failed"] += 1
            elif id(node) in self._skipped_nodes:
                continue
            elif job is not None:
                status = self._statuses.get(job.job_id)
                if status is not None:
                    state = status.state
                elif from_summary.get(job.array_job_id or ""):
                    state = from_summary[job.array_job_id or ""].pop()
                else:
                    state = JobState.SUBMITTED
                row["running" if state in (JobState.STARTING, JobState.RUNNING) else
                    "done" if state is JobState.SUCCEEDED else "queued"] += 1
            elif self.proc_done[jobid] and not self.proc_pending[jobid]:
                row["done"] += 1
        return [StageRow(name, **row) for name, row in counts.items()]

    def _output_dir_of(self, jobid: int) -> str:
        if jobid not in self._proc_dirs:
            self._proc_dirs[jobid] = self.procs[jobid].output_dir()
        return self._proc_dirs[jobid]

    def _cost_so_far(self) -> str | None:
        """Jobs' billed time so far at the report's prices: collected jobs, and those running."""
        if self._prices is None:
            from .cost import load_prices

            try:
                self._prices = load_prices(_billing(self.settings.platform),
                                           spot=self.settings.platform == "spot")
            except Exception:
                return None
        now_ms = time.time() * 1000
        running = sum(_job_cost(job.resources, status.started_at, status.stopped_at or now_ms,
                                self._prices)
                      for job in self._jobs.values()
                      if (status := self._statuses.get(job.job_id)) is not None
                      and status.started_at)
        total = (self._cost_collected + running) * (
            1 - self._prices.spot_discount if self._prices.spot else 1)
        return f"{self._prices.currency} {significant(total)}"

    def _prices_note(self) -> str:
        prices = self._prices
        if prices is None:
            return ""
        return f"{prices.platform}{' Spot' if prices.spot else ''} prices of {prices.as_of}"

    def _current_states(self, in_flight: list[SubmittedJob], top: set[str]) -> Counter:
        """How many jobs in flight are in each state; an array counts its children."""
        states: Counter = Counter()
        for job in in_flight:
            if job.job_id in self._statuses:
                states[self._statuses[job.job_id].state] += 1
        for array_id in top & set(self._array_statuses):
            summary = self._array_statuses[array_id].array_summary or {}
            for state, count in summary.items():
                if count and state not in ("SUCCEEDED", "FAILED"):
                    states[JobState(state)] += count
        return states

    def _collect(self, job: SubmittedJob, status: JobStatus) -> dict[str, Any]:
        """Bring a finished job's node directory home and answer as Nipype expects."""
        stager = self.cloud.stager
        if not job.is_mapnode:
            shutil.rmtree(job.node_dir, ignore_errors=True)  # as Nipype empties a re-run node
        fetched = self._fetch_finished(job)
        runner = read_provenance(job.node_dir).get("runner", {})
        record = job_record(
            job_id=job.job_id, job_name=job.job_name, job_queue=job.queue,
            job_definition=job.definition, image=job.image, resources=job.resources,
            status=status, log_stream=status.log_stream,
        )
        if job.array_job_id is not None:
            record.update(array_job_id=job.array_job_id, array_index=job.array_index)
        write_job_record(job.node_dir, record)
        if self._prices is not None and status.started_at:
            self._cost_collected += _job_cost(job.resources, status.started_at,
                                              status.stopped_at or status.started_at,
                                              self._prices)
        result_file = result_path(job.node_dir, job.node_name)
        if status.state is JobState.SUCCEEDED and fetched and not runner.get("node_failed"):
            return {"result": None, "traceback": None, "hostname": runner.get("hostname")}
        traceback: list[str] = []
        if fetched and runner.get("node_failed"):
            crash = loadpkl(result_file)
            traceback = list(crash.get("traceback") or [])
            os.replace(result_file, os.path.join(job.node_dir, CRASH_FILE))
        else:
            where = f"s3://{stager.bucket}/{stager.key_for(job.node_dir)}/"
            traceback = [
                f"AWS Batch job {job.job_id} ({job.job_name}) for node {job.node_name} ended "
                f"{status.state.value}: {status.reason or 'no reason given'} (exit code "
                f"{status.exit_code}). It left no result file under {where}.\n"
            ]
        tail = self.cloud.batch.log_tail(status.log_stream)
        self._log_tails[job.job_id] = tail
        if tail:
            traceback.append(
                f"\n--- last {len(tail)} log lines of job {job.job_id} "
                f"(log stream {status.log_stream}) ---\n" + "\n".join(tail) + "\n"
            )
        missing = _missing_module(traceback)  # in the reason or in the job's own log
        if missing:
            traceback.append(
                f"\nHint: the job image has no module {missing!r}. Add its package to "
                f"plugin_args={{'packages': [...]}} (pinned to your installed version).\n"
            )
        return {"result": None, "traceback": traceback, "hostname": runner.get("hostname")}

    def _fetch_finished(self, job: SubmittedJob) -> bool:
        """A finished job's node directory: its bundle in one GET, else file by file."""
        stager, everything = self.cloud.stager, bool(self.settings.fetch_outputs)
        bundle = stager.get_bytes(job.bundle_key, missing_ok=True) if job.bundle_key else None
        if not bundle or not unpack_bookkeeping(bundle, job.node_dir):
            fetched = stager.fetch_node_dir(job.node_dir, everything=everything)
        else:
            if everything:
                stager.fetch_node_dir(job.node_dir, everything=True, data_only=True)
            fetched = True
        if fetched and everything:  # and what it wrote elsewhere, as a local run leaves it
            for path in output_files(job.node_dir):
                if not _is_within(path, job.node_dir):
                    stager.download(StagedPath(path, "remote"))
        return fetched

    def _task_finished_cb(self, jobid: int, cached: bool = False) -> None:
        self._graph_changed = True
        super()._task_finished_cb(jobid, cached=cached)

    def _clear_task(self, taskid: int) -> None:
        job = self._jobs.pop(taskid, None)
        if job is not None:
            self._journal.forget(job.node_dir, job.hashvalue)
            self._statuses.pop(job.job_id, None)
            if job.array_job_id:
                self._array_children[job.array_job_id] -= 1
                if not self._array_children[job.array_job_id]:
                    self._array_statuses.pop(job.array_job_id, None)
                    del self._array_children[job.array_job_id]
        self._recovered.discard(taskid)
        self._done_on_driver.discard(taskid)
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

    def _cancel_in_flight(self) -> None:
        if not self._jobs or self._cloud is None:
            return
        # Terminating an array job terminates its children.
        ids = list(dict.fromkeys(job.array_job_id or job.job_id for job in self._jobs.values()))
        log.warning("Run stopped with %d jobs in flight: terminating %s", len(ids), ", ".join(ids))
        left = self._cloud.batch.terminate(ids, reason=f"nipype-batch run {self.run_id} stopped")
        if left:
            log.error("Could not terminate %d jobs, which may still be running (and billing): %s",
                      len(left), ", ".join(left))
        self._jobs.clear()


def _billing(platform: str) -> str:
    """The capability jobs run with and are priced at: Spot instances are EC2."""
    return "fargate" if platform == "fargate" else "ec2"


def _journal_entry(job: SubmittedJob) -> dict[str, Any]:
    return {**asdict(job), "resources": asdict(job.resources)}


def _job_from_entry(entry: dict[str, Any]) -> SubmittedJob:
    fields = {k: v for k, v in entry.items() if k in SubmittedJob.__dataclass_fields__}
    return SubmittedJob(**{**fields, "resources": JobResources(**entry["resources"])})


def _missing_module(traceback: list[str]) -> str | None:
    """The module a remote ModuleNotFoundError names, if that is how the node failed."""
    found = re.findall(r"ModuleNotFoundError: No module named '([\w.]+)'", "".join(traceback))
    return found[-1] if found else None


def _states_in_order(summary: dict[str, int]) -> list[JobState]:
    """An array's children by state, as a stack to pop from."""
    return [JobState(state) for state, count in summary.items() for _ in range(count)]


def _job_cost(resources: JobResources, started_ms: float, stopped_ms: float,
              prices: Prices) -> float:
    """On-demand cost of one attempt's running time, by the report's rule."""
    return usage_cost(resources.vcpus, resources.memory_mb, (stopped_ms - started_ms) / 1000,
                      prices)


def _show_progress() -> None:
    """Make our INFO lines visible next to Nipype's when the application set up no logging."""
    package_log = logging.getLogger("nipype_batch")
    if package_log.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler()
    setattr(handler, OURS, True)  # run_log may send this handler's records to the run's log
    handler.setFormatter(logging.Formatter("%(asctime)s nipype_batch %(levelname)s: %(message)s",
                                           "%y%m%d-%H:%M:%S"))
    package_log.addHandler(handler)
    package_log.setLevel(logging.INFO)


# Paths in a command line under these belong to the tool's own installation, which its image
# has at the same place: staging the driver's copy would replace it.
_SYSTEM_PREFIXES = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/proc", "/run",
                    "/sbin", "/sys", "/usr", "/var/lib", "/System", "/Library", "/Applications",
                    "/opt/homebrew", "/opt/conda")


def _is_system_path(path: str) -> bool:
    """Whether a path found inside a string is the system's or Python's, not the user's."""
    roots = (*_SYSTEM_PREFIXES, sys.prefix, sys.base_prefix, sys.exec_prefix)
    return path in ("/tmp", "/home", "/root", "/opt", "/var") or any(
        _is_within(path, root) for root in roots if root and root != "/")


def _is_within(path: str, directory: str) -> bool:
    """Whether ``path`` is ``directory`` or lies below it."""
    return path == directory or path.startswith(directory.rstrip("/") + "/")
