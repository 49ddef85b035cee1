"""Nodes that need no new job: finished by an earlier driver's job, or collatable here."""

from __future__ import annotations

import logging
import os
import shutil
import time
from typing import Any

from nipype.pipeline.engine import MapNode

from ..aws.staging import Stager
from ..aws.status import JobState
from ..journal import Journal
from ..protocol import MAPFLOW, hash_file_name, result_file_name, result_path
from ..provenance import read_provenance, write_collated
from ..settings import BatchSettings
from .arrays import mapflow_parent
from .jobs import SubmittedJob

log = logging.getLogger("nipype_batch")


class Resumer:
    """Picks up what an earlier driver left: a job still in flight, or a finished result.

    A driver that died leaves its jobs running (they are Batch's, not its own) and their
    journal entries behind; a rerun with the same inputs waits for those jobs. A job that
    finished after its driver died left a committed result in S3, fetched instead of running
    the node again.
    """

    def __init__(self, batch: Any, stager: Stager, settings: BatchSettings,
                 journal: Journal) -> None:
        self.batch = batch
        self.stager = stager
        self.settings = settings
        self.journal = journal
        self._listings: dict[str, dict[str, set[str]]] = {}  # mapflow folder -> subnode -> names

    def job_in_flight(self, node: Any, hashvalue: str) -> SubmittedJob | None:
        """The job an earlier driver submitted for this node and these inputs, if it lives."""
        node_dir = node.output_dir()
        entry = self.journal.find(node_dir, hashvalue)
        if entry is None:
            return None
        status = self.batch.describe([entry["job_id"]]).get(entry["job_id"])
        if status is not None and status.state is not JobState.FAILED:
            log.info("Resumed %s: job %s (%s), submitted by an earlier driver",
                     node.fullname, entry["job_id"], status.state.value)
            return SubmittedJob.from_journal(entry)
        self.journal.forget(node_dir, hashvalue)
        return None

    def fetch_committed(self, node: Any, hashvalue: str) -> bool:
        """Fetch a successful result for these exact inputs from S3, if one was committed."""
        node_dir = node.output_dir()
        names = self._committed_names(node_dir)
        if result_file_name(node.name) not in names or hash_file_name(hashvalue) not in names:
            return False
        if not isinstance(node, MapNode):
            shutil.rmtree(node_dir, ignore_errors=True)
        fetched = self.stager.fetch_node_dir(node_dir,
                                             everything=bool(self.settings.fetch_outputs))
        if fetched and not read_provenance(node_dir).get("runner", {}).get("node_failed"):
            log.info("Recovered %s from S3: a job finished it after its driver stopped",
                     node.fullname)
            return True
        if not isinstance(node, MapNode):  # a crash is no cache: run the node again
            shutil.rmtree(node_dir, ignore_errors=True)
        return False

    def _committed_names(self, node_dir: str) -> set[str]:
        """Names of the files S3 holds for a node directory.

        A MapNode's subnodes are looked up with one listing of their shared ``mapflow``
        folder, grouped by subnode, rather than one listing each.
        """
        parent = mapflow_parent(node_dir)
        if parent is None:
            return {os.path.relpath(self.stager.path_for(key), node_dir)
                    for key, _size in self.stager.list_tree(node_dir)}
        folder = os.path.join(parent, MAPFLOW)
        if folder not in self._listings:
            by_subnode: dict[str, set[str]] = {}
            for key, _size in self.stager.list_tree(folder):
                subnode, _, name = os.path.relpath(self.stager.path_for(key),
                                                   folder).partition("/")
                by_subnode.setdefault(subnode, set()).add(name)
            self._listings[folder] = by_subnode
        return self._listings[folder].get(os.path.basename(node_dir.rstrip("/")), set())


def collate_mapnode_here(node: Any) -> bool:
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
