"""Single flight: one computation per cache key at a time in this process.

Runs that miss the same key of the same store ask :func:`claim`: the first gets the
:class:`Flight` and computes; the others wait for it (an event-loop future woken with
``call_soon_threadsafe``, or a thread event for runs that own their thread) and then look
the key up again. The owner ends its flight with :func:`land` whether it stored a result,
failed or was cancelled: a waiter that then still misses claims the key and computes
itself, so a cancelled or failing owner never leaves anyone waiting for ever.

The registry is process-wide on purpose: concurrent runs (their own event loops, their
own threads) share it, as they share the store. It holds only keys in flight.
This module must not import the rest of HyperNodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Hashable
from typing import Any

__all__ = ["Flight", "claim", "in_flight", "land", "wait", "wait_now"]

_lock = threading.Lock()
_flights: dict[tuple[Hashable, str], Flight] = {}


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
    with _lock:
        if flight.landed:
            return
        flight.landed = True
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
