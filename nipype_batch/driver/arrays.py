"""Which prepared jobs go to AWS Batch together as one array job (pure: no I/O).

A MapNode's subnodes are the natural array: the same interface, image and resources, ready at
the same moment, and nothing downstream can start before all of them finish (the MapNode
itself waits for every one). One SubmitJob and one status line serve up to 10,000 of them,
where separate jobs would cost a SubmitJob each and a DescribeJobs slot each per poll.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from typing import TypeVar

from ..aws.batch import ARRAY_MAX, ARRAY_MIN
from ..protocol import MAPFLOW

T = TypeVar("T")


def mapflow_parent(node_dir: str) -> str | None:
    """The MapNode directory of a subnode's directory (``<mapnode>/mapflow/_name3``), else None."""
    parent = os.path.dirname(node_dir.rstrip("/"))
    if os.path.basename(parent) != MAPFLOW:
        return None
    return os.path.dirname(parent)


def group_for_arrays(items: Iterable[T], key: Callable[[T], object | None],
                     most: int = ARRAY_MAX) -> list[list[T]]:
    """Split ``items`` into submissions: runs sharing a non-None ``key``, at most ``most`` long.

    Order is kept within a group (a child's index is its place). A group of one, or an item
    whose key is None, is a plain job.
    """
    groups: dict[object, list[T]] = {}
    singles: list[list[T]] = []
    for item in items:
        found = key(item)
        if found is None:
            singles.append([item])
        else:
            groups.setdefault(found, []).append(item)
    out: list[list[T]] = []
    for members in groups.values():
        for start in range(0, len(members), most):
            chunk = members[start:start + most]
            if len(chunk) >= ARRAY_MIN:
                out.append(chunk)
            else:
                out.extend([member] for member in chunk)
    return out + singles


def array_job_name(child_job_name: str) -> str:
    """An array's job name from its first child's: ``..._square3`` -> ``..._square``."""
    return re.sub(r"\d+$", "", child_job_name) or child_job_name
