"""From sync to async: the only code that creates event loops.

``run_sync(coro)`` runs a coroutine to completion from synchronous code:

- no loop running in this thread: on a loop this thread keeps for its next call (uvloop
  when installed), so ``run()`` never pays for a fresh loop;
- a loop already running here (a Jupyter cell, a FastAPI handler, an async test): on one
  long-lived background loop thread, blocking this thread until the result is ready;
- after ``enable_nested_loops()``: re-entrantly on the running loop (nest_asyncio2).

Nothing is patched implicitly, and the caller's exceptions come back unchanged.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import contextvars
import threading
import weakref
from collections.abc import Coroutine
from typing import Any, TypeVar

from .errors import HyperNodesError

__all__ = ["enable_nested_loops", "is_own_loop", "new_event_loop", "run_sync"]

T = TypeVar("T")

_local = threading.local()
_nested_loops = False


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new event loop: uvloop's when it is installed, else asyncio's."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it exists
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


class _ThreadRunner:
    """This thread's own loop, closed when the thread (or the interpreter) ends."""

    def __init__(self) -> None:
        self.runner = asyncio.Runner(loop_factory=new_event_loop)
        self.loop = self.runner.get_loop()
        _runners.add(self)

    def close(self) -> None:
        """Close the loop: its tasks cancelled, async generators finalised.

        It runs when the thread's locals die (the thread is ending) or at interpreter exit,
        where no thread may be started (Python 3.12+) or should be (a new thread asks for
        the current thread, which a dying thread no longer is). So the loop's default
        executor is not joined through a helper thread, as ``asyncio.Runner.close`` would
        do: ``loop.close()`` shuts it down without waiting, and ``concurrent.futures``
        joins its threads at exit as it does for every pool.
        """
        _runners.discard(self)
        loop = self.loop
        if loop.is_closed():
            return
        try:
            tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in tasks:
                task.cancel()
            if tasks:
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown
            self.close()


class _ThreadEnd:
    """Closes a thread's runner when the thread ends, even if the runner lives on.

    Held by the thread's locals alone, so it dies with the thread. The runner itself may
    outlive the thread: a ``NodeError`` the caller keeps references frames that reference
    the runner, and its loop (with its file descriptors) must not live as long as that.
    """

    __slots__ = ("runner",)

    def __init__(self, runner: _ThreadRunner) -> None:
        self.runner = runner

    def __del__(self) -> None:
        self.runner.__del__()


# Weak: a thread's runner must die with the thread's locals (closing its loop), not be
# kept alive here; this set only lets the interpreter's exit close the runners still alive.
_runners: weakref.WeakSet[_ThreadRunner] = weakref.WeakSet()


def is_own_loop(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether ``loop`` is this thread's own HyperNodes loop (so blocking it is harmless)."""
    runner: _ThreadRunner | None = getattr(_local, "runner", None)
    return runner is not None and runner.loop is loop


# How many sync runs are nested in one another here (a node calling ``pipeline.run()``).
_depth: contextvars.ContextVar[int] = contextvars.ContextVar("hypernodes_run_depth", default=0)

MAX_DEPTH = 100
"""How deep ``run()`` calls may nest (a node calling ``run()``, which calls a node that
calls ``run()``...): each level below the first runs in a thread of its own, so Python's
own recursion limit would never stop an unbounded recursion."""


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from synchronous code and return its result.

    Raises:
        RecursionError: Runs nest more than ``MAX_DEPTH`` deep.
        BaseException: Whatever ``coro`` raises, unchanged.
    """
    running: asyncio.AbstractEventLoop | None
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    depth = _depth.get()
    if depth >= MAX_DEPTH:
        coro.close()
        raise RecursionError(
            f"pipeline runs are nested {depth} deep: a node calls run() on a pipeline whose "
            "nodes call run() again, apparently without end; check the recursion's base case"
        )
    token = _depth.set(depth + 1)
    try:
        # Run outside the except block, so the caller's errors carry no stray context.
        if running is None:
            return _run_on_own_loop(coro)
        if _nested_loops:
            return running.run_until_complete(coro)
        if running is _background.loop or is_own_loop(running):
            # A node body running inline on a loop of ours called run(): that loop is
            # blocked by this very call, and so may be every worker its run holds. The
            # nested run gets a thread (and a loop) of its own, never waiting on them.
            return _run_in_new_thread(coro)
        return _background.run(coro)
    finally:
        _depth.reset(token)


def _run_on_own_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on this thread's own loop (made on first use); no loop may be running."""
    runner: _ThreadRunner | None = getattr(_local, "runner", None)
    if runner is None or runner.loop.is_closed():
        runner = _local.runner = _ThreadRunner()
        _local.end = _ThreadEnd(runner)
    # The caller's current context, on every call (Runner would reuse its first one).
    box: list[T] = []
    runner.runner.run(_boxed(coro, box), context=contextvars.copy_context())
    return box[0]


async def _boxed(coro: Coroutine[Any, Any, T], box: list[T]) -> None:
    """Await ``coro`` and keep its result in ``box``, not as the task's result.

    ``asyncio.Runner`` checks its SIGINT handler with ``signal.getsignal`` as its task
    ends. That call formats the repr of the handler, a partial holding the task, and the
    repr of a done task includes its result. For a map's results that is several
    milliseconds of list and numpy reprs on every call.
    """
    box.append(await coro)


def _run_in_new_thread(coro: Coroutine[Any, Any, T]) -> T:
    ctx = contextvars.copy_context()
    ex = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="hypernodes-nested")
    try:
        return ex.submit(ctx.run, _run_on_own_loop, coro).result()
    finally:
        ex.shutdown(wait=False)  # done, or interrupted: never block the caller on it


class _BackgroundLoop:
    """One long-lived loop thread that runs coroutines for threads whose loop is busy."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _ensure(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self.loop is None or self.loop.is_closed():
                loop = new_event_loop()
                started = threading.Event()

                def serve() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(started.set)
                    loop.run_forever()

                self._thread = threading.Thread(target=serve, name="hypernodes-loop", daemon=True)
                self._thread.start()
                started.wait()
                self.loop = loop
            return self.loop

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        loop = self._ensure()
        ctx = contextvars.copy_context()
        result: concurrent.futures.Future[T] = concurrent.futures.Future()
        holder: list[asyncio.Task[T]] = []

        def start() -> None:
            task = loop.create_task(coro, context=ctx)
            holder.append(task)
            task.add_done_callback(lambda t: _relay(t, result))

        loop.call_soon_threadsafe(start)
        try:
            return result.result()
        except BaseException:
            # Interrupted (KeyboardInterrupt) or failed: make sure the work stops too.
            if holder and not result.done():
                loop.call_soon_threadsafe(holder[0].cancel)
            raise

    def close(self) -> None:
        with self._lock:
            loop, thread = self.loop, self._thread
            self.loop = self._thread = None
        if loop is not None and thread is not None and not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)
            if not thread.is_alive():
                loop.close()


def _relay(task: asyncio.Task[T], result: concurrent.futures.Future[T]) -> None:
    if task.cancelled():
        result.cancel()
    elif (exc := task.exception()) is not None:
        result.set_exception(exc)
    else:
        result.set_result(task.result())


_background = _BackgroundLoop()


@atexit.register
def _close_loops() -> None:
    _background.close()
    for runner in list(_runners):
        runner.close()


def enable_nested_loops() -> None:
    """Opt in to running ``run()`` / ``map()`` re-entrantly on an already running loop.

    By default, ``run()`` called while a loop is running in the thread (a Jupyter cell)
    hands the work to a background loop thread, which is safe but means nodes do not run
    on the caller's loop. Call this to patch the running loop with ``nest_asyncio2`` (the
    maintained fork of nest_asyncio) instead, so nodes share objects bound to that loop.

    Raises:
        HyperNodesError: The running loop is a uvloop loop (nest_asyncio cannot patch it),
            or nest_asyncio2 is not installed.
    """
    global _nested_loops
    try:
        loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is not None and type(loop).__module__.startswith("uvloop"):
        raise HyperNodesError(
            "enable_nested_loops() cannot patch a uvloop loop: nest_asyncio only works with "
            "asyncio's own loop. Run without uvloop, or call `await pipeline.arun(...)` "
            "instead of pipeline.run(...) inside async code"
        )
    try:
        import nest_asyncio2 as nest
    except ImportError:
        try:
            import nest_asyncio as nest
        except ImportError:
            raise HyperNodesError(
                "enable_nested_loops() needs nest-asyncio2: pip install 'hypernodes[jupyter]'"
            ) from None
    if loop is not None:
        nest.apply(loop)
    else:
        nest.apply()
    _nested_loops = True


def _disable_nested_loops() -> None:
    """Undo the opt-in flag (tests use this); the loop stays patched."""
    global _nested_loops
    _nested_loops = False


def nested_loops_enabled() -> bool:
    """Whether ``enable_nested_loops()`` was called."""
    return _nested_loops
