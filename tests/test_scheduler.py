"""The eager scheduler and the executors: who starts when, how many run at once, where.

Concurrency is proven with events, barriers and counters (never sleeps-and-hope): a node
that must overlap with another waits for it on a barrier or an event, with a timeout
that turns a missing overlap into a failed assertion instead of a hang.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from hypernodes import HyperNodesEngine, InvalidExecutorError, Node, Pipeline, node
from hypernodes.executors import AsyncExecutor
from hypernodes.executors.processes import ProcessPool
from hypernodes.executors.workers import spawn_safe_context

WAIT = 10.0  # seconds a node waits for a peer before giving up (turns hangs into failures)


@pytest.fixture
def engine_factory() -> Iterator[Callable[..., HyperNodesEngine]]:
    """Engines made by a test, closed when it ends."""
    made: list[HyperNodesEngine] = []

    def make(**kwargs: Any) -> HyperNodesEngine:
        engine = HyperNodesEngine(**kwargs)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.close()


def fan(n: int, body: Callable[[int, Any], Any], *, is_async: bool) -> list[Node]:
    """``n`` independent nodes ``n0 .. n{n-1}``: node ``i`` reads ``x``, returns ``body(i, x)``
    as ``o{i}`` (awaited when ``is_async``)."""
    return [
        node(_bind_index(body, i, is_async), name=f"n{i}", output_name=f"o{i}") for i in range(n)
    ]


def _bind_index(body: Callable[[int, Any], Any], i: int, is_async: bool) -> Callable[..., Any]:
    if is_async:

        async def bound_async(x: Any) -> Any:
            return await body(i, x)

        return bound_async

    def bound(x: Any) -> Any:
        return body(i, x)

    return bound


# -- eager start: no level-by-level waves ----------------------------------------------


def test_async_child_of_fast_branch_starts_while_slow_sibling_still_runs(
    engine_factory: Callable[..., HyperNodesEngine],
) -> None:
    # root -> slow; root -> fast -> fast_child. `slow` can only finish once `fast_child`
    # has started; a level-by-level scheduler would wait for `slow` before `fast_child`.
    log: list[str] = []
    child_started = asyncio.Event()

    @node
    async def root(x: int) -> int:
        return x

    @node
    async def slow(root: int) -> bool:
        log.append("slow start")
        try:
            await asyncio.wait_for(child_started.wait(), WAIT)
        except TimeoutError:
            return False
        log.append("slow end")
        return True

    @node
    async def fast(root: int) -> int:
        log.append("fast")
        return root + 1

    @node
    async def fast_child(fast: int) -> int:
        log.append("fast_child start")
        child_started.set()
        return fast + 1

    engine = engine_factory(node_executor="async")
    result = Pipeline([root, slow, fast, fast_child], engine=engine).run({"x": 1})
    assert result["slow"] is True, "fast_child did not start before slow finished"
    assert log.index("fast_child start") < log.index("slow end")
    assert result["fast_child"] == 3


def test_threaded_child_of_fast_branch_starts_while_slow_sibling_still_runs(
    engine_factory: Callable[..., HyperNodesEngine],
) -> None:
    stamps: dict[str, float] = {}
    child_started = threading.Event()
    import time

    @node
    def root(x: int) -> int:
        return x

    @node
    def slow(root: int) -> bool:
        released = child_started.wait(WAIT)
        stamps["slow end"] = time.perf_counter()
        return released

    @node
    def fast(root: int) -> int:
        return root + 1

    @node
    def fast_child(fast: int) -> int:
        stamps["fast_child start"] = time.perf_counter()
        child_started.set()
        return fast + 1

    engine = engine_factory(node_executor="threaded", max_workers=2)
    result = Pipeline([root, slow, fast, fast_child], engine=engine).run({"x": 1})
    assert result["slow"] is True, "fast_child did not start before slow finished"
    assert stamps["fast_child start"] < stamps["slow end"]


def test_node_with_two_parents_waits_for_both(
    engine_factory: Callable[..., HyperNodesEngine],
) -> None:
    # The dependency counter must reach zero, not one: `join` may not start early.
    release_b = asyncio.Event()
    log: list[str] = []

    @node
    async def a(x: int) -> int:
        log.append("a")
        release_b.set()
        return x + 1

    @node
    async def b(x: int) -> int:
        await asyncio.wait_for(release_b.wait(), WAIT)
        await asyncio.sleep(0)
        log.append("b")
        return x + 2

    @node
    async def join(a: int, b: int) -> int:
        log.append("join")
        return a * b

    engine = engine_factory(node_executor="async")
    assert Pipeline([join, a, b], engine=engine).run({"x": 1}) == {"join": 6, "a": 2, "b": 3}
    assert log == ["a", "b", "join"]


# -- async -----------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 6])
def test_async_nodes_run_concurrently_on_the_loop(
    n: int, engine_factory: Callable[..., HyperNodesEngine]
) -> None:
    barrier = asyncio.Barrier(n)

    async def body(i: int, x: int) -> int:
        # Every node must be in flight at once for the barrier to open.
        await asyncio.wait_for(barrier.wait(), WAIT)
        return x + i

    engine = engine_factory(node_executor="async")
    result = Pipeline(fan(n, body, is_async=True), engine=engine).run({"x": 10})
    assert result == {f"o{i}": 10 + i for i in range(n)}


def test_async_max_concurrent_bounds_nodes_in_flight(
    engine_factory: Callable[..., HyperNodesEngine], probe: Callable[..., Any]
) -> None:
    counter = probe(target=3)

    async def body(i: int, x: int) -> int:
        async with counter.abody():
            await asyncio.sleep(0)
        return i

    engine = engine_factory(node_executor="async", max_concurrent=3)
    result = Pipeline(fan(8, body, is_async=True), engine=engine).run({"x": 0})
    assert result == {f"o{i}": i for i in range(8)}
    assert counter.entered == 8
    assert counter.peak == 3
    assert counter.reached


def test_async_default_bound_is_ten(
    engine_factory: Callable[..., HyperNodesEngine], probe: Callable[..., Any]
) -> None:
    counter = probe(target=10)

    async def body(i: int, x: int) -> int:
        async with counter.abody():
            await asyncio.sleep(0)
        return i

    engine = engine_factory(node_executor="async")
    Pipeline(fan(14, body, is_async=True), engine=engine).run({"x": 0})
    assert counter.peak == 10
    assert counter.reached


def test_async_executor_runs_sync_nodes_in_threads_concurrently(
    engine_factory: Callable[..., HyperNodesEngine],
) -> None:
    barrier = threading.Barrier(3, timeout=WAIT)
    loop_thread: list[str] = []

    def body(i: int, x: int) -> str:
        barrier.wait()
        return threading.current_thread().name

    @node
    async def where(x: int) -> str:
        loop_thread.append(threading.current_thread().name)
        return "loop"

    engine = engine_factory(node_executor="async")
    result = Pipeline([*fan(3, body, is_async=False), where], engine=engine).run({"x": 0})
    assert len({result[f"o{i}"] for i in range(3)}) == 3
    assert loop_thread[0] not in {result[f"o{i}"] for i in range(3)}


# -- threaded --------------------------------------------------------------------------


def test_threaded_runs_sync_nodes_in_parallel_threads(
    engine_factory: Callable[..., HyperNodesEngine],
) -> None:
    barrier = threading.Barrier(4, timeout=WAIT)

    def body(i: int, x: int) -> int:
        barrier.wait()  # raises BrokenBarrierError unless all four run at once
        return threading.get_ident()

    engine = engine_factory(node_executor="threaded", max_workers=4)
    result = Pipeline(fan(4, body, is_async=False), engine=engine).run({"x": 0})
    idents = {result[f"o{i}"] for i in range(4)}
    assert len(idents) == 4
    assert threading.get_ident() not in idents


@pytest.mark.parametrize("max_workers", [1, 2, 3])
def test_threaded_max_workers_bounds_the_peak(
    max_workers: int,
    engine_factory: Callable[..., HyperNodesEngine],
    probe: Callable[..., Any],
) -> None:
    counter = probe(target=max_workers)

    def body(i: int, x: int) -> int:
        with counter.body():
            return i

    engine = engine_factory(node_executor="threaded", max_workers=max_workers)
    Pipeline(fan(7, body, is_async=False), engine=engine).run({"x": 0})
    assert counter.entered == 7
    assert counter.peak == max_workers
    assert counter.reached


def test_threaded_default_width_is_the_cpu_count(
    engine_factory: Callable[..., HyperNodesEngine],
) -> None:
    from hypernodes.executors.workers import cpu_count

    engine = engine_factory(node_executor="threaded")
    node_lane = engine.lanes[0]
    assert node_lane.width == cpu_count()
    assert node_lane.executor is not None
    assert node_lane.executor._max_workers == cpu_count()  # type: ignore[attr-defined]


# -- parallel (process pool) -----------------------------------------------------------


def test_parallel_runs_lambdas_and_closures_in_other_processes(
    engine_factory: Callable[..., HyperNodesEngine],
) -> None:
    offset = 100

    def make_adder(k: int) -> Callable[[int], tuple[int, int]]:
        def add(x: int) -> tuple[int, int]:
            return x + k + offset, os.getpid()

        return add

    nodes = [
        node(lambda x: (x * 2, os.getpid()), name="double", output_name=("d", "pid_d")),
        node(make_adder(5), name="add5", output_name=("a", "pid_a")),
    ]

    @node
    def total(d: int, a: int) -> int:
        return d + a

    engine = engine_factory(node_executor="parallel", max_workers=2)
    result = Pipeline([*nodes, total], engine=engine).run({"x": 1})
    assert result["d"] == 2
    assert result["a"] == 106
    assert result["total"] == 108
    assert result["pid_d"] != os.getpid()
    assert result["pid_a"] != os.getpid()


@pytest.mark.parametrize("call", ["run", "map"])
def test_parallel_runs_a_one_node_pipeline(
    call: str, engine_factory: Callable[..., HyperNodesEngine]
) -> None:
    square = node(lambda x: (x * x, os.getpid()), name="square")
    pipeline = Pipeline([square], engine=engine_factory(node_executor="parallel", max_workers=1))
    if call == "run":
        value, pid = pipeline.run({"x": 3})["square"]
        assert value == 9 and pid != os.getpid()
    else:
        results = pipeline.map({"x": [1, 2]}, map_over="x")
        assert [r["square"][0] for r in results] == [1, 4]


def test_parallel_uses_a_spawn_safe_start_method(
    engine_factory: Callable[..., HyperNodesEngine],
) -> None:
    assert spawn_safe_context().get_start_method() == "spawn"
    engine = engine_factory(node_executor="parallel", max_workers=1)
    pool = engine.lanes[0].executor
    assert isinstance(pool, ProcessPool)
    assert pool.context.get_start_method() in ("forkserver", "spawn")
    # ... and with threads running in this process, it still works (fork would be unsafe).
    busy = threading.Event()
    helper = threading.Thread(target=busy.wait, args=(WAIT,))
    helper.start()
    try:
        square = node(lambda x: x * x, name="square")
        twice = node(lambda square: square * 2, name="twice")
        assert Pipeline([square, twice], engine=engine).run({"x": 3}) == {"square": 9, "twice": 18}
    finally:
        busy.set()
        helper.join()


def test_parallel_runs_independent_nodes_in_parallel_processes(
    engine_factory: Callable[..., HyperNodesEngine],
) -> None:
    # Two bodies meet on a cross-process barrier: only possible if both run at once.
    with multiprocessing.Manager() as manager:
        barrier = manager.Barrier(2, timeout=WAIT)

        def body(i: int, x: int) -> int:
            barrier.wait()
            return os.getpid()

        engine = engine_factory(node_executor="parallel", max_workers=2)
        result = Pipeline(fan(2, body, is_async=False), engine=engine).run({"x": 0})
    assert result["o0"] != result["o1"]
    assert os.getpid() not in result.values()


# -- executor instances ----------------------------------------------------------------


def _sync_pair() -> list[Node]:
    @node
    def left(x: int) -> tuple[int, str, int]:
        return x + 1, threading.current_thread().name, os.getpid()

    @node
    def right(x: int) -> tuple[int, str, int]:
        return x + 2, threading.current_thread().name, os.getpid()

    return [left, right]


def test_thread_pool_instance_runs_the_nodes_and_is_not_shut_down_by_the_engine() -> None:
    pool = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="users-pool")
    try:
        with HyperNodesEngine(node_executor=pool) as engine:
            result = Pipeline(_sync_pair(), engine=engine).run({"x": 1})
        assert result["left"][0] == 2 and result["right"][0] == 3
        assert result["left"][1].startswith("users-pool")
        assert result["right"][1].startswith("users-pool")
        # The engine closed, but the pool is the user's: it still accepts work.
        assert pool.submit(lambda: 42).result(WAIT) == 42
    finally:
        pool.shutdown()


def test_process_pool_instance_runs_the_nodes() -> None:
    pool = concurrent.futures.ProcessPoolExecutor(2, mp_context=spawn_safe_context())
    try:
        with HyperNodesEngine(node_executor=pool) as engine:
            result = Pipeline(_sync_pair(), engine=engine).run({"x": 1})
        assert result["left"][0] == 2 and result["right"][0] == 3
        assert result["left"][2] != os.getpid()
        assert pool.submit(abs, -3).result(WAIT) == 3  # still the user's, still open
    finally:
        pool.shutdown()


def test_loky_reusable_executor_runs_the_nodes() -> None:
    loky = pytest.importorskip("loky")
    pool = loky.get_reusable_executor(max_workers=2)
    try:
        with HyperNodesEngine(node_executor=pool) as engine:
            closure_offset = 7
            shifted = node(lambda x: (x + closure_offset, os.getpid()), name="shifted")
            result = Pipeline([*_sync_pair(), shifted], engine=engine).run({"x": 1})
        assert result["shifted"][0] == 8
        assert result["shifted"][1] != os.getpid()
        assert result["left"][2] != os.getpid()
    finally:
        pool.shutdown(wait=True)


def test_async_executor_instance_as_node_executor(probe: Callable[..., Any]) -> None:
    counter = probe(target=2)

    async def body(i: int, x: int) -> int:
        async with counter.abody():
            await asyncio.sleep(0)
        return i

    executor = AsyncExecutor(max_concurrent=2)
    try:
        with HyperNodesEngine(node_executor=executor) as engine:
            Pipeline(fan(5, body, is_async=True), engine=engine).run({"x": 0})
    finally:
        executor.shutdown()
    assert counter.peak == 2
    assert counter.reached


# -- sequential ------------------------------------------------------------------------


def _recording_dag(log: list[tuple[str, str]]) -> list[Node]:
    # Declared out of order on purpose: the order comes from the graph, not the list.
    @node
    async def d(a: int, c: int) -> int:
        log.append(("start", "d"))
        await asyncio.sleep(0)
        log.append(("end", "d"))
        return a + c

    @node
    async def a(x: int) -> int:
        log.append(("start", "a"))
        await asyncio.sleep(0.001)
        log.append(("end", "a"))
        return x + 1

    @node
    def b(x: int) -> int:
        log.append(("start", "b"))
        log.append(("end", "b"))
        return x + 2

    @node
    async def c(x: int) -> int:
        log.append(("start", "c"))
        await asyncio.sleep(0)
        log.append(("end", "c"))
        return x + 3

    return [d, a, b, c]


@pytest.mark.parametrize("call", ["run", "arun"])
def test_sequential_runs_one_node_at_a_time_in_a_deterministic_order(
    call: str, engine_factory: Callable[..., HyperNodesEngine]
) -> None:
    orders = []
    for _ in range(3):
        log: list[tuple[str, str]] = []
        pipeline = Pipeline(_recording_dag(log), engine=engine_factory())
        result = pipeline.run({"x": 0}) if call == "run" else asyncio.run(pipeline.arun({"x": 0}))
        assert result == {"d": 4, "a": 1, "b": 2, "c": 3}
        # One at a time: every start is immediately followed by its own end.
        starts, ends = log[0::2], log[1::2]
        assert all(
            s[0] == "start" and e == ("end", s[1]) for s, e in zip(starts, ends, strict=True)
        )
        orders.append([name for _, name in starts])
    assert orders[0] == ["a", "b", "c", "d"]
    assert orders[0] == orders[1] == orders[2]


def test_sequential_async_nodes_never_overlap(probe: Callable[..., Any]) -> None:
    counter = probe()

    async def body(i: int, x: int) -> int:
        async with counter.abody():
            for _ in range(3):
                await asyncio.sleep(0)  # give a concurrent scheduler every chance
        return i

    Pipeline(fan(6, body, is_async=True)).run({"x": 0})
    assert counter.entered == 6
    assert counter.peak == 1


def test_sequential_is_the_default(engine_factory: Callable[..., HyperNodesEngine]) -> None:
    engine = engine_factory()
    assert engine.node_executor == "sequential"
    assert engine.map_executor == "sequential"
    assert not engine.lanes[0].concurrent


# -- bad executors ---------------------------------------------------------------------


@pytest.mark.parametrize("role", ["node_executor", "map_executor"])
def test_unknown_alias_lists_the_valid_ones(role: str) -> None:
    with pytest.raises(InvalidExecutorError) as info:
        HyperNodesEngine(**{role: "threads"})
    message = str(info.value)
    assert role in message
    assert "'threads'" in message
    assert "did you mean 'threaded'" in message
    for alias in ("sequential", "async", "threaded", "parallel", "dask", "ray"):
        assert repr(alias) in message


def test_unknown_alias_without_a_close_match_still_lists_them() -> None:
    with pytest.raises(InvalidExecutorError, match="valid aliases are 'sequential', 'async'"):
        HyperNodesEngine(node_executor="gpu-cluster")


@pytest.mark.parametrize(
    "cls", [concurrent.futures.ThreadPoolExecutor, concurrent.futures.ProcessPoolExecutor]
)
def test_executor_class_instead_of_instance_teaches_the_fix(cls: type) -> None:
    with pytest.raises(InvalidExecutorError) as info:
        HyperNodesEngine(map_executor=cls)
    message = str(info.value)
    assert f"got the class {cls.__name__}" in message
    assert f"pass an instance, e.g. {cls.__name__}(max_workers=4)" in message


@pytest.mark.parametrize("bad", [42, object(), None])
def test_non_executor_objects_are_rejected(bad: object) -> None:
    with pytest.raises(InvalidExecutorError, match=r"concurrent\.futures\.Executor"):
        HyperNodesEngine(node_executor=bad)  # type: ignore[arg-type]


def test_invalid_executor_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        HyperNodesEngine(node_executor="nope")


def test_a_derived_scope_keeps_every_setting_it_does_not_change() -> None:
    from dataclasses import fields

    from hypernodes.executors.halting import new_halt
    from hypernodes.executors.workers import Lane
    from hypernodes.level import Limiter, Scope

    limiter = Limiter(3)
    scope = Scope(
        engine="e", pipeline="outer", concurrent=True, limiter=limiter,
        body=Lane("threads", None, 2, "threaded"), inline=False, halt=new_halt(),
        cache="a cache", inline_below=0.5,
    )  # fmt: skip
    limiter.owner = scope  # (an owner's derived levels are always copies)
    assert scope.derive() is not scope
    child = scope.derive(pipeline="inner", cache=None)
    assert (child.pipeline, child.cache, child.plain) == ("inner", None, True)
    assert not scope.plain  # the parent is unchanged
    for f in fields(Scope):
        if f.name not in ("pipeline", "cache", "plain"):
            assert getattr(child, f.name) is getattr(scope, f.name), f.name
    assert child.derive(pipeline="inner") is child  # nothing changes: no copy
    with pytest.raises(TypeError, match="Scope has no settings"):
        scope.derive(pipelin="typo")
