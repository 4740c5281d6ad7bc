"""Limits and retries with backoff (DESIGN.md section 5), on every path."""

from __future__ import annotations

import asyncio
import itertools
import os
import pickle
import random
import sys
import threading
import time
from typing import Any

import cloudpickle
import pytest

from hypernodes import (
    ConfigError,
    HyperNodesEngine,
    Limit,
    Node,
    NodeError,
    Pipeline,
    PipelineCallback,
    Retry,
    node,
)

# Process workers cannot import this module: ship its functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


class Gauge:
    """Counts bodies in at once (any thread), and the peak."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0

    def enter(self) -> None:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def leave(self) -> None:
        with self.lock:
            self.now -= 1


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one time."""
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    now = peak = 0
    for _, step in edges:
        now += step
        peak = max(peak, now)
    return peak


# -- Limit: concurrency ----------------------------------------------------------------


def test_a_concurrency_limit_bounds_a_wide_async_map() -> None:
    gauge = Gauge()
    api = Limit("api", concurrency=3)

    @node(output_name="y", limit=api)
    async def call(x: int) -> int:
        gauge.enter()
        await asyncio.sleep(0.005)
        gauge.leave()
        return x * 2

    engine = HyperNodesEngine(map_executor="async", max_concurrent=50)
    results = Pipeline([call], engine=engine).map(inputs={"x": list(range(50))}, map_over="x")
    assert [r["y"] for r in results] == [2 * x for x in range(50)]
    assert gauge.peak == 3  # bound, and reached (50 items were free to run at once)
    assert api.active == 0


def test_one_limit_bounds_two_runs_in_two_threads_and_two_nodes() -> None:
    gauge = Gauge()
    api = Limit("api", concurrency=3)

    @node(output_name="a", limit=api)
    async def first(x: int) -> int:
        gauge.enter()
        await asyncio.sleep(0.003)
        gauge.leave()
        return x

    @node(output_name="b", limit=api)
    def second(a: int) -> int:  # a sync node in threads, under the same limit
        gauge.enter()
        time.sleep(0.003)
        gauge.leave()
        return a

    inner = Pipeline([first, second], name="inner")
    outer = Pipeline(
        [inner.as_node(map_over="x", name="each")],
        engine=HyperNodesEngine(node_executor="async", map_executor="async", max_concurrent=50),
    )
    done: list[Any] = []

    def in_thread() -> None:
        done.append(asyncio.run(outer.arun(inputs={"x": list(range(40))})))

    threads = [threading.Thread(target=in_thread) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(done) == 2 and all(d["b"] == list(range(40)) for d in done)
    assert gauge.peak == 3
    assert api.active == 0


@node(output_name="span", limit=Limit("one-at-a-time", concurrency=1))
def timed(x: int) -> tuple[float, float, int]:
    start = time.time()
    time.sleep(0.02)
    return (start, time.time(), os.getpid())


def test_a_limit_holds_across_process_workers() -> None:
    engine = HyperNodesEngine(map_executor="parallel", max_workers=2)
    try:
        results = Pipeline([timed], engine=engine).map(inputs={"x": list(range(12))}, map_over="x")
    finally:
        engine.close()
    spans = [r["span"] for r in results]
    assert {pid for *_, pid in spans} != {os.getpid()}  # the bodies ran in workers
    assert max_overlap([(s, e) for s, e, _ in spans]) == 1  # 2 workers, never 2 at once


def test_a_limit_holds_for_nodes_shipped_by_a_parallel_node_executor() -> None:
    @node(output_name="other")
    def free(x: int) -> int:
        return x

    engine = HyperNodesEngine(node_executor="parallel", max_workers=2)
    try:
        pipe = Pipeline(
            [timed, timed.copy(name="timed2", output_name="span2"), free], engine=engine
        )
        spans = [pipe.run(inputs={"x": i}) for i in range(3)]
    finally:
        engine.close()
    intervals = [(r[k][0], r[k][1]) for r in spans for k in ("span", "span2")]
    assert max_overlap(intervals) == 1


@pytest.mark.asyncio
async def test_waiting_for_a_limit_holds_no_max_concurrent_slot() -> None:
    # max_concurrent=1 and a limit held elsewhere: the unlimited node still runs.
    gate = Limit("gate", concurrency=1)
    release = asyncio.Event()
    order: list[str] = []

    @node(output_name="a", limit=gate)
    async def limited(x: int) -> int:
        order.append("limited")
        return x

    @node(output_name="b")
    async def free(x: int) -> int:
        order.append("free")
        release.set()
        return x

    engine = HyperNodesEngine(node_executor="async", max_concurrent=1)
    waiting = gate.acquire()  # taken: `limited` must wait
    assert waiting is None

    async def let_go() -> None:
        await release.wait()
        gate.release()

    releaser = asyncio.create_task(let_go())
    result = await Pipeline([limited, free], engine=engine).arun(inputs={"x": 1})
    await releaser
    assert result == {"a": 1, "b": 1} and order == ["free", "limited"]


@pytest.mark.asyncio
async def test_a_cancelled_waiter_gives_nothing_away_and_the_limit_still_works() -> None:
    lim = Limit("x", concurrency=1)
    assert lim.acquire() is None
    waiting = asyncio.ensure_future(lim.acquire())  # type: ignore[arg-type]
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    lim.release()
    assert lim.active == 0
    assert lim.acquire() is None and lim.active == 1
    lim.release()


@pytest.mark.asyncio
async def test_a_waiter_granted_as_it_is_cancelled_passes_the_permit_on() -> None:
    lim = Limit("x", concurrency=1)
    assert lim.acquire() is None
    first = asyncio.ensure_future(lim.acquire())  # type: ignore[arg-type]
    second = asyncio.ensure_future(lim.acquire())  # type: ignore[arg-type]
    await asyncio.sleep(0.01)
    lim.release()  # granted to `first`...
    first.cancel()  # ...which is cancelled before it resumes
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, 1)  # the permit went on to `second`
    assert lim.active == 1
    lim.release()
    assert lim.active == 0


# -- Limit: rate -------------------------------------------------------------------------


def test_a_rate_limit_spaces_starts_as_a_token_bucket() -> None:
    starts: list[float] = []

    @node(output_name="y", limit=Limit("rated", rate="20/s"))
    async def call(x: int) -> int:
        starts.append(time.monotonic())
        return x

    engine = HyperNodesEngine(map_executor="async", max_concurrent=100)
    began = time.monotonic()
    Pipeline([call], engine=engine).map(inputs={"x": list(range(60))}, map_over="x")
    assert len(starts) == 60
    assert starts[-1] - began >= 1.95  # 20 at once, then one every 50 ms: 40 more = 2 s
    starts.sort()
    for w in (0.0, 0.1, 0.25, 0.5, 1.0):
        # (+1: a start may be late by a timer's slack, never early)
        worst = max(sum(1 for t in starts if s <= t <= s + w) for s in starts)
        assert worst <= 20 + 20 * w + 1, (w, worst)
    assert max(sum(1 for t in starts if s <= t <= s + 0.01) for s in starts) >= 20  # a burst


def test_a_rate_limit_also_bounds_sync_nodes_in_threads() -> None:
    starts: list[float] = []

    @node(output_name="y", limit=Limit("rated", rate=(5, 0.5)))
    def call(x: int) -> int:
        starts.append(time.monotonic())
        return x

    engine = HyperNodesEngine(map_executor="threaded", max_workers=4)
    try:
        Pipeline([call], engine=engine).map(inputs={"x": list(range(10))}, map_over="x")
    finally:
        engine.close()
    starts.sort()
    assert starts[-1] - starts[0] >= 0.45  # 5 at once, then 5 more at 0.1 s each


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "bounds nothing"),
        ({"concurrency": 0}, "concurrency must be an int >= 1"),
        ({"concurrency": True}, "concurrency must be an int >= 1"),
        ({"rate": "20/fortnight"}, "cannot read rate='20/fortnight'"),
        ({"rate": "fast"}, "cannot read rate='fast'"),
        ({"rate": "0/s"}, "at least 1 token"),
        ({"rate": (5, 0)}, "at least 1 token"),
        ({"rate": (5, "s")}, "must hold two numbers"),
        ({"rate": 20}, "is not a rate"),
    ],
)
def test_a_bad_limit_is_a_config_error_naming_the_fix(kwargs: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        Limit("api", **kwargs)
    assert "'api'" in str(info.value)


def test_limit_takes_limits_only() -> None:
    lim = Limit("api", concurrency=2)
    with pytest.raises(ConfigError, match="limit= takes a Limit"):
        Node(lambda x: x, name="f", limit="api")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="same Limit twice"):
        Node(lambda x: x, name="f", limit=[lim, lim])
    with pytest.raises(ConfigError, match="non-empty name"):
        Limit("", concurrency=1)
    both = Node(lambda x: x, name="f", limit=[lim, Limit("b", rate="5/s")])
    assert len(both.limits) == 2
    assert "limit=Limit('api', concurrency=2)" in repr(Node(lambda x: x, name="g", limit=lim))


def test_a_limit_unpickled_in_its_process_is_the_same_bound() -> None:
    lim = Limit("api", concurrency=2, rate="10/min")
    assert pickle.loads(pickle.dumps(lim)) is lim
    assert cloudpickle.loads(cloudpickle.dumps(lim)) is lim
    assert repr(lim) == "Limit('api', concurrency=2, rate='10/min')"


def test_all_limits_of_a_node_are_held() -> None:
    gauge_a, gauge_b = Gauge(), Gauge()
    narrow, wide = Limit("narrow", concurrency=1), Limit("wide", concurrency=4)

    @node(output_name="y", limit=[wide, narrow])
    async def both(x: int) -> int:
        gauge_a.enter()
        await asyncio.sleep(0.002)
        gauge_a.leave()
        return x

    @node(output_name="z", limit=wide)
    async def one(x: int) -> int:
        gauge_b.enter()
        await asyncio.sleep(0.002)
        gauge_b.leave()
        return x

    engine = HyperNodesEngine(map_executor="async", max_concurrent=20)
    Pipeline([both, one], engine=engine).map(inputs={"x": list(range(20))}, map_over="x")
    assert gauge_a.peak == 1 and gauge_b.peak <= 4
    assert narrow.active == 0 and wide.active == 0


# -- Retry --------------------------------------------------------------------------------


def test_backoff_follows_the_formula_without_jitter() -> None:
    times: list[float] = []

    @node(
        output_name="y",
        retries=Retry(4, backoff=0.05, factor=2, max_backoff=0.15, jitter=False),
    )
    def flaky(x: int) -> int:
        times.append(time.monotonic())
        if len(times) < 5:
            raise ConnectionError("try again")
        return x

    assert Pipeline([flaky]).run(inputs={"x": 3}) == {"y": 3}
    gaps = [b - a for a, b in itertools.pairwise(times)]
    for got, want in zip(gaps, [0.05, 0.1, 0.15, 0.15], strict=True):
        # Late under load, never early by more than the loop's timer resolution (libuv,
        # under uvloop, counts whole milliseconds: a gap of 0.1495 s was seen for 0.15).
        assert want - 0.002 <= got < want + 1.0, (gaps, want)


def test_the_delay_formula_and_jitter() -> None:
    r = Retry(5, backoff=1.0, factor=3.0, max_backoff=5.0, jitter=False)
    assert [r.delay(k) for k in (1, 2, 3)] == [1.0, 3.0, 5.0]
    random.seed(7)
    jittered = Retry(5, backoff=1.0, factor=3.0, max_backoff=5.0)
    delays = [jittered.delay(2) for _ in range(200)]
    assert all(0 <= d <= 3.0 for d in delays) and len(set(delays)) > 100


def test_an_error_retry_does_not_match_fails_at_once() -> None:
    calls: list[int] = []

    @node(output_name="y", retries=Retry(5, backoff=10, on=(TimeoutError, ConnectionError)))
    def wrong(x: int) -> int:
        calls.append(x)
        raise ValueError("bad input")

    began = time.monotonic()
    with pytest.raises(NodeError) as info:
        Pipeline([wrong]).run(inputs={"x": 1})
    assert time.monotonic() - began < 1 and calls == [1]
    assert info.value.attempts == 1 and isinstance(info.value.__cause__, ValueError)


def test_a_predicate_chooses_what_to_retry() -> None:
    calls: list[int] = []

    @node(output_name="y", retries=Retry(3, on=lambda e: "transient" in str(e)))
    def flaky(x: int) -> int:
        calls.append(x)
        raise RuntimeError("transient" if len(calls) < 3 else "permanent")

    with pytest.raises(NodeError, match=r"permanent \(after 3 attempts\)") as info:
        Pipeline([flaky]).run(inputs={"x": 1})
    assert info.value.attempts == 3 and len(calls) == 3


def test_attempts_on_the_final_error() -> None:
    @node(output_name="y", retries=2)
    async def always(x: int) -> int:
        raise ConnectionError("down")

    with pytest.raises(NodeError, match=r"ConnectionError: down \(after 3 attempts\)") as info:
        Pipeline([always]).run(inputs={"x": 1})
    assert info.value.attempts == 3
    assert pickle.loads(pickle.dumps(info.value)).attempts == 3

    @node(output_name="y")
    def once(x: int) -> int:
        raise ConnectionError("down")

    with pytest.raises(NodeError) as info:
        Pipeline([once]).run(inputs={"x": 1})
    assert info.value.attempts == 1


def test_a_timeout_is_retried_as_a_timeout_error() -> None:
    calls: list[int] = []

    @node(output_name="y", timeout=0.05, retries=Retry(2, on=TimeoutError))
    async def slow_once(x: int) -> int:
        calls.append(x)
        if len(calls) == 1:
            await asyncio.sleep(5)
        return x

    assert Pipeline([slow_once]).run(inputs={"x": 4}) == {"y": 4}
    assert len(calls) == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_retries": -1}, "max_retries must be an int >= 0"),
        ({"max_retries": 2, "backoff": -1}, "backoff must be a number >= 0"),
        ({"max_retries": 2, "factor": 0.5}, "factor must be >= 1"),
        ({"max_retries": 2, "max_backoff": float("inf")}, "max_backoff must be a number"),
        ({"max_retries": 2, "on": 42}, "on= takes an exception type"),
        ({"max_retries": 2, "on": (ValueError, 3)}, "on= takes an exception type"),
    ],
)
def test_a_bad_retry_is_a_config_error(kwargs: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Retry(**kwargs)


def test_retries_takes_an_int_or_a_retry() -> None:
    with pytest.raises(ValueError, match="retries must be an int >= 0 or a Retry"):
        Node(lambda x: x, name="f", retries=-1)
    with pytest.raises(ValueError, match="retries must be an int >= 0 or a Retry"):
        Node(lambda x: x, name="f", retries="3")  # type: ignore[arg-type]
    assert Node(lambda x: x, name="f", retries=3).retry == Retry(3)
    assert Node(lambda x: x, name="f", retries=Retry(2, backoff=1)).retries == 2
    assert "retries=Retry(2, backoff=1)" in repr(
        Node(lambda x: x, name="f", retries=Retry(2, backoff=1))
    )


def test_a_backoff_holds_no_worker_other_items_run_meanwhile() -> None:
    # "threaded" with one worker: while item 0 waits 1 s to retry, the others run.
    events: list[tuple[str, int, float]] = []

    @node(output_name="y", retries=Retry(1, backoff=1.0, jitter=False))
    def work(x: int) -> int:
        events.append(("start", x, time.monotonic()))
        if x == 0 and sum(1 for e in events if e[1] == 0) == 1:
            raise ConnectionError("first attempt fails")
        return x

    engine = HyperNodesEngine(map_executor="threaded", max_workers=1)
    try:
        results = Pipeline([work], engine=engine).map(inputs={"x": list(range(5))}, map_over="x")
    finally:
        engine.close()
    assert [r["y"] for r in results] == list(range(5))
    first, retried = [t for kind, x, t in events if x == 0]
    others = [t for kind, x, t in events if x != 0]
    assert retried - first >= 1.0
    assert len(others) == 4 and all(first < t < retried for t in others)


class Counting(PipelineCallback):
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.retries: list[tuple[str, int, float]] = []
        self.ends = 0

    def on_node_retry(
        self, *, context: Any, node: Any, attempt: int, error: BaseException, delay: float
    ) -> None:
        with self.lock:
            self.retries.append((type(error).__name__, attempt, delay))

    def on_node_end(self, **_: Any) -> None:
        self.ends += 1


def _fails(x: int, attempt: int) -> bool:
    return random.Random(f"{x}-{attempt}").random() < 0.3


@pytest.mark.parametrize("executor", ["sequential", "async", "threaded"])
def test_fault_injection_every_item_succeeds_and_each_failure_is_one_retry_event(
    executor: str,
) -> None:
    failures = sum(
        next(k for k in range(7) if not _fails(x, k)) for x in range(200)
    )  # (each item fails its first k attempts; no item needs more than 6)
    assert 20 < failures < 120
    seen: dict[int, int] = {}
    lock = threading.Lock()

    @node(output_name="y", retries=Retry(5))
    def flaky(x: int) -> int:
        with lock:
            attempt = seen[x] = seen.get(x, -1) + 1
        if _fails(x, attempt):
            raise ConnectionError(f"item {x} attempt {attempt}")
        return x * 3

    counter = Counting()
    engine = HyperNodesEngine(map_executor=executor, max_workers=4)
    try:
        results = Pipeline([flaky], engine=engine, callbacks=[counter]).map(
            inputs={"x": list(range(200))}, map_over="x"
        )
    finally:
        engine.close()
    assert [r["y"] for r in results] == [3 * x for x in range(200)]
    assert len(counter.retries) == failures and counter.ends == 200
    assert all(kind == "ConnectionError" for kind, _, _ in counter.retries)


def test_retries_in_a_nested_map_and_the_progress_bar_counts_them() -> None:
    from hypernodes import ProgressCallback

    calls: dict[int, int] = {}

    @node(output_name="y", retries=Retry(2))
    def flaky(x: int) -> int:
        calls[x] = calls.get(x, 0) + 1
        if calls[x] == 1 and x % 2 == 0:
            raise ConnectionError("once")
        return x

    import io

    out = io.StringIO()
    inner = Pipeline([flaky], name="inner")
    outer = Pipeline(
        [inner.as_node(map_over="x", name="each")],
        callbacks=[ProgressCallback(backend="tqdm", file=out, min_interval=0)],
    )
    assert outer.run(inputs={"x": list(range(6))}) == {"y": list(range(6))}
    assert "retries=3" in out.getvalue()


def test_retry_events_reach_telemetry_spans() -> None:
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from hypernodes.telemetry import TelemetryCallback

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    calls: list[int] = []

    @node(output_name="y", retries=Retry(3))
    def flaky(x: int) -> int:
        calls.append(x)
        if len(calls) < 3:
            raise ConnectionError("down")
        return x

    Pipeline([flaky], callbacks=[TelemetryCallback(tracer_provider=provider)]).run(inputs={"x": 1})
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "node flaky"]
    retries = [e for e in span.events if e.name == "retry"]
    attributes = [dict(e.attributes or {}) for e in retries]
    assert [a["hypernodes.attempt"] for a in attributes] == [1, 2]
    assert attributes[0]["exception.type"] == "ConnectionError"


def _daft_state() -> Any:
    # Daft ships functions by value (this module's globals too): state that the calls share
    # with the test lives in a module they import by reference.
    import types

    return sys.modules.setdefault("_hypernodes_policies_state", types.ModuleType("state"))


def test_retries_and_limits_under_daft() -> None:
    pytest.importorskip("daft")
    from hypernodes.engines import DaftEngine

    state = _daft_state()
    state.gauge, state.calls = Gauge(), {}

    @node(output_name="y", retries=Retry(2), limit=Limit("daft-api", concurrency=1))
    def flaky(x: int) -> int:
        shared = sys.modules["_hypernodes_policies_state"]
        shared.gauge.enter()
        with shared.gauge.lock:
            shared.calls[x] = shared.calls.get(x, 0) + 1
            first = shared.calls[x] == 1
        time.sleep(0.002)
        shared.gauge.leave()
        if first and x % 3 == 0:
            raise ConnectionError("once")
        return x * 2

    counter = Counting()
    pipe = Pipeline([flaky], engine=DaftEngine(), callbacks=[counter])
    results = pipe.map(inputs={"x": list(range(9))}, map_over="x")
    assert [r["y"] for r in results] == [2 * x for x in range(9)]
    assert state.gauge.peak == 1 and sum(state.calls.values()) == 12
    assert len(counter.retries) == 3 and [a for _, a, _ in counter.retries] == [1, 1, 1]

    @node(output_name="y", retries=1)
    def always(x: int) -> int:
        raise ConnectionError("down")

    with pytest.raises(NodeError) as info:
        Pipeline([always], engine=DaftEngine()).run(inputs={"x": 1})
    assert info.value.attempts == 2
