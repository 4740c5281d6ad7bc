"""Pipeline: run/arun, output selection, overrides, bind/unbind, introspection, fluent config."""

from __future__ import annotations

import pickle
from collections import Counter
from collections.abc import Mapping
from typing import Any

import cloudpickle
import networkx as nx
import pytest

from hypernodes import (
    Engine,
    HyperNodesEngine,
    InvalidInputError,
    MemoryCache,
    MissingInputError,
    Node,
    Pipeline,
    PipelineCallback,
    PipelineDefinitionError,
    PipelineNode,
    node,
)


class Counted:
    """A diamond with a side branch; counts how often each node runs.

    x -> a -> b -> d <- c <- x ;  x -> side
    """

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        calls = self.calls

        @node
        def a(x: int) -> int:
            calls["a"] += 1
            return x + 1

        @node
        def b(a: int) -> int:
            calls["b"] += 1
            return a * 2

        @node
        def c(x: int) -> int:
            calls["c"] += 1
            return -x

        @node
        def d(b: int, c: int) -> int:
            calls["d"] += 1
            return b + c

        @node
        def side(x: int) -> str:
            calls["side"] += 1
            return f"side{x}"

        self.nodes = [a, b, c, d, side]
        self.pipeline = Pipeline(self.nodes, name="counted")


@pytest.fixture
def counted() -> Counted:
    return Counted()


# -- running ----------------------------------------------------------------------------


def test_run_returns_every_output(counted: Counted) -> None:
    result = counted.pipeline.run({"x": 1})
    assert isinstance(result, dict)
    assert result == {"a": 2, "b": 4, "c": -1, "d": 3, "side": "side1"}
    assert counted.calls == Counter(a=1, b=1, c=1, d=1, side=1)


@pytest.mark.asyncio
async def test_arun_returns_the_same_dict(counted: Counted) -> None:
    result = await counted.pipeline.arun({"x": 1})
    assert result == {"a": 2, "b": 4, "c": -1, "d": 3, "side": "side1"}
    assert await counted.pipeline.arun({"x": 2}, output_name="b") == {"b": 6}


def test_pipeline_accepts_nodes_keyword_and_any_iterable(counted: Counted) -> None:
    assert Pipeline(nodes=counted.nodes).run({"x": 1}, output_name="d") == {"d": 3}
    assert Pipeline(n for n in counted.nodes).run({"x": 1}, output_name="d") == {"d": 3}


def test_run_without_inputs_for_a_pipeline_that_needs_none() -> None:
    @node
    def const() -> int:
        return 7

    assert Pipeline([const]).run() == {"const": 7}
    assert Pipeline([]).run() == {}


def test_only_the_nodes_needed_for_the_requested_output_run(counted: Counted) -> None:
    assert counted.pipeline.run({"x": 1}, output_name="b") == {"b": 4}
    assert counted.calls == Counter(a=1, b=1)
    counted.calls.clear()
    assert counted.pipeline.run({"x": 1}, output_name="side") == {"side": "side1"}
    assert counted.calls == Counter(side=1)


@pytest.mark.parametrize("names", [["b", "c"], ("b", "c")])
def test_output_name_as_a_list_or_tuple(counted: Counted, names: Any) -> None:
    assert counted.pipeline.run({"x": 1}, output_name=names) == {"b": 4, "c": -1}
    assert counted.calls == Counter(a=1, b=1, c=1)


def test_outputs_come_back_in_the_order_asked(counted: Counted) -> None:
    assert list(counted.pipeline.run({"x": 1}, output_name=["side", "a"])) == ["side", "a"]


def test_a_root_input_can_be_asked_for_as_an_output(counted: Counted) -> None:
    assert counted.pipeline.run({"x": 5}, output_name="x") == {"x": 5}
    assert not counted.calls


def test_supplying_an_intermediate_skips_its_producer_and_what_only_it_needs(
    counted: Counted,
) -> None:
    # b supplied: b is not computed, and neither is a (only b needs it).
    assert counted.pipeline.run({"x": 1, "b": 100}, output_name="d") == {"d": 99}
    assert counted.calls == Counter(c=1, d=1)


def test_an_override_needs_no_upstream_inputs(counted: Counted) -> None:
    assert counted.pipeline.run({"b": 100, "c": 1}, output_name="d") == {"d": 101}
    assert counted.calls == Counter(d=1)


def test_an_override_keeps_upstream_nodes_that_other_outputs_need(counted: Counted) -> None:
    # b is overridden, but a is asked for: a runs, b does not, and d sees the override.
    result = counted.pipeline.run({"x": 1, "b": 100}, output_name=["a", "d"])
    assert result == {"a": 2, "d": 99}
    assert counted.calls == Counter(a=1, c=1, d=1)


def test_an_overridden_output_asked_for_comes_back_as_given(counted: Counted) -> None:
    assert counted.pipeline.run({"x": 1, "b": "given"}, output_name="b") == {"b": "given"}
    assert not counted.calls


def test_override_of_one_output_of_a_multi_output_node_wins() -> None:
    @node(output_name=("s", "t"))
    def st(x: int) -> tuple[int, int]:
        return x, x + 1

    @node
    def u(s: int) -> int:
        return s * 10

    pipe = Pipeline([st, u])
    # With only `u` asked for, st is skipped and the override is used ...
    assert pipe.run({"x": 1, "s": 100}, output_name="u") == {"u": 1000}
    # ... so asking for `t` as well must not change what `u` sees.
    assert pipe.run({"x": 1, "s": 100}, output_name=["t", "u"]) == {"t": 2, "u": 1000}


def test_unknown_output_name_lists_outputs_and_suggests(counted: Counted) -> None:
    with pytest.raises(InvalidInputError) as info:
        counted.pipeline.run({"x": 1}, output_name="dd")
    message = str(info.value)
    assert "no output 'dd'" in message
    assert "did you mean 'd'?" in message
    assert "'a', 'b', 'c', 'd', 'side'" in message
    assert "'counted'" in message
    assert not counted.calls


def test_unknown_output_in_a_list_is_named(counted: Counted) -> None:
    with pytest.raises(InvalidInputError, match=r"no output 'sidee' \(did you mean 'side'\?\)"):
        counted.pipeline.run({"x": 1}, output_name=["a", "sidee"])


@pytest.mark.parametrize("bad", [5, [5], ("a", None), [["a"]]])
def test_output_name_of_the_wrong_type_says_what_is_accepted(counted: Counted, bad: Any) -> None:
    with pytest.raises(TypeError, match="output_name must be an output name, a list of output"):
        counted.pipeline.run({"x": 1}, output_name=bad)
    assert not counted.calls


def test_empty_output_list_is_an_error(counted: Counted) -> None:
    with pytest.raises(InvalidInputError, match="output_name is an empty list"):
        counted.pipeline.run({"x": 1}, output_name=[])


def test_unknown_input_is_an_error_with_a_suggestion(counted: Counted) -> None:
    with pytest.raises(InvalidInputError) as info:
        counted.pipeline.run({"x": 1, "xx": 2})
    message = str(info.value)
    assert "'xx' (did you mean 'x'?)" in message
    assert "its inputs are 'x'" in message
    assert not counted.calls


def test_every_unknown_input_is_listed(counted: Counted) -> None:
    with pytest.raises(InvalidInputError, match=r"'nope1'.*'nope2'"):
        counted.pipeline.run({"x": 1, "nope2": 0, "nope1": 0})


@pytest.mark.asyncio
async def test_arun_checks_inputs_the_same_way(counted: Counted) -> None:
    with pytest.raises(InvalidInputError, match="did you mean 'x'"):
        await counted.pipeline.arun({"xx": 1})
    with pytest.raises(MissingInputError):
        await counted.pipeline.arun({})


@pytest.mark.parametrize("bad", [[("x", 1)], "x", 5])
def test_inputs_must_be_a_mapping(counted: Counted, bad: Any) -> None:
    with pytest.raises(TypeError, match="inputs must be a dict"):
        counted.pipeline.run(bad)


def test_inputs_may_be_any_mapping(counted: Counted) -> None:
    class Frozen(Mapping[str, Any]):
        def __init__(self, **values: Any) -> None:
            self._values = values

        def __getitem__(self, key: str) -> Any:
            return self._values[key]

        def __iter__(self) -> Any:
            return iter(self._values)

        def __len__(self) -> int:
            return len(self._values)

    assert counted.pipeline.run(Frozen(x=1), output_name="d") == {"d": 3}


def test_run_does_not_mutate_the_inputs(counted: Counted) -> None:
    inputs = {"x": 1}
    counted.pipeline.run(inputs)
    assert inputs == {"x": 1}


def test_repeated_runs_are_independent(counted: Counted) -> None:
    pipe = counted.pipeline
    assert pipe.run({"x": 1}, output_name="d") == {"d": 3}
    assert pipe.run({"x": 2}, output_name="d") == {"d": 4}
    assert pipe.run({"x": 1, "b": 0}, output_name="d") == {"d": -1}
    assert pipe.run({"x": 1}, output_name="d") == {"d": 3}


# -- bind / unbind ----------------------------------------------------------------------


def test_bind_fixes_inputs_and_removes_them_from_inputs(counted: Counted) -> None:
    pipe = counted.pipeline
    assert pipe.inputs == ("x",)
    assert pipe.bind(x=10) is pipe
    assert pipe.inputs == ()
    assert dict(pipe.bound) == {"x": 10}
    assert pipe.run(output_name="d") == {"d": 12}


def test_run_inputs_override_bound_ones(counted: Counted) -> None:
    pipe = counted.pipeline.bind(x=10)
    assert pipe.run({"x": 1}, output_name="d") == {"d": 3}
    assert pipe.run(output_name="d") == {"d": 12}  # the bound value is untouched


def test_bind_an_optional_input_removes_it_from_optional_inputs() -> None:
    @node
    def f(x: int, k: int = 1) -> int:
        return x * k

    pipe = Pipeline([f])
    assert pipe.optional_inputs == {"k": 1}
    pipe.bind(k=5)
    assert pipe.optional_inputs == {}
    assert pipe.inputs == ("x",)
    assert pipe.run({"x": 2}) == {"f": 10}
    pipe.unbind("k")
    assert pipe.optional_inputs == {"k": 1}
    assert pipe.run({"x": 2}) == {"f": 2}


def test_bind_merges_with_earlier_binds(counted: Counted) -> None:
    @node
    def f(x: int, y: int) -> int:
        return x - y

    pipe = Pipeline([f]).bind(x=5).bind(y=1)
    assert dict(pipe.bound) == {"x": 5, "y": 1}
    assert pipe.run() == {"f": 4}
    pipe.bind(x=9)
    assert pipe.run() == {"f": 8}


def test_unbind_restores_the_input(counted: Counted) -> None:
    pipe = counted.pipeline.bind(x=10)
    assert pipe.unbind("x") is pipe
    assert pipe.inputs == ("x",)
    assert dict(pipe.bound) == {}
    with pytest.raises(MissingInputError, match="'x'"):
        pipe.run()


def test_bound_is_a_read_only_view(counted: Counted) -> None:
    pipe = counted.pipeline.bind(x=1)
    with pytest.raises(TypeError):
        pipe.bound["x"] = 2  # type: ignore[index]


def test_bind_unknown_name_is_an_error_with_a_suggestion(counted: Counted) -> None:
    with pytest.raises(InvalidInputError, match=r"cannot bind 'xx'.*did you mean 'x'"):
        counted.pipeline.bind(xx=1)
    assert dict(counted.pipeline.bound) == {}


def test_bind_of_an_output_is_rejected(counted: Counted) -> None:
    with pytest.raises(InvalidInputError, match="cannot bind 'b'"):
        counted.pipeline.bind(b=1)


def test_bind_is_all_or_nothing(counted: Counted) -> None:
    with pytest.raises(InvalidInputError):
        counted.pipeline.bind(x=1, nope=2)
    assert dict(counted.pipeline.bound) == {}


def test_unbind_of_a_name_that_is_not_bound(counted: Counted) -> None:
    pipe = counted.pipeline
    with pytest.raises(InvalidInputError, match=r"cannot unbind 'x': it is not bound.*none"):
        pipe.unbind("x")
    pipe.bind(x=1)
    with pytest.raises(InvalidInputError, match=r"cannot unbind 'y'.*bound inputs are 'x'"):
        pipe.unbind("x", "y")
    assert dict(pipe.bound) == {"x": 1}  # nothing was removed


# -- introspection --------------------------------------------------------------------


def test_inputs_optional_inputs_outputs() -> None:
    @node
    def f(a: int, b: int = 2) -> int:
        return a + b

    @node(output_name=("g1", "g2"))
    def g(f: int, c: int, *, d: str = "d") -> tuple[int, str]:
        return f + c, d

    pipe = Pipeline([f, g])
    assert pipe.inputs == ("a", "c")
    assert pipe.optional_inputs == {"b": 2, "d": "d"}
    assert pipe.outputs == ("f", "g1", "g2")
    assert pipe.nodes == (f, g)


def test_input_with_a_default_in_one_node_but_not_another_is_required() -> None:
    @node
    def f(x: int, k: int = 1) -> int:
        return x + k

    @node
    def g(x: int, k: int) -> int:
        return x - k

    pipe = Pipeline([f, g])
    assert pipe.inputs == ("x", "k")
    assert pipe.optional_inputs == {}
    with pytest.raises(MissingInputError, match="'k'"):
        pipe.run({"x": 1})
    # Only f needed: its default applies.
    assert pipe.run({"x": 1}, output_name="f") == {"f": 2}


def test_graph_is_a_networkx_digraph_of_nodes_and_inputs(counted: Counted) -> None:
    g = counted.pipeline.graph
    a, b, c, d, side = counted.nodes
    assert isinstance(g, nx.DiGraph)
    assert set(g.nodes) == {"x", a, b, c, d, side}
    assert g.nodes["x"]["kind"] == "input"
    assert all(g.nodes[n]["kind"] == "node" for n in counted.nodes)
    edges = {
        (u if isinstance(u, str) else u.name, v.name, data["name"])
        for u, v, data in g.edges(data=True)
    }
    assert edges == {
        ("x", "a", "x"),
        ("x", "c", "x"),
        ("x", "side", "x"),
        ("a", "b", "a"),
        ("b", "d", "b"),
        ("c", "d", "c"),
    }
    assert nx.is_directed_acyclic_graph(g)
    assert counted.pipeline.graph is g  # built once


def test_graph_marks_optional_inputs_and_tuple_output_edges() -> None:
    @node(output_name=("lo", "hi"))
    def bounds(x: int, pad: int = 1) -> tuple[int, int]:
        return x - pad, x + pad

    @node
    def width(lo: int, hi: int) -> int:
        return hi - lo

    g = Pipeline([bounds, width]).graph
    assert g.nodes["pad"] == {"kind": "input", "optional": True}
    assert g.nodes["x"]["optional"] is False
    assert g.edges[bounds, width]["name"] in ("lo", "hi")
    assert g.number_of_edges() == 3  # x, pad -> bounds; bounds -> width


def test_graph_shows_nested_pipelines_as_kind_pipeline() -> None:
    @node
    def inner_f(x: int) -> int:
        return x + 1

    @node
    def outer_f(inner_f: int) -> int:
        return inner_f * 2

    inner = Pipeline([inner_f], name="inner")
    nested = inner.as_node()
    outer = Pipeline([nested, outer_f], name="outer")
    g = outer.graph
    assert isinstance(nested, PipelineNode)
    assert g.nodes[nested]["kind"] == "pipeline"
    assert g.nodes[outer_f]["kind"] == "node"
    assert g.edges["x", nested]["name"] == "x"
    assert g.edges[nested, outer_f]["name"] == "inner_f"
    assert outer.run({"x": 1}) == {"inner_f": 2, "outer_f": 4}


def test_repr_shows_name_nodes_inputs_outputs(counted: Counted) -> None:
    assert repr(counted.pipeline) == (
        "<Pipeline 'counted' nodes=[a, b, c, d, side] inputs=['x'] "
        "outputs=['a', 'b', 'c', 'd', 'side']>"
    )
    counted.pipeline.bind(x=1)
    assert "inputs=[]" in repr(counted.pipeline)


def test_default_name() -> None:
    assert Pipeline([]).name == "pipeline"


# -- fluent configuration -------------------------------------------------------------


def test_with_methods_mutate_and_return_the_pipeline(counted: Counted) -> None:
    pipe = counted.pipeline
    engine = HyperNodesEngine()

    class Quiet(PipelineCallback):
        pass

    cb = Quiet()
    assert pipe.with_engine(engine) is pipe
    assert pipe.engine is engine
    assert pipe.with_name("renamed") is pipe
    assert pipe.name == "renamed"
    assert pipe.with_callbacks([cb]) is pipe
    assert pipe.callbacks == (cb,)
    assert pipe.with_cache(None) is pipe
    assert pipe.cache is None
    assert pipe.with_engine(None) is pipe
    assert pipe.engine is None
    assert pipe.run({"x": 1}, output_name="d") == {"d": 3}


def test_constructor_options_are_the_same_settings(counted: Counted) -> None:
    engine = HyperNodesEngine()
    pipe = Pipeline(counted.nodes, engine=engine, callbacks=[], name="p")
    assert (pipe.engine, pipe.callbacks, pipe.name) == (engine, (), "p")
    bare = Pipeline(counted.nodes)
    assert (bare.engine, bare.cache, bare.callbacks) == (None, None, ())


def test_with_engine_alias_string_teaches_the_fix(counted: Counted) -> None:
    with pytest.raises(TypeError, match=r"pass HyperNodesEngine\(node_executor='async'\)"):
        counted.pipeline.with_engine("async")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"HyperNodesEngine\(node_executor='threaded'\)"):
        Pipeline(counted.nodes, engine="threaded")  # type: ignore[arg-type]


def test_with_engine_class_teaches_the_fix(counted: Counted) -> None:
    with pytest.raises(TypeError, match=r"pass an instance: HyperNodesEngine\(\)"):
        counted.pipeline.with_engine(HyperNodesEngine)  # type: ignore[arg-type]


def test_with_engine_rejects_other_objects(counted: Counted) -> None:
    with pytest.raises(TypeError, match="engine must be an Engine instance"):
        counted.pipeline.with_engine(object())  # type: ignore[arg-type]
    assert counted.pipeline.engine is None


def test_with_callbacks_rejects_a_single_callback_and_classes(counted: Counted) -> None:
    class CB(PipelineCallback):
        pass

    with pytest.raises(TypeError, match=r"wrap a single callback in a list: callbacks=\[CB\(\)\]"):
        counted.pipeline.with_callbacks(CB())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"pass an instance: CB\(\)"):
        counted.pipeline.with_callbacks([CB])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="PipelineCallback instances"):
        Pipeline(counted.nodes, callbacks=[print])  # type: ignore[list-item]


def test_with_cache_rejects_non_caches(counted: Counted) -> None:
    with pytest.raises(TypeError, match="cache must be a Cache instance"):
        counted.pipeline.with_cache("memory")
    with pytest.raises(TypeError, match="cache must be a Cache instance"):
        Pipeline(counted.nodes, cache={})


def test_a_custom_engine_subclass_is_accepted(counted: Counted) -> None:
    class Custom(Engine):
        async def arun(
            self, pipeline: Any, inputs: Any = None, output_name: Any = None, *, _parent: Any = None
        ) -> dict[str, Any]:
            return {"custom": True}

        async def amap(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
            return []

    pipe = counted.pipeline.with_engine(Custom())
    assert pipe.run({"x": 1}) == {"custom": True}
    assert not counted.calls


# -- construction errors (details in test_errors.py) ---------------------------------


def test_nodes_must_be_a_list(counted: Counted) -> None:
    with pytest.raises(TypeError, match="nodes must be a list of nodes"):
        Pipeline(counted.nodes[0])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="nodes must be a list of nodes"):
        Pipeline(42)  # type: ignore[arg-type]


def test_a_plain_function_in_nodes_asks_for_at_node() -> None:
    def plain(x: int) -> int:
        return x

    with pytest.raises(TypeError, match=r"did you forget @node\?"):
        Pipeline([plain])  # type: ignore[list-item]


def test_a_non_callable_in_nodes_is_named() -> None:
    with pytest.raises(TypeError, match="Node objects, got 3"):
        Pipeline([3])  # type: ignore[list-item]


def test_nodes_are_node_instances(counted: Counted) -> None:
    assert all(isinstance(n, Node) for n in counted.pipeline.nodes)


# -- shipping -------------------------------------------------------------------------


def _inc(x: int) -> int:
    return x + 1


def _scale(_inc: int, k: int = 2) -> int:
    return _inc * k


def test_pipeline_and_nodes_pickle_with_the_standard_library() -> None:
    pipe = Pipeline([node(_inc), node(_scale, retries=1)], name="shipped").bind(k=3)
    pipe.run({"x": 1})  # compiled plans and the graph view are not part of the state
    _ = pipe.graph
    clone = pickle.loads(pickle.dumps(pipe))
    assert clone is not pipe
    assert clone.name == "shipped"
    assert dict(clone.bound) == {"k": 3}
    assert [n.name for n in clone.nodes] == ["_inc", "_scale"]
    assert clone.nodes[1].retries == 1
    assert clone.run({"x": 1}) == {"_inc": 2, "_scale": 6}


def test_pipelines_of_decorated_closures_ship_with_cloudpickle(counted: Counted) -> None:
    pipe = Pipeline(counted.nodes, name="p").bind(x=4)
    clone = cloudpickle.loads(cloudpickle.dumps(pipe))
    assert clone.run(output_name="d") == {"d": 6}
    assert repr(clone) == repr(pipe)


def test_stripped_copy_has_no_engine_cache_or_callbacks(counted: Counted) -> None:
    class Quiet(PipelineCallback):
        pass

    pipe = Pipeline(counted.nodes, engine=HyperNodesEngine(), callbacks=[Quiet()]).bind(x=1)
    bare = pipe.stripped()
    assert bare is not pipe
    assert (bare.engine, bare.cache, bare.callbacks) == (None, None, ())
    assert dict(bare.bound) == {"x": 1}
    assert bare.run(output_name="d") == {"d": 3}
    # The original keeps its settings, and binding the copy does not touch it.
    assert pipe.engine is not None and len(pipe.callbacks) == 1
    bare.bind(x=2)
    assert dict(pipe.bound) == {"x": 1}


# -- composition at the edges ------------------------------------------------------------


def test_a_pipeline_in_the_node_list_is_nested_as_a_node(counted: Counted) -> None:
    @node
    def shout(side: str) -> str:
        return side.upper()

    outer = Pipeline([counted.pipeline, shout], name="outer")
    sub = outer.nodes[0]
    assert isinstance(sub, PipelineNode) and sub.pipeline is counted.pipeline
    assert sub.name == "counted"  # as with as_node()
    assert outer.run({"x": 1}, output_name="shout") == {"shout": "SIDE1"}


def test_unnamed_nested_pipelines_get_distinct_meaningful_names() -> None:
    @node
    def first(x: int) -> int:
        return x

    @node
    def second(x: int) -> int:
        return -x

    @node
    def third(second: int) -> int:
        return 2 * second

    one, two = Pipeline([first]).as_node(), Pipeline([second, third]).as_node()
    assert (one.name, two.name) == ("first", "second_third")  # from their outputs
    renamed = Pipeline([second, third]).as_node(output_mapping={"third": "t"})
    assert renamed.name == "t"
    assert Pipeline([one, two]).run({"x": 3}) == {"first": 3, "second": -3, "third": -6}
    assert Pipeline([first], name="named").as_node().name == "named"  # its own name first


def test_two_nested_nodes_with_one_name_ask_for_as_node_name() -> None:
    @node
    def first(x: int) -> int:
        return x

    inner = Pipeline([first], name="inner")
    a = inner.as_node(output_mapping={"first": "a"})
    b = inner.as_node(output_mapping={"first": "b"})
    with pytest.raises(PipelineDefinitionError) as info:
        Pipeline([a, b])
    message = str(info.value)
    assert "two nodes are named 'inner'" in message
    assert "as_node(name='inner_2')" in message and "node(f" not in message


def test_a_nested_node_with_one_exposed_output_has_a_str_output_name(counted: Counted) -> None:
    one = counted.pipeline.as_node(output_mapping={"d": "total"})
    assert one.output_name == "total" and one.outputs == ("total",)
    two = counted.pipeline.as_node(output_mapping={"d": "total", "side": "s"})
    assert two.output_name == ("total", "s")
    assert Pipeline([one]).run({"x": 1}) == {"total": 3}  # x=1: b=4, c=-1
    mapped = counted.pipeline.as_node(output_mapping={"d": "totals"}, map_over="x")
    assert mapped.output_name == "totals"
    assert Pipeline([mapped]).run({"x": [1, 2]}) == {"totals": [3, 4]}


def test_a_nested_node_with_one_output_caches_and_hits(counted: Counted) -> None:
    one = Pipeline([node(_inc)], name="inner").as_node(output_mapping={"_inc": "y"})
    outer = Pipeline([one], cache=MemoryCache())
    assert outer.run({"x": 1}) == outer.run({"x": 1}) == {"y": 2}


def test_unbind_with_no_names_unbinds_everything(counted: Counted) -> None:
    pipe = Pipeline([node(_inc), node(_scale)]).bind(x=1, k=3)
    assert pipe.unbind() is pipe
    assert dict(pipe.bound) == {}
    assert pipe.inputs == ("x",) and pipe.optional_inputs == {"k": 2}


def test_map_needs_no_inputs_and_maps_over_a_bound_list() -> None:
    pipe = Pipeline([node(_inc), node(_scale)]).bind(x=[1, 2, 3])
    assert pipe.map(map_over="x", output_name="_scale") == [
        {"_scale": 4},
        {"_scale": 6},
        {"_scale": 8},
    ]
    # An input given at run time still wins over the bound list.
    assert pipe.map({"x": [10]}, map_over="x", output_name="_inc") == [{"_inc": 11}]


@pytest.mark.asyncio
async def test_amap_maps_over_a_bound_list() -> None:
    pipe = Pipeline([node(_inc)]).bind(x=[1, 2])
    assert await pipe.amap(map_over="x") == [{"_inc": 2}, {"_inc": 3}]


def test_map_without_map_over_says_what_is_missing() -> None:
    pipe = Pipeline([node(_inc)]).bind(x=[1, 2])
    with pytest.raises(TypeError, match=r"map\(\) needs map_over.*map_over='x'"):
        pipe.map()
