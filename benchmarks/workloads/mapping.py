"""Issue 3 (map): sequential map throughput, async map concurrency, 1M-item map memory."""

from __future__ import annotations

import asyncio
from typing import Any

from hypernodes import HyperNodesEngine, Node, Pipeline

from ..harness import Context, Metric, Workload, at_least, rate, within
from ..peers.peer_common import load_module, map_source, time_reps
from ..procs import run_child
from .common import loop_times

__all__ = ["WORKLOADS"]


def _seconds(seconds: float, params: dict[str, Any]) -> float:
    return seconds


def _mib(nbytes: float, params: dict[str, Any]) -> float:
    return nbytes / 2**20


def hn_map(ctx: Context, *, n: int, reps: int) -> dict[str, Any]:
    mod = load_module("hn_map", map_source()[0])
    p = Pipeline(
        [Node(mod.b, output_name="b"), Node(mod.c, output_name="c"), Node(mod.d, output_name="d")]
    )
    xs = list(range(n))
    out = p.map({"a": xs}, map_over="a")
    assert len(out) == n and out[-1]["d"] == n * 2 - 1
    return {"raw": {"main": time_reps(lambda: p.map({"a": xs}, map_over="a"), reps=reps)}}


def listcomp_map(ctx: Context, *, n: int, reps: int) -> dict[str, Any]:
    mod = load_module("direct_map", map_source()[0])
    b, c, d = mod.b, mod.c, mod.d
    xs = list(range(n))
    return {"raw": {"main": time_reps(lambda: [d(c(b(x))) for x in xs], reps=reps)}}


def hn_async_map(ctx: Context, *, n: int, sleep: float, reps: int) -> dict[str, Any]:
    mod = load_module(
        "hn_amap",
        f"import asyncio\n\n\nasync def y(x: int) -> int:\n    await asyncio.sleep({sleep!r})\n    return x\n",
    )
    engine = HyperNodesEngine(map_executor="async", max_concurrent=n)
    p = Pipeline([Node(mod.y, output_name="y")], engine=engine)
    xs = list(range(n))
    try:
        raw = time_reps(lambda: p.map({"x": xs}, map_over="x"), reps=reps)
    finally:
        engine.close()
    return {"raw": {"main": raw}}


def gather_map(ctx: Context, *, n: int, sleep: float, reps: int) -> dict[str, Any]:
    async def y(x: int) -> int:
        await asyncio.sleep(sleep)
        return x

    async def once() -> None:
        await asyncio.gather(*(y(x) for x in range(n)))

    return {"raw": {"main": loop_times(once, reps=reps)}}


def _child(impl: str, n: int) -> list[float]:
    out = run_child("benchmarks.workloads.memory_child", impl, str(n))
    if out.get("status") != "ok":
        raise RuntimeError(out.get("note", "memory child failed"))
    return list(out["raw"]["main"])


def hn_map_memory(ctx: Context, *, n: int) -> dict[str, Any]:
    return {"raw": {"main": _child("hn", n)}, "note": "fresh process"}


def listcomp_memory(ctx: Context, *, n: int) -> dict[str, Any]:
    return {"raw": {"main": _child("listcomp", n), "dicts": _child("dicts", n)}}


_MAP_PEERS = ("hn048", "pipefunc", "hamilton", "dask")
_MAP_TARGET = at_least(300_000, "items/s")

WORKLOADS: list[Workload] = [
    Workload(
        name="map_10k",
        issue="map",
        metrics=[
            Metric(
                "main",
                "3-node pipeline, map over {n} items",
                "items/s",
                rate("n"),
                _MAP_TARGET,
                True,
            )
        ],
        hypernodes=hn_map,
        limit=listcomp_map,
        limit_label="list comprehension",
        params={"n": 10_000, "reps": 9},
        quick={"n": 2000, "reps": 2},
        peers=_MAP_PEERS,
        peer_workload="map",
        peer_params={"reps": 3},
    ),
    Workload(
        name="map_100k",
        issue="map",
        metrics=[
            Metric(
                "main",
                "3-node pipeline, map over {n} items",
                "items/s",
                rate("n"),
                _MAP_TARGET,
                True,
            )
        ],
        hypernodes=hn_map,
        limit=listcomp_map,
        limit_label="list comprehension",
        params={"n": 100_000, "reps": 5},
        quick={"n": 5000, "reps": 1},
        peers=_MAP_PEERS,
        peer_workload="map",
        peer_params={"reps": 2},
        peer_timeout=90.0,
    ),
    Workload(
        name="async_map2000",
        issue="map",
        metrics=[
            Metric(
                "main",
                'async node x sleep 10 ms, map over {n}, "async"',
                "s",
                _seconds,
                within(1.5, "gather"),
            )
        ],
        hypernodes=hn_async_map,
        limit=gather_map,
        limit_label="raw asyncio.gather",
        params={"n": 2000, "sleep": 0.01, "reps": 9},
        quick={"n": 100, "sleep": 0.01, "reps": 2},
        peers=("hn048", "pipefunc", "hamilton"),
        peer_workload="async_map",
        peer_params={"reps": 3},
        peer_timeout=90.0,
    ),
    Workload(
        name="map_memory_1m",
        issue="map",
        metrics=[
            Metric(
                "main",
                "map over {n} items: peak RSS growth vs [f(x) for x in xs]",
                "MiB",
                _mib,
                within(2.0, "listcomp"),
            ),
            Metric(
                "main",
                "map over {n} items: peak RSS growth vs [{{'y': f(x)}} for x in xs]",
                "MiB",
                _mib,
                within(2.0, "list of dicts"),
                limit_key="dicts",
                limit_label="list of dicts",
            ),
        ],
        hypernodes=hn_map_memory,
        limit=listcomp_memory,
        limit_label="list comprehension",
        params={"n": 1_000_000},
        quick={"n": 50_000},
        peers=("hn048", "pipefunc", "hamilton"),
        peer_workload="map_memory",
        peer_timeout=240.0,
    ),
]
