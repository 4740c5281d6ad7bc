"""Reading DaftEngine's rows back: results, failures as ``NodeError``s, replayed events.

Daft runs the whole plan as one job, so node events (a streaming node's chunks too)
cannot be emitted while nodes run; they are replayed here, on the event loop thread, as
each partition of results arrives: per row, in the program's order, with the inputs,
outputs and duration each call had.
"""

from __future__ import annotations

from typing import Any, Literal

from ...callbacks import CallbackContext, Dispatcher
from ...errors import NodeError, PathFrame
from ...layers.stream import emit_chunks
from .calls import SKIP, Failure, Hit
from .program import Column, Level, Op, Program, Source, nested_callbacks

__all__ = ["failure_of", "node_error", "replay_row", "result_of"]


def value_of(source: Source, row: dict[str, Any]) -> Any:
    """The value of ``source`` in ``row``."""
    return row[source.name] if isinstance(source, Column) else source.value


def result_of(program: Program, row: dict[str, Any]) -> dict[str, Any]:
    """The result dict of one row."""
    return {name: value_of(source, row) for name, source in program.outputs.items()}


def failure_of(program: Program, row: dict[str, Any]) -> tuple[Op, Failure] | None:
    """The first op (in program order) that failed in ``row``, with its failure."""
    first: Failure | None = None
    for value in row.values():
        if type(value) is Failure and (first is None or value.op < first.op):
            first = value
    return None if first is None else (program.ops[first.op], first)


def node_error(op: Op, failure: Failure, index: int | None) -> NodeError:
    """The ``NodeError`` for ``failure``: the node, the path down to it, the item index,
    and the user's exception as ``__cause__``."""
    frames = [
        PathFrame(level.pipeline.name, level.via.name if level.via is not None else None)
        for level in op.level.path
    ]
    if index is not None:
        frames[0] = PathFrame(frames[0].pipeline, None, index)
    error = failure.error
    if op.nested and isinstance(error, NodeError):
        inner = error.frames
        if inner:
            inner = (PathFrame(inner[0].pipeline, op.node.name, inner[0].item), *inner[1:])
        error.frames = (*frames, *inner)
        return error
    attempts = len(getattr(failure.duration, "retries", ())) + 1
    err = NodeError(
        op.node.name,
        frames,
        detail=failure.detail,
        abandoned=failure.abandoned,
        attempts=attempts,
    )
    err.__cause__ = error
    return err


def user_error(error: BaseException | None, fallback: BaseException) -> BaseException:
    """What callbacks report: the user's exception behind a ``NodeError``."""
    if isinstance(error, NodeError) and error.__cause__ is not None:
        return error.__cause__
    return error if error is not None else fallback


def replay_row(
    program: Program,
    row: dict[str, Any],
    context: CallbackContext,
    timings: dict[int, str],
    status: dict[int, Any],
) -> Failure | None:
    """Emit the node (and inlined nested pipeline) events of one row under ``context``.

    ``status`` holds, per top-level step, ``Hit``/``SKIP`` from the cache. Returns the
    failure that stopped the row, after emitting its error events.
    """
    open_levels: list[tuple[Level, CallbackContext, float]] = []
    found = failure_of(program, row)
    stop = found[0].index if found is not None else len(program.ops)
    failure = found[1] if found is not None else None
    contexts: dict[int, CallbackContext] = {id(program.top): context}
    for op in program.ops[: stop + 1]:
        _enter(op.level, open_levels, contexts)
        ctx = contexts[id(op.level)]
        state = status.get(op.step)
        if state is SKIP:
            continue
        failed = failure if failure is not None and op.index == stop else None
        duration = (
            failed.duration if failed is not None else row.get(timings.get(op.index, ""), 0.0)
        )
        open_levels[:] = [(lv, c, spent + duration) for lv, c, spent in open_levels]
        if op.nested:
            _nested_events(op, row, ctx, op.level.callbacks, state, failed, duration)
        else:
            _node_events(op, row, ctx, op.level.callbacks, state, failed, duration)
    error = user_error(failure.error, NodeError("?")) if failure is not None else None
    while open_levels:
        level, ctx, spent = open_levels.pop()
        _leave(level, ctx, spent, error)
    return failure


def _enter(
    level: Level,
    open_levels: list[tuple[Level, CallbackContext, float]],
    contexts: dict[int, CallbackContext],
) -> None:
    # Close the inlined levels this op is not in, then open the ones it is in.
    path = level.path[1:]
    while open_levels and open_levels[-1][0] not in path:
        done, ctx, spent = open_levels.pop()
        _leave(done, ctx, spent, None)
    for inner in path:
        if any(inner is entry[0] for entry in open_levels):
            continue
        assert inner.parent is not None and inner.via is not None
        parent = contexts[id(inner.parent)]
        ctx = parent.child("nested", inner.pipeline.name, node=inner.via.name)
        contexts[id(inner)] = ctx
        open_levels.append((inner, ctx, 0.0))
        d = inner.callbacks
        if d is not None and d.on_nested_pipeline_start:
            d.emit(d.on_nested_pipeline_start, context=ctx, node=inner.via, pipeline=inner.pipeline)


def _leave(level: Level, ctx: CallbackContext, spent: float, error: BaseException | None) -> None:
    d = level.callbacks
    if d is not None and d.on_nested_pipeline_end:
        d.emit(
            d.on_nested_pipeline_end,
            context=ctx,
            node=level.via,
            pipeline=level.pipeline,
            duration=spent,
            error=error,
        )


def _outputs(op: Op, row: dict[str, Any]) -> dict[str, Any]:
    return {name: row[col] for name, col in zip(op.node.outputs, op.outs, strict=True)}


def _node_events(
    op: Op,
    row: dict[str, Any],
    ctx: CallbackContext,
    d: Dispatcher | None,
    state: Any,
    failed: Failure | None,
    duration: float,
) -> None:
    if d is None:
        return
    node = op.node
    if type(state) is Hit:
        if node.is_stream and d.on_node_chunk:
            emit_chunks(d, ctx, node, _outputs(op, row)[node.outputs[0]])
        if d.on_node_cached:
            d.emit(d.on_node_cached, context=ctx, node=node, outputs=_outputs(op, row))
        return
    if d.on_node_start:
        inputs = {n: value_of(s, row) for n, s in zip(node.inputs, op.args, strict=True)}
        d.emit(d.on_node_start, context=ctx, node=node, inputs=inputs)
    if d.on_node_retry:  # (the retries the call made, carried on its duration)
        for attempt, error, delay in getattr(duration, "retries", ()):
            d.emit(
                d.on_node_retry, context=ctx, node=node, attempt=attempt, error=error, delay=delay
            )
    if failed is not None:
        if d.on_node_error:
            error = user_error(failed.error, node_error(op, failed, None))
            d.emit(d.on_node_error, context=ctx, node=node, error=error, duration=duration)
        return
    if node.is_stream and d.on_node_chunk:  # (not live: Daft hands rows back at the end)
        emit_chunks(d, ctx, node, _outputs(op, row)[node.outputs[0]])
    if d.on_node_end:
        outputs = _outputs(op, row)
        d.emit(d.on_node_end, context=ctx, node=node, outputs=outputs, duration=duration)


def _nested_events(
    op: Op,
    row: dict[str, Any],
    ctx: CallbackContext,
    outer: Dispatcher | None,
    state: Any,
    failed: Failure | None,
    duration: float,
) -> None:
    node: Any = op.node
    if type(state) is Hit:
        if outer is not None and outer.on_node_cached:
            outputs = _outputs(op, row)
            outer.emit(outer.on_node_cached, context=ctx, node=node, outputs=outputs)
        return
    d = nested_callbacks(node, outer)
    if d is None:
        return
    kind: Literal["map", "nested"] = "map" if node.map_over else "nested"
    inner_ctx = ctx.child(kind, node.pipeline.name, node=node.name)
    if d.on_nested_pipeline_start:
        d.emit(d.on_nested_pipeline_start, context=inner_ctx, node=node, pipeline=node.pipeline)
    records = failed.records if failed is not None else row.get(f"__hn_ev{op.index}")
    if records:
        from ..shipping import replay  # deferred: the map machinery

        replay(records, d, inner_ctx, node.pipeline, {})
    if d.on_nested_pipeline_end:
        error = user_error(failed.error, NodeError(node.name)) if failed is not None else None
        d.emit(
            d.on_nested_pipeline_end,
            context=inner_ctx,
            node=node,
            pipeline=node.pipeline,
            duration=duration,
            error=error,
        )
