"""The sync driver: plain sync steps run one after the other in the calling thread.

Two drivers walk a plan. ``scheduler.run_plan`` is the async one: every step, through its
layers (``hypernodes.layers``). This is the other: the loop-free path (``run()``/``map()``
with no loop running) and runs of plain sync steps inline on a loop HyperNodes owns. It
only ever runs *plain* steps (``Step.simple``: a sync body, no retry, limit, timeout or
streaming), so of the layers only the cache and events apply, in their blocking form:

- ``run_sync_steps``: the bare loop (no cache, no events), the innermost loop of a run;
- ``run_sync_steps_observed`` (and ``_cached``): with the cache and node events;
- ``run_plain_items`` (and ``iter_plain`` / ``run_plain_batch``): the same loop over the
  items of a plain map, inlined for speed (a map of trivial items is this loop).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from .errors import NodeError, PathFrame
from .executors.halting import Halt, Halted, InlineStop
from .layers.events import emit_cached, emit_end, emit_error, emit_start

if TYPE_CHECKING:
    from .level import Scope
    from .plan import Plan, Step

__all__ = [
    "Failed",
    "iter_plain",
    "run_plain_batch",
    "run_plain_items",
    "run_plan_sync",
    "run_sync_steps",
    "run_sync_steps_cached",
    "run_sync_steps_observed",
]

Failed = Callable[[int, Any, NodeError], Any]
"""Makes a failed item's outcome (``on_error="collect"``): ``failed(index, item, error)``."""


def run_sync_steps(
    steps: Iterable[Step], values: dict[str, Any], stop: Halt | InlineStop | None = None
) -> None:
    """Run plain sync steps in order, in the calling thread.

    With ``stop``, no step starts once it says the run is over.

    Raises:
        NodeError: A step failed.
        Halted: ``stop`` said the run is over before a step started (or after the last:
            its result would not be wanted).
    """
    for step in steps:
        if stop is not None and stop.over:
            raise Halted
        try:
            result = step.call(values)
        except Exception as exc:
            raise NodeError(step.name) from exc
        if step.out is not None:
            values[step.out] = result
        else:
            step.store(result, values)
    if stop is not None and stop.over:
        raise Halted


def run_plan_sync(plan: Plan, values: dict[str, Any], pipeline: str) -> None:
    """Run a ``simple`` plan in the calling thread (nothing in it can suspend).

    Raises:
        NodeError: The first node that failed, with the pipeline's frame on its path.
    """
    try:
        run_sync_steps(plan.steps, values)
    except NodeError as err:
        err._prepend(PathFrame(pipeline))
        raise


def run_sync_steps_cached(
    steps: Iterable[Step], values: dict[str, Any], cache: Any, stop: Halt | InlineStop
) -> None:
    """``run_sync_steps`` with the cache and no callbacks, in the thread that owns the run
    (the hit path of a cached run: kept free of anything the cache does not need).

    Raises:
        NodeError: A node failed.
        Halted: ``stop`` said the run is over before a node started (or after the last).
    """
    lookup = cache.lookup_now
    for step in steps:
        if stop.over:
            raise Halted
        key = None
        if step.node.cache:
            key, hit = lookup(step, values)
            if hit is not None:
                step.store(hit[0], values)
                continue
        try:
            try:
                result = step.call(values)
            except Exception as exc:
                raise NodeError(step.name) from exc
            step.store(result, values)
        except BaseException:
            cache.release(key)  # a run waiting for this key computes it instead
            raise
        if key is not None:
            cache.save_now(step, key, result, values)
    if stop.over:
        raise Halted


def run_sync_steps_observed(
    steps: Iterable[Step],
    values: dict[str, Any],
    scope: Scope,
    stop: Halt | InlineStop | None = None,
) -> None:
    """``run_sync_steps`` with the cache and node events, in the thread that owns the run.

    Only for runs that may block their thread (inline on a loop HyperNodes owns, or with
    no loop at all): store reads and writes happen right here.

    Raises:
        NodeError: A node failed.
        Halted: ``stop`` (default: the run's halt) said the run is over before a node
            started (or after the last).
    """
    d = scope.callbacks
    cache = scope.cache
    if stop is None:
        stop = scope.halt
    if d is None:
        run_sync_steps_cached(steps, values, cache, stop)
        return
    for step in steps:
        if stop.over:
            raise Halted
        key = None
        if cache is not None and step.node.cache:
            key, hit = cache.lookup_now(step, values)
            if hit is not None:
                step.store(hit[0], values)
                emit_cached(scope, step, values)
                continue
        started = emit_start(d, scope, step, None, values) if d is not None else 0.0
        try:
            try:
                result = step.call(values)
            except Exception as exc:
                raise NodeError(step.name) from exc
            step.store(result, values)
        except BaseException as err:
            if cache is not None:
                cache.release(key)  # a run waiting for this key computes it instead
            if d is not None and isinstance(err, NodeError):
                emit_error(d, scope, step, err, started)
            raise
        if key is not None and cache is not None:
            cache.save_now(step, key, result, values)
        if d is not None:
            emit_end(d, scope, step, values, started)
    if stop.over:
        raise Halted


def run_plain_items(
    plan: Plan,
    names: tuple[str, ...],
    base: dict[str, Any],
    numbered: Iterator[tuple[int, tuple[Any, ...]]],
    results: list[Any] | dict[int, Any],
    limit: int,
    pipeline: str,
    stop: Halt | InlineStop | None = None,
    failed: Failed | None = None,
) -> None:
    """Run up to ``limit`` items of a plain map in this thread, storing their results.

    With ``stop`` (the run's halt), a failure here ends the run, and no node starts once
    the run is over. With ``failed`` (``on_error="collect"``), a failed item's result is
    ``failed(index, item, error)`` and the items after it still run.

    Raises:
        NodeError: An item failed; the pipeline frame and item index are on its path.
        Halted: ``stop`` said the run is over before a node started (or after the last).
    """
    steps = plan.steps
    outputs = plan.outputs
    index = -1
    if stop is None:
        stop = Halt()  # (a map with no run around it: the loop-free path)
    # ``stop.over``, inlined for this loop (a property call per node costs 30%).
    halt, cancelling, asked = stop.probe()
    # The innermost loop of a map: the step loop is inlined, its parts looked up once.
    calls = tuple((s.call, s.out, s) for s in steps)
    single = names[0] if len(names) == 1 else None
    collect = itemgetter(*outputs) if len(outputs) > 1 else None
    only = outputs[0]
    try:
        for index, item in itertools.islice(numbered, limit):
            values = base.copy()
            if single is not None:
                values[single] = item[0]
            else:
                values.update(zip(names, item, strict=True))
            try:
                for call, out, step in calls:
                    if halt.over or (cancelling is not None and cancelling() > asked):
                        raise Halted
                    try:
                        result = call(values)
                    except Exception as exc:  # (a NodeError from user code is wrapped too)
                        raise NodeError(step.name) from exc
                    if out is not None:
                        values[out] = result
                    else:
                        step.store(result, values)
            except NodeError as err:
                if failed is None:
                    raise
                err._prepend(PathFrame(pipeline))
                err._mark_item(index)
                results[index] = failed(index, item, err)
                continue
            if collect is not None:
                results[index] = dict(zip(outputs, collect(values), strict=True))
            else:
                results[index] = {only: values[only]}
    except NodeError as err:
        stop.set()
        err._prepend(PathFrame(pipeline))
        err._mark_item(index)
        raise
    if stop.over:
        raise Halted


def iter_plain(
    plan: Plan,
    names: tuple[str, ...],
    base: dict[str, Any],
    numbered: Iterator[tuple[int, tuple[Any, ...]]],
    pipeline: str,
    stop: Halt | InlineStop | None,
    batch: int,
    failed: Failed | None = None,
) -> Iterator[list[tuple[int, Any]]]:
    """The results of a plain map as ``(index, result)`` pairs, ``batch`` items at a time
    (the plain loop, streaming: at most ``batch`` items are read ahead).

    Raises:
        NodeError: As ``run_plain_items``.
        Halted: As ``run_plain_items``.
    """
    while True:
        chunk = list(itertools.islice(numbered, batch))
        if not chunk:
            return
        yield run_plain_batch(plan, names, base, chunk, pipeline, stop, failed)


def run_plain_batch(
    plan: Plan,
    names: tuple[str, ...],
    base: dict[str, Any],
    chunk: list[tuple[int, tuple[Any, ...]]],
    pipeline: str,
    stop: Halt | InlineStop | None,
    failed: Failed | None = None,
) -> list[tuple[int, Any]]:
    """``run_plain_items`` over ``chunk``; its ``(index, result)`` pairs in order."""
    out: dict[int, Any] = {}
    run_plain_items(plan, names, base, iter(chunk), out, len(chunk), pipeline, stop, failed)
    return list(out.items())
