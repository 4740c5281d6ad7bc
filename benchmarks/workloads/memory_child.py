"""Fresh-process memory probe: ``python -m benchmarks.workloads.memory_child IMPL N``.

IMPL is ``hn`` (HyperNodes ``map``), ``hn_iter`` (``map_iter`` over a generator, results
dropped), ``listcomp`` (``[f(x) for x in xs]``) or ``dicts``
(``[{"y": f(x)} for x in xs]``, the same result shape as a map). Prints one result line
with the peak RSS growth in bytes while the result is built (the inputs already exist).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from ..peers.peer_common import MARKER, load_module, map_source, peak_rss_growth


def main() -> None:
    impl, n = sys.argv[1], int(sys.argv[2])
    f = load_module(f"mem_{impl}", map_source()[0]).y
    xs = list(range(n))
    if impl == "hn":
        from hypernodes import Node, Pipeline

        p = Pipeline([Node(f, output_name="y")])
        p.map({"x": xs[:10]}, map_over="x")  # warm-up: loop, lazy imports, plan

        def go() -> Any:
            return p.map({"x": xs}, map_over="x")

    elif impl == "listcomp":

        def go() -> Any:
            return [f(x) for x in xs]

    elif impl == "dicts":

        def go() -> Any:
            return [{"y": f(x)} for x in xs]

    elif impl == "hn_iter":
        from hypernodes import Node, Pipeline

        p = Pipeline([Node(f, output_name="y")])
        p.map({"x": xs[:10]}, map_over="x")  # warm-up: loop, lazy imports, plan
        del xs  # (a generator input: nothing of it exists up front)

        def go() -> Any:
            for _ in p.map_iter({"x": iter(range(n))}, map_over="x", window=64):
                pass  # results consumed (written out, sent) and dropped

    else:
        raise SystemExit(f"unknown impl {impl!r}; use hn, hn_iter, listcomp or dicts")
    growth = peak_rss_growth(go)
    print(MARKER + json.dumps({"status": "ok", "raw": {"main": [growth]}}), flush=True)


if __name__ == "__main__":
    main()
