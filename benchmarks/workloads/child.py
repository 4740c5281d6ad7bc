"""Run one workload's HyperNodes and limit implementations in a fresh process.

``python -m benchmarks.workloads.child NAME '{"params": {...}}'`` prints one result line
``{"hypernodes": result, "limit": result}``; with ``"side": "hypernodes"`` (or
``"limit"``) in the spec only that side runs and the other is ``null``. Each workload gets a clean interpreter, as
each peer does: no heap grown by earlier workloads (10k-node modules, 100k-item results),
no pools or loop threads left behind, so the order of workloads does not bias them.
"""

from __future__ import annotations

import json
import sys

from ..harness import Context, call_impl
from ..peers.peer_common import MARKER
from . import all_workloads


def main() -> None:
    name, spec = sys.argv[1], json.loads(sys.argv[2])
    (wl,) = [w for w in all_workloads() if w.name == name]
    ctx = Context(peers_python=None, quick=bool(spec.get("quick")))
    params = spec["params"]
    side = spec.get("side")
    out = {
        "hypernodes": call_impl(wl.hypernodes, ctx, params)
        if side in (None, "hypernodes")
        else None,
        "limit": call_impl(wl.limit, ctx, params)
        if wl.limit is not None and side in (None, "limit")
        else None,
    }
    print(MARKER + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
