"""AsyncExecutor: a concurrent.futures.Executor for sync and async callables.

Jupyter (a loop already running in the main thread) is covered by test_notebook.py.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import gc
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from hypernodes import HyperNodesEngine, Pipeline, node
from hypernodes.executors import AsyncExecutor

WAIT = 10.0

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")


@pytest.fixture
def executor() -> Iterator[AsyncExecutor]:
    ex = AsyncExecutor(max_concurrent=3)
    yield ex
    ex.shutdown(wait=True, cancel_futures=True)


def loop_threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name == "hypernodes-async-loop"}


# -- the Executor interface ------------------------------------------------------------


def test_is_a_concurrent_futures_executor(executor: AsyncExecutor) -> None:
    assert isinstance(executor, concurrent.futures.Executor)
    assert executor.max_concurrent == 3
    assert repr(executor) == "AsyncExecutor(max_concurrent=3) <running>"
    executor.shutdown()
    assert repr(executor) == "AsyncExecutor(max_concurrent=3) <shutdown>"


def test_default_max_concurrent_is_ten() -> None:
    with AsyncExecutor() as ex:
        assert ex.max_concurrent == 10


@pytest.mark.parametrize("bad", [0, -1, 2.5, "3", True])
def test_bad_max_concurrent(bad: Any) -> None:
    with pytest.raises(ValueError, match="max_concurrent must be an int >= 1"):
        AsyncExecutor(max_concurrent=bad)


def test_map_works_like_any_executor(executor: AsyncExecutor) -> None:
    async def square(x: int) -> int:
        await asyncio.sleep(0)
        return x * x

    assert list(executor.map(square, range(6))) == [0, 1, 4, 9, 16, 25]
    assert list(executor.map(abs, [-1, -2])) == [1, 2]


# -- from a plain thread ---------------------------------------------------------------


def test_sync_callable_runs_in_a_worker_thread(executor: AsyncExecutor) -> None:
    future = executor.submit(lambda a, b=0: (a + b, threading.current_thread().name), 2, b=3)
    assert isinstance(future, concurrent.futures.Future)
    value, thread = future.result(WAIT)
    assert value == 5
    assert thread.startswith("hypernodes-async")
    assert thread != threading.current_thread().name


def test_coroutine_from_a_plain_thread_runs_on_the_background_loop(
    executor: AsyncExecutor,
) -> None:
    async def where(x: int) -> tuple[int, str, type]:
        await asyncio.sleep(0)
        return x + 1, threading.current_thread().name, type(asyncio.get_running_loop())

    future = executor.submit(where, 1)
    assert isinstance(future, concurrent.futures.Future)
    value, thread, _ = future.result(WAIT)
    assert value == 2
    assert thread == "hypernodes-async-loop"
    # The same background loop serves later submissions.
    assert executor.submit(where, 2).result(WAIT)[1] == thread


def test_async_callable_object_is_awaited(executor: AsyncExecutor) -> None:
    class Fetch:
        async def __call__(self, x: int) -> int:
            await asyncio.sleep(0)
            return x * 10

    assert executor.submit(Fetch(), 4).result(WAIT) == 40


def test_errors_come_back_unchanged(executor: AsyncExecutor) -> None:
    class Custom(Exception):
        pass

    async def fails() -> None:
        raise Custom("async")

    def fails_sync() -> None:
        raise Custom("sync")

    for fn in (fails, fails_sync):
        error = executor.submit(fn).exception(WAIT)
        assert type(error) is Custom


def test_a_bad_call_fails_its_future(executor: AsyncExecutor) -> None:
    async def one(x: int) -> int:
        return x

    future = executor.submit(one, 1, 2)  # type: ignore[call-arg]
    assert isinstance(future.exception(WAIT), TypeError)


def test_contextvars_travel_with_the_submission(executor: AsyncExecutor) -> None:
    async def read_async() -> str:
        return request_id.get()

    def read_sync() -> str:
        return request_id.get()

    token = request_id.set("req-42")
    try:
        assert executor.submit(read_async).result(WAIT) == "req-42"
        assert executor.submit(read_sync).result(WAIT) == "req-42"
    finally:
        request_id.reset(token)


def test_submissions_from_many_threads(executor: AsyncExecutor) -> None:
    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = list(pool.map(lambda i: executor.submit(double, i), range(40)))
    assert [f.result(WAIT) for f in futures] == [2 * i for i in range(40)]


# -- bounds ----------------------------------------------------------------------------


def test_max_concurrent_bounds_coroutines(probe: Callable[..., Any]) -> None:
    counter = probe(target=3)

    async def body(i: int) -> int:
        async with counter.abody():
            await asyncio.sleep(0)
        return i

    with AsyncExecutor(max_concurrent=3) as ex:
        futures = [ex.submit(body, i) for i in range(9)]
        assert [f.result(WAIT) for f in futures] == list(range(9))
    assert counter.entered == 9
    assert counter.peak == 3
    assert counter.reached


def test_max_concurrent_bounds_sync_callables(probe: Callable[..., Any]) -> None:
    counter = probe(target=2)

    def body(i: int) -> int:
        with counter.body():
            return i

    with AsyncExecutor(max_concurrent=2) as ex:
        futures = [ex.submit(body, i) for i in range(7)]
        assert [f.result(WAIT) for f in futures] == list(range(7))
    assert counter.peak == 2
    assert counter.reached


# -- from inside a running loop --------------------------------------------------------


@pytest.mark.asyncio
async def test_coroutine_from_a_running_loop_runs_on_that_loop() -> None:
    caller = asyncio.get_running_loop()

    async def where() -> asyncio.AbstractEventLoop:
        await asyncio.sleep(0)
        return asyncio.get_running_loop()

    with AsyncExecutor() as ex:
        future = ex.submit(where)
        assert isinstance(future, concurrent.futures.Future)
        assert await asyncio.wrap_future(future) is caller
        assert loop_threads() == set() or all(
            t.name != "hypernodes-async-loop" or not t.is_alive() for t in threading.enumerate()
        )


@pytest.mark.asyncio
async def test_sync_callable_from_a_running_loop_does_not_block_it(
    heartbeat: Callable[..., Any],
) -> None:
    with AsyncExecutor() as ex:
        async with heartbeat() as hb:
            value = await asyncio.wrap_future(ex.submit(lambda: time.sleep(0.3) or 7))
    assert value == 7
    assert hb.ticks > 5
    assert hb.max_gap < 0.1


@pytest.mark.asyncio
async def test_max_concurrent_on_the_running_loop(probe: Callable[..., Any]) -> None:
    counter = probe(target=2)

    async def body(i: int) -> int:
        async with counter.abody():
            await asyncio.sleep(0)
        return i

    with AsyncExecutor(max_concurrent=2) as ex:
        futures = [ex.submit(body, i) for i in range(6)]
        results = await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
    assert results == list(range(6))
    assert counter.peak == 2


@pytest.mark.asyncio
async def test_shutdown_wait_inside_the_loop_does_not_deadlock_on_its_own_work() -> None:
    release = asyncio.Event()

    async def waits() -> str:
        await release.wait()
        return "done"

    ex = AsyncExecutor()
    future = ex.submit(waits)
    ex.shutdown(wait=True)  # must return: the work needs this very loop to finish
    assert not future.done()
    release.set()
    assert await asyncio.wrap_future(future) == "done"


# -- cancellation ----------------------------------------------------------------------


def test_cancelling_a_pending_coroutine_future_cancels_its_task(executor: AsyncExecutor) -> None:
    started = threading.Event()
    cancelled = threading.Event()
    finished = threading.Event()

    async def forever() -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
            finished.set()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    future = executor.submit(forever)
    assert started.wait(WAIT)
    assert future.cancel()
    assert future.cancelled()
    assert cancelled.wait(WAIT), "the task kept running after its future was cancelled"
    assert not finished.is_set()


@pytest.mark.asyncio
async def test_cancelling_from_the_loop_cancels_the_task() -> None:
    cancelled = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with AsyncExecutor() as ex:
        future = ex.submit(forever)
        await asyncio.sleep(0)
        wrapped = asyncio.wrap_future(future)
        wrapped.cancel()  # cancelling the asyncio wrapper cancels the future, then the task
        await asyncio.wait_for(cancelled.wait(), WAIT)
        assert future.cancelled()


def test_a_task_cancelled_on_its_loop_cancels_the_future(executor: AsyncExecutor) -> None:
    async def cancels_itself() -> None:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        await asyncio.sleep(0)

    future = executor.submit(cancels_itself)
    with pytest.raises(concurrent.futures.CancelledError):
        future.result(WAIT)


# -- shutdown --------------------------------------------------------------------------


def test_submit_after_shutdown_raises() -> None:
    ex = AsyncExecutor()
    ex.shutdown()
    for fn in (abs, asyncio.sleep):
        with pytest.raises(RuntimeError, match="after shutdown"):
            ex.submit(fn, 0)


def test_shutdown_wait_true_waits_for_running_work() -> None:
    ex = AsyncExecutor()

    async def slow_async() -> str:
        await asyncio.sleep(0.2)
        return "async"

    def slow_sync() -> str:
        time.sleep(0.2)
        return "sync"

    futures = [ex.submit(slow_async), ex.submit(slow_sync)]
    ex.shutdown(wait=True)
    assert all(f.done() for f in futures)
    assert [f.result() for f in futures] == ["async", "sync"]
    assert not loop_threads()


def test_shutdown_wait_false_returns_at_once_and_work_still_completes() -> None:
    ex = AsyncExecutor()
    release = threading.Event()

    async def gated_async() -> str:
        while not release.is_set():
            await asyncio.sleep(0.005)
        return "async"

    def gated_sync() -> str:
        release.wait(WAIT)
        return "sync"

    futures = [ex.submit(gated_async), ex.submit(gated_sync)]
    ex.shutdown(wait=False)
    assert not any(f.done() for f in futures)  # returned without waiting
    release.set()
    assert [f.result(WAIT) for f in futures] == ["async", "sync"]


def test_shutdown_cancel_futures_cancels_unfinished_work() -> None:
    ex = AsyncExecutor(max_concurrent=1)
    cancelled = threading.Event()
    started = threading.Event()
    gate = threading.Event()

    async def forever() -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    def blocker() -> str:
        gate.wait(WAIT)
        return "ran"

    running = ex.submit(forever)
    assert started.wait(WAIT)  # (cancelled before it starts, it would never see the cancel)
    busy = ex.submit(blocker)
    queued = ex.submit(blocker)  # one thread: this one waits in the queue
    gate.set()
    ex.shutdown(wait=True, cancel_futures=True)
    assert running.cancelled()
    assert cancelled.is_set()
    assert busy.result() == "ran"
    assert queued.cancelled() or queued.result() == "ran"


def test_shutdown_is_idempotent_and_the_context_manager_shuts_down() -> None:
    with AsyncExecutor() as ex:
        assert ex.submit(asyncio.sleep, 0, "x").result(WAIT) == "x"
    with pytest.raises(RuntimeError):
        ex.submit(abs, 1)
    ex.shutdown()
    ex.shutdown(wait=False, cancel_futures=True)


def test_background_loop_thread_ends_with_shutdown() -> None:
    before = {t.ident for t in threading.enumerate()}
    ex = AsyncExecutor()
    ex.submit(asyncio.sleep, 0).result(WAIT)
    ex.submit(time.sleep, 0).result(WAIT)
    ex.shutdown()
    after = {t.ident for t in threading.enumerate() if t.is_alive()}
    assert after <= before


def test_a_dropped_executor_stops_its_loop_thread() -> None:
    ex = AsyncExecutor()
    ex.submit(asyncio.sleep, 0).result(WAIT)
    thread = next(t for t in threading.enumerate() if t.name == "hypernodes-async-loop")
    ref = weakref.ref(ex)
    del ex
    gc.collect()
    assert ref() is None
    thread.join(WAIT)
    assert not thread.is_alive()


def test_wait_and_as_completed_see_a_cancelled_coroutine(executor: AsyncExecutor) -> None:
    started = threading.Event()

    async def forever() -> None:
        started.set()
        await asyncio.sleep(3600)

    future = executor.submit(forever)
    assert started.wait(WAIT)
    future.cancel()
    done, not_done = concurrent.futures.wait([future], timeout=WAIT)
    assert done == {future} and not not_done
    assert list(concurrent.futures.as_completed([future], timeout=WAIT)) == [future]


# -- as a node or map executor of an engine --------------------------------------------


@pytest.mark.parametrize("role", ["node_executor", "map_executor"])
def test_max_concurrent_sync_bodies_run_at_once_as_an_engine_executor(role: str) -> None:
    # All 20 must be inside their bodies at once to pass the barrier: with fewer threads
    # than max_concurrent (the engine's default pool: min(32, cpu + 4)) it breaks.
    barrier = threading.Barrier(20, timeout=WAIT)

    def meet(i: int) -> int:
        barrier.wait()
        return i

    with AsyncExecutor(max_concurrent=20) as ex, HyperNodesEngine(**{role: ex}) as engine:
        if role == "node_executor":
            nodes = [node(meet, name=f"meet{i}", output_name=f"m{i}") for i in range(20)]
            pipeline = Pipeline(nodes, engine=engine)
            assert pipeline.run({"i": 1}) == {f"m{i}": 1 for i in range(20)}
        else:
            pipeline = Pipeline([node(meet, output_name="m")], engine=engine)
            assert pipeline.map({"i": list(range(20))}, "i") == [{"m": i} for i in range(20)]
