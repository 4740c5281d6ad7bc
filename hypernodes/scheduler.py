"""The eager scheduler: compiled plans, and the only code that awaits or calls nodes.

A ``Plan`` is compiled once per (requested outputs, provided names) and reused by every
run and map item. Running it:

- sequentially (the default): nodes in a deterministic topological order, one at a time.
  Consecutive plain sync nodes form one segment that runs in a single call: inline on a
  loop HyperNodes owns, or as one hop to a worker thread on a loop the user owns;
- concurrently: dependency counters; when a node finishes, the children it made ready
  start at once (the first continues in the same task, the rest in new tasks). No polling,
  no level-by-level waves.

The first failure cancels the rest and surfaces as one ``NodeError``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from operator import itemgetter
from time import perf_counter
from typing import TYPE_CHECKING, Any, Protocol

from .callbacks import CallbackContext, Dispatcher
from .errors import NodeError, PathFrame
from .executors.remote import Shipped
from .executors.workers import Lane
from .graph import Graph, Selection

if TYPE_CHECKING:
    from .node import Node

__all__ = [
    "Plan",
    "Scope",
    "Step",
    "compile_plan",
    "raise_first",
    "run_plan",
    "run_plan_sync",
    "run_sync_steps",
]

logger = logging.getLogger("hypernodes")


class NestedRunner(Protocol):
    """What the scheduler needs from a node that runs a whole pipeline (``PipelineNode``)."""

    def cache_for(self, scope: Scope) -> Any: ...

    async def run_nested(self, args: tuple[Any, ...], scope: Scope) -> tuple[Any, ...]: ...


class Step:
    """One node of a plan, with everything the hot loop needs precomputed."""

    __slots__ = (
        "_shipped",
        "call",
        "children",
        "fn",
        "gather",
        "is_async",
        "n_parents",
        "name",
        "nested",
        "node",
        "out",
        "outputs",
        "simple",
    )

    def __init__(self, node: Node, names: Sequence[str]) -> None:
        self.node = node
        self.name = node.name
        self.fn = _positional(node)
        self.outputs = node.outputs
        self.out = node.outputs[0] if isinstance(node.output_name, str) else None
        self.is_async = node.is_async
        self.nested: NestedRunner | None = node if hasattr(node, "run_nested") else None  # type: ignore[assignment]
        self.simple = (
            not self.is_async and self.nested is None and not node.retries and not node.timeout
        )
        self.gather = _gatherer(names)
        self.call = _caller(self.fn, names)
        self.children: tuple[int, ...] = ()
        self.n_parents = 0
        self._shipped: Shipped | None = None

    @property
    def shipped(self) -> Shipped:
        """The node's callable, cloudpickled once for remote executors."""
        if self._shipped is None:
            self._shipped = Shipped(self.fn)
        return self._shipped

    def store(self, result: Any, values: dict[str, Any]) -> None:
        """Put a node's return value into ``values`` (unpacking tuple outputs)."""
        if self.out is not None:
            values[self.out] = result
            return
        outs = self.outputs
        try:
            parts = tuple(result)
        except TypeError:
            parts = None
        if parts is None or len(parts) != len(outs):
            got = f"{len(parts)} values" if parts is not None else type(result).__name__
            raise NodeError(
                self.name,
                detail=f"declares {len(outs)} outputs {outs!r} but returned {got}; return a "
                f"tuple of {len(outs)} values",
            )
        values.update(zip(outs, parts, strict=True))


def _positional(node: Node) -> Callable[..., Any]:
    """The node's callable, taking every input positionally (keyword-only ones included)."""
    fn = node.func
    kw = node.call_keyword
    if not kw:
        return fn
    n = len(node.call_positional)

    def call(*args: Any) -> Any:
        return fn(*args[:n], **dict(zip(kw, args[n:], strict=True)))

    call.__name__ = getattr(fn, "__name__", node.name)
    call.__wrapped__ = fn  # type: ignore[attr-defined]
    return call


def _gatherer(names: Sequence[str]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    if not names:
        return lambda values: ()
    if len(names) == 1:
        (only,) = names
        return lambda values: (values[only],)
    return itemgetter(*names)  # type: ignore[return-value]


def _caller(fn: Callable[..., Any], names: Sequence[str]) -> Callable[[dict[str, Any]], Any]:
    # Specialised for the common arities: this is the innermost loop of every run.
    if not names:
        return lambda v: fn()
    if len(names) == 1:
        (a,) = names
        return lambda v: fn(v[a])
    if len(names) == 2:
        a, b = names
        return lambda v: fn(v[a], v[b])
    if len(names) == 3:
        a, b, c = names
        return lambda v: fn(v[a], v[b], v[c])
    get = itemgetter(*names)
    return lambda v: fn(*get(v))


class Plan:
    """What to run for some outputs given some provided names, compiled once.

    Attributes:
        steps: The nodes to run, in topological order.
        outputs: The names returned to the caller.
        optional: Defaults for optional inputs that were not provided.
        segments: For sequential runs: ``(True, steps)`` for a run of plain sync steps,
            ``(False, (step,))`` for any other step.
        roots: Indices of steps whose inputs are all provided.
        simple: Whether every step is a plain sync call (no async, retries, timeout,
            nesting), so a whole run can be one synchronous call.
    """

    __slots__ = ("optional", "outputs", "roots", "segments", "simple", "steps")

    def __init__(self, graph: Graph, selection: Selection, outputs: tuple[str, ...]) -> None:
        nodes = graph.nodes
        position = {idx: k for k, idx in enumerate(selection.order)}
        steps = [Step(nodes[i], nodes[i].inputs) for i in selection.order]
        children: list[list[int]] = [[] for _ in steps]
        for k, i in enumerate(selection.order):
            parents = {position[p] for p in graph.parents(i) if p in position}
            steps[k].n_parents = len(parents)
            for p in parents:
                children[p].append(k)
        for step, kids in zip(steps, children, strict=True):
            step.children = tuple(kids)
        self.steps = tuple(steps)
        self.outputs = outputs
        self.optional = selection.optional
        self.roots = tuple(k for k, s in enumerate(steps) if s.n_parents == 0)
        self.simple = all(s.simple for s in steps)
        segments: list[tuple[bool, tuple[Step, ...]]] = []
        run: list[Step] = []
        for s in steps:
            if s.simple:
                run.append(s)
                continue
            if run:
                segments.append((True, tuple(run)))
                run = []
            segments.append((False, (s,)))
        if run:
            segments.append((True, tuple(run)))
        self.segments = tuple(segments)

    def collect(self, values: dict[str, Any]) -> dict[str, Any]:
        """The result dict of one run."""
        return {name: values[name] for name in self.outputs}


def compile_plan(graph: Graph, selection: Selection, outputs: tuple[str, ...]) -> Plan:
    """Compile the steps for ``selection``; see :class:`Plan`."""
    return Plan(graph, selection, outputs)


class Scope:
    """How one level of a run executes: settings resolved once, read by every step.

    Attributes:
        pipeline: The name of the pipeline at this level (for error paths).
        concurrent: Whether independent nodes run concurrently.
        width: How many nodes may run at once when concurrent (``None``: no limit).
        body: Where sync node bodies go when they do not run inline.
        inline: Whether sync bodies may run inline (only on a loop HyperNodes owns).
        cache: The cache runtime of this level, or ``None``.
        callbacks: The dispatcher of this level, or ``None``.
        context: The callback context of this level (``None`` without callbacks).
        engine: The engine running this level (nested pipelines may inherit it).
    """

    __slots__ = (
        "body",
        "cache",
        "callbacks",
        "concurrent",
        "context",
        "engine",
        "inline",
        "pipeline",
        "plain",
        "width",
    )

    def __init__(
        self,
        *,
        engine: Any,
        pipeline: str,
        concurrent: bool,
        width: int | None,
        body: Lane,
        inline: bool,
        cache: Any = None,
        callbacks: Dispatcher | None = None,
        context: CallbackContext | None = None,
    ) -> None:
        self.engine = engine
        self.pipeline = pipeline
        self.concurrent = concurrent
        self.width = width
        self.body = body
        self.inline = inline
        self.cache = cache
        self.callbacks = callbacks
        self.context = context
        self.plain = cache is None and callbacks is None

    def derive(self, **changes: Any) -> Scope:
        """A copy with some settings changed (for map items and nested levels)."""
        fields = {k: getattr(self, k) for k in self.__slots__ if k != "plain"}
        fields.update(changes)
        return Scope(**fields)


def run_sync_steps(steps: Iterable[Step], values: dict[str, Any]) -> None:
    """Run plain sync steps in order, in the calling thread."""
    for step in steps:
        try:
            result = step.call(values)
        except Exception as exc:
            raise NodeError(step.name) from exc
        if step.out is not None:
            values[step.out] = result
        else:
            step.store(result, values)


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


async def run_plan(plan: Plan, values: dict[str, Any], scope: Scope) -> None:
    """Run ``plan`` on ``values`` (mutated in place with every output).

    Raises:
        NodeError: The first node that failed, with this level's frame on its path.
    """
    try:
        if scope.concurrent and len(plan.steps) > 1:
            await _run_concurrent(plan, values, scope)
        else:
            await _run_sequential(plan, values, scope)
    except NodeError as err:
        err._prepend(PathFrame(scope.pipeline))
        raise


async def _run_sequential(plan: Plan, values: dict[str, Any], scope: Scope) -> None:
    plain = scope.plain
    for is_run, steps in plan.segments:
        if is_run and plain:
            if scope.inline:
                run_sync_steps(steps, values)
            else:
                await scope.body.call(run_sync_steps, (steps, values))
        else:
            for step in steps:
                await run_step(step, values, scope, None)


async def _run_concurrent(plan: Plan, values: dict[str, Any], scope: Scope) -> None:
    steps = plan.steps
    pending = [s.n_parents for s in steps]
    limiter = asyncio.Semaphore(scope.width) if scope.width else None
    failures: list[BaseException] = []

    async def chain(k: int) -> None:
        # Run step k, then keep going with the first child it made ready.
        try:
            while True:
                step = steps[k]
                await run_step(step, values, scope, limiter)
                follow = -1
                for c in step.children:
                    pending[c] -= 1
                    if pending[c] == 0:
                        if follow < 0:
                            follow = c
                        else:
                            group.create_task(chain(c))
                if follow < 0:
                    return
                k = follow
        except BaseException as exc:
            failures.append(exc)
            raise

    try:
        async with asyncio.TaskGroup() as group:
            first, *rest = plan.roots
            for k in rest:
                group.create_task(chain(k))
            await chain(first)
    except BaseExceptionGroup as group_error:
        raise_first(group_error, failures)


def raise_first(group_error: BaseExceptionGroup[Any], failures: list[BaseException]) -> None:
    """Re-raise the first failure recorded in a task group as itself, not as a group."""
    for exc in failures:
        if not isinstance(exc, asyncio.CancelledError):
            raise exc
    raise group_error


async def run_step(
    step: Step, values: dict[str, Any], scope: Scope, limiter: asyncio.Semaphore | None
) -> None:
    """Run one node: cache lookup, callbacks, retries, timeout, placement, storage.

    Raises:
        NodeError: The node failed (or a nested node inside it did).
    """
    args = step.gather(values)
    if step.nested is not None:
        await _run_nested_step(step, step.nested, args, values, scope)
        return
    cache = scope.cache
    key = None
    if cache is not None and step.node.cache:
        key, hit = await cache.lookup(step, args, values, scope)
        if hit is not None:
            step.store(hit[0], values)
            d = scope.callbacks
            if d is not None and d.on_node_cached:
                outs = {n: values[n] for n in step.outputs}
                d.emit(d.on_node_cached, context=scope.context, node=step.node, outputs=outs)
            return
    d = scope.callbacks
    if d is not None and d.on_node_start:
        inputs = dict(zip(step.node.inputs, args, strict=True))
        d.emit(d.on_node_start, context=scope.context, node=step.node, inputs=inputs)
    started = perf_counter()
    try:
        if limiter is None:
            result = await _invoke(step, args, scope)
        else:
            async with limiter:
                result = await _invoke(step, args, scope)
        step.store(result, values)
    except NodeError as err:
        if d is not None and d.on_node_error:
            error = err.__cause__ or err
            d.emit(
                d.on_node_error,
                context=scope.context,
                node=step.node,
                error=error,
                duration=perf_counter() - started,
            )
        raise
    if key is not None:
        await cache.save(step, key, result, values, scope)
    if d is not None and d.on_node_end:
        outs = {n: values[n] for n in step.outputs}
        d.emit(
            d.on_node_end,
            context=scope.context,
            node=step.node,
            outputs=outs,
            duration=perf_counter() - started,
        )


async def _run_nested_step(
    step: Step, nested: NestedRunner, args: tuple[Any, ...], values: dict[str, Any], scope: Scope
) -> None:
    # Nested pipelines are coroutines on this loop and never hold a slot: only the nodes
    # inside them do, so nesting cannot exhaust a limit and deadlock. They are cached as
    # a whole (and their inner nodes one by one) by the cache their level uses.
    cache = nested.cache_for(scope)
    key = None
    if cache is not None:
        key, hit = await cache.lookup(step, args, values, scope)
        if hit is not None:
            values.update(zip(step.outputs, hit[0], strict=True))
            d = scope.callbacks
            if d is not None and d.on_node_cached:
                outs = {n: values[n] for n in step.outputs}
                d.emit(d.on_node_cached, context=scope.context, node=step.node, outputs=outs)
            return
    results = await nested.run_nested(args, scope)
    values.update(zip(step.outputs, results, strict=True))
    if key is not None and cache is not None:
        await cache.save(step, key, results, values, scope)


async def _invoke(step: Step, args: tuple[Any, ...], scope: Scope) -> Any:
    attempts = step.node.retries + 1
    for attempt in range(1, attempts + 1):
        try:
            return await _attempt(step, args, scope)
        except _Abandoned as abandoned:
            failure: BaseException = abandoned.__cause__ or abandoned
            detail: str | None = str(abandoned)
        except Exception as exc:
            failure, detail = exc, None
        if attempt < attempts:
            logger.info(
                "node %r failed (attempt %d of %d), retrying: %r",
                step.name,
                attempt,
                attempts,
                failure,
            )
            continue
        error = NodeError(step.name, detail=detail, abandoned=detail is not None)
        if attempts > 1:
            error.detail = (
                f"{detail or f'{type(failure).__name__}: {failure}'} (after {attempts} attempts)"
            )
        raise error from failure
    raise AssertionError("unreachable")  # pragma: no cover


class _Abandoned(Exception):
    """A sync body timed out in a worker: it cannot be interrupted, so it was abandoned."""


async def _attempt(step: Step, args: tuple[Any, ...], scope: Scope) -> Any:
    timeout = step.node.timeout
    if step.is_async:
        if timeout is None:
            return await step.fn(*args)
        async with asyncio.timeout(timeout):
            return await step.fn(*args)
    if scope.inline and timeout is None:
        return step.fn(*args)
    body = scope.body
    future = body.call(step.fn, args, step.shipped if body.kind == "remote" else None)
    if timeout is None:
        return await future
    try:
        return await asyncio.wait_for(future, timeout)
    except TimeoutError as exc:
        message = (
            f"timed out after {timeout:g} s; its sync body cannot be interrupted, so it was "
            f"abandoned and keeps running in its {body.name} worker until it returns"
        )
        logger.warning("node %r %s", step.name, message)
        raise _Abandoned(message) from exc
