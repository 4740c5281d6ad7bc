"""DaftEngine: the same results, errors and events as HyperNodesEngine, from a Daft plan."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hypernodes import (
    ConfigError,
    DiskCache,
    Engine,
    HyperNodesEngine,
    MemoryCache,
    NodeError,
    Pipeline,
    PipelineCallback,
    node,
)
from hypernodes.cache import MISSING, Cache, CacheStats

daft = pytest.importorskip("daft")

from hypernodes.engines import DaftEngine  # noqa: E402
from hypernodes.engines.daft import UnsupportedNodeError  # noqa: E402

NATIVE = HyperNodesEngine()

_shared: dict[int, Any] = {}


def _lookup(key: int) -> Any:
    return _shared[key]


class Shared:
    """Gives a node access to an unpicklable object (a barrier) of this process.

    Daft requires row functions to be serializable even when it runs them in-process;
    pickled, this is a key into a table of this module.
    """

    def __init__(self, obj: Any) -> None:
        self.key = id(obj)
        _shared[self.key] = obj

    def __reduce__(self) -> tuple[Any, ...]:
        return (_lookup, (self.key,))

    def __getattr__(self, name: str) -> Any:
        return getattr(_shared[self.__dict__["key"]], name)


def both(pipe: Pipeline, call: Callable[[Pipeline], Any]) -> tuple[Any, Any]:
    """``call`` on the native engine and on a DaftEngine (expected, got)."""
    expected = call(pipe.with_engine(NATIVE))
    got = call(pipe.with_engine(DaftEngine()))
    return expected, got


# -- pipelines ---------------------------------------------------------------------------


@node(output_name="doubled")
def double(x: int) -> int:
    return 2 * x


@node(output_name=("total", "label"))
def add(doubled: int, offset: int = 10, *, sep: str = ":") -> tuple[int, str]:
    return doubled + offset, f"{doubled}{sep}{offset}"


@node(output_name="later")
async def later(total: int) -> int:
    await asyncio.sleep(0.01)
    return total + 1


def basic() -> Pipeline:
    return Pipeline([double, add, later], name="basic")


@node(output_name="sq")
def square(v: int) -> int:
    return v * v


@node(output_name="half")
def halve(sq: int) -> float:
    return sq / 2


def nested() -> Pipeline:
    inner = Pipeline([square, halve], name="inner")

    @node(output_name="vs")
    def spread(x: int) -> list[int]:
        return [x, x + 1]

    @node(output_name="summary")
    def summary(sq: list[int], one: float, x: int) -> tuple[int, float, int]:
        return sum(sq), one, x

    return Pipeline(
        [
            spread,
            inner.as_node(
                input_mapping={"vs": "v"}, output_mapping={"sq": "sq"}, map_over="vs", name="each"
            ),
            inner.as_node(input_mapping={"x": "v"}, output_mapping={"half": "one"}, name="once"),
            summary,
        ],
        name="outer",
    )


# -- equivalence -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("inputs", "map_over", "mode"),
    [
        ({"x": [1, 2, 3]}, "x", "zip"),
        ({"x": [1, 2], "offset": [0, 5]}, ["x", "offset"], "zip"),
        ({"x": [1, 2], "offset": [0, 5], "sep": "-"}, ["x", "offset"], "product"),
    ],
)
def test_map_matches_the_native_engine(inputs: dict[str, Any], map_over: Any, mode: Any) -> None:
    expected, got = both(basic(), lambda p: p.map(inputs, map_over=map_over, map_mode=mode))
    assert got == expected
    assert len(got) == (4 if mode == "product" else 2 if len(inputs["x"]) == 2 else 3)


def test_run_is_a_one_row_map() -> None:
    expected, got = both(basic(), lambda p: p.run({"x": 4, "offset": 1}))
    assert got == expected == {"doubled": 8, "total": 9, "label": "8:1", "later": 10}


def test_output_selection_overrides_and_bound_values() -> None:
    pipe = basic().bind(offset=100)
    expected, got = both(pipe, lambda p: p.map({"x": [1, 2]}, "x", output_name="label"))
    assert got == expected == [{"label": "2:100"}, {"label": "4:100"}]
    # An intermediate value supplied as input replaces its node.
    expected, got = both(pipe, lambda p: p.run({"doubled": 7}, output_name=["total", "later"]))
    assert got == expected == {"total": 107, "later": 108}


def test_nested_pipelines_inlined_and_mapped_per_row() -> None:
    pipe = nested()
    expected, got = both(pipe, lambda p: p.map({"x": [1, 2, 3]}, map_over="x"))
    assert got == expected
    assert got[0]["summary"] == (1 + 4, 0.5, 1)


def test_nested_pipeline_two_levels_deep() -> None:
    level2 = Pipeline([square], name="level2")

    @node(output_name="plus")
    def plus(sq: int, bonus: int = 1) -> int:
        return sq + bonus

    level1 = Pipeline([level2.as_node(name="deep"), plus], name="level1")
    top = Pipeline([double, level1.as_node(input_mapping={"doubled": "v"}, name="mid")])
    expected, got = both(top, lambda p: p.map({"x": [1, 2]}, "x"))
    assert (
        got
        == expected
        == [
            {"doubled": 2, "sq": 4, "plus": 5},
            {"doubled": 4, "sq": 16, "plus": 17},
        ]
    )


class Point:
    def __init__(self, x: int) -> None:
        self.x = x

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and other.x == self.x

    __hash__ = None  # type: ignore[assignment]


def test_values_cross_the_frame_unchanged() -> None:
    # Arrow would turn tuples into lists, ints into floats next to floats, dicts into
    # structs with all keys: columns hold Python objects instead.
    @node(output_name="out")
    def keep(value: Any) -> Any:
        return value

    values = [(1, 2), {"a": 1}, None, 2**80, Point(3), [1.5, 2], b"raw", {1, "x"}]
    results = Pipeline([keep], engine=DaftEngine()).map({"value": values}, "value")
    assert [r["out"] for r in results] == values
    assert type(results[0]["out"]) is tuple


def test_nodes_without_inputs_and_constant_only_nodes() -> None:
    @node(output_name="seed")
    def seed() -> int:
        return 7

    @node(output_name="scaled")
    def scale(seed: int, factor: int = 3) -> int:
        return seed * factor

    @node(output_name="out")
    def combine(scaled: int, x: int) -> int:
        return scaled + x

    pipe = Pipeline([seed, scale, combine])
    expected, got = both(pipe, lambda p: p.map({"x": [1, 2]}, "x"))
    assert (
        got
        == expected
        == [
            {"seed": 7, "scaled": 21, "out": 22},
            {"seed": 7, "scaled": 21, "out": 23},
        ]
    )


def test_empty_map() -> None:
    assert Pipeline([double], engine=DaftEngine()).map({"x": []}, "x") == []


def test_sync_rows_run_concurrently_in_threads() -> None:
    barrier = Shared(threading.Barrier(3, timeout=10))

    @node(output_name="met")
    def meet(x: int) -> int:
        barrier.wait()  # breaks (and fails the node) unless 3 rows are in at once
        return x

    results = Pipeline([meet], engine=DaftEngine()).map({"x": [0, 1, 2]}, "x")
    assert [r["met"] for r in results] == [0, 1, 2]


def test_async_rows_run_concurrently() -> None:
    barrier = Shared(threading.Barrier(3, timeout=10))

    @node(output_name="met")
    async def meet(x: int) -> int:
        await asyncio.to_thread(barrier.wait)
        return x

    results = Pipeline([meet], engine=DaftEngine()).map({"x": [0, 1, 2]}, "x")
    assert [r["met"] for r in results] == [0, 1, 2]


@pytest.mark.asyncio
async def test_arun_and_amap_do_not_block_the_loop(heartbeat: Any) -> None:
    @node(output_name="slept")
    def nap(x: int) -> int:
        import time

        time.sleep(1.0)
        return x

    pipe = Pipeline([nap], engine=DaftEngine())
    async with heartbeat() as hb:
        assert await pipe.amap({"x": [1, 2]}, "x") == [{"slept": 1}, {"slept": 2}]
        assert await pipe.arun({"x": 3}) == {"slept": 3}
    assert hb.max_gap < 0.5  # a node body on the loop would stall it for 1 s


# -- a DaftEngine pipeline inside a native one ------------------------------------------


def test_daft_pipeline_nested_in_a_native_pipeline() -> None:
    inner = Pipeline([square, halve], engine=DaftEngine(), name="inner")
    outer = Pipeline(
        [double, inner.as_node(input_mapping={"doubled": "v"}, name="on_daft")], name="outer"
    )
    assert outer.run({"x": 3}) == {"doubled": 6, "sq": 36, "half": 18.0}
    mapped = Pipeline(
        [inner.as_node(input_mapping={"xs": "v"}, map_over="xs", name="each")], name="outer"
    )
    assert mapped.run({"xs": [1, 2]}) == {"sq": [1, 4], "half": [0.5, 2.0]}


# -- errors ------------------------------------------------------------------------------


class Rejected(ValueError):
    """A user's own exception type."""


@node(output_name="checked")
def check(x: int) -> int:
    if x == 2:
        raise Rejected(f"bad {x}")
    return x


def test_errors_name_node_item_and_keep_the_users_exception() -> None:
    pipe = Pipeline([check], engine=DaftEngine(), name="checks")
    with pytest.raises(NodeError) as info:
        pipe.map({"x": [0, 1, 2, 3]}, "x")
    err = info.value
    assert (err.node, err.item_index, err.pipeline_path) == ("check", 2, ("checks",))
    assert type(err.__cause__) is Rejected and str(err.__cause__) == "bad 2"
    with pytest.raises(NodeError) as info:
        pipe.run({"x": 2})
    assert info.value.item_index is None and type(info.value.__cause__) is Rejected


def test_errors_inside_nested_pipelines_carry_the_path() -> None:
    inner = Pipeline([check], name="inner")
    inlined = Pipeline([inner.as_node(name="via")], name="outer")
    for engine in (NATIVE, DaftEngine()):
        with pytest.raises(NodeError) as info:
            inlined.with_engine(engine).map({"x": [1, 2]}, "x")
        assert info.value.pipeline_path == ("outer", "inner")
        assert [f.via for f in info.value.frames] == [None, "via"]
        assert info.value.item_indices == (1,)
    per_row = Pipeline([inner.as_node(map_over="x", name="each")], name="outer")
    for engine in (NATIVE, DaftEngine()):
        with pytest.raises(NodeError) as info:
            per_row.with_engine(engine).map({"x": [[0], [1, 2]]}, "x")
        assert info.value.node == "check"
        assert info.value.item_indices == (1, 1), engine
        assert type(info.value.__cause__) is Rejected


def test_wrong_number_of_outputs() -> None:
    @node(output_name=("a", "b"))
    def pair(x: int) -> Any:
        return (x,)

    with pytest.raises(NodeError, match=r"declares 2 outputs .* returned 1 values"):
        Pipeline([pair], engine=DaftEngine()).map({"x": [1]}, "x")


def test_retries_and_timeouts() -> None:
    calls: list[int] = []

    @node(output_name="y", retries=2)
    def flaky(x: int) -> int:
        calls.append(x)
        if calls.count(x) < 3:
            raise OSError("try again")
        return x

    assert Pipeline([flaky], engine=DaftEngine()).map({"x": [5]}, "x") == [{"y": 5}]
    assert calls == [5, 5, 5]

    @node(output_name="y", timeout=0.05)
    async def stuck(x: int) -> int:
        await asyncio.sleep(5)
        return x

    for engine in (NATIVE, DaftEngine()):
        with pytest.raises(NodeError) as info:
            Pipeline([stuck], engine=engine).run({"x": 1})
        assert isinstance(info.value.__cause__, TimeoutError) and not info.value.abandoned

    @node(output_name="y", timeout=0.05)
    def stuck_sync(x: int) -> int:
        import time

        time.sleep(0.5)
        return x

    with pytest.raises(NodeError, match=r"timed out after 0\.05 s.*abandoned") as info:
        Pipeline([stuck_sync], engine=DaftEngine()).run({"x": 1})
    assert info.value.abandoned and isinstance(info.value.__cause__, TimeoutError)


def test_unserializable_node_fails_naming_the_node() -> None:
    lock = threading.Lock()

    @node(output_name="y")
    def locked(x: int) -> int:
        with lock:
            return x

    with pytest.raises(UnsupportedNodeError, match="'locked'"):
        Pipeline([locked], engine=DaftEngine()).map({"x": [1]}, "x")


class OtherEngine(Engine):
    async def arun(
        self, pipeline: Any, inputs: Any = None, output_name: Any = None, *, _parent: Any = None
    ) -> Any:
        raise NotImplementedError

    async def amap(
        self,
        pipeline: Any,
        inputs: Any,
        map_over: Any,
        map_mode: Any = "zip",
        output_name: Any = None,
        *,
        _parent: Any = None,
    ) -> Any:
        raise NotImplementedError


def test_nested_pipeline_on_a_foreign_engine_fails_naming_the_node() -> None:
    inner = Pipeline([square], engine=OtherEngine(), name="inner")
    pipe = Pipeline([inner.as_node(name="elsewhere")], engine=DaftEngine())
    with pytest.raises(UnsupportedNodeError, match=r"'elsewhere'.*OtherEngine"):
        pipe.run({"v": 1})


# -- callbacks ---------------------------------------------------------------------------


class Recorder(PipelineCallback):
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def _add(self, hook: str, context: Any, *rest: Any) -> None:
        self.events.append((hook, "/".join(context.path), *rest))

    def on_pipeline_start(self, *, context: Any, pipeline: Any, inputs: Any) -> None:
        self._add("pipeline_start", context, dict(inputs))

    def on_pipeline_end(
        self, *, context: Any, pipeline: Any, outputs: Any, duration: float, error: Any
    ) -> None:
        self._add("pipeline_end", context, outputs, type(error).__name__)

    def on_map_start(self, *, context: Any, pipeline: Any, n_items: int, map_over: Any) -> None:
        self._add("map_start", context, n_items)

    def on_map_end(
        self, *, context: Any, pipeline: Any, n_items: int, duration: float, error: Any
    ) -> None:
        self._add("map_end", context, type(error).__name__)

    def on_map_item_start(self, *, context: Any, index: int) -> None:
        self._add("item_start", context, index)

    def on_map_item_end(
        self, *, context: Any, index: int, duration: float, error: Any, **_: Any
    ) -> None:
        self._add("item_end", context, index, type(error).__name__)

    def on_node_start(self, *, context: Any, node: Any, inputs: Any) -> None:
        self._add("node_start", context, node.name)

    def on_node_end(self, *, context: Any, node: Any, outputs: Any, duration: float) -> None:
        assert duration >= 0
        self._add("node_end", context, node.name, outputs)

    def on_node_error(self, *, context: Any, node: Any, error: Any, duration: float) -> None:
        self._add("node_error", context, node.name, type(error).__name__)

    def on_node_cached(self, *, context: Any, node: Any, outputs: Any) -> None:
        self._add("node_cached", context, node.name, outputs)

    def on_nested_pipeline_start(self, *, context: Any, node: Any, pipeline: Any) -> None:
        self._add("nested_start", context, node.name)

    def on_nested_pipeline_end(
        self, *, context: Any, node: Any, pipeline: Any, duration: float, error: Any
    ) -> None:
        self._add("nested_end", context, node.name, type(error).__name__)


def events(
    pipe: Pipeline, engine: Engine, call: Callable[[Pipeline], Any]
) -> list[tuple[Any, ...]]:
    recorder = Recorder()
    with contextlib.suppress(NodeError):
        call(pipe.with_engine(engine).with_callbacks([recorder]))
    return recorder.events


def test_events_match_the_native_engine() -> None:
    inner = Pipeline([square, halve], name="inner")
    pipe = Pipeline([double, inner.as_node(input_mapping={"doubled": "v"}, name="via")], name="p")
    for call in (lambda p: p.map({"x": [1, 2]}, "x"), lambda p: p.run({"x": 3})):
        expected = events(pipe, NATIVE, call)
        assert events(pipe, DaftEngine(), call) == expected
        assert any(e[0] == "nested_start" for e in expected)
        assert any(e[0] == "node_end" and e[2] == "square" for e in expected)


def test_events_of_failures_match_the_native_engine() -> None:
    pipe = Pipeline([double, check], name="p")
    call = lambda p: p.map({"x": [1, 2, 3]}, "x")  # noqa: E731
    expected = events(pipe, NATIVE, call)
    got = events(pipe, DaftEngine(), call)
    assert ("node_error", "p/[1]", "check", "Rejected") in got
    assert got[-1] == expected[-1] == ("map_end", "p", "Rejected")
    assert got == expected


def test_events_of_a_daft_pipeline_nested_in_a_native_one() -> None:
    def build(inner_engine: Engine | None) -> Pipeline:
        inner = Pipeline([square, halve], engine=inner_engine, name="inner")
        return Pipeline([inner.as_node(map_over="v", name="each")], name="p")

    call = lambda p: p.run({"v": [1, 2]})  # noqa: E731
    assert events(build(DaftEngine()), NATIVE, call) == events(build(None), NATIVE, call)


def test_events_of_nested_maps_run_per_row() -> None:
    inner = Pipeline([square], name="inner")
    pipe = Pipeline([inner.as_node(map_over="v", name="each")], name="p")
    call = lambda p: p.map({"v": [[1, 2], [3]]}, "v")  # noqa: E731

    def shape(evts: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        return [e[:3] for e in evts]  # inner nodes' values are not replayed from rows

    assert shape(events(pipe, DaftEngine(), call)) == shape(events(pipe, NATIVE, call))


# -- caching -----------------------------------------------------------------------------


class DictCache(Cache):
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


def test_cache_hits_skip_nodes_and_items() -> None:
    pytest.importorskip("hypernodes.cache.fingerprint", reason="cache fingerprints not landed")
    calls: list[tuple[str, int]] = []

    @node(output_name="a")
    def first(x: int) -> int:
        calls.append(("first", x))
        return x + 1

    @node(output_name="b")
    def second(a: int) -> int:
        calls.append(("second", a))
        return a * 10

    inner = Pipeline([second], name="inner")
    pipe = Pipeline([first, inner.as_node(name="via")], engine=DaftEngine(), cache=DictCache())
    assert pipe.map({"x": [1, 2]}, "x") == [{"a": 2, "b": 20}, {"a": 3, "b": 30}]
    assert sorted(calls) == [("first", 1), ("first", 2), ("second", 2), ("second", 3)]
    calls.clear()
    recorder = Recorder()
    pipe.with_callbacks([recorder])
    assert pipe.map({"x": [1, 2, 3]}, "x") == [
        {"a": 2, "b": 20},
        {"a": 3, "b": 30},
        {"a": 4, "b": 40},
    ]
    assert sorted(calls) == [("first", 3), ("second", 4)]
    cached = [e for e in recorder.events if e[0] == "node_cached"]
    assert len(cached) == 4


_daft_calls: Counter[str] = Counter()


@node(output_name="scaled")
def scale(x: int, factor: int) -> int:
    _daft_calls["scale"] += 1
    return x * factor


@node(output_name="shifted")
def shift(scaled: int, offset: int = 0) -> int:
    _daft_calls["shift"] += 1
    return scaled + offset


@pytest.fixture(params=["memory", "disk"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Cache:
    return MemoryCache() if request.param == "memory" else DiskCache(tmp_path / "cache")


def test_run_with_a_cache_hits_on_the_second_run(store: Cache) -> None:
    # Every input of a run is a non-mapped (shared) value: priming their versions used
    # to add version slots to the dict being iterated ("dictionary changed size").
    _daft_calls.clear()
    pipe = Pipeline([scale, shift], engine=DaftEngine(), cache=store)
    assert pipe.run({"x": 2, "factor": 3}) == {"scaled": 6, "shifted": 6}
    assert pipe.run({"x": 2, "factor": 3}) == {"scaled": 6, "shifted": 6}
    assert _daft_calls == {"scale": 1, "shift": 1}
    assert pipe.run({"x": 2, "factor": 4}) == {"scaled": 8, "shifted": 8}
    assert _daft_calls == {"scale": 2, "shift": 2}


def test_map_with_a_shared_input_and_a_cache_hits_on_the_second_map(store: Cache) -> None:
    _daft_calls.clear()
    pipe = Pipeline([scale, shift], engine=DaftEngine(), cache=store)
    expected = [{"scaled": 3, "shifted": 4}, {"scaled": 6, "shifted": 7}]
    inputs = {"x": [1, 2], "factor": 3, "offset": 1}
    assert pipe.map(inputs, "x") == expected
    assert _daft_calls == {"scale": 2, "shift": 2}
    assert pipe.map(inputs, "x") == expected
    assert _daft_calls == {"scale": 2, "shift": 2}
    # A new shared value is a new version: every item misses.
    assert pipe.map({**inputs, "offset": 2}, "x") == [
        {"scaled": 3, "shifted": 5},
        {"scaled": 6, "shifted": 8},
    ]
    assert _daft_calls == {"scale": 2, "shift": 4}


# -- options -----------------------------------------------------------------------------


def test_show_plan_and_debug_print(capsys: pytest.CaptureFixture[str]) -> None:
    Pipeline([double, add], engine=DaftEngine(show_plan=True, debug=True)).map({"x": [1]}, "x")
    out, err = capsys.readouterr()
    assert "Physical Plan" in out and "pipeline.double" in out
    assert "DaftEngine: pipeline 'pipeline' as 2 columns" in err
    assert "pipeline.add(doubled=doubled, offset=<constant>, sep=<constant>)" in err


def test_collect_false_returns_the_lazy_dataframe() -> None:
    frame = basic().with_engine(DaftEngine(collect=False)).map({"x": [1, 2]}, "x")
    assert isinstance(frame, daft.DataFrame)
    assert frame.column_names == ["doubled", "total", "label", "later"]
    assert frame.to_pydict()["later"] == [13, 15]
    failing = Pipeline([check], engine=DaftEngine(collect=False)).map({"x": [1, 2]}, "x")
    with pytest.raises(Exception, match="node 'check' failed: Rejected: bad 2"):
        failing.collect()


def test_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="'native' or 'ray'"):
        DaftEngine(runner="spark")
    with pytest.raises(ConfigError, match="needs runner='ray'"):
        DaftEngine(ray_address="ray://head:10001")
    assert repr(DaftEngine(runner="ray", ray_address="auto")) == (
        "DaftEngine(collect=True, show_plan=False, debug=False, runner='ray', ray_address='auto')"
    )


def test_the_ray_runner_is_wired_to_daft() -> None:
    # Daft allows one runner per process; this one already runs the native runner, so
    # asking for Ray reaches Daft and comes back as a clear error.
    Pipeline([double], engine=DaftEngine()).run({"x": 1})
    with pytest.raises(ConfigError, match="already uses its 'native' runner"):
        Pipeline([double], engine=DaftEngine(runner="ray")).run({"x": 1})
