"""Graph structure at scale: long chains, wide fans, diamonds, and a deterministic order."""

from __future__ import annotations

import asyncio
import inspect
import sys
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hypernodes import CycleError, Node, Pipeline, node
from hypernodes.graph import Graph

ChainFactory = Callable[..., list[Node]]


def named(
    name: str, inputs: list[str], body: Callable[..., Any], output: str | None = None
) -> Node:
    """A node ``name(*inputs) -> output`` calling ``body(*values)``."""

    def fn(*args: Any) -> Any:
        return body(*args)

    fn.__name__ = name
    fn.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(i, inspect.Parameter.POSITIONAL_OR_KEYWORD) for i in inputs]
    )
    return node(fn, output_name=output or name)


# -- scale ------------------------------------------------------------------------------


def test_a_10000_node_chain_builds_without_recursion(make_chain: ChainFactory) -> None:
    nodes = make_chain(10_000)
    # Far deeper than the recursion limit: nothing may recurse per node.
    assert len(nodes) > sys.getrecursionlimit()
    pipe = Pipeline(nodes)
    assert pipe.inputs == ("x",)
    assert len(pipe.outputs) == 10_000
    steps = pipe.plan(None, ["x"]).steps
    assert [s.name for s in steps] == [f"step{i}" for i in range(10_000)]


def test_a_10000_node_chain_runs(make_chain: ChainFactory) -> None:
    pipe = Pipeline(make_chain(10_000))
    assert pipe.run({"x": 0}, output_name="v9999") == {"v9999": 10_000}
    result = pipe.run({"x": 5})
    assert len(result) == 10_000
    assert result["v0"] == 6 and result["v9999"] == 10_005


@pytest.mark.asyncio
async def test_a_10000_node_chain_runs_with_arun(make_chain: ChainFactory) -> None:
    pipe = Pipeline(make_chain(10_000))
    assert await pipe.arun({"x": 0}, output_name="v9999") == {"v9999": 10_000}


def test_a_10000_node_chain_declared_backwards(make_chain: ChainFactory) -> None:
    pipe = Pipeline(make_chain(10_000)[::-1])
    assert pipe.run({"x": 1}, output_name="v9999") == {"v9999": 10_001}


def test_overriding_the_middle_of_a_long_chain_skips_the_first_half(
    make_chain: ChainFactory,
) -> None:
    pipe = Pipeline(make_chain(10_000))
    plan = pipe.plan("v9999", ["v4999"])
    assert len(plan.steps) == 5_000
    assert pipe.run({"v4999": 0}, output_name="v9999") == {"v9999": 5_000}


def test_a_10000_node_chain_graph_view(make_chain: ChainFactory) -> None:
    g = Pipeline(make_chain(10_000)).graph
    assert g.number_of_nodes() == 10_001  # + the root input
    assert g.number_of_edges() == 10_000


def test_a_10000_node_cycle_is_reported_without_recursion() -> None:
    n = 10_000
    nodes = [named(f"c{i}", [f"v{(i - 1) % n}"], lambda v: v, output=f"v{i}") for i in range(n)]
    with pytest.raises(CycleError) as info:
        Pipeline(nodes)
    assert len(info.value.cycle) == n + 1
    assert info.value.cycle[0] == info.value.cycle[-1]


def test_a_wide_dag_fans_out_and_back_in() -> None:
    width = 2_000
    calls: Counter[str] = Counter()

    def leaf_body(i: int) -> Callable[[int], int]:
        def body(x: int) -> int:
            calls[f"leaf{i}"] += 1
            return x + i

        return body

    leaves = [named(f"leaf{i}", ["x"], leaf_body(i)) for i in range(width)]

    def total(*values: int) -> int:
        calls["total"] += 1
        return sum(values)

    sink = named("total", [f"leaf{i}" for i in range(width)], total)
    pipe = Pipeline([*leaves, sink])
    assert pipe.inputs == ("x",)
    result = pipe.run({"x": 1}, output_name="total")
    assert result == {"total": width + sum(range(width))}
    assert len(calls) == width + 1
    assert set(calls.values()) == {1}
    # Asking for one leaf runs only that leaf.
    calls.clear()
    assert pipe.run({"x": 1}, output_name="leaf7") == {"leaf7": 8}
    assert calls == Counter(leaf7=1)


def test_diamonds_run_each_node_once() -> None:
    calls: Counter[str] = Counter()

    def count(name: str, fn: Callable[..., int]) -> Callable[..., int]:
        def body(*args: int) -> int:
            calls[name] += 1
            return fn(*args)

        return body

    # Two stacked diamonds: top -> (l1, r1) -> mid -> (l2, r2) -> bottom
    nodes = [
        named("top", ["x"], count("top", lambda x: x + 1)),
        named("l1", ["top"], count("l1", lambda t: t * 2)),
        named("r1", ["top"], count("r1", lambda t: t * 3)),
        named("mid", ["l1", "r1"], count("mid", lambda a, b: a + b)),
        named("l2", ["mid"], count("l2", lambda m: m - 1)),
        named("r2", ["mid", "top"], count("r2", lambda m, t: m + t)),
        named("bottom", ["l2", "r2"], count("bottom", lambda a, b: a * b)),
    ]
    result = Pipeline(nodes).run({"x": 1})
    # top=2, l1=4, r1=6, mid=10, l2=9, r2=12, bottom=108
    assert result == {"top": 2, "l1": 4, "r1": 6, "mid": 10, "l2": 9, "r2": 12, "bottom": 108}
    assert calls == Counter({n.name: 1 for n in nodes})


# -- deterministic order ----------------------------------------------------------------


def _recording(order: list[str], spec: list[tuple[str, list[str], bool]]) -> list[Node]:
    """Nodes that append their name to ``order`` when they run (async ones yield first)."""
    nodes = []
    for name, inputs, is_async in spec:
        fn: Callable[..., Any]
        if is_async:

            async def fn(*args: Any, _name: str = name) -> int:
                await asyncio.sleep(0)
                order.append(_name)
                return 1

        else:

            def fn(*args: Any, _name: str = name) -> int:
                order.append(_name)
                return 1

        nodes.append(_signed(name, inputs, fn))
    return nodes


def _signed(name: str, inputs: list[str], fn: Callable[..., Any]) -> Node:
    fn.__name__ = name
    fn.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(i, inspect.Parameter.POSITIONAL_OR_KEYWORD) for i in inputs]
    )
    return node(fn)


# Declaration order: z, m, b, a, c.  Ready at start: m, b, a (z waits for m, c for a & b).
SPEC = [
    ("z", ["m"], False),
    ("m", ["x"], True),
    ("b", ["x"], False),
    ("a", ["x"], True),
    ("c", ["a", "b"], False),
]


def test_sequential_order_breaks_ties_by_declaration_order() -> None:
    order: list[str] = []
    pipe = Pipeline(_recording(order, SPEC))
    pipe.run({"x": 0})
    # Of the ready nodes the earliest declared runs first; z (declared first) runs as
    # soon as m made it ready.
    assert order == ["m", "z", "b", "a", "c"]
    for _ in range(5):
        order.clear()
        pipe.run({"x": 0})
        assert order == ["m", "z", "b", "a", "c"]


@pytest.mark.asyncio
async def test_sequential_order_is_the_same_under_arun() -> None:
    order: list[str] = []
    await Pipeline(_recording(order, SPEC)).arun({"x": 0})
    assert order == ["m", "z", "b", "a", "c"]


def test_declaration_order_decides_among_independent_nodes() -> None:
    order: list[str] = []
    spec = [(name, ["x"], i % 2 == 0) for i, name in enumerate("qwertyuiop")]
    Pipeline(_recording(order, spec)).run({"x": 0})
    assert order == list("qwertyuiop")
    order.clear()
    Pipeline(_recording(order, spec[::-1])).run({"x": 0})
    assert order == list("poiuytrewq")


def test_topological_order_wins_over_declaration_order() -> None:
    order: list[str] = []
    spec = [("last", ["middle"], False), ("middle", ["first"], True), ("first", ["x"], False)]
    Pipeline(_recording(order, spec)).run({"x": 0})
    assert order == ["first", "middle", "last"]


# -- Graph directly -------------------------------------------------------------------


def test_graph_indexes_producers_consumers_and_roots() -> None:
    a = named("a", ["x", "y"], lambda x, y: x)
    b = named("b", ["a", "x"], lambda a, x: a)
    g = Graph([b, a])
    assert g.producer == {"b": 0, "a": 1}
    assert g.consumers == {"a": [0], "x": [0, 1], "y": [1]}
    assert g.root_inputs == ("x", "y")
    assert g.order == (1, 0)
    assert set(g.parents(0)) == {1}
    assert set(g.parents(1)) == set()


def test_select_walks_only_what_the_outputs_need() -> None:
    def f(x: int, k: int = 2) -> int:
        return x

    a = named("a", ["x"], lambda x: x)
    b = named("b", ["a", "y"], lambda a, y: a)
    c = node(f, name="c", output_name="c")
    g = Graph([a, b, c])
    sel = g.select(["b"], frozenset())
    assert sel.order == (0, 1)
    assert sel.required == {"x": (0,), "y": (1,)}
    assert sel.optional == {}
    sel = g.select(["b"], frozenset({"a"}))
    assert sel.order == (1,)
    assert sel.required == {"y": (1,)}
    sel = g.select(["c"], frozenset())
    assert sel.required == {"x": (2,)}
    assert sel.optional == {"k": 2}
    sel = g.select(["c"], frozenset({"k"}))
    assert sel.optional == {}


# -- property: random DAGs ------------------------------------------------------------


@st.composite
def random_dags(draw: st.DrawFn) -> tuple[list[list[int]], list[int], list[int]]:
    """(deps, declaration permutation, requested node indices) for a random DAG.

    ``deps[i]`` lists the earlier nodes node ``i`` reads; every node also reads ``x``.
    """
    n = draw(st.integers(1, 25))
    deps = [sorted(draw(st.sets(st.integers(0, i - 1), max_size=3))) if i else [] for i in range(n)]
    perm = draw(st.permutations(range(n)))
    wanted = draw(st.sets(st.integers(0, n - 1), min_size=1, max_size=n))
    return deps, list(perm), sorted(wanted)


@settings(max_examples=60, deadline=None)
@given(random_dags())
def test_random_dags_run_correctly_in_the_tie_broken_order(
    dag: tuple[list[list[int]], list[int], list[int]],
) -> None:
    deps, perm, wanted = dag
    n = len(deps)
    ran: list[int] = []

    def body(i: int) -> Callable[..., int]:
        def fn(*args: int) -> int:
            ran.append(i)
            return i + sum(args)

        return fn

    made = {i: named(f"n{i}", ["x", *(f"n{d}" for d in deps[i])], body(i)) for i in range(n)}
    declared = [made[i] for i in perm]
    pipe = Pipeline(declared)

    # Reference values.
    value: dict[int, int] = {}
    for i in range(n):
        value[i] = i + 1 + sum(value[d] for d in deps[i])  # x = 1

    # Everything: values match, each node runs once, in the tie-broken topological order.
    result = pipe.run({"x": 1})
    assert result == {f"n{i}": value[i] for i in perm}
    position = {node_index: k for k, node_index in enumerate(perm)}
    expected: list[int] = []
    done: set[int] = set()
    while len(expected) < n:
        ready = [i for i in range(n) if i not in done and all(d in done for d in deps[i])]
        nxt = min(ready, key=position.__getitem__)
        expected.append(nxt)
        done.add(nxt)
    assert ran == expected

    # A subset: exactly the ancestors of what was asked for run.
    ran.clear()
    names = [f"n{i}" for i in wanted]
    assert pipe.run({"x": 1}, output_name=names) == {f"n{i}": value[i] for i in wanted}
    needed: set[int] = set()
    stack = list(wanted)
    while stack:
        i = stack.pop()
        if i not in needed:
            needed.add(i)
            stack.extend(deps[i])
    assert sorted(ran) == sorted(needed)
    assert ran == [i for i in expected if i in needed]
