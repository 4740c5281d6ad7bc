"""What a ``"parallel"`` map sends to its workers, counted rather than timed.

A big bundle (pipeline and shared inputs) is stored once on the machine and read once per
worker, a worker that replaced a killed one included, and the file goes with the map.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hypernodes import HyperNodesEngine, NodeError, Pipeline, WorkerLostError, node
from hypernodes.engines import chunks
from hypernodes.executors import depot as depot_module
from hypernodes.executors.depot import Depot, Stored
from hypernodes.executors.processes import ProcessPool
from hypernodes.executors.remote import Parcel, Shipped

BIG = 2 * depot_module.STORE_AT_LEAST  # a shared input big enough to be stored


def _blob(seed: int = 0) -> bytes:
    return bytes((seed + k) % 251 for k in range(BIG))


@node(output_name="seen")
def where(x: int, blob: bytes) -> tuple[int, int, int]:
    """The worker's pid, how many stored bundles it has read, and a value of the item."""
    return os.getpid(), depot_module.reads(), x + blob[x]


@pytest.fixture
def engine() -> Iterator[HyperNodesEngine]:
    made = HyperNodesEngine(map_executor="parallel", max_workers=2)
    yield made
    made.close()


def _pool(engine: HyperNodesEngine) -> ProcessPool:
    pool = engine.lanes[1].executor
    assert isinstance(pool, ProcessPool)
    return pool


def _reads_per_worker(seen: list[tuple[int, int, int]]) -> dict[int, int]:
    per: dict[int, int] = {}
    for pid, reads, _ in seen:
        per[pid] = max(per.get(pid, 0), reads)
    return per


def test_a_big_shared_input_is_stored_once_and_read_once_per_worker(
    engine: HyperNodesEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    pickled: list[int] = []
    reduce = Shipped.__reduce__

    def counting(self: Shipped) -> tuple[Any, ...]:
        pickled.append(len(self.blob))
        return reduce(self)

    monkeypatch.setattr(Shipped, "__reduce__", counting)
    blob = _blob()
    pipeline = Pipeline([where], engine=engine, name="p")
    out = pipeline.map({"x": list(range(40)), "blob": blob}, "x")
    seen = [r["seen"] for r in out]
    assert [v for _, _, v in seen] == [x + blob[x] for x in range(40)]
    pool = _pool(engine)
    assert pool.depot.writes == 1  # one file for the whole map
    assert pickled == []  # the bundle itself never went down the pipe
    per = _reads_per_worker(seen)
    assert 1 <= len(per) <= 2
    assert set(per.values()) == {1}  # each worker read it once
    assert pool.depot.stored == 0  # the file went with the map
    assert not [n for n in os.listdir("/dev/shm") if n.startswith("hypernodes-bundle-")]


def test_a_small_bundle_travels_with_its_tasks(engine: HyperNodesEngine) -> None:
    pipeline = Pipeline([where], engine=engine)
    out = pipeline.map({"x": [0, 1, 2], "blob": b"abc"}, "x")
    assert [r["seen"][2] for r in out] == [97, 99, 101]
    assert _pool(engine).depot.writes == 0


def test_a_worker_replacing_a_killed_one_reads_the_bundle(
    engine: HyperNodesEngine, tmp_path: Path
) -> None:
    @node(output_name="seen")
    def kill_at_3(x: int, blob: bytes) -> tuple[int, int, int]:
        if x == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        return os.getpid(), depot_module.reads(), x + blob[x]

    blob = _blob(1)
    pipeline = Pipeline([kill_at_3], engine=engine, name="k")
    with pytest.raises(WorkerLostError) as info:
        pipeline.map({"x": list(range(6)), "blob": blob}, "x")
    assert (info.value.node, info.value.item_index) == ("kill_at_3", 3)
    pool = _pool(engine)
    assert pool.depot.stored == 0
    # The next map runs on fresh workers: each reads the stored bundle, once.
    out = pipeline.map({"x": [0, 1, 2, 4, 5], "blob": blob}, "x")
    seen = [r["seen"] for r in out]
    assert [v for _, _, v in seen] == [x + blob[x] for x in (0, 1, 2, 4, 5)]
    assert set(_reads_per_worker(seen).values()) == {1}
    assert pool.depot.writes == 2


def test_concurrent_maps_each_get_their_own_bundle(engine: HyperNodesEngine) -> None:
    pipeline = Pipeline([where], engine=engine)
    blobs = [_blob(k) for k in range(3)]
    results: dict[int, list[int]] = {}
    errors: list[BaseException] = []

    def run(k: int) -> None:
        try:
            out = pipeline.map({"x": list(range(20)), "blob": blobs[k]}, "x")
            results[k] = [r["seen"][2] for r in out]
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for k, blob in enumerate(blobs):
        assert results[k] == [x + blob[x] for x in range(20)]
    assert _pool(engine).depot.stored == 0


def test_a_nested_parallel_map_shares_its_bundle_too(engine: HyperNodesEngine) -> None:
    inner = Pipeline([where], engine=engine, name="inner")
    outer = inner.as_node(map_over="x", name="mapped")
    blob = _blob(2)
    result = Pipeline([outer], engine=engine).run({"x": [1, 2, 3], "blob": blob})
    assert [v for _, _, v in result["seen"]] == [x + blob[x] for x in (1, 2, 3)]
    assert _pool(engine).depot.writes == 1
    assert _pool(engine).depot.stored == 0


def test_a_depot_shares_a_file_by_digest_until_the_last_release() -> None:
    depot = Depot()
    shipped = Shipped(_blob())
    first = depot.put(shipped.digest, shipped.blob)
    second = depot.put(shipped.digest, shipped.blob)
    assert first is not None and first is second
    assert (depot.writes, depot.stored) == (1, 1)
    assert first.load() == _blob()
    depot.release(first)
    assert depot.stored == 1
    depot.release(second)
    assert depot.stored == 0
    assert depot.put(b"d" * 16, b"small") is None  # sent inline instead


def test_a_stored_handle_whose_file_is_gone_says_so() -> None:
    handle = Stored(b"0" * 16, "/nonexistent/hypernodes-bundle", BIG)
    with pytest.raises(RuntimeError, match="could not read the map's pipeline"):
        handle.load()


def test_a_stored_handle_never_reads_another_file_at_its_path(tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.write_bytes(b"x" * (16 + BIG))  # the right size, another object
    handle = Stored(b"0" * 16, str(other), BIG)
    with pytest.raises(RuntimeError, match="holds something else now"):
        handle.load()


def test_a_map_failure_in_a_worker_still_releases_the_file(engine: HyperNodesEngine) -> None:
    @node(output_name="y")
    def fails_at_2(x: int, blob: bytes) -> int:
        if x == 2:
            raise ValueError("no 2")
        return x

    pipeline = Pipeline([fails_at_2], engine=engine, name="f")
    with pytest.raises(NodeError) as info:
        pipeline.map({"x": list(range(5)), "blob": _blob()}, "x")
    assert info.value.item_index == 2
    assert _pool(engine).depot.stored == 0


# -- many items, few tasks -------------------------------------------------------------


@node(output_name="y")
def tagged(x: int) -> tuple[int, int]:
    """The worker's pid and the item's value doubled."""
    return os.getpid(), 2 * x


def _counting_submits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    submitted: list[int] = []
    submit = ProcessPool.submit

    def counting(self: ProcessPool, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        submitted.append(1)
        return submit(self, fn, *args, **kwargs)

    monkeypatch.setattr(ProcessPool, "submit", counting)
    return submitted


def test_a_plain_map_of_many_items_sends_few_tasks(
    engine: HyperNodesEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    submitted = _counting_submits(monkeypatch)
    pipeline = Pipeline([tagged], engine=engine)
    out = pipeline.map({"x": list(range(2000))}, "x")
    assert [r["y"][1] for r in out] == [2 * x for x in range(2000)]
    # First chunks of 2000 // 32 = 62 items, then at most half a worker's share (500).
    assert len(submitted) <= 2 + 2000 // 500 + 1
    assert chunks._Sizer(2000, 2).cap == 500


@node(output_name="y")
def slow_tagged(x: int) -> tuple[int, int]:
    """``tagged``, taking 20 ms: two items are more than a tenth of a chunk's target."""
    time.sleep(0.02)
    return os.getpid(), 2 * x


def test_a_small_map_still_sends_one_item_per_task_at_first(
    engine: HyperNodesEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    submitted = _counting_submits(monkeypatch)
    out = Pipeline([slow_tagged], engine=engine).map({"x": [0, 1, 2, 3]}, "x")
    assert [r["y"][1] for r in out] == [0, 2, 4, 6]
    assert len(submitted) == 4


def test_quick_items_go_in_one_chunk_a_worker_once_timed() -> None:
    # 0.1 us an item: a worker's share (5,000 items, 0.5 ms) is far under a tenth of
    # the target, so the next chunk is the whole share, not half of it.
    sizer = chunks._Sizer(10_000, 2)
    assert (sizer.size, sizer.cap) == (312, 2500)
    sizer.measured(312, 312 * 1e-7, 312 * 5)
    assert (sizer.size, sizer.cap) == (min(5000, chunks.GROWTH * 312), 5000)
    # 10 us an item: the share takes 50 ms, so chunks stay at half a share at most.
    slower = chunks._Sizer(10_000, 2)
    slower.measured(312, 312 * 1e-5, 312 * 5)
    assert (slower.size, slower.cap) == (2500, 2500)


def test_result_dicts_are_made_once_every_chunk_is_back(
    engine: HyperNodesEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Made as chunks arrive, they would hold the GIL while the pool's threads wait to
    # send the next chunk to a worker.
    made: list[int] = []
    dicts = chunks._dicts

    def counting(outputs: tuple[str, ...], pieces: Any) -> list[dict[str, Any]]:
        made.append(len(pieces))
        return dicts(outputs, pieces)

    monkeypatch.setattr(chunks, "_dicts", counting)
    submitted = _counting_submits(monkeypatch)
    out = Pipeline([tagged], engine=engine).map({"x": list(range(2000))}, "x")
    assert [r["y"][1] for r in out] == [2 * x for x in range(2000)]
    assert made == [len(submitted)] and len(submitted) > 2


def _chunk(pipeline: Pipeline, shared: dict[str, Any], columns: dict[str, list[Any]]) -> Any:
    """``run_shipped_chunk`` of items 5.. in this process; what its parcel holds."""
    bundle = Shipped((pipeline.stripped(), shared))
    names = tuple(columns)
    parcel = Parcel(tuple(columns.values())).seal()
    outputs = tuple(pipeline.plan(None, (*shared, *names)).outputs)
    answer = chunks.run_shipped_chunk(bundle, names, 5, parcel, outputs)
    return answer.value


@node(output_name="z")
def scaled(x: int, k: int, *, offset: int = 1) -> int:
    if x < 0:
        raise ValueError(f"negative {x}")
    return k * x + offset


def test_a_chunk_of_one_plain_node_calls_it_without_the_step_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The step loop builds an inputs dict and an outputs dict per item (~0.5 us an item
    # in all, against ~0.1 us for the call and the run's checks): not for one node.
    def step_loop(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the step loop ran")

    monkeypatch.setattr(chunks, "run_plain_items", step_loop)
    one = Pipeline([scaled], name="one")
    got, seconds = _chunk(one, {"k": 3}, {"x": [1, 2, 3]})
    assert got == [[4, 7, 10]] and seconds >= 0
    # Mapped inputs win over shared ones; keyword-only and optional inputs are passed.
    got, _ = _chunk(one.bind(offset=0), {"k": 3}, {"x": [1, 2], "k": [10, 20]})
    assert got == [[10, 40]]
    # A failing item: its own NodeError, with its index and the pipeline's name.
    failure = _chunk(one, {"k": 3}, {"x": [1, -2, 3]})
    with pytest.raises(NodeError) as info:
        failure.reraise()
    assert (info.value.node, info.value.item_index, info.value.pipeline_path) == (
        "scaled",
        6,
        ("one",),
    )
    assert isinstance(info.value.__cause__, ValueError)


@node(output_name=("total", "label"))
def combine(a: int, b: str, k: int) -> tuple[int, str]:
    return a * k, f"{b}{a}"


@pytest.mark.parametrize(
    ("inputs", "mode"),
    [
        ({"a": list(range(700)), "b": ["p", "q"] * 350}, "zip"),
        ({"a": tuple(range(700)), "b": tuple("pq" * 350)}, "zip"),
        ({"a": range(700), "b": ["p", "q"] * 350}, "zip"),
        ({"a": list(range(70)), "b": list("pqrstuvwxy")}, "product"),
    ],
    ids=["lists", "tuples", "range", "product"],
)
def test_chunks_travel_as_columns_and_keep_every_item_in_place(
    engine: HyperNodesEngine,
    monkeypatch: pytest.MonkeyPatch,
    inputs: dict[str, Any],
    mode: str,
) -> None:
    # Several mapped inputs and two outputs, in chunks (sliced lists, tuples and ranges;
    # the items of a product turned into columns): the results of a sequential map.
    submitted = _counting_submits(monkeypatch)
    pipeline = Pipeline([combine], engine=engine)
    args = {**inputs, "k": 3}
    got = pipeline.map(args, ["a", "b"], map_mode=mode)  # type: ignore[arg-type]
    want = Pipeline([combine]).map(args, ["a", "b"], map_mode=mode)  # type: ignore[arg-type]
    assert got == want and len(got) == 700
    assert list(got[0]) == ["total", "label"]
    assert len(submitted) < 700 // 10  # in chunks, not one task an item


@pytest.mark.parametrize("nodes", [1, 2], ids=["one-node", "two-nodes"])
def test_a_failing_item_in_a_chunk_fails_with_its_own_index(
    engine: HyperNodesEngine, tmp_path: Path, nodes: int
) -> None:
    started = tmp_path / "started"
    started.mkdir()

    @node(output_name="y")
    def fails_at_1500(x: int, started: str) -> int:
        with open(os.path.join(started, str(x)), "w"):
            pass
        if x == 1500:
            raise ValueError("no 1500")
        return x

    @node(output_name="z")
    def after(y: int) -> int:
        return y

    pipeline = Pipeline([fails_at_1500, after][:nodes], engine=engine, name="c")
    with pytest.raises(NodeError) as info:
        pipeline.map({"x": list(range(3000)), "started": str(started)}, "x")
    assert (info.value.node, info.value.item_index) == ("fails_at_1500", 1500)
    assert info.value.pipeline_path == ("c",)
    assert isinstance(info.value.__cause__, ValueError)
    ran = {int(name) for name in os.listdir(started)}
    assert 1500 in ran and len(ran) < 3000  # the items after the failure never started


def test_nothing_starts_after_a_chunk_fails(engine: HyperNodesEngine, tmp_path: Path) -> None:
    # Item 0 fails at once; the other worker is inside a chunk that waits for that
    # failure to be marked, then must not start one more item.
    marks = tmp_path / "marks"
    marks.mkdir()

    @node(output_name="y")
    def slow_then_fail(x: int, marks: str) -> int:
        with open(os.path.join(marks, str(x)), "w"):
            pass
        if x == 0:
            raise ValueError("first")
        return x

    pipeline = Pipeline([slow_then_fail], engine=engine, name="s")
    with pytest.raises(NodeError) as info:
        pipeline.map({"x": list(range(20_000)), "marks": str(marks)}, "x")
    assert info.value.item_index == 0
    ran = len(os.listdir(marks))
    time.sleep(0.5)  # anything still starting would write a mark by now
    assert len(os.listdir(marks)) == ran
    assert ran < 20_000 // 2  # the rest never started


def test_a_worker_dying_inside_a_chunk_names_its_item(engine: HyperNodesEngine) -> None:
    @node(output_name="y")
    def dies_at_900(x: int) -> int:
        if x == 900:
            os.kill(os.getpid(), signal.SIGKILL)
        return x

    pipeline = Pipeline([dies_at_900], engine=engine, name="d")
    with pytest.raises(WorkerLostError) as info:
        pipeline.map({"x": list(range(2000))}, "x")
    assert (info.value.node, info.value.item_index, info.value.reason) == (
        "dies_at_900",
        900,
        "running",
    )
    assert [r["y"] for r in pipeline.map({"x": [1, 2]}, "x")] == [1, 2]


def test_an_unpicklable_item_in_a_chunk_is_named(engine: HyperNodesEngine) -> None:
    @node(output_name="y")
    def use(x: Any) -> int:
        return 1

    items: list[Any] = list(range(1000))
    items[700] = threading.Lock()
    with pytest.raises(NodeError) as info:
        Pipeline([use], engine=engine, name="u").map({"x": items}, "x")
    assert (info.value.node, info.value.item_index) == ("use", 700)


def test_an_output_that_cannot_travel_back_names_its_item(engine: HyperNodesEngine) -> None:
    @node(output_name="y")
    def gen_at_600(x: int) -> Any:
        return (i for i in range(2)) if x == 600 else x

    with pytest.raises(NodeError) as info:
        Pipeline([gen_at_600], engine=engine, name="g").map({"x": list(range(1000))}, "x")
    assert (info.value.node, info.value.item_index) == ("gen_at_600", 600)
    assert str(info.value.__cause__).startswith("the node returned a generator")


def test_a_chunk_is_sized_from_measured_durations() -> None:
    sizer = chunks._Sizer(100_000, 2)
    assert (sizer.size, sizer.cap) == (3125, 25_000)
    # 1 us an item: all that fit, growing at most GROWTH-fold.
    sizer.measured(100, 100 * 1e-6, 100 * 10)
    assert sizer.size == min(25_000, chunks.GROWTH * 100)
    sizer.measured(3125, 3125 * 1e-6, 3125 * 10)
    assert sizer.size == 25_000  # half a worker's share at most
    slow = chunks._Sizer(100_000, 2)
    slow.measured(781, 781 * 0.01, 100)  # 10 ms an item: TARGET_SECONDS' worth
    assert slow.size == int(chunks.TARGET_SECONDS / 0.01)
    big = chunks._Sizer(100_000, 2)
    big.measured(10, 1e-5, 10 * 1024 * 1024)  # 1 MiB an item: MAX_BYTES' worth
    assert big.size == chunks.MAX_BYTES // (1024 * 1024)
