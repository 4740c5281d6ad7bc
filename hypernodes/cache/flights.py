"""Single flight: one computation per cache key at a time in this process.

Runs that miss the same key of the same store ask :func:`claim`: the first gets the
:class:`Flight` and computes; the others wait for it (an event-loop future woken with
``call_soon_threadsafe``, or a thread event for runs that own their thread) and then look
the key up again. The owner ends its flight with :func:`land` whether it stored a result,
failed or was cancelled: a waiter that then still misses claims the key and computes
itself, so a cancelled or failing owner never leaves anyone waiting for ever.

A run reads the store before it claims, so a flight can land between the two: the run
read "missing", the owner stored the key and landed, and the run would then claim the key
and compute it a second time. Landings are numbered, and the number of the last landing
of each of the newest ``_KEEP`` keys landed is kept: a run notes :func:`landings` before it
reads and, once it owns the key, asks :func:`landed_since` whether the key landed after
that (or whether so many keys landed since that it cannot tell): if so, it lands its
own flight (its waiters read again too) and reads again before claiming once more.

The registry is process-wide on purpose: concurrent runs (their own event loops, their
own threads) share it, as they share the store. It holds only keys in flight, and the
numbers of the newest landings.
This module must not import the rest of HyperNodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Hashable
from typing import Any

__all__ = [
    "Flight",
    "claim",
    "in_flight",
    "land",
    "landed_since",
    "landings",
    "wait",
    "wait_now",
]

_lock = threading.Lock()
_flights: dict[tuple[Hashable, str], Flight] = {}
_KEEP = 4096
_landings = 0  # flights landed so far in this process (each one's number)
# key -> the number of its last landing: at least the newest _KEEP landings' keys (it is
# cut back to those when it holds twice as many).
_landed: dict[str, int] = {}
_forgotten = 0  # every landing numbered up to this may have been dropped from ``_landed``


class Flight:
    """A key being computed by one run; others wait for it to land.

    Attributes:
        slot: ``(store domain, key)``, where it sits in the registry.
        thread: The ident of the thread that claimed it (a run in that thread never waits
            for it: it could be the one holding it up).
        waiters: ``(loop, future)`` pairs and ``threading.Event`` objects to wake.
        landed: Whether its owner is done with it.
    """

    __slots__ = ("landed", "slot", "thread", "waiters")

    def __init__(self, slot: tuple[Hashable, str]) -> None:
        self.slot = slot
        self.thread = threading.get_ident()
        self.waiters: list[Any] = []
        self.landed = False

    @property
    def key(self) -> str:
        """The cache key."""
        return self.slot[1]

    def __repr__(self) -> str:
        state = "landed" if self.landed else f"{len(self.waiters)} waiting"
        return f"<Flight {self.key[:12]}… {state}>"


def claim(domain: Hashable, key: str) -> tuple[Flight, bool]:
    """The flight of ``key`` in ``domain`` (one store) and whether the caller owns it now
    (it must :func:`land` it) or another run does (the caller may wait for it)."""
    slot = (domain, key)
    with _lock:
        flight = _flights.get(slot)
        if flight is None:
            flight = _flights[slot] = Flight(slot)
            return flight, True
        return flight, False


def land(flight: Flight) -> None:
    """End ``flight`` (its owner stored the result, failed or was cancelled) and wake its
    waiters. Idempotent."""
    global _landings, _landed, _forgotten
    with _lock:
        if flight.landed:
            return
        flight.landed = True
        _landings += 1
        _landed[flight.slot[1]] = _landings
        if len(_landed) > 2 * _KEEP:
            _forgotten = _landings - _KEEP
            _landed = {key: n for key, n in _landed.items() if n > _forgotten}
        if _flights.get(flight.slot) is flight:
            del _flights[flight.slot]
        waiters, flight.waiters = flight.waiters, []
    for waiter in waiters:
        if isinstance(waiter, threading.Event):
            waiter.set()
            continue
        loop, future = waiter
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits there now
            loop.call_soon_threadsafe(_wake, future)


def landings() -> int:
    """How many flights have landed so far in this process: note it before reading a key,
    and give it to :func:`landed_since` once this run owns the key."""
    return _landings


def landed_since(key: str, mark: int) -> bool:
    """Whether a flight of ``key`` (in any store) may have landed after :func:`landings`
    said ``mark``: a run may then have stored it since this run read it missing, and this
    run reads it again before computing it. ``True`` also when too many keys landed since
    (more than ``_KEEP``; it cannot tell)."""
    return _landed.get(key, 0) > mark or _forgotten > mark


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():  # (a cancelled waiter's future is done)
        future.set_result(None)


async def wait(flight: Flight) -> None:
    """Wait on this event loop until ``flight`` lands (at once if it has).

    Raises:
        CancelledError: The waiting task was cancelled (the flight goes on).
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()
    with _lock:
        if flight.landed:
            return
        flight.waiters.append((loop, future))
    await future


def _never() -> bool:
    return False


worker_thread: Callable[[], bool] = _never
"""Whether the calling thread is a worker running a node body (the executors set this):
such a thread never blocks waiting for another run's flight, which might need this very
worker (a pool of one) to land."""


def wait_now(flight: Flight) -> bool:
    """Block this thread until ``flight`` lands; ``False`` (at once) when it was claimed
    by this very thread, which could be the one holding it up (a loop running inline), or
    when this thread is a pool worker (see ``worker_thread``): the caller then computes."""
    if flight.thread == threading.get_ident() or worker_thread():
        return False
    event = threading.Event()
    with _lock:
        if flight.landed:
            return True
        flight.waiters.append(event)
    event.wait()
    return True


def in_flight() -> dict[str, int]:
    """Keys in flight now and how many runs wait for each (for tests and debugging)."""
    with _lock:
        return {flight.key: len(flight.waiters) for flight in _flights.values()}
