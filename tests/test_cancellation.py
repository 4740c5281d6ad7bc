"""Cancellation bookkeeping: what a failed or cancelled run leaves on the caller's task."""

from __future__ import annotations

import asyncio

import pytest

from hypernodes import HyperNodesEngine, NodeError, Pipeline, node


@node(output_name="y")
async def second_fails(x: int) -> int:
    await asyncio.sleep(0.01 * x)
    if x == 2:
        raise ValueError("item 2 fails")
    return x


@node(output_name="z")
def plus_one(y: int) -> int:
    return y + 1


EXECUTORS = ["sequential", "async", "threaded"]


@pytest.mark.asyncio
@pytest.mark.parametrize("map_executor", [*EXECUTORS, "parallel"])
@pytest.mark.parametrize("node_executor", EXECUTORS)
async def test_failed_runs_leave_no_cancel_request_on_the_callers_task(
    node_executor: str, map_executor: str
) -> None:
    engine = HyperNodesEngine(node_executor=node_executor, map_executor=map_executor)
    with engine:
        pipeline = Pipeline([second_fails, plus_one], engine=engine)
        task = asyncio.current_task()
        assert task is not None
        for _ in range(3):
            with pytest.raises(NodeError, match="second_fails"):
                await pipeline.amap({"x": [1, 2, 3, 4]}, map_over="x")
            with pytest.raises(NodeError, match="second_fails"):
                await pipeline.arun({"x": 2})
        assert task.cancelling() == 0
        # and the task is still usable: nothing cancels the next await
        assert await pipeline.arun({"x": 1}) == {"y": 1, "z": 2}
