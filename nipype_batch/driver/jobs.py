"""Records of a node on its way through Batch, and the answer Nipype's loop expects."""

from __future__ import annotations

import socket
from dataclasses import asdict, dataclass, field
from typing import Any

from ..protocol import JobPayload
from ..resources import JobResources


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
    history_key: str = ""  # the node in the run history (see history.history_key)
    interface: str = ""  # its interface's class, module-qualified
    # A node of a pack (a job running several nodes): where the runner marks each member
    # done, this node's place in the pack, and the pack's node directories.
    done_prefix: str | None = None
    pack_index: int | None = None
    pack_dirs: list[str] | None = None

    @property
    def in_pack(self) -> bool:
        return self.done_prefix is not None

    def journal_entry(self) -> dict[str, Any]:
        """What the journal keeps, so that a later driver can pick the job up."""
        return {**asdict(self), "resources": asdict(self.resources)}

    @classmethod
    def from_journal(cls, entry: dict[str, Any]) -> SubmittedJob:
        fields = {k: v for k, v in entry.items() if k in cls.__dataclass_fields__}
        return cls(**{**fields, "resources": JobResources(**entry["resources"])})


@dataclass
class PreparedJob:
    """A job staged and pickled, waiting for the end of the pass to be submitted: one node,
    or a pack of nodes (``members``: each node's task id, None until Nipype asks for it)."""

    taskid: int
    job: SubmittedJob
    payload: JobPayload
    environment: dict[str, str]
    tags: dict[str, str]
    array_group: str | None  # the MapNode directory of a subnode: its siblings share an array
    members: list[tuple[int | None, SubmittedJob]] = field(default_factory=list)


def nipype_result(traceback: list[str] | None = None, hostname: str | None = None,
                  here: bool = False) -> dict[str, Any]:
    """The dict Nipype's loop takes from ``_get_result``: the node's own result file holds the
    rest. ``here`` names this machine as the host (a failure on the driver)."""
    return {"result": None, "traceback": traceback,
            "hostname": socket.gethostname() if here else hostname}
