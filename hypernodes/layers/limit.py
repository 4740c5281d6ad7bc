"""``Limit``: one process-wide bound on how many attempts run at once and how fast they start.

A ``Limit`` is shared by every node carrying it, every map item, every nested level and
every concurrent ``run``/``arun``/``map`` in any thread of the process: its state sits
behind a ``threading.Lock`` and each waiter is woken on its own event loop. Attempts wait
on their loop (never in a worker thread or process), so waiting holds no worker and no
``max_concurrent`` slot.

- ``concurrency``: at most this many attempts hold the limit at once; waiters are served in
  arrival order, and a released permit is handed straight to the next waiter.
- ``rate``: a token bucket holding N tokens per period, full at the start, run as a
  generic cell rate algorithm: each attempt reserves the earliest start the bucket allows
  and sleeps until then, so many waiters cost one timer each, not a wake-up per token.

Processes: the orchestrator grants attempts. Sync bodies shipped to ``"parallel"``, Dask
or Ray workers are started from the orchestrator's loop after their attempt holds the
limit, and a map whose plan has a limited node runs its items' steps from the
orchestrator (shipping each body) instead of shipping whole items. A ``Limit`` unpickled
in the process that made it is the same object; in another process it is a fresh bound
of the same spec (only code running there, such as a pipeline a worker runs itself,
would use it).
"""

from __future__ import annotations

import math
import os
import re
import threading
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from time import monotonic
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    import asyncio

    from ..level import Scope
    from ..plan import Step
    from .chain import Attempt

__all__ = ["Limit", "LimitLayer", "as_limits"]

_PERIODS = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
}

_RATE = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*/\s*([a-z]+)\s*$")

# Limits by their id, so that one unpickled in the process that made it is that object.
_registry: weakref.WeakValueDictionary[str, Limit] = weakref.WeakValueDictionary()
_registry_lock = threading.Lock()


class _Waiter:
    """One attempt waiting for a permit, woken on its own loop."""

    __slots__ = ("future", "granted", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.granted = False

    def wake(self) -> bool:
        """Tell the waiter it holds a permit; ``False`` when its loop is gone."""
        try:
            self.loop.call_soon_threadsafe(_settle, self.future)
        except RuntimeError:  # its loop closed: the permit goes to the next waiter
            return False
        return True


def _running_loop() -> asyncio.AbstractEventLoop:
    import asyncio  # deferred: defining nodes never imports asyncio (a loop runs here)

    return asyncio.get_running_loop()


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def parse_rate(rate: object, name: str) -> tuple[float, float]:
    """``(tokens, seconds)`` from ``"N/s"``, ``"N/min"``, ``"N/h"`` or ``(N, seconds)``.

    Raises:
        ConfigError: Not one of those forms, or N or the period is not positive.
    """
    fix = 'write rate="20/s", "500/min", "1000/h" or (tokens, seconds), e.g. (5, 2.0)'
    if isinstance(rate, str):
        match = _RATE.match(rate.lower())
        period = _PERIODS.get(match.group(2)) if match else None
        if match is None or period is None:
            raise ConfigError(f"Limit {name!r}: cannot read rate={rate!r}; {fix}")
        tokens = float(match.group(1))
    elif isinstance(rate, tuple) and len(rate) == 2:
        tokens, period = rate
        if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in rate):
            raise ConfigError(f"Limit {name!r}: rate={rate!r} must hold two numbers; {fix}")
        tokens, period = float(tokens), float(period)
    else:
        raise ConfigError(f"Limit {name!r}: rate={rate!r} is not a rate; {fix}")
    if not (tokens >= 1 and math.isfinite(tokens)) or not (period > 0 and math.isfinite(period)):
        raise ConfigError(
            f"Limit {name!r}: rate={rate!r} needs at least 1 token per positive period; {fix}"
        )
    return tokens, period


class Limit:
    """A bound on the attempts of every node carrying it, process-wide.

    Args:
        name: A name for messages, progress and telemetry.
        concurrency: At most this many attempts run at once.
        rate: At most N attempts start per period: ``"N/s"``, ``"N/min"``, ``"N/h"`` or
            ``(N, seconds)``; a bucket of N, full at the start.

    Raises:
        ConfigError: Neither bound given, or a bad value.

    Example:
        >>> openai = Limit("openai", concurrency=8, rate="500/min")
    """

    __slots__ = (
        "__weakref__",
        "_active",
        "_interval",
        "_lock",
        "_next",
        "_tolerance",
        "_uid",
        "_waiters",
        "concurrency",
        "name",
        "rate",
    )

    def __init__(
        self,
        name: str,
        *,
        concurrency: int | None = None,
        rate: str | tuple[float, float] | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"Limit needs a non-empty name, got {name!r}")
        if concurrency is not None and (
            not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1
        ):
            raise ConfigError(
                f"Limit {name!r}: concurrency must be an int >= 1 or None, got {concurrency!r}"
            )
        if concurrency is None and rate is None:
            raise ConfigError(
                f"Limit {name!r} bounds nothing; give concurrency=N, rate='N/s' (or both)"
            )
        self.name = name
        self.concurrency = concurrency
        self.rate = rate
        self._interval = self._tolerance = 0.0
        if rate is not None:
            tokens, period = parse_rate(rate, name)
            self._interval = period / tokens  # one token per interval
            self._tolerance = period - self._interval  # a burst of `tokens` at once
        self._lock = threading.Lock()
        self._active = 0
        self._waiters: deque[_Waiter] = deque()
        self._next = -math.inf  # the bucket's theoretical arrival time (GCRA)
        self._uid = os.urandom(16).hex()
        with _registry_lock:
            _registry[self._uid] = self

    def __repr__(self) -> str:
        bounds = [f"concurrency={self.concurrency}"] if self.concurrency is not None else []
        if self.rate is not None:
            bounds.append(f"rate={self.rate!r}")
        return f"Limit({self.name!r}, {', '.join(bounds)})"

    def __reduce__(self) -> tuple[Callable[..., Limit], tuple[Any, ...]]:
        return (_restore, (self._uid, self.name, self.concurrency, self.rate))

    @property
    def active(self) -> int:
        """How many attempts hold this limit's concurrency now."""
        return self._active

    # -- acquiring ----------------------------------------------------------------------

    def acquire(self) -> Awaitable[None] | None:
        """Take a permit (and a start token); ``None`` when both were free at once, else an
        awaitable that returns once the attempt may start. Call from a running loop, and
        await what it returns at once."""
        with self._lock:
            if self.concurrency is not None:
                if self._active < self.concurrency and not self._waiters:
                    self._active += 1
                else:
                    waiter = _Waiter(_running_loop())
                    self._waiters.append(waiter)
                    return self._queue(waiter)
            if self._interval:
                delay = self._reserve()
                if delay > 0:
                    return self._sleep(delay)
        return None

    async def _queue(self, waiter: _Waiter) -> None:
        try:
            await waiter.future
        except BaseException:
            with self._lock:
                if waiter.granted:
                    self._release()  # granted as we were cancelled: pass it on
                else:
                    self._waiters.remove(waiter)
            raise
        if self._interval:
            with self._lock:
                delay = self._reserve()
            if delay > 0:
                await self._sleep(delay)

    async def _sleep(self, delay: float) -> None:
        import asyncio  # deferred: as in _running_loop

        try:
            await asyncio.sleep(delay)
        except BaseException:
            self.release()
            raise

    def _reserve(self) -> float:
        """Reserve the earliest start the bucket allows; the seconds until then (under the
        lock)."""
        now = monotonic()
        start = max(now, self._next - self._tolerance)
        self._next = max(self._next, start) + self._interval
        return start - now

    def release(self) -> None:
        """Give a permit back (to the next waiter, if any). Thread-safe."""
        if self.concurrency is None:
            return
        with self._lock:
            self._release()

    def _release(self) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            waiter.granted = True
            if waiter.wake():
                return  # the permit changes hands: _active stays
            waiter.granted = False
        self._active -= 1


def _restore(uid: str, name: str, concurrency: int | None, rate: Any) -> Limit:
    with _registry_lock:
        known = _registry.get(uid)
    if known is not None:
        return known
    limit = Limit(name, concurrency=concurrency, rate=rate)
    with _registry_lock:
        # (Under its original id: later copies in this process find this one.)
        del _registry[limit._uid]
        limit._uid = uid
        _registry[uid] = limit
    return limit


def as_limits(limit: object, node: str) -> tuple[Limit, ...]:
    """``@node(limit=...)`` as a tuple of limits (one ``Limit`` or a sequence of them).

    Raises:
        ConfigError: Something other than ``Limit`` objects, or one given twice.
    """
    if limit is None:
        return ()
    if isinstance(limit, Limit):
        return (limit,)
    if isinstance(limit, Sequence) and not isinstance(limit, str):
        limits = tuple(limit)
        if all(isinstance(x, Limit) for x in limits):
            if len({id(x) for x in limits}) != len(limits):
                raise ConfigError(f"node {node!r} lists the same Limit twice in limit=")
            return limits
    raise ConfigError(
        f"node {node!r}: limit= takes a Limit or a list of them, got {limit!r}; "
        'e.g. limit=Limit("api", concurrency=8)'
    )


class LimitLayer:
    """Holds the node's limits, then the level's ``max_concurrent`` slot, for one attempt.

    Limits are taken in the node's order and given back when the attempt ends, however
    it ends; a waiting attempt holds nothing but its place in the queue.
    """

    __slots__ = ("inner", "limits")

    def __init__(self, inner: Attempt, limits: tuple[Limit, ...]) -> None:
        self.inner = inner
        self.limits = limits

    async def __call__(self, step: Step, args: tuple[Any, ...], scope: Scope, slot: Any) -> Any:
        limits = self.limits
        if len(limits) == 1:  # the common case, spelled out: one limit
            (limit,) = limits
            waiting = limit.acquire()
            if waiting is not None:
                await waiting
                if scope.halt.over:  # (it may have waited long)
                    limit.release()
                    await scope.halt.halted()
            try:
                if slot is None:
                    return await self.inner(step, args, scope, None)
                async with slot:
                    return await self.inner(step, args, scope, None)
            finally:
                limit.release()
        held: list[Limit] = []
        try:
            for limit in limits:
                waiting = limit.acquire()
                if waiting is not None:
                    await waiting
                held.append(limit)
            if scope.halt.over:  # (it may have waited long)
                await scope.halt.halted()
            if slot is None:
                return await self.inner(step, args, scope, None)
            async with slot:
                return await self.inner(step, args, scope, None)
        finally:
            for limit in held:
                limit.release()
