"""A ready node becomes a job: staged, pickled, described, and submitted with its siblings."""

from __future__ import annotations

import base64
import logging
import os
import re
import sys
import tempfile
from collections.abc import Callable
from traceback import format_exception
from typing import Any

from nipype.pipeline.engine import MapNode
from nipype.utils.filemanip import savepkl

from ..aws.batch import child_job_id, fits_overrides
from ..aws.staging import StagedPath
from ..history import history_key
from ..platforms import capability
from ..protocol import ARRAY_INDEX_PLACEHOLDER, PAYLOAD_ENV, JobPayload
from ..resources import JobResources, fargate_fit, resources_for
from ..settings import BatchSettings
from .arrays import array_job_name, group_for_arrays, mapflow_parent
from .inputs import is_within, stage_inputs
from .jobs import PreparedJob, SubmittedJob
from .poll import JobsInFlight

log = logging.getLogger("nipype_batch")

_JOB_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


class Submitter:
    """Prepares nodes as they become ready and submits each pass's nodes at its end,
    the subnodes of one MapNode as one array job."""

    def __init__(self, cloud: Any, settings: BatchSettings, run_id: str,
                 image_for: Callable[[JobResources], str], flight: JobsInFlight,
                 work_dir: str | None = None) -> None:
        self.cloud = cloud
        self.work_dir = work_dir  # the workflow's base_dir
        self.settings = settings
        self.run_id = run_id
        self.image_for = image_for
        self.flight = flight
        self._prepared: list[PreparedJob] = []

    def prepare(self, node: Any, updatehash: bool, taskid: int, hashvalue: str) -> None:
        """Stage the node's inputs and write its payload; it is submitted by :meth:`flush`."""
        cloud, stager = self.cloud, self.cloud.stager
        resources = resources_for(node, self.settings)
        if self.settings.platform == "fargate":
            resources = fargate_fit(resources)
        image = self.image_for(resources)
        definition = cloud.batch.ensure_job_definition(
            image, self.settings.job_role_arn, capability(self.settings.platform),
            self.settings.execution_role_arn)
        node_dir = node.output_dir()
        staged, may_write = stage_inputs(node, node_dir, stager)
        if isinstance(node, MapNode):  # the parent re-uses its subnodes' directories
            staged.append(StagedPath(node_dir, "remote"))
        job_name = self.job_name(node)
        if hasattr(node, "use_plugin"):
            node.use_plugin = None  # holds the user's plugin_args, maybe unpicklable
        bundle_key = stager.control_key(self.run_id, "bundles", f"{taskid}.tar")
        payload = JobPayload(
            bucket=stager.bucket, prefix=stager.prefix, node_dir=node_dir, node_name=node.name,
            node_pickle=_pickled(node, updatehash), bundle_key=bundle_key,
            inputs=[vars(s) for s in staged], string_paths=may_write)
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
            "nipype-batch:node": node.fullname[-256:],
            "nipype-batch:hash": hashvalue,
        }
        job = SubmittedJob(
            job_id="", job_name=job_name, node_name=node.name, node_dir=node_dir,
            is_mapnode=isinstance(node, MapNode), queue=resources.job_queue or cloud.job_queue,
            definition=definition, image=image, resources=resources, hashvalue=hashvalue,
            bundle_key=bundle_key, history_key=self._history_key(node, node_dir),
            interface=f"{type(node.interface).__module__}.{type(node.interface).__name__}",
        )
        self._prepared.append(PreparedJob(taskid=taskid, job=job, payload=payload,
                                          environment=environment, tags=tags,
                                          array_group=mapflow_parent(node_dir)))

    def _history_key(self, node: Any, node_dir: str) -> str:
        # A MapNode's subnodes have the mapflow folder as base_dir: key them from the run's.
        if self.work_dir and is_within(node_dir, self.work_dir):
            return history_key(node_dir, self.work_dir)
        return history_key(node_dir, node.base_dir)

    def job_name(self, node: Any) -> str:
        name = f"{self.cloud.job_name_prefix}{self.settings.job_name_prefix}-{node.fullname}"
        return _JOB_NAME_UNSAFE.sub("_", name)[:128]

    def flush(self) -> dict[int, list[str]]:
        """Submit everything prepared; return the failures by task id."""
        prepared, self._prepared = self._prepared, []
        failures: dict[int, list[str]] = {}
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
                    failures[item.taskid] = failure
        return failures

    def _submit_one(self, item: PreparedJob) -> None:
        stager = self.cloud.stager
        key = stager.control_key(self.run_id, f"{item.taskid}-{item.job.job_name}.json")
        payload_uri = stager.put_bytes(key, item.payload.to_json())
        job = item.job
        job.job_id = self.cloud.batch.submit(
            job.job_name, job.queue, job.definition, job.resources,
            {**item.environment, PAYLOAD_ENV: payload_uri}, item.tags,
        )
        self.flight.track(item.taskid, job)
        log.info("Submitted %s as job %s (%d vCPU, %d MiB)", item.tags["nipype-batch:node"],
                 job.job_id, job.resources.vcpus, job.resources.memory_mb)

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
        for index, item in enumerate(group):
            item.job.job_id = child_job_id(array_id, index)
            item.job.array_job_id, item.job.array_index = array_id, index
            self.flight.track(item.taskid, item.job)
        log.info("Submitted %d nodes of %s as array job %s (%d vCPU, %d MiB each)", len(group),
                 group[0].array_group, array_id, first.resources.vcpus, first.resources.memory_mb)


def _pickled(node: Any, updatehash: bool) -> str:
    """The node as Nipype pickles it for its batch plugins, base64 for the JSON payload."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "node.pklz")
        savepkl(path, {"node": node, "updatehash": updatehash})
        with open(path, "rb") as fh:
            return base64.b64encode(fh.read()).decode()
