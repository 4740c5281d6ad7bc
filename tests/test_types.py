"""Types at the edges: build-time checks of what nodes return against what nodes take,
the pydantic models of a pipeline's inputs and outputs, and the CLI's use of both.

The table of edge cases runs every case twice: in a module with ``from __future__ import
annotations`` (string annotations, resolved like ``typing.get_type_hints``) and in one
without (annotations are objects).
"""

from __future__ import annotations

import copy
import json
import pickle
import sys
import textwrap
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

import hypernodes.edges
from hypernodes import (
    Pipeline,
    PipelineDefinitionError,
    TypeMismatchError,
    node,
)
from hypernodes.edges import fits, type_text
from hypernodes.errors import InvalidInputError
from hypernodes.models import validate_inputs

pydantic = pytest.importorskip("pydantic")

HEADER = """
import typing
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NewType, Optional, Protocol, TypeVar, Union

from hypernodes import Pipeline, node
"""

_modules = iter(range(10**9))


def load(source: str, *, future: bool) -> types.ModuleType:
    """Run ``source`` as a fresh module (registered, as dataclasses and typing need)."""
    name = f"_hn_types_case_{next(_modules)}"
    module = types.ModuleType(name)
    head = "from __future__ import annotations\n" if future else ""
    sys.modules[name] = module
    try:
        # dont_inherit: this file's own ``from __future__ import annotations`` must not leak.
        code = compile(head + HEADER + textwrap.dedent(source), name, "exec", dont_inherit=True)
        exec(code, module.__dict__)
    except BaseException:
        del sys.modules[name]
        raise
    return module


@dataclass(frozen=True)
class Case:
    """An edge case: ``source`` defines ``nodes``; ``clash`` is what the error must name
    (producer, consumer, value, produced type, expected type), or ``None`` when it builds."""

    id: str
    source: str
    clash: tuple[str, str, str, str, str] | None = None


def ok(id: str, source: str) -> Case:
    return Case(id, source)


def bad(id: str, source: str, *clash: str) -> Case:
    assert len(clash) == 5
    return Case(id, source, typing.cast("tuple[str, str, str, str, str]", clash))


def edge(produced: str, taken: str) -> str:
    """Two nodes: ``make`` returns ``v`` annotated ``produced``; ``use`` takes it as ``taken``."""
    return f"""
        @node(output_name="v")
        def make() -> {produced}:
            return None

        @node(output_name="out")
        def use(v: {taken}) -> None:
            return None

        nodes = [make, use]
    """


def clash(produced: str, taken: str, id: str) -> Case:
    return bad(id, edge(produced, taken), "make", "use", "v", produced, taken)


PROTOCOLS = """
        class Sized2(Protocol):
            def size(self) -> int: ...

        class Box:
            def size(self) -> int:
                return 1

        class Rock:
            pass
"""

ANIMALS = """
        class Animal: ...

        class Dog(Animal): ...
"""

NESTED = """
        @node(output_name="y")
        def per_item(x: int) -> int:
            return x

        inner = Pipeline([per_item], name="inner")
"""

CASES = [
    # plain types
    ok("same-class", edge("int", "int")),
    clash("int", "str", "int-into-str"),
    ok("int-into-float", edge("int", "float")),
    ok("bool-into-int", edge("bool", "int")),
    clash("float", "int", "float-into-int"),
    ok("subclass-into-base", ANIMALS + edge("Dog", "Animal")),
    bad("base-into-subclass", ANIMALS + edge("Animal", "Dog"), "make", "use", "v", "Animal", "Dog"),
    ok("str-into-sequence", edge("str", "Sequence[str]")),
    clash("str", "list[str]", "str-into-list"),
    # generics
    ok("list-into-list", edge("list[int]", "list[int]")),
    clash("list[int]", "list[str]", "list-int-into-list-str"),
    ok("list-into-sequence", edge("list[int]", "Sequence[int]")),
    ok("list-into-iterable-of-float", edge("list[int]", "Iterable[float]")),
    clash("list[int]", "Sequence[str]", "list-into-sequence-of-str"),
    ok("dict-into-mapping", edge("dict[str, int]", "Mapping[str, float]")),
    clash("dict[str, int]", "dict[str, str]", "dict-values-clash"),
    ok("typing-aliases", edge("typing.List[typing.Dict[str, int]]", "list[dict[str, int]]")),
    clash("tuple[int, str]", "tuple[int, int]", "tuple-elements-clash"),
    ok("tuple-into-variadic", edge("tuple[int, bool]", "tuple[int, ...]")),
    ok("type-of-subclass", edge("type[bool]", "type[int]")),
    clash("type[str]", "type[int]", "type-of-other-class"),
    ok("callables", edge("Callable[[int], int]", "Callable[..., Any]")),
    # unions and Optional
    ok("into-optional", edge("int", "Optional[int]")),
    ok("optional-into-plain", edge("Optional[int]", "int")),
    bad(
        "optional-into-other", edge("Optional[int]", "str"), "make", "use", "v", "int | None", "str"
    ),
    clash("int | None", "list[int]", "pipe-union-into-list"),
    ok("union-member-fits", edge("Union[int, str]", "str")),
    clash("str", "int | float", "into-union-no-member"),
    ok("literal-into-str", edge("Literal['a', 'b']", "str")),
    clash("Literal['a']", "int", "literal-into-int"),
    # Any, object, TypeVars, NewType, Annotated, protocols
    ok("any-into-int", edge("Any", "int")),
    ok("int-into-any", edge("int", "Any")),
    ok("object-into-int", edge("object", "int")),
    ok("typevar-producer", "        T = TypeVar('T')\n" + edge("T", "int")),
    ok("into-bounded-typevar", "        N = TypeVar('N', bound=float)\n" + edge("int", "N")),
    bad(
        "out-of-bound-typevar",
        "        N = TypeVar('N', bound=float)\n" + edge("str", "N"),
        *("make", "use", "v", "str", "N"),
    ),
    ok("newtype", "        UserId = NewType('UserId', int)\n" + edge("UserId", "int")),
    ok("annotated", edge("Annotated[int, 'meta']", "int")),
    ok("protocol-satisfied", PROTOCOLS + edge("Box", "Sized2")),
    bad(
        "protocol-missed", PROTOCOLS + edge("Rock", "Sized2"), "make", "use", "v", "Rock", "Sized2"
    ),
    # unannotated and unresolvable ends
    ok(
        "unannotated-producer",
        """
        @node(output_name="v")
        def make():
            return 1

        @node(output_name="out")
        def use(v: str) -> str:
            return v

        nodes = [make, use]
        """,
    ),
    ok(
        "unannotated-consumer",
        """
        @node(output_name="v")
        def make() -> int:
            return 1

        @node(output_name="out")
        def use(v):
            return v

        nodes = [make, use]
        """,
    ),
    ok("unresolvable-forward-ref", edge("'Missing'", "int")),
    # forward references
    ok(
        "forward-ref-defined-later",
        edge("'User'", "'User'").replace("nodes = [make, use]", "")
        + "\n        class User: ...\n\n        nodes = [make, use]\n",
    ),
    bad(
        "forward-ref-clash",
        edge("'User'", "'Order'").replace("nodes = [make, use]", "")
        + "\n        class User: ...\n\n        class Order: ...\n\n        nodes = [make, use]\n",
        "make",
        "use",
        "v",
        "User",
        "Order",
    ),
    bad(
        "nested-forward-ref",
        edge("list['User']", "list['Order']").replace("nodes = [make, use]", "")
        + "\n        class User: ...\n\n        class Order: ...\n\n        nodes = [make, use]\n",
        "make",
        "use",
        "v",
        "list[User]",
        "list[Order]",
    ),
    ok(
        "dataclass-forward-ref",
        """
        @dataclass
        class Point:
            x: int

        @node(output_name="p")
        def make() -> Point:
            return Point(1)

        @node(output_name="out")
        def use(p: Point) -> int:
            return p.x

        nodes = [make, use]
        """,
    ),
    # tuple outputs
    ok(
        "tuple-outputs",
        """
        @node(output_name=("a", "b"))
        def split() -> tuple[int, str]:
            return 1, "x"

        @node(output_name="out")
        def use(a: int, b: str) -> str:
            return b * a

        nodes = [split, use]
        """,
    ),
    bad(
        "tuple-output-element-clash",
        """
        @node(output_name=("a", "b"))
        def split() -> tuple[int, str]:
            return 1, "x"

        @node(output_name="out")
        def use(a: int, b: int) -> int:
            return a + b

        nodes = [split, use]
        """,
        "split",
        "use",
        "b",
        "str",
        "int",
    ),
    ok(
        "variadic-tuple-outputs",
        """
        @node(output_name=("a", "b"))
        def split() -> tuple[int, ...]:
            return 1, 2

        @node(output_name="out")
        def use(a: float, b: int) -> float:
            return a + b

        nodes = [split, use]
        """,
    ),
    # generator nodes produce the list of their chunks
    ok(
        "generator-into-list",
        """
        @node(output_name="chunks")
        def stream() -> Iterator[int]:
            yield 1

        @node(output_name="out")
        def use(chunks: list[int]) -> int:
            return sum(chunks)

        nodes = [stream, use]
        """,
    ),
    bad(
        "generator-into-list-of-other",
        """
        @node(output_name="chunks")
        def stream() -> typing.Generator[int, None, None]:
            yield 1

        @node(output_name="out")
        def use(chunks: list[str]) -> str:
            return "".join(chunks)

        nodes = [stream, use]
        """,
        "stream",
        "use",
        "chunks",
        "list[int]",
        "list[str]",
    ),
    bad(
        "generator-into-its-item-type",
        """
        @node(output_name="chunks")
        def stream() -> Iterator[int]:
            yield 1

        @node(output_name="out")
        def use(chunks: int) -> int:
            return chunks

        nodes = [stream, use]
        """,
        "stream",
        "use",
        "chunks",
        "list[int]",
        "int",
    ),
    ok(
        "async-generator-into-list",
        """
        @node(output_name="chunks")
        async def stream() -> AsyncIterator[str]:
            yield "a"

        @node(output_name="out")
        def use(chunks: list[str]) -> str:
            return "".join(chunks)

        nodes = [stream, use]
        """,
    ),
    # map_over: list[T] outside, T inside
    ok(
        "list-into-mapped-input",
        NESTED
        + """
        @node(output_name="x")
        def make() -> list[int]:
            return [1]

        nodes = [make, inner.as_node(map_over="x")]
        """,
    ),
    bad(
        "list-of-other-into-mapped-input",
        NESTED
        + """
        @node(output_name="x")
        def make() -> list[str]:
            return ["a"]

        nodes = [make, inner.as_node(map_over="x", name="each")]
        """,
        "make",
        "each",
        "x",
        "list[str]",
        "list[int]",
    ),
    bad(
        "item-into-mapped-input",
        NESTED
        + """
        @node(output_name="x")
        def make() -> int:
            return 1

        nodes = [make, inner.as_node(map_over="x", name="each")]
        """,
        "make",
        "each",
        "x",
        "int",
        "list[int]",
    ),
    ok(
        "mapped-output-into-list",
        NESTED
        + """
        @node(output_name="total")
        def total(y: list[float]) -> float:
            return sum(y)

        nodes = [inner.as_node(map_over="x"), total]
        """,
    ),
    bad(
        "mapped-output-into-item",
        NESTED
        + """
        @node(output_name="total")
        def total(y: int) -> int:
            return y

        nodes = [inner.as_node(map_over="x", name="each"), total]
        """,
        "each",
        "total",
        "y",
        "list[int]",
        "int",
    ),
    ok(
        "unmapped-nested-output",
        NESTED
        + """
        @node(output_name="total")
        def total(y: int) -> int:
            return y

        nodes = [inner.as_node(), total]
        """,
    ),
    # nested pipelines through their mappings
    bad(
        "input-mapping",
        NESTED
        + """
        @node(output_name="xs")
        def make() -> list[str]:
            return ["a"]

        nodes = [make, inner.as_node(input_mapping={"xs": "x"}, map_over="xs", name="each")]
        """,
        "make",
        "each",
        "xs",
        "list[str]",
        "list[int]",
    ),
    bad(
        "output-mapping",
        NESTED
        + """
        @node(output_name="total")
        def total(ys: list[str]) -> str:
            return "".join(ys)

        nodes = [inner.as_node(output_mapping={"y": "ys"}, map_over="x", name="each"), total]
        """,
        "each",
        "total",
        "ys",
        "list[int]",
        "list[str]",
    ),
    ok(
        "mappings-that-fit",
        NESTED
        + """
        @node(output_name="xs")
        def make() -> list[int]:
            return [1]

        @node(output_name="total")
        def total(ys: list[int]) -> int:
            return sum(ys)

        each = inner.as_node(
            input_mapping={"xs": "x"}, output_mapping={"y": "ys"}, map_over="xs"
        )
        nodes = [make, each, total]
        """,
    ),
    bad(
        "two-levels-of-nesting",
        NESTED
        + """
        middle = Pipeline([inner.as_node(map_over="x", name="each")], name="middle")

        @node(output_name="x")
        def make() -> list[list[str]]:
            return [["a"]]

        nodes = [make, middle.as_node(map_over="x", name="outer_each")]
        """,
        "make",
        "outer_each",
        "x",
        "list[list[str]]",
        "list[list[int]]",
    ),
    # user generics
    ok(
        "user-generic-same-args",
        """
        T = TypeVar("T")

        class Box(typing.Generic[T]): ...

        """
        + edge("Box[int]", "Box[int]"),
    ),
    bad(
        "user-generic-other-args",
        """
        T = TypeVar("T")

        class Box(typing.Generic[T]): ...

        """
        + edge("Box[int]", "Box[str]"),
        "make",
        "use",
        "v",
        "Box[int]",
        "Box[str]",
    ),
]


def test_the_table_is_large_and_mixed() -> None:
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)
    assert sum(c.clash is None for c in CASES) >= 15
    assert sum(c.clash is not None for c in CASES) >= 15


@pytest.mark.parametrize("future", [True, False], ids=["future-annotations", "eager"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_edge_cases(case: Case, future: bool) -> None:
    module = load(case.source, future=future)
    if case.clash is None:
        Pipeline(module.nodes)
        return
    with pytest.raises(TypeMismatchError) as info:
        Pipeline(module.nodes)
    err = info.value
    producer, consumer, value, produced, expected = case.clash
    assert (err.producer, err.consumer, err.value) == (producer, consumer, value)
    assert (err.produced, err.expected) == (produced, expected)
    message = str(err)
    for text in (repr(producer), repr(consumer), repr(value), produced, expected):
        assert text in message
    assert isinstance(err, PipelineDefinitionError)
    assert isinstance(err, ValueError)


# -- the message ------------------------------------------------------------------------


@node(output_name="n")
def count(text: str) -> int:
    return len(text)


@node(output_name="loud")
def shout(n: str) -> str:
    return n.upper()


def test_the_message_names_both_nodes_the_value_both_types_and_the_fix() -> None:
    with pytest.raises(TypeMismatchError) as info:
        Pipeline([count, shout])
    message = str(info.value)
    assert message.startswith("node 'count' returns 'n' as int but node 'shout' takes it as str")
    assert "check_types=False" in message


def test_the_message_says_where_nested_and_generator_types_come_from() -> None:
    module = load(CASES_BY_ID["list-of-other-into-mapped-input"].source, future=True)
    with pytest.raises(TypeMismatchError, match=r"'each' passes it to node 'per_item' inside"):
        Pipeline(module.nodes)
    module = load(CASES_BY_ID["generator-into-its-item-type"].source, future=True)
    with pytest.raises(TypeMismatchError, match=r"'stream' is a generator"):
        Pipeline(module.nodes)


@pytest.mark.parametrize("future", [True, False], ids=["future-annotations", "eager"])
def test_two_classes_of_one_name_from_two_modules_clash(future: bool) -> None:
    # Under the __future__ import both annotations are the very same string "Config":
    # the fast path must not take them for the same type.
    source = """
        class Config: ...

        @node(output_name="{output}")
        def {name}({param}) -> Config:
            return Config()
    """
    first = load(source.format(output="config", name="make", param=""), future=future)
    second = load(source.format(output="out", name="use", param="config: Config"), future=future)
    with pytest.raises(TypeMismatchError) as info:
        Pipeline([first.make, second.use])
    err = info.value
    assert err.produced == f"{first.__name__}.Config"
    assert err.expected == f"{second.__name__}.Config"


def test_the_error_pickles() -> None:
    with pytest.raises(TypeMismatchError) as info:
        Pipeline([count, shout])
    again = pickle.loads(pickle.dumps(info.value))
    assert str(again) == str(info.value)
    assert (again.producer, again.consumer, again.value) == ("count", "shout", "n")


CASES_BY_ID = {c.id: c for c in CASES}


# -- opting out, and what the flag survives ---------------------------------------------


def test_check_types_false_builds_and_runs_a_mismatched_pipeline() -> None:
    @node(output_name="loud")
    def shout_any(n: str) -> str:
        return str(n) * 2

    pipeline = Pipeline([count, shout_any], check_types=False)
    assert pipeline.check_types is False
    assert pipeline.run({"text": "ab"}) == {"n": 2, "loud": "22"}


def test_check_types_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        Pipeline([count], None, None, None, "p", False)  # type: ignore[misc]


def test_the_flag_survives_copies() -> None:
    pipeline = Pipeline([count, shout], check_types=False)
    assert copy.copy(pipeline).check_types is False
    assert pipeline.stripped().check_types is False
    assert cloudpickle.loads(cloudpickle.dumps(pipeline)).check_types is False
    assert Pipeline([count]).check_types is True


def test_an_unchecked_inner_pipeline_is_still_checked_at_its_outer_edges() -> None:
    inner = Pipeline([count, shout], check_types=False, name="inner")

    @node(output_name="size")
    def size(loud: int) -> int:
        return loud

    with pytest.raises(TypeMismatchError, match="node 'inner' returns 'loud' as str"):
        Pipeline([inner, size])
    Pipeline([inner, size], check_types=False)


def test_the_check_costs_nothing_at_run_time(monkeypatch: pytest.MonkeyPatch) -> None:
    pipeline = Pipeline([count])

    def fail(*args: Any) -> None:
        raise AssertionError("checked at run time")

    monkeypatch.setattr("hypernodes.pipeline.check_edges", fail)
    assert pipeline.run({"text": "abc"}) == {"n": 3}
    assert pipeline.map({"text": ["a", "bc"]}, map_over="text") == [{"n": 1}, {"n": 2}]


def test_a_large_chain_with_one_annotation_repeated_resolves_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The fast path: identical annotations at both ends need no typing.get_type_hints and
    # no eval; the benchmark (benchmarks/workloads/scale.py) times the 10,000-node build.
    for future in (True, False):
        source = "\n".join(
            f"@node(output_name='v{i + 1}')\ndef v{i + 1}(v{i}: int) -> int:\n    return v{i}\n"
            for i in range(2000)
        )
        module = load(
            source + "\nnodes = [v for k, v in dict(globals()).items() if k.startswith('v')]\n",
            future=future,
        )
        monkeypatch.setattr(typing, "get_type_hints", _forbidden)
        monkeypatch.setattr(hypernodes.edges, "_evaluate", _forbidden)
        pipeline = Pipeline(module.nodes)
        monkeypatch.undo()
        assert len(pipeline.nodes) == 2000


def _forbidden(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("resolved an annotation on the fast path")


# -- fits(), directly -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("src", "dst", "expected"),
    [
        (int, float, True),
        (int, complex, True),
        (float, int, False),
        (list[int], list[float], True),
        (dict[str, list[int]], dict[str, list[str]], False),
        (int | None, int, True),
        (None, type(None), True),
        (None, int, False),
        (tuple[int, ...], tuple[int, int], True),
        (tuple[int, str], tuple[int], False),
        (tuple[int, str], typing.Sequence[int], False),
        (typing.Generator[int, None, None], typing.Iterator[int], True),
        (dict[str, int], typing.Iterable[str], True),
        (dict[str, int], typing.Iterable[int], False),
        ("Unresolvable", int, True),
        (typing.ForwardRef("X"), int, True),
    ],
)
def test_fits(src: Any, dst: Any, expected: bool) -> None:
    assert fits(src, dst) is expected


@pytest.mark.parametrize(
    ("tp", "text"),
    [
        (int, "int"),
        (list[dict[str, int]], "list[dict[str, int]]"),
        (typing.Optional[int], "int | None"),  # noqa: UP045 - the typing spelling is the point
        (typing.Literal["a", 1], "Literal['a', 1]"),
        (typing.Callable[[int], str], "Callable[[int], str]"),
        (tuple[int, ...], "tuple[int, ...]"),
        (typing.List[int], "list[int]"),  # noqa: UP006 - the typing alias is the point
    ],
)
def test_type_text(tp: Any, text: str) -> None:
    assert type_text(tp) == text


# -- input_model / output_model ---------------------------------------------------------


@dataclass
class Item:
    name: str
    price: float


@node(output_name="subtotal")
def subtotal(items: list[Item], discount: float = 0.0) -> float:
    return sum(i.price for i in items) * (1 - discount)


@node(output_name="receipt")
def receipt(subtotal: float, customer: str, currency: str = "EUR") -> str:
    return f"{customer}: {subtotal:.2f} {currency}"


@node(output_name="tag")
def tag(customer, model_name: str = "small"):  # type: ignore[no-untyped-def]
    return f"{customer}/{model_name}"


def shop() -> Pipeline:
    return Pipeline([subtotal, receipt, tag], name="shop")


def test_input_model_has_required_and_optional_inputs() -> None:
    model = shop().input_model()
    assert model.__name__ == "ShopInputs"
    fields = model.model_fields
    assert set(fields) == {"items", "customer", "discount", "currency", "model_name"}
    assert fields["items"].is_required() and fields["customer"].is_required()
    assert not fields["discount"].is_required() and fields["discount"].default == 0.0
    assert fields["currency"].default == "EUR"
    assert fields["items"].annotation == list[Item]
    assert fields["customer"].annotation is str  # the annotated reader wins over `tag`


def test_input_model_validates_and_coerces() -> None:
    model = shop().input_model()
    good = model.model_validate({"items": [{"name": "a", "price": "2.5"}], "customer": "ann"})
    assert good.items == [Item("a", 2.5)]
    assert good.discount == 0.0
    pipeline = shop()
    result = pipeline.run(dict(good))
    assert result["receipt"] == "ann: 2.50 EUR"
    with pytest.raises(pydantic.ValidationError, match="customer"):
        model.model_validate({"items": []})
    with pytest.raises(pydantic.ValidationError, match="price"):
        model.model_validate({"items": [{"name": "a", "price": "cheap"}], "customer": "x"})


def test_bound_inputs_are_left_out_of_the_input_model() -> None:
    pipeline = shop().bind(customer="ann", currency="USD")
    fields = pipeline.input_model().model_fields
    assert "customer" not in fields and "currency" not in fields
    assert "items" in fields


def test_output_model_for_all_and_for_some_outputs() -> None:
    pipeline = shop()
    everything = pipeline.output_model()
    assert everything.__name__ == "ShopOutputs"
    assert set(everything.model_fields) == {"subtotal", "receipt", "tag"}
    assert everything.model_fields["tag"].annotation is Any  # unannotated
    receipt_only = pipeline.output_model("receipt")
    assert set(receipt_only.model_fields) == {"receipt"}
    assert set(pipeline.output_model(["subtotal", "receipt"]).model_fields) == {
        "subtotal",
        "receipt",
    }
    result = pipeline.run({"items": [Item("a", 1.0)], "customer": "bo"}, output_name="receipt")
    assert receipt_only.model_validate(result).receipt == "bo: 1.00 EUR"
    with pytest.raises(pydantic.ValidationError):
        receipt_only.model_validate({"receipt": 3})
    with pytest.raises(InvalidInputError, match="has no output 'nope'"):
        pipeline.output_model("nope")


def test_models_of_a_mapped_nested_pipeline_see_lists() -> None:
    module = load(CASES_BY_ID["mapped-output-into-list"].source, future=True)
    pipeline = Pipeline(module.nodes, name="outer")
    assert pipeline.input_model().model_fields["x"].annotation == list[int]
    assert pipeline.output_model("y").model_fields["y"].annotation == list[int]


def test_field_names_that_clash_with_basemodel_are_kept_through_aliases() -> None:
    @node(output_name="out")
    def odd(json: int, copy: str = "c", _private: int = 0) -> int:
        return json

    model = Pipeline([odd]).input_model()
    value = model.model_validate({"json": "3", "_private": 2})
    assert value.model_dump(by_alias=True) == {"json": 3, "copy": "c", "_private": 2}
    assert set(model.model_json_schema()["properties"]) == {"json", "copy", "_private"}


def test_a_missing_pydantic_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pydantic", None)  # makes `import pydantic` fail
    with pytest.raises(ImportError, match=r"pip install 'hypernodes\[types\]'"):
        shop().input_model()


def test_models_serve_as_fastapi_request_and_response_models() -> None:
    fastapi = pytest.importorskip("fastapi")
    testclient = pytest.importorskip("fastapi.testclient")
    pipeline = shop()
    Inputs = pipeline.input_model()
    Receipt = pipeline.output_model("receipt")
    app = fastapi.FastAPI()

    async def checkout(body: Any) -> Any:
        # dict(body), not model_dump(): the nodes get the Item objects, not dicts of them.
        return await pipeline.arun(dict(body), output_name="receipt")

    # This module's annotations are strings (from __future__): give FastAPI the classes.
    checkout.__annotations__ = {"body": Inputs, "return": Receipt}
    app.post("/checkout", response_model=Receipt)(checkout)

    with testclient.TestClient(app) as client:
        good = {"items": [{"name": "a", "price": 2}], "customer": "ann", "currency": "USD"}
        response = client.post("/checkout", json=good)
        assert response.status_code == 200, response.text
        assert response.json() == {"receipt": "ann: 2.00 USD"}
        response = client.post("/checkout", json={"items": "nope", "customer": "ann"})
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["body", "items"]
        schema = client.get("/openapi.json").json()["components"]["schemas"]
        assert {"ShopInputs", "ShopOutputs"} <= set(schema)


# -- validate_inputs (what `hypernodes run --inputs` uses) ------------------------------


def test_validate_inputs_coerces_and_passes_the_rest_through() -> None:
    checked = validate_inputs(shop(), {"customer": "ann", "discount": "0.5", "whatever": 1})
    assert checked == {"customer": "ann", "discount": 0.5, "whatever": 1}


def test_validate_inputs_names_the_input_in_one_line() -> None:
    with pytest.raises(InvalidInputError) as info:
        validate_inputs(shop(), {"discount": "half"})
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("input 'discount' should be float, got 'half'")


def test_validate_inputs_checks_mapped_inputs_as_lists() -> None:
    with pytest.raises(InvalidInputError, match=r"input 'customer' should be list\[str\]"):
        validate_inputs(shop(), {"customer": ["a", 3]}, map_over=["customer"])
    assert validate_inputs(shop(), {"customer": ["a", "b"]}, map_over=["customer"]) == {
        "customer": ["a", "b"]
    }


def test_validate_inputs_leaves_types_pydantic_cannot_check_to_the_run() -> None:
    class Opaque:
        pass

    @node(output_name="out")
    def use(thing: Opaque) -> int:
        return 1

    assert validate_inputs(Pipeline([use]), {"thing": {"a": 1}}) == {"thing": {"a": 1}}


# -- the CLI ----------------------------------------------------------------------------

FLOWS = """
from dataclasses import dataclass

from hypernodes import Pipeline, node


class Opaque:
    pass


@node(output_name="total")
def add(x: int, y: int = 2) -> int:
    return x + y


@node(output_name="label")
def label(total: int, prefix: str = "n=", extra: Opaque | None = None) -> str:
    return f"{prefix}{total}"


pipeline = Pipeline([add, label], name="math")
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / "flows_types.py").write_text(FLOWS, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        file = getattr(sys.modules[name], "__file__", None) or ""
        if file.startswith(str(tmp_path)):
            del sys.modules[name]


def invoke(*args: str) -> Any:
    from click.testing import CliRunner

    from hypernodes.cli.app import cli

    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_inspect_json_includes_the_json_schemas(project: Path) -> None:
    result = invoke("inspect", "flows_types.py:pipeline", "--json")
    assert result.exit_code == 0, result.stderr
    info = json.loads(result.stdout)
    inputs = info["input_schema"]
    assert inputs["title"] == "MathInputs"
    assert inputs["required"] == ["x"]
    assert inputs["properties"]["x"]["type"] == "integer"
    assert inputs["properties"]["y"]["default"] == 2
    assert "extra" in inputs["properties"]  # a class JSON Schema cannot describe: left open
    outputs = info["output_schema"]
    assert outputs["required"] == ["total", "label"]
    assert outputs["properties"]["label"]["type"] == "string"


def test_inspect_text_has_no_schemas(project: Path) -> None:
    result = invoke("inspect", "flows_types.py:pipeline")
    assert result.exit_code == 0, result.stderr
    assert "input_schema" not in result.stdout


def test_run_coerces_inputs_to_their_annotations(project: Path) -> None:
    result = invoke("run", "flows_types.py:pipeline", "--inputs", '{"x": "3"}')
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"total": 5, "label": "n=5"}


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ("--inputs", '{"x": "abc"}'),
            "hypernodes: error: input 'x' should be int, got 'abc': Input should be a valid "
            "integer, unable to parse string as an integer",
        ),
        (
            ("--inputs", '{"x": 1, "prefix": 5}'),
            "hypernodes: error: input 'prefix' should be str, got 5: Input should be a valid "
            "string",
        ),
        (
            ("--inputs", '{"x": [1, "b"]}', "--map-over", "x"),
            "hypernodes: error: input 'x' should be list[int], got [1, 'b'] (at x[1]): Input "
            "should be a valid integer, unable to parse string as an integer",
        ),
    ],
    ids=["wrong-type", "optional-input", "mapped"],
)
def test_run_reports_a_mismatched_input_in_one_line(
    project: Path, args: tuple[str, ...], line: str
) -> None:
    result = invoke("run", "flows_types.py:pipeline", *args)
    assert result.exit_code == 2
    assert result.stdout == ""
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("hypernodes: error:")]
    assert errors == [line]
    assert "Traceback" not in result.stderr


# -- what the README and docs/types.md show ---------------------------------------------

ROOT = Path(__file__).resolve().parent.parent


def _python_blocks(path: Path, heading: str) -> list[str]:
    text = path.read_text(encoding="utf-8")
    section = text[text.index(heading) :]
    section = section[: section.find("\n## ", len(heading))]
    blocks = section.split("```python\n")[1:]
    return [block[: block.index("\n```")] for block in blocks]


def test_the_readme_error_example_is_what_the_check_says() -> None:
    example = _python_blocks(ROOT / "README.md", "## Types")[0]
    namespace: dict[str, Any] = {"node": node, "Pipeline": Pipeline}
    with pytest.raises(TypeMismatchError) as info:
        exec(compile(example, "README.md", "exec", dont_inherit=True), namespace)
    shown = [line.removeprefix("# ") for line in example.splitlines() if line.startswith("# ")]
    assert " ".join(shown) == f"TypeMismatchError: {info.value}"


@pytest.mark.parametrize("doc", ["README.md", "docs/types.md"])
def test_the_fastapi_example_runs_as_written(doc: str) -> None:
    fastapi = pytest.importorskip("fastapi")
    testclient = pytest.importorskip("fastapi.testclient")

    @node(output_name="summary")
    def summarize(text: str, lang: str = "en") -> str:
        return f"{lang}: {text[:5]}"

    pipeline = Pipeline([summarize], name="summaries")
    heading = "## Types" if doc == "README.md" else "## Models of the inputs and outputs"
    example = next(b for b in _python_blocks(ROOT / doc, heading) if "@app.post" in b)
    namespace: dict[str, Any] = {"pipeline": pipeline, "app": fastapi.FastAPI()}
    exec(compile(example, doc, "exec", dont_inherit=True), namespace)
    with testclient.TestClient(namespace["app"]) as client:
        response = client.post("/summary", json={"text": "hello world"})
        assert response.status_code == 200, response.text
        assert response.json() == {"summary": "en: hello"}
        assert client.post("/summary", json={"lang": "fr"}).status_code == 422
