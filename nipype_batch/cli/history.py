"""``nipype-batch history``: what earlier runs measured of each node."""

from __future__ import annotations

import json
from dataclasses import asdict

from .options import command, json_option

HISTORY_HELP = ("show the run history: each node's runs, median and longest runtime and peak "
                "memory, as measured in its jobs (what planning and forecasts read)")


@command(short_help=HISTORY_HELP, help=HISTORY_HELP)
@json_option("print JSON")
def history(as_json: bool) -> int:
    """One line per node and interface that ran before."""
    from ..history import RunHistory

    store = RunHistory()
    nodes = store.nodes()
    if as_json:
        print(json.dumps({"path": str(store.path), "nodes": [asdict(n) for n in nodes]},
                         indent=1))
        return 0
    if not nodes:
        print(f"no run history yet ({store.path})")
        return 0
    print(f"{'node':<36} {'runs':>5} {'median s':>9} {'max s':>8} {'peak MiB':>9}  interface")
    for node in nodes:
        print(f"{node.node[-36:]:<36} {node.runs:>5} {node.median_runtime_s:>9.1f} "
              f"{node.max_runtime_s:>8.1f} {node.peak_memory_mb:>9.0f}  {node.interface}")
    print(f"({store.path})")
    return 0
