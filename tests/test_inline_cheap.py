"""Cheap sync bodies run inline (``HyperNodesEngine(inline_below=...)``, layers/place.py).

Where a body ran is recorded by thread id: the loop's own thread means inline.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from typing import Any

import pytest

from hypernodes import HyperNodesEngine, Pipeline, node
from hypernodes.config import INLINE_BELOW
from hypernodes.errors import ConfigError
from hypernodes.layers.place import PROMOTE, Gauge


def _recorder() -> tuple[list[int], Any]:
    where: list[int] = []

    @node(output_name="y")
    def cheap(x: int) -> int:
        where.append(threading.get_ident())
        return x + 1

    return where, cheap


async def _calls(pipeline: Pipeline, n: int) -> int:
    """Run ``n`` times from this loop; the loop's thread id."""
    for i in range(n):
        assert await pipeline.arun({"x": i}) == {"y": i + 1}
    return threading.get_ident()


@pytest.mark.asyncio
async def test_a_cheap_node_runs_inline_after_it_was_measured_in_threads() -> None:
    where, cheap = _recorder()
    async with HyperNodesEngine(node_executor="async") as engine:
        loop_thread = await _calls(Pipeline([cheap], engine=engine), PROMOTE + 20)
        assert engine.inlined.keys() == {"cheap"}
        assert 0 <= engine.inlined["cheap"] < INLINE_BELOW
    assert loop_thread not in where[:PROMOTE]  # measured in worker threads first
    assert where[PROMOTE + 2 :] == [loop_thread] * 18  # then inline (a lost count may lag)


@pytest.mark.asyncio
async def test_a_node_over_the_bound_never_runs_inline() -> None:
    where: list[int] = []

    @node(output_name="y")
    def slowish(x: int) -> int:
        where.append(threading.get_ident())
        time.sleep(0.002)  # 100 times the default bound
        return x + 1

    async with HyperNodesEngine(node_executor="async") as engine:
        loop_thread = await _calls(Pipeline([slowish], engine=engine), 30)
        assert engine.inlined == {}
    assert loop_thread not in where


@pytest.mark.asyncio
@pytest.mark.parametrize(("every", "inlined"), [(3, False), (5, True)])
async def test_a_body_slow_in_threads_now_and_then_is_inlined_only_if_rarely(
    every: int, inlined: bool
) -> None:
    # (In a busy pool a cheap body may wait for the GIL mid-run: one run in five over
    # the bound still promotes it; one in three does not.)
    count = 0
    loop_thread = threading.get_ident()

    @node(output_name="y")
    def sometimes(x: int) -> int:
        nonlocal count
        count += 1
        if count % every == 0 and threading.get_ident() != loop_thread:
            time.sleep(0.002)
        return x + 1

    async with HyperNodesEngine(node_executor="async", inline_below=0.0005) as engine:
        await _calls(Pipeline([sometimes], engine=engine), 10 * PROMOTE)
        assert ("sometimes" in engine.inlined) is inlined


@pytest.mark.asyncio
async def test_inline_below_zero_keeps_every_sync_body_off_the_loop() -> None:
    where, cheap = _recorder()
    async with HyperNodesEngine(node_executor="async", inline_below=0) as engine:
        loop_thread = await _calls(Pipeline([cheap], engine=engine), 40)
        assert engine.inlined == {}
    assert len(where) == 40 and loop_thread not in where


def _compute(seconds: float) -> None:
    """Busy for ``seconds`` of this thread's CPU time."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


@pytest.mark.asyncio
async def test_a_node_that_turns_costly_goes_back_to_threads(
    caplog: pytest.LogCaptureFixture,
) -> None:
    where: list[int] = []
    costly = threading.Event()

    @node(output_name="y")
    def turns(x: int) -> int:
        where.append(threading.get_ident())
        if costly.is_set():
            _compute(0.03)  # over 50 times the bound, computing
        return x + 1

    async with HyperNodesEngine(node_executor="async", inline_below=0.0005) as engine:
        pipeline = Pipeline([turns], engine=engine)
        loop_thread = await _calls(pipeline, PROMOTE + 4)
        assert where[-1] == loop_thread and "turns" in engine.inlined
        costly.set()
        where.clear()
        with caplog.at_level(logging.INFO, logger="hypernodes"):
            await _calls(pipeline, 4)
        assert engine.inlined == {}
        costly.clear()
        await _calls(pipeline, 2 * PROMOTE)  # cheap again: still never inline
    # The costly run held the loop once (up to three times when the OS preempted it on
    # a busy machine: its coarse CPU count is then only a strike); threads from then on.
    held = where.index(next(w for w in where if w != loop_thread))
    assert 1 <= held <= 3 and where[:held] == [loop_thread] * held
    assert loop_thread not in where[held:]
    assert "node 'turns', inlined as cheap, took" in caplog.text
    assert "runs in worker threads from now on" in caplog.text


@pytest.mark.asyncio
async def test_a_node_that_starts_waiting_goes_back_after_three_waits() -> None:
    where: list[int] = []
    waits = threading.Event()

    @node(output_name="y")
    def turns(x: int) -> int:
        where.append(threading.get_ident())
        if waits.is_set():
            time.sleep(0.005)  # waiting (no CPU): a strike per run, not at once
        return x + 1

    async with HyperNodesEngine(node_executor="async", inline_below=0.0005) as engine:
        pipeline = Pipeline([turns], engine=engine)
        loop_thread = await _calls(pipeline, PROMOTE + 4)
        waits.set()
        where.clear()
        await _calls(pipeline, 6)
        assert engine.inlined == {}
    assert where[:3] == [loop_thread] * 3
    assert loop_thread not in where[3:]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("every", "over"),
    [
        # A wait now and then: usually the OS or another thread taking the CPU.
        (40, lambda: time.sleep(0.002)),
        # A lone run computing over the bound (3 times it), one run in four: a trivial
        # body sometimes takes 20-60 us that are not its own (an interrupt, a
        # hypervisor's pause); alone, between runs under the bound, such a run is no
        # strike, or a long-running service would send its cheap nodes back one day.
        (4, lambda: _compute(0.0015)),
    ],
    ids=["a-wait", "computing"],
)
async def test_a_lone_run_over_the_bound_now_and_then_is_forgiven(every: int, over: Any) -> None:
    where: list[int] = []
    count = 0

    @node(output_name="y")
    def cheap(x: int) -> int:
        nonlocal count
        count += 1
        where.append(threading.get_ident())
        if count > PROMOTE + 4 and count % every == 0:
            over()
        return x + 1

    async with HyperNodesEngine(node_executor="async", inline_below=0.0005) as engine:
        loop_thread = await _calls(Pipeline([cheap], engine=engine), 200)
        assert "cheap" in engine.inlined
    assert where[-1] == loop_thread


def test_runs_computing_over_the_bound_in_a_row_strike_from_the_first() -> None:
    # (The rule itself, without a clock: an engine's runs are timed by the machine.)
    bound = 0.001
    gauge = Gauge("n")
    gauge.inline, gauge.bound = True, bound
    over = 3 * bound  # computing, not far over the bound (50 times)
    gauge.over(over, over, False, False)
    assert gauge.strikes == 0 and gauge.inline  # a lone run over: not yet a strike
    gauge.passed()
    gauge.over(over, over, False, False)
    assert gauge.strikes == 0 and gauge.inline  # alone again, after a run under
    gauge.over(over, over, False, False)
    assert gauge.strikes == 2 and gauge.inline  # the second in a row: both count
    gauge.over(over, over, False, False)
    assert gauge.strikes == 3 and not gauge.inline and gauge.done  # back for good

    waits = Gauge("w")
    waits.inline, waits.bound = True, bound
    waits.over(over, 0.0, True, False)
    assert waits.strikes == 1  # a run that blocked is a strike at once
    far = Gauge("f")
    far.inline, far.bound = True, bound
    far.over(60 * bound, 60 * bound, False, False)
    assert far.done  # computing far over the bound: back at once
    preempted = Gauge("p")
    preempted.inline, preempted.bound = True, bound
    for _ in range(5):
        preempted.over(over, over, False, True)
    assert preempted.strikes == 0 and preempted.inline  # the OS's doing


@pytest.mark.asyncio
async def test_the_loop_is_held_past_the_bound_by_at_most_three_runs_of_a_node(
    heartbeat: Any,
) -> None:
    costly = threading.Event()

    @node(output_name="y")
    def turns(x: int) -> int:
        if costly.is_set():
            _compute(0.06)  # 60 times the bound
        return x + 1

    async with HyperNodesEngine(node_executor="async", inline_below=0.001) as engine:
        pipeline = Pipeline([turns], engine=engine)
        await _calls(pipeline, PROMOTE + 4)
        costly.set()
        async with heartbeat(0.002) as hb:
            await _calls(pipeline, 10)
    held = [g for g in hb.gaps if g >= 0.055]
    assert 1 <= len(held) <= 3, hb.gaps  # the first costly runs, inline; then threads


@pytest.mark.asyncio
async def test_a_body_that_starts_runs_itself_is_never_inlined() -> None:
    inner = Pipeline([node(lambda a: a, name="echo", output_name="b")])
    where: list[int] = []

    @node(output_name="y")
    def outer(x: int) -> int:
        where.append(threading.get_ident())
        return inner.run({"a": x})["b"] + 1  # fast (a few us), but a run of its own

    async with HyperNodesEngine(node_executor="async") as engine:
        loop_thread = await _calls(Pipeline([outer], engine=engine), 3 * PROMOTE)
        assert engine.inlined == {}
    assert loop_thread not in where


@pytest.mark.asyncio
async def test_async_nodes_and_timeouts_and_process_pools_are_not_gauged() -> None:
    pids: list[int] = []

    @node(output_name="y", timeout=5)
    def timed(x: int) -> int:
        pids.append(threading.get_ident())
        return x + 1

    async with HyperNodesEngine(node_executor="async") as engine:
        loop_thread = await _calls(Pipeline([timed], engine=engine), 3 * PROMOTE)
        assert engine.inlined == {}
    assert loop_thread not in pids


def _pid(x: int) -> int:
    return os.getpid()


def test_process_pools_never_inline() -> None:
    with HyperNodesEngine(node_executor="parallel", max_workers=1) as engine:
        pipeline = Pipeline([node(_pid, output_name="pid")], engine=engine)
        pids = {pipeline.run({"x": i})["pid"] for i in range(3 * PROMOTE)}
        assert engine.inlined == {}
    assert os.getpid() not in pids


def test_inlined_nodes_still_fail_as_node_errors() -> None:
    from hypernodes import NodeError

    fail = threading.Event()

    @node(output_name="y")
    def maybe(x: int) -> int:
        if fail.is_set():
            raise ValueError("bad x")
        return x

    with HyperNodesEngine(node_executor="async") as engine:
        pipeline = Pipeline([maybe], engine=engine)
        for i in range(PROMOTE + 4):
            pipeline.run({"x": i})
        assert "maybe" in engine.inlined
        fail.set()
        with pytest.raises(NodeError, match="bad x") as info:
            pipeline.run({"x": 1})
    assert info.value.node == "maybe" and isinstance(info.value.__cause__, ValueError)


@pytest.mark.parametrize("bad", [-1, "0.1", True, float("nan"), None])
def test_a_bad_inline_below_is_a_config_error(bad: Any) -> None:
    with pytest.raises(ConfigError, match=r"inline_below must be a number of seconds >= 0"):
        HyperNodesEngine(inline_below=bad)


def test_inline_below_round_trips_through_config() -> None:
    engine = HyperNodesEngine.from_config({"inline_below": 0.001})
    assert engine.inline_below == 0.001
    assert HyperNodesEngine.from_config(engine.to_config()).inline_below == 0.001
    with pytest.raises(ConfigError, match="inline_below"):
        HyperNodesEngine.from_config({"inline_below": -0.5})


def test_nested_maps_inline_their_cheap_items_too() -> None:
    where, cheap = _recorder()
    items = Pipeline([cheap], name="items").as_node(
        map_over="x", input_mapping={"xs": "x"}, output_mapping={"y": "ys"}
    )
    with HyperNodesEngine(node_executor="async", map_executor="async") as engine:
        pipeline = Pipeline([items], engine=engine)
        for _ in range(4):
            assert pipeline.run({"xs": list(range(10))}) == {"ys": list(range(1, 11))}
        assert "cheap" in engine.inlined
    assert len(set(where[-10:])) == 1  # the last map's items: all on the loop's thread


def test_asyncio_runs_the_loop_where_inlined_bodies_run() -> None:
    # (Guards the premise of the thread-id checks above.)
    async def ident() -> int:
        return threading.get_ident()

    assert asyncio.run(ident()) == threading.get_ident()
