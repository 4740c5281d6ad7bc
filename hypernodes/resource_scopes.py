"""Resource scopes: the registries that build each object once per run, engine or process.

A :class:`Registry` holds the objects of one scope by resource and input values: the first
caller builds, concurrent callers (threads or tasks) wait for it, and ``close`` / ``aclose``
tear the objects down. :class:`RunResources` picks the registry of each scope for one run.
Async factories built from sync code run on the process's keeper loop (:func:`on_keeper`).
What a resource is, and its handles, live in :mod:`hypernodes.resources`.

This module must not import the plan, the scheduler or the engines (nor, at run time,
``hypernodes.resources``, which imports it).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import ResourceError

if TYPE_CHECKING:
    import asyncio

    from .resources import Held

__all__ = [
    "Registry",
    "RunResources",
    "for_workers",
    "on_keeper",
    "process_registry",
    "to_thread",
]

logger = logging.getLogger("hypernodes")

# -- the keeper loop ----------------------------------------------------------------------

# Async factories built from sync code (a sync node, in a thread or a worker process) run
# on one loop kept for the process, and are torn down there: an async generator must end
# on a loop that is still open (a loop closing aborts the generators it started).
_keeper: Any = None
_keeper_lock = threading.Lock()


def on_keeper(coro: Any) -> Any:
    """Run ``coro`` on the process's keeper loop (started on first use) and wait for it.

    Raises:
        BaseException: Whatever ``coro`` raises.
    """
    import asyncio  # deferred: defining resources never needs asyncio

    global _keeper
    with _keeper_lock:
        if _keeper is None or _keeper.is_closed():
            _keeper = asyncio.new_event_loop()
            threading.Thread(
                target=_keeper.run_forever, name="hypernodes-resources", daemon=True
            ).start()
        loop = _keeper
    return asyncio.run_coroutine_threadsafe(coro, loop).result()


async def to_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a worker thread, awaited on the running loop."""
    import asyncio  # deferred: defining resources never needs asyncio

    return await asyncio.to_thread(fn, *args)


# -- registries -----------------------------------------------------------------------------


class _Entry:
    """One object of a registry: being built, built, or failed."""

    __slots__ = ("close", "done", "error", "is_async", "keeper", "name", "value", "waiters")

    def __init__(self, name: str) -> None:
        self.name = name
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None
        self.close: Callable[[], Any] | None = None
        self.is_async = False
        self.keeper = False  # built from sync code: its async teardown runs on the keeper
        self.waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []


class Registry:
    """The objects of one scope (a run, an engine, a process), by resource and inputs.

    Lookups are thread-safe and loop-safe: the first caller builds, concurrent callers
    wait for it (threads on an event, tasks on a future of their own loop), and a failed
    build is forgotten (the next caller tries again). ``close`` / ``aclose`` tear the
    objects down in reverse order of building; the registry can be used again after.

    Args:
        name: The scope's name, for reprs and errors.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._entries: dict[Any, _Entry] = {}
        self._pid = os.getpid()

    def __repr__(self) -> str:
        return f"<Registry {self.name!r} objects={len(self._entries)}>"

    def _claim(self, held: Held) -> tuple[_Entry, bool]:
        with self._lock:
            if self._pid != os.getpid():
                # A forked child: the parent's objects are the parent's to tear down.
                self._entries = {}
                self._pid = os.getpid()
            entry = self._entries.get(held.key)
            if entry is None:
                entry = self._entries[held.key] = _Entry(held.resource.name)
                return entry, True
            return entry, False

    def _settle(self, held: Held, entry: _Entry, error: BaseException | None) -> None:
        with self._lock:
            entry.error = error
            if error is not None and self._entries.get(held.key) is entry:
                del self._entries[held.key]  # the next caller tries again
            entry.done.set()
            waiters, entry.waiters = entry.waiters, []
        for loop, future in waiters:
            with contextlib.suppress(RuntimeError):  # a loop closed meanwhile
                loop.call_soon_threadsafe(_wake, future)

    def get(self, held: Held) -> Any:
        """The object of ``held`` in this scope, built in this thread if needed.

        Raises:
            ResourceError: It failed to build.
        """
        while True:
            entry, owner = self._claim(held)
            if owner:
                try:
                    entry.value, entry.close, entry.is_async = held.resource.open(held.inputs)
                    entry.keeper = entry.is_async
                except BaseException as exc:
                    self._settle(held, entry, exc)
                    raise _build_failed(held, exc) from exc
                self._settle(held, entry, None)
                return entry.value
            entry.done.wait()
            if entry.error is None:
                return entry.value
            if isinstance(entry.error, Exception):
                raise _build_failed(held, entry.error) from entry.error
            # (its builder was cancelled or interrupted: build it here)

    async def aget(self, held: Held) -> Any:
        """The object of ``held`` in this scope, built on this loop if needed.

        Raises:
            ResourceError: It failed to build.
        """
        while True:
            entry, owner = self._claim(held)
            if entry.done.is_set():
                if entry.error is None:
                    return entry.value
            elif owner:
                try:
                    entry.value, entry.close, entry.is_async = await held.resource.aopen(
                        held.inputs
                    )
                except BaseException as exc:
                    self._settle(held, entry, exc)
                    if isinstance(exc, Exception):
                        raise _build_failed(held, exc) from exc
                    raise
                self._settle(held, entry, None)
                return entry.value
            else:
                await _wait(self, entry)
                if entry.error is None:
                    return entry.value
            if isinstance(entry.error, Exception):
                raise _build_failed(held, entry.error) from entry.error

    def _take(self) -> list[_Entry]:
        with self._lock:
            entries = [e for e in self._entries.values() if e.done.is_set() and e.error is None]
            self._entries = {}
        entries.reverse()  # last built, first torn down
        return entries

    def close(self) -> None:
        """Tear every built object down (async teardowns on a loop of HyperNodes').

        Raises:
            ResourceError: A teardown failed (the first one; every other still ran).
        """
        first: ResourceError | None = None
        for entry in self._take():
            if entry.close is None:
                continue
            try:
                if entry.is_async:
                    _close_async(entry)
                else:
                    entry.close()
            except Exception as exc:
                first = first or _teardown_failed(entry.name, exc)
        if first is not None:
            raise first from first.__cause__

    async def aclose(self) -> None:
        """Tear every built object down on this loop.

        Raises:
            ResourceError: A teardown failed (the first one; every other still ran).
        """
        first: ResourceError | None = None
        for entry in self._take():
            if entry.close is None:
                continue
            try:
                if entry.is_async and entry.keeper:
                    await to_thread(_close_async, entry)
                elif entry.is_async:
                    await entry.close()
                else:
                    entry.close()
            except Exception as exc:
                first = first or _teardown_failed(entry.name, exc)
        if first is not None:
            raise first from first.__cause__


def _close_async(entry: _Entry) -> None:
    """An async teardown from sync code: on the keeper loop if it was built there."""
    assert entry.close is not None
    if entry.keeper:
        on_keeper(entry.close())
        return
    from .bridge import run_sync  # deferred: async teardowns from sync code only

    run_sync(entry.close())


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _wait(registry: Registry, entry: _Entry) -> None:
    import asyncio  # deferred: defining resources never needs asyncio

    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()
    with registry._lock:
        if entry.done.is_set():
            return
        entry.waiters.append((loop, future))
    await future


def _build_failed(held: Held, exc: BaseException) -> ResourceError:
    if isinstance(exc, ResourceError):
        return exc
    return ResourceError(held.resource.name)


def _teardown_failed(name: str, exc: BaseException) -> ResourceError:
    error = ResourceError(name, during="teardown")
    error.__cause__ = exc
    return error


_process = Registry("process")


def process_registry() -> Registry:
    """The registry of this process (torn down when it exits)."""
    return _process


@atexit.register
def _close_process() -> None:
    if _process._pid != os.getpid():
        return
    try:
        _process.close()
    except ResourceError as exc:
        logger.warning("%s", exc)


# -- per run --------------------------------------------------------------------------------

# Engines whose runs happen in worker processes (they run shipped items): every scope is
# the process there (see ``for_workers``).
_worker_engines: weakref.WeakSet[Any] = weakref.WeakSet()


def for_workers(engine: Any) -> Any:
    """Mark ``engine`` as the one that runs shipped work in a worker process: its runs
    resolve every resource in the process registry. Returns ``engine``."""
    _worker_engines.add(engine)
    return engine


class RunResources:
    """The registries one top-level run resolves its resources in, by scope.

    Args:
        engine: The engine's registry (``"engine"`` scope), or ``None`` for the process's.
        worker: ``True`` in a worker process: every scope is the process there.
    """

    __slots__ = ("_run", "engine", "worker")

    def __init__(self, engine: Registry | None = None, *, worker: bool = False) -> None:
        self.engine = engine
        self.worker = worker
        self._run: Registry | None = None

    @classmethod
    def of(cls, engine: Any, registry: Registry | None) -> RunResources:
        """The registries of a top-level run of ``engine`` (whose registry is given)."""
        return cls(registry, worker=engine in _worker_engines)

    def registry(self, scope: str) -> Registry:
        """The registry of ``scope`` for this run."""
        if self.worker or scope == "process":
            return _process
        if scope == "engine":
            return self.engine or _process
        run = self._run
        if run is None:
            run = self._run = Registry("run")
        return run

    async def aclose(self, failed: BaseException | None = None) -> None:
        """Tear the run's objects down (the run is over).

        A teardown failure ends a run that succeeded with a ``ResourceError``; after a
        failed run it is logged (the run's own error is what the caller sees).

        Raises:
            ResourceError: A teardown failed, and ``failed`` is ``None``.
        """
        run, self._run = self._run, None
        if run is None:
            return
        try:
            await run.aclose()
        except ResourceError as exc:
            if failed is None:
                raise
            logger.warning("%s (after the run failed)", exc)
            failed.add_note(str(exc))
