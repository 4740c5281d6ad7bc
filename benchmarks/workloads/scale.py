"""Issue 2 (kernel): building and running 1k-10k-node chains, and ``import hypernodes`` time."""

from __future__ import annotations

import graphlib
import sys
from typing import Any

from hypernodes import Node, Pipeline

from ..harness import Cell, Context, Metric, Row, Target, Workload, at_most
from ..peers.peer_common import chain_source, load_module, time_reps
from ..procs import python_seconds
from .common import direct_run, direct_steps

__all__ = ["WORKLOADS", "derive"]

PEERS = ("hn048", "pipefunc", "hamilton")


def _us_per_node(seconds: float, params: dict[str, Any]) -> float:
    return seconds * 1e6 / params["n"]


def _ms(seconds: float, params: dict[str, Any]) -> float:
    return seconds * 1e3


def hn_scale(ctx: Context, *, n: int, build_reps: int, run_reps: int) -> dict[str, Any]:
    src, outs = chain_source(n)
    mod = load_module(f"hn_scale{n}", src)
    nodes = [Node(getattr(mod, o), output_name=o) for o in outs]  # not timed
    built: list[Pipeline] = []
    build = time_reps(lambda: built.append(Pipeline(nodes)), reps=build_reps, warmup=0)
    p = built[-1]
    built.clear()
    first = time_reps(lambda: p.run({"v0": 0}), reps=1, warmup=0)
    run = time_reps(lambda: p.run({"v0": 0}), reps=run_reps, warmup=0)
    return {"raw": {"build": build, "first_run": first, "run": run}}


def direct_scale(ctx: Context, *, n: int, build_reps: int, run_reps: int) -> dict[str, Any]:
    steps = direct_steps(f"scale{n}", chain_source(n))

    def build() -> list[Any]:
        deps = {out: set(names) for _, names, out in steps}
        return list(graphlib.TopologicalSorter(deps).static_order())

    run = time_reps(lambda: direct_run(steps, {"v0": 0}), reps=run_reps, warmup=0)
    return {
        "raw": {
            "build": time_reps(build, reps=build_reps, warmup=0),
            "first_run": run[:1],
            "run": run,
        }
    }


def _scale(n: int, quick_n: int, *, last: bool) -> Workload:
    build_target = at_most(500, "ms") if last else None
    metrics = [Metric("build", "{n}-node chain: Pipeline() build", "ms", _ms, build_target)]
    if last:
        metrics += [
            Metric("run", "{n}-node chain: run()", "µs/node", _us_per_node, at_most(2, "µs/node")),
            Metric(
                "first_run", "{n}-node chain: first run() (plan compile)", "µs/node", _us_per_node
            ),
        ]
    return Workload(
        name=f"scale_{n // 1000}k",
        issue="kernel",
        metrics=metrics,
        hypernodes=hn_scale,
        limit=direct_scale,
        limit_label="graphlib toposort / direct",
        params={"n": n, "build_reps": 15, "run_reps": 5},
        quick={"n": quick_n, "build_reps": 1, "run_reps": 2},
        peers=PEERS,
        peer_workload="scale",
        peer_params={"build_reps": 3, "run_reps": 3},
        peer_timeout=60.0,
        escalate="scale",
    )


# -- import time --------------------------------------------------------------------------

_IMPORTS = {
    "hn048": "import hypernodes",
    "pipefunc": "import pipefunc",
    "hamilton": "from hamilton import driver",
}


def hn_import(ctx: Context, *, reps: int) -> dict[str, Any]:
    return {"raw": {"main": python_seconds(sys.executable, "import hypernodes", reps=reps)}}


def asyncio_import(ctx: Context, *, reps: int) -> dict[str, Any]:
    return {"raw": {"main": python_seconds(sys.executable, "import asyncio", reps=reps)}}


def peer_import(ctx: Context, peer: str, params: dict[str, Any]) -> dict[str, Any]:
    assert ctx.peers_python is not None
    raw = python_seconds(ctx.peers_python, _IMPORTS[peer], reps=params["reps"])
    return {"status": "ok", "raw": {"main": raw}, "note": _IMPORTS[peer]}


WORKLOADS: list[Workload] = [
    _scale(1000, 20, last=False),
    _scale(2000, 50, last=False),
    _scale(5000, 100, last=False),
    _scale(10_000, 200, last=True),
    Workload(
        name="import",
        issue="kernel",
        metrics=[
            Metric(
                "main", "python -c 'import <lib>' (fresh process)", "ms", _ms, at_most(150, "ms")
            )
        ],
        hypernodes=hn_import,
        limit=asyncio_import,
        limit_label="import asyncio",
        params={"reps": 10},
        quick={"reps": 3},
        peers=PEERS,
        peer_call=peer_import,
    ),
]


def derive(rows: list[Row]) -> list[Row]:
    """The linearity row: largest over smallest chain build time (10k / 1k: target <= 12x)."""
    builds = {r.workload: r for r in rows if r.workload.startswith("scale_") and r.unit == "ms"}
    small, big = builds.get("scale_1k"), builds.get("scale_10k")
    if small is None or big is None:
        return []

    def ratio(a: Cell | None, b: Cell | None) -> Cell:
        if a is None or b is None:
            return Cell("na", note="not measured")
        if not (a.ok and b.ok) or not a.value or b.value is None:
            bad = b if not b.ok else a
            return Cell(bad.status, note=bad.note)
        return Cell("ok", value=b.value / a.value, reps=min(a.reps, b.reps))

    return [
        Row(
            issue="kernel",
            workload="scale_ratio",
            title=f"build time {big.title.split('-')[0]} / {small.title.split('-')[0]} nodes",
            unit="x",
            higher_is_better=False,
            hypernodes=ratio(small.hypernodes, big.hypernodes),
            peers={k: ratio(small.peers.get(k), c) for k, c in big.peers.items()},
            limit=ratio(small.limit, big.limit),
            limit_label=big.limit_label,
            target=Target("<= 12x (linear: 10x)", "max", 12.0),
        )
    ]
