"""Failure semantics: the first failure cancels the rest and surfaces as one NodeError.

The user's exception is always the ``__cause__`` (never a kernel error, never an
exception group), under every executor, from run() and arun(), with or without a loop
already running. Retries are counted; timeouts cancel async nodes and abandon sync ones.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from hypernodes import HyperNodesEngine, NodeError, Pipeline, node

WAIT = 10.0


class UserError(Exception):
    """An exception type of the user's (module level: it pickles across processes)."""


@pytest.fixture
def engine_factory() -> Iterator[Callable[..., HyperNodesEngine]]:
    made: list[HyperNodesEngine] = []

    def make(**kwargs: Any) -> HyperNodesEngine:
        engine = HyperNodesEngine(**kwargs)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.close()


@node
def ok(x: int) -> int:
    return x + 1


@node
def broken(ok: int) -> int:
    raise UserError(f"bad value {ok}")


@node
async def abroken(ok: int) -> int:
    await asyncio.sleep(0)
    raise UserError(f"bad async value {ok}")


@node
def after(broken: int) -> int:
    raise AssertionError("must never run")


EXECUTORS = ["sequential", "async", "threaded", "parallel"]


# -- one NodeError, the user's exception as __cause__ ----------------------------------


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("failing", [broken, abroken], ids=["sync", "async"])
def test_failure_is_one_node_error_with_the_users_exception(
    executor: str, failing: Any, engine_factory: Callable[..., HyperNodesEngine]
) -> None:
    engine = engine_factory(node_executor=executor, max_workers=2)
    pipeline = Pipeline([ok, failing], engine=engine, name="etl")
    with pytest.raises(NodeError) as info:
        pipeline.run({"x": 1})
    err = info.value
    assert type(err) is NodeError  # not an ExceptionGroup, not a kernel error
    assert err.node == failing.name
    assert err.pipeline_path == ("etl",)
    assert err.item_index is None
    assert type(err.__cause__) is UserError
    assert "bad" in str(err.__cause__) and "value 2" in str(err.__cause__)
    assert str(err).startswith(f"node {failing.name!r} failed in etl: UserError: bad")


@pytest.mark.parametrize("executor", EXECUTORS)
def test_arun_failure_is_one_node_error(
    executor: str, engine_factory: Callable[..., HyperNodesEngine]
) -> None:
    engine = engine_factory(node_executor=executor, max_workers=2)
    pipeline = Pipeline([ok, broken, abroken.copy(name="abroken2")], engine=engine, name="p")

    async def main() -> None:
        await pipeline.arun({"x": 1})

    with pytest.raises(NodeError) as info:
        asyncio.run(main())
    assert type(info.value.__cause__) is UserError
    assert info.value.node in ("broken", "abroken2")


def test_the_cause_is_the_very_exception_the_node_raised(
    engine_factory: Callable[..., HyperNodesEngine],
) -> None:
    raised: list[BaseException] = []

    @node
    def fails(x: int) -> int:
        exc = RuntimeError("the user's own RuntimeError")
        raised.append(exc)
        raise exc

    for executor in ("sequential", "threaded", "async"):
        pipeline = Pipeline([fails], engine=engine_factory(node_executor=executor))
        with pytest.raises(NodeError) as info:
            pipeline.run({"x": 1})
        assert info.value.__cause__ is raised[-1]


@pytest.mark.asyncio
async def test_users_runtime_error_survives_run_inside_a_running_loop() -> None:
    # run() while a loop is running (Jupyter, async code) goes through the background
    # loop thread; the user's RuntimeError must come back as the cause, not be replaced
    # by an event-loop RuntimeError.
    raised: list[BaseException] = []

    @node
    def fails(x: int) -> int:
        exc = RuntimeError("This event loop is already running (but it is the user's)")
        raised.append(exc)
        raise exc

    @node
    async def afails(x: int) -> int:
        exc = RuntimeError("async user error")
        raised.append(exc)
        raise exc

    for failing in (fails, afails):
        with pytest.raises(NodeError) as info:
            Pipeline([failing], name="in-loop").run({"x": 1})
        assert info.value.__cause__ is raised[-1]
        assert info.value.node == failing.name
        with pytest.raises(NodeError) as info:
            Pipeline([failing], name="in-loop").map({"x": [1, 2]}, "x")
        assert info.value.__cause__ is raised[-1]
        assert info.value.item_index == 0


def test_two_concurrent_failures_are_still_one_node_error(
    engine_factory: Callable[..., HyperNodesEngine],
) -> None:
    barrier = threading.Barrier(2, timeout=WAIT)

    @node
    def first(x: int) -> int:
        barrier.wait()
        raise UserError("first")

    @node
    def second(x: int) -> int:
        barrier.wait()
        raise UserError("second")

    pipeline = Pipeline([first, second], engine=engine_factory(node_executor="threaded"))
    with pytest.raises(NodeError) as info:
        pipeline.run({"x": 0})
    assert type(info.value) is NodeError
    assert str(info.value.__cause__) in ("first", "second")


def test_worker_traceback_travels_as_a_note(
    engine_factory: Callable[..., HyperNodesEngine],
) -> None:
    pipeline = Pipeline([ok, broken], engine=engine_factory(node_executor="parallel"))
    with pytest.raises(NodeError) as info:
        pipeline.run({"x": 1})
    cause = info.value.__cause__
    assert type(cause) is UserError
    notes = "\n".join(getattr(cause, "__notes__", []))
    assert "Traceback in the worker" in notes
    # The user's file, line and source text, whatever file name the shipped code carries
    # in the worker (cloudpickle >= 3.1.3 rewrites it when it ships a function by value).
    line = broken.func.__code__.co_firstlineno + 2
    assert f'File "{__file__}", line {line}, in broken' in notes
    assert 'raise UserError(f"bad value {ok}")' in notes


def test_nodes_after_a_failure_never_run() -> None:
    pipeline = Pipeline([ok, broken, after])
    with pytest.raises(NodeError) as info:
        pipeline.run({"x": 1})
    assert info.value.node == "broken"


# -- cancellation of the rest ----------------------------------------------------------


def test_async_siblings_are_cancelled_at_once(
    engine_factory: Callable[..., HyperNodesEngine],
) -> None:
    log: list[str] = []
    sibling_started = asyncio.Event()

    @node
    async def sibling(x: int) -> int:
        sibling_started.set()
        try:
            await asyncio.sleep(3600)
            log.append("sibling finished")
        except asyncio.CancelledError:
            log.append("sibling cancelled")
            raise
        finally:
            log.append("sibling finally")
        return 1

    @node
    async def fails(x: int) -> int:
        await asyncio.wait_for(sibling_started.wait(), WAIT)
        raise UserError("fails")

    pipeline = Pipeline([sibling, fails], engine=engine_factory(node_executor="async"))
    started = time.perf_counter()
    with pytest.raises(NodeError) as info:
        pipeline.run({"x": 0})
    assert info.value.node == "fails"
    assert log == ["sibling cancelled", "sibling finally"]
    assert time.perf_counter() - started < WAIT  # did not wait for the sibling's hour


def test_async_children_of_other_branches_never_start(
    engine_factory: Callable[..., HyperNodesEngine],
) -> None:
    log: list[str] = []
    release = asyncio.Event()

    @node
    async def slow(x: int) -> int:
        try:
            await asyncio.wait_for(release.wait(), WAIT)
        finally:
            log.append("slow ended")
        return x

    @node
    async def child(slow: int) -> int:
        log.append("child ran")
        return slow

    @node
    async def fails(x: int) -> int:
        raise UserError("boom")

    pipeline = Pipeline([slow, child, fails], engine=engine_factory(node_executor="async"))
    with pytest.raises(NodeError):
        pipeline.run({"x": 0})
    assert log == ["slow ended"]


@pytest.mark.parametrize("executor", ["threaded", "async", "parallel"])
def test_queued_sync_node_never_starts_after_a_failure(
    executor: str, engine_factory: Callable[..., HyperNodesEngine], tmp_path: Any
) -> None:
    # Files, not memory, so the evidence also comes back from worker processes.
    marker = str(tmp_path / "queued-started")

    @node
    def blocker(x: int) -> int:
        time.sleep(0.2)
        raise UserError("blocker fails")

    @node
    def queued(x: int, marker: str) -> int:
        with open(marker, "w") as f:
            f.write(str(os.getpid()))
        return x

    engine = engine_factory(node_executor=executor, max_workers=1)
    pipeline = Pipeline([blocker, queued], engine=engine)
    with pytest.raises(NodeError) as info:
        pipeline.run({"x": 0, "marker": marker})
    assert info.value.node == "blocker"
    engine.close()  # waits for anything that did start
    assert not os.path.exists(marker), "the queued node started after the failure"


@pytest.mark.parametrize("executor", ["threaded", "async"])
def test_calls_queued_behind_busy_threads_never_start_after_a_failure(
    executor: str, engine_factory: Callable[..., HyperNodesEngine]
) -> None:
    # A thread pool holds a call per thread beyond its width (the next call starts as a
    # thread frees): the failing body's thread, and the other thread freeing a moment
    # later, must not start the queued calls before the loop has taken the failure in.
    events: list[tuple[str, float]] = []
    both = threading.Barrier(2, timeout=WAIT)

    def make(name: str, fails: bool) -> Any:
        def body(x: int) -> int:
            events.append((f"{name} start", time.perf_counter()))
            if name in ("fails", "busy"):
                both.wait()  # both threads busy: the queued calls wait in the pool
                time.sleep(0.1)
            if fails:
                events.append(("failed", time.perf_counter()))
                raise UserError("boom")
            return x

        return node(body, name=name, output_name=name)

    queued = [make(f"queued{i}", False) for i in range(4)]
    engine = engine_factory(node_executor=executor, max_workers=2, max_concurrent=8)
    pipeline = Pipeline([make("fails", True), make("busy", False), *queued], engine=engine)
    with pytest.raises(NodeError) as info:
        pipeline.run({"x": 0})
    engine.close()  # waits for anything that did start
    assert info.value.node == "fails"
    failed_at = dict(events)["failed"]
    late = [name for name, at in events if name.startswith("queued") and at > failed_at]
    assert late == []


def test_a_failure_cancels_the_pool_work_that_has_not_started(
    engine_factory: Callable[..., HyperNodesEngine],
) -> None:
    # With the failure raised while the others still wait in the queue (not at the instant
    # a worker frees up), queued work is cancelled and never runs.
    gate = threading.Event()
    ran: list[int] = []

    def make(i: int) -> Any:
        def work(x: int) -> int:
            gate.wait(WAIT)
            ran.append(i)
            return i

        return node(work, name=f"work{i}", output_name=f"w{i}")

    @node
    async def fails(x: int) -> int:
        await asyncio.sleep(0.05)
        raise UserError("early")

    engine = engine_factory(node_executor="threaded", max_workers=1)
    pipeline = Pipeline([fails, *[make(i) for i in range(5)]], engine=engine)
    with pytest.raises(NodeError):
        pipeline.run({"x": 0})
    gate.set()
    engine.close()
    assert len(ran) <= 1  # only the node the worker was already running


# -- retries ---------------------------------------------------------------------------


@pytest.mark.parametrize("is_async", [False, True])
def test_retries_count_attempts_until_success(is_async: bool) -> None:
    attempts: list[int] = []

    def flaky_body(x: int) -> int:
        attempts.append(x)
        if len(attempts) < 3:
            raise UserError(f"attempt {len(attempts)}")
        return x * 10

    if is_async:

        async def flaky(x: int) -> int:
            return flaky_body(x)

    else:

        def flaky(x: int) -> int:
            return flaky_body(x)

    pipeline = Pipeline([node(flaky, retries=2)])
    assert pipeline.run({"x": 4}) == {"flaky": 40}
    assert len(attempts) == 3


@pytest.mark.parametrize("executor", ["sequential", "threaded", "async"])
@pytest.mark.parametrize("is_async", [False, True])
def test_retries_exhausted_report_the_last_error(
    executor: str, is_async: bool, engine_factory: Callable[..., HyperNodesEngine]
) -> None:
    attempts: list[int] = []

    def body(x: int) -> int:
        attempts.append(x)
        raise UserError(f"attempt {len(attempts)}")

    if is_async:

        async def always(x: int) -> int:
            return body(x)

    else:

        def always(x: int) -> int:
            return body(x)

    pipeline = Pipeline([node(always, retries=2)], engine=engine_factory(node_executor=executor))
    with pytest.raises(NodeError) as info:
        pipeline.run({"x": 1})
    assert len(attempts) == 3
    assert str(info.value.__cause__) == "attempt 3"
    assert "(after 3 attempts)" in str(info.value)


def test_no_retries_means_one_attempt() -> None:
    attempts: list[int] = []

    @node
    def once(x: int) -> int:
        attempts.append(x)
        raise UserError("no")

    with pytest.raises(NodeError) as info:
        Pipeline([once]).run({"x": 1})
    assert attempts == [1]
    assert "attempts" not in str(info.value)


# -- timeouts --------------------------------------------------------------------------


@pytest.mark.parametrize("executor", ["sequential", "threaded", "async"])
def test_timed_out_sync_node_is_reported_abandoned(
    executor: str,
    engine_factory: Callable[..., HyperNodesEngine],
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = threading.Event()
    finished = threading.Event()

    @node(timeout=0.1)
    def stuck(x: int) -> int:
        release.wait(WAIT)
        finished.set()
        return x

    pipeline = Pipeline([stuck], engine=engine_factory(node_executor=executor))
    with caplog.at_level(logging.WARNING, logger="hypernodes"), pytest.raises(NodeError) as info:
        pipeline.run({"x": 1})
    err = info.value
    assert err.abandoned is True
    assert isinstance(err.__cause__, TimeoutError)
    assert "timed out after 0.1 s" in str(err)
    assert "abandoned" in str(err)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("stuck" in r.getMessage() and "abandoned" in r.getMessage() for r in warnings)
    # It really is abandoned, not killed: it finishes once released.
    assert not finished.is_set()
    release.set()
    assert finished.wait(WAIT)


@pytest.mark.parametrize("executor", ["sequential", "async"])
def test_timed_out_async_node_is_cancelled(
    executor: str, engine_factory: Callable[..., HyperNodesEngine]
) -> None:
    log: list[str] = []

    @node(timeout=0.1)
    async def stuck(x: int) -> int:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            log.append("cancelled")
            raise
        log.append("finished")
        return x

    pipeline = Pipeline([stuck], engine=engine_factory(node_executor=executor))
    with pytest.raises(NodeError) as info:
        pipeline.run({"x": 1})
    assert log == ["cancelled"]
    assert info.value.abandoned is False
    assert isinstance(info.value.__cause__, TimeoutError)


def test_timed_out_async_node_message_says_so() -> None:
    @node(timeout=0.1)
    async def stuck(x: int) -> int:
        await asyncio.sleep(3600)
        return x

    with pytest.raises(NodeError, match=r"timed out after 0\.1 s"):
        Pipeline([stuck]).run({"x": 1})


def test_timeout_applies_per_attempt_with_retries() -> None:
    attempts: list[int] = []

    @node(timeout=0.1, retries=2)
    async def slow_then_fast(x: int) -> int:
        attempts.append(x)
        if len(attempts) < 3:
            await asyncio.sleep(3600)
        return x + 1

    assert Pipeline([slow_then_fast]).run({"x": 1}) == {"slow_then_fast": 2}
    assert len(attempts) == 3


def test_fast_node_with_a_timeout_is_unaffected() -> None:
    @node(timeout=5)
    def quick(x: int) -> int:
        return x * 2

    @node(timeout=5)
    async def aquick(quick: int) -> int:
        return quick + 1

    assert Pipeline([quick, aquick]).run({"x": 2}) == {"quick": 4, "aquick": 5}


# -- a process pool in a script without a __main__ guard -------------------------------


def test_a_script_without_a_main_guard_fails_fast_and_names_the_fix(tmp_path: Any) -> None:
    # Spawned workers import the main module, so an unguarded script's top-level code runs
    # in every worker, which breaks the pool. The user gets one error that names the fix,
    # and no process is left behind (an orphan would hold our pipes open: this would time
    # out).
    import subprocess
    import sys

    script = tmp_path / "unguarded.py"
    script.write_text(
        "from hypernodes import HyperNodesEngine, Pipeline, node\n"
        "engine = HyperNodesEngine(map_executor='parallel', max_workers=2)\n"
        "pipeline = Pipeline([node(lambda x: x + 1, output_name='y', name='inc')], engine=engine)\n"
        "print(pipeline.map({'x': [1, 2]}, map_over='x'))\n"
    )
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert proc.returncode == 1
    (line,) = [
        ln for ln in proc.stderr.splitlines() if ln.startswith("hypernodes.errors.WorkerLostError")
    ]
    assert line.startswith("hypernodes.errors.WorkerLostError: node 'inc' failed in pipeline[item")
    assert "a worker process of ProcessPoolExecutor died abruptly while starting up" in line
    assert 'if __name__ == "__main__":' in line
