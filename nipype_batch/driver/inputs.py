"""What a node's job must fetch: the local files its inputs name, whole or inside strings."""

from __future__ import annotations

import os
import sys
from typing import Any

from ..aws.staging import StagedPath, Stager, find_paths, paths_in_strings

# Paths in a command line under these belong to the tool's own installation, which its image
# has at the same place: staging the driver's copy would replace it.
_SYSTEM_PREFIXES = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/proc", "/run",
                    "/sbin", "/sys", "/usr", "/var/lib", "/System", "/Library", "/Applications",
                    "/opt/homebrew", "/opt/conda")


def stage_inputs(node: Any, node_dir: str, stager: Stager) -> tuple[list[StagedPath], list[str]]:
    """Upload the local files a node's inputs name; list every path the job must fetch,
    and the paths inside strings the node may write (see :func:`paths_in_strings`)."""
    base_dir = os.path.abspath(node.base_dir or "/")
    staged, may_write = [], []
    # A MapNode keeps its iterfields in node.inputs and the rest on its interface.
    values = [node.inputs.get(), node.interface.inputs.get()]
    whole = find_paths(values)
    in_strings = {path for path in paths_in_strings(values) - whole
                  if not is_system_path(path)}
    for path in sorted(whole | in_strings):
        if is_within(path, node_dir) or is_within(base_dir, path):
            continue  # its own outputs, or a directory holding the whole work tree
        if os.path.isfile(path):
            stager.ensure_uploaded(path)
            staged.append(StagedPath(path, "file"))
        elif os.path.isdir(path):
            stager.ensure_uploaded(path)
            staged.append(StagedPath(path, "dir"))
        else:
            staged.append(StagedPath(path, "remote"))
            if path in in_strings and os.path.isdir(os.path.dirname(path)):
                may_write.append(path)  # e.g. '-o /data/out.nii.gz': the tool writes it
    return staged, may_write


def is_system_path(path: str) -> bool:
    """Whether a path found inside a string is the system's or Python's, not the user's."""
    roots = (*_SYSTEM_PREFIXES, sys.prefix, sys.base_prefix, sys.exec_prefix)
    return path in ("/tmp", "/home", "/root", "/opt", "/var") or any(
        is_within(path, root) for root in roots if root and root != "/")


def is_within(path: str, directory: str) -> bool:
    """Whether ``path`` is ``directory`` or lies below it."""
    return path == directory or path.startswith(directory.rstrip("/") + "/")
