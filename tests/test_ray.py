"""The Ray executor on a local Ray: the "ray" alias, the concurrent.futures adapter."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from hypernodes import HyperNodesEngine, Limit, NodeError, Pipeline, PipelineCallback, Retry, node

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
ray = pytest.importorskip("ray")

from hypernodes.executors.ray import ENV_ADDRESS, RayExecutor  # noqa: E402

# Ray workers cannot import this test module: ship its functions by value (as for
# functions defined in __main__ or a notebook).
cloudpickle.register_pickle_by_value(sys.modules[__name__])

TEST_PID = os.getpid()


@pytest.fixture(scope="module")
def ray_engine() -> Iterator[HyperNodesEngine]:
    """The engine that starts the module's local Ray (2 CPUs) and shuts it down."""
    if ray.is_initialized():
        pytest.skip("Ray was started elsewhere in this process; these tests start their own")
    engine = HyperNodesEngine(map_executor="ray", max_workers=2)
    engine.lanes  # noqa: B018 - starts Ray now, not inside the first test
    assert ray.is_initialized()
    yield engine
    engine.close()
    assert not ray.is_initialized(), "the engine that started Ray shuts it down"


@pytest.fixture
def executor(ray_engine: HyperNodesEngine) -> Iterator[RayExecutor]:
    ex = RayExecutor()
    yield ex
    ex.shutdown(wait=False, cancel_futures=True)


# -- pipelines ---------------------------------------------------------------------------


@node(output_name="doubled")
def double(x: int) -> int:
    return 2 * x


@node(output_name=("total", "where"))
def add(doubled: int, offset: int = 10) -> tuple[int, int]:
    return doubled + offset, os.getpid()


def basic() -> Pipeline:
    return Pipeline([double, add], name="basic")


class Rejected(ValueError):
    """A user's own exception type."""


@node(output_name="checked")
def check(x: int) -> int:
    if x == 3:
        raise Rejected(f"bad item {x}")
    return x


# -- the alias ---------------------------------------------------------------------------


def test_map_matches_the_local_engine_and_runs_in_ray_workers(
    ray_engine: HyperNodesEngine,
) -> None:
    inputs = {"x": list(range(6)), "offset": 100}
    local = basic().map(inputs, map_over="x", output_name="total")
    results = basic().with_engine(ray_engine).map(inputs, map_over="x")
    assert [{"total": r["total"]} for r in results] == local
    assert TEST_PID not in {r["where"] for r in results}
    lane = ray_engine.lanes[1]
    assert lane.kind == "remote" and lane.width == 2


def test_identical_calls_are_separate_tasks(ray_engine: HyperNodesEngine) -> None:
    @node(output_name="token")
    def token(x: int) -> str:
        return uuid.uuid4().hex

    results = Pipeline([token], engine=ray_engine).map({"x": [0, 0, 0]}, map_over="x")
    assert len({r["token"] for r in results}) == 3


def test_node_executor_ray_runs_sync_bodies_in_workers(ray_engine: HyperNodesEngine) -> None:
    @node(output_name="a")
    def left(x: int) -> tuple[int, int]:
        return x + 1, os.getpid()

    @node(output_name="b")
    def right(x: int) -> tuple[int, int]:
        return x + 2, os.getpid()

    @node(output_name="both")
    async def both(a: tuple[int, int], b: tuple[int, int]) -> int:
        return a[0] + b[0]

    with HyperNodesEngine(node_executor="ray") as engine:
        result = Pipeline([left, right, both], engine=engine).run({"x": 1})
    assert result["both"] == 5
    assert TEST_PID not in {result["a"][1], result["b"][1]}
    assert ray.is_initialized(), "an engine that joined a running Ray leaves it up"


def test_nested_pipelines_inside_map_items(ray_engine: HyperNodesEngine) -> None:
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
    local = outer.map({"x": [1, 2]}, map_over="x", output_name="summary")
    remote = outer.with_engine(ray_engine).map({"x": [1, 2]}, map_over="x", output_name="summary")
    assert remote == local == [{"summary": (5, 1)}, {"summary": (13, 4)}]


def test_item_errors_name_node_and_index_with_the_users_exception(
    ray_engine: HyperNodesEngine,
) -> None:
    pipe = Pipeline([check], engine=ray_engine, name="checks")
    with pytest.raises(NodeError) as info:
        pipe.map({"x": [0, 1, 2, 3]}, map_over="x")
    assert info.value.node == "check"
    assert info.value.item_index == 3
    assert type(info.value.__cause__) is Rejected
    assert str(info.value.__cause__) == "bad item 3"


def test_node_executor_errors_keep_the_users_exception(ray_engine: HyperNodesEngine) -> None:
    engine = HyperNodesEngine(node_executor="ray")
    with engine, pytest.raises(NodeError) as info:
        Pipeline([check], engine=engine).run({"x": 3})
    assert type(info.value.__cause__) is Rejected


@node(output_name="numbers")
def numbers(x: int) -> Any:
    return (i for i in range(x)) if x == 1 else [x]


@pytest.mark.parametrize("role", ["map_executor", "node_executor"])
def test_a_generator_returned_on_a_worker_is_a_node_error_saying_what_to_do(
    role: str, ray_engine: HyperNodesEngine
) -> None:
    # A value that cannot be pickled back from the worker was a raw TypeError out of a
    # map (issue 17): it is the node's failure, and the error says what to return.
    with HyperNodesEngine(**{role: "ray"}) as engine, pytest.raises(NodeError) as info:
        Pipeline([numbers], engine=engine, name="p").map({"x": [0, 1, 2]}, "x")
    assert (info.value.node, info.value.item_index) == ("numbers", 1)
    cause = info.value.__cause__
    assert type(cause) is TypeError
    assert str(cause).startswith("the node returned a generator, which cannot travel back")
    assert "(TypeError: cannot pickle 'generator' object); return a list instead" in str(cause)


def test_first_failure_interrupts_running_ray_tasks(
    ray_engine: HyperNodesEngine, tmp_path: Path
) -> None:
    @node(output_name="out")
    def slow(x: int, folder: str) -> int:
        Path(folder, f"start-{x}").write_text(repr(time.time()))
        if x == 0:
            time.sleep(0.5)
            raise Rejected("first")
        time.sleep(2.0)
        Path(folder, f"end-{x}").touch()
        return x

    pipe = Pipeline([slow], engine=ray_engine)
    with pytest.raises(NodeError) as info:
        pipe.map({"x": list(range(6)), "folder": str(tmp_path)}, map_over="x")
    raised = time.time()
    assert info.value.item_index == 0
    time.sleep(2.5)  # a running item that was not cancelled would have finished by now
    started = {p.name: _stamp(p) for p in tmp_path.glob("start-*")}
    assert "start-0" in started
    # Every task that was running when the map raised was interrupted. (Under load, Ray
    # can dispatch a queued task in the instant before its cancellation lands: such a task
    # starts after the map raised, and is not what this test is about.)
    running = {name.split("-")[1] for name, at in started.items() if at < raised}
    ended = {p.name.split("-")[1] for p in tmp_path.glob("end-*")}
    assert not running & ended, "cancelled Ray tasks are interrupted"


def _stamp(path: Path) -> float:
    # A task interrupted while writing its stamp leaves it empty: it proves nothing.
    try:
        return float(path.read_text())
    except ValueError:
        return float("inf")


class Recorder(PipelineCallback):
    def __init__(self) -> None:
        self.items: list[int] = []
        self.nodes: list[str] = []

    def on_map_item_end(
        self, *, context: Any, index: int, duration: float, error: Any, **_: Any
    ) -> None:
        self.items.append(index)

    def on_node_end(
        self, *, context: Any, node: Any, outputs: dict[str, Any], duration: float
    ) -> None:
        self.nodes.append(node.name)


def test_callbacks_fire_for_items_that_ran_in_workers(ray_engine: HyperNodesEngine) -> None:
    recorder = Recorder()
    pipe = basic().with_engine(ray_engine).with_callbacks([recorder])
    results = pipe.map({"x": [1, 2, 3]}, map_over="x")
    assert TEST_PID not in {r["where"] for r in results}
    assert sorted(recorder.items) == [0, 1, 2]
    assert sorted(recorder.nodes) == ["add"] * 3 + ["double"] * 3


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


def test_a_worker_killed_mid_map_fails_that_item_and_the_next_map_works(
    ray_engine: HyperNodesEngine, tmp_path: Path
) -> None:
    # Ray retries a task whose worker died (max_retries, 3 by default), then says
    # WorkerCrashedError: that must be the item's NodeError, not a bare Ray error.
    pipe = Pipeline([doomed], engine=ray_engine, name="doom")
    started = time.monotonic()
    with killing(tmp_path) as killed, pytest.raises(NodeError) as info:
        pipe.map({"x": [0, 1, 2], "marks": str(tmp_path)}, map_over="x")
    assert time.monotonic() - started < 30
    err = info.value
    assert (err.node, err.item_index, err.pipeline_path) == ("doomed", 1, ("doom",))
    assert type(err.__cause__) is ray.exceptions.WorkerCrashedError
    assert len(killed) == 4  # the first attempt and Ray's 3 retries
    results = pipe.map({"x": [0, 2, 3], "marks": str(tmp_path)}, map_over="x")
    assert results == [{"y": 0}, {"y": 2}, {"y": 3}]


def test_cluster_address_from_the_environment(
    ray_engine: HyperNodesEngine, run_python: Callable[..., Any]
) -> None:
    address = ray.get_runtime_context().gcs_address
    env = {ENV_ADDRESS: address, "RAY_USAGE_STATS_ENABLED": "0"}
    proc = run_python(
        f"""
        import os
        os.environ.update({env!r})
        import ray
        from hypernodes import HyperNodesEngine, Pipeline, node

        @node(output_name="node_id")
        def where(x):
            return ray.get_runtime_context().get_node_id()

        engine = HyperNodesEngine(map_executor="ray")
        results = Pipeline([where], engine=engine).map({{"x": [1, 2]}}, map_over="x")
        print("NODES", sorted({{r["node_id"] for r in results}}))
        engine.close()
        print("CONNECTED_AFTER_CLOSE", ray.is_initialized())
        """,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"NODES {[ray.get_runtime_context().get_node_id()]}" in proc.stdout
    assert "CONNECTED_AFTER_CLOSE False" in proc.stdout
    # The cluster given by address is still running for this process.
    assert ray.get(ray.remote(lambda: 7).remote(), timeout=60) == 7


# -- the executor itself -----------------------------------------------------------------


def test_submit_returns_results_and_the_users_exception(executor: RayExecutor) -> None:
    assert executor.submit(pow, 2, 10).result(timeout=60) == 1024

    def fail(message: str) -> None:
        raise Rejected(message)

    with pytest.raises(Rejected, match="nope") as info:
        executor.submit(fail, "nope").result(timeout=60)
    assert any("Ray task" in note for note in info.value.__notes__)


def test_keyword_arguments_and_shared_objects(executor: RayExecutor) -> None:
    shared = executor.hypernodes_share({"big": [1, 2, 3]})
    assert executor.hypernodes_share({"big": [1, 2, 3]}) is not shared  # no digest: no reuse
    assert executor.submit(len, shared).result(timeout=60) == 1

    def pick(*, data: dict[str, list[int]]) -> int:
        return data["big"][2]

    assert executor.submit(pick, data=shared).result(timeout=60) == 3
    assert executor.submit(sorted, [3, 1, 2], reverse=True).result(timeout=60) == [3, 2, 1]
    assert executor.hypernodes_width() == 2


def test_cancel_interrupts_the_task(executor: RayExecutor, tmp_path: Path) -> None:
    def sleeper(folder: str) -> None:
        Path(folder, "start").touch()
        time.sleep(3)
        Path(folder, "end").touch()

    future = executor.submit(sleeper, str(tmp_path))
    deadline = time.monotonic() + 30
    while not Path(tmp_path, "start").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert future.cancel()
    time.sleep(3.5)
    assert not Path(tmp_path, "end").exists()


def test_shutdown_like_the_standard_library(executor: RayExecutor) -> None:
    slow = [executor.submit(time.sleep, 2) for _ in range(3)]
    executor.shutdown(wait=False, cancel_futures=True)
    assert all(f.cancelled() for f in slow)
    with pytest.raises(RuntimeError, match="after shutdown"):
        executor.submit(pow, 2, 2)
    waited = RayExecutor()
    quick = waited.submit(pow, 2, 3)
    waited.shutdown(wait=True)
    assert quick.done() and quick.result() == 8


# -- call policies ---------------------------------------------------------------------------


@node(output_name="span", limit=Limit("ray-one-at-a-time", concurrency=1), retries=Retry(2))
def limited_span(x: int) -> tuple[float, float, int]:
    start = time.time()
    time.sleep(0.02)
    return (start, time.time(), os.getpid())


def test_a_limit_holds_across_ray_workers(ray_engine: HyperNodesEngine) -> None:
    results = Pipeline([limited_span], engine=ray_engine).map(
        inputs={"x": list(range(10))}, map_over="x"
    )
    spans = sorted((s, e) for s, e, _ in (r["span"] for r in results))
    assert {pid for *_, pid in (r["span"] for r in results)} - {TEST_PID}  # in workers
    assert all(b[0] >= a[1] for a, b in itertools.pairwise(spans))  # never 2 at once


# -- resources ---------------------------------------------------------------------------


class _Unpicklable:
    def __reduce__(self) -> Any:
        raise TypeError("a resource's object is never pickled")


def test_a_process_resource_is_built_once_per_ray_worker_never_pickled(
    ray_engine: HyperNodesEngine, tmp_path: Path
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

    used: set[int] = set()
    for eng in (ray_engine, HyperNodesEngine(node_executor="ray", max_workers=2)):
        results = Pipeline([model, use], engine=eng).map(
            {"x": list(range(20)), "log": str(log)}, map_over="x"
        )
        used |= {r["pid"] for r in results}
        if eng is not ray_engine:
            eng.close()
    pids = [int(p) for p in log.read_text().split()]
    assert len(pids) == len(set(pids))  # once per worker process
    assert set(pids) <= used and TEST_PID not in used


# -- maps that keep going and stream -----------------------------------------------------------


@node(output_name="y")
def fails_every_7th(x: int) -> int:
    if x % 7 == 0:
        raise ValueError(f"item {x}")
    return 2 * x


def test_collect_and_stream_on_ray(ray_engine: HyperNodesEngine) -> None:
    from hypernodes import ItemFailure

    pipe = Pipeline([fails_every_7th], engine=ray_engine)
    results = pipe.map(inputs={"x": list(range(30))}, map_over="x", on_error="collect")
    assert [f.index for f in results.failures] == [0, 7, 14, 21, 28]
    assert all(isinstance(f.error.__cause__, ValueError) for f in results.failures)
    assert [r["y"] for r in results if type(r) is not ItemFailure] == [
        2 * x for x in range(30) if x % 7
    ]
    pairs = list(pipe.map_iter(inputs={"x": (x for x in range(1, 7))}, map_over="x", window=4))
    assert sorted(pairs, key=lambda p: p[0]) == [(k, {"y": 2 * (k + 1)}) for k in range(6)]
