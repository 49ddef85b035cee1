"""Helpers for end-to-end tests: compare two Nipype work trees node by node."""

from __future__ import annotations

import os
from pathlib import Path

from nipype_batch.driver.run_log import LOG_NAME
from nipype_batch.protocol import is_bookkeeping
from nipype_batch.report.write import HTML_NAME, PNG_NAME

# Files whose bytes legitimately differ between runs (timings, hosts, pickled environments),
# or that only one plugin writes (its report and its run's log).
_RUN_SPECIFIC = ("d3.js", "graph.json", "graph1.json", "index.html", "crashstore.pklz",
                 HTML_NAME, PNG_NAME, LOG_NAME)


def node_dirs(work: Path) -> set[str]:
    """Relative paths of every node directory (those holding a result file)."""
    return {
        str(p.parent.relative_to(work)) for p in work.rglob("result_*.pklz")
    }


def data_files(root: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every file that is data, not bookkeeping."""
    files = {}
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        rel = str(path.relative_to(root))
        parts = rel.split(os.sep)
        inside_node = any(p.startswith("_report") for p in parts)
        if inside_node or path.name in _RUN_SPECIFIC or _is_bookkeeping_anywhere(rel):
            continue
        files[rel] = path.read_bytes()
    return files


def _is_bookkeeping_anywhere(rel: str) -> bool:
    name = os.path.basename(rel)
    return is_bookkeeping(name) or name.startswith("_0x")


def assert_same_tree(expected: Path, actual: Path) -> int:
    """Every data file of ``expected`` exists in ``actual`` with the same bytes; return count."""
    want, got = data_files(expected), data_files(actual)
    missing = sorted(set(want) - set(got))
    assert not missing, f"missing from {actual}: {missing}"
    different = sorted(rel for rel in want if want[rel] != got[rel])
    assert not different, f"bytes differ: {different}"
    extra = sorted(set(got) - set(want))
    assert not extra, f"unexpected files in {actual}: {extra}"
    return len(want)
