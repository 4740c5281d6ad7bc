"""No leaks: tasks, threads, child processes, loops and pools all end when they should."""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import pytest

from hypernodes import HyperNodesEngine, NodeError, Pipeline, node

WAIT = 10.0

# Threads that may outlive a run by design: one background loop thread for run() called
# inside a running loop, and the submitting helper thread of a cold remote executor.
LONG_LIVED = {"hypernodes-loop"}


def eventually(condition: Callable[[], bool], timeout: float = WAIT) -> bool:
    """Whether ``condition()`` becomes true within ``timeout`` seconds (for things that end
    asynchronously, like a pool dropped without close; not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def new_threads(before: set[int]) -> list[threading.Thread]:
    return [
        t
        for t in threading.enumerate()
        if t.ident not in before
        and t.is_alive()
        and t.name not in LONG_LIVED
        # The default executor of the caller's loop (aclose() uses to_thread) is the
        # caller's, and ends with that loop.
        and not t.name.startswith("asyncio_")
    ]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@node
async def fetch(x: int) -> int:
    await asyncio.sleep(0)
    return x + 1


@node
def compute(fetch: int) -> int:
    return fetch * 2


@node
async def loop_of(x: int) -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


@node
async def lingers(x: int) -> int:
    await asyncio.sleep(3600)
    return x


@node
async def fails(x: int) -> int:
    await asyncio.sleep(0)
    raise ValueError("fails")


# -- tasks -----------------------------------------------------------------------------


@pytest.mark.parametrize("executor", ["sequential", "async", "threaded"])
def test_no_tasks_left_on_the_threads_own_loop(executor: str) -> None:
    with HyperNodesEngine(node_executor=executor, map_executor=executor) as engine:
        pipeline = Pipeline([fetch, compute, loop_of], engine=engine)
        loop = pipeline.run({"x": 1})["loop_of"]
        pipeline.map({"x": list(range(20))}, "x")
        with pytest.raises(NodeError):
            Pipeline([fails, lingers, loop_of], engine=engine).run({"x": 1})
        assert asyncio.all_tasks(loop) == set()


@pytest.mark.asyncio
@pytest.mark.parametrize("executor", ["sequential", "async", "threaded"])
async def test_no_tasks_left_on_the_callers_loop(executor: str) -> None:
    async with HyperNodesEngine(node_executor=executor, map_executor=executor) as engine:
        pipeline = Pipeline([fetch, compute], engine=engine)
        await asyncio.gather(*(pipeline.arun({"x": i}) for i in range(20)))
        await pipeline.amap({"x": list(range(30))}, "x")
        with pytest.raises(NodeError):
            await Pipeline([fails, lingers], engine=engine).arun({"x": 1})
        with pytest.raises(NodeError):
            await Pipeline([fails, lingers], engine=engine).amap({"x": [1, 2, 3]}, "x")
    assert asyncio.all_tasks() == {asyncio.current_task()}


@pytest.mark.asyncio
async def test_no_tasks_left_on_the_background_loop() -> None:
    pipeline = Pipeline([fetch, compute, loop_of], engine=HyperNodesEngine(node_executor="async"))
    background = pipeline.run({"x": 1})["loop_of"]
    assert background is not asyncio.get_running_loop()
    with pytest.raises(NodeError):
        Pipeline([fails, lingers], engine=HyperNodesEngine(node_executor="async")).run({"x": 1})
    # Inspect the background loop from the background loop itself.
    future = asyncio.run_coroutine_threadsafe(_other_tasks(), background)
    assert await asyncio.wrap_future(future) == set()


async def _other_tasks() -> set[asyncio.Task[Any]]:
    return asyncio.all_tasks() - {asyncio.current_task()}  # type: ignore[operator]


@pytest.mark.asyncio
async def test_a_cancelled_arun_leaves_no_tasks_behind() -> None:
    started = asyncio.Event()

    @node
    async def slow(x: int) -> int:
        started.set()
        await asyncio.sleep(3600)
        return x

    async with HyperNodesEngine(node_executor="async") as engine:
        task = asyncio.create_task(Pipeline([slow, lingers], engine=engine).arun({"x": 1}))
        await asyncio.wait_for(started.wait(), WAIT)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert asyncio.all_tasks() == {asyncio.current_task()}


# -- threads ---------------------------------------------------------------------------


def test_engine_pool_threads_end_with_close() -> None:
    before = {t.ident for t in threading.enumerate()}
    engine = HyperNodesEngine(node_executor="threaded", map_executor="threaded", max_workers=3)
    pipeline = Pipeline([fetch, compute], engine=engine)
    for i in range(20):
        assert pipeline.run({"x": i}) == {"fetch": i + 1, "compute": 2 * (i + 1)}
    pipeline.map({"x": list(range(100))}, "x")
    during = new_threads(before)
    assert 1 <= len(during) <= 3  # the engine's pool, bounded by max_workers
    engine.close()
    assert new_threads(before) == []


@pytest.mark.asyncio
async def test_aclose_and_async_context_release_the_pools() -> None:
    before = {t.ident for t in threading.enumerate()}
    engine = HyperNodesEngine(node_executor="threaded", max_workers=2)
    await Pipeline([fetch, compute], engine=engine).arun({"x": 1})
    assert new_threads(before)
    await engine.aclose()
    assert new_threads(before) == []
    async with HyperNodesEngine(node_executor="async", map_executor="threaded") as engine2:
        await Pipeline([fetch, compute], engine=engine2).amap({"x": [1, 2, 3]}, "x")
        assert new_threads(before)
    assert new_threads(before) == []


def test_many_runs_keep_the_thread_count_bounded() -> None:
    before = {t.ident for t in threading.enumerate()}
    pipeline = Pipeline([fetch, compute])
    for executor in ("sequential", "async", "threaded"):
        with HyperNodesEngine(node_executor=executor) as engine:
            pipeline.with_engine(engine).run({"x": 0})
    pipeline.with_engine(None)
    counts = []
    for _round in range(3):
        for executor in ("sequential", "async", "threaded"):
            with HyperNodesEngine(node_executor=executor, max_workers=2) as engine:
                pipeline.with_engine(engine)
                for i in range(30):
                    pipeline.run({"x": i})
                pipeline.map({"x": list(range(50))}, "x")
        # Ours only, made here: threads of other tests (a cache's writer thread, say) may
        # still be winding down meanwhile (Python 3.13 CI once saw 22, 21, 21).
        counts.append(
            sum(
                t.name.startswith("hypernodes") and t.ident not in before
                for t in threading.enumerate()
            )
        )
    assert counts[0] == counts[1] == counts[2]


def test_a_closed_engine_can_be_used_again_and_closed_again() -> None:
    before = {t.ident for t in threading.enumerate()}
    engine = HyperNodesEngine(node_executor="threaded")
    pipeline = Pipeline([fetch, compute], engine=engine)
    pipeline.run({"x": 1})
    engine.close()
    assert pipeline.run({"x": 2}) == {"fetch": 3, "compute": 6}
    engine.close()
    engine.close()
    assert new_threads(before) == []


def test_a_dropped_engine_does_not_leak_its_thread_pool() -> None:
    before = {t.ident for t in threading.enumerate()}
    engine = HyperNodesEngine(node_executor="threaded", max_workers=2)
    Pipeline([fetch, compute], engine=engine).run({"x": 1})
    assert new_threads(before)
    ref = weakref.ref(engine)
    del engine
    gc.collect()
    assert ref() is None
    assert eventually(lambda: new_threads(before) == [])


# -- processes -------------------------------------------------------------------------


def test_no_child_processes_after_closing_a_parallel_engine() -> None:
    before = set(multiprocessing.active_children())
    with HyperNodesEngine(node_executor="parallel", map_executor="parallel", max_workers=2) as e:
        pipeline = Pipeline([node(lambda x: x + 1, name="fetch"), compute], engine=e)
        assert pipeline.run({"x": 1}) == {"fetch": 2, "compute": 4}
        assert pipeline.map({"x": [1, 2, 3]}, "x")[2] == {"fetch": 4, "compute": 8}
        assert set(multiprocessing.active_children()) - before
    assert set(multiprocessing.active_children()) - before == set()


def test_a_dropped_parallel_engine_does_not_leak_its_processes() -> None:
    before = set(multiprocessing.active_children())
    engine = HyperNodesEngine(node_executor="parallel", max_workers=2)
    pipeline = Pipeline([node(lambda x: x + 1, name="fetch"), compute], engine=engine)
    assert pipeline.run({"x": 1}) == {"fetch": 2, "compute": 4}
    children = set(multiprocessing.active_children()) - before
    assert children
    del engine, pipeline
    gc.collect()
    assert eventually(lambda: not any(p.is_alive() for p in children))
    assert eventually(lambda: set(multiprocessing.active_children()) - before == set())


# -- loops -----------------------------------------------------------------------------


def test_threads_that_called_run_and_ended_do_not_leak_their_loops() -> None:
    pipeline = Pipeline([fetch, compute])
    pipeline.run({"x": 0})
    gc.collect()
    before = open_fds()
    for i in range(50):
        t = threading.Thread(target=pipeline.run, args=({"x": i},))
        t.start()
        t.join(WAIT)
    gc.collect()
    assert open_fds() - before < 10, f"{open_fds() - before} file descriptors leaked"


def test_a_kept_error_does_not_pin_its_threads_loop() -> None:
    # A NodeError references frames that reference the thread's runner; the loop must
    # still close when the thread ends, not when the caller lets go of the error.
    pipeline = Pipeline([fails])
    with pytest.raises(NodeError):
        pipeline.run({"x": 0})
    gc.collect()
    before = open_fds()
    kept: list[BaseException] = []

    def work(i: int) -> None:
        try:
            pipeline.run({"x": i})
        except NodeError as err:
            kept.append(err)

    for i in range(50):
        t = threading.Thread(target=work, args=(i,))
        t.start()
        t.join(WAIT)
    gc.collect()
    assert len(kept) == 50
    assert open_fds() - before < 10, f"{open_fds() - before} file descriptors held"
    kept.clear()  # releasing them later warns about nothing (filterwarnings = error)
    gc.collect()
    assert open_fds() - before < 10


def _cyclic_garbage(call: Callable[[], object]) -> list[str]:
    """The HyperNodes objects (and task groups) that ``call()`` left in reference cycles:
    garbage only a collection of the oldest generation frees, which a service making a
    run per request then pays for in long collections."""
    call()  # (the first call may build what later ones reuse)
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        call()
        gc.collect()
        return sorted(
            type(o).__qualname__
            for o in gc.garbage
            if type(o).__module__.startswith("hypernodes") or type(o) is asyncio.TaskGroup
        )
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


@node(output_name="doubled")
def _double(x: int) -> int:
    return 2 * x


@node(output_name="total")
async def _total(doubled: int, y: int) -> int:
    await asyncio.sleep(0)
    return doubled + y


@pytest.mark.parametrize(
    "engine",
    [
        pytest.param(lambda: None, id="default"),
        pytest.param(lambda: HyperNodesEngine(node_executor="threaded"), id="threaded"),
        pytest.param(
            lambda: HyperNodesEngine(node_executor="async", map_executor="async"), id="async"
        ),
    ],
)
def test_a_run_leaves_no_reference_cycles_behind(engine: Callable[[], Any]) -> None:
    # A concurrent level's scope owns its limiter, which named the scope back (and the
    # scheduler's chain and launch closures named each other): each run left its scope,
    # cache runtime, task group and halt in a cycle until a full collection.
    inner = Pipeline([_double], name="inner").as_node(
        map_over="x", output_mapping={"doubled": "ds"}
    )
    flat = Pipeline([_double, _total, fetch], engine=engine())
    nested = Pipeline([inner], engine=engine())
    inputs = {"x": 1, "y": 2}
    assert _cyclic_garbage(lambda: flat.run(inputs)) == []
    assert _cyclic_garbage(lambda: asyncio.run(flat.arun(inputs))) == []
    assert _cyclic_garbage(lambda: flat.map({"x": [1, 2, 3], "y": 2}, map_over="x")) == []
    assert _cyclic_garbage(lambda: nested.run({"x": [1, 2]})) == []
    assert _cyclic_garbage(lambda: asyncio.run(nested.arun({"x": [1, 2]}))) == []
