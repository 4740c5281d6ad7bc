"""The sync/async bridge: run() with and without a running loop, re-entrancy, the opt-in
nested-loop mode, and arun() never blocking the caller's loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from hypernodes import HyperNodesEngine, MemoryCache, NodeError, Pipeline, node
from hypernodes.executors.workers import spawn_safe_context

WAIT = 10.0


@pytest.fixture
def engine_factory() -> Iterator[Callable[..., HyperNodesEngine]]:
    made: list[HyperNodesEngine] = []

    def make(**kwargs: Any) -> HyperNodesEngine:
        engine = HyperNodesEngine(**kwargs)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.close()


@node
async def where(x: int) -> tuple[asyncio.AbstractEventLoop, str]:
    await asyncio.sleep(0)
    return asyncio.get_running_loop(), threading.current_thread().name


@node
def plus_one(x: int) -> int:
    return x + 1


def located() -> Pipeline:
    return Pipeline([where, plus_one], name="located")


# -- no loop running: a kept per-thread loop -------------------------------------------


def test_run_without_a_loop_uses_uvloop_in_the_calling_thread() -> None:
    uvloop = pytest.importorskip("uvloop")
    result = located().run({"x": 1})
    loop, thread = result["where"]
    assert isinstance(loop, uvloop.Loop)
    assert thread == threading.current_thread().name
    assert result["plus_one"] == 2


def test_the_thread_keeps_its_loop_across_calls() -> None:
    pipeline = located()
    loops = [pipeline.run({"x": i})["where"][0] for i in range(3)]
    loops.append(pipeline.map({"x": [1, 2]}, "x")[1]["where"][0])
    loops.append(located().run({"x": 0})["where"][0])
    assert all(loop is loops[0] for loop in loops)
    assert not loops[0].is_closed()
    assert not loops[0].is_running()  # kept, not left running between calls


def test_each_thread_has_its_own_loop() -> None:
    pipeline = located()
    seen: dict[str, list[asyncio.AbstractEventLoop]] = {}

    def work(name: str) -> None:
        seen[name] = [pipeline.run({"x": i})["where"][0] for i in range(2)]

    threads = [threading.Thread(target=work, args=(f"t{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert sorted(seen) == ["t0", "t1", "t2"]
    for loops in seen.values():
        assert loops[0] is loops[1]
    assert len({id(loops[0]) for loops in seen.values()}) == 3


def test_run_from_many_threads_at_once() -> None:
    @node
    async def fetch(user: int) -> str:
        await asyncio.sleep(0.001)
        return f"user-{user}"

    @node
    def shout(fetch: str) -> str:
        return fetch.upper()

    pipeline = Pipeline([fetch, shout])
    barrier = threading.Barrier(16, timeout=WAIT)
    results: dict[int, dict[str, Any]] = {}

    def work(i: int) -> None:
        barrier.wait()  # all threads call run() together
        for k in range(5):
            results[i * 10 + k] = pipeline.run({"user": i * 10 + k})

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert len(results) == 80
    for user, result in results.items():
        assert result == {"fetch": f"user-{user}", "shout": f"USER-{user}"}


# -- a loop already running: one long-lived background loop thread ---------------------


@pytest.mark.asyncio
async def test_run_inside_a_running_loop_uses_one_background_loop_thread() -> None:
    caller = asyncio.get_running_loop()
    pipeline = located()
    first = pipeline.run({"x": 1})
    second = pipeline.run({"x": 2})
    mapped = pipeline.map({"x": [3, 4]}, "x")
    loops = [first["where"][0], second["where"][0], *(r["where"][0] for r in mapped)]
    threads = [first["where"][1], second["where"][1], *(r["where"][1] for r in mapped)]
    assert first["plus_one"] == 2 and second["plus_one"] == 3
    assert [r["plus_one"] for r in mapped] == [4, 5]
    assert all(loop is loops[0] for loop in loops)
    assert loops[0] is not caller
    assert set(threads) == {"hypernodes-loop"}
    assert threading.current_thread().name != "hypernodes-loop"


@pytest.mark.asyncio
async def test_run_inside_a_running_loop_raises_the_users_error() -> None:
    class Oops(Exception):
        pass

    @node
    async def fails(x: int) -> int:
        raise Oops("from the node")

    with pytest.raises(NodeError) as info:
        Pipeline([fails]).run({"x": 1})
    assert type(info.value.__cause__) is Oops
    # The loop we are on is still fine.
    await asyncio.sleep(0)


@pytest.mark.asyncio
async def test_run_from_threads_while_a_loop_runs() -> None:
    pipeline = located()

    def work(i: int) -> int:
        # Each of these threads has no loop of its own running: per-thread loops.
        return int(pipeline.run({"x": i})["plus_one"])

    results = await asyncio.gather(*(asyncio.to_thread(work, i) for i in range(8)))
    assert results == [i + 1 for i in range(8)]


# -- re-entrancy: a node that calls run() itself ---------------------------------------


@node
def inner_double(v: int) -> int:
    return v * 2


@node
async def inner_async(inner_double: int) -> int:
    await asyncio.sleep(0)
    return inner_double + 1


INNER = Pipeline([inner_double, inner_async], name="inner")


@node
def calls_run(x: int) -> int:
    return int(INNER.run({"v": x})["inner_async"])


@node
async def acalls_run(x: int) -> int:
    # Blocking call from a coroutine: the bridge must not wait on the loop it blocks.
    return int(INNER.run({"v": x})["inner_async"])


@node
def calls_map(x: int) -> list[int]:
    return [r["inner_async"] for r in INNER.map({"v": [x, x + 1]}, "v")]


@pytest.mark.parametrize("executor", ["sequential", "async", "threaded"])
def test_a_node_that_calls_run_does_not_deadlock(
    executor: str, engine_factory: Callable[..., HyperNodesEngine]
) -> None:
    engine = engine_factory(node_executor=executor)
    pipeline = Pipeline([calls_run, acalls_run, calls_map], engine=engine)
    assert pipeline.run({"x": 3}) == {"calls_run": 7, "acalls_run": 7, "calls_map": [7, 9]}


@pytest.mark.asyncio
@pytest.mark.parametrize("executor", ["sequential", "async"])
async def test_reentrant_run_inside_the_background_loop(
    executor: str, engine_factory: Callable[..., HyperNodesEngine]
) -> None:
    # Outer run() from a running loop -> background loop; its async node calls run()
    # again while running *on* the background loop.
    seen: list[str] = []

    @node
    async def reenter(x: int) -> int:
        seen.append(threading.current_thread().name)
        return int(INNER.run({"v": x})["inner_async"])

    engine = engine_factory(node_executor=executor)
    result = Pipeline([reenter, calls_run], engine=engine).run({"x": 5})
    assert result == {"reenter": 11, "calls_run": 11}
    assert seen == ["hypernodes-loop"]


@pytest.mark.parametrize("executor", ["threaded", "async"])
def test_reentrant_run_with_a_saturated_pool_does_not_deadlock(
    executor: str, run_python: Callable[..., Any]
) -> None:
    # In a subprocess: a deadlocked pool thread cannot be freed from inside this one.
    try:
        proc = run_python(_REENTRANT.format(executor=executor), timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("deadlocked")
    assert proc.returncode == 0, proc.stderr
    assert "{'outer_node': 2, 'other': 1}" in proc.stdout


_REENTRANT = """
from hypernodes import HyperNodesEngine, Pipeline, node

engine = HyperNodesEngine(node_executor={executor!r}, max_workers=1)

@node
def inner_node(v):
    return v + 1

inner = Pipeline([inner_node, node(lambda inner_node: inner_node, name="tail")], engine=engine)

@node
def outer_node(x):
    return inner.run({{"v": x}})["inner_node"]

@node
def other(x):
    return x

print(Pipeline([outer_node, other], engine=engine).run({{"x": 1}}))
"""


# -- the nested-loop opt-in (in subprocesses: the patch must not leak into this one) ----


def test_nothing_is_patched_implicitly(run_python: Callable[..., Any]) -> None:
    proc = run_python(
        """
        import asyncio, sys
        from hypernodes import Pipeline, node

        @node
        async def where(x):
            return id(asyncio.get_running_loop())

        p = Pipeline([where, node(lambda where: where, name="same")])
        p.run({"x": 1})

        async def main():
            caller = id(asyncio.get_running_loop())
            assert p.run({"x": 1})["where"] != caller  # ran elsewhere, unpatched
            assert (await p.arun({"x": 1}))["where"] == caller
            assert not hasattr(type(asyncio.get_running_loop()), "_nest_patched")

        asyncio.run(main())
        assert not hasattr(asyncio, "_nest_patched"), "asyncio was patched"
        assert "nest_asyncio2" not in sys.modules and "nest_asyncio" not in sys.modules
        print("UNPATCHED")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "UNPATCHED" in proc.stdout


def test_in_process_asyncio_is_not_patched() -> None:
    assert not hasattr(asyncio, "_nest_patched")
    assert not hasattr(asyncio.BaseEventLoop, "_nest_patched")


def test_enable_nested_loops_runs_on_the_callers_loop(run_python: Callable[..., Any]) -> None:
    proc = run_python(
        """
        import asyncio, threading
        import hypernodes
        from hypernodes import Pipeline, node

        @node
        async def where(x):
            await asyncio.sleep(0)
            return id(asyncio.get_running_loop()), threading.current_thread().name

        @node
        def plus(x):
            return x + 1

        p = Pipeline([where, plus])

        async def main():
            caller = id(asyncio.get_running_loop())
            before = p.run({"x": 1})
            assert before["where"] == (before["where"][0], "hypernodes-loop"), before
            assert before["where"][0] != caller
            hypernodes.enable_nested_loops()
            after = p.run({"x": 1})
            assert after["where"] == (caller, "MainThread"), (after, caller)
            assert after["plus"] == 2
            assert p.map({"x": [1, 2]}, "x")[1]["where"][0] == caller
            print("NESTED-OK")

        asyncio.run(main())
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "NESTED-OK" in proc.stdout


def test_enable_nested_loops_refuses_uvloop(run_python: Callable[..., Any]) -> None:
    pytest.importorskip("uvloop")
    proc = run_python(
        """
        import uvloop
        import hypernodes

        async def main():
            try:
                hypernodes.enable_nested_loops()
            except hypernodes.HyperNodesError as exc:
                print("REFUSED:", exc)
            else:
                print("ACCEPTED")

        uvloop.run(main())
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "REFUSED:" in proc.stdout
    message = proc.stdout.split("REFUSED:", 1)[1]
    assert "uvloop" in message
    assert "await pipeline.arun(" in message  # the fix


# -- arun never blocks the caller's loop -----------------------------------------------


@node
def sleepy(x: int) -> int:
    time.sleep(0.5)  # a blocking sync body
    return x + 1


@node
def after_sleep(sleepy: int) -> int:
    return sleepy * 10


@pytest.mark.asyncio
@pytest.mark.parametrize("call", ["arun", "amap"])
@pytest.mark.parametrize("executor", ["sequential", "async", "threaded", "parallel"])
async def test_arun_never_blocks_the_callers_loop(
    executor: str,
    call: str,
    heartbeat: Callable[..., Any],
    engine_factory: Callable[..., HyperNodesEngine],
) -> None:
    engine = engine_factory(node_executor=executor, map_executor=executor, max_workers=2)
    pipeline = Pipeline([sleepy, after_sleep], engine=engine)
    started = time.perf_counter()
    async with heartbeat(0.005) as hb:
        if call == "arun":
            result: Any = await pipeline.arun({"x": 1})
            assert result == {"sleepy": 2, "after_sleep": 20}
        else:
            result = await pipeline.amap({"x": [1, 2]}, "x")
            assert result == [{"sleepy": 2, "after_sleep": 20}, {"sleepy": 3, "after_sleep": 30}]
    assert time.perf_counter() - started >= 0.5  # the body really blocked for 0.5 s ...
    assert hb.ticks >= 10  # ... while the loop kept ticking
    assert hb.max_gap < 0.1, f"the loop was blocked for {hb.max_gap * 1000:.0f} ms"


@pytest.mark.asyncio
async def test_500_concurrent_aruns_on_one_pipeline(
    engine_factory: Callable[..., HyperNodesEngine],
) -> None:
    @node
    async def lookup(request: int) -> str:
        await asyncio.sleep(0.001 * (request % 7))  # finish out of order
        return f"r{request}"

    @node
    def render(lookup: str, request: int) -> str:
        return f"{lookup}:{request * 2}"

    for engine in (None, engine_factory(node_executor="async")):
        pipeline = Pipeline([lookup, render], engine=engine)
        results = await asyncio.gather(*(pipeline.arun({"request": i}) for i in range(500)))
        assert results == [{"lookup": f"r{i}", "render": f"r{i}:{i * 2}"} for i in range(500)]


class SlowStartPool(concurrent.futures.ProcessPoolExecutor):
    """A process pool whose first submission takes 0.5 s, like a cold pool or cluster."""

    def __init__(self) -> None:
        super().__init__(2, mp_context=spawn_safe_context())
        self.cold = True

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        if self.cold:
            time.sleep(0.5)
            self.cold = False
        return super().submit(fn, *args, **kwargs)


@pytest.fixture
def slow_start_pool() -> Iterator[SlowStartPool]:
    pool = SlowStartPool()
    yield pool
    pool.shutdown()


@pytest.mark.asyncio
async def test_a_cold_executor_does_not_block_arun(
    slow_start_pool: SlowStartPool, heartbeat: Callable[..., Any]
) -> None:
    # Starting a pool (or the forkserver, or a cluster connection) happens on the first
    # submission; it must not happen on the caller's loop.
    with HyperNodesEngine(node_executor=slow_start_pool) as engine:
        pipeline = Pipeline([plus_one, node(lambda plus_one: plus_one * 2, name="twice")])
        pipeline.with_engine(engine)
        async with heartbeat(0.005) as hb:
            assert await pipeline.arun({"x": 1}) == {"plus_one": 2, "twice": 4}
    assert not slow_start_pool.cold
    assert hb.max_gap < 0.1, f"the loop was blocked for {hb.max_gap * 1000:.0f} ms"


@pytest.mark.asyncio
async def test_a_cold_executor_does_not_block_amap(
    slow_start_pool: SlowStartPool, heartbeat: Callable[..., Any]
) -> None:
    with HyperNodesEngine(map_executor=slow_start_pool) as engine:
        pipeline = Pipeline([plus_one], engine=engine)
        async with heartbeat(0.005) as hb:
            assert await pipeline.amap({"x": [1, 2]}, "x") == [{"plus_one": 2}, {"plus_one": 3}]
    assert hb.max_gap < 0.1, f"the loop was blocked for {hb.max_gap * 1000:.0f} ms"


# -- interpreter exit ---------------------------------------------------------------------


@pytest.mark.parametrize("loop_flavour", ["uvloop", "asyncio"])
def test_a_script_exits_silently(run_python: Callable[..., Any], loop_flavour: str) -> None:
    # Python 3.12+ refuses to start threads during atexit; closing a kept loop must not
    # need one (asyncio.Runner.close joins the default executor through a new thread,
    # and DiskCache's file I/O gives every loop a default executor).
    proc = run_python(
        f"""
        import asyncio, tempfile, threading
        import hypernodes.bridge as bridge
        from hypernodes import DiskCache, HyperNodesEngine, Pipeline, node

        if {loop_flavour!r} == "asyncio":
            bridge.new_event_loop = asyncio.new_event_loop

        @node(output_name="y")
        async def f(x):
            await asyncio.sleep(0)
            return x + 1

        @node(output_name="z")
        def g(y):
            return y * 2

        cache = DiskCache(tempfile.mkdtemp())
        p = Pipeline([f, g], cache=cache)
        assert p.run({{"x": 1}}) == {{"y": 2, "z": 4}}
        assert p.run({{"x": 1}}) == {{"y": 2, "z": 4}}

        async def main():  # the background loop thread, with a default executor too
            assert p.run({{"x": 2}}) == {{"y": 3, "z": 6}}
            assert await p.arun({{"x": 3}}) == {{"y": 4, "z": 8}}

        asyncio.run(main())
        threaded = Pipeline([f, g], cache=cache, engine=HyperNodesEngine(node_executor="async"))
        t = threading.Thread(target=lambda: threaded.run({{"x": 4}}))
        t.start(); t.join()
        kept = threading.Thread(target=lambda: threaded.run({{"x": 5}}), daemon=True)
        kept.start(); kept.join()
        print("DONE")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "DONE"
    assert proc.stderr == ""


# -- runs nested in node bodies, at depth ---------------------------------------------

_CHAINS = """
import asyncio, sys
from hypernodes import HyperNodesEngine, NodeError, Pipeline, node

def chain(executor, workers, depth, kind):
    # Pipelines p[0] .. p[depth-1]; the node of p[i] runs p[i+1] (sync: run(); async:
    # await arun()), the last one returns 1: the result counts the levels.
    engine = HyperNodesEngine(node_executor=executor, max_workers=workers)
    p = []
    for i in range(depth):
        last = i == depth - 1
        if kind == "sync" or (kind == "mixed" and i % 2 == 0):
            def body(v, i=i, last=last):
                return 1 if last else 1 + p[i + 1].run({{"v": v}})["r"]
        else:
            async def body(v, i=i, last=last):
                return 1 if last else 1 + (await p[i + 1].arun({{"v": v}}))["r"]
        p.append(Pipeline([node(body, output_name="r", name=f"level{{i}}")], engine=engine))
    return engine, p[0]

def check(where):
    for executor in {executors!r}:
        for workers in (1, 2, 4):
            for depth in {depths!r}:
                for kind in ("sync", "mixed"):
                    engine, top = chain(executor, workers, depth, kind)
                    with engine:
                        got = top.run({{"v": 0}})["r"]
                    assert got == depth, (executor, workers, depth, kind, got)
    print(where, "ok")

async def in_a_loop():
    check("loop")

if __name__ == "__main__":
    check("script")
    asyncio.run(in_a_loop())
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("executors", "depths"),
    [(["sequential", "async", "threaded"], [2, 5, 12]), (["parallel"], [2, 12])],
)
def test_runs_nested_in_node_bodies_never_deadlock(
    executors: list[str], depths: list[int], run_python: Callable[..., Any]
) -> None:
    # A node that calls run() must never wait for a worker its caller holds: with a pool of
    # one thread, a chain of 12 such runs deadlocked at the second level.
    code = _CHAINS.format(executors=executors, depths=depths)
    try:
        proc = run_python(code, timeout=240)
    except subprocess.TimeoutExpired:
        pytest.fail("deadlocked")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["script", "ok", "loop", "ok"]


_UNBOUNDED = """
import asyncio
from hypernodes import HyperNodesEngine, NodeError, Pipeline, node

def unbounded(executor):
    h = {{}}

    @node(output_name="r")
    def forever(v):
        return h["p"].run({{"v": v + 1}})["r"]

    h["p"] = Pipeline([forever], engine=HyperNodesEngine(node_executor=executor, max_workers=1))
    try:
        h["p"].run({{"v": 0}})
    except NodeError as err:
        cause = err
        while cause.__cause__ is not None:
            cause = cause.__cause__
        print(executor, type(cause).__name__, "nested" in str(cause) or "recursion" in str(cause))

for executor in ("sequential", "async", "threaded"):
    unbounded(executor)

async def main():
    unbounded("threaded")

asyncio.run(main())
"""


def test_unbounded_run_recursion_raises_instead_of_hanging(
    run_python: Callable[..., Any],
) -> None:
    try:
        proc = run_python(_UNBOUNDED.format(), timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("hung")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines == [
        "sequential RecursionError True",
        "async RecursionError True",
        "threaded RecursionError True",
        "threaded RecursionError True",
    ]


class _Loud:
    """A result whose repr is counted (formatting a map's results costs milliseconds)."""

    reprs = 0

    def __repr__(self) -> str:
        type(self).reprs += 1
        return "Loud()"


def test_a_sync_call_never_formats_its_results() -> None:
    # asyncio.Runner formats the repr of its finished task (result included) when it
    # checks its SIGINT handler in the main thread: the result must not be the task's.
    @node(output_name="loud")
    def make(x: int) -> _Loud:
        return _Loud()

    pipeline = Pipeline([make], cache=MemoryCache())  # (a cached run goes through a loop)
    _Loud.reprs = 0
    assert threading.current_thread() is threading.main_thread()
    assert isinstance(pipeline.run({"x": 1})["loud"], _Loud)
    assert len(pipeline.map({"x": [1, 2, 3]}, map_over="x")) == 3
    assert _Loud.reprs == 0  # (6 before: the 3 items, formatted twice)
