"""The process pool behind ``"parallel"``: workers that say what they run and die with us.

``ProcessPool`` is a ``concurrent.futures.Executor`` over a spawn-safe
``ProcessPoolExecutor`` that adds what the standard pool lacks:

- Each worker claims a slot on a shared board and writes there the call it is running
  (and, for a shipped map item, which of its nodes). When a worker dies, the call it was
  running is known: it fails first, saying so, and the calls lost with the pool say that
  another worker died. A worker that died before it was ready points at the missing
  ``if __name__ == "__main__":`` guard, and only then.
- A watcher thread waits on the workers' sentinels, so a death is seen at once (the
  standard pool can miss, until another call returns, a worker it spawned while its
  manager thread was waiting).
- A broken pool is replaced by a fresh one at the next submission: one crash does not
  break the engine for good.
- Workers exit when this process dies, however it dies (SIGKILL included): each waits on
  its parent's sentinel, so no worker, and then no resource tracker, is left behind.
- A map's big bundle (pipeline and shared inputs) is stored once on the machine for the
  workers to read (``hypernodes_share``, see ``depot``), not sent with every item.
"""

from __future__ import annotations

import concurrent.futures
import concurrent.futures.process
import contextlib
import functools
import itertools
import multiprocessing
import multiprocessing.connection
import multiprocessing.context
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from .depot import Depot, Stored

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.sharedctypes import Synchronized

__all__ = [
    "LossReason",
    "ProcessPool",
    "WorkerDied",
    "item_marks",
    "mark_position",
    "spawn_safe_context",
    "tracked",
]

LossReason = Literal["running", "lost", "startup", "idle", "unknown"]

# Per slot on the board: the worker's pid, the token of the call it runs (0: idle), the
# 1-based position of the node of a shipped item it runs (0: unknown), and 1 + the index
# of the map item it runs in a shipped chunk of items (0: unknown).
_FIELDS = 4
# How long a worker whose sentinel fired may take to become a process that has exited.
_SETTLE = 0.5


def spawn_safe_context() -> multiprocessing.context.BaseContext:
    """The ``spawn`` start method: it never forks a process with threads running.

    Tasks travel pickled (our cloudpickle payloads do). Not ``forkserver``: its server
    imports ``__main__``, so a script without an ``if __name__ == "__main__":`` guard runs
    its own pipeline inside the server and leaves orphaned processes behind, where
    ``spawn`` fails cleanly (``WorkerLostError`` naming the guard). Start-up costs the same.
    """
    return multiprocessing.get_context("spawn")


class WorkerDied(concurrent.futures.BrokenExecutor):
    """A call of a ``ProcessPool`` lost with a dead worker, and what is known of the death.

    Attributes:
        executor: The type name of the pool whose worker died.
        reason: ``"running"`` (the worker died running this call), ``"lost"`` (another
            worker died and broke the pool), ``"startup"`` (a worker died before it was
            ready) or ``"idle"`` (a worker died between calls).
        position: For a shipped map item, 1 + the index of the node the worker was
            running in the shipped pipeline; 0 when unknown.
        item: For a shipped chunk of map items, the index of the item the worker was
            running; ``None`` when unknown.
    """

    def __init__(
        self, executor: str, reason: LossReason, position: int = 0, item: int | None = None
    ) -> None:
        super().__init__(f"a worker process of {executor} died ({reason})")
        self.executor = executor
        self.reason: LossReason = reason
        self.position = position
        self.item = item


class ProcessPool(concurrent.futures.Executor):
    """A spawn-safe process pool that explains worker deaths and heals after one.

    Args:
        max_workers: How many worker processes at most.
        context: The multiprocessing context (default: ``spawn_safe_context()``).

    Raises:
        ValueError: ``max_workers`` is not a positive int.
    """

    def __init__(
        self, max_workers: int, *, context: multiprocessing.context.BaseContext | None = None
    ) -> None:
        if not isinstance(max_workers, int) or max_workers < 1:
            raise ValueError(f"max_workers must be an int >= 1, got {max_workers!r}")
        self.max_workers = max_workers
        self.context = context if context is not None else spawn_safe_context()
        self._lock = threading.Lock()
        # The current generation, in a list the finalizer shares: a pool dropped without
        # shutdown() must not leave its workers (or its watcher thread) behind.
        self._current: list[_Generation] = []
        # Broken generations, kept until this pool shuts down: dropping the last reference
        # to a broken ProcessPoolExecutor while its manager thread is still terminating it
        # can hang that thread, and so interpreter exit (seen on CPython 3.13.0: the
        # executor's weakref callback, run in that thread, writes to the thread's own
        # full wake-up pipe).
        self._retired: list[_Generation] = []
        self._tokens = itertools.count(1)
        self._shutdown = False
        self.depot = Depot()
        self._finalizer = weakref.finalize(
            self, _close_all, self._current, self._retired, self.depot
        )

    def __repr__(self) -> str:
        state = "shutdown" if self._shutdown else "running"
        return f"ProcessPool(max_workers={self.max_workers}) <{state}>"

    def submit(
        self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[Any]:
        """Schedule ``fn(*args, **kwargs)`` in a worker process.

        Raises:
            RuntimeError: The pool was shut down.
        """
        for _attempt in range(2):
            with self._lock:
                if self._shutdown:
                    raise RuntimeError("cannot schedule new futures after shutdown")
                if not self._current or self._current[0].broken:
                    if self._current:
                        old = self._current.pop()
                        old.close(wait=False)  # its workers are gone
                        self._retired.append(old)
                    self._current.append(_Generation(self.max_workers, self.context))
                generation = self._current[0]
                token = next(self._tokens)
            try:
                return generation.submit(token, fn, args, kwargs)
            except concurrent.futures.BrokenExecutor:
                generation.broken = True  # a worker died while the pool was idle: afresh
        raise RuntimeError("a fresh process pool broke before it took a call")

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting work, like the standard library's executors."""
        with self._lock:
            self._shutdown = True
            generations = [*self._current, *self._retired]
            self._current.clear()
            self._retired.clear()
        for generation in generations:
            generation.close(wait=wait, cancel_futures=cancel_futures)
        self.depot.close()

    def hypernodes_share(self, obj: object) -> Any:
        """Store a big shipped ``obj`` once for the workers; a small handle stands in for it.

        Every worker, a replacement for one that died included, reads it at its first
        call that passes the handle. Each handle must be given back to
        ``hypernodes_release`` when the calls using it are over. ``obj`` itself comes back
        when it is small, or cannot be stored here (it then travels with each call).
        """
        digest, blob = getattr(obj, "digest", None), getattr(obj, "blob", None)
        if not isinstance(digest, bytes) or not isinstance(blob, bytes):
            return obj
        stored = self.depot.put(digest, blob)
        return obj if stored is None else stored

    def hypernodes_release(self, handle: object) -> None:
        """Give back a handle from ``hypernodes_share`` (its file closes with the last)."""
        if isinstance(handle, Stored):
            self.depot.release(handle)


def _close_all(generations: list[_Generation], retired: list[_Generation], depot: Depot) -> None:
    for generation in (*generations, *retired):
        generation.close(wait=False, cancel_futures=True)
    depot.close()


class _Generation:
    """One ``ProcessPoolExecutor``, its board, its watcher, and its unfinished calls."""

    def __init__(self, max_workers: int, context: multiprocessing.context.BaseContext) -> None:
        self.board: Any = context.Array("q", _FIELDS * max_workers, lock=False)
        claimed = context.Value("i", 0)
        self._ready, notify = context.Pipe(duplex=False)
        self._notify = notify  # ours stays open: the watcher is woken through it too
        self.pool = concurrent.futures.ProcessPoolExecutor(
            max_workers,
            mp_context=context,
            initializer=_start_worker,
            initargs=(self.board, claimed, max_workers, notify),
        )
        self.broken = False
        self._closing = False
        self._lock = threading.Lock()
        self._calls: dict[int, concurrent.futures.Future[Any]] = {}
        self._watcher = threading.Thread(
            target=self._watch, name="hypernodes-process-watch", daemon=True
        )
        self._watcher.start()

    def submit(
        self,
        token: int,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> concurrent.futures.Future[Any]:
        # The caller gets a future of ours, settled from the pool's: when the pool breaks,
        # ours are failed in an order and with errors of our choosing (see ``_break``).
        outer: concurrent.futures.Future[Any] = concurrent.futures.Future()
        outer.add_done_callback(_notify_cancelled)
        with self._lock:
            self._calls[token] = outer
        try:
            inner = self.pool.submit(_run_tracked, token, fn, args, kwargs)
        except BaseException:
            with self._lock:
                self._calls.pop(token, None)
            raise
        outer.add_done_callback(functools.partial(_cancel_inner, inner))
        inner.add_done_callback(functools.partial(self._settle, token))
        return outer

    def close(self, *, wait: bool, cancel_futures: bool = False) -> None:
        """Shut the pool down and stop the watcher."""
        self._closing = True
        with contextlib.suppress(OSError):
            self._notify.send(-1)  # wake the watcher: it sees we are closing
        self.pool.shutdown(wait=wait, cancel_futures=cancel_futures)
        if wait and self._watcher is not threading.current_thread():
            self._watcher.join()
        if wait or not self._watcher.is_alive():
            self._notify.close()
            self._ready.close()

    def _settle(self, token: int, inner: concurrent.futures.Future[Any]) -> None:
        if not inner.cancelled():
            error = inner.exception()
            if isinstance(error, concurrent.futures.BrokenExecutor):
                self._break(error)
                return
        with self._lock:
            outer = self._calls.pop(token, None)
        if outer is None:
            return
        with contextlib.suppress(concurrent.futures.InvalidStateError):  # cancelled by now
            if inner.cancelled():
                outer.cancel()
            elif (error := inner.exception()) is not None:
                outer.set_exception(error)
            else:
                outer.set_result(inner.result())

    def _watch(self) -> None:
        """Wait for a worker to register or to die; on a death, break the pool at once."""
        watched: dict[Any, int] = {}  # sentinel -> pid
        while not self._closing:
            try:
                ready = multiprocessing.connection.wait([self._ready, *watched])
            except OSError:  # closed under us
                return
            if self._closing or self.broken:
                return
            for which in ready:
                if which is self._ready:
                    with contextlib.suppress(EOFError, OSError):
                        self._ready.recv()
                    watched.update(self._sentinels(set(watched.values())))
                else:
                    cause = concurrent.futures.process.BrokenProcessPool(
                        "a worker process died abruptly"
                    )
                    self._break(cause, dead=watched[which])
                    self.pool.shutdown(wait=False, cancel_futures=True)
                    return

    def _sentinels(self, known: set[int]) -> dict[Any, int]:
        """Sentinels of the registered workers not watched yet."""
        board = self.board
        pids = {board[base] for base in range(0, len(board), _FIELDS)} - known - {0}
        if not pids:
            return {}
        children = multiprocessing.active_children()
        return {p.sentinel: p.pid for p in children if p.pid is not None and p.pid in pids}

    def _break(self, cause: BaseException, dead: int | None = None) -> None:
        """Fail every unfinished call, the ones a dead worker was running first.

        Called by the watcher when it sees a worker die (``dead``), or at the first future
        the pool itself fails, before it terminates the workers still alive: the workers
        that exited by then are the ones to blame. Futures failed first are awaited first,
        so the call whose worker died is the one reported.
        """
        with self._lock:
            if self.broken and not self._calls:
                return
            self.broken = True
            calls, self._calls = self._calls, {}
        running, died = self._autopsy(dead)
        name = type(self.pool).__name__
        for token in sorted(calls, key=lambda t: t not in running):
            if token in running:
                error = WorkerDied(name, "running", *running[token])
            else:
                error = WorkerDied(name, "lost" if running else ("idle" if died else "startup"))
            error.__cause__ = cause
            with contextlib.suppress(concurrent.futures.InvalidStateError):
                calls[token].set_exception(error)

    def _autopsy(self, dead: int | None) -> tuple[dict[int, tuple[int, int | None]], bool]:
        """The calls dead workers were running (token -> node position and item), and whether any
        worker that had been ready died (if none did, one died starting up).

        A dying process closes its files (its sentinel fires) a moment before it can be
        waited for, so a scan that finds no dead worker is repeated for a while.
        """
        deadline = time.monotonic() + _SETTLE
        while True:
            running, died = self._scan(dead)
            if died or time.monotonic() > deadline:
                return running, died
            time.sleep(0.001)

    def _scan(self, dead: int | None) -> tuple[dict[int, tuple[int, int | None]], bool]:
        board = self.board
        running: dict[int, tuple[int, int | None]] = {}
        died = False
        for base in range(0, len(board), _FIELDS):
            pid = board[base]
            if pid and (pid == dead or _has_exited(pid)):
                died = True
                if board[base + 1]:
                    item = board[base + 3]
                    running[board[base + 1]] = (board[base + 2], item - 1 if item else None)
        return running, died


def _has_exited(pid: int) -> bool:
    """Whether our child ``pid`` has exited (without reaping it: the pool will)."""
    waitid = getattr(os, "waitid", None)
    if waitid is None:  # pragma: no cover - not on Linux
        return pid not in {p.pid for p in multiprocessing.active_children()}
    try:
        return waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True  # already reaped: it has exited


def _cancel_inner(
    inner: concurrent.futures.Future[Any], outer: concurrent.futures.Future[Any]
) -> None:
    if outer.cancelled():
        inner.cancel()  # only stops a call still queued; a running one finishes unseen


def _notify_cancelled(future: concurrent.futures.Future[Any]) -> None:
    # Our futures never enter RUNNING (so that they stay cancellable); a cancelled one
    # must still be marked notified, or concurrent.futures.wait() never sees it.
    if future.cancelled():
        future.set_running_or_notify_cancel()


# -- in the worker ---------------------------------------------------------------------

_board: Any = None
_base = 0


def _start_worker(board: Any, claimed: Synchronized[int], slots: int, notify: Connection) -> None:
    """Worker initializer: exit with the parent, claim a slot on the board, say so."""
    global _board, _base
    _exit_with_parent()
    with claimed.get_lock():
        slot = claimed.value
        claimed.value = slot + 1
    if slot < slots:
        board[_FIELDS * slot] = os.getpid()
        _board, _base = board, _FIELDS * slot
        with contextlib.suppress(OSError):
            notify.send(slot)  # the parent's watcher starts watching this process
    notify.close()


def _exit_with_parent() -> None:
    parent = multiprocessing.parent_process()
    if parent is None:  # pragma: no cover - always set in a spawned worker
        return

    def watch() -> None:
        parent.join()  # returns when the parent process has ended, however it ended
        os._exit(1)

    threading.Thread(target=watch, name="hypernodes-parent-watch", daemon=True).start()


def _run_tracked(
    token: int, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    board = _board
    if board is None:
        return fn(*args, **kwargs)
    base = _base
    board[base + 2] = 0
    board[base + 3] = 0
    board[base + 1] = token
    try:
        return fn(*args, **kwargs)
    finally:
        board[base + 1] = 0


def tracked() -> bool:
    """Whether this process is a ``ProcessPool`` worker with a slot on its board."""
    return _board is not None


def item_marks() -> tuple[Any, int] | None:
    """Where this worker notes which map item of a shipped chunk it runs: ``(board, k)``,
    ``board[k] = index + 1`` before item ``index`` starts (a chunk's loop writes it there
    itself, no call per item); ``None`` outside a pool worker."""
    board = _board
    return None if board is None else (board, _base + 3)


def mark_position(position: int) -> None:
    """Note which node (1-based, 0: none) of a shipped item this worker is running."""
    board = _board
    if board is not None:
        board[_base + 2] = position
