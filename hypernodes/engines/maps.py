"""HyperNodesEngine's maps: ``map``/``amap`` (a list), ``map_iter``/``amap_iter`` (a
stream), the loop-free plain path, and the one item stream every map strategy feeds
(plain batches, items on the loop, items shipped to workers)."""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    Mapping,
    Sequence,
)
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInputError, NodeError
from ..executors.halting import item_halt
from ..executors.workers import holds
from ..inline import Failed, iter_plain, run_plain_items
from ..items import collect_items, stream_items
from ..level import Limiter, Scope
from ..mapping import Expansion, expand, map_plain, stream_plain
from ..resources import handles_in, prime_handles
from ..results import ItemFailure, MapResult, check_on_error
from ..scheduler import Plan, run_plan
from .base import Engine, MapMode, OnError, OutputName, item_events, map_events
from .shipping import map_remote, stream_remote

if TYPE_CHECKING:
    from ..executors.workers import Lane
    from ..pipeline import Pipeline
    from .hypernodes import HyperNodesEngine

__all__ = ["amap", "amap_iter", "ended", "map", "map_iter"]

logger = logging.getLogger("hypernodes")


def map(
    engine: HyperNodesEngine,
    pipeline: Pipeline,
    inputs: Mapping[str, Any],
    map_over: str | Sequence[str],
    map_mode: MapMode = "zip",
    output_name: OutputName = None,
    *,
    on_error: OnError = "raise",
) -> list[dict[str, Any]]:
    """Run ``pipeline`` once per item from sync code; see :meth:`Pipeline.map`."""
    failed = _collector(on_error)
    direct = _direct_plain(engine, pipeline, inputs, map_over, map_mode, output_name)
    if direct is not None:
        plan, exp = direct
        base = {**plan.optional, **pipeline.bound, **exp.shared}
        numbered = exp.numbered()
        assert isinstance(numbered, Iterator)
        try:
            if exp.count is not None:
                results: list[Any] = [None] * exp.count
                run_plain_items(
                    plan, exp.names, base, numbered, results, exp.count,
                    pipeline.name, None, failed and failed(exp),
                )  # fmt: skip
            else:
                results = [r for pairs in iter_plain(
                    plan, exp.names, base, numbered, pipeline.name, None, _BATCH,
                    failed and failed(exp),
                ) for _, r in pairs]  # fmt: skip
        finally:
            numbered.close()  # type: ignore[attr-defined]
        return MapResult(results) if failed else results
    return Engine.map(engine, pipeline, inputs, map_over, map_mode, output_name, on_error=on_error)


def map_iter(
    engine: HyperNodesEngine,
    pipeline: Pipeline,
    inputs: Mapping[str, Any],
    map_over: str | Sequence[str],
    map_mode: MapMode = "zip",
    output_name: OutputName = None,
    *,
    ordered: bool = False,
    window: int | None = None,
    on_error: OnError = "raise",
) -> Iterator[tuple[int, Any]]:
    """Sync twin of :meth:`amap_iter`; see :meth:`Pipeline.map_iter`."""
    failed = _collector(on_error)
    _check_window(window)
    direct = _direct_plain(engine, pipeline, inputs, map_over, map_mode, output_name)
    if direct is not None:
        return _iter_direct(engine, pipeline, *direct, window, failed)
    return Engine.map_iter(
        engine,
        pipeline,
        inputs,
        map_over,
        map_mode,
        output_name,
        ordered=ordered,
        window=window,
        on_error=on_error,
    )


def _direct_plain(
    engine: HyperNodesEngine,
    pipeline: Pipeline,
    inputs: Mapping[str, Any],
    map_over: str | Sequence[str],
    map_mode: MapMode,
    output_name: OutputName,
) -> tuple[Plan, Expansion] | None:
    """The plan and items of a map that may run loop-free, in this thread (no loop
    running, sequential, no cache or callbacks, plain sync nodes, sync inputs); else
    ``None``."""
    if not engine._direct(pipeline, map_too=True):
        return None
    exp = expand(inputs, map_over, map_mode, pipeline=pipeline)
    plan = pipeline.plan(output_name, (*exp.shared, *exp.names))
    return (plan, exp) if plan.simple and not exp.is_async else None


def _iter_direct(
    engine: HyperNodesEngine,
    pipeline: Pipeline,
    plan: Plan,
    exp: Expansion,
    window: int | None,
    failed: Callable[[Expansion], Failed] | None,
) -> Iterator[tuple[int, Any]]:
    # The loop-free path: plain sync items in this thread, a batch at a time (items run
    # in order, so ``ordered`` changes nothing).
    base = {**plan.optional, **pipeline.bound, **exp.shared}
    numbered = exp.numbered()
    assert isinstance(numbered, Iterator)
    batch = max(1, min(window or _BATCH, _BATCH))
    try:
        for pairs in iter_plain(
            plan, exp.names, base, numbered, pipeline.name, None, batch,
            failed and failed(exp),
        ):  # fmt: skip
            yield from pairs
    finally:
        numbered.close()  # type: ignore[attr-defined]


async def amap(
    engine: HyperNodesEngine,
    pipeline: Pipeline,
    inputs: Mapping[str, Any],
    map_over: str | Sequence[str],
    map_mode: MapMode = "zip",
    output_name: OutputName = None,
    *,
    on_error: OnError = "raise",
    _parent: Scope | None = None,
) -> list[dict[str, Any]]:
    """Run ``pipeline`` once per item; see :meth:`Pipeline.amap`."""
    failed = _collector(on_error)
    async with _mapping(engine, pipeline, inputs, map_over, map_mode, output_name, _parent) as (
        plan,
        exp,
        base,
        scope,
    ):
        if exp.count == 0:
            results: list[Any] = []
        else:
            results = await _collect(engine, pipeline, plan, exp, base, scope, failed)
    return MapResult(results) if failed else results


async def amap_iter(
    engine: HyperNodesEngine,
    pipeline: Pipeline,
    inputs: Mapping[str, Any],
    map_over: str | Sequence[str],
    map_mode: MapMode = "zip",
    output_name: OutputName = None,
    *,
    ordered: bool = False,
    window: int | None = None,
    on_error: OnError = "raise",
    _parent: Scope | None = None,
) -> AsyncGenerator[tuple[int, Any], None]:
    """``(index, result)`` pairs as items finish; see :meth:`Pipeline.amap_iter`."""
    failed = _collector(on_error)
    _check_window(window)
    async with _mapping(engine, pipeline, inputs, map_over, map_mode, output_name, _parent) as (
        plan,
        exp,
        base,
        scope,
    ):
        if exp.count != 0:
            stream = _stream(
                engine, pipeline, plan, exp, base, scope, failed,
                window=window, ordered=ordered, stagger=True,
            )  # fmt: skip
            try:
                async for pair in stream:
                    yield pair
            finally:
                await stream.aclose()


@contextlib.asynccontextmanager
async def _mapping(
    engine: HyperNodesEngine,
    pipeline: Pipeline,
    inputs: Mapping[str, Any],
    map_over: str | Sequence[str],
    map_mode: MapMode,
    output_name: OutputName,
    parent: Scope | None,
) -> AsyncIterator[tuple[Plan, Expansion, dict[str, Any], Scope]]:
    """A map's plan, items, shared values and scope, inside its map events; a failure
    or cancel ends the run (see ``ended``)."""
    if engine._lanes is None:
        await engine._start_lanes()
    exp = expand(inputs, map_over, map_mode, pipeline=pipeline)
    held = handles_in(exp.shared) if parent is not None else frozenset()
    plan = pipeline.plan(output_name, (*exp.shared, *exp.names), held)
    base = {**plan.optional, **pipeline.bound, **exp.shared}
    cache, dispatcher, context = engine._resolve(pipeline, parent, "map")
    scope = engine._scope(pipeline, parent, cache, dispatcher, context)
    if plan.resources:
        prime_handles(plan, base, scope.resources)  # (their versions, for remote items)
    if cache is not None:
        cache.prime(base, list(base))  # shared inputs: fingerprinted once, not per item
    error: BaseException | None = None
    try:
        if dispatcher is None:
            yield plan, exp, base, scope
        else:
            with map_events(dispatcher, context, pipeline, exp.count, exp.names):
                yield plan, exp, base, scope
    except BaseException as exc:
        error = exc
        ended(scope, parent, exc)
        raise
    finally:
        if parent is None:
            await scope.resources.aclose(error)  # the map's resources end with it


def _item_scope(engine: HyperNodesEngine, plan: Plan, scope: Scope) -> tuple[Scope, int]:
    """The scope of a map's items and how many run at once."""
    lane = engine.lanes[1]
    if lane.kind == "sequential" or (scope.inline and holds(lane.executor)):
        return scope, 1
    width = lane.width
    _, inline, body = engine._placement(scope, items=True)
    changes: dict[str, Any] = {"inline": inline, "body": body}
    if plan.waits:
        # Items waiting for a limit or a backoff hold nothing: more of them may be in
        # flight than the lane is wide, and the lane's width bounds the attempts
        # instead (a slot per attempt, given back while waiting).
        changes["limiter"] = scope.limiter or Limiter(width)
        width = max(4 * width, 32)
    return scope.derive(**changes), width


def _remote(engine: HyperNodesEngine, plan: Plan, exp: Expansion) -> Lane | None:
    """The map executor's lane when items are shipped whole to it (never for a plan
    with a Limit: this process grants its attempts, shipping each body instead)."""
    lane = engine.lanes[1]
    return lane if lane.kind == "remote" and not plan.limited else None


async def _collect(
    engine: HyperNodesEngine,
    pipeline: Pipeline,
    plan: Plan,
    exp: Expansion,
    base: dict[str, Any],
    scope: Scope,
    failed: Callable[[Expansion], Failed] | None,
) -> list[Any]:
    """A map's results in item order: for sized inputs, the batch forms of its plain,
    shipped and loop-side strategies; else the stream collected."""
    sized = exp.count is not None and not exp.is_async
    lane = _remote(engine, plan, exp)
    if lane is not None and sized and failed is None:
        return await map_remote(pipeline, plan, exp, base, scope, lane)
    if lane is None and sized:
        collect = failed and failed(exp)
        item_scope, width = _item_scope(engine, plan, scope)
        if plan.simple and item_scope.plain and not item_scope.concurrent:
            return await map_plain(plan, exp, base, item_scope, width, collect)
        numbered = exp.numbered()
        assert isinstance(numbered, Iterator) and exp.count is not None
        numbered, ready = _read_ahead(plan, exp, base, item_scope, width, numbered)
        run_one = _run_one(plan, exp, base, scope, item_scope, collect, ready)
        return await collect_items(
            numbered, exp.count, width, run_one, halt=scope.halt, collect=collect
        )
    stream = _stream(engine, pipeline, plan, exp, base, scope, failed)
    results: list[Any] = [None] * exp.count if exp.count is not None else []
    async for index, result in stream:
        if index >= len(results):
            results.extend([None] * (index + 1 - len(results)))
        results[index] = result
    return results


def _stream(
    engine: HyperNodesEngine,
    pipeline: Pipeline,
    plan: Plan,
    exp: Expansion,
    base: dict[str, Any],
    scope: Scope,
    failed: Callable[[Expansion], Failed] | None,
    *,
    window: int | None = None,
    ordered: bool = False,
    stagger: bool = False,
) -> AsyncGenerator[tuple[int, Any], None]:
    """A map's ``(index, result)`` pairs as items finish."""
    collect = failed(exp) if failed is not None else None
    lane = _remote(engine, plan, exp)
    if lane is not None:
        return stream_remote(
            pipeline, plan, exp, base, scope, lane, collect=collect, window=window,
            ordered=ordered,
        )  # fmt: skip
    item_scope, width = _item_scope(engine, plan, scope)
    window = window or 2 * width
    if plan.simple and item_scope.plain and not item_scope.concurrent and not exp.is_async:
        # (Plain items come back in input order: ``ordered`` changes nothing.)
        return stream_plain(plan, exp, base, item_scope, width, failed=collect, window=window)
    numbered, ready = _read_ahead(plan, exp, base, item_scope, width, exp.numbered())
    run_one = _run_one(plan, exp, base, scope, item_scope, collect, ready)
    return stream_items(
        numbered, width, run_one, halt=scope.halt, collect=collect, window=window,
        ordered=ordered, stagger=stagger,
    )  # fmt: skip


def _run_one(
    plan: Plan,
    exp: Expansion,
    base: dict[str, Any],
    scope: Scope,
    item_scope: Scope,
    collect: Failed | None,
    ready: dict[int, dict[str, Any]] | None = None,
) -> Callable[[int, tuple[Any, ...]], Awaitable[dict[str, Any]]]:
    """How one of a map's items runs on the loop (per-item events included): the one
    place a map's items are run on the loop, collected whole or streamed. ``ready``:
    items' values made ahead (see ``_read_ahead``), by index."""
    names = exp.names
    d = scope.callbacks
    context = scope.context

    async def run_one(index: int, item: tuple[Any, ...]) -> dict[str, Any]:
        values = ready.pop(index, None) if ready is not None else None
        if values is None:
            values = base.copy()
            values.update(zip(names, item, strict=True))
        level = item_scope
        if collect is not None:  # a failed item ends itself, not the map
            level = level.derive(halt=item_halt(scope.halt))
        if d is None or context is None:
            await run_plan(plan, values, level)
            return plan.collect(values)
        ctx = context.child("item", context.pipeline, index=index)
        with item_events(d, ctx, index) as done:
            await run_plan(plan, values, level.derive(context=ctx))
            done["outputs"] = plan.collect(values)
        return done["outputs"]  # type: ignore[no-any-return]

    return run_one


_BATCH = 512
"""Items per batch of the loop-free plain map stream."""
_AHEAD = 64
"""Items whose cache lookups are read ahead at once (see ``_read_ahead``)."""
_AHEAD_SKIPS = 16
"""Batches of items at most left to their own lookups after read-aheads found nothing
(1, 2, 4, ... after each such read-ahead in a row): a cold map pays for few of them."""


def _read_ahead(
    plan: Plan,
    exp: Expansion,
    base: dict[str, Any],
    item_scope: Scope,
    width: int,
    numbered: Iterator[tuple[int, tuple[Any, ...]]] | AsyncIterator[tuple[int, tuple[Any, ...]]],
) -> tuple[Any, dict[int, dict[str, Any]] | None]:
    """The items of a map, read :data:`_AHEAD` at a time with their cache lookups done
    ahead in a few batched reads (``CacheRuntime.read_ahead``), when they run one after
    the other in this thread (sequential, inline, plain sync steps) through a store that
    reads many entries at once; else the items as they are. Also the values made ahead,
    by index, for ``run_one`` (``None``: none are)."""
    cache = item_scope.cache
    if (
        cache is None
        or not cache.reads_ahead
        or width != 1
        or not item_scope.inline
        or not plan.simple
        or not isinstance(numbered, Iterator)
    ):
        return numbered, None
    ready: dict[int, dict[str, Any]] = {}
    names = exp.names

    def items() -> Iterator[tuple[int, tuple[Any, ...]]]:
        skip = wait = 0
        try:
            while batch := list(itertools.islice(numbered, _AHEAD)):
                if skip:  # (after batches that found nothing: their items look up alone)
                    skip -= 1
                    yield from batch
                    continue
                rows = []
                for index, item in batch:
                    values = ready[index] = base.copy()
                    values.update(zip(names, item, strict=True))
                    rows.append(values)
                if cache.read_ahead(plan.steps, rows):
                    wait = 0
                else:  # a cold stretch: read ahead ever less often, back at the next hit
                    skip = wait = min(2 * wait or 1, _AHEAD_SKIPS)
                yield from batch
        finally:
            cache.forget_ahead()
            ready.clear()
            close = getattr(numbered, "close", None)
            if close is not None:
                close()

    return items(), ready


def _collector(on_error: object) -> Callable[[Expansion], Failed] | None:
    """For ``on_error="collect"``: makes, per map, what turns a failed item into its
    ``ItemFailure``; ``None`` for ``"raise"``.

    Raises:
        InvalidInputError: ``on_error`` is neither.
    """
    if not check_on_error(on_error):
        return None

    def per_map(exp: Expansion) -> Failed:
        def failed(index: int, item: tuple[Any, ...], error: NodeError) -> ItemFailure:
            return ItemFailure(index, exp.mapped(item), error)

        return failed

    return per_map


def _check_window(window: object) -> None:
    if window is not None and (
        not isinstance(window, int) or isinstance(window, bool) or window < 1
    ):
        raise InvalidInputError(f"window must be an int >= 1 or None, got {window!r}")


def ended(scope: Scope, parent: Scope | None, error: BaseException) -> None:
    """A top-level run failed or was cancelled: nothing of it starts any more, and what it
    left running in its workers is reported (a warning, and a note on its ``NodeError``).

    A nested level leaves the halt to the level that failed (``run_plan``, ``run_items``):
    its tasks wait for the cancellation that a failure brings to all of them, which a
    cancellation inside one level (a child task ending as cancelled) does not.
    """
    if parent is not None:
        return
    halt = scope.halt
    halt.set()
    report = halt.report()
    if report is not None:
        logger.warning("run of pipeline %r %s", scope.pipeline, report)
        if isinstance(error, NodeError):
            error.add_note(report[:1].upper() + report[1:])
