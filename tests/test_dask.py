"""The Dask executor on a real local cluster: the "dask" alias, addresses, user executors."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from hypernodes import HyperNodesEngine, Limit, NodeError, Pipeline, PipelineCallback, Retry, node
from hypernodes.cache import MISSING, Cache, CacheStats

distributed = pytest.importorskip("distributed")
dask_config = pytest.importorskip("dask.config")

from hypernodes.executors.dask import (  # noqa: E402
    ENV_ADDRESS,
    INLINE_BYTES,
    LOCAL_CLUSTER_CONFIG,
    DaskExecutor,
    make_dask_executor,
)
from hypernodes.executors.remote import Shipped  # noqa: E402
from hypernodes.executors.tracking import TaskLost  # noqa: E402

# Worker processes cannot import this test module: ship its functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

TEST_PID = os.getpid()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """A local cluster of 2 worker processes with one thread each, shared by the module."""
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as local:
        yield local


@pytest.fixture(scope="module")
def client(cluster: Any) -> Iterator[Any]:
    with distributed.Client(cluster, set_as_default=False) as c:
        yield c


@pytest.fixture
def engine(cluster: Any) -> Iterator[HyperNodesEngine]:
    eng = HyperNodesEngine(map_executor="dask", address=cluster.scheduler_address)
    yield eng
    eng.close()


# -- pipelines ---------------------------------------------------------------------------


@node(output_name="doubled")
def double(x: int) -> int:
    return 2 * x


@node(output_name=("total", "where"))
def add(doubled: int, offset: int = 10) -> tuple[int, int]:
    return doubled + offset, os.getpid()


@node(output_name="pid")
def worker_pid(x: int) -> int:
    return os.getpid()


def basic() -> Pipeline:
    return Pipeline([double, add], name="basic")


def _values(results: list[dict[str, Any]], *names: str) -> list[tuple[Any, ...]]:
    return [tuple(r[n] for n in names) for r in results]


# -- the alias and addresses -------------------------------------------------------------


def test_alias_starts_a_local_cluster_sized_by_max_workers_and_closes_it() -> None:
    engine = HyperNodesEngine(map_executor="dask", max_workers=2)
    pipe = basic().with_engine(engine)
    try:
        results = pipe.map({"x": [1, 2, 3]}, map_over="x")
        lane = engine.lanes[1]
        executor = lane.executor
        assert isinstance(executor, DaskExecutor)
        cluster = executor.client.cluster
        assert lane.kind == "remote" and lane.width == 2
        assert sum(executor.client.nthreads().values()) == 2
    finally:
        engine.close()
    assert _values(results, "total") == [(12,), (14,), (16,)]
    assert {r["where"] for r in results}.isdisjoint({TEST_PID})
    assert executor.client.status == "closed"
    assert cluster.status.name == "closed"


def _worker_settings() -> tuple[Any, ...]:
    get = dask_config.get
    return (
        get("distributed.worker.profile.enabled"),
        get("distributed.admin.tick.interval"),
        get("distributed.scheduler.worker-saturation"),
    )


def test_the_local_cluster_is_set_up_for_throughput_and_the_users_config_wins() -> None:
    # Dask's defaults take LOCAL_CLUSTER_CONFIG's values; a key the user set otherwise
    # keeps the user's, in the workers too.
    assert LOCAL_CLUSTER_CONFIG == {
        "distributed.scheduler.worker-saturation": "inf",
        "distributed.worker.profile.enabled": False,
        "distributed.admin.tick.interval": "1s",
    }
    with dask_config.set({"distributed.admin.tick.interval": "50ms"}):
        engine = HyperNodesEngine(map_executor="dask", max_workers=2)
        try:
            executor = engine.lanes[1].executor
            assert isinstance(executor, DaskExecutor)
            seen = set(executor.client.run(_worker_settings).values())
        finally:
            engine.close()
    assert seen == {(False, "50ms", "inf")}


def test_map_on_a_cluster_by_address_matches_the_local_engine(
    engine: HyperNodesEngine, cluster: Any
) -> None:
    inputs = {"x": list(range(6)), "offset": 100}
    local = basic().map(inputs, map_over="x", output_name="total")
    remote = basic().with_engine(engine).map(inputs, map_over="x", output_name="total")
    assert remote == local == [{"total": 2 * i + 100} for i in range(6)]
    engine.close()
    assert cluster.status.name == "running", "a cluster given by address is never closed"


def test_product_mode_and_defaults(engine: HyperNodesEngine) -> None:
    @node(output_name="cell")
    def cell(row: str, col: int, sep: str = "-") -> str:
        return f"{row}{sep}{col}"

    pipe = Pipeline([cell], engine=engine)
    results = pipe.map(
        {"row": ["a", "b"], "col": [1, 2]}, map_over=["row", "col"], map_mode="product"
    )
    assert [r["cell"] for r in results] == ["a-1", "a-2", "b-1", "b-2"]


def test_env_address_is_honoured(
    monkeypatch: pytest.MonkeyPatch, cluster: Any, client: Any
) -> None:
    @node(output_name="worker")
    def where(x: int) -> str:
        return str(distributed.get_worker().address)

    monkeypatch.setenv(ENV_ADDRESS, cluster.scheduler_address)
    with HyperNodesEngine(map_executor="dask") as engine:
        results = Pipeline([where], engine=engine).map({"x": [1, 2, 3, 4]}, map_over="x")
    assert {r["worker"] for r in results} <= set(client.scheduler_info()["workers"])
    assert cluster.status.name == "running"


def test_make_dask_executor_by_address_only_disconnects(cluster: Any) -> None:
    executor, close = make_dask_executor(cluster.scheduler_address, None)
    assert executor.hypernodes_width() == 2
    assert executor.submit(pow, 2, 5).result(timeout=30) == 32
    close()
    assert executor.client.status == "closed"
    assert cluster.status.name == "running"


# -- semantics ---------------------------------------------------------------------------


def test_identical_calls_of_an_impure_node_are_not_merged(engine: HyperNodesEngine) -> None:
    @node(output_name="token")
    def token(x: int) -> str:
        return uuid.uuid4().hex

    results = Pipeline([token], engine=engine).map({"x": [0, 0, 0, 0]}, map_over="x")
    assert len({r["token"] for r in results}) == 4


def test_node_executor_dask_runs_sync_bodies_on_workers(cluster: Any) -> None:
    @node(output_name="a")
    def left(x: int) -> tuple[int, int]:
        return x + 1, os.getpid()

    @node(output_name="b")
    def right(x: int) -> tuple[int, int]:
        return x + 2, os.getpid()

    @node(output_name="both")
    async def both(a: tuple[int, int], b: tuple[int, int]) -> int:
        return a[0] + b[0]

    with HyperNodesEngine(node_executor="dask", address=cluster.scheduler_address) as engine:
        result = Pipeline([left, right, both], engine=engine).run({"x": 1})
    assert result["both"] == 5
    assert TEST_PID not in {result["a"][1], result["b"][1]}


def test_nested_pipelines_inside_map_items(engine: HyperNodesEngine) -> None:
    @node(output_name="sq")
    def square(v: int) -> int:
        return v * v

    inner = Pipeline([square], name="inner")

    @node(output_name="vs")
    def spread(x: int) -> list[int]:
        return [x, x + 1]

    @node(output_name="summary")
    def summary(sq: list[int], one: int) -> tuple[int, int]:
        return sum(sq), one

    outer = Pipeline(
        [
            spread,
            inner.as_node(input_mapping={"vs": "v"}, map_over="vs", name="each"),
            inner.as_node(input_mapping={"x": "v"}, output_mapping={"sq": "one"}, name="once"),
            summary,
        ],
        name="outer",
    )
    local = outer.map({"x": [1, 2, 3]}, map_over="x", output_name="summary")
    remote = outer.with_engine(engine).map({"x": [1, 2, 3]}, map_over="x", output_name="summary")
    assert (
        remote
        == local
        == [{"summary": (1 + 4, 1)}, {"summary": (4 + 9, 4)}, {"summary": (9 + 16, 9)}]
    )


class Rejected(ValueError):
    """A user's own exception type."""


@node(output_name="checked")
def check(x: int) -> int:
    if x == 3:
        raise Rejected(f"bad item {x}")
    return x


def test_item_errors_name_node_and_index_with_the_users_exception(
    engine: HyperNodesEngine,
) -> None:
    pipe = Pipeline([check], engine=engine, name="checks")
    with pytest.raises(NodeError) as info:
        pipe.map({"x": [0, 1, 2, 3, 4]}, map_over="x")
    err = info.value
    assert err.node == "check"
    assert err.item_index == 3
    assert type(err.__cause__) is Rejected
    assert str(err.__cause__) == "bad item 3"
    assert "checks" in str(err)


def test_node_executor_errors_keep_the_users_exception(cluster: Any) -> None:
    engine = HyperNodesEngine(node_executor="dask", address=cluster.scheduler_address)
    with engine, pytest.raises(NodeError) as info:
        Pipeline([check], engine=engine).run({"x": 3})
    assert info.value.node == "check"
    assert type(info.value.__cause__) is Rejected


@node(output_name="numbers")
def numbers(x: int) -> Any:
    return (i for i in range(x)) if x == 1 else [x]


@pytest.mark.parametrize("role", ["map_executor", "node_executor"])
def test_a_generator_returned_on_a_worker_is_a_node_error_saying_what_to_do(
    role: str, cluster: Any
) -> None:
    # A value that cannot be pickled back from the worker was a raw TypeError out of a
    # map (issue 17): it is the node's failure, and the error says what to return.
    with (
        HyperNodesEngine(**{role: "dask"}, address=cluster.scheduler_address) as engine,
        pytest.raises(NodeError) as info,
    ):
        Pipeline([numbers], engine=engine, name="p").map({"x": [0, 1, 2]}, "x")
    assert (info.value.node, info.value.item_index) == ("numbers", 1)
    cause = info.value.__cause__
    assert type(cause) is TypeError
    assert str(cause).startswith("the node returned a generator, which cannot travel back")
    assert "(TypeError: cannot pickle 'generator' object); return a list instead" in str(cause)


def test_first_failure_cancels_queued_dask_tasks(engine: HyperNodesEngine, tmp_path: Path) -> None:
    # 2 one-thread workers; the engine keeps 4 items in flight. Item 0 fails while one
    # other item runs and two wait in a queue: those two must never start.
    @node(output_name="out")
    def slow(x: int, folder: str) -> int:
        Path(folder, f"start-{x}").touch()
        if x == 0:
            time.sleep(0.3)
            raise Rejected("first")
        time.sleep(1.5)
        return x

    pipe = Pipeline([slow], engine=engine)
    with pytest.raises(NodeError) as info:
        pipe.map({"x": list(range(8)), "folder": str(tmp_path)}, map_over="x")
    assert info.value.item_index == 0
    time.sleep(2.0)  # long enough for a queued item to have started after a running one
    started = sorted(int(p.name.split("-")[1]) for p in tmp_path.glob("start-*"))
    others = [i for i in started if i != 0]
    # Without cancellation 3 other items start; the thread item 0 frees may pick one up
    # before the cancellation reaches the worker, so 2 is the most allowed.
    assert len(others) <= 2, started
    assert all(i < 4 for i in others), started


class Unpickles:
    """Records every unpickling of itself as a file in ``folder``."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        Path(self.folder, f"{os.getpid()}-{uuid.uuid4().hex}").touch()


def test_the_pipeline_reaches_each_worker_once_not_each_item(
    engine: HyperNodesEngine, tmp_path: Path
) -> None:
    marker = Unpickles(str(tmp_path))

    @node(output_name="y")
    def carry(x: int) -> int:
        assert marker.folder
        return x

    pipe = Pipeline([carry], engine=engine)
    assert [r["y"] for r in pipe.map({"x": list(range(12))}, map_over="x")] == list(range(12))
    loads = list(tmp_path.iterdir())
    assert 1 <= len(loads) <= 2, [p.name for p in loads]


def test_a_client_executor_passed_by_the_user_works_and_stays_open(client: Any) -> None:
    user_executor = client.get_executor(pure=False)
    engine = HyperNodesEngine(map_executor=user_executor, node_executor=user_executor)
    pipe = basic().with_engine(engine)
    assert pipe.map({"x": [1, 2]}, map_over="x", output_name="total") == [
        {"total": 12},
        {"total": 14},
    ]
    assert pipe.run({"x": 5}, output_name="total") == {"total": 20}
    engine.close()
    assert client.status == "running"
    assert user_executor.submit(pow, 3, 2).result(timeout=30) == 9


def test_a_dask_executor_passed_by_the_user_is_sized_by_its_cluster(client: Any) -> None:
    user_executor = DaskExecutor(client)
    with HyperNodesEngine(map_executor=user_executor) as engine:
        assert engine.lanes[1].width == 2
        results = basic().with_engine(engine).map({"x": [1, 2]}, map_over="x")
    assert _values(results, "total") == [(12,), (14,)]
    assert client.status == "running"


def test_a_plain_client_executor_is_sized_by_its_cluster() -> None:
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=5, processes=False, dashboard_address=":0"
        ) as local,
        distributed.Client(local, set_as_default=False) as c,
    ):
        engine = HyperNodesEngine(map_executor=c.get_executor(pure=False))
        assert engine.lanes[1].width == 5


# -- the executor itself -----------------------------------------------------------------


def test_dask_executor_refuses_pure_and_non_clients(client: Any) -> None:
    with pytest.raises(TypeError, match="pure=False"):
        DaskExecutor(client, pure=True)
    with pytest.raises(TypeError, match=r"distributed\.Client"):
        DaskExecutor("tcp://127.0.0.1:8786")


def test_dask_executor_shutdown_cancels_and_refuses_new_work(client: Any) -> None:
    executor = DaskExecutor(client)
    blockers = [executor.submit(time.sleep, 1.0) for _ in range(2)]
    queued = executor.submit(time.sleep, 1.0)
    executor.shutdown(wait=False, cancel_futures=True)
    assert queued.cancelled()
    assert all(f.cancelled() for f in blockers)
    with pytest.raises(RuntimeError, match="after shutdown"):
        executor.submit(pow, 2, 2)


def test_dask_executor_shutdown_waits(client: Any) -> None:
    executor = DaskExecutor(client)
    future = executor.submit(time.sleep, 0.2)
    executor.shutdown(wait=True)
    assert future.done() and not future.cancelled()


def test_dask_executor_share_is_resolved_on_workers(client: Any) -> None:
    executor = DaskExecutor(client)
    shared = executor.hypernodes_share({"big": [1, 2, 3]})
    assert executor.submit(len, shared).result(timeout=30) == 1
    assert executor.submit(lambda d: d["big"][2], shared).result(timeout=30) == 3


def test_a_small_shipped_object_travels_with_each_call(client: Any) -> None:
    # Placed on one worker, it would draw every call of a map to that worker.
    executor = DaskExecutor(client)
    small = Shipped({"pipeline": list(range(10))})
    assert executor.hypernodes_share(small) is small
    assert executor.submit(lambda s: s.load()["pipeline"][3], small).result(timeout=30) == 3
    executor.shutdown()


@node(output_name="y")
def held_until(x: int, folder: str) -> int:
    deadline = time.monotonic() + 30
    while not Path(folder, "go").exists():
        assert time.monotonic() < deadline, "never released"
        time.sleep(0.01)
    return x


def _on_workers(client: Any, want: int) -> int:
    """How many tasks the workers hold (running or waiting), once ``want`` (or 30 s)."""
    deadline = time.monotonic() + 30
    seen = 0
    while seen < want and time.monotonic() < deadline:
        seen = sum(len(keys) for keys in client.processing().values())
        time.sleep(0.01)
    return seen


@pytest.mark.parametrize("max_workers", [None, 2])
def test_each_worker_thread_holds_its_next_call(
    max_workers: int | None, cluster: Any, client: Any, tmp_path: Path
) -> None:
    # 2 one-thread workers: 2 items run and 2 more wait on the workers (not on the
    # engine), so a worker starts its next item without a round trip to the engine. A
    # budget of 2 (max_workers) bounds the bodies running, not the calls waiting on the
    # workers: they hold no slot of it.
    assert DaskExecutor(client).hypernodes_backlog() == 2
    engine = HyperNodesEngine(
        map_executor="dask", address=cluster.scheduler_address, max_workers=max_workers
    )
    assert (engine._budget() is None) is (max_workers is None)
    pipe = Pipeline([held_until], engine=engine)
    done: list[Any] = []
    runner = threading.Thread(
        target=lambda: done.append(
            pipe.map({"x": list(range(6)), "folder": str(tmp_path)}, map_over="x")
        )
    )
    runner.start()
    try:
        seen = _on_workers(client, 4)
    finally:
        Path(tmp_path, "go").touch()
        runner.join(timeout=60)
        engine.close()
    assert seen == 4
    assert [r["y"] for r in done[0]] == list(range(6))


def test_the_cluster_is_asked_its_size_at_set_up_not_per_call(client: Any) -> None:
    # Its size is a call to the scheduler, which would block the loop: asked when the
    # lane and its gate are set up, and the budget of every call reads it from there.
    executor = DaskExecutor(client)
    asked: list[int] = []
    width = executor.hypernodes_width
    executor.hypernodes_width = lambda: asked.append(1) or width()  # type: ignore[method-assign]
    engine = HyperNodesEngine(map_executor=executor, max_workers=2)
    assert engine._budget() is not None
    pipe = Pipeline([double], engine=engine)
    counts = []
    for _ in range(2):
        assert [r["doubled"] for r in pipe.map({"x": list(range(8))}, map_over="x")] == [
            2 * x for x in range(8)
        ]
        counts.append(len(asked))
    engine.close()
    # Set-up asks (the lane's width, the gate's size); none for the 2 maps' calls.
    assert counts[0] == counts[1] <= 3


@node(output_name="ready")
async def ready_file(folder: str) -> bool:
    deadline = time.monotonic() + 30
    while not Path(folder, "ready").exists():  # on the loop: no slot of the budget
        assert time.monotonic() < deadline, "never ready"
        await asyncio.sleep(0.01)
    return True


@node(output_name="side")
def side_step(ready: bool, folder: str) -> str:
    Path(folder, "side").touch()
    return "ran"


def test_a_budget_counts_the_calls_running_on_the_cluster(
    cluster: Any, client: Any, tmp_path: Path
) -> None:
    # max_workers=2 across the engine's threads and the cluster: with 2 items running
    # on the workers (and 2 waiting there), a sync node for the thread pool waits for
    # one of them to end before it starts.
    items = Pipeline([held_until], name="items").as_node(name="mapped", map_over="x")
    pipe = Pipeline([items, ready_file, side_step])
    engine = HyperNodesEngine(
        node_executor="threaded",
        map_executor="dask",
        address=cluster.scheduler_address,
        max_workers=2,
    )
    done: list[Any] = []
    runner = threading.Thread(
        target=lambda: done.append(
            pipe.with_engine(engine).run({"x": list(range(6)), "folder": str(tmp_path)})
        )
    )
    runner.start()
    try:
        seen = _on_workers(client, 4)
        Path(tmp_path, "ready").touch()
        time.sleep(0.3)  # time enough for the thread pool to start the side node
        started_early = Path(tmp_path, "side").exists()
    finally:
        Path(tmp_path, "go").touch()
        runner.join(timeout=60)
        engine.close()
    assert seen == 4
    assert not started_early
    assert done[0]["y"] == list(range(6)) and done[0]["side"] == "ran"


def test_plain_map_chunks_run_as_long_as_the_executor_asks(
    engine: HyperNodesEngine, client: Any
) -> None:
    # A Dask call costs milliseconds: its chunks hold at least hypernodes_chunk_seconds
    # of work (here 0 s: halving rounds down to one item a chunk; then far more than any
    # item: the rest in one round).
    executor = engine.lanes[1].executor
    assert isinstance(executor, DaskExecutor) and executor.hypernodes_chunk_rounds
    pipe = Pipeline([double], engine=engine)
    calls = {}
    for seconds in (0.0, 1000.0):
        executor.hypernodes_chunk_seconds = seconds
        with distributed.get_task_stream(client=client) as stream:
            results = pipe.map({"x": list(range(32))}, map_over="x")
        assert [r["doubled"] for r in results] == [2 * x for x in range(32)]
        calls[seconds] = len([t for t in stream.data if "run_unless_over" in str(t["key"])])
    # 4 one-item chunks go before any is timed; then the 28 left: 7, 7, 4, 4, 2, 2, 1, 1
    # (one chunk per item would be 28 calls); or, items this quick against the target,
    # the rest in one round (14 and 14).
    assert calls == {0.0: 12, 1000.0: 6}


@node(output_name="y")
def took(x: int, seconds: float) -> int:
    time.sleep(seconds)
    return x


def test_a_dask_map_goes_in_halving_rounds_of_one_chunk_per_worker(
    engine: HyperNodesEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Items of 20 ms against Dask's ~6 ms a call: after the 4 untimed one-item chunks,
    # pairs of equal chunks (one per worker), each pair half of what is left, ending in
    # one-item chunks; not chunks of the target's worth all the way to the end.
    from hypernodes.engines import chunks

    cut: list[int] = []
    take = chunks._Sizer.take

    def recorded(sizer: Any) -> int:
        size = take(sizer)
        cut.append(min(size, sizer.count - sizer.cut + size))
        return size

    monkeypatch.setattr(chunks._Sizer, "take", recorded)
    pipe = Pipeline([took], engine=engine)
    results = pipe.map({"x": list(range(40)), "seconds": 0.02}, map_over="x")
    assert [r["y"] for r in results] == list(range(40))
    first, rest = cut[:4], [size for size in cut[4:] if size > 0]
    assert first == [1, 1, 1, 1] and sum(rest) == 36
    assert rest[:2] == [9, 9] and rest == sorted(rest, reverse=True), cut
    pairs = [rest[at : at + 2] for at in range(0, len(rest), 2)]
    assert all(len(pair) == 2 and max(pair) - min(pair) <= 1 for pair in pairs), cut
    assert len(rest) <= 8, cut  # 9, 9, 5, 5, 2, 2, 2, 2 at most (20 ms: 2 items = 40 ms)


def test_a_failing_item_in_a_planned_chunk_stops_it_and_the_map(
    engine: HyperNodesEngine, tmp_path: Path
) -> None:
    # 64 items: 4 untimed chunks of 2, then 14, 14, 7, 7, ... Item 40 (the 5th of the
    # chunk of items 36-42) fails: the map fails with its index; 41 never starts.
    @node(output_name="out")
    def paced(x: int, folder: str) -> int:
        Path(folder, f"start-{x}").touch()
        time.sleep(0.01)
        if x == 40:
            raise Rejected("forty")
        return x

    pipe = Pipeline([paced], engine=engine)
    with pytest.raises(NodeError) as info:
        pipe.map({"x": list(range(64)), "folder": str(tmp_path)}, map_over="x")
    assert info.value.item_index == 40 and isinstance(info.value.__cause__, Rejected)
    time.sleep(0.5)
    started = {int(p.name.split("-")[1]) for p in tmp_path.glob("start-*")}
    assert 40 in started and 41 not in started, sorted(started)


# -- callbacks and caching with remote items (events and cache writes on the orchestrator) --


class Recorder(PipelineCallback):
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def on_map_item_end(self, *, context: Any, index: int, duration: float, error: Any) -> None:
        self.events.append(("item", index))

    def on_node_end(
        self, *, context: Any, node: Any, outputs: dict[str, Any], duration: float
    ) -> None:
        self.events.append(("node", outputs["pid"]))


def test_callbacks_fire_for_items_that_ran_on_workers(engine: HyperNodesEngine) -> None:
    recorder = Recorder()
    pipe = Pipeline([worker_pid], engine=engine, callbacks=[recorder])
    results = pipe.map({"x": [1, 2, 3]}, map_over="x")
    assert TEST_PID not in {r["pid"] for r in results}, "items must run on the workers"
    assert sorted(e for e in recorder.events if e[0] == "item") == [("item", i) for i in range(3)]
    assert len([e for e in recorder.events if e[0] == "node"]) == 3


class DictCache(Cache):
    """A minimal store for tests that do not depend on the real cache classes."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, key: str, default: Any = MISSING) -> Any:
        return self.data.get(key, default)

    def put(self, key: str, value: Any) -> None:
        self.data[key] = value

    def __contains__(self, key: object) -> bool:
        return key in self.data

    def clear(self) -> None:
        self.data.clear()

    def stats(self) -> CacheStats:
        return CacheStats()


def test_cache_hits_skip_remote_items(engine: HyperNodesEngine, tmp_path: Path) -> None:
    pytest.importorskip("hypernodes.cache.fingerprint", reason="cache fingerprints not landed")

    @node(output_name="pid")
    def counted(x: int, folder: str) -> int:
        Path(folder, uuid.uuid4().hex).touch()
        return os.getpid()

    pipe = Pipeline([counted], engine=engine, cache=DictCache())
    inputs = {"x": [1, 2, 3], "folder": str(tmp_path)}
    first = pipe.map(inputs, map_over="x")
    second = pipe.map(inputs, map_over="x")
    assert TEST_PID not in {r["pid"] for r in first}, "items must run on the workers"
    assert second == first
    assert len(list(tmp_path.iterdir())) == 3


# -- workers that die, tasks the cluster drops (each waits for killed workers to return) ----


@contextlib.contextmanager
def killing(marks: Path) -> Iterator[list[int]]:
    """SIGKILL every process that writes ``pid-<its pid>`` into ``marks``, while inside."""
    killed: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            for mark in marks.glob("pid-*"):
                pid = int(mark.name[4:])
                if pid not in killed:
                    killed.append(pid)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            stop.wait(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield killed
    finally:
        stop.set()
        watcher.join()


@node(output_name="y")
def doomed(x: int, marks: str) -> int:
    if x == 1:  # item 1 gets its worker killed, every time it starts
        Path(marks, f"pid-{os.getpid()}").touch()
        time.sleep(60)
    return x


def test_a_worker_killed_mid_map_fails_that_item_and_the_next_map_works(tmp_path: Path) -> None:
    # Dask runs an item whose worker died again, up to its allowed failures; then it says
    # KilledWorker, which must become the item's NodeError (it was a bare CancelledError,
    # missing items or a hang when the pipeline, shared with the workers, died with one).
    # The alias's own cluster, 2 workers of 2 threads: the other items end at once instead
    # of waiting behind item 1 on its worker (Dask would count its deaths against them too).
    with HyperNodesEngine(map_executor="dask", max_workers=4) as engine:
        pipe = Pipeline([doomed], engine=engine, name="doom")
        started = time.monotonic()
        with killing(tmp_path) as killed, pytest.raises(NodeError) as info:
            pipe.map({"x": [0, 1, 2], "marks": str(tmp_path)}, map_over="x")
        assert time.monotonic() - started < 30
        err = info.value
        assert (err.node, err.item_index, err.pipeline_path) == ("doomed", 1, ("doom",))
        assert type(err.__cause__) is distributed.KilledWorker
        assert len(killed) == dask_config.get("distributed.scheduler.allowed-failures") + 1
        executor = engine.lanes[1].executor
        assert isinstance(executor, DaskExecutor)
        executor.client.wait_for_workers(2, timeout=30)
        results = pipe.map({"x": [0, 2, 3], "marks": str(tmp_path)}, map_over="x")
    assert results == [{"y": 0}, {"y": 2}, {"y": 3}]


@node(output_name="y")
def held(x: int, marks: str) -> int:
    if x == 1:  # item 1 runs until the test releases it
        Path(marks, "started").touch()
        deadline = time.monotonic() + 30
        while not Path(marks, "release").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
    return x


@pytest.mark.asyncio
@pytest.mark.parametrize("executor", ["DaskExecutor", "ClientExecutor"])
async def test_a_task_the_cluster_cancels_fails_its_item_in_amap(
    executor: str, cluster: Any, client: Any, tmp_path: Path
) -> None:
    # Cancelled by the cluster (here: by a client, with force), not by the run: the item
    # fails with a NodeError, not a bare CancelledError that the task awaiting it takes
    # for its own cancellation (nor a silently missing item). Through the "dask" alias's
    # DaskExecutor, and through a user's plain client.get_executor().
    if executor == "DaskExecutor":
        engine = HyperNodesEngine(map_executor="dask", address=cluster.scheduler_address)
    else:
        engine = HyperNodesEngine(map_executor=client.get_executor(pure=False))
    pipe = Pipeline([held], engine=engine, name="held")
    mapping = asyncio.create_task(pipe.amap({"x": [0, 1, 2], "marks": str(tmp_path)}, map_over="x"))
    try:
        async with asyncio.timeout(30):
            while True:  # until item 1 runs and is the only task left on the workers
                running = await asyncio.to_thread(client.processing)
                keys = [key for keys in running.values() for key in keys]
                if Path(tmp_path, "started").exists() and len(keys) == 1:
                    break
                await asyncio.sleep(0.05)
        doomed_task = distributed.Future(keys[0], client)
        await asyncio.to_thread(client.cancel, [doomed_task], force=True, reason="by the test")
        async with asyncio.timeout(30):
            with pytest.raises(NodeError) as info:
                await mapping
    finally:
        Path(tmp_path, "release").touch()
        if not mapping.done():
            mapping.cancel()
            with contextlib.suppress(BaseException):
                await mapping
        await engine.aclose()
    err = info.value
    assert (err.node, err.item_index) == ("held", 1)
    lost = err.__cause__
    assert type(lost) is TaskLost
    assert "nothing in this process cancelled it" in str(lost)
    if executor == "DaskExecutor":
        assert (lost.cluster, lost.reason) == ("Dask", "by the test")
        assert isinstance(lost.__cause__, concurrent.futures.CancelledError)  # Dask's own
    else:
        assert (lost.cluster, lost.reason) == ("ClientExecutor", "cancelled")
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


@pytest.mark.parametrize("threshold", ["10MB", "100kB"], ids=["made-by-a-task", "scattered"])
def test_shared_data_lost_with_its_workers_is_placed_again(client: Any, threshold: str) -> None:
    # A map's pipeline, shared with the cluster once, died with the workers holding it:
    # every item, and every later map, failed with a bare CancelledError.
    executor = DaskExecutor(client)
    shared_obj = Shipped(list(range(40_000)))  # ~120 kB pickled: too big to travel inline
    assert len(shared_obj.blob) > INLINE_BYTES
    with dask_config.set({"distributed.admin.large-graph-warning-threshold": threshold}):
        shared = executor.hypernodes_share(shared_obj)
        assert executor.submit(lambda s: len(s.load()), shared).result(timeout=30) == 40_000
        holders = client.who_has([shared])[shared.key]
        pids = client.run(os.getpid, workers=list(holders))
        for pid in pids.values():
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while set(holders) & set(client.scheduler_info()["workers"]):
            assert time.monotonic() < deadline, "the scheduler never saw the workers die"
            time.sleep(0.05)
        client.wait_for_workers(2, timeout=30)
        again = executor.submit(lambda s: sum(s.load()), shared)
        assert again.result(timeout=30) == sum(range(40_000))
        # The next map shares the same object again: it gets the live placement.
        shared = executor.hypernodes_share(shared_obj)
        assert executor.submit(lambda s: len(s.load()), shared).result(timeout=30) == 40_000
    executor.shutdown()


# -- the command line ----------------------------------------------------------------------


def test_cli_map_on_a_cluster_by_address(tmp_path: Path, cluster: Any, client: Any) -> None:
    import json
    import subprocess

    script = tmp_path / "flow.py"
    script.write_text(
        "import distributed\n"
        "from hypernodes import Pipeline, node\n\n\n"
        "@node(output_name='where')\n"
        "def where(x: int) -> str:\n"
        "    return f'{x}@{distributed.get_worker().address}'\n\n\n"
        "pipeline = Pipeline([where])\n"
    )
    command = [sys.executable, "-m", "hypernodes", "run", f"{script}:pipeline"]
    command += ["--inputs", json.dumps({"x": [1, 2, 3]}), "--map-over", "x"]
    command += ["--map-executor", "dask", "--address", cluster.scheduler_address]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout)
    assert [r["where"].split("@")[0] for r in results] == ["1", "2", "3"]
    assert {r["where"].split("@")[1] for r in results} <= set(client.scheduler_info()["workers"])
    assert cluster.status.name == "running"


# -- call policies ---------------------------------------------------------------------------


@node(output_name="span", limit=Limit("dask-one-at-a-time", concurrency=1), retries=Retry(2))
def limited_span(x: int) -> tuple[float, float, int]:
    start = time.time()
    time.sleep(0.02)
    return (start, time.time(), os.getpid())


def test_a_limit_holds_across_dask_workers(engine: HyperNodesEngine) -> None:
    # The orchestrator grants the attempts: a limited pipeline's items run here and each
    # body is shipped to a worker once its attempt holds the limit.
    results = Pipeline([limited_span], engine=engine).map(
        inputs={"x": list(range(10))}, map_over="x"
    )
    spans = sorted((s, e) for s, e, _ in (r["span"] for r in results))
    assert {pid for *_, pid in (r["span"] for r in results)} - {TEST_PID}  # in workers
    assert all(b[0] >= a[1] for a, b in itertools.pairwise(spans))  # never 2 at once


# -- resources ---------------------------------------------------------------------------


class _Unpicklable:
    def __reduce__(self) -> Any:
        raise TypeError("a resource's object is never pickled")


def test_a_process_resource_is_built_in_each_dask_worker_never_pickled(
    engine: HyperNodesEngine, tmp_path: Path
) -> None:
    from hypernodes import resource

    log = tmp_path / "pids"
    log.touch()

    @resource(scope="process")
    def model(log: str) -> _Unpicklable:
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        return _Unpicklable()

    @node(output_name="pid")
    def use(x: int, model: _Unpicklable) -> int:
        assert isinstance(model, _Unpicklable)
        return os.getpid()

    for role in ("map", "node"):
        eng = engine
        if role == "node":
            eng = HyperNodesEngine(node_executor="dask", address=engine.address)
        try:
            results = Pipeline([model, use], engine=eng).map(
                {"x": list(range(20)), "log": str(log)}, map_over="x"
            )
        finally:
            if eng is not engine:
                eng.close()
        assert TEST_PID not in {r["pid"] for r in results}
    pids = log.read_text().split()
    assert len(pids) == len(set(pids)) <= 2  # once per worker process, whatever the role
    assert str(TEST_PID) not in pids


# -- maps that keep going and stream -----------------------------------------------------------


@node(output_name="y")
def fails_every_7th(x: int) -> int:
    if x % 7 == 0:
        raise ValueError(f"item {x}")
    return 2 * x


def test_collect_and_stream_on_dask(engine: HyperNodesEngine) -> None:
    from hypernodes import ItemFailure

    pipe = Pipeline([fails_every_7th], engine=engine)
    results = pipe.map(inputs={"x": list(range(30))}, map_over="x", on_error="collect")
    assert [f.index for f in results.failures] == [0, 7, 14, 21, 28]
    assert all(isinstance(f.error.__cause__, ValueError) for f in results.failures)
    assert [r["y"] for r in results if type(r) is not ItemFailure] == [
        2 * x for x in range(30) if x % 7
    ]
    pairs = list(pipe.map_iter(inputs={"x": (x for x in range(1, 7))}, map_over="x", window=4))
    assert sorted(pairs, key=lambda p: p[0]) == [(k, {"y": 2 * (k + 1)}) for k in range(6)]
