"""Issue 2 (kernel): per-node overhead of run/arun, async and threaded concurrency."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from hypernodes import HyperNodesEngine

from ..harness import Context, Metric, Workload, at_most, per_rep, within
from ..peers.peer_common import (
    async_sources,
    chain_source,
    fanin_source,
    sleep_sources,
    time_reps,
)
from .common import direct_arun, direct_run, direct_steps, hn_pipeline, loop_times, repeat_run
from .scale import WORKLOADS as SCALE_WORKLOADS

__all__ = ["WORKLOADS"]

PEERS = ("hn048", "pipefunc", "hamilton")
US_PER_NODE = per_rep(1e6, count="n", inner="inner")


def _us_per_node_plus_one(seconds: float, params: dict[str, Any]) -> float:
    return seconds * 1e6 / (params["n"] + 1) / params["inner"]  # fan-out nodes + fan-in


def _seconds(seconds: float, params: dict[str, Any]) -> float:
    return seconds


# -- sync chain / fan-in, run() ------------------------------------------------------------


def hn_chain(ctx: Context, *, n: int, inner: int, reps: int) -> dict[str, Any]:
    p = hn_pipeline(f"chain{n}", chain_source(n))
    assert p.run({"v0": 0})[f"v{n}"] == n
    return {"raw": {"main": time_reps(lambda: repeat_run(p, {"v0": 0}, inner), reps=reps)}}


def direct_chain(ctx: Context, *, n: int, inner: int, reps: int) -> dict[str, Any]:
    steps = direct_steps(f"chain{n}", chain_source(n))

    def go() -> None:
        for _ in range(inner):
            direct_run(steps, {"v0": 0})

    return {"raw": {"main": time_reps(go, reps=reps)}}


def hn_fanin(ctx: Context, *, n: int, inner: int, reps: int) -> dict[str, Any]:
    p = hn_pipeline(f"fanin{n}", fanin_source(n))
    assert p.run({"x": 0})["total"] == n * (n - 1) // 2
    return {"raw": {"main": time_reps(lambda: repeat_run(p, {"x": 0}, inner), reps=reps)}}


def direct_fanin(ctx: Context, *, n: int, inner: int, reps: int) -> dict[str, Any]:
    steps = direct_steps(f"fanin{n}", fanin_source(n))

    def go() -> None:
        for _ in range(inner):
            direct_run(steps, {"x": 0})

    return {"raw": {"main": time_reps(go, reps=reps)}}


# -- await arun() from a user's loop -------------------------------------------------------


def hn_arun_chain(ctx: Context, *, n: int, inner: int, reps: int) -> dict[str, Any]:
    p = hn_pipeline(f"achain{n}", chain_source(n))

    async def once() -> None:
        for _ in range(inner):
            await p.arun({"v0": 0})

    return {"raw": {"main": loop_times(once, reps=reps)}, "note": "asyncio.run loop"}


def direct_arun_chain(ctx: Context, *, n: int, inner: int, reps: int) -> dict[str, Any]:
    steps = direct_steps(f"achain{n}", chain_source(n))

    async def once() -> None:
        for _ in range(inner):
            direct_run(steps, {"v0": 0})

    return {"raw": {"main": loop_times(once, reps=reps)}}


# -- async nodes on the "async" executor --------------------------------------------------


def _hn_async(ctx: Context, n: int, inner: int, reps: int, *, chain: bool) -> dict[str, Any]:
    engine = HyperNodesEngine(node_executor="async", max_concurrent=max(n, 10))
    p = hn_pipeline(f"async{n}{chain}", async_sources(n, chain=chain), engine=engine)
    inputs = {"a0": 0} if chain else {"x": 0}
    try:
        raw = time_reps(lambda: repeat_run(p, inputs, inner), reps=reps)
    finally:
        engine.close()
    return {"raw": {"main": raw}, "note": ""}


def _direct_async(ctx: Context, n: int, inner: int, reps: int, *, chain: bool) -> dict[str, Any]:
    steps = direct_steps(f"async{n}{chain}", async_sources(n, chain=chain))
    inputs = {"a0": 0} if chain else {"x": 0}

    async def once() -> None:
        for _ in range(inner):
            await direct_arun(steps, inputs, wide=not chain)

    return {"raw": {"main": loop_times(once, reps=reps)}}


def hn_async_chain(ctx: Context, *, n: int, inner: int, reps: int) -> dict[str, Any]:
    return _hn_async(ctx, n, inner, reps, chain=True)


def hn_async_wide(ctx: Context, *, n: int, inner: int, reps: int) -> dict[str, Any]:
    return _hn_async(ctx, n, inner, reps, chain=False)


def direct_async_chain(ctx: Context, *, n: int, inner: int, reps: int) -> dict[str, Any]:
    return _direct_async(ctx, n, inner, reps, chain=True)


def direct_async_wide(ctx: Context, *, n: int, inner: int, reps: int) -> dict[str, Any]:
    return _direct_async(ctx, n, inner, reps, chain=False)


# -- concurrency: async sleeps, blocking sleeps on threads --------------------------------


def hn_async_sleep(ctx: Context, *, n: int, sleep: float, reps: int) -> dict[str, Any]:
    engine = HyperNodesEngine(node_executor="async", max_concurrent=n)
    p = hn_pipeline(f"asleep{n}", async_sources(n, chain=False, sleep=sleep), engine=engine)
    try:
        raw = time_reps(lambda: p.run({"x": 0}), reps=reps)
    finally:
        engine.close()
    return {"raw": {"main": raw}}


def gather_sleep(ctx: Context, *, n: int, sleep: float, reps: int) -> dict[str, Any]:
    async def once() -> None:
        await asyncio.gather(*(asyncio.sleep(sleep) for _ in range(n)))

    return {"raw": {"main": loop_times(once, reps=reps)}}


def hn_threaded_sleep(
    ctx: Context, *, n: int, sleep: float, workers: int, reps: int
) -> dict[str, Any]:
    engine = HyperNodesEngine(node_executor="threaded", max_workers=workers)
    p = hn_pipeline(f"tsleep{n}", sleep_sources(n, sleep), engine=engine)
    try:
        raw = time_reps(lambda: p.run({"x": 0}), reps=reps)
    finally:
        engine.close()
    return {"raw": {"main": raw}}


def ideal_threaded(
    ctx: Context, *, n: int, sleep: float, workers: int, reps: int
) -> dict[str, Any]:
    steps = direct_steps(f"tsleep{n}", sleep_sources(n, sleep))
    with ThreadPoolExecutor(workers) as ex:
        pool = time_reps(lambda: list(ex.map(lambda s: s[0](0), steps)), reps=reps)
    ideal = -(-n // workers) * sleep
    return {"raw": {"main": [ideal], "pool": pool}}


def _wl(name: str, title: str, hn: Any, limit: Any, label: str, **kw: Any) -> Workload:
    target = kw.pop("target")
    unit = kw.pop("unit", "µs/node")
    convert = kw.pop("convert", US_PER_NODE)
    return Workload(
        name=name,
        issue="kernel",
        metrics=[Metric("main", title, unit, convert, target)],
        hypernodes=hn,
        limit=limit,
        limit_label=label,
        **kw,
    )


_PER_NODE = {"n": 100, "inner": 20, "reps": 15}
_PER_NODE_QUICK = {"n": 100, "inner": 2, "reps": 3}

WORKLOADS: list[Workload] = [
    _wl(
        "chain100",
        "100-node sync chain, run()",
        hn_chain,
        direct_chain,
        "direct interpreter",
        target=at_most(2, "µs/node"),
        params=_PER_NODE,
        quick=_PER_NODE_QUICK,
        peers=PEERS,
        peer_workload="chain",
    ),
    _wl(
        "fanin100",
        "1 -> 100 -> 1 sync fan-out/fan-in, run()",
        hn_fanin,
        direct_fanin,
        "direct interpreter",
        target=at_most(2, "µs/node"),
        convert=_us_per_node_plus_one,
        params=_PER_NODE,
        quick=_PER_NODE_QUICK,
        peers=PEERS,
        peer_workload="fanin",
    ),
    _wl(
        "arun_chain100",
        "100-node sync chain, await arun() in a user loop",
        hn_arun_chain,
        direct_arun_chain,
        "direct interpreter",
        target=at_most(5, "µs/node"),
        params=_PER_NODE,
        quick=_PER_NODE_QUICK,
        peers=PEERS,
        peer_workload="arun_chain",
    ),
    _wl(
        "async_chain100",
        '100 trivial async nodes, chain, "async" executor',
        hn_async_chain,
        direct_async_chain,
        "direct awaits",
        target=at_most(8, "µs/node"),
        params=_PER_NODE,
        quick=_PER_NODE_QUICK,
        peers=PEERS,
        peer_workload="async_chain",
        peer_params={"inner": 5, "reps": 5},
    ),
    _wl(
        "async_wide100",
        '100 trivial async nodes, independent, "async" executor',
        hn_async_wide,
        direct_async_wide,
        "asyncio.gather",
        target=at_most(8, "µs/node"),
        params=_PER_NODE,
        quick=_PER_NODE_QUICK,
        peers=PEERS,
        peer_workload="async_wide",
        peer_params={"inner": 5, "reps": 5},
    ),
    _wl(
        "async_sleep200",
        '200 async nodes x sleep 50 ms, "async", max_concurrent=200',
        hn_async_sleep,
        gather_sleep,
        "raw asyncio.gather",
        target=within(1.15, "asyncio"),
        unit="s",
        convert=_seconds,
        params={"n": 200, "sleep": 0.05, "reps": 7},
        quick={"n": 50, "sleep": 0.02, "reps": 2},
        peers=PEERS,
        peer_workload="async_sleep",
        peer_params={"reps": 3},
    ),
    _wl(
        "threaded_sleep16",
        '16 sync nodes x time.sleep(0.1), "threaded", 8 workers',
        hn_threaded_sleep,
        ideal_threaded,
        "ideal (2 waves)",
        target=within(1.05, "ideal"),
        unit="s",
        convert=_seconds,
        params={"n": 16, "sleep": 0.1, "workers": 8, "reps": 5},
        quick={"n": 16, "sleep": 0.02, "workers": 8, "reps": 2},
        peers=PEERS,
        peer_workload="threaded_sleep",
        peer_params={"reps": 3},
    ),
    *SCALE_WORKLOADS,
]
