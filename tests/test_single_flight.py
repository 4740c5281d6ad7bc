"""Single flight: concurrent runs missing one key compute it once, across tasks, loops and
threads; a cancelled or failing computation hands the key to a waiter."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hypernodes import DiskCache, MemoryCache, Pipeline, node
from hypernodes.cache import MISSING, flights


@pytest.fixture(params=["memory", "disk"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    return MemoryCache() if request.param == "memory" else DiskCache(tmp_path / "cache")


def waiting() -> int:
    """How many runs wait for a key in flight now."""
    return sum(flights.in_flight().values())


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Yield to the loop until ``condition()`` holds (it watches the flight registry,
    which changes only when a waiter registers)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.001)


def until_now(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


@pytest.mark.asyncio
async def test_200_concurrent_aruns_compute_once(store: Any) -> None:
    release = asyncio.Event()
    calls: list[int] = []  # (a list: the code identity counts its type, not its state)

    @node(output_name="y")
    async def slow(x: int) -> dict[str, int]:
        calls.append(1)
        await release.wait()
        return {"double": 2 * x}

    pipeline = Pipeline([slow], cache=store)
    runs = [asyncio.create_task(pipeline.arun({"x": 21})) for _ in range(200)]
    await until(lambda: waiting() == 199)  # one computes, every other run waits for it
    release.set()
    results = await asyncio.gather(*runs)
    assert len(calls) == 1
    assert all(r == {"y": {"double": 42}} for r in results)
    assert flights.in_flight() == {}


@pytest.mark.asyncio
async def test_cancelling_the_computing_run_lets_a_waiter_compute(store: Any) -> None:
    entered = asyncio.Event()
    calls: list[int] = []  # (a list: the code identity counts its type, not its state)

    @node(output_name="y")
    async def slow(x: int) -> int:
        calls.append(1)
        if len(calls) == 1:
            entered.set()
            await asyncio.Event().wait()  # never set: only a cancel ends the first run
        return 2 * x

    pipeline = Pipeline([slow], cache=store)
    owner = asyncio.create_task(pipeline.arun({"x": 1}))
    await entered.wait()
    waiter = asyncio.create_task(pipeline.arun({"x": 1}))
    await until(lambda: waiting() == 1)
    owner.cancel()
    assert await waiter == {"y": 2}
    with pytest.raises(asyncio.CancelledError):
        await owner
    assert len(calls) == 2
    assert flights.in_flight() == {}


@pytest.mark.asyncio
async def test_a_failing_computation_lets_a_waiter_compute(store: Any) -> None:
    entered, fail = asyncio.Event(), asyncio.Event()
    calls: list[int] = []  # (a list: the code identity counts its type, not its state)

    @node(output_name="y")
    async def flaky(x: int) -> int:
        calls.append(1)
        if len(calls) == 1:
            entered.set()
            await fail.wait()
            raise RuntimeError("boom")
        return 2 * x

    pipeline = Pipeline([flaky], cache=store)
    owner = asyncio.create_task(pipeline.arun({"x": 1}))
    await entered.wait()
    waiter = asyncio.create_task(pipeline.arun({"x": 1}))
    await until(lambda: waiting() == 1)
    fail.set()
    assert await waiter == {"y": 2}
    with pytest.raises(Exception, match="flaky"):
        await owner
    assert len(calls) == 2


def test_two_threads_running_run_compute_once(store: Any) -> None:
    entered, release = threading.Event(), threading.Event()
    calls: list[int] = []  # (a list: the code identity counts its type, not its state)

    @node(output_name="y")
    def slow(x: int) -> int:
        calls.append(1)
        entered.set()
        assert release.wait(10)
        return 2 * x

    pipeline = Pipeline([slow], cache=store)
    results: list[Any] = []

    def run() -> None:
        results.append(pipeline.run({"x": 4}))

    first = threading.Thread(target=run)
    first.start()
    assert entered.wait(10)
    second = threading.Thread(target=run)
    second.start()
    until_now(lambda: waiting() == 1)  # the second thread waits for the first
    release.set()
    first.join(10)
    second.join(10)
    assert results == [{"y": 8}, {"y": 8}]
    assert len(calls) == 1


def test_runs_on_two_event_loops_compute_once(store: Any) -> None:
    entered, release = threading.Event(), threading.Event()
    calls: list[int] = []  # (a list: the code identity counts its type, not its state)

    @node(output_name="y")
    async def slow(x: int) -> int:
        calls.append(1)
        entered.set()
        while not release.is_set():  # (another thread sets it: poll this loop's clock)
            await asyncio.sleep(0.001)
        return 2 * x

    pipeline = Pipeline([slow], cache=store)
    results: list[Any] = []

    def run() -> None:
        results.append(asyncio.run(pipeline.arun({"x": 5})))

    first = threading.Thread(target=run)
    first.start()
    assert entered.wait(10)
    second = threading.Thread(target=run)
    second.start()
    until_now(lambda: waiting() == 1)
    release.set()
    first.join(10)
    second.join(10)
    assert results == [{"y": 10}, {"y": 10}]
    assert len(calls) == 1


def test_a_failing_run_in_one_thread_lets_the_other_compute(store: Any) -> None:
    entered, release = threading.Event(), threading.Event()
    calls: list[int] = []  # (a list: the code identity counts its type, not its state)

    @node(output_name="y")
    def flaky(x: int) -> int:
        calls.append(1)
        if len(calls) == 1:
            entered.set()
            assert release.wait(10)
            raise RuntimeError("boom")
        return 2 * x

    pipeline = Pipeline([flaky], cache=store)
    outcomes: list[Any] = []

    def run() -> None:
        try:
            outcomes.append(pipeline.run({"x": 3}))
        except Exception as exc:
            outcomes.append(type(exc).__name__)

    first = threading.Thread(target=run)
    first.start()
    assert entered.wait(10)
    second = threading.Thread(target=run)
    second.start()
    until_now(lambda: waiting() == 1)
    release.set()
    first.join(10)
    second.join(10)
    assert sorted(map(str, outcomes)) == ["NodeError", "{'y': 6}"]
    assert len(calls) == 2


def test_a_pool_worker_never_blocks_on_another_runs_flight() -> None:
    # A node body in a worker thread whose run() misses a key another run is computing
    # computes it itself: blocking could deadlock a pool whose worker that run needs.
    from hypernodes.executors.workers import _holding

    flight, owner = flights.claim(("a test domain",), "k")
    assert owner
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            outside = pool.submit(lambda: flights.worker_thread())
            inside = pool.submit(_holding, pool, None, None, flights.wait_now, flight)
            assert outside.result(5) is False
            assert inside.result(5) is False  # at once, not after the flight lands
    finally:
        flights.land(flight)


class _SlowReads(MemoryCache):
    """A store whose second read of a key, made while the key is missing, returns
    "missing" only after another run stored the key and landed its flight: a slow disk
    or a busy pool between a run's read and its claim."""

    def __init__(self, blocking: bool) -> None:
        super().__init__()
        self.blocking_io = blocking  # (async reads go through ``aget_entry`` when set)
        self.reads: dict[str, int] = {}
        self.second_read = threading.Event()
        self.stored = threading.Event()

    def get_entry(self, key: str) -> Any:
        entry = super().get_entry(key)
        self.reads[key] = self.reads.get(key, 0) + 1
        if entry is MISSING and self.reads[key] == 2:
            self.second_read.set()
            assert self.stored.wait(10)
            until_now(lambda: key not in flights.in_flight())  # landed: the read is stale now
        return entry

    async def aget_entry(self, key: str) -> Any:
        return await asyncio.to_thread(self.get_entry, key)

    def put_entry(self, key: str, value: Any, versions: Any, *, node: str | None = None) -> None:
        super().put_entry(key, value, versions, node=node)
        self.stored.set()


def _slow_first(store: _SlowReads, calls: list[int]) -> Pipeline:
    @node(output_name="y")
    def double(x: int) -> int:
        calls.append(1)
        assert store.second_read.wait(10)  # the other run read the key while it missed
        return 2 * x

    return Pipeline([double], cache=store)


def test_a_run_whose_read_missed_before_the_key_landed_reads_again_in_threads() -> None:
    store = _SlowReads(blocking=False)
    calls: list[int] = []  # (a list: the code identity counts its type, not its state)
    pipeline = _slow_first(store, calls)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(pipeline.run, {"x": 6}) for _ in range(2)]
        results = [run.result(20) for run in runs]
    assert results == [{"y": 12}, {"y": 12}]
    assert len(calls) == 1  # the late reader read again and hit, instead of computing
    assert flights.in_flight() == {}


@pytest.mark.asyncio
async def test_a_run_whose_read_missed_before_the_key_landed_reads_again_on_a_loop() -> None:
    store = _SlowReads(blocking=True)
    calls: list[int] = []  # (a list: the code identity counts its type, not its state)
    pipeline = _slow_first(store, calls)
    results = await asyncio.gather(pipeline.arun({"x": 7}), pipeline.arun({"x": 7}))
    assert results == [{"y": 14}, {"y": 14}]
    assert len(calls) == 1
    assert flights.in_flight() == {}


def test_a_landing_is_remembered_by_key_until_too_many_keys_land_after_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(flights, "_KEEP", 3)
    monkeypatch.setattr(flights, "_landed", {})
    monkeypatch.setattr(flights, "_forgotten", flights._forgotten)  # (restored after)
    mark = flights.landings()
    flight, owner = flights.claim(("a test domain",), "k0")
    assert owner
    assert not flights.landed_since("k0", mark)  # claiming is not landing
    flights.land(flight)
    flights.land(flight)  # (idempotent: one landing)
    assert flights.landings() == mark + 1
    assert flights.landed_since("k0", mark)
    assert not flights.landed_since("k0", mark + 1)  # noted after it landed
    assert not flights.landed_since("k1", mark)  # another key's landing is not this one's
    for name in ("k1", "k2", "k3", "k4", "k5"):
        flights.land(flights.claim(("a test domain",), name)[0])
    assert flights.landed_since("k5", mark + 5)
    assert not flights.landed_since("some other key", mark)  # 6 keys kept: it can tell
    flights.land(flights.claim(("a test domain",), "k6")[0])
    # 7 keys: cut back to the newest 3 (k4, k5, k6). Whoever noted a mark before k4
    # landed cannot tell now, and reads again; a mark since still tells.
    assert flights.landed_since("some other key", mark)
    assert flights.landed_since("some other key", mark + 3)
    assert not flights.landed_since("some other key", mark + 4)
    assert flights.landed_since("k6", mark + 4)
    assert not flights.landed_since("k1", mark + 4)
