"""Bad input at the public entry points: one clear error naming the problem, never a raw
internal one (a TypeError from difflib, 'NoneType' object is not iterable)."""

from __future__ import annotations

from typing import Any

import pytest

from hypernodes import InvalidInputError, Pipeline, node


@node(output_name="y")
def double(x: int) -> int:
    return 2 * x


@pytest.fixture
def pipeline() -> Pipeline:
    return Pipeline([double])


@pytest.mark.parametrize("entry", ["run", "map"])
def test_a_non_string_input_name_is_named(pipeline: Pipeline, entry: str) -> None:
    call: Any = pipeline.run if entry == "run" else pipeline.map
    kwargs = {} if entry == "run" else {"map_over": "x"}
    with pytest.raises(InvalidInputError, match=r"input names must be strings, got 1 \(int\)"):
        call({1: 2}, **kwargs)


async def _arun_with_int_key(pipeline: Pipeline) -> None:
    await pipeline.arun({("x",): 2})  # type: ignore[dict-item]


@pytest.mark.asyncio
async def test_a_non_string_input_name_is_named_by_arun(pipeline: Pipeline) -> None:
    with pytest.raises(InvalidInputError, match=r"got \('x',\) \(tuple\)"):
        await _arun_with_int_key(pipeline)


def test_a_missing_map_over_is_named(pipeline: Pipeline) -> None:
    with pytest.raises(TypeError, match=r"map\(\) needs map_over: .*map_over='x'"):
        pipeline.map({"x": [1, 2]}, map_over=None)  # type: ignore[arg-type]


@pytest.mark.parametrize("map_over", [5, [], b"x", {"x": 1}, ["x", 3]])
def test_a_bad_map_over_is_named(pipeline: Pipeline, map_over: Any) -> None:
    with pytest.raises(InvalidInputError, match="map_over must name one or more inputs") as info:
        pipeline.map({"x": [1, 2]}, map_over=map_over)
    assert repr(map_over) in str(info.value)


def test_a_bad_map_over_in_as_node_is_named(pipeline: Pipeline) -> None:
    with pytest.raises(InvalidInputError, match="map_over must name one or more inputs"):
        pipeline.as_node(map_over=5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("source", "shown"),
    [("def f(x, **kw): return x", r"takes \*\*kw"), ("def f(*args): return 1", r"takes \*args")],
)
def test_star_parameters_are_named_as_written(source: str, shown: str) -> None:
    namespace: dict[str, Any] = {}
    exec(source, namespace)
    with pytest.raises(TypeError, match=shown + "; a node's inputs are its named parameters"):
        node(namespace["f"])
