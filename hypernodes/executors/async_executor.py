"""AsyncExecutor: a ``concurrent.futures.Executor`` for sync and async callables alike."""

from __future__ import annotations

import asyncio
import concurrent.futures
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

    Args:
        max_concurrent: How many submitted calls may run at once.

    Raises:
        ValueError: ``max_concurrent`` is not a positive int.
    """

    def __init__(self, max_concurrent: int = 10) -> None:
        if not isinstance(max_concurrent, int) or max_concurrent < 1:
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
        self._pending: set[concurrent.futures.Future[Any]] = set()

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
        coro: Coroutine[Any, Any, Any] = fn(*args, **kwargs)  # type: ignore[assignment]
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = self._background_loop()
            loop.call_soon_threadsafe(self._start, loop, coro, future)
        else:
            self._start(loop, coro, future)
        return future

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
            return
        task = loop.create_task(self._limited(loop, coro))
        with self._lock:
            self._pending.add(future)

        def relay(t: asyncio.Task[Any]) -> None:
            with self._lock:
                self._pending.discard(future)
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
            if f.cancelled() and not loop.is_closed():
                loop.call_soon_threadsafe(task.cancel)

        future.add_done_callback(cancel_task)

    async def _limited(self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
        limit = self._limits.get(loop)
        if limit is None:
            limit = self._limits[loop] = asyncio.Semaphore(self.max_concurrent)
        async with limit:
            return await coro

    def _background_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def serve() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                self._loop_thread = threading.Thread(
                    target=serve, name="hypernodes-async-loop", daemon=True
                )
                self._loop_thread.start()
                ready.wait()
                self._loop = loop
            return self._loop

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting work; optionally wait for, or cancel, what was submitted."""
        with self._lock:
            self._shutdown = True
            pending = list(self._pending)
            threads, self._threads = self._threads, None
            loop, self._loop = self._loop, None
            thread, self._loop_thread = self._loop_thread, None
        if cancel_futures:
            for f in pending:
                f.cancel()
        if threads is not None:
            threads.shutdown(wait=wait, cancel_futures=cancel_futures)
        if wait:
            concurrent.futures.wait(pending)
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()
