"""``Scope``: one frozen object describing how one level of a run executes.

A level is a top-level run or map, a map item, or a nested pipeline. Its scope is resolved
once, when the level starts (by the engine), and read by every step of it: where sync
bodies run (decided here, once: ``inline`` or the ``body`` lane), how many nodes run at
once, the run's halt and worker budget, and the cache and callbacks of the level with
its callback context. A nested level is a derived scope (``derive``), handed to the
engine that runs it: there is no other record of "what the enclosing level was".
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, fields
from typing import Any

from .callbacks import CallbackContext, Dispatcher
from .executors.halting import Halt
from .executors.remote import Shipped
from .executors.workers import Lane

__all__ = ["Limiter", "Scope"]


class Limiter:
    """``max_concurrent``: ``width`` slots (``async with limiter``), first come first
    served, and the scope that made it.

    A slot given back goes straight to the longest waiter; a waiter cancelled once its
    slot was given passes it on. Taking a free slot is a counter (every step of a nested
    level takes one: ``asyncio.Semaphore`` cost ~1 us more per step).
    """

    __slots__ = ("_free", "_owner", "_waiters", "width")

    def __init__(self, width: int) -> None:
        self.width = width
        self._owner: weakref.ref[Scope] | None = None
        self._free = width
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def owner(self) -> Scope | None:
        """The scope that made it, held weakly: the scope holds its limiter, and a
        reference back would be a cycle that only a full garbage collection frees (with
        everything the scope holds: its cache runtime, its halt, its registries)."""
        ref = self._owner
        return None if ref is None else ref()

    @owner.setter
    def owner(self, scope: Scope | None) -> None:
        self._owner = None if scope is None else weakref.ref(scope)

    async def __aenter__(self) -> None:
        if self._free and not self._waiters:
            self._free -= 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # given the slot as the cancel came: pass it on
            else:
                with contextlib.suppress(ValueError):  # (a release may have dropped it)
                    self._waiters.remove(waiter)
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._release()

    def _release(self) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes to it: never free meanwhile
                return
        self._free += 1


@dataclass(frozen=True, slots=True, eq=False, weakref_slot=True)
class Scope:
    """How one level of a run executes: settings resolved once, read by every step.

    Attributes:
        engine: The engine running this level (nested pipelines may inherit it).
        pipeline: The name of the pipeline at this level (for error paths).
        concurrent: Whether independent nodes run concurrently.
        limiter: Bounds how many nodes run at once (``max_concurrent``), or ``None``.
            One per top-level run, shared by its nested levels on the same engine: only
            leaf attempts take a slot (nested pipelines and map items never do), so sharing
            it cannot deadlock.
        body: Where sync node bodies go when they do not run inline.
        inline: Whether sync bodies run inline (only on a loop HyperNodes owns).
        halt: The run's "run is over" signal (one per top-level run, shared by its levels):
            checked before anything of the run starts.
        budget: Bounds the run's sync bodies across all the pools they go to
            (``max_workers``), or ``None`` when one pool's own size bounds them.
        cache: The cache runtime of this level, or ``None``.
        callbacks: The dispatcher of this level, or ``None``.
        context: The callback context of this level (``None`` without callbacks).
        inline_below: Sync bodies bound for worker threads that take less than this
            (seconds, measured) run inline instead (``layers.place``); 0: never.
        resources: The registries the run's resources are resolved in, by scope (one
            ``RunResources`` per top-level run, shared by its levels), or ``None``.
        plain: Whether the level has neither cache nor callbacks (derived).
    """

    engine: Any
    pipeline: str
    concurrent: bool
    limiter: Limiter | None
    body: Lane
    inline: bool
    halt: Halt
    budget: asyncio.Semaphore | None = None
    cache: Any = None
    callbacks: Dispatcher | None = None
    context: CallbackContext | None = None
    resources: Any = None
    inline_below: float = 0.0
    plain: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "plain", self.cache is None and self.callbacks is None)

    def derive(self, **changes: Any) -> Scope:
        """A copy with some settings changed (for map items and nested levels); this
        scope itself when none changes (a copy costs a few microseconds), unless it owns
        its limiter (a derived level never does: it must take slots, see the scheduler).
        """
        limiter = self.limiter
        if limiter is not None and limiter.owner is self:
            return self._copy(changes)
        for name, value in changes.items():
            if getattr(self, name) is not value:
                return self._copy(changes)
        return self

    def _copy(self, changes: dict[str, Any]) -> Scope:
        # ``dataclasses.replace`` without its per-call walk of the fields and keyword
        # ``__init__`` (half its ~4 us; a nested level or a map's items make one each).
        unknown = changes.keys() - _SETTINGS
        if unknown:
            raise TypeError(f"Scope has no settings {sorted(unknown)}")
        new = object.__new__(Scope)
        put = object.__setattr__
        for name in _SETTINGS:
            put(new, name, changes[name] if name in changes else getattr(self, name))
        put(new, "plain", new.cache is None and new.callbacks is None)
        return new

    def offload(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        shipped: Shipped | None = None,
        label: str = "",
    ) -> Awaitable[Any]:
        """Start the sync ``fn(*args)`` where this level's sync bodies go (see ``Lane.call``)."""
        return self.body.call(fn, args, shipped, halt=self.halt, budget=self.budget, label=label)


_SETTINGS = tuple(f.name for f in fields(Scope) if f.init)
