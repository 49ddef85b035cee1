"""A ready node becomes a job: staged, pickled, described, and submitted with its siblings."""

from __future__ import annotations

import base64
import logging
import math
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from traceback import format_exception
from typing import Any

from nipype.pipeline.engine import MapNode
from nipype.utils.filemanip import savepkl

from ..aws.batch import child_job_id, fits_overrides
from ..aws.staging import StagedPath
from ..history import history_key
from ..platforms import capability
from ..protocol import ARRAY_INDEX_PLACEHOLDER, PAYLOAD_ENV, JobPayload, PackMember
from ..resources import JobResources, fargate_fit, resources_for
from ..settings import BatchSettings
from .arrays import array_job_name, group_for_arrays, mapflow_parent
from .inputs import is_within, stage_inputs
from .jobs import PreparedJob, SubmittedJob
from .poll import JobsInFlight

log = logging.getLogger("nipype_batch")

_JOB_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


@dataclass
class PackNode:
    """A node of a job to prepare: its task id (None until Nipype asks for the node), the
    hash of its inputs where known, and the nodes of the same job it waits for."""

    node: Any
    taskid: int | None
    hashvalue: str = ""
    after: tuple[int, ...] = ()


FARGATE_SCRATCH_GB = 20  # what a Fargate job gets without ephemeralStorage


class Submitter:
    """Prepares nodes as they become ready and submits each pass's nodes at its end,
    the subnodes of one MapNode as one array job."""

    def __init__(self, cloud: Any, settings: BatchSettings, run_id: str,
                 image_for: Callable[[JobResources], str], flight: JobsInFlight,
                 work_dir: str | None = None) -> None:
        self.cloud = cloud
        # job id -> what submits it again (payload URI, environment, tags, its nodes' views)
        self._again: dict[str, tuple[str, dict[str, str], dict[str, str],
                                     list[tuple[int | None, SubmittedJob]]]] = {}
        self.work_dir = work_dir  # the workflow's base_dir
        # history key -> peak memory (MiB) earlier runs measured: a job asks at least a
        # quarter more, so a node killed for memory once starts where it ran
        self.peak_memory: dict[str, float] = {}
        self.memory_cap_mb: int | None = None  # what the backend can give (this machine)
        self.settings = settings
        self.run_id = run_id
        self.image_for = image_for
        self.flight = flight
        self._prepared: list[PreparedJob] = []
        self._subnodes: dict[str, list[tuple[PackNode, bool]]] = {}  # by MapNode directory
        # How many of a MapNode's subnodes one job runs: (history key, count) -> size.
        self.chunk: Callable[[str, int], int] | None = None

    def prepare(self, node: Any, updatehash: bool, taskid: int, hashvalue: str) -> None:
        """Stage the node's inputs and write its payload; it is submitted by :meth:`flush`.
        A MapNode's subnodes wait for the end of the pass, to run in chunks (see ``chunk``)."""
        item = PackNode(node, taskid, hashvalue)
        parent = mapflow_parent(node.output_dir())
        if parent is not None and self.chunk is not None:
            self._subnodes.setdefault(parent, []).append((item, updatehash))
            return
        self._prepare([item], resources_for(node, self.settings), updatehash, taskid, parent)

    def _prepare_subnodes(self) -> dict[int, list[str]]:
        """Each MapNode's subnodes of this pass in chunks, one job (array child) each."""
        subnodes, self._subnodes = self._subnodes, {}
        failures: dict[int, list[str]] = {}
        for parent, items in subnodes.items():
            size = self.chunk(self._history_key(items[0][0].node, parent), len(items)) \
                if self.chunk else 1
            for start in range(0, len(items), size):
                chunk = items[start:start + size]
                first = chunk[0][0]
                try:
                    self._prepare([item for item, _u in chunk],
                                  resources_for(first.node, self.settings), chunk[0][1],
                                  first.taskid or 0, parent)
                except Exception:
                    failure = format_exception(*sys.exc_info())
                    failures.update((item.taskid, failure) for item, _u in chunk
                                    if item.taskid is not None)
        if subnodes and self.chunk:
            log.info("MapNode subnodes in chunks: %s", ", ".join(
                f"{len(items)} of {os.path.basename(parent)}" for parent, items in
                subnodes.items()))
        return failures

    def prepare_pack(self, nodes: list[PackNode], resources: JobResources, updatehash: bool,
                     taskid: int) -> PreparedJob:
        """Stage and write one job that runs ``nodes`` (in dependency order); submitted by
        :meth:`flush`. ``taskid`` names its control objects."""
        return self._prepare(nodes, resources, updatehash, taskid)

    def _prepare(self, nodes: list[PackNode], resources: JobResources, updatehash: bool,
                 taskid: int, array_group: str | None = None) -> PreparedJob:
        cloud, stager = self.cloud, self.cloud.stager
        resources = self._sized_by_history(nodes, resources)
        if self.settings.platform == "fargate":
            resources = fargate_fit(resources)
        image = self.image_for(resources)
        first = nodes[0].node
        queue = resources.job_queue or cloud.job_queue
        is_pack = len(nodes) > 1
        job_name = self.job_name(first, len(nodes))
        done_prefix = stager.control_key(self.run_id, "packs", str(taskid)) if is_pack else None
        inputs: dict[str, StagedPath] = {}
        members, views = [], []
        dirs = [item.node.output_dir() for item in nodes]
        for index, item in enumerate(nodes):
            node, node_dir = item.node, dirs[index]
            if is_pack and not isinstance(node, MapNode):
                # as Nipype empties a node it re-runs; now, not when the node's result comes
                # home, since a job on this machine's disk (the simulated Batch) writes here
                shutil.rmtree(node_dir, ignore_errors=True)
            staged, may_write = stage_inputs(node, node_dir, stager)
            if isinstance(node, MapNode):  # the parent re-uses its subnodes' directories
                staged.append(StagedPath(node_dir, "remote"))
            for path in staged:
                # a pack's own outputs are made in the job, not fetched
                if not any(is_within(path.path, d) for d in dirs if d != node_dir):
                    inputs.setdefault(path.path, path)
            if hasattr(node, "use_plugin"):
                node.use_plugin = None  # holds the user's plugin_args, maybe unpicklable
            bundle_key = stager.control_key(
                self.run_id, "bundles", f"{taskid}-{index}.tar" if is_pack else f"{taskid}.tar")
            members.append(PackMember(
                node_dir=node_dir, node_name=node.name, node_pickle=_pickled(node, updatehash),
                bundle_key=bundle_key, string_paths=may_write, after=list(item.after)))
            views.append(SubmittedJob(
                job_id="", job_name=job_name, node_name=node.name, node_dir=node_dir,
                is_mapnode=isinstance(node, MapNode), queue=queue, definition="",
                image=image, resources=resources, hashvalue=item.hashvalue,
                bundle_key=bundle_key, history_key=self._history_key(node, node_dir),
                interface=f"{type(node.interface).__module__}.{type(node.interface).__name__}",
                done_prefix=done_prefix, pack_index=index if is_pack else None,
                pack_dirs=dirs if is_pack else None))
        definition = cloud.batch.ensure_job_definition(
            image, self.settings.job_role_arn, capability(self.settings.platform),
            self.settings.execution_role_arn, self.settings.architecture,
            self._scratch_gb(inputs.values()))
        for view in views:
            view.definition = definition
        payload = JobPayload(bucket=stager.bucket, prefix=stager.prefix, members=members,
                             inputs=[vars(s) for s in inputs.values()], done_prefix=done_prefix,
                             parallel=resources.vcpus)
        environment = {**self.settings.environment, **cloud.job_environment}
        # the longest payload URI this job may get (an array child's is a little longer)
        uri = "s3://{}/{}/{}".format(stager.bucket, stager.control_key(
            self.run_id, f"{taskid}-{job_name}"), "x" * 24)
        if not fits_overrides(resources, {**environment, PAYLOAD_ENV: uri}):
            # Too large for Batch's 8192-character overrides: the runner sets them instead.
            payload.environment = self.settings.environment
            environment = dict(cloud.job_environment)
        tags = {
            "nipype-batch:run": self.run_id,
            "nipype-batch:node": first.fullname[-256:],
        }
        if nodes[0].hashvalue and not is_pack:
            tags["nipype-batch:hash"] = nodes[0].hashvalue
        if is_pack:
            tags["nipype-batch:nodes"] = str(len(nodes))
        prepared = PreparedJob(taskid=taskid, job=views[0], payload=payload,
                               environment=environment, tags=tags,
                               array_group=array_group,
                               members=[(item.taskid, view)
                                        for item, view in zip(nodes, views, strict=True)])
        self._prepared.append(prepared)
        return prepared

    def _history_key(self, node: Any, node_dir: str) -> str:
        # A MapNode's subnodes have the mapflow folder as base_dir: key them from the run's.
        if self.work_dir and is_within(node_dir, self.work_dir):
            return history_key(node_dir, self.work_dir)
        return history_key(node_dir, node.base_dir)

    def job_name(self, node: Any, nodes: int = 1) -> str:
        """The job's name: its (first) node's, and how many nodes a pack holds."""
        name = f"{self.cloud.job_name_prefix}{self.settings.job_name_prefix}-{node.fullname}"
        suffix = f"-and-{nodes - 1}" if nodes > 1 else ""
        return _JOB_NAME_UNSAFE.sub("_", name)[:128 - len(suffix)] + suffix

    def flush(self, admit: Callable[[list[PreparedJob]], list[PreparedJob]] | None = None
              ) -> dict[int, list[str]]:
        """Submit everything prepared (what ``admit`` lets through, where a budget holds the
        rest); return the failures by task id."""
        failures = self._prepare_subnodes()
        prepared, self._prepared = self._prepared, []
        if admit is not None:
            prepared = admit(prepared)
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
                    failures.update((taskid, failure) for taskid, _view in item.members
                                    if taskid is not None)
        return failures

    def _submit_one(self, item: PreparedJob) -> None:
        stager = self.cloud.stager
        key = stager.control_key(self.run_id, f"{item.taskid}-{item.job.job_name}.json")
        payload_uri = stager.put_bytes(key, item.payload.to_json())
        job = item.job
        job_id = self.cloud.batch.submit(
            job.job_name, job.queue, job.definition, job.resources,
            {**item.environment, PAYLOAD_ENV: payload_uri}, item.tags,
        )
        self.flight.open_jobs.add(job_id)
        self._track(item, job_id)
        self._again[job_id] = (payload_uri, item.environment, item.tags, item.members)
        what = (f"{len(item.members)} nodes from {item.tags['nipype-batch:node']}"
                if len(item.members) > 1 else item.tags["nipype-batch:node"])
        log.info("Submitted %s as job %s (%d vCPU, %d MiB)", what, job_id,
                 job.resources.vcpus, job.resources.memory_mb)

    def _track(self, item: PreparedJob, job_id: str, array_id: str | None = None,
               index: int | None = None) -> None:
        """Every node of a submitted job that Nipype waits for is now in flight."""
        for taskid, view in item.members:
            view.job_id, view.array_job_id, view.array_index = job_id, array_id, index
            if taskid is not None:
                self.flight.track(taskid, view)
        self.flight.submitted_job_ids.append(job_id)

    def _submit_array(self, group: list[PreparedJob]) -> None:
        """One array job for ``group``; child ``i`` reads payload ``<prefix>/i.json``."""
        stager = self.cloud.stager
        first = group[0].job
        name = array_job_name(first.job_name)
        folder = stager.control_key(self.run_id, f"{group[0].taskid}-{name}")
        for index, item in enumerate(group):
            stager.put_bytes(f"{folder}/{index}.json", item.payload.to_json())
        template = f"s3://{stager.bucket}/{folder}/{ARRAY_INDEX_PLACEHOLDER}.json"
        tags = {**group[0].tags, "nipype-batch:node": group[0].array_group[-256:]}
        tags.pop("nipype-batch:hash", None)
        array_id = self.cloud.batch.submit(
            name, first.queue, first.definition, first.resources,
            {**group[0].environment, PAYLOAD_ENV: template}, tags, array_size=len(group),
        )
        self.flight.array_job_ids.append(array_id)
        self.flight.open_jobs.add(array_id)
        for index, item in enumerate(group):
            self._track(item, child_job_id(array_id, index), array_id, index)
            self._again[child_job_id(array_id, index)] = (
                f"s3://{stager.bucket}/{folder}/{index}.json", item.environment,
                {**item.tags, "nipype-batch:node": item.array_group[-256:]}, item.members)
        log.info("Submitted %d nodes of %s as array job %s (%d vCPU, %d MiB each)", len(group),
                 group[0].array_group, array_id, first.resources.vcpus, first.resources.memory_mb)

    def _scratch_gb(self, inputs: Any) -> int | None:
        """Fargate's scratch disk for a job: ``ephemeral_storage_gb``, else sized from the
        inputs the driver staged (twice their size, for outputs of the same order, and 5 GiB
        of room) when that passes the 20 GiB Fargate gives, in steps of 25 GiB (fewer job
        definitions) up to 200."""
        if self.settings.platform != "fargate":
            return None
        if self.settings.ephemeral_storage_gb:
            return self.settings.ephemeral_storage_gb
        total = 0
        for staged in inputs:
            if staged.kind == "file":
                total += os.path.getsize(staged.path)
            elif staged.kind == "dir":
                total += sum(os.path.getsize(os.path.join(root, name))
                             for root, _dirs, names in os.walk(staged.path) for name in names)
        need_gib = 2 * total / 2**30 + 5
        if need_gib <= FARGATE_SCRATCH_GB:
            return None
        return min(200, 25 * math.ceil(need_gib / 25))

    def _sized_by_history(self, nodes: list[PackNode], resources: JobResources
                          ) -> JobResources:
        """At least 1.25x the largest peak memory the run history measured of the nodes
        (in steps of 256 MiB, within what the backend can give)."""
        peak = max((self.peak_memory.get(self._history_key(item.node, item.node.output_dir()))
                    or 0.0 for item in nodes), default=0.0)
        wanted = -(-int(peak * 1.25) // 256) * 256
        if self.memory_cap_mb is not None:
            wanted = min(wanted, self.memory_cap_mb)
        if wanted <= resources.memory_mb:
            return resources
        log.info("%s asks %d MiB, as its run history measured a peak of %.0f MiB",
                 nodes[0].node.fullname, wanted, peak)
        return replace(resources, memory_mb=wanted)

    def resubmit(self, job: SubmittedJob, memory_mb: int) -> str | None:
        """Submit a job (an array child: as a job of its own) again with more memory; its
        nodes now wait for the new job. None if it is not one this driver submitted."""
        again = self._again.pop(job.job_id, None)
        if again is None:
            return None
        payload_uri, environment, tags, members = again
        resources = replace(job.resources, memory_mb=memory_mb)
        waiting = [(taskid, view) for taskid, view in members
                   if taskid is None or taskid in self.flight.jobs]  # not the resolved ones
        for taskid, _view in waiting:
            if taskid is not None:
                self.flight.forget(taskid)
        job_id = self.cloud.batch.submit(
            job.job_name, job.queue, job.definition, resources,
            {**environment, PAYLOAD_ENV: payload_uri}, tags)
        for taskid, view in waiting:
            view.job_id, view.array_job_id, view.array_index = job_id, None, None
            view.resources = resources
            if taskid is not None:
                self.flight.track(taskid, view)
        self.flight.submitted_job_ids.append(job_id)
        self.flight.open_jobs.add(job_id)
        self._again[job_id] = (payload_uri, environment, tags, members)
        return job_id


def _pickled(node: Any, updatehash: bool) -> str:
    """The node as Nipype pickles it for its batch plugins, base64 for the JSON payload."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "node.pklz")
        savepkl(path, {"node": node, "updatehash": updatehash})
        with open(path, "rb") as fh:
            return base64.b64encode(fh.read()).decode()
