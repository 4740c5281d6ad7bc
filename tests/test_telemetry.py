"""TelemetryCallback: span trees read back from the OpenTelemetry SDK's in-memory exporter."""

from __future__ import annotations

import asyncio
import importlib
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from hypernodes import HyperNodesEngine, MemoryCache, NodeError, Pipeline, node
from hypernodes.telemetry import TelemetryCallback


class Spans:
    """A provider with an in-memory exporter, and questions about what it caught."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("tests")

    @property
    def all(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.all if s.name == name]

    def one(self, name: str) -> ReadableSpan:
        (span,) = self.named(name)
        return span

    def parent_of(self, span: ReadableSpan) -> ReadableSpan | None:
        if span.parent is None:
            return None
        for s in self.all:
            if s.context.span_id == span.parent.span_id:
                return s
        raise AssertionError(f"{span.name}'s parent was not exported")

    def chain(self, span: ReadableSpan) -> list[str]:
        """Names from the root down to ``span``."""
        names = []
        current: ReadableSpan | None = span
        while current is not None:
            names.append(current.name)
            current = self.parent_of(current)
        return names[::-1]


@pytest.fixture
def spans() -> Iterator[Spans]:
    caught = Spans()
    yield caught
    caught.provider.shutdown()


@node
def double(x: int) -> int:
    return 2 * x


@node
def inc(double: int) -> int:
    return double + 1


@node
def total(inc: list[int]) -> int:
    return sum(inc)


def test_a_run_is_one_trace_of_pipeline_and_node_spans(spans: Spans) -> None:
    pipeline = Pipeline([double, inc], name="p", callbacks=[TelemetryCallback(spans.provider)])
    pipeline.run({"x": 1})
    assert sorted(s.name for s in spans.all) == ["node double", "node inc", "pipeline p"]
    root = spans.one("pipeline p")
    assert root.parent is None
    assert {s.context.trace_id for s in spans.all} == {root.context.trace_id}
    for name in ("node double", "node inc"):
        assert spans.parent_of(spans.one(name)) is root
    attrs = spans.one("node inc").attributes
    assert attrs is not None
    assert attrs["hypernodes.node"] == "inc"
    assert attrs["hypernodes.pipeline"] == "p"
    assert attrs["hypernodes.cached"] is False
    assert attrs["hypernodes.executor"] == "sequential"
    assert attrs["hypernodes.path"] == "p"
    assert spans.one("node inc").start_time >= spans.one("node double").end_time  # type: ignore[operator]


@pytest.mark.asyncio
async def test_the_callers_current_span_is_the_parent(spans: Spans) -> None:
    pipeline = Pipeline([double], name="p", callbacks=[TelemetryCallback(spans.provider)])
    with spans.tracer.start_as_current_span("request"):
        await pipeline.arun({"x": 1})
    assert spans.chain(spans.one("node double")) == ["request", "pipeline p", "node double"]


def test_run_sees_the_callers_current_span_on_every_call(spans: Spans) -> None:
    pipeline = Pipeline([double], name="p", callbacks=[TelemetryCallback(spans.provider)])
    pipeline.run({"x": 0})  # the thread's first run
    with spans.tracer.start_as_current_span("request"):
        pipeline.run({"x": 1})
    second = spans.named("pipeline p")[1]
    assert spans.chain(second) == ["request", "pipeline p"]


def test_concurrent_nodes_get_their_own_spans_current(spans: Spans) -> None:
    # Both nodes are in flight together (each waits for the other to start), and each
    # opens a span of its own from the ambient context: it must land under its node.
    started = {"a": asyncio.Event(), "b": asyncio.Event()}

    def make(name: str, other: str) -> Any:
        async def body(x: int) -> int:
            started[name].set()
            await asyncio.wait_for(started[other].wait(), 10)
            with spans.tracer.start_as_current_span(f"inside {name}"):
                await asyncio.sleep(0)
            return x

        return node(body, name=name, output_name=name)

    engine = HyperNodesEngine(node_executor="async")
    pipeline = Pipeline(
        [make("a", "b"), make("b", "a")],
        name="p",
        engine=engine,
        callbacks=[TelemetryCallback(spans.provider)],
    )
    pipeline.run({"x": 1})
    assert spans.chain(spans.one("inside a")) == ["pipeline p", "node a", "inside a"]
    assert spans.chain(spans.one("inside b")) == ["pipeline p", "node b", "inside b"]
    a, b = spans.one("node a"), spans.one("node b")
    assert a.start_time < b.end_time and b.start_time < a.end_time  # type: ignore[operator]


def test_concurrent_items_in_threads_nest_under_their_items(spans: Spans) -> None:
    barrier = threading.Barrier(3, timeout=10)

    @node
    def work(x: int) -> int:
        barrier.wait()  # all three items are running at once, in three threads
        with spans.tracer.start_as_current_span(f"inside {x}"):
            pass
        return x

    engine = HyperNodesEngine(map_executor="threaded", max_workers=3)
    with engine:
        pipeline = Pipeline(
            [work], name="p", engine=engine, callbacks=[TelemetryCallback(spans.provider)]
        )
        pipeline.map({"x": [0, 1, 2]}, map_over="x")
    top = spans.one("map p")
    assert top.attributes is not None
    assert top.attributes["hypernodes.executor"] == "threaded"
    assert top.attributes["hypernodes.n_items"] == 3
    for i in range(3):
        item = spans.one(f"map item {i}")
        assert spans.parent_of(item) is top
        assert item.attributes is not None and item.attributes["hypernodes.item_index"] == i
        assert spans.chain(spans.one(f"inside {i}")) == [
            "map p",
            f"map item {i}",
            "node work",
            f"inside {i}",
        ]
    works = spans.named("node work")
    assert sorted(s.attributes["hypernodes.item_index"] for s in works) == [0, 1, 2]  # type: ignore[index]
    for span in works:
        item_index = span.attributes["hypernodes.item_index"]  # type: ignore[index]
        assert spans.parent_of(span).name == f"map item {item_index}"  # type: ignore[union-attr]


def test_nested_maps_three_levels_deep(spans: Spans) -> None:
    inner = Pipeline([double, inc], name="inner")
    middle = Pipeline([inner.as_node(map_over="x", name="each"), total], name="middle")
    top = Pipeline(
        [middle.as_node(map_over="x", name="batches")],
        name="top",
        callbacks=[TelemetryCallback(spans.provider)],
    )
    top.run({"x": [[1, 2], [3]]})
    deepest = [s for s in spans.named("node inc")]
    assert len(deepest) == 3
    assert spans.chain(deepest[0]) == [
        "pipeline top",
        "nested batches",
        "map middle",
        "map item 0",
        "nested each",
        "map inner",
        "map item 0",
        "node inc",
    ]
    paths = sorted(s.attributes["hypernodes.path"] for s in deepest)  # type: ignore[index]
    assert paths == [
        "top/batches:middle/[0]/each:inner/[0]",
        "top/batches:middle/[0]/each:inner/[1]",
        "top/batches:middle/[1]/each:inner/[0]",
    ]
    nested = spans.named("nested batches")[0]
    assert nested.attributes is not None and list(nested.attributes["hypernodes.map_over"]) == ["x"]  # type: ignore[arg-type]
    sums = spans.named("node total")
    assert {spans.parent_of(s).name for s in sums} == {"map item 0", "map item 1"}  # type: ignore[union-attr]


def test_errors_are_recorded_on_the_node_and_every_level_above(spans: Spans) -> None:
    @node
    def boom(x: int) -> int:
        if x == 1:
            raise ValueError("bad item")
        return x

    pipeline = Pipeline([boom], name="p", callbacks=[TelemetryCallback(spans.provider)])
    with pytest.raises(NodeError):
        pipeline.map({"x": [0, 1]}, map_over="x")
    failed = [s for s in spans.named("node boom") if s.status.status_code is StatusCode.ERROR]
    assert len(failed) == 1
    (event,) = failed[0].events
    assert event.name == "exception"
    assert event.attributes is not None
    assert event.attributes["exception.type"] == "ValueError"
    assert event.attributes["exception.message"] == "bad item"
    assert spans.one("map item 1").status.status_code is StatusCode.ERROR
    assert spans.one("map item 0").status.status_code is StatusCode.UNSET
    assert spans.one("map p").status.status_code is StatusCode.ERROR
    assert "ValueError: bad item" in (spans.one("map p").status.description or "")


def test_cache_hits_are_spans_marked_cached(spans: Spans) -> None:
    pipeline = Pipeline([double], name="p", cache=MemoryCache())
    pipeline.run({"x": 3})
    pipeline.with_callbacks([TelemetryCallback(spans.provider)]).run({"x": 3})
    span = spans.one("node double")
    assert span.attributes is not None and span.attributes["hypernodes.cached"] is True


def test_executor_attributes_follow_the_engine(spans: Spans) -> None:
    engine = HyperNodesEngine(node_executor="async", map_executor="threaded")
    with engine:
        Pipeline(
            [double, inc], name="p", engine=engine, callbacks=[TelemetryCallback(spans.provider)]
        ).map({"x": [1, 2]}, map_over="x")
    assert spans.one("map p").attributes["hypernodes.executor"] == "threaded"  # type: ignore[index]
    assert {s.attributes["hypernodes.executor"] for s in spans.named("node inc")} == {"async"}  # type: ignore[index]


def test_the_global_provider_is_the_default(spans: Spans, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: spans.provider)
    Pipeline([double], name="p", callbacks=[TelemetryCallback()]).run({"x": 1})
    assert {s.name for s in spans.all} == {"pipeline p", "node double"}


def test_missing_extra_names_the_install_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    monkeypatch.delitem(sys.modules, "hypernodes.telemetry")
    with pytest.raises(ImportError, match=r"pip install 'hypernodes\[telemetry\]'"):
        importlib.import_module("hypernodes.telemetry")


@pytest.mark.slow
def test_process_pool_items_get_spans_under_their_items(spans: Spans) -> None:
    engine = HyperNodesEngine(map_executor="parallel", max_workers=2)
    with engine:
        Pipeline(
            [double, inc], name="p", engine=engine, callbacks=[TelemetryCallback(spans.provider)]
        ).map({"x": [1, 2, 3]}, map_over="x")
    for span in spans.named("node inc"):
        index = span.attributes["hypernodes.item_index"]  # type: ignore[index]
        assert spans.chain(span) == ["map p", f"map item {index}", "node inc"]
    assert len(spans.named("node inc")) == 3
