"""map / amap: zip and product, ordered results, validation, map executors, failures,
and the memory a big map costs."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from hypernodes import HyperNodesEngine, InvalidInputError, NodeError, Pipeline, node

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
def combine(x: int, y: int, sep: str = "-") -> str:
    return f"{x}{sep}{y}"


@node
def length(combine: str) -> int:
    return len(combine)


PAIR = Pipeline([combine, length], name="pair")


# -- zip and product -------------------------------------------------------------------


def test_zip_pairs_the_lists_in_order() -> None:
    results = PAIR.map({"x": [1, 2, 3], "y": [10, 20, 30]}, ["x", "y"])
    assert results == [
        {"combine": "1-10", "length": 4},
        {"combine": "2-20", "length": 4},
        {"combine": "3-30", "length": 4},
    ]


def test_product_takes_every_combination_first_list_outermost() -> None:
    results = PAIR.map({"x": [1, 2], "y": [7, 8, 9]}, ["x", "y"], map_mode="product")
    assert [r["combine"] for r in results] == ["1-7", "1-8", "1-9", "2-7", "2-8", "2-9"]


def test_product_of_three_lists() -> None:
    @node
    def triple(a: int, b: int, c: int) -> tuple[int, int, int]:
        return a, b, c

    results = Pipeline([triple]).map(
        {"a": [1, 2], "b": [3, 4, 5], "c": [6, 7]}, ["a", "b", "c"], "product"
    )
    assert len(results) == 12
    assert [r["triple"] for r in results] == [
        (a, b, c) for a in (1, 2) for b in (3, 4, 5) for c in (6, 7)
    ]


def test_map_over_one_name_as_a_string() -> None:
    assert PAIR.map({"x": [1, 2], "y": 5}, "x", output_name="combine") == [
        {"combine": "1-5"},
        {"combine": "2-5"},
    ]


def test_sized_iterables_other_than_lists() -> None:
    results = PAIR.map({"x": range(3), "y": (4, 5, 6)}, ["x", "y"], output_name="combine")
    assert [r["combine"] for r in results] == ["0-4", "1-5", "2-6"]


def test_shared_inputs_reach_every_item() -> None:
    shared = {"config": "object"}
    seen: list[int] = []

    @node
    def use(x: int, settings: dict[str, str], sep: str) -> str:
        seen.append(id(settings))
        return f"{x}{sep}{settings['config']}"

    results = Pipeline([use]).map({"x": [1, 2, 3], "settings": shared, "sep": ":"}, "x")
    assert [r["use"] for r in results] == ["1:object", "2:object", "3:object"]
    assert seen == [id(shared)] * 3  # shared, not copied per item


def test_defaults_and_bound_inputs_apply_to_every_item() -> None:
    pipeline = Pipeline([combine, length]).bind(y=0)
    assert pipeline.map({"x": [1, 2]}, "x", output_name="combine") == [
        {"combine": "1-0"},
        {"combine": "2-0"},
    ]


def test_output_name_selects_outputs_and_skips_unneeded_nodes() -> None:
    ran: list[str] = []

    @node
    def cheap(x: int) -> int:
        ran.append("cheap")
        return x

    @node
    def costly(x: int) -> int:
        ran.append("costly")
        return x

    pipeline = Pipeline([cheap, costly])
    assert pipeline.map({"x": [1, 2]}, "x", output_name="cheap") == [{"cheap": 1}, {"cheap": 2}]
    assert ran == ["cheap", "cheap"]
    assert pipeline.map({"x": [3]}, "x", output_name=["costly", "cheap"]) == [
        {"costly": 3, "cheap": 3}
    ]


@pytest.mark.parametrize("mode", ["zip", "product"])
def test_empty_lists_give_an_empty_result(mode: str) -> None:
    assert PAIR.map({"x": [], "y": []}, ["x", "y"], mode) == []
    assert PAIR.map({"x": [1, 2], "y": []}, ["x", "y"], "product") == []


@pytest.mark.asyncio
async def test_amap_from_async_code() -> None:
    results = await PAIR.amap({"x": [1, 2], "y": [3, 4]}, ["x", "y"], output_name="combine")
    assert results == [{"combine": "1-3"}, {"combine": "2-4"}]


# -- validation ------------------------------------------------------------------------


def test_unequal_lengths_name_both_lengths() -> None:
    with pytest.raises(InvalidInputError) as info:
        PAIR.map({"x": [1, 2, 3], "y": [1, 2]}, ["x", "y"])
    message = str(info.value)
    assert "'x' has 3" in message and "'y' has 2" in message
    assert "product" in message  # the alternative


def test_map_over_something_that_is_not_an_input() -> None:
    with pytest.raises(InvalidInputError) as info:
        PAIR.map({"x": [1], "y": 2, "z": [1]}, "z")
    message = str(info.value)
    assert "'z'" in message and "not an input" in message
    assert "'x'" in message and "'y'" in message  # lists the valid ones


def test_map_over_an_input_that_has_no_value() -> None:
    with pytest.raises(InvalidInputError, match="inputs= has no value for it"):
        PAIR.map({"y": [1]}, ["x", "y"])


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (5, "must be an iterable"),
        ("abc", "is a str"),
        (b"abc", "is a bytes"),
        ({"a": 1}, "is a mapping"),
        (None, "must be an iterable"),
    ],
    ids=["int", "str", "bytes", "dict", "None"],
)
def test_map_over_a_value_that_is_not_an_iterable(value: Any, words: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        PAIR.map({"x": value, "y": 1}, "x")
    message = str(info.value)
    assert "'x'" in message
    assert words in message


def test_product_mode_needs_sized_inputs() -> None:
    with pytest.raises(InvalidInputError, match="'x' is a generator without a length") as info:
        PAIR.map({"x": (i for i in range(3)), "y": [1, 2]}, ["x", "y"], map_mode="product")
    assert "map_mode='product' needs sized inputs" in str(info.value)


@pytest.mark.parametrize("bad", [[], "", [1], ["x", "x"]], ids=["empty", "blank", "int", "twice"])
def test_bad_map_over(bad: Any) -> None:
    with pytest.raises(InvalidInputError, match="map_over"):
        PAIR.map({"x": [1], "y": [1]}, bad)


def test_bad_map_mode() -> None:
    with pytest.raises(InvalidInputError, match="map_mode must be 'zip' or 'product'"):
        PAIR.map({"x": [1], "y": [1]}, ["x", "y"], "cartesian")  # type: ignore[arg-type]


# -- order: results in input order whatever the completion order ------------------------


def test_async_items_finishing_in_reverse_order_come_back_in_input_order(
    engine_factory: Callable[..., HyperNodesEngine],
) -> None:
    n = 6
    done = [asyncio.Event() for _ in range(n)]
    finished: list[int] = []

    @node
    async def item(i: int) -> int:
        if i + 1 < n:  # each item waits for the next one: the last finishes first
            await asyncio.wait_for(done[i + 1].wait(), WAIT)
        finished.append(i)
        done[i].set()
        return i * 100

    engine = engine_factory(map_executor="async", max_concurrent=n)
    results = Pipeline([item], engine=engine).map({"i": list(range(n))}, "i")
    assert finished == list(reversed(range(n)))
    assert results == [{"item": i * 100} for i in range(n)]


def test_threaded_items_finishing_in_reverse_order_come_back_in_input_order(
    engine_factory: Callable[..., HyperNodesEngine],
) -> None:
    n = 4
    done = [threading.Event() for _ in range(n)]
    finished: list[int] = []

    @node
    def item(i: int) -> int:
        if i + 1 < n:
            assert done[i + 1].wait(WAIT)
        finished.append(i)
        done[i].set()
        return -i

    engine = engine_factory(map_executor="threaded", max_workers=n)
    results = Pipeline([item], engine=engine).map({"i": list(range(n))}, "i")
    assert finished == [3, 2, 1, 0]
    assert results == [{"item": -i} for i in range(n)]


@pytest.mark.parametrize("executor", ["threaded", "async", "parallel"])
def test_many_items_keep_their_order(
    executor: str, engine_factory: Callable[..., HyperNodesEngine]
) -> None:
    engine = engine_factory(map_executor=executor, max_workers=2)
    results = Pipeline([combine], engine=engine).map({"x": list(range(3000)), "y": 1}, "x")
    assert results == [{"combine": f"{i}-1"} for i in range(3000)]


# -- map executors ---------------------------------------------------------------------


def test_sequential_map_runs_one_item_at_a_time_in_order(probe: Callable[..., Any]) -> None:
    counter = probe()
    started: list[int] = []

    @node
    async def item(i: int) -> int:
        async with counter.abody():
            started.append(i)
            for _ in range(3):
                await asyncio.sleep(0)
        return i

    results = Pipeline([item]).map({"i": list(range(8))}, "i")
    assert [r["item"] for r in results] == list(range(8))
    assert started == list(range(8))
    assert counter.peak == 1


@pytest.mark.parametrize("limit", [2, 5])
def test_async_map_items_are_concurrent_up_to_max_concurrent(
    limit: int, engine_factory: Callable[..., HyperNodesEngine], probe: Callable[..., Any]
) -> None:
    counter = probe(target=limit)

    @node
    async def item(i: int) -> int:
        async with counter.abody():
            await asyncio.sleep(0)
        return i

    engine = engine_factory(map_executor="async", max_concurrent=limit)
    results = Pipeline([item], engine=engine).map({"i": list(range(12))}, "i")
    assert [r["item"] for r in results] == list(range(12))
    assert counter.entered == 12
    assert counter.peak == limit
    assert counter.reached


def test_threaded_map_runs_sync_items_in_the_pool(
    engine_factory: Callable[..., HyperNodesEngine], probe: Callable[..., Any]
) -> None:
    barrier = threading.Barrier(3, timeout=WAIT)
    counter = probe(target=3)

    @node
    def item(i: int) -> str:
        if i < 3:
            barrier.wait()  # the first three items run at once
        with counter.body():
            return threading.current_thread().name

    engine = engine_factory(map_executor="threaded", max_workers=3)
    results = Pipeline([item], engine=engine).map({"i": list(range(9))}, "i")
    names = {r["item"] for r in results}
    assert threading.current_thread().name not in names
    assert all(name.startswith("hypernodes") for name in names)
    assert counter.peak == 3


@node
def pid_a(x: int) -> int:
    return os.getpid()


@node
def pid_b(pid_a: int) -> int:
    return os.getpid()


@node
async def pid_c(pid_b: int) -> int:
    return os.getpid()


def test_parallel_map_ships_each_whole_item_to_a_worker_process(
    engine_factory: Callable[..., HyperNodesEngine],
) -> None:
    engine = engine_factory(map_executor="parallel", max_workers=2)
    results = Pipeline([pid_a, pid_b, pid_c], engine=engine).map({"x": list(range(6))}, "x")
    for r in results:
        # Every node of one item, async ones too, ran in the same worker process.
        assert r["pid_a"] == r["pid_b"] == r["pid_c"]
        assert r["pid_a"] != os.getpid()


def test_parallel_map_runs_items_in_parallel_processes(
    engine_factory: Callable[..., HyperNodesEngine],
) -> None:
    import multiprocessing

    with multiprocessing.Manager() as manager:
        barrier = manager.Barrier(2, timeout=WAIT)

        def meet(x: int) -> int:
            barrier.wait()
            return os.getpid()

        engine = engine_factory(map_executor="parallel", max_workers=2)
        results = Pipeline([node(meet, name="meet")], engine=engine).map({"x": [0, 1]}, "x")
    assert results[0]["meet"] != results[1]["meet"]


def test_thread_pool_instance_as_map_executor() -> None:
    pool = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="mine")
    barrier = threading.Barrier(2, timeout=WAIT)

    @node
    def item(i: int) -> str:
        barrier.wait()
        return threading.current_thread().name

    try:
        with HyperNodesEngine(map_executor=pool) as engine:
            results = Pipeline([item], engine=engine).map({"i": [0, 1, 2, 3]}, "i")
        assert all(r["item"].startswith("mine") for r in results)
    finally:
        pool.shutdown()


def test_loky_executor_as_map_executor() -> None:
    loky = pytest.importorskip("loky")
    pool = loky.get_reusable_executor(max_workers=2)
    try:
        with HyperNodesEngine(map_executor=pool) as engine:
            results = Pipeline([pid_a, pid_b], engine=engine).map({"x": [1, 2, 3]}, "x")
        for r in results:
            assert r["pid_a"] == r["pid_b"] != os.getpid()
    finally:
        pool.shutdown(wait=True)


# -- failures --------------------------------------------------------------------------


def test_failing_item_cancels_the_rest_and_names_node_and_index(
    engine_factory: Callable[..., HyperNodesEngine],
) -> None:
    log: list[str] = []
    others_waiting = asyncio.Event()
    waiting = 0

    @node
    async def item(i: int) -> int:
        nonlocal waiting
        if i == 3:
            await asyncio.wait_for(others_waiting.wait(), WAIT)
            raise ValueError(f"item {i} is bad")
        waiting += 1
        if waiting == 4:
            others_waiting.set()
        try:
            await asyncio.sleep(3600)
            log.append(f"{i} finished")
        finally:
            log.append(f"{i} stopped")
        return i

    engine = engine_factory(map_executor="async", max_concurrent=5)
    with pytest.raises(NodeError) as info:
        Pipeline([item], engine=engine, name="items").map({"i": list(range(5))}, "i")
    err = info.value
    assert err.node == "item"
    assert err.item_index == 3
    assert err.pipeline_path == ("items",)
    assert type(err.__cause__) is ValueError
    assert "items[item 3]" in str(err)
    assert sorted(log) == ["0 stopped", "1 stopped", "2 stopped", "4 stopped"]


@pytest.mark.parametrize("executor", ["sequential", "async", "threaded", "parallel"])
def test_a_failing_item_is_reported_with_its_index(
    executor: str, engine_factory: Callable[..., HyperNodesEngine]
) -> None:
    engine = engine_factory(map_executor=executor, max_workers=2)
    with pytest.raises(NodeError) as info:
        Pipeline([pid_a, _fails_on_seven], engine=engine, name="p").map({"x": [1, 3, 5, 7, 9]}, "x")
    err = info.value
    assert type(err) is NodeError
    assert err.node == "fails_on_seven"
    assert err.item_index == 3
    assert type(err.__cause__) is KeyError


@node(name="fails_on_seven")
def _fails_on_seven(x: int, pid_a: int) -> int:
    if x == 7:
        raise KeyError(x)
    return x


def test_a_failure_stops_plain_items_running_in_other_threads(
    engine_factory: Callable[..., HyperNodesEngine],
) -> None:
    started: list[float] = []
    lock = threading.Lock()

    @node
    def item(i: int) -> int:
        with lock:
            started.append(time.perf_counter())
        if i == 0:
            time.sleep(0.05)
            raise ValueError("first item fails")
        time.sleep(0.001)
        return i

    engine = engine_factory(map_executor="threaded", max_workers=2)
    with pytest.raises(NodeError):
        Pipeline([item], engine=engine).map({"i": list(range(4000))}, "i")
    raised = time.perf_counter()
    engine.close()  # waits for whatever is still running in the pool
    after = [t for t in started if t > raised]
    assert len(after) <= 2, f"{len(after)} items started after the map had failed"


# -- memory ----------------------------------------------------------------------------

_MEMORY = """
import json, resource, sys
from hypernodes import HyperNodesEngine, Pipeline, node


def peak_kib():
    # VmHWM belongs to this process's own memory map; ru_maxrss would carry the parent's
    # high-water mark across fork+exec (a big pytest process hides the growth).
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

N = 1_000_000
mode = sys.argv[1]

def f(x):
    return x + 1

pipeline = Pipeline([node(f, output_name="y")])
if mode == "map-async":
    pipeline.with_engine(HyperNodesEngine(map_executor="async"))
xs = list(range(N))
pipeline.map({"x": [1, 2]}, "x")  # warm up: plans, loops, pools
before = peak_kib()
if mode == "plain":
    out = [f(x) for x in xs]
elif mode == "dicts":
    out = [{"y": f(x)} for x in xs]
else:
    out = pipeline.map({"x": xs}, "x")
after = peak_kib()
assert len(out) == N and out[-1] in (N, {"y": N})
print(json.dumps({"mode": mode, "growth_mib": (after - before) / 1024}))
"""


@pytest.mark.slow
def test_a_million_item_map_costs_little_beyond_its_result_dicts(
    run_python: Callable[..., Any],
) -> None:
    import sys

    growth: dict[str, float] = {}
    for mode in ("plain", "dicts", "map", "map-async"):
        proc = run_python(f"import sys; sys.argv = ['x', {mode!r}]\n" + _MEMORY, timeout=120)
        assert proc.returncode == 0, proc.stderr
        growth[mode] = json.loads(proc.stdout.strip().splitlines()[-1])["growth_mib"]
    print(json.dumps(growth), file=sys.stderr)
    # The result dicts are the user's data; what the kernel adds on top must be small.
    assert growth["map"] - growth["dicts"] < 20, growth
    assert growth["map-async"] - growth["dicts"] < 20, growth
    assert growth["dicts"] > growth["plain"]  # the measurement sees the dicts at all
