"""Issue 14, ``"parallel"`` maps: one big input shared by every item, and many tiny items.

- **shared input**: a ``map_executor="parallel"`` map (2 workers) of trivial items that all
  read one large ``bytes`` input, timed from engine creation to ``close()``; the
  yardstick is a ``ProcessPoolExecutor(2, initializer=...)`` that receives the input once
  per worker, timed from pool creation to shutdown. Both start their workers with spawn.
- **tiny items**: 10,000 trivial items on a warm ``"parallel"`` engine (2 workers) vs
  ``ProcessPoolExecutor(2).map(fn, items, chunksize=len // (4 * workers))``, the chunk
  size ``multiprocessing.Pool.map`` picks, on a warm pool.

Every result list is checked against the expected values.
"""

from __future__ import annotations

import math
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from hypernodes import HyperNodesEngine, Node, Pipeline

from ...harness import Context
from ...peers.peer_common import time_reps

__all__ = ["hand_shared", "hand_tiny", "hn_shared", "hn_tiny"]

WORKERS = 2


def touch(x: int, blob: bytes) -> int:
    """A trivial item that reads the shared input."""
    return x + blob[x]


def double(x: int) -> int:
    return 2 * x


_BLOB: bytes = b""


def _keep(blob: bytes) -> None:
    global _BLOB
    _BLOB = blob


def _touch_kept(x: int) -> int:
    return touch(x, _BLOB)


def _blob(mb: float) -> bytes:
    size = int(mb * 1_000_000)
    return (bytes(range(251)) * (size // 251 + 1))[:size]


def _spawn_pool(**kwargs: Any) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(WORKERS, mp_context=multiprocessing.get_context("spawn"), **kwargs)


def _verify(got: list[int], want: list[int], what: str) -> None:
    if got != want:
        bad = sum(g != w for g, w in zip(got, want, strict=False)) + abs(len(got) - len(want))
        raise AssertionError(f"{what}: {bad} of {len(want)} results wrong")


# -- one big shared input ------------------------------------------------------------------


def _hn_shared_once(xs: list[int], blob: bytes) -> list[int]:
    engine = HyperNodesEngine(map_executor="parallel", max_workers=WORKERS)
    pipeline = Pipeline([Node(touch, output_name="y")], engine=engine)
    try:
        out = pipeline.map({"x": xs, "blob": blob}, map_over="x")
    finally:
        engine.close()
    return [r["y"] for r in out]


def hn_shared(ctx: Context, *, items: int, mb: float, reps: int) -> dict[str, Any]:
    """HyperNodes: ``"parallel"`` map, the input passed like any shared map input."""
    xs, blob = list(range(items)), _blob(mb)
    want = [touch(x, blob) for x in xs]
    _verify(_hn_shared_once([0, 1], _blob(0.001)), [0, 2], "warm-up")  # imports, not timed
    results: list[list[int]] = []
    raw = time_reps(lambda: results.append(_hn_shared_once(xs, blob)), reps=reps, warmup=0)
    for got in results:
        _verify(got, want, "parallel map")
    return {"raw": {"main": raw}, "note": "engine start to close()"}


def _hand_shared_once(xs: list[int], blob: bytes) -> list[int]:
    with _spawn_pool(initializer=_keep, initargs=(blob,)) as pool:
        return list(pool.map(_touch_kept, xs))


def hand_shared(ctx: Context, *, items: int, mb: float, reps: int) -> dict[str, Any]:
    """By hand: the input reaches each worker once, through the pool's initializer."""
    xs, blob = list(range(items)), _blob(mb)
    want = [touch(x, blob) for x in xs]
    _verify(_hand_shared_once([0, 1], _blob(0.001)), [0, 2], "warm-up")
    results: list[list[int]] = []
    raw = time_reps(lambda: results.append(_hand_shared_once(xs, blob)), reps=reps, warmup=0)
    for got in results:
        _verify(got, want, "pool map")
    return {"raw": {"main": raw}, "note": "pool start to shutdown"}


# -- many tiny items -----------------------------------------------------------------------


def hn_tiny(ctx: Context, *, n: int, reps: int) -> dict[str, Any]:
    """HyperNodes: ``"parallel"`` map on an engine whose workers already run."""
    xs = list(range(n))
    want = [2 * x for x in xs]
    engine = HyperNodesEngine(map_executor="parallel", max_workers=WORKERS)
    pipeline = Pipeline([Node(double, output_name="y")], engine=engine)
    results: list[list[dict[str, Any]]] = []
    try:
        _verify([r["y"] for r in pipeline.map({"x": xs[:100]}, map_over="x")], want[:100], "w")
        raw = time_reps(
            lambda: results.append(pipeline.map({"x": xs}, map_over="x")), reps=reps, warmup=0
        )
    finally:
        engine.close()
    for out in results:
        _verify([r["y"] for r in out], want, "parallel map")
    return {"raw": {"main": raw}}


def hand_tiny(ctx: Context, *, n: int, reps: int) -> dict[str, Any]:
    """By hand: ``ProcessPoolExecutor.map`` with ``Pool.map``'s chunk size, warm pool."""
    xs = list(range(n))
    want = [2 * x for x in xs]
    chunksize = max(1, math.ceil(n / (4 * WORKERS)))
    results: list[list[int]] = []
    with _spawn_pool() as pool:
        _verify(list(pool.map(double, xs[:100])), want[:100], "warm-up")
        raw = time_reps(
            lambda: results.append(list(pool.map(double, xs, chunksize=chunksize))),
            reps=reps,
            warmup=0,
        )
    for got in results:
        _verify(got, want, "pool map")
    return {"raw": {"main": raw}, "note": f"chunksize={chunksize}"}
