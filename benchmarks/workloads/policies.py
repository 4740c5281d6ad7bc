"""Issue 11 (call policies): what a Limit costs when nobody contends for it, and how close
a contended Limit keeps a map to the ideal schedule."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from hypernodes import HyperNodesEngine, Limit, Pipeline, node

from ..harness import Context, Metric, Workload, at_most, within
from .common import loop_times

__all__ = ["WORKLOADS"]


def _chain(n: int, limit: Limit | None) -> Pipeline:
    nodes = []
    for i in range(n):
        scope: dict[str, Any] = {}
        exec(f"async def n{i}(v{i}):\n    return v{i} + 1\n", scope)
        nodes.append(node(scope[f"n{i}"], output_name=f"v{i + 1}", limit=limit))
    return Pipeline(nodes, name=f"limited{n}")


def hn_limited_chain(ctx: Context, *, n: int, inner: int, reps: int) -> dict[str, Any]:
    """The same async chain with and without an uncontended Limit on every node, paired
    rep by rep (alternating, in one loop): the difference is the Limit's cost."""
    free = Limit("free", concurrency=1_000_000, rate=(1e9, 1.0))
    limited, plain = _chain(n, free), _chain(n, None)
    assert asyncio.run(limited.arun({"v0": 0}))[f"v{n}"] == n

    async def time_one(p: Pipeline) -> float:
        t0 = time.perf_counter()
        for _ in range(inner):
            await p.arun({"v0": 0})
        return time.perf_counter() - t0

    async def main() -> tuple[list[float], list[float]]:
        await time_one(limited)
        await time_one(plain)
        with_limit, without = [], []
        for _ in range(reps):
            with_limit.append(await time_one(limited))
            without.append(await time_one(plain))
        return with_limit, without

    with_limit, without = asyncio.run(main())
    extra = [a - b for a, b in zip(with_limit, without, strict=True)]
    return {"raw": {"extra": extra, "limited": with_limit, "plain": without}}


def _per_call(seconds: float, params: dict[str, Any]) -> float:
    return seconds * 1e6 / params["n"] / params["inner"]


def hn_contended(
    ctx: Context, *, items: int, width: int, sleep: float, reps: int
) -> dict[str, Any]:
    """``Limit(concurrency=width)`` over ``items`` async items of ``sleep`` seconds, the map
    itself free to run them all at once."""
    limit = Limit("api", concurrency=width)

    @node(output_name="y", limit=limit)
    async def call(x: int) -> int:
        await asyncio.sleep(sleep)
        return x

    engine = HyperNodesEngine(map_executor="async", max_concurrent=items)
    p = Pipeline([call], engine=engine)
    xs = list(range(items))
    try:
        raw = loop_times(lambda: p.amap(inputs={"x": xs}, map_over="x"), reps=reps)
    finally:
        engine.close()
    return {"raw": {"main": raw}}


def ideal_contended(
    ctx: Context, *, items: int, width: int, sleep: float, reps: int
) -> dict[str, Any]:
    """The ideal schedule, ``items / width`` waves of ``sleep``; and a hand-written
    ``asyncio.Semaphore(width)`` + ``gather`` for reference."""

    async def once() -> None:
        gate = asyncio.Semaphore(width)

        async def one() -> None:
            async with gate:
                await asyncio.sleep(sleep)

        await asyncio.gather(*(one() for _ in range(items)))

    hand = loop_times(once, reps=reps)
    return {"raw": {"main": [-(-items // width) * sleep], "hand": hand}}


def _seconds(seconds: float, params: dict[str, Any]) -> float:
    return seconds


WORKLOADS: list[Workload] = [
    Workload(
        name="limit_uncontended",
        issue="policies",
        metrics=[
            Metric(
                "extra",
                "uncontended Limit on 100 async nodes, arun(): extra cost per call",
                "µs/call",
                _per_call,
                at_most(2, "µs/call"),
                peers=False,
            ),
        ],
        hypernodes=hn_limited_chain,
        params={"n": 100, "inner": 20, "reps": 15},
        quick={"n": 100, "inner": 2, "reps": 3},
    ),
    Workload(
        name="limit8_1000",
        issue="policies",
        metrics=[
            Metric(
                "main",
                "Limit(concurrency=8) over 1,000 async items of 10 ms",
                "s",
                _seconds,
                within(1.1, "ideal"),
                peers=False,
            ),
        ],
        hypernodes=hn_contended,
        limit=ideal_contended,
        limit_label="ideal (125 waves)",
        params={"items": 1000, "width": 8, "sleep": 0.01, "reps": 3},
        quick={"items": 200, "width": 8, "sleep": 0.01, "reps": 1},
    ),
]
