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
from typing import Any

import cloudpickle

from ...executors.remote import worker_engine

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


class _Abandoned(Exception):
    """A sync body outlived its timeout (it cannot be interrupted; it keeps running)."""


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
    retries: int,
    timeout: float | None,
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
        retries: Extra attempts after a failure.
        timeout: Seconds per attempt (a sync body is abandoned, as on HyperNodesEngine).
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

    async def attempt(args: tuple[Any, ...]) -> Any:
        if is_async:
            if timeout is None:
                return await body(*args)
            async with asyncio.timeout(timeout):
                return await body(*args)
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(_threads(), lambda: body(*args))
        if timeout is None:
            return await future
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError as exc:
            raise _Abandoned from exc

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
        for attempt_no in range(retries + 1):
            try:
                result = await attempt(args)
                break
            except _Abandoned as exc:
                if attempt_no < retries:
                    continue
                detail = (
                    f"timed out after {timeout:g} s; its sync body cannot be interrupted, so "
                    "it was abandoned and keeps running in its worker thread until it returns"
                )
                return failed(exc.__cause__, detail, perf_counter() - started, abandoned=True)
            except Recorded as exc:
                return failed(exc.error, None, perf_counter() - started, recorded=exc.records)
            except Exception as exc:
                if attempt_no < retries:
                    continue
                return failed(exc, None, perf_counter() - started)
        duration = perf_counter() - started
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
            from ..shipping import Recorder  # deferred: the map machinery

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
