"""Issue 14, a CPU-bound map on a local Dask cluster: speed-up over sequential.

Pure-Python arithmetic items (about 30 ms each) mapped with ``map_executor="dask"`` on a
2-worker local cluster (worker processes, one thread each). The row is the cluster the
engine starts itself, ``HyperNodesEngine(map_executor="dask", max_workers=2)``, the way
the README starts a local cluster; started once per process before anything is timed.
The same map on a ``LocalCluster`` the benchmark starts with Dask's own settings and
hands over by ``address=`` (what a user with a cluster of their own does) is measured
after it and shown beside the row. Each timed Dask map is paired with a sequential
HyperNodes map of the same items just before it, and the speed-up is the median of the
pairs' ratios (load from other work on a shared machine hits both halves of a pair
alike). The yardstick: the same pairing with a plain loop and a bare 2-process
``ProcessPoolExecutor`` (spawn, warm), i.e. what this machine allows now.
"""

from __future__ import annotations

import logging
import multiprocessing
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from hypernodes import HyperNodesEngine, Node, Pipeline

from ...harness import Context, NotAvailable

__all__ = ["describe", "hand_cluster", "hn_cluster"]

WORKERS = 2


def crunch(x: int, iters: int) -> int:
    """About 50 ns per iteration here: 600,000 iterations are about 30 ms."""
    total = x
    for i in range(iters):
        total = (total * 31 + i) % 1_000_003
    return total


def _paired(
    sequential: Callable[[], list[int]],
    parallel: Callable[[], list[int]],
    want: list[int],
    reps: int,
) -> dict[str, Any]:
    if sequential() != want or parallel() != want:  # warm-up (ships the function), checked
        raise AssertionError("wrong totals in the warm-up")
    seq: list[float] = []
    par: list[float] = []
    for _ in range(reps):
        for call, times in ((sequential, seq), (parallel, par)):
            t0 = time.perf_counter()
            got = call()
            times.append(time.perf_counter() - t0)
            if got != want:
                raise AssertionError("wrong totals")
    speedup = [s / p for s, p in zip(seq, par, strict=True)]
    return {"raw": {"speedup": speedup, "sequential": seq, "parallel": par}}


def hn_cluster(ctx: Context, *, items: int, iters: int, reps: int) -> dict[str, Any]:
    """HyperNodes: ``map_executor="dask"`` on the cluster the engine starts, then on one
    started here and passed by address, each vs the default sequential engine."""
    try:
        from distributed import LocalCluster
    except ImportError as exc:
        raise NotAvailable("dask[distributed] is not installed") from exc
    xs = list(range(items))
    want = [crunch(x, iters) for x in xs]
    own = HyperNodesEngine(map_executor="dask", max_workers=WORKERS)
    try:
        raw = _on(own, xs, iters, want, reps)
    finally:
        own.close()
    cluster = LocalCluster(  # type: ignore[no-untyped-call]
        n_workers=WORKERS,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        silence_logs=logging.ERROR,
    )
    engine = HyperNodesEngine(map_executor="dask", address=cluster.scheduler_address)
    try:
        by_address = _on(engine, xs, iters, want, reps)["raw"]
    finally:
        engine.close()
        cluster.close()
    raw["raw"]["by_address"] = by_address["speedup"]
    return raw


def _on(
    engine: HyperNodesEngine, xs: list[int], iters: int, want: list[int], reps: int
) -> dict[str, Any]:
    job = Node(crunch, output_name="total")
    on_dask = Pipeline([job], engine=engine)
    in_process = Pipeline([job])
    inputs = {"x": xs, "iters": iters}
    return _paired(
        lambda: [r["total"] for r in in_process.map(inputs, map_over="x")],
        lambda: [r["total"] for r in on_dask.map(inputs, map_over="x")],
        want,
        reps,
    )


def hand_cluster(ctx: Context, *, items: int, iters: int, reps: int) -> dict[str, Any]:
    """By hand: a loop vs ``ProcessPoolExecutor(2).map`` (one item per task), warm pool."""
    xs = list(range(items))
    want = [crunch(x, iters) for x in xs]
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(WORKERS, mp_context=spawn) as pool:
        return _paired(
            lambda: [crunch(x, iters) for x in xs],
            lambda: list(pool.map(crunch, xs, [iters] * len(xs))),
            want,
            reps,
        )


def describe(raw: dict[str, Any]) -> str:
    if not raw.get("sequential"):
        return ""
    seq, par = statistics.median(raw["sequential"]), statistics.median(raw["parallel"])
    note = f"{par:.3f} s vs {seq:.3f} s sequential"
    if raw.get("by_address"):
        note += (
            f"; on a LocalCluster passed by address: {statistics.median(raw['by_address']):.2f}x"
        )
    return note
