"""One contract over every executor: same results whatever runs the nodes or the items.

Every executor (the aliases and executor instances) is used in each role (node_executor,
map_executor) on a pipeline that mixes sync and async nodes, tuple outputs, defaults and
an override, through run, arun, map and amap.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Iterator
from typing import Any

import pytest

from hypernodes import HyperNodesEngine, Pipeline, node
from hypernodes.executors import AsyncExecutor
from hypernodes.executors.workers import spawn_safe_context

# Module-level nodes: importable by name in worker processes.


@node(output_name=("total", "diff"))
def split(x: int, y: int = 10) -> tuple[int, int]:
    return x + y, x - y


@node
async def scaled(total: int, factor: int = 3) -> int:
    await asyncio.sleep(0)
    return total * factor


@node
def label(scaled: int, diff: int, prefix: str = "r") -> str:
    return f"{prefix}{scaled}:{diff}"


@node
async def echo(x: int) -> int:
    return x


def expected(x: int, y: int = 10, factor: int = 3, prefix: str = "r") -> dict[str, Any]:
    total, diff = x + y, x - y
    return {
        "total": total,
        "diff": diff,
        "scaled": total * factor,
        "label": f"{prefix}{total * factor}:{diff}",
        "echo": x,
    }


@pytest.fixture(scope="module")
def thread_pool() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    pool = concurrent.futures.ThreadPoolExecutor(3, thread_name_prefix="contract")
    yield pool
    pool.shutdown()


@pytest.fixture(scope="module")
def process_pool() -> Iterator[concurrent.futures.ProcessPoolExecutor]:
    pool = concurrent.futures.ProcessPoolExecutor(2, mp_context=spawn_safe_context())
    yield pool
    pool.shutdown()


@pytest.fixture(scope="module")
def async_executor() -> Iterator[AsyncExecutor]:
    executor = AsyncExecutor(max_concurrent=4)
    yield executor
    executor.shutdown()


EXECUTORS = [
    "sequential",
    "async",
    "threaded",
    "parallel",
    "ThreadPoolExecutor",
    "AsyncExecutor",
    "ProcessPoolExecutor",
]


@pytest.fixture(params=EXECUTORS)
def executor(request: pytest.FixtureRequest) -> Any:
    name = request.param
    fixtures = {
        "ThreadPoolExecutor": "thread_pool",
        "AsyncExecutor": "async_executor",
        "ProcessPoolExecutor": "process_pool",
    }
    if name in fixtures:
        return request.getfixturevalue(fixtures[name])
    return name


@pytest.fixture(params=["node_executor", "map_executor"])
def engine(request: pytest.FixtureRequest, executor: Any) -> Iterator[HyperNodesEngine]:
    with HyperNodesEngine(**{request.param: executor}, max_workers=2) as engine:
        yield engine


@pytest.fixture
def pipeline(engine: HyperNodesEngine) -> Pipeline:
    return Pipeline([split, scaled, label, echo], engine=engine, name="contract")


def test_run(pipeline: Pipeline) -> None:
    assert pipeline.run({"x": 5}) == expected(5)
    assert pipeline.run({"x": 5, "y": 1, "prefix": "p"}) == expected(5, y=1, prefix="p")


def test_run_selected_outputs_and_override(pipeline: Pipeline) -> None:
    assert pipeline.run({"x": 2}, output_name="label") == {"label": expected(2)["label"]}
    # An intermediate value supplied as input overrides its producer.
    result = pipeline.run({"x": 2, "scaled": 100}, output_name=["label", "diff"])
    assert result == {"label": "r100:-8", "diff": -8}


def test_arun(pipeline: Pipeline) -> None:
    async def main() -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(pipeline.arun({"x": i}) for i in range(4))))

    assert asyncio.run(main()) == [expected(i) for i in range(4)]


def test_map_zip(pipeline: Pipeline) -> None:
    xs, ys = [1, 2, 3, 4, 5], [5, 4, 3, 2, 1]
    results = pipeline.map({"x": xs, "y": ys, "factor": 2}, ["x", "y"])
    assert results == [expected(x, y, factor=2) for x, y in zip(xs, ys, strict=True)]


def test_map_product_with_output_name(pipeline: Pipeline) -> None:
    results = pipeline.map(
        {"x": [1, 2], "factor": [1, 10, 100]}, ["x", "factor"], "product", output_name="scaled"
    )
    assert results == [
        {"scaled": expected(x, factor=f)["scaled"]} for x in (1, 2) for f in (1, 10, 100)
    ]


def test_amap(pipeline: Pipeline) -> None:
    async def main() -> list[dict[str, Any]]:
        return await pipeline.amap({"x": list(range(7))}, "x")

    assert asyncio.run(main()) == [expected(i) for i in range(7)]


def test_empty_map(pipeline: Pipeline) -> None:
    assert pipeline.map({"x": []}, "x") == []


def test_nested_pipeline_inherits_the_engine(pipeline: Pipeline, engine: HyperNodesEngine) -> None:
    inner = pipeline.as_node(name="inner", output_mapping={"label": "inner_label"})
    mapped = Pipeline([split, scaled, label], name="items").as_node(
        name="per_item",
        input_mapping={"xs": "x"},
        output_mapping={"scaled": "all_scaled"},
        map_over="xs",
    )
    outer = Pipeline([inner, mapped], engine=engine, name="outer")
    result = outer.run({"x": 3, "xs": [1, 2, 3]})
    assert result == {
        "inner_label": expected(3)["label"],
        "all_scaled": [expected(i)["scaled"] for i in (1, 2, 3)],
    }


def test_aliases_are_one_registry_row_each() -> None:
    from hypernodes.executors import ALIASES
    from hypernodes.executors.pools import REGISTRY, PoolSet
    from hypernodes.executors.workers import resolve_lane

    assert tuple(row.name for row in REGISTRY) == ALIASES
    assert ALIASES == ("sequential", "async", "threaded", "parallel", "dask", "ray")
    pools = PoolSet(max_workers=3, threads_default=5)
    try:
        for row in REGISTRY:
            if row.name in ("dask", "ray"):
                continue  # a cluster each: their own test files resolve them
            lane = resolve_lane(row.name, pools=pools, max_concurrent=7, role="node_executor")
            assert (lane.kind, lane.name) == (row.lane, row.name)
            if row.pool is None:
                assert lane.executor is None
                assert lane.width == (1 if row.lane == "sequential" else 7)
            else:
                assert lane.executor is pools.get(row.pool.kind)
                assert lane.width == 3  # a pool's size (max_workers), not max_concurrent
    finally:
        pools.close()
