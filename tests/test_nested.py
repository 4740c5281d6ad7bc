"""Nested pipelines: mappings, map_over, any depth, same loop, error paths, and the shared
worker budget of nested maps (no deadlock, never more bodies than max_workers)."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from hypernodes import (
    HyperNodesEngine,
    MemoryCache,
    Node,
    NodeError,
    Pipeline,
    PipelineCallback,
    PipelineDefinitionError,
    PipelineNode,
    node,
)
from hypernodes.errors import PathFrame

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
def clean(text: str, lang: str = "en") -> str:
    return f"{lang}:{text.strip().lower()}"


@node
def n_words(clean: str) -> int:
    return len(clean.split(":", 1)[1].split())


TEXT = Pipeline([clean, n_words], name="text")


# -- mappings --------------------------------------------------------------------------


def test_input_and_output_mappings() -> None:
    step = TEXT.as_node(
        name="analyse", input_mapping={"raw": "text"}, output_mapping={"n_words": "words"}
    )
    assert isinstance(step, PipelineNode)
    # Mapped inputs take the outer name; unmapped inner inputs keep theirs.
    assert step.inputs == ("raw", "lang")
    assert step.defaults == {"lang": "en"}
    # Only mapped outputs are exposed.
    assert step.outputs == ("words",)

    @node
    def report(words: int, raw: str) -> str:
        return f"{raw!r} has {words} words"

    outer = Pipeline([step, report], name="outer")
    assert outer.inputs == ("raw",)
    assert outer.optional_inputs == {"lang": "en"}
    assert outer.outputs == ("words", "report")
    assert outer.run({"raw": " Hello World "}) == {
        "words": 2,
        "report": "' Hello World ' has 2 words",
    }
    assert outer.run({"raw": "a b c", "lang": "fr"}, output_name="words") == {"words": 3}


def test_without_output_mapping_every_inner_output_is_exposed() -> None:
    step = TEXT.as_node()
    assert step.name == "text"
    assert step.outputs == ("clean", "n_words")
    assert Pipeline([step]).run({"text": "X y"}) == {"clean": "en:x y", "n_words": 2}


def test_bad_mappings_are_rejected_at_build_time() -> None:
    with pytest.raises(PipelineDefinitionError, match=r"'txt'.*not an input"):
        TEXT.as_node(input_mapping={"raw": "txt"})
    with pytest.raises(PipelineDefinitionError, match=r"'count'.*not an output"):
        TEXT.as_node(output_mapping={"count": "n"})
    with pytest.raises(PipelineDefinitionError, match="map_over names 'nope'"):
        TEXT.as_node(map_over="nope")


# -- map_over: lists in, lists out -----------------------------------------------------


def test_map_over_takes_lists_and_gives_lists() -> None:
    step = TEXT.as_node(
        name="per_doc",
        input_mapping={"docs": "text"},
        output_mapping={"n_words": "counts"},
        map_over="docs",
    )
    assert step.map_over == ("docs",)

    @node
    def total(counts: list[int]) -> int:
        return sum(counts)

    outer = Pipeline([step, total])
    result = outer.run({"docs": ["a", "b c", "d e f"], "lang": "de"})
    assert result == {"counts": [1, 2, 3], "total": 6}


def test_map_over_product_of_two_outer_lists() -> None:
    step = TEXT.as_node(
        input_mapping={"texts": "text", "langs": "lang"},
        output_mapping={"clean": "cleaned"},
        map_over=["texts", "langs"],
        map_mode="product",
    )
    result = Pipeline([step]).run({"texts": ["A", "B"], "langs": ["en", "fr"]})
    assert result == {"cleaned": ["en:a", "fr:a", "en:b", "fr:b"]}


def test_map_over_accepts_the_inner_name_of_a_mapped_input() -> None:
    step = TEXT.as_node(input_mapping={"docs": "text"}, map_over="text")
    assert step.map_over == ("docs",)


def test_nested_map_inside_an_outer_map() -> None:
    step = TEXT.as_node(
        input_mapping={"docs": "text"}, output_mapping={"n_words": "counts"}, map_over="docs"
    )
    results = Pipeline([step]).map({"docs": [["a"], ["b c", "d"]]}, "docs")
    assert results == [{"counts": [1]}, {"counts": [2, 1]}]


# -- any depth -------------------------------------------------------------------------


def three_levels() -> Pipeline:
    @node
    def score(token: str, weight: int = 1) -> int:
        if token == "boom":
            raise ValueError(f"cannot score {token!r}")
        return len(token) * weight

    leaf = Pipeline([score], name="leaf")
    per_token = leaf.as_node(
        name="per_token",
        input_mapping={"tokens": "token"},
        output_mapping={"score": "scores"},
        map_over="tokens",
    )

    @node
    def sentence_total(scores: list[int]) -> int:
        return sum(scores)

    mid = Pipeline([per_token, sentence_total], name="mid")
    per_sentence = mid.as_node(
        name="per_sentence",
        input_mapping={"sentences": "tokens", "w": "weight"},
        output_mapping={"sentence_total": "totals"},
        map_over="sentences",
    )

    @node
    def grand_total(totals: list[int]) -> int:
        return sum(totals)

    top = Pipeline([per_sentence, grand_total], name="top")
    doc = top.as_node(name="doc", output_mapping={"grand_total": "doc_total"})
    return Pipeline([doc], name="outer")


def test_three_levels_with_mappings_at_each() -> None:
    outer = three_levels()
    assert outer.inputs == ("sentences",)
    assert outer.optional_inputs == {"w": 1}
    assert outer.outputs == ("doc_total",)
    sentences = [["ab", "c"], ["def"], ["gh", "i", "jk"]]
    assert outer.run({"sentences": sentences}) == {"doc_total": 11}
    assert outer.run({"sentences": sentences, "w": 10}) == {"doc_total": 110}


@pytest.mark.parametrize("executor", ["sequential", "async", "threaded", "parallel"])
def test_three_levels_under_every_executor(
    executor: str, engine_factory: Callable[..., HyperNodesEngine]
) -> None:
    engine = engine_factory(node_executor=executor, map_executor=executor, max_workers=2)
    outer = three_levels().with_engine(engine)
    assert outer.run({"sentences": [["ab", "c"], ["def"]]}) == {"doc_total": 6}
    results = outer.map({"sentences": [[["a"]], [["bb", "c"], ["dd"]]]}, "sentences")
    assert results == [{"doc_total": 1}, {"doc_total": 5}]


# -- introspection ---------------------------------------------------------------------


def test_outer_graph_inputs_and_outputs_describe_the_nested_node() -> None:
    step = TEXT.as_node(
        name="analyse", input_mapping={"raw": "text"}, output_mapping={"n_words": "words"}
    )

    @node
    def double(words: int) -> int:
        return 2 * words

    outer = Pipeline([step, double], name="outer")
    graph = outer.graph
    assert graph.nodes[step]["kind"] == "pipeline"
    assert graph.nodes[double]["kind"] == "node"
    assert graph.nodes["raw"]["kind"] == "input"
    assert graph.edges["raw", step]["name"] == "raw"
    assert graph.edges["lang", step]["name"] == "lang"
    assert graph.edges[step, double]["name"] == "words"
    assert set(graph.nodes) == {step, double, "raw", "lang"}
    assert step.pipeline is TEXT
    assert "PipelineNode analyse(raw, lang)" in repr(step)
    assert "pipeline='text'" in repr(step)


# -- the same loop ---------------------------------------------------------------------


@pytest.mark.parametrize("executor", ["sequential", "async", "threaded"])
def test_a_nested_pipeline_runs_on_its_parents_loop(
    executor: str, engine_factory: Callable[..., HyperNodesEngine]
) -> None:
    @node
    async def inner_loop(v: int) -> int:
        return id(asyncio.get_running_loop())

    inner = Pipeline([inner_loop], name="inner")
    once = inner.as_node(name="once", output_mapping={"inner_loop": "loop_once"})
    mapped = inner.as_node(
        name="mapped",
        input_mapping={"vs": "v"},
        output_mapping={"inner_loop": "loops_mapped"},
        map_over="vs",
    )

    @node
    async def outer_loop(v: int) -> int:
        return id(asyncio.get_running_loop())

    engine = engine_factory(node_executor=executor, map_executor=executor)
    result = Pipeline([outer_loop, once, mapped], engine=engine).run({"v": 1, "vs": [1, 2, 3]})
    assert result["loop_once"] == result["outer_loop"]
    assert result["loops_mapped"] == [result["outer_loop"]] * 3


@pytest.mark.asyncio
async def test_nested_pipeline_under_arun_runs_on_the_callers_loop() -> None:
    @node
    async def inner_loop(v: int) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    step = Pipeline([inner_loop], name="inner").as_node(
        input_mapping={"vs": "v"}, map_over="vs", output_mapping={"inner_loop": "loops"}
    )
    result = await Pipeline([step]).arun({"vs": [1, 2]})
    caller = asyncio.get_running_loop()
    assert result["loops"] == [caller, caller]


# -- errors name the whole path --------------------------------------------------------


@pytest.mark.parametrize("executor", ["sequential", "async", "threaded", "parallel"])
def test_error_deep_inside_names_the_whole_path(
    executor: str, engine_factory: Callable[..., HyperNodesEngine]
) -> None:
    engine = engine_factory(node_executor=executor, map_executor=executor, max_workers=2)
    outer = three_levels().with_engine(engine)
    with pytest.raises(NodeError) as info:
        outer.run({"sentences": [["ok"], ["fine", "x"], ["a", "b", "boom"]]})
    err = info.value
    assert type(err) is NodeError
    assert err.node == "score"
    assert err.frames == (
        PathFrame("outer"),
        PathFrame("top", via="doc"),
        PathFrame("mid", via="per_sentence", item=2),
        PathFrame("leaf", via="per_token", item=2),
    )
    assert err.pipeline_path == ("outer", "top", "mid", "leaf")
    assert err.item_indices == (2, 2)
    assert err.item_index == 2
    assert type(err.__cause__) is ValueError
    assert str(err) == (
        "node 'score' failed in outer > doc -> top > per_sentence -> mid[item 2] > "
        "per_token -> leaf[item 2]: ValueError: cannot score 'boom'"
    )


def test_error_in_an_outer_map_item_adds_the_outer_index() -> None:
    outer = three_levels()
    with pytest.raises(NodeError) as info:
        outer.map({"sentences": [[["a"]], [["b"], ["c", "boom"]]]}, "sentences")
    err = info.value
    assert err.item_indices == (1, 1, 1)
    assert err.frames[0] == PathFrame("outer", item=1)
    assert str(err).startswith("node 'score' failed in outer[item 1] > doc -> top > ")


# -- engines of nested levels ----------------------------------------------------------


def test_as_node_engine_overrides_the_inherited_one(
    engine_factory: Callable[..., HyperNodesEngine],
) -> None:
    @node
    def where(v: int) -> str:
        return threading.current_thread().name

    threads = engine_factory(node_executor="threaded")
    inner = Pipeline([where], name="inner")
    inherited = inner.as_node(name="inherited", output_mapping={"where": "w1"})
    overridden = inner.as_node(name="overridden", output_mapping={"where": "w2"}, engine=threads)
    result = Pipeline([inherited, overridden]).run({"v": 1})
    assert result["w1"] == threading.current_thread().name  # sequential, inline
    assert result["w2"].startswith("hypernodes")  # the override's thread pool


# -- the shared budget: nested maps never exceed max_workers, never deadlock ------------


def nested_maps(leaf_body: Callable[[int], int]) -> Pipeline:
    """Three levels of nested maps over ``leaf_body``: outer lists of lists of ints."""
    leaf = Pipeline([node(leaf_body, name="body", output_name="out")], name="leaf")
    level2 = Pipeline(
        [
            leaf.as_node(
                name="l2", input_mapping={"xs": "x"}, output_mapping={"out": "outs"}, map_over="xs"
            )
        ],
        name="level2",
    )
    level1 = Pipeline(
        [
            level2.as_node(
                name="l1",
                input_mapping={"xss": "xs"},
                output_mapping={"outs": "outss"},
                map_over="xss",
            )
        ],
        name="level1",
    )
    return Pipeline(
        [
            level1.as_node(
                name="l0",
                input_mapping={"xsss": "xss"},
                output_mapping={"outss": "result"},
                map_over="xsss",
            )
        ],
        name="top",
    )


CUBE = [[[100 * a + 10 * b + c for c in range(3)] for b in range(3)] for a in range(3)]
EXPECTED = [[[x + 1 for x in row] for row in plane] for plane in CUBE]


@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("executor", ["threaded", "async"])
def test_nested_maps_share_the_thread_budget(
    workers: int,
    executor: str,
    engine_factory: Callable[..., HyperNodesEngine],
    probe: Callable[..., Any],
) -> None:
    counter = probe(target=workers)

    def body(x: int) -> int:
        with counter.body():
            return x + 1

    engine = engine_factory(node_executor=executor, map_executor=executor, max_workers=workers)
    assert nested_maps(body).with_engine(engine).run({"xsss": CUBE}) == {"result": EXPECTED}
    assert counter.entered == 27
    assert counter.peak <= workers
    assert counter.peak == workers and counter.reached


class ProcessProbe:
    """Counts bodies running at once across processes (a manager holds the state)."""

    def __init__(self, manager: Any, target: int) -> None:
        self.lock = manager.Lock()
        self.state = manager.dict(current=0, peak=0, entered=0)
        self.reached = manager.Event()
        self.target = target

    def run(self, fn: Callable[[int], int], x: int) -> int:
        with self.lock:
            current = self.state["current"] + 1
            self.state["current"] = current
            self.state["entered"] += 1
            self.state["peak"] = max(self.state["peak"], current)
            if current >= self.target:
                self.reached.set()
        try:
            self.reached.wait(WAIT)
            return fn(x)
        finally:
            with self.lock:
                self.state["current"] -= 1


@pytest.mark.parametrize("workers", [1, 2])
def test_nested_maps_share_the_process_budget(
    workers: int, engine_factory: Callable[..., HyperNodesEngine]
) -> None:
    with multiprocessing.Manager() as manager:
        counter = ProcessProbe(manager, target=workers)

        def body(x: int) -> int:
            return counter.run(lambda v: v + 1, x)

        engine = engine_factory(
            node_executor="parallel", map_executor="parallel", max_workers=workers
        )
        result = nested_maps(body).with_engine(engine).map({"xsss": [CUBE, CUBE[:1]]}, "xsss")
        state = dict(counter.state)
        reached = counter.reached.is_set()
    assert result == [{"result": EXPECTED}, {"result": EXPECTED[:1]}]
    assert state["entered"] == 36
    assert state["peak"] <= workers
    assert state["peak"] == workers and reached


@pytest.mark.parametrize("executor", ["threaded", "async", "parallel"])
def test_three_levels_of_nested_maps_with_one_worker_finish(
    executor: str, engine_factory: Callable[..., HyperNodesEngine]
) -> None:
    engine = engine_factory(node_executor=executor, map_executor=executor, max_workers=1)
    pipeline = nested_maps(lambda x: x + 1).with_engine(engine)
    assert pipeline.run({"xsss": CUBE}) == {"result": EXPECTED}
    assert pipeline.map({"xsss": [CUBE[:1], CUBE[1:]]}, "xsss") == [
        {"result": EXPECTED[:1]},
        {"result": EXPECTED[1:]},
    ]


def test_max_concurrent_bounds_async_nodes_across_nested_levels() -> None:
    # One limit per top-level run, shared by the nested levels and their items: only leaf
    # nodes take a slot, so the bound holds across levels and nesting cannot deadlock.
    live = 0
    peak = 0

    async def body(x: int) -> int:
        nonlocal live, peak
        live += 1
        peak = max(peak, live)
        await asyncio.sleep(0.005)
        live -= 1
        return x

    inner = Pipeline(
        [
            node(body, output_name="first", name="first"),
            node(body, output_name="twin", name="twin"),
        ],
        name="inner",
    )

    @node(output_name="total")
    async def total(first: list[int]) -> int:
        return await body(sum(first))

    outer = Pipeline(
        [inner.as_node(name="each", map_over="x"), total],
        engine=HyperNodesEngine(node_executor="async", map_executor="async", max_concurrent=3),
        name="outer",
    )
    result = outer.run({"x": list(range(20))})
    assert result["first"] == list(range(20))
    assert result["total"] == sum(range(20))
    assert peak == 3  # reached (items and nodes do overlap) and never exceeded


# -- caching a nested pipeline as a whole ----------------------------------------------


QUOTE_CALLS: Counter[str] = Counter()


@node(output_name="price", cache=False)
def quote(symbol: str) -> int:
    """A live quote: impure, a new value on every call."""
    QUOTE_CALLS["quote"] += 1
    return QUOTE_CALLS["quote"]


@node(output_name="label")
def label(symbol: str) -> str:
    QUOTE_CALLS["label"] += 1
    return symbol.upper()


class LiveQuotes:
    """A pipeline with an impure inner node and a pure one; counts their calls."""

    def __init__(self) -> None:
        QUOTE_CALLS.clear()
        self.calls = QUOTE_CALLS
        self.pipeline = Pipeline([quote, label], name="live")


def test_an_uncacheable_inner_node_keeps_the_nested_pipeline_out_of_the_whole_cache() -> None:
    live = LiveQuotes()
    step = live.pipeline.as_node(name="quotes")
    assert step.cache is False  # decided when the node is built
    outer = Pipeline([step], cache=MemoryCache())
    assert outer.run({"symbol": "abc"}) == {"price": 1, "label": "ABC"}
    assert outer.run({"symbol": "abc"}) == {"price": 2, "label": "ABC"}  # not served stale
    assert live.calls == Counter(quote=2, label=1)  # the cacheable inner node still hits


def test_an_uncacheable_node_at_any_depth_keeps_every_level_out_of_the_whole_cache() -> None:
    live = LiveQuotes()
    middle = Pipeline([live.pipeline.as_node(name="quotes")], name="middle")
    step = middle.as_node(name="deep")
    assert step.cache is False
    outer = Pipeline([step], cache=MemoryCache())
    assert outer.run({"symbol": "x"})["price"] == 1
    assert outer.run({"symbol": "x"})["price"] == 2
    assert live.calls == Counter(quote=2, label=1)


def test_a_mapped_nested_pipeline_with_an_uncacheable_node_is_not_cached_whole() -> None:
    live = LiveQuotes()
    step = live.pipeline.as_node(
        name="each", input_mapping={"symbols": "symbol"}, map_over="symbols"
    )
    assert step.cache is False
    outer = Pipeline([step], cache=MemoryCache())
    assert outer.run({"symbols": ["a", "b"]}) == {"price": [1, 2], "label": ["A", "B"]}
    assert outer.run({"symbols": ["a", "b"]}) == {"price": [3, 4], "label": ["A", "B"]}
    assert live.calls == Counter(quote=4, label=2)


def test_daft_engine_does_not_serve_a_nested_uncacheable_node_stale() -> None:
    pytest.importorskip("daft")
    from hypernodes.engines import DaftEngine

    live = LiveQuotes()
    outer = Pipeline([live.pipeline.as_node(name="quotes")], cache=MemoryCache())
    outer.with_engine(DaftEngine())
    first = outer.map({"symbol": ["a", "b"]}, map_over="symbol")
    again = outer.map({"symbol": ["a", "b"]}, map_over="symbol")
    assert sorted(r["price"] for r in first + again) == [1, 2, 3, 4]
    assert live.calls["quote"] == 4


def test_a_nested_pipeline_of_cacheable_nodes_is_still_cached_whole() -> None:
    live = LiveQuotes()
    step = Pipeline([label], name="inner").as_node(name="sub")
    assert step.cache is True
    seen = CachedNodes()
    outer = Pipeline([step], cache=MemoryCache(), callbacks=[seen])
    assert outer.run({"symbol": "a"}) == outer.run({"symbol": "a"}) == {"label": "A"}
    assert seen.names == ["sub"]  # the second run hit the nested node as a whole
    assert live.calls == Counter(label=1)


class CachedNodes(PipelineCallback):
    def __init__(self) -> None:
        self.names: list[str] = []

    def on_node_cached(self, *, node: Node, **_: Any) -> None:
        self.names.append(node.name)


# -- output_name prunes inside nested pipelines -----------------------------------------


BRANCH_CALLS: Counter[str] = Counter()


@node(output_name="a")
def make_a(x: int) -> int:
    BRANCH_CALLS["make_a"] += 1
    return x + 1


@node(output_name="b")
def make_b(y: int) -> int:
    BRANCH_CALLS["make_b"] += 1
    return y * 10


@node(output_name=("lo", "hi"))
def split(x: int) -> tuple[int, int]:
    BRANCH_CALLS["split"] += 1
    return x - 1, x + 1


@node(output_name="spread")
def spread(lo: int, hi: int) -> int:
    BRANCH_CALLS["spread"] += 1
    return hi - lo


class Branches:
    """An inner pipeline with independent branches (one through a tuple output), counting
    the calls of each node (module-level nodes: their cache keys do not change)."""

    def __init__(self) -> None:
        BRANCH_CALLS.clear()
        self.calls = BRANCH_CALLS
        self.pipeline = Pipeline([make_a, make_b, split, spread], name="branches")


def test_output_name_runs_only_the_inner_nodes_it_needs() -> None:
    br = Branches()
    outer = Pipeline([br.pipeline.as_node(name="sub")], name="outer")
    assert outer.run({"x": 1, "y": 2}, output_name="a") == {"a": 2}
    assert br.calls == Counter(make_a=1)
    assert outer.run({"x": 1, "y": 2}, output_name=["b", "lo"]) == {"b": 20, "lo": 0}
    assert br.calls == Counter(make_a=1, make_b=1, split=1)


def test_inputs_only_pruned_inner_nodes_read_are_not_required() -> None:
    br = Branches()

    @node(output_name="y")
    def make_y(z: int) -> int:
        br.calls["make_y"] += 1
        return z

    outer = Pipeline([make_y, br.pipeline.as_node(name="sub")], name="outer")
    assert outer.run({"x": 1}, output_name="a") == {"a": 2}  # no y, so no z either
    assert br.calls == Counter(make_a=1)
    assert outer.run({"x": 1, "z": 3}, output_name="b") == {"b": 30}
    assert br.calls == Counter(make_a=1, make_y=1, make_b=1)


def test_output_name_prunes_at_any_depth_and_in_nested_maps() -> None:
    br = Branches()
    middle = Pipeline(
        [br.pipeline.as_node(name="sub", map_over="x", input_mapping={"xs": "x"})], name="mid"
    )
    outer = Pipeline([middle.as_node(name="deep")], name="outer")
    assert outer.run({"xs": [1, 2], "y": 0}, output_name="a") == {"a": [2, 3]}
    assert br.calls == Counter(make_a=2)
    assert outer.map({"xs": [[1], [2, 3]], "y": 1}, map_over="xs", output_name="spread") == [
        {"spread": [2]},
        {"spread": [2, 2]},
    ]
    assert br.calls == Counter(make_a=2, split=3, spread=3)


def test_a_pruned_nested_run_and_a_full_one_have_their_own_cache_entries() -> None:
    br = Branches()
    outer = Pipeline([br.pipeline.as_node(name="sub")], name="outer", cache=MemoryCache())
    inputs = {"x": 1, "y": 2}
    assert outer.run(inputs, output_name="lo") == {"lo": 0}
    full = {"a": 2, "b": 20, "lo": 0, "hi": 2, "spread": 2}
    assert outer.run(inputs) == full  # not the pruned entry
    assert outer.run(inputs, output_name="hi") == {"hi": 2}  # its own entry: a tuple output
    assert outer.run(inputs, output_name="lo") == {"lo": 0}  # a hit
    assert outer.run(inputs) == full  # a hit
    # The inner nodes ran once each: the pruned runs computed what they needed, the
    # full run reused the inner entries and computed the rest.
    assert br.calls == Counter(split=1, make_a=1, make_b=1, spread=1)


@pytest.mark.parametrize("cached", [False, True])
def test_daft_engine_prunes_inside_nested_pipelines(cached: bool) -> None:
    # Inlined into the Daft plan without a cache; run per row (cached whole) with one.
    pytest.importorskip("daft")
    from hypernodes.engines import DaftEngine

    br = Branches()
    outer = Pipeline([br.pipeline.as_node(name="sub")], engine=DaftEngine(), name="outer")
    if cached:
        outer.with_cache(MemoryCache())
    assert outer.run({"x": 1}, output_name="a") == {"a": 2}
    assert outer.map({"x": [1, 2]}, map_over="x", output_name="hi") == [{"hi": 2}, {"hi": 3}]
    assert br.calls == Counter(make_a=1, split=2)
