"""Maps that keep going, maps that stream, inputs of any length (DESIGN.md section 6)."""

from __future__ import annotations

import asyncio
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import cloudpickle
import pytest

from hypernodes import (
    HyperNodesEngine,
    InvalidInputError,
    ItemFailure,
    MapResult,
    NodeError,
    Pipeline,
    PipelineCallback,
    node,
)

cloudpickle.register_pickle_by_value(sys.modules[__name__])


class Unlucky(Exception):
    """Raised by every 97th item."""


@node(output_name="y")
def every_97th_fails(x: int) -> int:
    if x % 97 == 0:
        raise Unlucky(f"item {x}")
    return x * 2


@node(output_name="z")
def plus_one(y: int) -> int:
    return y + 1


def _check_collected(results: list[Any], n: int = 1000) -> None:
    assert isinstance(results, MapResult)
    failed = [k for k in range(n) if k % 97 == 0]
    assert [f.index for f in results.failures] == failed and len(failed) == -(-n // 97)
    assert not results.ok
    for f in results.failures:
        assert results[f.index] is f and f.inputs == {"x": f.index}
        assert isinstance(f.error, NodeError) and f.error.node == "every_97th_fails"
        assert isinstance(f.error.__cause__, Unlucky)
        assert str(f.error.__cause__) == f"item {f.index}" and f.error.item_index == f.index
    good = [r for r in results if type(r) is not ItemFailure]
    assert len(good) == n - len(failed)
    assert all(results[k] == {"y": 2 * k, "z": 2 * k + 1} for k in range(n) if k % 97)


EXECUTORS = ["sequential", "async", "threaded", "parallel"]


@pytest.mark.parametrize("executor", EXECUTORS)
def test_collect_keeps_going_past_every_failure(executor: str) -> None:
    engine = HyperNodesEngine(map_executor=executor, max_workers=2)
    try:
        pipe = Pipeline([every_97th_fails, plus_one], engine=engine)
        results = pipe.map(inputs={"x": list(range(1000))}, map_over="x", on_error="collect")
    finally:
        engine.close()
    _check_collected(results)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_collect_with_amap_and_callbacks(executor: str) -> None:
    seen: list[tuple[int, bool]] = []

    class Items(PipelineCallback):
        def on_map_item_end(self, *, index: int, error: BaseException | None, **_: Any) -> None:
            seen.append((index, error is not None))

    engine = HyperNodesEngine(map_executor=executor, max_workers=2)
    try:
        pipe = Pipeline([every_97th_fails, plus_one], engine=engine, callbacks=[Items()])
        results = asyncio.run(
            pipe.amap(inputs={"x": list(range(300))}, map_over="x", on_error="collect")
        )
    finally:
        engine.close()
    _check_collected(results, 300)
    assert sorted(seen) == [(k, k % 97 == 0) for k in range(300)]


def test_collect_nested_two_deep_hands_the_outer_pipeline_item_failures() -> None:
    inner = Pipeline([every_97th_fails, plus_one], name="inner")
    middle = Pipeline([inner.as_node(map_over="x", name="each", on_error="collect")], name="middle")

    @node(output_name="counted")
    def count(z: list[Any]) -> tuple[int, int]:
        failures = [r for r in z if type(r) is ItemFailure]
        return len(z) - len(failures), len(failures)

    outer = Pipeline([middle.as_node(name="mid"), count])
    result = outer.run(inputs={"x": list(range(1000))})
    assert result["counted"] == (989, 11)
    failure = next(r for r in result["z"] if type(r) is ItemFailure)
    assert failure.index == 0 and isinstance(failure.error.__cause__, Unlucky)


def test_raise_is_still_the_default() -> None:
    with pytest.raises(NodeError) as info:
        Pipeline([every_97th_fails]).map(inputs={"x": list(range(1, 200))}, map_over="x")
    assert info.value.item_index == 96 and isinstance(info.value.__cause__, Unlucky)


def test_bad_on_error_and_window_are_named() -> None:
    pipe = Pipeline([plus_one])
    with pytest.raises(InvalidInputError, match=r"on_error must be 'raise'.*or 'collect'"):
        pipe.map(inputs={"y": [1]}, map_over="y", on_error="ignore")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="window must be an int >= 1"):
        list(pipe.map_iter(inputs={"y": [1]}, map_over="y", window=0))
    with pytest.raises(InvalidInputError, match="on_error must be"):
        pipe.as_node(map_over="y", on_error="skip")  # type: ignore[arg-type]


def test_the_progress_bar_counts_failed_items() -> None:
    import io

    from hypernodes import ProgressCallback

    out = io.StringIO()
    pipe = Pipeline(
        [every_97th_fails],
        callbacks=[ProgressCallback(backend="tqdm", file=out, min_interval=0)],
    )
    pipe.map(inputs={"x": list(range(200))}, map_over="x", on_error="collect")
    assert "failed=3" in out.getvalue()


# -- streams ---------------------------------------------------------------------------


@node(output_name="waited")
async def wait_reverse(x: int, n: int) -> int:
    await asyncio.sleep(0.01 * (n - x))  # the last item finishes first
    return x


@pytest.mark.asyncio
async def test_amap_iter_yields_in_completion_order_or_in_input_order() -> None:
    pipe = Pipeline([wait_reverse], engine=HyperNodesEngine(map_executor="async"))
    n = 10
    order = [i async for i, _ in pipe.amap_iter(inputs={"x": range(n), "n": n}, map_over="x")]
    assert order == list(reversed(range(n)))
    began = time.monotonic()
    stamps: list[tuple[int, float]] = []
    async for i, result in pipe.amap_iter(
        inputs={"x": range(n), "n": n}, map_over="x", ordered=True
    ):
        assert result == {"waited": i}
        stamps.append((i, time.monotonic() - began))
    assert [i for i, _ in stamps] == list(range(n))
    # Item 0 is the slowest (0.1 s): in order, nothing can come before it...
    assert stamps[0][1] >= 0.09


@pytest.mark.asyncio
async def test_the_first_result_arrives_before_the_slowest_item_ends() -> None:
    @node(output_name="y")
    async def slow_first(x: int) -> int:
        await asyncio.sleep(0.5 if x == 0 else 0.01)
        return x

    pipe = Pipeline([slow_first], engine=HyperNodesEngine(map_executor="async"))
    began = time.monotonic()
    stream = pipe.amap_iter(inputs={"x": range(20)}, map_over="x", ordered=True, window=40)
    first = await stream.__anext__()
    assert first == (0, {"y": 0})  # ordered: item 0 first, at ~0.5 s
    await stream.aclose()
    stream = pipe.amap_iter(inputs={"x": range(20)}, map_over="x")
    index, _ = await stream.__anext__()
    assert index != 0 and time.monotonic() - began < 0.5 + 0.3
    await stream.aclose()


def _counting(n: int, stats: dict[str, int]) -> Iterator[int]:
    try:
        for i in range(n):
            stats["read"] += 1
            yield i
    finally:
        stats["closed"] += 1


@pytest.mark.parametrize("executor", ["sequential", "async", "threaded"])
def test_map_iter_reads_at_most_window_ahead(executor: str) -> None:
    stats = {"read": 0, "closed": 0}
    engine = HyperNodesEngine(map_executor=executor, max_workers=2)
    ahead = 0
    consumed = 0
    try:
        pipe = Pipeline([plus_one], engine=engine)
        for _, result in pipe.map_iter(
            inputs={"y": _counting(2000, stats)}, map_over="y", window=16
        ):
            consumed += 1
            ahead = max(ahead, stats["read"] - consumed)
            assert result["z"] >= 1
    finally:
        engine.close()
    assert consumed == 2000 and stats["closed"] == 1
    assert ahead <= 16


@pytest.mark.parametrize("executor", ["async", "threaded", "parallel"])
def test_breaking_out_stops_the_map(executor: str) -> None:
    started: list[int] = []
    stats = {"read": 0, "closed": 0}

    @node(output_name="y")
    def slow(x: int) -> int:
        started.append(x)
        time.sleep(0.02)
        return x

    @node(output_name="y")
    async def aslow(x: int) -> int:
        started.append(x)
        await asyncio.sleep(0.02)
        return x

    body = aslow if executor == "async" else slow
    engine = HyperNodesEngine(map_executor=executor, max_workers=2)
    before = threading.active_count()
    try:
        pipe = Pipeline([body], engine=engine)
        got = []
        for index, _ in pipe.map_iter(inputs={"x": _counting(10_000, stats)}, map_over="x"):
            got.append(index)
            if len(got) == 10:
                break
        time.sleep(0.2)
        if executor != "parallel":
            count = len(started)
            time.sleep(0.2)
            assert len(started) == count  # nothing starts after the break
            assert count < 40
        assert stats["closed"] == 1 and stats["read"] < 60
    finally:
        engine.close()
    time.sleep(0.1)
    assert threading.active_count() <= before + 1


@pytest.mark.asyncio
async def test_cancelling_the_consumer_stops_the_map() -> None:
    started: list[int] = []
    stats = {"read": 0, "closed": 0}

    @node(output_name="y")
    async def aslow(x: int) -> int:
        started.append(x)
        await asyncio.sleep(0.05)
        return x

    pipe = Pipeline([aslow], engine=HyperNodesEngine(map_executor="async", max_concurrent=8))
    got: list[int] = []

    async def consume() -> None:
        async for index, _ in pipe.amap_iter(inputs={"x": _counting(10_000, stats)}, map_over="x"):
            got.append(index)

    task = asyncio.create_task(consume())
    while len(got) < 10:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    count = len(started)
    await asyncio.sleep(0.2)
    assert len(started) == count and stats["closed"] == 1
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


# -- inputs of any length --------------------------------------------------------------------


def test_map_reads_a_generator_lazily_and_returns_a_list() -> None:
    stats = {"read": 0, "closed": 0}
    results = Pipeline([plus_one]).map(inputs={"y": _counting(5, stats)}, map_over="y")
    assert results == [{"z": k + 1} for k in range(5)]
    assert stats == {"read": 5, "closed": 1}


async def _arange(n: int) -> AsyncIterator[int]:
    for i in range(n):
        await asyncio.sleep(0)
        yield i


@pytest.mark.asyncio
@pytest.mark.parametrize("executor", ["sequential", "async", "threaded", "parallel"])
async def test_amap_over_an_async_iterable(executor: str) -> None:
    engine = HyperNodesEngine(map_executor=executor, max_workers=2)
    try:
        pipe = Pipeline([plus_one], engine=engine)
        results = await pipe.amap(inputs={"y": _arange(50)}, map_over="y")
        pairs = [p async for p in pipe.amap_iter(inputs={"y": _arange(50)}, map_over="y")]
    finally:
        await engine.aclose()
    assert results == [{"z": k + 1} for k in range(50)]
    assert sorted(pairs, key=lambda p: p[0]) == [(k, {"z": k + 1}) for k in range(50)]


def test_zip_of_lazy_inputs_of_different_lengths_is_named() -> None:
    @node(output_name="s")
    def add(a: int, b: int) -> int:
        return a + b

    with pytest.raises(InvalidInputError, match=r"different lengths.*'b' ended after 3"):
        Pipeline([add]).map(inputs={"a": iter(range(5)), "b": iter(range(3))}, map_over=["a", "b"])
    results = Pipeline([add]).map(
        inputs={"a": iter(range(3)), "b": [10, 20, 30]}, map_over=["a", "b"]
    )
    assert [r["s"] for r in results] == [10, 21, 32]


def test_lazy_collect_and_iter_on_the_loop_free_path() -> None:
    pairs = list(
        Pipeline([every_97th_fails]).map_iter(
            inputs={"x": (i for i in range(200))}, map_over="x", on_error="collect"
        )
    )
    assert [i for i, _ in pairs] == list(range(200))
    assert [i for i, r in pairs if type(r) is ItemFailure] == [0, 97, 194]


def test_daft_collects_and_streams() -> None:
    pytest.importorskip("daft")
    from hypernodes.engines import DaftEngine

    pipe = Pipeline([every_97th_fails, plus_one], engine=DaftEngine())
    results = pipe.map(inputs={"x": list(range(200))}, map_over="x", on_error="collect")
    _check_collected(results, 200)
    pairs = list(pipe.map_iter(inputs={"x": range(1, 50)}, map_over="x", window=10))
    assert [i for i, _ in pairs] == list(range(49))


@pytest.mark.slow
def test_a_five_million_item_generator_streams_in_bounded_memory(run_python: Any) -> None:
    code = textwrap.dedent(
        """
        import resource
        from hypernodes import Pipeline, node

        @node(output_name="y")
        def double(x: int) -> int:
            return 2 * x

        read = 0
        def items():
            global read
            for i in range(5_000_000):
                read += 1
                yield i

        def peak_kib():
            for line in open("/proc/self/status"):
                if line.startswith("VmHWM"):
                    return int(line.split()[1])

        before = peak_kib()
        consumed = ahead = 0
        for _, result in Pipeline([double]).map_iter(
            inputs={"x": items()}, map_over="x", window=64
        ):
            consumed += 1
            ahead = max(ahead, read - consumed)
        print(consumed, ahead, (peak_kib() - before) // 1024)
        """
    )
    proc = run_python(code, timeout=240)
    consumed, ahead, grew_mib = map(int, proc.stdout.split())
    assert consumed == 5_000_000 and ahead <= 64
    assert grew_mib < 50
