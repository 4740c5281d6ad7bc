"""Issue 14, async service: ``await pipeline.arun()`` calls at concurrency 200 on one uvloop.

The pipeline of one call: two async I/O nodes (``asyncio.sleep``), a cached node (a
``MemoryCache`` hit after the first call per region), a nested map over the 5 items the
I/O returned (an async node and a trivial sync node per item), and a CPU node run in a
thread (light, or about 1.6 ms of pure-Python arithmetic). The hand-written yardstick does
the same work with ``asyncio.gather``, a dict cache and ``asyncio.to_thread``, with every
sync function in a thread as HyperNodes places every sync node body (its contract keeps
sync bodies off a user's loop). The note gives its cost with the trivial per-item
function called inline instead, as one might write it by hand.

Both sides measure wall time (throughput) and process CPU time (every thread) over the
same calls, after a warm-up batch on the same loop, and check every call's result.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from hypernodes import HyperNodesEngine, MemoryCache, Node, Pipeline

from ...harness import Context

__all__ = ["describe", "hand_service", "hn_service"]

USERS = 500
REGIONS = tuple(f"region-{i}" for i in range(10))
ITEMS = 5


async def fetch_user(user_id: int) -> dict[str, int]:
    await asyncio.sleep(0.002)
    return {"id": user_id, "tier": user_id % 3}


async def fetch_items(user_id: int) -> list[int]:
    await asyncio.sleep(0.003)
    return [user_id * 10 + k for k in range(ITEMS)]


def rate(region: str) -> int:
    return sum(map(ord, region)) % 7 + 1


async def enrich(item: int) -> int:
    await asyncio.sleep(0.001)
    return item + 1


def price(enriched: int, rate: int) -> int:
    return enriched * rate


def score(user: dict[str, int], prices: list[int], work: int) -> int:
    """The CPU node: ``work`` rounds of integer arithmetic (about 50 ns each here)."""
    total = user["tier"]
    for i in range(work):
        total = (total * 31 + i) % 1_000_003
    return total + sum(prices)


def _request(k: int) -> tuple[int, str]:
    return k % USERS, REGIONS[k % len(REGIONS)]


def _expected(user_id: int, region: str, work: int) -> int:
    r = rate(region)
    prices = [price(user_id * 10 + k + 1, r) for k in range(ITEMS)]
    return score({"id": user_id, "tier": user_id % 3}, prices, work)


def _loop_factory() -> tuple[Callable[[], asyncio.AbstractEventLoop] | None, str]:
    try:
        import uvloop
    except ImportError:
        return None, "asyncio loop (uvloop not installed)"
    return uvloop.new_event_loop, "uvloop"


def _node_ms(work: int) -> float:
    """Median milliseconds of one direct ``score`` call with this ``work``."""
    user, prices = {"id": 1, "tier": 1}, [1, 2, 3, 4, 5]
    times = []
    for _ in range(21):
        t0 = time.perf_counter()
        score(user, prices, work)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


Handle = Callable[[int, str], Awaitable[int]]


def _drive(
    setup: Callable[[], Awaitable[tuple[Handle, Callable[[], Awaitable[None]]]]],
    *,
    calls: int,
    concurrency: int,
    work: int,
    warmup: int,
    reps: int,
) -> dict[str, Any]:
    """Run ``reps`` batches of ``calls`` requests (``concurrency`` in flight) on one loop."""

    async def batch(handle: Handle, n: int) -> list[int]:
        gate = asyncio.Semaphore(concurrency)

        async def one(k: int) -> int:
            async with gate:
                return await handle(*_request(k))

        return await asyncio.gather(*(one(k) for k in range(n)))

    distinct = {_request(k) for k in range(calls)}  # a few hundred requests, many times
    by_request = {req: _expected(*req, work) for req in distinct}
    expected = [by_request[_request(k)] for k in range(calls)]

    async def main() -> tuple[list[float], list[float]]:
        handle, close = await setup()
        try:
            await batch(handle, warmup)
            walls, cpus = [], []
            for _ in range(reps):
                gc.collect()
                c0, t0 = time.process_time(), time.perf_counter()
                got = await batch(handle, calls)
                walls.append(time.perf_counter() - t0)
                cpus.append(time.process_time() - c0)
                if got != expected:
                    bad = sum(g != e for g, e in zip(got, expected, strict=True))
                    raise AssertionError(f"{bad} of {calls} calls returned a wrong score")
        finally:
            await close()
        return walls, cpus

    factory, loop_name = _loop_factory()
    with asyncio.Runner(loop_factory=factory) as runner:
        walls, cpus = runner.run(main())
    return {
        "raw": {"wall": walls, "cpu": cpus},
        "note": loop_name if loop_name != "uvloop" else "",
    }


def _pipeline(engine: HyperNodesEngine) -> Pipeline:
    per_item = Pipeline(
        [
            Node(enrich, output_name="enriched", cache=False),
            Node(price, output_name="price", cache=False),
        ],
        name="per_item",
    ).as_node(
        input_mapping={"items": "item"},
        output_mapping={"price": "prices"},
        map_over="items",
        cache=None,
    )
    return Pipeline(
        [
            Node(fetch_user, output_name="user", cache=False),
            Node(fetch_items, output_name="items", cache=False),
            Node(rate, output_name="rate"),
            per_item,
            Node(score, output_name="score", cache=False),
        ],
        engine=engine,
        cache=MemoryCache(),
        name="service",
    )


def hn_service(
    ctx: Context, *, calls: int, concurrency: int, work: int, warmup: int, reps: int
) -> dict[str, Any]:
    """HyperNodes: ``node_executor="async"`` (nested map items too), ``MemoryCache``."""
    stores: list[MemoryCache] = []

    async def setup() -> tuple[Handle, Callable[[], Awaitable[None]]]:
        engine = HyperNodesEngine(node_executor="async", map_executor="async")
        pipeline = _pipeline(engine)
        stores.append(pipeline.cache)

        async def handle(user_id: int, region: str) -> int:
            inputs = {"user_id": user_id, "region": region, "work": work}
            out = await pipeline.arun(inputs, output_name="score")
            return int(out["score"])

        return handle, engine.aclose

    out = _drive(setup, calls=calls, concurrency=concurrency, work=work, warmup=warmup, reps=reps)
    out["raw"]["node_ms"] = [_node_ms(work)]
    misses = stores[0].stats().misses
    if misses > warmup:  # only concurrent first calls per region may miss
        out["note"] = f"the cached node missed {misses} times in {warmup + reps * calls} calls"
    return out


def _by_hand(work: int, *, inline: bool) -> Handle:
    """One request by hand; ``inline``: call the trivial per-item sync function directly."""
    rates: dict[str, int] = {}

    async def item_price(item: int, r: int) -> int:
        enriched = await enrich(item)
        return price(enriched, r) if inline else await asyncio.to_thread(price, enriched, r)

    async def handle(user_id: int, region: str) -> int:
        user, items = await asyncio.gather(fetch_user(user_id), fetch_items(user_id))
        r = rates.get(region)
        if r is None:
            r = rates[region] = await asyncio.to_thread(rate, region)
        prices = list(await asyncio.gather(*(item_price(i, r) for i in items)))
        return await asyncio.to_thread(score, user, prices, work)

    return handle


def hand_service(
    ctx: Context, *, calls: int, concurrency: int, work: int, warmup: int, reps: int
) -> dict[str, Any]:
    """By hand: ``asyncio.gather``, a dict cache, ``asyncio.to_thread`` for sync bodies.

    Every sync function runs in a thread, as HyperNodes runs every sync node body; the
    same requests with the trivial per-item function called inline are measured too
    (``cpu_inline``, for the note: what those thread hops cost).
    """

    async def setup(inline: bool) -> tuple[Handle, Callable[[], Awaitable[None]]]:
        async def close() -> None:
            return None

        return _by_hand(work, inline=inline), close

    sizes = {"calls": calls, "concurrency": concurrency, "work": work, "warmup": warmup}
    out = _drive(lambda: setup(False), reps=reps, **sizes)
    inline = _drive(lambda: setup(True), reps=1, **sizes)
    out["raw"]["cpu_inline"] = inline["raw"]["cpu"]
    out["raw"]["calls"] = [calls]
    return out


def describe(raw: dict[str, Any]) -> str:
    """The CPU node's own cost; by hand, the CPU per call with the per-item node inline."""
    if raw.get("cpu_inline"):
        ms = statistics.median(raw["cpu_inline"]) * 1e3 / raw["calls"][0]
        return f"{ms:.3f} ms/call with the trivial per-item sync node called inline"
    node_ms = raw.get("node_ms")
    return f"CPU node {statistics.median(node_ms):.3f} ms per call" if node_ms else ""
