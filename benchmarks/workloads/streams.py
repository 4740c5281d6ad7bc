"""Issue 12 (maps as streams): ``map_iter`` throughput next to ``map``, the time to a
first result, and memory over a long generator."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from hypernodes import HyperNodesEngine, Node, Pipeline

from ..harness import Context, Metric, Workload, at_most, rate, ratio_at_least, within
from ..peers.peer_common import load_module, map_source, time_reps
from ..procs import run_child

__all__ = ["WORKLOADS"]


def _pipeline() -> Pipeline:
    mod = load_module("hn_stream_map", map_source()[0])
    return Pipeline(
        [Node(mod.b, output_name="b"), Node(mod.c, output_name="c"), Node(mod.d, output_name="d")]
    )


def hn_map_iter(ctx: Context, *, n: int, reps: int) -> dict[str, Any]:
    p = _pipeline()
    xs = list(range(n))

    def drain() -> None:
        for _ in p.map_iter({"a": xs}, map_over="a"):
            pass

    return {"raw": {"main": time_reps(drain, reps=reps)}}


def hn_map_list(ctx: Context, *, n: int, reps: int) -> dict[str, Any]:
    p = _pipeline()
    xs = list(range(n))
    return {"raw": {"main": time_reps(lambda: p.map({"a": xs}, map_over="a"), reps=reps)}}


def _durations(n: int) -> list[float]:
    rng = random.Random(5)
    return [rng.uniform(0.01, 0.5) for _ in range(n)]


def hn_first_result(ctx: Context, *, n: int, reps: int) -> dict[str, Any]:
    """Seconds to the first ``amap_iter`` result of ``n`` async items taking 10-500 ms."""

    async def item(x: int, wait: list[float]) -> int:
        await asyncio.sleep(wait[x])
        return x

    engine = HyperNodesEngine(map_executor="async", max_concurrent=n)
    p = Pipeline([Node(item, output_name="y")], engine=engine)
    wait = _durations(n)

    async def once() -> float:
        began = time.perf_counter()
        stream = p.amap_iter(inputs={"x": range(n), "wait": wait}, map_over="x")
        await stream.__anext__()
        first = time.perf_counter() - began
        await stream.aclose()
        return first

    async def main() -> list[float]:
        await once()  # warm-up (untimed), as time_reps does for the other workloads
        return [await once() for _ in range(reps)]

    try:
        return {"raw": {"main": asyncio.run(main())}}
    finally:
        engine.close()


def fastest_item(ctx: Context, *, n: int, reps: int) -> dict[str, Any]:
    """The fastest item's duration: no stream can hand a result on sooner."""
    return {"raw": {"main": [min(_durations(n))]}}


def _memory(impl: str, n: int) -> list[float]:
    out = run_child("benchmarks.workloads.memory_child", impl, str(n))
    if out.get("status") != "ok":
        raise RuntimeError(out.get("note", "memory child failed"))
    return list(out["raw"]["main"])


def hn_iter_memory(ctx: Context, *, n: int) -> dict[str, Any]:
    return {"raw": {"main": _memory("hn_iter", n)}, "note": "fresh process"}


def map_list_memory(ctx: Context, *, n: int) -> dict[str, Any]:
    return {"raw": {"main": _memory("hn", n)}}


def _seconds(seconds: float, params: dict[str, Any]) -> float:
    return seconds


def _mib(nbytes: float, params: dict[str, Any]) -> float:
    return nbytes / 2**20


WORKLOADS: list[Workload] = [
    Workload(
        name="map_iter_100k",
        issue="streams",
        metrics=[
            Metric(
                "main",
                "map_iter over 100,000 trivial items (3 nodes), vs map() of them",
                "items/s",
                rate("n"),
                ratio_at_least(0.8, "map()"),
                higher_is_better=True,
                peers=False,
            )
        ],
        hypernodes=hn_map_iter,
        limit=hn_map_list,
        limit_label="map() (a list)",
        params={"n": 100_000, "reps": 5},
        quick={"n": 10_000, "reps": 2},
    ),
    Workload(
        name="first_result_2000",
        issue="streams",
        metrics=[
            Metric(
                "main",
                "time to the first amap_iter result, 2,000 async items of 10-500 ms",
                "s",
                _seconds,
                within(1.2, "fastest item"),
                peers=False,
            )
        ],
        hypernodes=hn_first_result,
        limit=fastest_item,
        limit_label="fastest item",
        params={"n": 2000, "reps": 7},
        quick={"n": 200, "reps": 1},
    ),
    Workload(
        name="map_iter_memory_1m",
        issue="streams",
        metrics=[
            Metric(
                "main",
                "map_iter(window=64) over a 1,000,000-item generator: peak RSS growth",
                "MiB",
                _mib,
                at_most(50, "MiB"),
                limit_label="map() over a list",
                peers=False,
            )
        ],
        hypernodes=hn_iter_memory,
        limit=map_list_memory,
        limit_label="map() over a list",
        params={"n": 1_000_000},
        quick={"n": 100_000},
    ),
]
