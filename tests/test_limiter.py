"""``max_concurrent``'s ``Limiter``: width slots, first come first served, cancel-safe."""

from __future__ import annotations

import asyncio

import pytest

from hypernodes.level import Limiter


@pytest.mark.asyncio
async def test_at_most_width_hold_a_slot_and_waiters_go_in_order() -> None:
    limiter = Limiter(3)
    inside = peak = 0
    order: list[int] = []

    async def one(i: int) -> None:
        nonlocal inside, peak
        async with limiter:
            order.append(i)
            inside += 1
            peak = max(peak, inside)
            await asyncio.sleep(0.001)
            inside -= 1

    await asyncio.gather(*(one(i) for i in range(20)))
    assert peak == 3 and order == list(range(20))
    async with limiter, limiter, limiter:  # every slot came back
        pass


@pytest.mark.asyncio
async def test_a_cancelled_waiter_takes_nothing() -> None:
    limiter = Limiter(1)
    async with limiter:
        waiter = asyncio.create_task(limiter.__aenter__())
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    async with asyncio.timeout(1):  # the slot is free again
        async with limiter:
            pass


@pytest.mark.asyncio
async def test_a_waiter_given_the_slot_as_it_is_cancelled_passes_it_on() -> None:
    limiter = Limiter(1)
    await limiter.__aenter__()
    first = asyncio.create_task(limiter.__aenter__())
    second = asyncio.create_task(limiter.__aenter__())
    await asyncio.sleep(0)
    await limiter.__aexit__()  # the slot goes to `first`...
    first.cancel()  # ...which is cancelled before it runs: `second` gets it
    with pytest.raises(asyncio.CancelledError):
        await first
    async with asyncio.timeout(1):
        await second
    await limiter.__aexit__()
    async with asyncio.timeout(1):
        async with limiter:
            pass


@pytest.mark.asyncio
async def test_waiters_dropped_by_a_release_then_cancelled_leave_no_trace() -> None:
    limiter = Limiter(1)
    await limiter.__aenter__()
    waiters = [asyncio.create_task(limiter.__aenter__()) for _ in range(3)]
    await asyncio.sleep(0)
    for task in waiters:
        task.cancel()
    await limiter.__aexit__()  # finds only cancelled waiters: the slot is free
    for task in waiters:
        with pytest.raises(asyncio.CancelledError):
            await task
    async with asyncio.timeout(1):
        async with limiter:
            pass
