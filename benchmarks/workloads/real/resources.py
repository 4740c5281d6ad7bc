"""Issue 15, resources: a ``"parallel"`` map whose items all use one 50 MB model.

HyperNodes: ``@resource(scope="process")`` builds the model in each of the 2 workers (never
pickled to them), timed from engine creation to ``close()``. The yardstick: a
``ProcessPoolExecutor(2, initializer=...)`` whose initializer loads the model once per
worker, timed from pool creation to shutdown. Both start their workers with spawn.

Every result list is checked against the expected values.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from hypernodes import HyperNodesEngine, Pipeline, node, resource

from ...harness import Context
from ...peers.peer_common import time_reps

__all__ = ["hand_model", "hn_model"]

WORKERS = 2


def load(mb: float) -> bytes:
    """The "model": ``mb`` megabytes made in the worker (as a loader would read them)."""
    size = int(mb * 1_000_000)
    return (bytes(range(251)) * (size // 251 + 1))[:size]


def predict(x: int, model: bytes) -> int:
    """A trivial item that reads the model."""
    return x + model[x]


model = resource(load, scope="process", name="model")
pipeline = Pipeline([model, node(predict, output_name="y")])


def _hn_once(xs: list[int], mb: float) -> list[int]:
    engine = HyperNodesEngine(map_executor="parallel", max_workers=WORKERS)
    try:
        out = pipeline.with_engine(engine).map({"x": xs, "mb": mb}, map_over="x")
    finally:
        engine.close()
    return [r["y"] for r in out]


def hn_model(ctx: Context, *, items: int, mb: float, reps: int) -> dict[str, Any]:
    """HyperNodes: ``"parallel"`` map, the model a process-scoped resource."""
    xs = list(range(items))
    want = [predict(x, load(mb)) for x in xs]
    _verify(_hn_once([0, 1], 0.001), [0, 2], "warm-up")  # imports, not timed
    results: list[list[int]] = []
    raw = time_reps(lambda: results.append(_hn_once(xs, mb)), reps=reps, warmup=0)
    for got in results:
        _verify(got, want, "parallel map")
    return {"raw": {"main": raw}, "note": "engine start to close()"}


_MODEL: bytes = b""


def _load_kept(mb: float) -> None:
    global _MODEL
    _MODEL = load(mb)


def _predict_kept(x: int) -> int:
    return predict(x, _MODEL)


def _hand_once(xs: list[int], mb: float) -> list[int]:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        WORKERS, mp_context=context, initializer=_load_kept, initargs=(mb,)
    ) as pool:
        return list(pool.map(_predict_kept, xs))


def hand_model(ctx: Context, *, items: int, mb: float, reps: int) -> dict[str, Any]:
    """By hand: the pool's initializer loads the model once per worker."""
    xs = list(range(items))
    want = [predict(x, load(mb)) for x in xs]
    _verify(_hand_once([0, 1], 0.001), [0, 2], "warm-up")
    results: list[list[int]] = []
    raw = time_reps(lambda: results.append(_hand_once(xs, mb)), reps=reps, warmup=0)
    for got in results:
        _verify(got, want, "pool map")
    return {"raw": {"main": raw}, "note": "pool start to shutdown"}


def _verify(got: list[int], want: list[int], what: str) -> None:
    if got != want:
        bad = sum(g != w for g, w in zip(got, want, strict=False)) + abs(len(got) - len(want))
        raise AssertionError(f"{what}: {bad} of {len(want)} results wrong")
