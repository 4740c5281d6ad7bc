"""Map items as a stream: ``(index, outcome)`` pairs as items finish.

``stream_items`` is the one way the kernel runs the items of a map on the loop: workers
read items lazily from the input (a sync or async iterator), run them, and hand the
outcomes to the consumer as they finish. A list-returning map collects the stream in
order; ``map_iter`` hands it on. At most ``window`` items are read but not yet consumed,
so memory stays bounded however long the input; leaving the stream early cancels the
items in flight and closes the input.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, cast

from .errors import NodeError
from .executors.halting import Halt, Halted
from .scheduler import cancel_requests, raise_first

__all__ = ["Source", "close_source", "collect_items", "stream_items"]

Source = Iterator[tuple[int, Any]] | AsyncIterator[tuple[int, Any]]
"""Numbered items: ``(index, item)`` pairs, read lazily."""

_DONE = object()
_WAVE = 4  # workers started at once; each starts one more with its first item


class _Failed:
    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


async def stream_items(
    source: Source,
    width: int,
    run_one: Callable[[int, Any], Awaitable[Any]],
    *,
    halt: Halt,
    collect: Callable[[int, Any, NodeError], Any] | None = None,
    window: int | None = None,
    ordered: bool = False,
    stagger: bool = False,
) -> AsyncGenerator[tuple[int, Any], None]:
    """``(index, run_one(index, item))`` for every item of ``source``, as items finish.

    Args:
        source: The numbered items (a sync or async iterator), read only as workers free.
        width: How many items run at once.
        run_one: Runs one item.
        halt: The run's halt: checked before each item; set by a failure (raise mode).
        collect: Turns a failed item's ``NodeError`` into its outcome (``on_error=
            "collect"``); ``None``: the first failure cancels the rest and is raised.
        window: At most this many items are read but not yet consumed (default: no
            bound beyond ``width``).
        ordered: Yield in index order (still as soon as the next one is done).
        stagger: Start the items in waves (a few per pass of the loop, timers and I/O
            served in between), so a consumer of results as they come gets the first
            ones before the last items of a wide map have started; a map collected whole
            starts them all at once (fewer passes of the loop).

    Raises:
        NodeError: The first item that failed (without ``collect``), marked with its index.
        Exception: What reading the input raised.
    """
    if width <= 1:
        # One at a time, in the consumer's own task: a cancel of that task (Ctrl-C) is
        # what inline bodies check for between them, and nothing is read ahead.
        async for pair in _one_by_one(source, run_one, halt, collect):
            yield pair
        return
    queue: asyncio.Queue[Any] = asyncio.Queue()
    gate = asyncio.Semaphore(window) if window else None
    is_async = hasattr(source, "__anext__")
    reading = asyncio.Lock() if is_async else None

    sync_source = cast(Iterator[tuple[int, Any]], source)
    async_source = cast(AsyncIterator[tuple[int, Any]], source)

    async def next_item() -> tuple[int, Any] | None:
        if reading is None:
            return next(sync_source, None)
        async with reading:
            try:
                return await async_source.__anext__()
            except StopAsyncIteration:
                return None

    workers: list[asyncio.Future[None]] = []
    live = 0

    def spawn() -> None:
        nonlocal live
        workers.append(asyncio.ensure_future(worker()))
        live += 1

    async def worker() -> None:
        grow = True
        try:
            while True:
                if gate is not None:
                    await gate.acquire()
                if halt.over:
                    await halt.halted()
                # (A sync input is read inline: no coroutine per item.)
                got = next(sync_source, None) if reading is None else await next_item()
                if got is None:
                    if gate is not None:
                        gate.release()
                    break
                if grow and stagger:
                    # Workers start in waves, one more per item started, each wave in a
                    # later pass of the loop: a wide map starts its items a few dozen at
                    # a time, with timers and I/O served in between (its first results
                    # are not held up by starting the last items).
                    grow = False
                    if len(workers) < width:
                        spawn()
                index, item = got
                outcome = await _run_item(run_one, index, item, halt, collect)
                queue.put_nowait((index, outcome))
        except Halted as exc:  # the enclosing run is over: this map ends with it
            queue.put_nowait(_Failed(exc))
            raise
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            queue.put_nowait(_Failed(exc))
            return
        queue.put_nowait(_DONE)

    for _ in range(min(width, _WAVE) if stagger else width):
        spawn()
    waiting: dict[int, Any] = {}
    expected = 0
    try:
        while live:
            got = await queue.get()
            if got is _DONE:
                live -= 1
                continue
            if type(got) is _Failed:
                error = got.error
                raise error
            index, outcome = got
            if not ordered:
                yield index, outcome
                if gate is not None:
                    gate.release()
                continue
            waiting[index] = outcome
            while expected in waiting:
                yield expected, waiting.pop(expected)
                expected += 1
                if gate is not None:
                    gate.release()
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        await close_source(source)


async def _one_by_one(
    source: Source,
    run_one: Callable[[int, Any], Awaitable[Any]],
    halt: Halt,
    collect: Callable[[int, Any, NodeError], Any] | None,
) -> AsyncGenerator[tuple[int, Any], None]:
    is_async = hasattr(source, "__anext__")
    try:
        while True:
            if halt.over:
                await halt.halted()
            if is_async:
                try:
                    index, item = await cast(AsyncIterator[tuple[int, Any]], source).__anext__()
                except StopAsyncIteration:
                    return
            else:
                got = next(cast(Iterator[tuple[int, Any]], source), None)
                if got is None:
                    return
                index, item = got
            yield index, await _run_item(run_one, index, item, halt, collect)
    finally:
        await close_source(source)


async def collect_items(
    source: Iterator[tuple[int, Any]],
    count: int,
    width: int,
    run_one: Callable[[int, Any], Awaitable[Any]],
    *,
    halt: Halt,
    collect: Callable[[int, Any, NodeError], Any] | None = None,
) -> list[Any]:
    """Every item's outcome, in input order: the items of a sized input collected whole
    (``stream_items`` without the stream: each worker stores its outcomes in place).

    ``width - 1`` worker tasks and the caller's own task read the input as they free,
    so a map of one item (or ``width`` 1) makes no task at all.

    Raises:
        NodeError: The first item that failed (without ``collect``), marked with its index.
    """
    results: list[Any] = [None] * count

    async def worker() -> None:
        for index, item in source:
            if halt.over:
                await halt.halted()
            results[index] = await _run_item(run_one, index, item, halt, collect)

    try:
        helpers = min(width, count) - 1
        if helpers <= 0:
            await worker()
            return results
        failures: list[BaseException] = []

        async def helper() -> None:
            try:
                await worker()
            except BaseException as exc:
                failures.append(exc)
                raise

        requests = cancel_requests()
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(helpers):
                    group.create_task(helper())
                await helper()
        except BaseExceptionGroup as group_error:
            raise_first(group_error, failures, requests)
        return results
    finally:
        await close_source(source)


async def _run_item(
    run_one: Callable[[int, Any], Awaitable[Any]],
    index: int,
    item: Any,
    halt: Halt,
    collect: Callable[[int, Any, NodeError], Any] | None,
) -> Any:
    """One item's outcome: its result, or (``collect``) what its failure is turned into;
    without ``collect`` a failure ends the run (nothing more of it starts)."""
    try:
        return await run_one(index, item)
    except NodeError as err:
        err._mark_item(index)
        if collect is None:
            halt.set()
            raise
        return collect(index, item, err)


async def close_source(source: object) -> None:
    """Close an input that is a generator (sync or async), so its ``finally`` runs."""
    close = getattr(source, "aclose", None)
    if close is not None:
        result = close()
        if inspect.isawaitable(result):
            await result
        return
    close = getattr(source, "close", None)
    if callable(close):
        close()
