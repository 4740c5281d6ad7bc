"""Callbacks: which events fire, in what order, with what context, on which thread."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from typing import Any

import pytest

from hypernodes import (
    CallbackContext,
    HyperNodesEngine,
    MemoryCache,
    NodeError,
    Pipeline,
    PipelineCallback,
    node,
)
from hypernodes.callbacks import HOOKS, Dispatcher


class Recorder(PipelineCallback):
    """Records every event as (hook, path, fields), and the thread it came from."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []
        self.threads: set[int] = set()
        self.contexts: list[CallbackContext] = []

    def names(self, *hooks: str) -> list[str]:
        return [h for h, _, _ in self.events if not hooks or h in hooks]

    def of(self, hook: str) -> list[tuple[str, dict[str, Any]]]:
        return [(path, fields) for h, path, fields in self.events if h == hook]


def _recording(hook: str) -> Any:
    def record(self: Recorder, **event: Any) -> None:
        context: CallbackContext = event.pop("context")
        self.contexts.append(context)
        self.threads.add(threading.get_ident())
        for key in ("node", "pipeline"):
            if key in event:
                event[key] = event[key].name
        self.events.append((hook, "/".join(context.path), event))

    record.__name__ = hook
    return record


for _hook in HOOKS:
    setattr(Recorder, _hook, _recording(_hook))


@node
def double(x: int) -> int:
    return 2 * x


@node
def inc(double: int) -> int:
    return double + 1


@node
def total(inc: list[int]) -> int:
    return sum(inc)


@node
def where(x: int) -> int:
    return os.getpid()


def _inner() -> Pipeline:
    return Pipeline([double, inc], name="inner")


# -- a plain run -------------------------------------------------------------------------


def test_run_emits_pipeline_and_node_events_in_order() -> None:
    rec = Recorder()
    result = Pipeline([double, inc], name="p", callbacks=[rec]).run({"x": 3})
    assert result == {"double": 6, "inc": 7}
    assert [(h, p) for h, p, _ in rec.events] == [
        ("on_pipeline_start", "p"),
        ("on_node_start", "p"),
        ("on_node_end", "p"),
        ("on_node_start", "p"),
        ("on_node_end", "p"),
        ("on_pipeline_end", "p"),
    ]
    start = rec.events[0][2]
    assert start == {"pipeline": "p", "inputs": {"x": 3}}
    node_start, node_end = rec.events[1][2], rec.events[2][2]
    assert node_start == {"node": "double", "inputs": {"x": 3}}
    assert node_end["node"] == "double" and node_end["outputs"] == {"double": 6}
    assert node_end["duration"] >= 0
    end = rec.events[-1][2]
    assert end["outputs"] == {"double": 6, "inc": 7} and end["error"] is None
    assert {c.kind for c in rec.contexts} == {"run"}
    assert len({c.run_id for c in rec.contexts}) == 1


def test_failing_node_reports_the_users_exception() -> None:
    @node
    def boom(x: int) -> int:
        raise ValueError("no good")

    rec = Recorder()
    with pytest.raises(NodeError) as info:
        Pipeline([boom], name="p", callbacks=[rec]).run({"x": 1})
    assert isinstance(info.value.__cause__, ValueError)
    hooks = rec.names()
    assert hooks == ["on_pipeline_start", "on_node_start", "on_node_error", "on_pipeline_end"]
    (_, error_event) = rec.of("on_node_error")[0]
    assert isinstance(error_event["error"], ValueError) and error_event["node"] == "boom"
    (_, end) = rec.of("on_pipeline_end")[0]
    assert end["outputs"] is None and isinstance(end["error"], ValueError)


CALLS: list[int] = []


@node
def slow_square(x: int) -> int:
    CALLS.append(x)
    return x * x


def test_cache_hits_emit_on_node_cached_alone() -> None:
    CALLS.clear()
    rec = Recorder()
    pipeline = Pipeline([slow_square], name="p", callbacks=[rec], cache=MemoryCache())
    pipeline.run({"x": 4})
    rec.events.clear()
    assert pipeline.run({"x": 4}) == {"slow_square": 16}
    assert CALLS == [4]
    assert rec.names() == ["on_pipeline_start", "on_node_cached", "on_pipeline_end"]
    assert rec.of("on_node_cached")[0][1] == {"node": "slow_square", "outputs": {"slow_square": 16}}


# -- dispatch ----------------------------------------------------------------------------


class OnlyEnds(PipelineCallback):
    def __init__(self) -> None:
        self.ends: list[str] = []

    def on_node_end(self, *, context: CallbackContext, node: Any, **_: Any) -> None:
        self.ends.append(node.name)


def test_only_overridden_hooks_are_dispatched() -> None:
    cb = OnlyEnds()
    dispatcher = Dispatcher.create([cb])
    assert dispatcher is not None
    assert dispatcher.on_node_end == [cb.on_node_end]
    assert all(getattr(dispatcher, h) == [] for h in HOOKS if h != "on_node_end")
    Pipeline([double, inc], callbacks=[cb]).run({"x": 1})
    assert cb.ends == ["double", "inc"]


def test_a_callback_that_overrides_nothing_is_no_dispatcher() -> None:
    assert Dispatcher.create([PipelineCallback(), PipelineCallback()]) is None
    assert Dispatcher.create([]) is None
    assert Dispatcher.create(None) is None


def test_disabled_callbacks_are_left_out_per_run() -> None:
    cb = OnlyEnds()
    cb.enabled = False
    assert Dispatcher.create([cb]) is None
    pipeline = Pipeline([double], callbacks=[cb])
    pipeline.run({"x": 1})
    assert cb.ends == []
    cb.enabled = True  # read again when the next run starts
    pipeline.run({"x": 1})
    assert cb.ends == ["double"]


def test_async_hooks_are_refused_with_the_fix() -> None:
    class AsyncHook(PipelineCallback):
        async def on_node_end(self, **event: Any) -> None:  # type: ignore[override]
            pass

    with pytest.raises(TypeError, match=r"AsyncHook\.on_node_end is async.*define it with `def`"):
        Dispatcher.create([AsyncHook()])


def test_a_raising_callback_is_logged_once_and_disabled_for_the_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken(PipelineCallback):
        def __init__(self) -> None:
            self.calls = 0

        def on_node_start(self, **event: Any) -> None:
            self.calls += 1
            raise RuntimeError("callback bug")

        def on_node_end(self, **event: Any) -> None:
            self.calls += 1

    broken, rec = Broken(), Recorder()
    pipeline = Pipeline([double, inc], name="p", callbacks=[broken, rec])
    with caplog.at_level(logging.ERROR, logger="hypernodes"):
        assert pipeline.run({"x": 2}) == {"double": 4, "inc": 5}
    assert broken.calls == 1  # disabled after raising: no on_node_end, no second start
    logged = [r for r in caplog.records if "disabled for the rest of this run" in r.getMessage()]
    assert len(logged) == 1
    assert "Broken.on_node_start" in logged[0].getMessage()
    assert logged[0].exc_info is not None and "callback bug" in str(logged[0].exc_info[1])
    assert rec.names("on_node_end") == ["on_node_end", "on_node_end"]  # others unaffected
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="hypernodes"):
        pipeline.run({"x": 2})
    assert broken.calls == 2  # enabled again for the next run, disabled again
    assert len(caplog.records) == 1


# -- maps --------------------------------------------------------------------------------


def test_map_emits_map_and_item_events_with_item_contexts() -> None:
    rec = Recorder()
    results = Pipeline([double, inc], name="p", callbacks=[rec]).map({"x": [1, 2]}, map_over="x")
    assert results == [{"double": 2, "inc": 3}, {"double": 4, "inc": 5}]
    assert [(h, p) for h, p, _ in rec.events] == [
        ("on_map_start", "p"),
        ("on_map_item_start", "p/[0]"),
        ("on_node_start", "p/[0]"),
        ("on_node_end", "p/[0]"),
        ("on_node_start", "p/[0]"),
        ("on_node_end", "p/[0]"),
        ("on_map_item_end", "p/[0]"),
        ("on_map_item_start", "p/[1]"),
        ("on_node_start", "p/[1]"),
        ("on_node_end", "p/[1]"),
        ("on_node_start", "p/[1]"),
        ("on_node_end", "p/[1]"),
        ("on_map_item_end", "p/[1]"),
        ("on_map_end", "p"),
    ]
    assert rec.of("on_map_start")[0][1] == {"pipeline": "p", "n_items": 2, "map_over": ("x",)}
    item = rec.contexts[1]
    assert item.kind == "item" and item.index == 0 and item.item_index == 0
    assert item.parent is rec.contexts[0] and item.root is rec.contexts[0]
    assert rec.of("on_map_item_end")[1][1]["index"] == 1
    assert rec.of("on_map_end")[0][1]["error"] is None


def test_a_failing_item_reports_its_index() -> None:
    @node
    def picky(x: int) -> int:
        if x == 2:
            raise KeyError(x)
        return x

    rec = Recorder()
    with pytest.raises(NodeError):
        Pipeline([picky], name="p", callbacks=[rec]).map({"x": [1, 2, 3]}, map_over="x")
    ends = rec.of("on_map_item_end")
    assert [f["index"] for _, f in ends] == [0, 1]
    assert ends[0][1]["error"] is None and isinstance(ends[1][1]["error"], KeyError)
    assert isinstance(rec.of("on_map_end")[0][1]["error"], KeyError)


@pytest.mark.parametrize(
    ("node_executor", "map_executor"),
    [("async", "threaded"), ("threaded", "async"), ("sequential", "threaded")],
)
def test_concurrent_items_finish_out_of_order_events_on_the_loop_thread(
    node_executor: str, map_executor: str
) -> None:
    # Item 0 cannot finish before item 1 has: completion order is 1, 0.
    one_done = threading.Event()

    @node
    def gate(x: int) -> int:
        if x == 0:
            assert one_done.wait(10), "item 1 never finished"
        return x

    class LoopThread(Recorder):
        def on_map_item_end(self, **event: Any) -> None:
            super().on_map_item_end(**event)  # type: ignore[misc]
            if event["index"] == 1:
                one_done.set()

    rec = LoopThread()
    engine = HyperNodesEngine(node_executor=node_executor, map_executor=map_executor, max_workers=2)
    with engine:
        pipeline = Pipeline([gate], name="p", callbacks=[rec], engine=engine)
        assert pipeline.map({"x": [0, 1]}, map_over="x") == [{"gate": 0}, {"gate": 1}]
    assert [f["index"] for _, f in rec.of("on_map_item_end")] == [1, 0]
    assert len(rec.threads) == 1  # every event on the loop thread, whatever ran the bodies
    for index in (0, 1):
        assert [h for h, p, _ in rec.events if p == f"p/[{index}]"] == [
            "on_map_item_start",
            "on_node_start",
            "on_node_end",
            "on_map_item_end",
        ]


def test_concurrent_nodes_pair_their_events() -> None:
    @node
    async def left(x: int) -> int:
        await asyncio.sleep(0.02)
        return x

    @node
    async def right(x: int) -> int:
        return x

    rec = Recorder()
    engine = HyperNodesEngine(node_executor="async")
    Pipeline([left, right], name="p", callbacks=[rec], engine=engine).run({"x": 1})
    order = [(h, f["node"]) for h, _, f in rec.events if h.startswith("on_node")]
    # Both start before either ends; right (no sleep) ends first.
    assert order[:2] == [("on_node_start", "left"), ("on_node_start", "right")]
    assert order[2:] == [("on_node_end", "right"), ("on_node_end", "left")]


def _pid_pipeline(rec: Recorder) -> Pipeline:
    engine = HyperNodesEngine(map_executor="parallel", max_workers=2)
    return Pipeline([where], name="p", callbacks=[rec], engine=engine)


@pytest.mark.slow
def test_process_pool_items_emit_their_events_on_the_loop_thread() -> None:
    rec = Recorder()
    pipeline = _pid_pipeline(rec)
    with pipeline.engine:  # type: ignore[union-attr]
        results = pipeline.map({"x": [1, 2, 3]}, map_over="x")
    assert all(r["where"] != os.getpid() for r in results)  # bodies ran in worker processes
    assert len(rec.threads) == 1
    assert sorted(f["index"] for _, f in rec.of("on_map_item_end")) == [0, 1, 2]
    for index in range(3):
        assert [h for h, p, _ in rec.events if p == f"p/[{index}]"] == [
            "on_map_item_start",
            "on_node_start",
            "on_node_end",
            "on_map_item_end",
        ]
    for path, end in rec.of("on_node_end"):  # outputs come back with the replayed events
        index = int(path.split("[")[1].rstrip("]"))
        assert end["node"] == "where" and end["outputs"] == {"where": results[index]["where"]}


# -- nesting -----------------------------------------------------------------------------


def test_nested_map_events_carry_the_path() -> None:
    rec = Recorder()
    outer = Pipeline(
        [_inner().as_node(map_over="x", name="each"), total], name="outer", callbacks=[rec]
    )
    assert outer.run({"x": [1, 2]})["total"] == 8
    seen = [(h, p) for h, p, _ in rec.events]
    assert seen[:4] == [
        ("on_pipeline_start", "outer"),
        ("on_nested_pipeline_start", "outer/each:inner"),
        ("on_map_start", "outer/each:inner"),
        ("on_map_item_start", "outer/each:inner/[0]"),
    ]
    assert ("on_node_end", "outer/each:inner/[1]") in seen
    assert seen[-4:] == [
        ("on_nested_pipeline_end", "outer/each:inner"),
        ("on_node_start", "outer"),
        ("on_node_end", "outer"),
        ("on_pipeline_end", "outer"),
    ]
    nested = rec.contexts[1]
    assert nested.kind == "map" and nested.node == "each" and nested.depth == 1
    (_, started) = rec.of("on_nested_pipeline_start")[0]
    assert started == {"node": "each", "pipeline": "inner"}


def test_three_level_nesting_paths_and_item_indices() -> None:
    rec = Recorder()
    level2 = Pipeline([_inner().as_node(name="core")], name="middle")
    level1 = Pipeline([level2.as_node(map_over="x", name="items")], name="top", callbacks=[rec])
    level1.run({"x": [5, 6]})
    deepest = [
        c for c, (h, _, _) in zip(rec.contexts, rec.events, strict=True) if h == "on_node_end"
    ]
    assert ["/".join(c.path) for c in deepest] == [
        "top/items:middle/[0]/core:inner",
        "top/items:middle/[0]/core:inner",
        "top/items:middle/[1]/core:inner",
        "top/items:middle/[1]/core:inner",
    ]
    assert [c.item_index for c in deepest] == [0, 0, 1, 1]
    assert {c.depth for c in deepest} == {3}
    assert {c.kind for c in deepest} == {"nested"}


def test_failing_nested_pipeline_reports_the_error() -> None:
    @node
    def bad(x: int) -> int:
        raise ZeroDivisionError

    rec = Recorder()
    outer = Pipeline([Pipeline([bad], name="in").as_node(name="n")], name="out", callbacks=[rec])
    with pytest.raises(NodeError):
        outer.run({"x": 1})
    (path, end) = rec.of("on_nested_pipeline_end")[0]
    assert path == "out/n:in" and isinstance(end["error"], ZeroDivisionError)


# -- per-run state -----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_context_data_is_per_run_under_concurrency() -> None:
    class Counter(PipelineCallback):
        def __init__(self) -> None:
            self.totals: dict[int, int] = {}

        def on_pipeline_start(self, *, context: CallbackContext, **_: Any) -> None:
            context.data["nodes"] = 0

        def on_node_end(self, *, context: CallbackContext, **_: Any) -> None:
            context.root.data["nodes"] += 1

        def on_pipeline_end(self, *, context: CallbackContext, **_: Any) -> None:
            self.totals[context.run_id] = context.data["nodes"]

    @node
    async def hop(x: int) -> int:
        await asyncio.sleep(0)
        return x

    @node
    async def hop2(hop: int) -> int:
        await asyncio.sleep(0)
        return hop

    counter = Counter()
    small = Pipeline([hop], callbacks=[counter])
    big = Pipeline([hop, hop2], callbacks=[counter])
    await asyncio.gather(*(p.arun({"x": 1}) for p in (small, big, small, big)))
    assert sorted(counter.totals.values()) == [1, 1, 2, 2]


@pytest.mark.asyncio
async def test_events_from_arun_inside_a_running_loop_stay_on_that_loop() -> None:
    rec = Recorder()
    async with HyperNodesEngine("threaded") as engine:
        await Pipeline([double], callbacks=[rec], engine=engine).arun({"x": 1})
    assert rec.threads == {threading.get_ident()}


# -- callbacks of nested levels compose ---------------------------------------------------


def _with_own(*callbacks: PipelineCallback) -> Pipeline:
    return Pipeline([double, inc], name="inner", callbacks=list(callbacks))


def test_outer_callbacks_see_inside_a_nested_pipeline_with_callbacks_of_its_own() -> None:
    outer_rec, inner_rec = Recorder(), Recorder()
    sub = _with_own(inner_rec).as_node(name="sub", output_mapping={"inc": "y"})

    @node
    def after(y: int) -> int:
        return y

    outer = Pipeline([sub, after], name="outer", callbacks=[outer_rec])
    assert outer.run({"x": 1}) == {"y": 3, "after": 3}
    inside = [
        ("on_nested_pipeline_start", "outer/sub:inner"),
        ("on_node_start", "outer/sub:inner"),
        ("on_node_end", "outer/sub:inner"),
        ("on_node_start", "outer/sub:inner"),
        ("on_node_end", "outer/sub:inner"),
        ("on_nested_pipeline_end", "outer/sub:inner"),
    ]
    assert [(h, p) for h, p, _ in outer_rec.events] == [
        ("on_pipeline_start", "outer"),
        *inside,
        ("on_node_start", "outer"),
        ("on_node_end", "outer"),
        ("on_pipeline_end", "outer"),
    ]
    # The nested pipeline's own callbacks see its events too, in the same contexts.
    assert [(h, p) for h, p, _ in inner_rec.events] == inside
    assert [f["node"] for _, f in inner_rec.of("on_node_end")] == ["double", "inc"]


def test_a_callback_at_two_levels_gets_each_event_once() -> None:
    rec = Recorder()
    outer = Pipeline([_with_own(rec).as_node(name="sub")], name="outer", callbacks=[rec])
    outer.run({"x": 1})
    assert rec.names("on_node_end") == ["on_node_end", "on_node_end"]
    assert rec.names("on_nested_pipeline_start") == ["on_nested_pipeline_start"]


def test_own_callbacks_of_a_nested_map_compose_with_the_outer_ones() -> None:
    outer_rec, inner_rec = Recorder(), Recorder()
    sub = _with_own(inner_rec).as_node(name="each", map_over="x")
    Pipeline([sub], name="outer", callbacks=[outer_rec]).run({"x": [1, 2]})
    for rec in (outer_rec, inner_rec):
        assert [p for p, _ in rec.of("on_map_item_end")] == [
            "outer/each:inner/[0]",
            "outer/each:inner/[1]",
        ]
        assert len(rec.of("on_node_end")) == 4


def test_as_node_callbacks_replace_the_nested_pipelines_own_not_the_outer_ones() -> None:
    outer_rec, own_rec, override_rec = Recorder(), Recorder(), Recorder()
    sub = _with_own(own_rec).as_node(name="sub", callbacks=[override_rec])
    Pipeline([sub], name="outer", callbacks=[outer_rec]).run({"x": 1})
    assert own_rec.events == []
    assert len(override_rec.of("on_node_end")) == 2
    assert len(outer_rec.of("on_node_end")) == 2


def test_a_callback_raising_inside_a_nested_level_is_disabled_at_every_level(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class BreaksInside(PipelineCallback):
        def __init__(self) -> None:
            self.calls = 0

        def on_node_end(self, *, context: CallbackContext, **_: Any) -> None:
            self.calls += 1
            if context.depth > 0:
                raise RuntimeError("callback bug")

    broken, inner_rec = BreaksInside(), Recorder()

    @node
    def after(inc: int) -> int:
        return inc

    sub = _with_own(inner_rec).as_node(name="sub")
    outer = Pipeline([sub, after], name="outer", callbacks=[broken])
    with caplog.at_level(logging.ERROR, logger="hypernodes"):
        assert outer.run({"x": 1})["after"] == 3
    assert broken.calls == 1  # not called again, inside or outside
    assert len(caplog.records) == 1
    assert len(inner_rec.of("on_node_end")) == 2  # the others are unaffected


@pytest.mark.slow
def test_events_of_nested_levels_in_shipped_items_reach_outer_and_own_callbacks() -> None:
    outer_rec, inner_rec = Recorder(), Recorder()
    sub = _with_own(inner_rec).as_node(name="sub")
    with HyperNodesEngine(map_executor="parallel", max_workers=2) as engine:
        outer = Pipeline([sub], name="outer", callbacks=[outer_rec], engine=engine)
        assert outer.map({"x": [1, 2]}, map_over="x") == [
            {"double": 2, "inc": 3},
            {"double": 4, "inc": 5},
        ]
    for rec in (outer_rec, inner_rec):  # replayed on this side, each level by its own
        assert sorted(p for p, _ in rec.of("on_node_end")) == [
            "outer/[0]/sub:inner",
            "outer/[0]/sub:inner",
            "outer/[1]/sub:inner",
            "outer/[1]/sub:inner",
        ]
    assert len(inner_rec.of("on_map_item_end")) == 0  # the outer map is not its level
    assert len(outer_rec.of("on_map_item_end")) == 2


# -- on_map_item_end carries the item's outputs ----------------------------------------------


class ItemEnds(PipelineCallback):
    def __init__(self) -> None:
        self.ends: dict[int, tuple[dict[str, Any] | None, BaseException | None]] = {}

    def on_map_item_end(
        self,
        *,
        context: CallbackContext,
        index: int,
        duration: float,
        error: BaseException | None,
        outputs: dict[str, Any] | None = None,
    ) -> None:
        self.ends[index] = (outputs, error)


@pytest.mark.parametrize(
    "map_executor",
    ["sequential", "async", "threaded", pytest.param("parallel", marks=pytest.mark.slow)],
)
def test_map_item_end_carries_the_items_outputs(map_executor: str) -> None:
    ends = ItemEnds()
    with HyperNodesEngine(map_executor=map_executor, max_workers=2) as engine:
        pipeline = Pipeline([double, inc], name="p", callbacks=[ends], engine=engine)
        results = pipeline.map({"x": [1, 2, 3]}, map_over="x", output_name="inc")
    assert results == [{"inc": 3}, {"inc": 5}, {"inc": 7}]
    assert ends.ends == {i: (results[i], None) for i in range(3)}


def test_map_item_end_of_a_failing_item_has_no_outputs() -> None:
    @node
    def picky(x: int) -> int:
        if x == 2:
            raise KeyError(x)
        return x

    ends = ItemEnds()
    with pytest.raises(NodeError):
        Pipeline([picky], name="p", callbacks=[ends]).map({"x": [1, 2]}, map_over="x")
    assert ends.ends[0] == ({"picky": 1}, None)
    outputs, error = ends.ends[1]
    assert outputs is None and isinstance(error, KeyError)


def test_map_item_end_of_a_nested_map_carries_the_inner_items_outputs() -> None:
    ends = ItemEnds()
    sub = _inner().as_node(name="each", map_over="x", output_mapping={"inc": "incs"})
    result = Pipeline([sub], name="outer", callbacks=[ends]).run({"x": [1, 2]})
    assert result == {"incs": [3, 5]}
    assert ends.ends == {0: ({"inc": 3}, None), 1: ({"inc": 5}, None)}


def test_map_item_end_under_daft_carries_the_items_outputs() -> None:
    pytest.importorskip("daft")
    from hypernodes.engines import DaftEngine

    ends = ItemEnds()
    pipeline = Pipeline([double, inc], name="p", callbacks=[ends], engine=DaftEngine())
    results = pipeline.map({"x": [1, 2]}, map_over="x")
    assert ends.ends == {i: (results[i], None) for i in range(2)}


def test_a_hook_written_before_a_keyword_was_added_keeps_working() -> None:
    # on_map_item_end gained outputs=; a callback written without it (and without **_)
    # is called with the keywords it names, and a raising one is still disabled.
    seen: list[tuple[int, float]] = []

    class Old(PipelineCallback):
        def on_map_item_end(  # type: ignore[override]
            self, *, index: int, duration: float, error: Any
        ) -> None:
            seen.append((index, duration))
            if index == 1:
                raise RuntimeError("old hook fails")

    class New(PipelineCallback):
        outputs: list[Any] = []

        def on_map_item_end(self, **event: Any) -> None:
            self.outputs.append(event["outputs"])

    new = New()
    pipe = Pipeline([double], callbacks=[Old(), new])
    assert pipe.map({"x": [1, 2, 3]}, map_over="x") == [{"double": 2}, {"double": 4}, {"double": 6}]
    assert [i for i, _ in seen] == [0, 1]  # disabled after it raised
    assert new.outputs == [{"double": 2}, {"double": 4}, {"double": 6}]


def test_callbacks_compose_under_daft_too() -> None:
    pytest.importorskip("daft")
    from hypernodes.engines import DaftEngine

    outer_rec, inner_rec = Recorder(), Recorder()
    sub = _with_own(inner_rec).as_node(name="sub")
    outer = Pipeline([sub], name="outer", callbacks=[outer_rec], engine=DaftEngine())
    assert outer.run({"x": 1}) == {"double": 2, "inc": 3}
    for rec in (outer_rec, inner_rec):
        assert [f["node"] for _, f in rec.of("on_node_end")] == ["double", "inc"]
        assert [p for p, _ in rec.of("on_nested_pipeline_end")] == ["outer/sub:inner"]
