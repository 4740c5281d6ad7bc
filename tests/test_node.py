"""@node and Node: inputs, outputs, options, async classification, errors that teach."""

from __future__ import annotations

import functools
import inspect
import math
from typing import Any

import pytest

from hypernodes import HyperNodesError, Node, NodeError, Pipeline, node


def add(x: int, y: int) -> int:
    return x + y


# -- declaring nodes ------------------------------------------------------------------


def test_bare_decorator_names_node_and_output_after_the_function() -> None:
    @node
    def double(x: int) -> int:
        return 2 * x

    assert isinstance(double, Node)
    assert double.name == "double"
    assert double.output_name == "double"
    assert double.outputs == ("double",)
    assert double.inputs == ("x",)
    assert double.defaults == {}
    assert double.is_async is False
    assert (double.cache, double.retries, double.timeout) == (True, 0, None)
    assert Pipeline([double]).run({"x": 4}) == {"double": 8}


def test_decorator_with_parentheses_and_no_options() -> None:
    @node()
    def f(x: int) -> int:
        return x

    assert isinstance(f, Node)
    assert f.outputs == ("f",)


def test_output_name_option_renames_the_output_not_the_node() -> None:
    @node(output_name="y")
    def f(x: int) -> int:
        return x + 1

    assert f.name == "f"
    assert f.output_name == "y"
    assert f.outputs == ("y",)
    assert Pipeline([f]).run({"x": 1}) == {"y": 2}


def test_name_option_renames_the_node_not_the_output() -> None:
    n = node(add, name="plus")
    assert n.name == "plus"
    assert n.outputs == ("add",)


@pytest.mark.parametrize("names", [("a", "b"), ["a", "b"]])
def test_tuple_outputs_unpack_a_returned_tuple(names: Any) -> None:
    @node(output_name=names)
    def split(x: int) -> tuple[int, int]:
        return x, x + 1

    assert split.output_name == ("a", "b")
    assert split.outputs == ("a", "b")

    @node
    def total(a: int, b: int) -> int:
        return a + b

    assert Pipeline([split, total]).run({"x": 10}) == {"a": 10, "b": 11, "total": 21}


def test_tuple_outputs_accept_any_sequence_of_the_right_length() -> None:
    @node(output_name=("a", "b"))
    def split(x: int) -> list[int]:
        return [x, -x]

    assert Pipeline([split]).run({"x": 3}) == {"a": 3, "b": -3}


def test_single_element_tuple_output_unpacks_a_one_tuple() -> None:
    @node(output_name=("only",))
    def one(x: int) -> tuple[int]:
        return (x,)

    assert Pipeline([one]).run({"x": 5}) == {"only": 5}


@pytest.mark.parametrize(
    ("returned", "got"),
    [((1, 2, 3), "3 values"), ((1,), "1 values"), (7, "int"), (None, "NoneType")],
)
def test_wrong_number_or_type_of_values_is_a_node_error(returned: Any, got: str) -> None:
    @node(output_name=("a", "b"))
    def bad(x: int) -> Any:
        return returned

    with pytest.raises(NodeError) as info:
        Pipeline([bad]).run({"x": 1})
    err = info.value
    assert isinstance(err, HyperNodesError)
    assert err.node == "bad"
    message = str(err)
    assert "'bad'" in message
    assert "('a', 'b')" in message  # the declared outputs
    assert "2 outputs" in message
    assert got in message


@pytest.mark.parametrize("returned", ["ab", b"ab", {"a": 1, "b": 2}])
def test_a_string_or_mapping_is_not_unpacked_into_tuple_outputs(returned: Any) -> None:
    @node(output_name=("a", "b"))
    def bad(x: int) -> Any:
        return returned

    with pytest.raises(NodeError, match="'bad'"):
        Pipeline([bad]).run({"x": 1})


def test_function_defaults_are_optional_inputs() -> None:
    @node
    def scaled(x: int, factor: int = 3) -> int:
        return x * factor

    assert scaled.inputs == ("x", "factor")
    assert scaled.defaults == {"factor": 3}
    pipe = Pipeline([scaled])
    assert pipe.inputs == ("x",)
    assert pipe.optional_inputs == {"factor": 3}
    assert pipe.run({"x": 2}) == {"scaled": 6}
    assert pipe.run({"x": 2, "factor": 10}) == {"scaled": 20}


def test_options_are_stored() -> None:
    n = node(add, cache=False, retries=2, timeout=1.5, name="n", output_name="s")
    assert (n.cache, n.retries, n.timeout, n.name, n.output_name) == (False, 2, 1.5, "n", "s")
    assert isinstance(n.timeout, float)
    assert node(add, timeout=2).timeout == 2.0


def test_decorator_form_stores_options_too() -> None:
    @node(cache=False, retries=1, timeout=3)
    def f(x: int) -> int:
        return x

    assert (f.cache, f.retries, f.timeout) == (False, 1, 3.0)


def test_keyword_only_parameters_are_inputs_passed_by_keyword() -> None:
    seen: dict[str, Any] = {}

    @node
    def f(x: int, *, k: int, scale: int = 10) -> int:
        seen.update(x=x, k=k, scale=scale)
        return (x + k) * scale

    assert f.inputs == ("x", "k", "scale")
    assert f.call_positional == ("x",)
    assert f.call_keyword == ("k", "scale")
    assert f.defaults == {"scale": 10}
    pipe = Pipeline([f])
    assert pipe.inputs == ("x", "k")
    assert pipe.run({"x": 1, "k": 2}) == {"f": 30}
    assert pipe.run({"x": 1, "k": 2, "scale": 1}) == {"f": 3}
    assert seen == {"x": 1, "k": 2, "scale": 1}


def test_keyword_only_parameters_fed_by_another_node() -> None:
    @node
    def k(x: int) -> int:
        return x * 100

    @node
    def use(x: int, *, k: int) -> int:
        return x + k

    assert Pipeline([k, use]).run({"x": 2}, output_name="use") == {"use": 202}


# -- callables of every kind ----------------------------------------------------------


def test_async_function_node_is_async_and_its_result_is_awaited() -> None:
    @node
    async def fetch(x: int) -> int:
        return x + 1

    assert fetch.is_async is True
    assert Pipeline([fetch]).run({"x": 1}) == {"fetch": 2}


def test_partial_with_keyword_becomes_an_optional_input() -> None:
    n = node(functools.partial(add, y=2))
    assert n.name == "add"
    assert n.inputs == ("x", "y")
    assert n.defaults == {"y": 2}
    assert Pipeline([n]).run({"x": 1}) == {"add": 3}


def test_partial_with_positional_argument_drops_that_input() -> None:
    n = node(functools.partial(add, 1), output_name="inc")
    assert n.inputs == ("y",)
    assert Pipeline([n]).run({"y": 2}) == {"inc": 3}


def test_partial_of_async_function_is_async() -> None:
    async def aadd(x: int, y: int) -> int:
        return x + y

    n = node(functools.partial(aadd, y=5))
    assert n.is_async is True
    assert Pipeline([n]).run({"x": 1}) == {"aadd": 6}


class SyncCallable:
    def __init__(self, factor: int) -> None:
        self.factor = factor

    def __call__(self, x: int) -> int:
        return x * self.factor


class AsyncCallable:
    def __init__(self, factor: int) -> None:
        self.factor = factor

    async def __call__(self, x: int) -> int:
        return x * self.factor


def test_callable_object_with_sync_call() -> None:
    n = node(SyncCallable(3), output_name="y")
    assert n.is_async is False
    assert n.name == "SyncCallable"
    assert n.inputs == ("x",)
    assert Pipeline([n]).run({"x": 2}) == {"y": 6}


def test_callable_object_with_async_call() -> None:
    n = node(AsyncCallable(4), output_name="y")
    assert n.is_async is True
    assert n.inputs == ("x",)
    assert Pipeline([n]).run({"x": 2}) == {"y": 8}


def test_partial_of_async_callable_object_is_async() -> None:
    n = node(functools.partial(AsyncCallable(2)), output_name="y")
    assert n.is_async is True
    assert Pipeline([n]).run({"x": 5}) == {"y": 10}


def test_bound_methods_sync_and_async() -> None:
    class Service:
        def sync(self, a: int) -> int:
            return a + 1

        async def asynchronous(self, b: int) -> int:
            return b + 2

    s = Service()
    sync_node, async_node = node(s.sync), node(s.asynchronous)
    assert (sync_node.is_async, async_node.is_async) == (False, True)
    assert sync_node.inputs == ("a",)
    assert Pipeline([sync_node, async_node]).run({"a": 1, "b": 1}) == {
        "sync": 2,
        "asynchronous": 3,
    }


def test_is_async_is_decided_at_decoration_not_per_call(monkeypatch: pytest.MonkeyPatch) -> None:
    sync_obj = node(SyncCallable(2), output_name="s")
    async_obj = node(AsyncCallable(3), output_name="a")

    @node
    async def coro(s: int, a: int) -> int:
        return s + a

    pipe = Pipeline([sync_obj, async_obj, coro])
    assert pipe.run({"x": 1}) == {"s": 2, "a": 3, "coro": 5}

    calls: list[object] = []
    real = inspect.iscoroutinefunction

    def counting(obj: object) -> bool:
        calls.append(obj)
        return real(obj)

    monkeypatch.setattr(inspect, "iscoroutinefunction", counting)
    for x in range(3):
        assert pipe.run({"x": x}) == {"s": 2 * x, "a": 3 * x, "coro": 5 * x}
    assert calls == []


def test_lambda_needs_a_name_and_then_outputs_under_it() -> None:
    with pytest.raises(ValueError, match=r"name='\.\.\.'"):
        node(lambda x: x)
    inc = node(lambda x: x + 1, name="inc")
    assert inc.name == "inc"
    assert inc.outputs == ("inc",)
    assert Pipeline([inc]).run({"x": 1}) == {"inc": 2}
    named = node(lambda x: x, name="f", output_name="y")
    assert named.outputs == ("y",)


def test_node_of_a_node_wraps_the_same_function() -> None:
    first = node(add)
    second = node(first, name="again", output_name="s")
    assert second.func is add
    assert (second.name, second.outputs) == ("again", ("s",))


# -- rejected definitions -------------------------------------------------------------


def test_var_positional_is_rejected_with_a_clear_message() -> None:
    def f(x: int, *rest: int) -> int:
        return x

    with pytest.raises(TypeError, match=r"node 'f' takes \*rest.*list them explicitly"):
        node(f)


def test_var_keyword_is_rejected_with_a_clear_message() -> None:
    def f(x: int, **options: Any) -> int:
        return x

    with pytest.raises(
        TypeError, match=r"node 'f' takes \*\*options; a node's inputs are its named parameters"
    ):
        node(f)


def test_passing_a_call_result_teaches_the_fix() -> None:
    def make() -> int:
        return 3

    with pytest.raises(TypeError) as info:
        node(make())  # type: ignore[call-overload]
    message = str(info.value)
    assert "got int 3" in message
    assert "node(f())" in message and "node(f)" in message


def test_a_string_where_the_function_goes_teaches_output_name() -> None:
    with pytest.raises(TypeError, match=r"@node\(output_name='y'\)"):
        node("y")  # type: ignore[call-overload]


@pytest.mark.parametrize("retries", [-1, 1.5, True, "2", None])
def test_bad_retries(retries: Any) -> None:
    with pytest.raises(ValueError, match=r"retries must be an int >= 0.*'add'"):
        node(add, retries=retries)


@pytest.mark.parametrize("timeout", [0, -1, -0.5, "2", True, math.nan, [1]])
def test_bad_timeout(timeout: Any) -> None:
    with pytest.raises(ValueError, match=r"timeout must be a number of seconds > 0 or None"):
        node(add, timeout=timeout)


@pytest.mark.parametrize(
    ("output_name", "error", "match"),
    [
        ("", ValueError, "non-empty"),
        (("a", ""), ValueError, "non-empty"),
        (("a", 1), ValueError, "non-empty strings"),
        (("a", "a"), ValueError, "repeat"),
        ((), TypeError, "str or a tuple of str"),
        (5, TypeError, "str or a tuple of str"),
    ],
)
def test_bad_output_names(output_name: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        node(add, output_name=output_name)


def test_uninspectable_callable_is_a_clear_type_error() -> None:
    # Builtins such as `dict` have no readable signature on every version; what matters
    # is that the failure names the callable instead of crashing later.
    class NoSignature:
        __signature__ = "not a signature"

        def __call__(self) -> None: ...

    with pytest.raises(TypeError, match="cannot read the parameters"):
        node(NoSignature(), output_name="y")


# -- still a function -------------------------------------------------------------------


def test_a_node_is_still_callable_like_its_function() -> None:
    n = node(add)
    assert n(1, 2) == 3
    assert n(x=1, y=5) == 6
    assert n(1, y=9) == 10


@pytest.mark.asyncio
async def test_an_async_node_called_directly_returns_a_coroutine() -> None:
    @node
    async def f(x: int) -> int:
        return x * 2

    assert await f(21) == 42


def test_repr_shows_name_inputs_outputs_and_async() -> None:
    async def fetch(url: str, *, retries_left: int = 0) -> str:
        return url

    assert repr(node(add)) == "<Node add(x, y) -> 'add'>"
    assert repr(node(fetch, output_name=("a", "b"))) == (
        "<async Node fetch(url, retries_left) -> ('a', 'b')>"
    )


def test_repr_shows_options_that_differ_from_the_defaults() -> None:
    n = node(add, cache=False, retries=2, timeout=0.5)
    assert repr(n) == "<Node add(x, y) -> 'add' cache=False retries=2 timeout=0.5>"


def test_copy_with_a_new_name_keeps_everything_else() -> None:
    original = node(add, output_name="s", cache=False, retries=1, timeout=2.0)
    clone = original.copy(name="add2")
    assert clone is not original
    assert clone.name == "add2"
    assert original.name == "add"
    assert clone.func is original.func
    assert (clone.output_name, clone.inputs, clone.defaults) == ("s", ("x", "y"), {})
    assert (clone.cache, clone.retries, clone.timeout) == (False, 1, 2.0)
    assert clone.is_async is original.is_async


def test_copy_lets_one_function_appear_twice_in_a_pipeline() -> None:
    @node(output_name="y")
    def inc(x: int) -> int:
        return x + 1

    twice = inc.copy(name="inc_again", output_name="z")
    # The copy reads x too; rename its output so the outputs do not clash.
    pipe = Pipeline([inc, twice])
    assert pipe.run({"x": 1}) == {"y": 2, "z": 2}


def test_copy_can_change_options_and_validates_them() -> None:
    n = node(add)
    assert n.copy(retries=3).retries == 3
    with pytest.raises(ValueError, match="retries"):
        n.copy(retries=-1)
    with pytest.raises(TypeError):
        n.copy(colour="red")


def test_passing_a_coroutine_teaches_the_fix_without_a_never_awaited_warning() -> None:
    async def fetch() -> int:
        return 1

    coro = fetch()
    with pytest.raises(TypeError, match=r"got coroutine.*node\(f\)"):
        node(coro)  # type: ignore[call-overload]
    assert coro.cr_frame is None  # closed: no "never awaited" warning at collection


def test_positional_only_parameters_are_inputs() -> None:
    def f(x: int, /, y: int = 2) -> int:
        return x * y

    n = node(f)
    assert n.inputs == ("x", "y")
    assert Pipeline([n]).run({"x": 3}) == {"f": 6}
