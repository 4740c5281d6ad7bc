"""AsyncExecutor: a ``concurrent.futures.Executor`` for sync and async callables alike."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import threading
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from ..node import is_async_callable

__all__ = ["AsyncExecutor"]

P = ParamSpec("P")
T = TypeVar("T")


class AsyncExecutor(concurrent.futures.Executor):
    """Run coroutine functions on an event loop and sync callables in threads.

    ``submit`` always returns a ``concurrent.futures.Future``. A coroutine function
    submitted from inside a running event loop runs on that loop (await the future with
    ``asyncio.wrap_future``); submitted from a plain thread, it runs on the executor's own
    background loop. Sync callables run in the executor's thread pool. At most
    ``max_concurrent`` submissions run at once per loop (and in the thread pool). This
    works inside Jupyter, where a loop is already running.

    Cancelling the future of a coroutine that has not finished cancels its task.
    ``shutdown`` follows ``concurrent.futures``: ``wait=False`` returns at once while
    submitted work still completes; ``cancel_futures=True`` cancels what has not finished.

    Args:
        max_concurrent: How many submitted calls may run at once.

    Raises:
        ValueError: ``max_concurrent`` is not a positive int.
    """

    def __init__(self, max_concurrent: int = 10) -> None:
        if (
            not isinstance(max_concurrent, int)
            or isinstance(max_concurrent, bool)
            or max_concurrent < 1
        ):
            raise ValueError(f"max_concurrent must be an int >= 1, got {max_concurrent!r}")
        self.max_concurrent = max_concurrent
        self._lock = threading.Lock()
        self._shutdown = False
        self._threads: concurrent.futures.ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._limits: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )
        # Futures of coroutines not finished yet, with the loop each one runs on.
        self._pending: dict[concurrent.futures.Future[Any], asyncio.AbstractEventLoop] = {}
        self._tasks: set[asyncio.Task[Any]] = set()  # the tasks running them
        self._finalizer: weakref.finalize[Any, AsyncExecutor] | None = None

    def __repr__(self) -> str:
        state = "shutdown" if self._shutdown else "running"
        return f"AsyncExecutor(max_concurrent={self.max_concurrent}) <{state}>"

    def submit(
        self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[T]:
        """Schedule ``fn(*args, **kwargs)`` and return a future for its result.

        Raises:
            RuntimeError: The executor was shut down.
        """
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if not is_async_callable(fn):
                if self._threads is None:
                    self._threads = concurrent.futures.ThreadPoolExecutor(
                        self.max_concurrent, thread_name_prefix="hypernodes-async"
                    )
                ctx = contextvars.copy_context()
                call = functools.partial(fn, *args, **kwargs)
                return self._threads.submit(ctx.run, call)
            try:
                loop = asyncio.get_running_loop()
                from_loop = True
            except RuntimeError:
                loop = self._background_loop()
                from_loop = False
            future: concurrent.futures.Future[T] = concurrent.futures.Future()
            future.add_done_callback(_notify_cancelled)
            # Registered before it starts, so a shutdown right now still sees it.
            self._pending[future] = loop
        try:
            coro: Coroutine[Any, Any, Any] = fn(*args, **kwargs)  # type: ignore[assignment]
        except BaseException as exc:  # a bad call fails its future, as in other executors
            self._forget(future)
            future.set_exception(exc)
            return future
        if from_loop:
            self._start(loop, coro, future)
        else:
            # The handle captures this thread's context, so the task inherits it.
            loop.call_soon_threadsafe(self._start, loop, coro, future)
        return future

    def _forget(self, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._pending.pop(future, None)

    def _start(
        self,
        loop: asyncio.AbstractEventLoop,
        coro: Coroutine[Any, Any, Any],
        future: concurrent.futures.Future[Any],
    ) -> None:
        # The future stays PENDING while the coroutine runs, so that cancelling it (or
        # shutdown(cancel_futures=True)) cancels the task, as with asyncio futures.
        if future.cancelled():
            coro.close()
            self._forget(future)
            return
        task = loop.create_task(self._limited(loop, coro))
        self._tasks.add(task)

        def relay(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            self._forget(future)
            if future.done():
                return
            if t.cancelled():
                future.cancel()
            elif (exc := t.exception()) is not None:
                future.set_exception(exc)
            else:
                future.set_result(t.result())

        task.add_done_callback(relay)

        def cancel_task(f: concurrent.futures.Future[Any]) -> None:
            if f.cancelled() and not task.done() and not loop.is_closed():
                loop.call_soon_threadsafe(task.cancel)

        future.add_done_callback(cancel_task)

    async def _limited(self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
        limit = self._limits.get(loop)
        if limit is None:
            limit = self._limits[loop] = asyncio.Semaphore(self.max_concurrent)
        async with limit:
            return await coro

    def _background_loop(self) -> asyncio.AbstractEventLoop:
        # Called with self._lock held.
        if self._loop is None:
            loop = asyncio.new_event_loop()
            ready = threading.Event()
            thread = threading.Thread(
                target=_serve, args=(loop, ready), name="hypernodes-async-loop", daemon=True
            )
            thread.start()
            ready.wait()
            self._loop, self._loop_thread = loop, thread
            # An executor dropped without shutdown() must not leave its loop thread behind.
            self._finalizer = weakref.finalize(self, _stop_when_idle, loop, self._tasks)
        return self._loop

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting work; optionally wait for, or cancel, what was submitted.

        Args:
            wait: Block until submitted work has finished (work running on the loop of
                the calling thread is not waited for: that would deadlock it).
            cancel_futures: Cancel every submission that has not finished.
        """
        with self._lock:
            self._shutdown = True
            pending = dict(self._pending)
            threads = self._threads
            self._loop = None
            thread, self._loop_thread = self._loop_thread, None
            finalizer, self._finalizer = self._finalizer, None
        if cancel_futures:
            for future in pending:
                future.cancel()
        if threads is not None:
            threads.shutdown(wait=wait, cancel_futures=cancel_futures)
        if finalizer is not None:
            finalizer()  # the background loop stops once its work is done
        if not wait:
            return
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        concurrent.futures.wait([f for f, on in pending.items() if on is not running])
        if thread is not None and thread is not threading.current_thread():
            thread.join()


def _notify_cancelled(future: concurrent.futures.Future[Any]) -> None:
    # The future never enters RUNNING (so that it stays cancellable); a cancelled one must
    # still be marked notified, or concurrent.futures.wait() / as_completed() never see it.
    if future.cancelled():
        future.set_running_or_notify_cancel()


def _serve(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
    """The background loop thread: run until stopped, then close the loop here."""
    asyncio.set_event_loop(loop)
    loop.call_soon(ready.set)
    try:
        loop.run_forever()
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def _stop_when_idle(loop: asyncio.AbstractEventLoop, tasks: set[asyncio.Task[Any]]) -> None:
    """Stop ``loop`` (from any thread) once the submitted work on it has finished.

    Tasks that submitted coroutines left behind on the loop are cancelled then.
    """

    async def drain() -> None:
        while mine := [t for t in list(tasks) if t.get_loop() is loop and not t.done()]:
            await asyncio.wait(mine)
        current = asyncio.current_task()
        strays = [t for t in asyncio.all_tasks(loop) if t is not current]
        for stray in strays:
            stray.cancel()
        await asyncio.gather(*strays, return_exceptions=True)
        loop.stop()

    def start() -> None:
        loop.create_task(drain())

    if not loop.is_closed():
        with contextlib.suppress(RuntimeError):  # closed in the meantime
            loop.call_soon_threadsafe(start)
