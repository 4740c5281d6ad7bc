"""Events: a step's ``on_node_start`` / ``on_node_end`` / ``on_node_error`` /
``on_node_cached``, around its attempts (a retried node starts and ends once; each retry
is an ``on_node_retry``, see ``retry.py``; each chunk of a streaming node an
``on_node_chunk``, see ``stream.py``)."""

from __future__ import annotations

from time import perf_counter
from typing import TYPE_CHECKING, Any

from ..errors import NodeError
from .place import place
from .stream import emit_chunks

if TYPE_CHECKING:
    from ..callbacks import Dispatcher
    from ..level import Scope
    from ..plan import Step

__all__ = ["attempt", "emit_cached", "emit_end", "emit_error", "emit_start", "observed"]


async def attempt(step: Step, args: tuple[Any, ...], scope: Scope, slot: Any) -> Any:
    """The step's per-attempt layers, their failure turned into the step's ``NodeError``.

    Raises:
        NodeError: The node failed (after its retries).
    """
    chain = step.attempt
    try:
        if chain is not None:
            return await chain(step, args, scope, slot)
        if slot is None:
            return await place(step, args, scope)
        async with slot:
            return await place(step, args, scope)
    except Exception as exc:
        from .chain import failed  # (chain imports the layers; this module is one of them)

        error = failed(step.name, exc)
        raise error from error.__cause__


async def observed(
    step: Step, args: tuple[Any, ...], values: dict[str, Any], scope: Scope, slot: Any
) -> Any:
    """Run the step's attempts with its events; store and return the result.

    Raises:
        NodeError: The node failed (or returned the wrong number of outputs).
    """
    d = scope.callbacks
    if d is None:
        result = await attempt(step, args, scope, slot)
        step.store(result, values)
        return result
    started = emit_start(d, scope, step, args)
    try:
        result = await attempt(step, args, scope, slot)
        step.store(result, values)
    except NodeError as err:
        emit_error(d, scope, step, err, started)
        raise
    emit_end(d, scope, step, values, started)
    return result


def emit_cached(scope: Scope, step: Step, values: dict[str, Any]) -> None:
    d = scope.callbacks
    if d is None:
        return
    if step.node.is_stream and d.on_node_chunk:
        # A hit of a streaming node emits its cached chunks at once (the same events a
        # client of ``astream`` sees when it runs), then the hit itself.
        emit_chunks(d, scope.context, step.node, values[step.outputs[0]])
    if d.on_node_cached:
        outputs = {n: values[n] for n in step.outputs}
        d.emit(d.on_node_cached, context=scope.context, node=step.node, outputs=outputs)


def emit_start(
    d: Dispatcher,
    scope: Scope,
    step: Step,
    args: tuple[Any, ...] | None,
    values: dict[str, Any] | None = None,
) -> float:
    if d.on_node_start:
        if args is None:
            assert values is not None
            args = step.gather(values)
        inputs = dict(zip(step.node.inputs, args, strict=True))
        d.emit(d.on_node_start, context=scope.context, node=step.node, inputs=inputs)
    return perf_counter()


def emit_end(
    d: Dispatcher, scope: Scope, step: Step, values: dict[str, Any], started: float
) -> None:
    if d.on_node_end:
        outputs = {n: values[n] for n in step.outputs}
        duration = perf_counter() - started
        d.emit(
            d.on_node_end, context=scope.context, node=step.node, outputs=outputs, duration=duration
        )


def emit_error(d: Dispatcher, scope: Scope, step: Step, err: NodeError, started: float) -> None:
    if d.on_node_error:
        error = err.__cause__ or err
        duration = perf_counter() - started
        d.emit(
            d.on_node_error, context=scope.context, node=step.node, error=error, duration=duration
        )
