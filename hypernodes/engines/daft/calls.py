"""The bodies of DaftEngine's row-wise functions: one call of a node (or nested pipeline).

Each body is an ``async def`` (so Daft runs rows concurrently): async nodes are awaited,
sync nodes run in a worker thread. A failure does not raise inside Daft (Daft would
flatten the user's exception into text): the row carries a ``Failure`` value instead,
downstream calls pass it on without running, and the orchestrator raises it as a
``NodeError`` with the user's exception as ``__cause__``. Cache hits and skipped steps
arrive in a per-step column and short-cut the call.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import traceback
from collections.abc import Callable, Coroutine
from time import perf_counter
from typing import Any, cast

import cloudpickle

from ...layers.chain import compose
from ...layers.chain import failed as failed_step
from ...layers.place import place
from ..worker import worker_engine

__all__ = ["SKIP", "Failure", "Hit", "Recorded", "make_call", "nested_body"]


class Failure:
    """A failed call, carried as a row value to the orchestrator.

    Attributes:
        op: Index of the op that failed.
        error: The user's exception (a ``NodeError`` from a nested pipeline run per row),
            or ``None`` when ``detail`` says it all (a wrong number of outputs).
        detail: What went wrong when it is not the exception itself.
        duration: Seconds the call took.
        abandoned: A sync body timed out and was left running in its thread.
    """

    __slots__ = ("abandoned", "detail", "duration", "error", "op", "records")

    def __init__(
        self,
        op: int,
        error: BaseException | None,
        detail: str | None,
        duration: float,
        abandoned: bool = False,
        records: Any = (),
    ) -> None:
        self.op = op
        self.error = error
        self.detail = detail
        self.duration = duration
        self.abandoned = abandoned
        self.records = records

    def __reduce__(self) -> tuple[Any, ...]:
        # Rows may cross processes (Ray runner, process UDFs): never fail to pickle.
        error = self.error
        if error is not None:
            try:
                cloudpickle.dumps(error)
            except Exception:
                stand_in = RuntimeError(f"{type(error).__qualname__}: {error}")
                stand_in.add_note("".join(traceback.format_exception(error)))
                error = stand_in
        args = (self.op, error, self.detail, self.duration, self.abandoned, self.records)
        return (Failure, args)


class Recorded(Exception):
    """A nested run failed: its error, with the events it recorded until then."""

    def __init__(self, error: BaseException, records: Any) -> None:
        super().__init__(error)
        self.error = error
        self.records = records


class Hit:
    """A cached result, delivered to the op in place of running it."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __reduce__(self) -> tuple[Any, ...]:
        return (Hit, (self.value,))


class _Skip:
    __slots__ = ()

    def __reduce__(self) -> str:
        return "SKIP"

    def __repr__(self) -> str:
        return "SKIP"


SKIP = _Skip()
"""This row does not need the op (its results come from the cache further down)."""


class Timed(float):
    """A call's duration (seconds), with the retries it made: ``(attempt, error, delay)``
    per failed attempt, replayed as ``on_node_retry`` by the orchestrator."""

    retries: tuple[tuple[int, BaseException, float], ...] = ()

    def __reduce__(self) -> tuple[Any, ...]:
        return (_timed, (float(self), _portable(self.retries)))


def _timed(seconds: float, retries: tuple[tuple[int, BaseException, float], ...]) -> Timed:
    timed = Timed(seconds)
    timed.retries = retries
    return timed


def _portable(
    retries: tuple[tuple[int, BaseException, float], ...],
) -> tuple[tuple[int, BaseException, float], ...]:
    kept = []
    for attempt, error, delay in retries:
        try:
            cloudpickle.dumps(error)
        except Exception:
            error = RuntimeError(f"{type(error).__qualname__}: {error}")
        kept.append((attempt, error, delay))
    return tuple(kept)


class _Never:
    """The halt of a Daft call: Daft itself stops what it no longer needs."""

    over = False

    async def halted(self) -> None:  # pragma: no cover - never over
        raise asyncio.CancelledError


class _Lane:
    kind = "threads"
    name = "DaftEngine thread"


class _Retries:
    """Collects a call's retries (the ``on_node_retry`` of the layers' dispatcher)."""

    __slots__ = ("seen",)

    def __init__(self) -> None:
        self.seen: list[tuple[int, BaseException, float]] = []

    def on_node_retry(
        self, *, context: Any, node: Any, attempt: int, error: BaseException, delay: float
    ) -> None:
        self.seen.append((attempt, error, delay))

    def emit(self, hook: Callable[..., None], **kwargs: Any) -> None:
        hook(**kwargs)


class _Level:
    """What the step layers read of a level, for one Daft call."""

    __slots__ = ("callbacks",)
    halt = _Never()
    context = None
    inline = False
    inline_below = 0.0  # (Daft's workers place bodies themselves)
    body = _Lane()

    def __init__(self) -> None:
        self.callbacks = _Retries()

    def offload(self, fn: Callable[..., Any], args: tuple[Any, ...], *_: Any) -> Any:
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(_threads(), lambda: fn(*args))


class _Step:
    """What the step layers read of a step, for one Daft call."""

    __slots__ = ("fn", "is_async", "name", "node")

    def __init__(self, node: Any, fn: Callable[..., Any], is_async: bool) -> None:
        self.node = node
        self.name = node.name
        self.fn = fn
        self.is_async = is_async


_pool_lock = threading.Lock()
_pool: concurrent.futures.ThreadPoolExecutor | None = None
_POOL_SIZE = 32


def _threads() -> concurrent.futures.ThreadPoolExecutor:
    # One pool per process for sync node bodies (Daft's own loop thread stays free).
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = concurrent.futures.ThreadPoolExecutor(
                    _POOL_SIZE, thread_name_prefix="hypernodes-daft"
                )
    return _pool


def make_call(
    *,
    op: int,
    name: str,
    label: str,
    body: Callable[..., Any],
    is_async: bool,
    layout: tuple[int | None, ...],
    constants: tuple[Any, ...],
    outs: tuple[str, ...] | None,
    timing: str | None,
    records: str | None,
    cached: bool,
    node: Any,
    raise_errors: bool,
) -> Callable[..., Coroutine[Any, Any, Any]]:
    """The row-wise function for one op, called as ``fn(row, *columns[, hit])``.

    Args:
        op: The op's index (recorded in failures).
        name: The node's name (for messages).
        label: The function's display name in Daft's plans.
        body: The node's callable, taking every input positionally.
        is_async: Whether ``body`` returns a coroutine.
        layout: Per input, the position of its column argument, or ``None`` for the
            constant at the same position of ``constants``.
        constants: Constant inputs (``None`` where the input is a column).
        outs: For a struct result, the column name of each output (tuple outputs, or
            timing); ``None`` returns the single value as is.
        timing: The column name for the call's duration, when events are replayed.
        records: For a nested pipeline whose events are replayed, the column for the
            events its run recorded (``body`` then returns ``(result, records)``).
        cached: Whether a hit column follows the input columns.
        node: The node whose retry, limit and timeout layers each call goes through (the
            same layers as on HyperNodesEngine; see ``hypernodes.layers``).
        raise_errors: Raise inside Daft instead of returning a ``Failure`` (lazy frames).
    """
    extra = (timing is not None) + (records is not None)
    n_outputs = len(outs) - extra if outs is not None else 1

    def shape(result: Any, duration: float, recorded: Any = ()) -> Any:
        if outs is None:
            return result
        values: dict[str, Any]
        if n_outputs == 1:
            values = {outs[0]: result}
        else:
            values = dict(zip(outs[:n_outputs], result, strict=True))
        if timing is not None:
            values[timing] = duration
        if records is not None:
            values[records] = recorded
        return values

    def failed(
        error: BaseException | None,
        detail: str | None,
        duration: float,
        abandoned: bool = False,
        recorded: Any = (),
    ) -> Any:
        if raise_errors:
            what = detail or f"{type(error).__name__}: {error}"
            raise RuntimeError(f"node {name!r} failed: {what}") from error
        failure = Failure(op, error, detail, duration, abandoned, recorded)
        if outs is None:
            return failure
        return dict.fromkeys(outs, failure)

    chain = compose(node)
    # (The layers read only these attributes of a step and a level.)
    step: Any = _Step(node, body, is_async)

    async def attempt(args: tuple[Any, ...], level: _Level) -> Any:
        if chain is not None:
            return await chain(step, args, cast(Any, level), None)
        return await place(step, args, cast(Any, level))

    async def call(row: int, *columns: Any) -> Any:
        if cached:
            *columns_list, hit = columns
            columns = tuple(columns_list)
            if type(hit) is Hit:
                return shape(hit.value, 0.0)
            if hit is SKIP:
                return shape((None,) * n_outputs if n_outputs > 1 else None, 0.0)
        recorded: Any = ()
        for value in columns:
            if type(value) is Failure:
                return value if outs is None else dict.fromkeys(outs, value)
        args = tuple(
            constants[i] if position is None else columns[position]
            for i, position in enumerate(layout)
        )
        started = perf_counter()
        level = _Level()
        try:
            result = await attempt(args, level)
        except Recorded as exc:
            return failed(exc.error, None, perf_counter() - started, recorded=exc.records)
        except Exception as exc:
            error = failed_step(name, exc)
            return failed(
                error.__cause__,
                error.detail,
                _with(perf_counter() - started, level),
                abandoned=error.abandoned,
            )
        duration = _with(perf_counter() - started, level)
        if records is not None:
            result, recorded = result
        if n_outputs > 1:
            try:
                parts = tuple(result)
            except TypeError:
                parts = None
            if parts is None or len(parts) != n_outputs:
                got = f"{len(parts)} values" if parts is not None else type(result).__name__
                detail = (
                    f"declares {n_outputs} outputs but returned {got}; return a tuple of "
                    f"{n_outputs} values"
                )
                return failed(None, detail, duration)
            result = parts
        return shape(result, duration, recorded)

    call.__name__ = call.__qualname__ = label
    call.__module__ = "hypernodes:"  # never importable: cloudpickle ships it by value
    return call


def _with(seconds: float, level: _Level) -> float:
    """The duration, carrying the call's retries when it made some."""
    seen = level.callbacks.seen
    if not seen:
        return seconds
    return _timed(seconds, tuple(seen))


def nested_body(node: Any, stripped: Any, observe: bool) -> Callable[..., Coroutine[Any, Any, Any]]:
    """A coroutine function running a nested pipeline for one row, on a sequential
    ``HyperNodesEngine`` in the worker: outer input values in; the exposed output (or a
    tuple of them, in ``node.outputs`` order) out. With ``observe``, the run records its
    events (returns ``(result, records)``; a failure raises ``Recorded``)."""
    to_inner = dict(node.input_mapping)
    exposed = list(node.output_mapping) or list(stripped.outputs)
    names = tuple(node.inputs)
    map_over = node.map_over
    mode = node.map_mode

    async def run(*args: Any) -> Any:
        inputs = {to_inner.get(k, k): v for k, v in zip(names, args, strict=True)}
        engine = worker_engine()
        pipe, recorder = stripped, None
        if observe:
            from ..recording import Recorder  # deferred: only observed nested runs record

            recorder = Recorder()
            pipe = stripped.stripped().with_callbacks([recorder])
        try:
            if map_over is None:
                result = await engine.arun(pipe, inputs, exposed)
                values = tuple(result[n] for n in exposed)
            else:
                mapped = [to_inner.get(n, n) for n in map_over]
                results = await engine.amap(pipe, inputs, mapped, mode, exposed)
                values = tuple([r[n] for r in results] for n in exposed)
        except Exception as exc:
            if recorder is None:
                raise
            raise Recorded(exc, recorder.records) from exc
        value = values[0] if len(values) == 1 else values
        return value if recorder is None else (value, recorder.records)

    return run
