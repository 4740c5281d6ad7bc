"""The exception tree, and build-time / run-time validation errors that name what clashed."""

from __future__ import annotations

import pickle
import re
from typing import Any

import pytest

import hypernodes
import hypernodes.errors
from hypernodes import (
    ConfigError,
    CycleError,
    DuplicateOutputError,
    HyperNodesError,
    InvalidExecutorError,
    InvalidInputError,
    MissingInputError,
    Node,
    NodeError,
    Pipeline,
    PipelineDefinitionError,
    node,
)
from hypernodes.errors import PathFrame


def out(name: str, *inputs: str, output: str | None = None) -> Node:
    """A node called ``name`` reading ``inputs`` and producing ``output`` (default: name)."""

    def fn(*args: Any) -> int:
        return 0

    import inspect

    fn.__name__ = name
    fn.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(i, inspect.Parameter.POSITIONAL_OR_KEYWORD) for i in inputs]
    )
    return node(fn, output_name=output or name)


# -- the tree ---------------------------------------------------------------------------

VALUE_ERRORS = [
    PipelineDefinitionError,
    DuplicateOutputError,
    CycleError,
    MissingInputError,
    InvalidInputError,
    InvalidExecutorError,
    ConfigError,
]


@pytest.mark.parametrize("cls", [*VALUE_ERRORS, NodeError])
def test_every_error_is_a_hypernodes_error(cls: type[Exception]) -> None:
    assert issubclass(cls, HyperNodesError)


@pytest.mark.parametrize("cls", VALUE_ERRORS)
def test_input_and_definition_errors_are_value_errors(cls: type[Exception]) -> None:
    assert issubclass(cls, ValueError)


def test_node_error_is_not_a_value_error() -> None:
    # A failing node is not a bad argument; `except ValueError` must not swallow it.
    assert not issubclass(NodeError, ValueError)


def test_definition_errors_share_a_base() -> None:
    assert issubclass(DuplicateOutputError, PipelineDefinitionError)
    assert issubclass(CycleError, PipelineDefinitionError)


def test_the_docstring_draws_every_error() -> None:
    doc = hypernodes.errors.__doc__ or ""
    for name in hypernodes.errors.__all__:
        obj = getattr(hypernodes.errors, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert re.search(rf"\b{name}\b", doc), name


def test_errors_are_exported_from_the_top_level() -> None:
    for name in hypernodes.errors.__all__:
        obj = getattr(hypernodes.errors, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert getattr(hypernodes, name) is obj


# -- duplicate outputs ----------------------------------------------------------------


def test_duplicate_output_names_both_nodes_and_the_output() -> None:
    with pytest.raises(DuplicateOutputError) as info:
        Pipeline([out("first", "x", output="y"), out("second", "z", output="y")])
    err = info.value
    assert err.output == "y"
    assert err.nodes == ("first", "second")
    message = str(err)
    assert "'y'" in message and "'first'" in message and "'second'" in message
    assert "output_name=" in message  # the fix


def test_duplicate_output_in_a_tuple_output_is_caught() -> None:
    with pytest.raises(DuplicateOutputError, match=r"'b' is produced by both 'one' and 'two'"):
        Pipeline(
            [
                out("one", "x", output="b"),
                node(lambda x: (1, 2), name="two", output_name=("a", "b")),
            ]
        )


def test_duplicate_output_is_catchable_as_value_error() -> None:
    with pytest.raises(ValueError, match="produced by both"):
        Pipeline([out("f", "x", output="y"), out("g", "x", output="y")])


# -- cycles -------------------------------------------------------------------------------


def test_two_node_cycle_is_spelled_out() -> None:
    with pytest.raises(CycleError) as info:
        Pipeline([out("na", "b", output="a"), out("nb", "a", output="b")])
    err = info.value
    assert set(err.cycle[:-1]) == {"na", "nb"}
    assert err.cycle[0] == err.cycle[-1]
    assert len(err.cycle) == 3
    message = str(err)
    # Every hop names the value passed along it.
    assert "'na' --a--> 'nb'" in message
    assert "'nb' --b--> 'na'" in message


def test_three_node_cycle_is_spelled_out_in_dependency_order() -> None:
    nodes = [out("ca", "c", output="a"), out("cb", "a", output="b"), out("cc", "b", output="c")]
    with pytest.raises(CycleError) as info:
        Pipeline(nodes)
    err = info.value
    assert len(err.cycle) == 4
    assert err.cycle[0] == err.cycle[-1]
    assert set(err.cycle) == {"ca", "cb", "cc"}
    message = str(err)
    for hop in ("'ca' --a--> 'cb'", "'cb' --b--> 'cc'", "'cc' --c--> 'ca'"):
        assert hop in message
    # Each consecutive pair in .cycle is a real producer -> consumer hop.
    produces = {"ca": "a", "cb": "b", "cc": "c"}
    reads = {"ca": "c", "cb": "a", "cc": "b"}
    for src, dst in zip(err.cycle, err.cycle[1:], strict=False):
        assert reads[dst] == produces[src]


def test_self_loop_is_a_cycle() -> None:
    @node
    def selfish(selfish: int) -> int:
        return selfish

    with pytest.raises(CycleError) as info:
        Pipeline([selfish])
    assert info.value.cycle == ("selfish", "selfish")
    assert "'selfish' --selfish--> 'selfish'" in str(info.value)


def test_self_loop_through_a_tuple_output() -> None:
    @node(output_name=("s", "t"))
    def st(t: int) -> tuple[int, int]:
        return t, t

    with pytest.raises(CycleError, match="'st' --t--> 'st'"):
        Pipeline([st])


def test_cycle_downstream_of_valid_nodes_names_only_the_cycle() -> None:
    nodes = [out("up", "x"), out("pa", "q", "up", output="p"), out("pb", "p", output="q")]
    with pytest.raises(CycleError) as info:
        Pipeline(nodes)
    assert set(info.value.cycle) == {"pa", "pb"}
    assert "'up'" not in str(info.value)


def test_cycle_is_catchable_as_value_error() -> None:
    with pytest.raises(ValueError, match="cycle"):
        Pipeline([out("na", "b", output="a"), out("nb", "a", output="b")])


# -- names and defaults ---------------------------------------------------------------


def test_duplicate_node_names_are_rejected_with_the_fix() -> None:
    with pytest.raises(PipelineDefinitionError) as info:
        Pipeline([out("f", "x", output="y1"), out("f", "x", output="y2")])
    message = str(info.value)
    assert "two nodes are named 'f'" in message
    assert "name=" in message


def test_the_same_node_twice_is_a_duplicate_name() -> None:
    n = out("f", "x")
    with pytest.raises(PipelineDefinitionError, match="two nodes are named 'f'"):
        Pipeline([n, n])


def test_conflicting_defaults_name_the_input_both_nodes_and_both_values() -> None:
    def g1(x: int, k: int = 1) -> int:
        return x

    def g2(y: int, k: int = 2) -> int:
        return y

    with pytest.raises(PipelineDefinitionError) as info:
        Pipeline([node(g1), node(g2)])
    message = str(info.value)
    assert "input 'k'" in message
    assert "'g1'" in message and "'g2'" in message
    assert "default 1" in message and "but 2" in message
    assert isinstance(info.value, ValueError)


def test_equal_defaults_in_two_nodes_are_fine() -> None:
    def g1(x: int, k: int = 1) -> int:
        return x + k

    def g2(y: int, k: int = 1) -> int:
        return y + k

    pipe = Pipeline([node(g1), node(g2)])
    assert pipe.optional_inputs == {"k": 1}
    assert pipe.run({"x": 1, "y": 2}) == {"g1": 2, "g2": 3}


def test_defaults_of_different_types_conflict() -> None:
    def g1(x: int, k: float = 1) -> float:
        return x

    def g2(y: int, k: float = 1.0) -> float:
        return y

    with pytest.raises(PipelineDefinitionError, match="input 'k'"):
        Pipeline([node(g1), node(g2)])


def test_defaults_that_cannot_be_compared_conflict_instead_of_crashing() -> None:
    class Weird:
        def __eq__(self, other: object) -> bool:
            raise RuntimeError("no comparing")

        __hash__ = object.__hash__

    def g1(x: int, k: Any = Weird()) -> int:  # noqa: B008
        return x

    def g2(y: int, k: Any = Weird()) -> int:  # noqa: B008
        return y

    with pytest.raises(PipelineDefinitionError, match="input 'k'"):
        Pipeline([node(g1), node(g2)])


# -- missing inputs (run time) --------------------------------------------------------


def test_missing_inputs_lists_every_name_and_who_needs_it() -> None:
    @node
    def mm(a1: int, a2: int, a3: int = 1) -> int:
        return 1

    @node
    def mm2(a2: int, a4: int) -> int:
        return 1

    pipe = Pipeline([mm, mm2], name="p")
    with pytest.raises(MissingInputError) as info:
        pipe.run({})
    err = info.value
    assert err.missing == {"a1": ("mm",), "a2": ("mm", "mm2"), "a4": ("mm2",)}
    message = str(err)
    assert "'a1' (needed by 'mm')" in message
    assert "'a2' (needed by 'mm', 'mm2')" in message
    assert "'a4' (needed by 'mm2')" in message
    assert "'a3'" not in message  # optional
    assert "pipeline 'p'" in message
    assert "bind(" in message  # the fix


def test_missing_inputs_only_for_the_requested_outputs() -> None:
    @node
    def f(a: int) -> int:
        return a

    @node
    def g(b: int) -> int:
        return b

    pipe = Pipeline([f, g])
    with pytest.raises(MissingInputError) as info:
        pipe.run({}, output_name="g")
    assert info.value.missing == {"b": ("g",)}
    assert pipe.run({"a": 1}, output_name="f") == {"f": 1}


def test_missing_inputs_is_raised_before_any_node_runs() -> None:
    ran: list[str] = []

    @node
    def first(a: int) -> int:
        ran.append("first")
        return a

    @node
    def second(first: int, b: int) -> int:
        ran.append("second")
        return first + b

    with pytest.raises(MissingInputError, match="'b'"):
        Pipeline([first, second]).run({"a": 1})
    assert ran == []


def test_missing_input_is_catchable_as_value_error() -> None:
    with pytest.raises(ValueError, match="missing inputs"):
        Pipeline([out("f", "x")]).run()


def test_bound_values_count_as_supplied() -> None:
    pipe = Pipeline([out("f", "a", "b")]).bind(a=1)
    with pytest.raises(MissingInputError) as info:
        pipe.run()
    assert set(info.value.missing) == {"b"}


# -- NodeError --------------------------------------------------------------------------


def test_node_error_keeps_the_users_exception_as_cause() -> None:
    class Boom(Exception):
        pass

    @node
    def explode(x: int) -> int:
        raise Boom("bad x")

    with pytest.raises(NodeError) as info:
        Pipeline([explode], name="p").run({"x": 1})
    err = info.value
    assert err.node == "explode"
    assert isinstance(err.__cause__, Boom)
    assert err.pipeline_path == ("p",)
    assert str(err) == "node 'explode' failed in p: Boom: bad x"


def test_node_error_paths_and_item_indices() -> None:
    err = NodeError("n", [PathFrame("outer"), PathFrame("inner", via="sub", item=3)])
    assert err.pipeline_path == ("outer", "inner")
    assert err.item_index == 3
    assert err.item_indices == (3,)
    assert str(err) == "node 'n' failed in outer > sub -> inner[item 3]: failed"
    err2 = NodeError("n", [PathFrame("outer", item=1), PathFrame("inner", item=2)], detail="why")
    assert err2.item_index == 2
    assert err2.item_indices == (1, 2)
    assert str(err2).endswith(": why")
    assert NodeError("n").item_index is None
    assert str(NodeError("n")) == "node 'n' failed in <pipeline>: failed"


def test_node_error_pickles_with_cause_and_path() -> None:
    err = NodeError("n", [PathFrame("p", item=4)], detail="d", abandoned=True)
    err.__cause__ = KeyError("k")
    back = pickle.loads(pickle.dumps(err))
    assert isinstance(back, NodeError)
    assert (back.node, back.frames, back.detail, back.abandoned) == ("n", err.frames, "d", True)
    assert isinstance(back.__cause__, KeyError)
    assert str(back) == str(err)


@pytest.mark.parametrize(
    "err",
    [
        DuplicateOutputError("y", ["f", "g"]),
        CycleError(["a", "b", "a"], ["x", "y"]),
        MissingInputError({"a": ["f", "g"]}, pipeline="p"),
        InvalidInputError("bad input"),
        ConfigError("bad config"),
        PipelineDefinitionError("bad pipeline"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_errors_survive_pickling_with_their_attributes(err: HyperNodesError) -> None:
    # Errors come back from process pools and Dask/Ray workers pickled.
    err.add_note("raised in a worker")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is type(err)
    assert str(back) == str(err)
    assert vars(back) == vars(err)
    assert back.__notes__ == ["raised in a worker"]


def test_nodes_stuck_behind_a_cycle_are_not_part_of_it() -> None:
    # `down` is declared first and waits on the cycle, but is not in it.
    nodes = [out("down", "p"), out("pa", "q", output="p"), out("pb", "p", output="q")]
    with pytest.raises(CycleError) as info:
        Pipeline(nodes)
    assert set(info.value.cycle) == {"pa", "pb"}
    assert "'down'" not in str(info.value)


def test_missing_inputs_of_a_map_are_listed_too() -> None:
    pipe = Pipeline([out("f", "x", "y"), out("g", "z")], name="p")
    with pytest.raises(MissingInputError) as info:
        pipe.map({"x": [1, 2]}, map_over="x")
    assert info.value.missing == {"y": ("f",), "z": ("g",)}


def test_map_over_an_unknown_name_lists_the_inputs_not_the_outputs() -> None:
    @node(output_name="ratio")
    def divide(x: int, scale: int = 1) -> float:
        return x / scale

    @node(output_name="total")
    def add(ratio: float, offset: float) -> float:
        return ratio + offset

    pipe = Pipeline([divide, add], name="p").bind(offset=0.5)
    with pytest.raises(InvalidInputError) as info:
        pipe.map({"xs": [1, 2]}, map_over="xs")
    assert str(info.value) == (
        "map_over names 'xs', which is not an input of pipeline 'p' (did you mean 'x'?); "
        "its inputs are 'x', 'scale', 'offset'"
    )
