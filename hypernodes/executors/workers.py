"""Lanes: how nodes or map items proceed, and where sync bodies run.

A ``Lane`` is resolved from an executor alias (see ``pools``: the ``REGISTRY`` of aliases
and the ``PoolSet`` that makes their pools) or a ``concurrent.futures.Executor``. It says
how many nodes (or items) may be in flight and sends sync callables to the right place:
threads for thread-like executors, a pickled payload for everything else (process pools,
loky, Dask, Ray, unknown executors), so any executor works as is. Calls are gated per
executor on the loop, and shipped to remote workers from here.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import threading
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..cache import flights
from ..errors import WorkerLostError
from .async_executor import AsyncExecutor
from .halting import Halt, Skipped, run_unless_over

# The pools' names are re-exported: modules and tests import them from here.
from .pools import (
    ALIASES,
    REGISTRY,
    ExecutorAlias,
    LaneKind,
    Pool,
    PoolSet,
    cpu_count,
    distributed_width,
    executor_alias,
    validate_executor,
)
from .processes import WorkerDied, spawn_safe_context
from .remote import Parcel, Shipped, call_shipped, unwrap
from .tracking import TaskLost

__all__ = [
    "ALIASES",
    "ExecutorAlias",
    "Lane",
    "Pool",
    "PoolSet",
    "REGISTRY",
    "cpu_count",
    "in_flight",
    "resolve_lane",
    "run_remote",
    "shipped_callable",
    "spawn_safe_context",
    "submit_from_loop",
    "validate_executor",
]

ExecutorSpec = str | concurrent.futures.Executor


@dataclass(frozen=True, slots=True)
class Lane:
    """How one role proceeds.

    Attributes:
        kind: ``"sequential"`` (one at a time), ``"async"`` (concurrent on the loop, sync
            work in threads), ``"threads"`` (concurrent, sync work in a thread pool) or
            ``"remote"`` (sync work shipped, pickled, to another process or machine).
        executor: Where sync callables go; ``None`` only for a sequential lane with
            nothing to offload to yet.
        width: How many nodes or items may be in flight at once.
        name: What the user asked for, for reprs, telemetry and errors.
    """

    kind: LaneKind
    executor: concurrent.futures.Executor | None
    width: int
    name: str

    @property
    def concurrent(self) -> bool:
        """Whether more than one node or item may be in flight."""
        return self.kind != "sequential"

    def offload(self) -> Lane | None:
        """Where this lane's sync bodies run: the lane itself for thread and remote lanes,
        the threads of its executor for an ``AsyncExecutor`` (up to its width), or ``None``
        when it has no place of its own (the engine's thread pool then takes them)."""
        if self.kind in ("threads", "remote"):
            return self
        if self.kind == "async" and self.executor is not None:
            return Lane("threads", self.executor, self.width, self.name)
        return None

    def call(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        shipped: Shipped | None = None,
        *,
        halt: Halt,
        budget: asyncio.Semaphore | None = None,
        label: str = "",
    ) -> Awaitable[Any]:
        """Start the sync ``fn(*args)`` on this lane's executor; return an awaitable for its
        result.

        Must be called from a running event loop. For a remote lane, ``shipped`` (the
        cloudpickled ``fn``) is sent instead of ``fn`` when given. Nothing starts once
        ``halt`` says the run is over, not even a call already handed to the executor (see
        ``halting``); ``budget``, the run's bound on its sync bodies across pools
        (``max_workers``), is taken before the executor's own gate. ``label`` names the
        call if the run abandons it (default: ``fn``'s name).
        """
        executor = self.executor
        assert executor is not None, "a lane without an executor cannot offload"
        label = label or getattr(fn, "__name__", "a call")
        if self.kind == "remote":
            payload = shipped if shipped is not None else shipped_callable(fn)
            return _remote(self, payload, args, halt, budget, label)

        def start() -> Awaitable[Any]:
            ctx = contextvars.copy_context()
            loop = asyncio.get_running_loop()
            call = functools.partial(ctx.run, _holding, executor, halt, loop, fn, *args)
            # (``loop.run_in_executor`` less its checks: uvloop's unwraps the partial to
            # ask whether it is a coroutine function, a few microseconds a call.)
            return asyncio.wrap_future(executor.submit(call), loop=loop)

        return _gated(self, halt, budget, start, label)

    async def ship(
        self,
        fn: Callable[..., Any],
        *args: Any,
        halt: Halt,
        budget: asyncio.Semaphore | None = None,
        label: str = "",
    ) -> Any:
        """Run the importable ``fn(*args)`` in a worker of this remote lane (a whole map
        item, or a shipped body), gated like ``call``; the worker skips it when the run is
        over by the time it gets there.

        Raises:
            WorkerLostError: See ``run_remote``.
        """
        executor = self.executor
        assert executor is not None and self.kind == "remote", "ship() needs a remote lane"

        def start() -> Awaitable[Any]:
            return run_remote(executor, run_unless_over, halt.ticket(), fn, *args)

        return await _gated(self, halt, budget, start, label or fn.__name__)


# Callables cloudpickled for remote lanes, once per function object while it lives (a
# plan's steps keep their functions, so a node is pickled once, not once per call).
_shipped: weakref.WeakKeyDictionary[Callable[..., Any], Shipped] = weakref.WeakKeyDictionary()
_shipped_lock = threading.Lock()


def shipped_callable(fn: Callable[..., Any]) -> Shipped:
    """``fn`` cloudpickled for a remote lane: made once per function while it lives.

    A callable that takes no weak reference (or no hash) is pickled on every call.

    Raises:
        Exception: Whatever cloudpickle raises for an unpicklable ``fn``.
    """
    try:
        found = _shipped.get(fn)
    except TypeError:
        return Shipped(fn)
    if found is None:
        made = Shipped(fn)
        with _shipped_lock:
            found = _shipped.setdefault(fn, made)
    return found


# Calls handed to an executor and not finished, per executor and event loop, are capped at
# the executor's width (plus a backlog for thread pools and clusters, see ``in_flight``,
# each guarded against starting after a failure): work beyond it waits
# here, on the loop, where the first failure cancels it at once, instead of in the pool's
# queue, where a worker would pick it up the moment a slot frees (and a process pool
# pre-feeds its call queue). No body ever waits for another body's slot, so the gate
# cannot deadlock.
_gates: weakref.WeakKeyDictionary[
    concurrent.futures.Executor,
    weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore],
] = weakref.WeakKeyDictionary()
_gates_lock = threading.Lock()
# Gate sizes of executors with a backlog, by lane width (see ``in_flight``).
_sizes: weakref.WeakKeyDictionary[concurrent.futures.Executor, dict[int, int]] = (
    weakref.WeakKeyDictionary()
)
# Their clusters' worker threads, asked once (a call to the scheduler): see ``in_flight``.
_widths: weakref.WeakKeyDictionary[concurrent.futures.Executor, int | None] = (
    weakref.WeakKeyDictionary()
)


def _gate(lane: Lane) -> asyncio.Semaphore:
    executor = lane.executor
    assert executor is not None
    loop = asyncio.get_running_loop()
    per_loop = _gates.get(executor)
    if per_loop is None:
        with _gates_lock:
            per_loop = _gates.setdefault(executor, weakref.WeakKeyDictionary())
    gate = per_loop.get(loop)
    if gate is None:
        gate = per_loop.setdefault(loop, asyncio.Semaphore(in_flight(lane)))
    return gate


def in_flight(lane: Lane) -> int:
    """How many calls ``lane`` may have handed to its executor at once (what its gate lets
    through): a map keeps that many items, or chunks, going.

    A thread pool: twice its width (each thread takes its next call as it frees, not a
    trip through the loop later; see ``_holding`` for why none starts after a failure).
    Else the lane's width, plus what a cluster can keep waiting on its workers and still
    cancel (``hypernodes_backlog()``; Dask: one call per worker thread) when the lane is
    at least as wide as the cluster. A worker then starts its next call the moment one
    ends, not a round trip to this loop later (20-40 ms on a local Dask cluster), and no
    more calls run at once than the lane allows. Asked once per executor and width (a cluster's
    size is a call to its scheduler).
    """
    executor = lane.executor
    if lane.kind == "threads":
        return 2 * lane.width  # each thread holds its next call (see ``_holding``)
    backlog = getattr(executor, "hypernodes_backlog", None)
    if executor is None or lane.kind != "remote" or not callable(backlog):
        return lane.width
    sizes = _sizes.get(executor)
    if sizes is None:
        with _gates_lock:
            sizes = _sizes.setdefault(executor, {})
    size = sizes.get(lane.width)
    if size is None:
        threads = _widths.get(executor, 0)
        if threads == 0:
            threads = _widths.setdefault(executor, distributed_width(executor))
        extra = max(0, int(backlog())) if threads is not None and threads <= lane.width else 0
        size = sizes.setdefault(lane.width, lane.width + extra)
    return size


async def _gated(
    lane: Lane,
    halt: Halt,
    budget: asyncio.Semaphore | None,
    start: Callable[[], Awaitable[Any]],
    label: str,
) -> Any:
    """``await start()`` once the run's budget and the executor's gate allow, unless the run
    is over; a call its worker skipped (the run was over by then) is stopped likewise."""
    if halt.over:
        await halt.halted()
    if budget is None:
        return await _through_gate(lane, halt, start, label)
    running = _can_run(lane)
    if running is not None:
        return await _in_budget(lane, halt, budget, running, start, label)
    async with budget:
        return await _through_gate(lane, halt, start, label)


class _Share:
    """What a cluster's calls of one run hold of its budget: ``calls`` started and not
    finished, ``slots`` of the budget held for them."""

    __slots__ = ("calls", "lock", "slots")

    def __init__(self) -> None:
        self.calls = 0
        self.slots = 0
        self.lock = asyncio.Lock()  # one call at a time takes the slots lacking


# Per run budget, per executor with a backlog (see ``_in_budget``).
_shares: weakref.WeakKeyDictionary[asyncio.Semaphore, dict[int, _Share]] = (
    weakref.WeakKeyDictionary()
)


def _can_run(lane: Lane) -> int | None:
    """How many of ``lane``'s calls its executor can run at once when more may wait on
    its workers (a cluster's backlog, see ``in_flight``), else ``None``."""
    if lane.kind != "remote" or lane.executor is None or in_flight(lane) <= lane.width:
        return None
    return _widths.get(lane.executor)  # (``in_flight`` asked the cluster once)


async def _in_budget(
    lane: Lane,
    halt: Halt,
    budget: asyncio.Semaphore,
    running: int,
    start: Callable[[], Awaitable[Any]],
    label: str,
) -> Any:
    """``_through_gate`` for a cluster's call under the run's budget (``max_workers``).

    A cluster runs at most ``running`` calls at once (one per worker thread); the rest of
    its calls wait on its workers (``in_flight``'s backlog), running nothing. So its calls
    hold ``min(calls, running)`` slots of the budget, not one each: at least one per call
    that may be running, and a call waiting on a worker starts the moment the one before it
    ends, without a slot of its own, as it does without a budget. (One slot a call kept a
    worker idle for a round trip to this loop between calls: ~8% of a CPU-bound map on a
    2-worker local Dask cluster with ``max_workers=2``.) The bodies running at once across
    the run's pools still never exceed the budget.
    """
    assert lane.executor is not None
    shares = _shares.get(budget)
    if shares is None:
        shares = _shares.setdefault(budget, {})
    share = shares.get(id(lane.executor))
    if share is None:  # (made once per run and cluster, not per call)
        share = shares[id(lane.executor)] = _Share()
    share.calls += 1
    try:
        if share.slots < min(share.calls, running):
            # Waiting in turn, a call finds the slots it lacked taken by the calls before
            # it, and goes on: one waiting in the budget's queue itself would stay there.
            async with share.lock:
                while share.slots < min(share.calls, running):
                    await budget.acquire()
                    share.slots += 1
        return await _through_gate(lane, halt, start, label)
    finally:
        share.calls -= 1
        while share.slots > min(share.calls, running):
            share.slots -= 1
            budget.release()


async def _through_gate(
    lane: Lane, halt: Halt, start: Callable[[], Awaitable[Any]], label: str
) -> Any:
    async with _gate(lane):
        if halt.over:  # it may have waited long for its slot
            await halt.halted()
        try:
            result = await start()
            while result is _DEFERRED:  # a body of its run failed: started once that is heard
                if halt.over:
                    await halt.halted()
                result = await start()
        except asyncio.CancelledError:
            halt.abandon(label)  # no longer awaited, in a worker already
            raise
        if type(result) is Skipped:
            await halt.halted()  # its worker found the run over
        return result


# The thread-like executors whose slot the current worker thread holds (see ``holds``).
_held: contextvars.ContextVar[tuple[concurrent.futures.Executor, ...]] = contextvars.ContextVar(
    "hypernodes_held_executors", default=()
)


# A worker thread running a node body never blocks on another run's cache flight (that
# run might need this worker): the cache's single flight asks through this hook.
flights.worker_thread = lambda: bool(_held.get())


def _holding(
    executor: concurrent.futures.Executor,
    halt: Halt | None,
    loop: asyncio.AbstractEventLoop | None,
    fn: Callable[..., Any],
    *args: Any,
) -> Any:
    # A thread pool holds a call for each thread beyond its width (``in_flight``), which a
    # thread takes the moment it frees. A failure in one thread reaches the loop a moment
    # later (the loop then ends the run, or retries, or collects it): until the loop has
    # taken it in, the run's calls a thread picks up are handed back to wait for that
    # (``_DEFERRED``), so none starts after a failure that ends its run.
    # (``halt`` None: no run can stop the call; ``loop`` None: no loop waits for it.)
    if halt is not None and halt.unheard:
        return _DEFERRED
    token = _held.set((*_held.get(), executor))
    try:
        # (Handed to the pool before the run ended, it may reach a thread after.)
        return run_unless_over(halt, fn, *args)
    except BaseException:
        if halt is not None and loop is not None:
            halt.unheard += 1
            with contextlib.suppress(RuntimeError):  # (a closed loop: nothing waits now)
                loop.call_soon_threadsafe(_heard, loop, halt)
        raise
    finally:
        _held.reset(token)


_DEFERRED = object()


def _heard(loop: asyncio.AbstractEventLoop, halt: Halt) -> None:
    # Scheduled after the failure's own delivery (the future's callback); one more turn
    # of the loop, so the task it woke has taken it in (ended the run, or not) first.
    loop.call_soon(_forget, halt)


def _forget(halt: Halt) -> None:
    halt.unheard -= 1


def holds(executor: concurrent.futures.Executor | None) -> bool:
    """Whether this thread is a node body running on ``executor`` (it holds a slot).

    A run started from there (a node calling ``pipeline.run()``) must not wait for a
    second slot of the same pool: with the pool saturated, that would deadlock.
    """
    return executor is not None and any(e is executor for e in _held.get())


async def _remote(
    lane: Lane,
    payload: Shipped,
    args: tuple[Any, ...],
    halt: Halt,
    budget: asyncio.Semaphore | None,
    label: str,
) -> Any:
    reply = await lane.ship(
        call_shipped, payload, Parcel(args), {}, halt=halt, budget=budget, label=label
    )
    return unwrap(reply)


async def run_remote(
    executor: concurrent.futures.Executor, fn: Callable[..., Any], *args: Any
) -> Any:
    """Submit ``fn(*args)`` to a remote executor from the loop and await its result.

    Raises:
        WorkerLostError: A worker process died and broke the pool (with what is known of
            the death); it names no node yet (see ``node_failed``).
        TaskLost: The executor cancelled the call's future, and nothing here asked it to
            (a cluster that dropped the task); not the ``CancelledError`` that this task
            would take for its own cancellation.
    """
    future = None
    try:
        future = await submit_from_loop(executor, fn, *args)
        return await asyncio.wrap_future(future)
    except concurrent.futures.BrokenExecutor as exc:
        _warm.discard(executor)  # a pool that heals starts afresh: warm it up again
        if isinstance(exc, WorkerDied):
            raise WorkerLostError(executor=exc.executor, reason=exc.reason) from exc
        raise WorkerLostError(executor=type(executor).__name__) from exc
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if future is None or not future.cancelled() or (task is not None and task.cancelling()):
            raise  # this task is being cancelled
        explanation = "the executor cancelled its future (a cluster may have dropped it)"
        raise TaskLost(type(executor).__name__, "", "cancelled", explanation) from None


# Executors that have taken a submission: their workers (or connection) are up.
_warm: weakref.WeakSet[concurrent.futures.Executor] = weakref.WeakSet()
# Executors whose first submission is under way (done when it is).
_warming: weakref.WeakKeyDictionary[concurrent.futures.Executor, asyncio.Future[None]] = (
    weakref.WeakKeyDictionary()
)


async def submit_from_loop(
    executor: concurrent.futures.Executor, fn: Callable[..., Any], *args: Any
) -> concurrent.futures.Future[Any]:
    """``executor.submit(fn, *args)`` from a running event loop, without blocking it.

    The first submission to an executor can block for long: a process pool starts its
    workers, a cluster client connects. That one is made from a helper thread while the
    loop keeps running; submissions racing it wait for it, and later ones are made directly
    (they only queue the call). One helper at a time, and not a daemon: a process started
    while the interpreter exits would be left behind, owned by no pool.

    Raises:
        Exception: Whatever ``executor.submit`` raises (a shut-down or broken pool).
    """
    if executor in _warm:
        return executor.submit(fn, *args)
    loop = asyncio.get_running_loop()
    warming = _warming.get(executor)
    if warming is not None and warming.get_loop() is loop:
        await asyncio.shield(warming)  # the first submission is on its way: wait for it
        return executor.submit(fn, *args)  # (raises at once if that one broke the pool)
    warming = loop.create_future()
    with contextlib.suppress(TypeError):  # an executor without weak references stays cold
        _warming[executor] = warming
    try:
        future = await _submit_in_thread(loop, executor, fn, args)
        with contextlib.suppress(TypeError):
            _warm.add(executor)
        return future
    finally:
        if not warming.done():
            warming.set_result(None)
        if _warming.get(executor) is warming:
            del _warming[executor]


async def _submit_in_thread(
    loop: asyncio.AbstractEventLoop,
    executor: concurrent.futures.Executor,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
) -> concurrent.futures.Future[Any]:
    waiter: asyncio.Future[concurrent.futures.Future[Any]] = loop.create_future()

    def settle(future: concurrent.futures.Future[Any] | None, error: BaseException | None) -> None:
        if waiter.cancelled():
            if future is not None:
                future.cancel()  # the caller gave up while we were submitting
        elif error is not None:
            waiter.set_exception(error)
        else:
            waiter.set_result(future)  # type: ignore[arg-type]

    def submit() -> None:
        try:
            future = executor.submit(fn, *args)
        except BaseException as exc:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(settle, None, exc)
            return
        try:
            loop.call_soon_threadsafe(settle, future, None)
        except RuntimeError:
            future.cancel()

    threading.Thread(target=submit, name="hypernodes-submit").start()
    return await waiter


def resolve_lane(
    spec: ExecutorSpec,
    *,
    pools: PoolSet,
    max_concurrent: int | None,
    role: str,
) -> Lane:
    """Turn an alias or executor instance into a ``Lane``.

    Raises:
        InvalidExecutorError: ``spec`` is not an alias or an executor instance.
    """
    validate_executor(spec, role)
    if isinstance(spec, str):
        row = executor_alias(spec)
        executor, size = row.place(pools, max_concurrent)
        return Lane(row.lane, executor, size, row.name)
    name = type(spec).__name__
    if isinstance(spec, AsyncExecutor):
        return Lane("async", spec, max_concurrent or spec.max_concurrent, name)
    declared = getattr(spec, "_max_workers", None)  # stdlib pools and loky expose it
    width = max_concurrent or (declared if isinstance(declared, int) else None)
    if isinstance(spec, concurrent.futures.ThreadPoolExecutor):
        return Lane("threads", spec, width or cpu_count(), name)
    width = width or distributed_width(spec) or cpu_count()
    return Lane("remote", spec, width, name)
