"""Map items shipped whole to remote executors (process pools, Dask, Ray, loky, ...).

The pipeline and the shared inputs are cloudpickled once per map; each item sends only
its own values. Caching and callbacks stay with the orchestrator, as on local executors:

- before shipping an item, its node keys are computed here (keys need versions, not
  values) and the cache is read; only the nodes that missed are run remotely, with the
  cached values passed in as overrides;
- the worker records its node events (``Recorder``) and returns every value it produced;
  here the results are written to the cache under the keys computed before, and the
  events are replayed on the loop thread with the item's callback contexts.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from ..callbacks import CallbackContext, Dispatcher
from ..errors import NodeError
from ..executors.remote import Parcel, RemoteFailure, Shipped
from ..items import stream_items
from ..mapping import Expansion
from ..nested import PipelineNode
from .base import item_events
from .chunks import lost_in, map_chunks
from .recording import Level, Marker, Record, Recorder
from .worker import run_shipped_item

if TYPE_CHECKING:
    from ..executors.workers import Lane
    from ..node import Node
    from ..pipeline import Pipeline
    from ..scheduler import Plan, Scope, Step

__all__ = ["Marker", "Recorder", "map_remote", "replay", "stream_remote"]


def replay(
    records: Sequence[Record],
    dispatcher: Dispatcher | None,
    item: CallbackContext,
    pipeline: Pipeline,
    values: dict[Any, Any],
) -> None:
    """Emit a worker's recorded events under the item's context, on this thread.

    Each level's events go to that level's dispatcher: ``dispatcher`` for the item's own
    level, composed with a nested pipeline's own callbacks below it (as in a local run).
    Events of the item's own nodes get their inputs and outputs back from ``values``
    (the orchestrator has them); deeper levels' come with empty dicts.
    """
    levels: dict[tuple[Level, ...], _Replayed] = {(): _Replayed(item, pipeline, dispatcher)}
    for hook, path, fields in records:
        context, where, d = _level(path, levels)
        if d is None:
            continue
        event = dict(fields)
        if "node" in event:
            owner = levels[path[:-1]].pipeline if hook.startswith("on_nested") and path else where
            event["node"] = _node_named(owner, event["node"])
        if "pipeline" in event:
            event["pipeline"] = where
        node = event.get("node")
        if not path and node is not None and not isinstance(node, str):
            for field, names in (("inputs", node.inputs), ("outputs", node.outputs)):
                if field in event:
                    event[field] = {n: values[n] for n in names if n in values}
        d.emit(getattr(d, hook), context=context, **event)


class _Replayed(NamedTuple):
    """One level of a replayed sub-run: its context, pipeline and dispatcher."""

    context: CallbackContext
    pipeline: Pipeline
    dispatcher: Dispatcher | None


def _level(path: tuple[Level, ...], levels: dict[tuple[Level, ...], _Replayed]) -> _Replayed:
    found = levels.get(path)
    if found is not None:
        return found
    parent = _level(path[:-1], levels)
    kind, name, node, index = path[-1]
    inner, d = parent.pipeline, parent.dispatcher
    if node is not None and kind in ("nested", "map"):
        via = _node_named(parent.pipeline, node)
        if isinstance(via, PipelineNode):
            inner, d = via.pipeline, via.callbacks_for(d)
    context = parent.context.child(kind, name, node=node, index=index)  # type: ignore[arg-type]
    found = levels[path] = _Replayed(context, inner, d)
    return found


def _node_named(pipeline: Pipeline, name: str) -> Node | str:
    for node in pipeline.nodes:
        if node.name == name:
            return node
    return name


def _steps_to_run(plan: Plan, hits: dict[int, Any]) -> list[int]:
    """Indices of the steps that must run for the plan's outputs, given cache hits."""
    needed = set(plan.outputs)
    run: list[int] = []
    for k in range(len(plan.steps) - 1, -1, -1):
        step = plan.steps[k]
        if not needed.intersection(step.outputs):
            continue
        if k in hits:
            continue
        run.append(k)
        needed.update(step.node.inputs)
    run.reverse()
    return run


async def _cached(
    scope: Scope, plan: Plan, values: dict[Any, Any]
) -> tuple[dict[int, str], dict[int, Any]]:
    cache = scope.cache
    keys: dict[int, str] = {}
    hits: dict[int, Any] = {}
    if cache is None:
        return keys, hits
    for k, step in enumerate(plan.steps):
        # (A step with supplied outputs is not cached here: what comes back for it is
        # partly the caller's values, not the node's result.)
        if not step.node.cache or step.nested is not None or step.keep:
            continue
        key = cache.key(step, values, missing_ok=True)
        if key is None:
            continue
        keys[k] = key
        hit = await cache.lookup_key(key)
        if hit is not None:
            hits[k] = hit[0]
    return keys, hits


async def map_remote(
    pipeline: Pipeline,
    plan: Plan,
    exp: Expansion,
    base: dict[Any, Any],
    scope: Scope,
    lane: Lane,
) -> list[dict[str, Any]]:
    """Run a map's items on a remote lane (in chunks when nothing happens between
    items here, see ``chunks``; else one task per item); results in item order."""
    if scope.plain:  # nothing to do here between items: many go in one task
        async with _shared(pipeline, exp, lane) as bundle:
            return await map_chunks(pipeline, plan, exp, scope, lane, bundle)
    results: list[Any] = [None] * exp.count if exp.count is not None else []
    async for index, result in stream_remote(pipeline, plan, exp, base, scope, lane):
        results[index] = result
    return results


async def stream_remote(
    pipeline: Pipeline,
    plan: Plan,
    exp: Expansion,
    base: dict[Any, Any],
    scope: Scope,
    lane: Lane,
    *,
    collect: Callable[[int, Any, NodeError], Any] | None = None,
    window: int | None = None,
    ordered: bool = False,
) -> AsyncGenerator[tuple[int, Any], None]:
    """A map's items, one task each, on a remote lane: ``(index, result)`` as they finish.
    Items are read and shipped only as the window opens (see ``items.stream_items``)."""
    async with _shared(pipeline, exp, lane) as bundle:
        stream = _stream_shipped(
            pipeline, plan, exp, base, scope, lane, bundle, collect, window, ordered
        )
        try:
            async for pair in stream:
                yield pair
        finally:
            await stream.aclose()


@contextlib.asynccontextmanager
async def _shared(pipeline: Pipeline, exp: Expansion, lane: Lane) -> AsyncIterator[Any]:
    """The map's ``(pipeline, shared inputs)`` bundle as its items carry it."""
    executor = lane.executor
    assert executor is not None
    bundle: Any = Shipped((pipeline.stripped(), exp.shared))
    # Executors that can place data on their workers once (Dask's scatter, Ray's object
    # store, a local file for our process pool) say so; those whose placements end with
    # the map (``hypernodes_release``) get them back when it ends, however it ends.
    share = getattr(executor, "hypernodes_share", None)
    if not callable(share):
        yield bundle
        return
    handle = share(bundle)
    try:
        yield handle
    finally:
        release = getattr(executor, "hypernodes_release", None)
        if callable(release):
            release(handle)


def _stream_shipped(
    pipeline: Pipeline,
    plan: Plan,
    exp: Expansion,
    base: dict[Any, Any],
    scope: Scope,
    lane: Lane,
    bundle: Any,
    collect: Callable[[int, Any, NodeError], Any] | None,
    window: int | None,
    ordered: bool,
) -> AsyncGenerator[tuple[int, Any], None]:
    names = exp.names
    steps = plan.steps
    d = scope.callbacks
    observe = d is not None

    async def ship(
        provided: dict[str, Any], wanted: tuple[str, ...], running: Sequence[Step]
    ) -> Any:
        try:
            parcel = await lane.ship(
                run_shipped_item,
                bundle,
                Parcel(provided),
                wanted,
                observe,
                halt=scope.halt,
                budget=scope.budget,
                label=f"{pipeline.name}[{' -> '.join(s.name for s in running)}]",
            )
        except Exception as exc:  # the item never came back: its worker died, or transport
            error = lost_in(exc, pipeline, running)
            raise error from error.__cause__
        return parcel.value

    async def run_observed(index: int, item: tuple[Any, ...]) -> dict[str, Any]:
        mapped = dict(zip(names, item, strict=True))
        values = base.copy()
        values.update(mapped)
        context = scope.context
        ctx = context.child("item", context.pipeline, index=index) if context else None
        with item_events(d, ctx, index) as done:
            await _run_item(values, mapped, ctx)
            done["outputs"] = plan.collect(values)
        return done["outputs"]  # type: ignore[no-any-return]

    async def _run_item(
        values: dict[Any, Any], mapped: dict[str, Any], ctx: CallbackContext | None
    ) -> None:
        keys, hits = await _cached(scope, plan, values)
        to_run = _steps_to_run(plan, hits)
        for k, hit in hits.items():
            step = steps[k]
            step.store(hit, values)
            if d is not None and d.on_node_cached:
                outs = {n: values[n] for n in step.outputs}
                d.emit(d.on_node_cached, context=ctx, node=step.node, outputs=outs)
        if not to_run:
            return
        running = [steps[k] for k in to_run]
        produced = {o for s in running for o in s.outputs}
        cached = {o for k in hits for o in steps[k].outputs}
        provided = dict(mapped)  # plus the cached values the remote nodes read
        for s in running:
            for name in s.node.inputs:
                if name in cached:
                    provided[name] = values[name]
        wanted = tuple(dict.fromkeys([*produced, *(o for o in plan.outputs if o not in values)]))
        result = await ship(provided, wanted, running)
        if type(result) is RemoteFailure:
            if d is not None and ctx is not None and result.records:
                replay(result.records, d, ctx, pipeline, values)
            result.reraise()
        outputs, records = result if observe else (result, ())
        values.update(outputs)
        if d is not None and ctx is not None:
            replay(records, d, ctx, pipeline, values)
        cache = scope.cache
        if cache is not None:
            for k in to_run:
                if k in keys:
                    await cache.save(steps[k], keys[k], _packed(steps[k], values), values, scope)

    width = 2 * lane.width
    return stream_items(
        exp.numbered(), width, run_observed, halt=scope.halt, collect=collect,
        window=window or 2 * width, ordered=ordered,
    )  # fmt: skip


def _packed(step: Step, values: dict[Any, Any]) -> Any:
    """A step's result as the node returned it (a tuple for tuple outputs)."""
    if step.out is not None:
        return values[step.out]
    return tuple(values[name] for name in step.outputs)
