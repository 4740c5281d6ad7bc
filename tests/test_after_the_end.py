"""After the end: nothing of a run starts once its failure or cancel reached the caller.

Node bodies stamp their start and end (``time.time()``, in whatever process runs them) in a
log file; the caller notes when the error reached it. Once the bodies still running have
ended and the log stayed quiet for a moment (anything a pool still held would have started
by then), every start must be earlier than that moment (issue 17, item 2): for every node
executor x map executor pair, nested two deep, with a random failing node or an
``asyncio.timeout`` cutting ``arun()``/``amap()`` short (hypothesis, derandomized), and with
SIGINT sent to a script running ``map()`` (a start a worker was cleared for just before the end is
allowed, see ``late``). And ``max_workers`` bounds all the sync bodies of
a run, whatever mix of pools runs them (item 4).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import fcntl
import importlib.util
import inspect
import logging
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hypernodes import HyperNodesEngine, Node, NodeError, Pipeline, node
from hypernodes.executors.halting import Halt, Halted
from hypernodes.executors.workers import Lane

EXECUTORS = ["sequential", "async", "threaded", "parallel"]
_NO_DASK = pytest.mark.skipif(
    importlib.util.find_spec("distributed") is None, reason="needs hypernodes[dask]"
)
# (Ray is left out: its cluster starts too slowly for this test.)
PAIRS = [(n, m) for n in EXECUTORS for m in EXECUTORS] + [
    pytest.param("sequential", "dask", marks=_NO_DASK),
    pytest.param("dask", "sequential", marks=_NO_DASK),
]
QUIET = 0.3  # seconds without a new stamp once nothing runs: a late start would show by then


class Boom(Exception):
    """The failure of the chosen node."""


def stamp(log: str, line: str) -> None:
    """Append one line to the log (any thread or process)."""
    with open(log, "a") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        file.write(line + "\n")


def who() -> str:
    """The process and thread stamping: ``"pid thread"``."""
    return f"{os.getpid()} {threading.get_native_id()}"


def key_of(value: Any) -> int:
    """What a body stamps for its input: the value, or for a list the value it came from
    (item ``i`` spreads into ``10 * i + k``, and these into ``10 * (10 * i + k) + j``)."""
    return value if isinstance(value, int) else min(value) // 10


def item_of(key: int) -> int:
    """The top-level item a body's key belongs to."""
    while key >= 10:
        key //= 10
    return key


def _named(fn: Any, name: str, source: str) -> Any:
    fn.__name__ = fn.__qualname__ = name
    fn.__signature__ = inspect.Signature(
        [
            inspect.Parameter(p, inspect.Parameter.POSITIONAL_OR_KEYWORD)
            for p in (source, "log", "script", "fail")
        ]
    )
    return fn


def link(name: str, source: str, output: str, *, kind: str = "sync") -> Node:
    """A node ``name`` reading ``source`` (plus the log and the script), returning
    ``output``: it stamps its start and end, sleeps as the script says, and raises ``Boom``
    when it is the one to fail. ``kind``: ``"sync"``, ``"async"``, ``"spread"`` (an item
    into a list of two) or ``"gather"`` (a list back into its item)."""

    def body(value: Any, log: str, script: dict[Any, float], fail: Any) -> Any:
        key = key_of(value)
        stamp(log, f"start {time.time()!r} {name} {key} {who()}")
        try:
            time.sleep(script.get((name, key), 0.0))
            if fail == (name, key):
                raise Boom(f"{name} fails on {key}")
        finally:
            stamp(log, f"end {time.time()!r} {name} {key} {who()}")
        if kind == "spread":
            return [10 * value + k for k in range(2)]
        if kind == "gather":
            return key
        return value

    async def abody(value: Any, log: str, script: dict[Any, float], fail: Any) -> Any:
        key = key_of(value)
        stamp(log, f"start {time.time()!r} {name} {key} {who()}")
        try:
            await asyncio.sleep(script.get((name, key), 0.0))
            if fail == (name, key):
                raise Boom(f"{name} fails on {key}")
        finally:
            stamp(log, f"end {time.time()!r} {name} {key} {who()}")
        return key  # (a gathering node)

    fn = abody if kind == "async" else body
    return node(_named(fn, name, source), output_name=output)


def nested_pipeline(engine: HyperNodesEngine) -> Pipeline:
    """Two levels of nested maps: outer (a1 spreads an item into two xs, ``mid`` is mapped
    over them, a2 gathers), mid (b1 spreads x into two ys, ``inner`` is mapped over them,
    async b2 gathers), inner (three plain sync nodes in a row: c1 -> c2 -> c3)."""
    inner = Pipeline(
        [link("c1", "y", "y1"), link("c2", "y1", "y2"), link("c3", "y2", "z")], name="inner"
    )
    mid = Pipeline(
        [
            link("b1", "x", "ys", kind="spread"),
            inner.as_node(
                name="inner", input_mapping={"ys": "y"}, output_mapping={"z": "zs"}, map_over="ys"
            ),
            link("b2", "zs", "w", kind="async"),
        ],
        name="mid",
    )
    nodes = [
        link("a1", "item", "xs", kind="spread"),
        mid.as_node(
            name="mid", input_mapping={"xs": "x"}, output_mapping={"w": "ws"}, map_over="xs"
        ),
        link("a2", "ws", "total", kind="gather"),
    ]
    return Pipeline(nodes, engine=engine, name="outer")


ITEMS = [1, 2]
XS = [10 * i + k for i in ITEMS for k in range(2)]
YS = [10 * x + j for x in XS for j in range(2)]
BODIES = [(n, i) for i in ITEMS for n in ("a1", "a2")]
BODIES += [(n, x) for x in XS for n in ("b1", "b2")]
BODIES += [(n, y) for y in YS for n in ("c1", "c2", "c3")]


def starts(log: str) -> list[tuple[float, str]]:
    """``(time, "name key pid thread")`` of every start in the log."""
    found = []
    for line in Path(log).read_text().splitlines():
        what, when, rest = line.split(" ", 2)
        if what == "start":
            found.append((float(when), rest))
    return found


def settle(log: str, timeout: float = 10.0) -> None:
    """Return once every body that started has ended and the log stayed quiet for QUIET s."""
    deadline = time.monotonic() + timeout
    last: tuple[int, int] | None = None
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        lines = Path(log).read_text().splitlines()
        counts = (sum(ln.startswith("start") for ln in lines), len(lines))
        if counts != last or 2 * counts[0] != counts[1]:
            last, quiet_since = counts, time.monotonic()
        elif time.monotonic() - quiet_since >= QUIET:
            return
        time.sleep(0.02)
    raise AssertionError(f"bodies were still starting or running after {timeout} s")


def late(log: str, reached: float) -> list[str]:
    """The starts at or after ``reached``, with how late they were, but one: a thread's
    first start after ``reached`` when its stamp before that was earlier.

    A worker checks the run right before a body and then calls it: two steps. A thread
    held up between them (descheduled, or waiting for the GIL) while the run is marked
    over and the error reaches the caller starts the one body it was cleared for a moment
    later; its next check sees the mark. So that start is not counted, and anything more
    that thread starts is (as is a start in a thread that stamped after ``reached`` or
    never stamped before: its check came after the mark).
    """
    settle(log)
    previous: dict[str, float] = {}
    found = []
    for line in Path(log).read_text().splitlines():
        what, when, name, key, thread = line.split(" ", 4)
        at = float(when)
        before = previous.get(thread)
        previous[thread] = at
        if what == "start" and at >= reached and (before is None or before >= reached):
            found.append(f"{name} {key} {thread} +{(at - reached) * 1000:.0f} ms")
    return found


@pytest.fixture(scope="module")
def engines() -> Iterator[dict[tuple[str, str], HyperNodesEngine]]:
    made: dict[tuple[str, str], HyperNodesEngine] = {}
    yield made
    for engine in made.values():
        engine.close()


def engine_for(made: dict[tuple[str, str], HyperNodesEngine], pair: tuple[str, str]) -> Any:
    if pair not in made:
        made[pair] = HyperNodesEngine(node_executor=pair[0], map_executor=pair[1], max_workers=2)
    return made[pair]


async def _cut_short(coro: Any, seconds: float) -> Any:
    async with asyncio.timeout(seconds):
        return await coro


@pytest.mark.slow
@pytest.mark.parametrize(("node_executor", "map_executor"), PAIRS)
@settings(
    max_examples=6,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    seed=st.integers(0, 2**32 - 1),
    how=st.sampled_from(["fail", "timeout"]),
    call=st.sampled_from(["map", "amap", "arun"]),
)
def test_nothing_starts_after_the_error_reached_the_caller(
    engines: dict[tuple[str, str], HyperNodesEngine],
    tmp_path: Path,
    node_executor: str,
    map_executor: str,
    seed: int,
    how: str,
    call: str,
) -> None:
    engine = engine_for(engines, (node_executor, map_executor))
    pipeline = nested_pipeline(engine)
    rng = random.Random(seed)
    script = {body: rng.choice([0.0, 0.002, 0.005, 0.015]) for body in BODIES}
    items = [1] if call == "arun" else ITEMS
    fail = rng.choice([b for b in BODIES if item_of(b[1]) in items]) if how == "fail" else None
    if call == "map" and how == "timeout":
        call = "amap"  # (asyncio.timeout needs async code)
    log = str(tmp_path / f"log-{seed}-{how}-{call}")
    Path(log).touch()
    inputs = {"item": items[0] if call == "arun" else items, "log": log, "script": script}
    inputs["fail"] = fail

    async def work() -> Any:
        if call == "arun":
            return await pipeline.arun(inputs)
        return await pipeline.amap(inputs, map_over="item")

    try:
        if call == "map":
            pipeline.map(inputs, map_over="item")
        elif how == "timeout":
            asyncio.run(_cut_short(work(), rng.uniform(0.005, 0.06)))
        else:
            asyncio.run(work())
    except NodeError as err:
        reached = time.time()
        assert how == "fail" and isinstance(err.__cause__, Boom), err
    except TimeoutError:
        reached = time.time()
        assert how == "timeout"
    else:
        assert how == "timeout"  # a timeout longer than the run lets it finish
        return
    assert late(log, reached) == []


# -- a stop meeting a cancel ----------------------------------------------------------


class InThreadExecutor(concurrent.futures.Executor):
    """Runs each call in ``submit`` itself: its future is settled before the loop resumes."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        future.set_running_or_notify_cancel()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


@pytest.mark.asyncio
async def test_a_worker_stopping_for_the_end_of_the_run_does_not_swallow_a_cancel() -> None:
    # A body's worker finds the run over (another part of it failed) while the task that
    # awaits it is being cancelled for that failure: the worker's answer and the cancel
    # arrive together, and the task must end cancelled (it waited forever, when the stop
    # came back as a CancelledError that passed for the delivered cancel).
    halt = Halt()

    def ends_the_run() -> None:
        halt.set()  # (as a failure elsewhere does)
        raise Halted  # (as a segment of steps does when it finds the run over)

    lane = Lane("threads", InThreadExecutor(), 1, "in-thread")
    task = asyncio.ensure_future(lane.call(ends_the_run, (), halt=halt))
    await asyncio.sleep(0)  # the task submits; its future is settled on the next turn
    await asyncio.sleep(0)  # settled: the task wakes up next
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=5)
    assert task in done and task.cancelled()


# -- what is left running -------------------------------------------------------------


@node(output_name="s")
def slow_side(tag: str) -> str:
    time.sleep(0.5)
    return tag


@node(output_name="f")
async def fails_soon(tag: str) -> str:
    await asyncio.sleep(0.05)
    raise Boom(f"{tag} fails")


@pytest.mark.asyncio
async def test_a_body_left_running_is_reported_as_abandoned(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with HyperNodesEngine(node_executor="threaded") as engine:
        pipeline = Pipeline([slow_side, fails_soon], engine=engine, name="two")
        with (
            caplog.at_level(logging.WARNING, logger="hypernodes"),
            pytest.raises(NodeError, match="fails_soon") as info,
        ):
            await pipeline.arun({"tag": "t"})
    expected = "bandoned when the run ended: slow_side (sync work already handed to a worker"
    notes = [n for n in getattr(info.value, "__notes__", []) if expected in n]
    assert len(notes) == 1 and notes[0].startswith(f"A{expected}"), notes
    (record,) = [r for r in caplog.records if expected in r.getMessage()]
    assert record.getMessage().startswith(f"run of pipeline 'two' a{expected}")


# -- Ctrl-C ----------------------------------------------------------------------------

_SCRIPT = """
import fcntl, os, sys, threading, time
from hypernodes import HyperNodesEngine, Pipeline, node

LOG = sys.argv[1]

def stamp(line):
    with open(LOG, "a") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        file.write(line + "\\n")

@node(output_name="y")
def slow(x: int) -> int:
    stamp(f"start {{time.time()!r}} slow {{x}} {{os.getpid()}} {{threading.get_native_id()}}")
    time.sleep({seconds})
    stamp(f"end {{time.time()!r}} slow {{x}} {{os.getpid()}} {{threading.get_native_id()}}")
    return x

@node(output_name="z")
def then(y: int) -> int:
    stamp(f"start {{time.time()!r}} then {{y}} {{os.getpid()}} {{threading.get_native_id()}}")
    time.sleep({seconds})
    stamp(f"end {{time.time()!r}} then {{y}} {{os.getpid()}} {{threading.get_native_id()}}")
    return y

@node(output_name="noted")
async def noted(z: int) -> int:
    return z

if __name__ == "__main__":
    engine = HyperNodesEngine(map_executor="{executor}", max_workers=2)
    # (Sequential: an async node keeps the map on HyperNodes' loop, its sync bodies inline.)
    nodes = [slow, then, noted] if "{executor}" == "sequential" else [slow, then]
    try:
        Pipeline(nodes, engine=engine).map({{"x": list(range(12))}}, map_over="x")
    except KeyboardInterrupt:
        print(f"interrupted {{time.time()!r}}", flush=True)
        raise
"""


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["sequential", "threaded", "parallel"])
def test_ctrl_c_starts_nothing_and_ends_the_script_within_a_second_of_the_bodies(
    tmp_path: Path, executor: str
) -> None:
    seconds = 1.0
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(_SCRIPT.format(seconds=seconds, executor=executor)))
    log = tmp_path / "log"
    log.touch()
    root = str(Path(__file__).resolve().parent.parent)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.Popen(
        [sys.executable, str(script), str(log)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while len(starts(str(log))) < (1 if executor == "sequential" else 2):  # all busy
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the map never started"
            time.sleep(0.01)
        time.sleep(0.2)
        running = starts(str(log))
        sent = time.time()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        ended = time.time()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "KeyboardInterrupt" in err, err
    (line,) = [ln for ln in out.splitlines() if ln.startswith("interrupted ")]
    reached = float(line.split()[1])
    assert late(str(log), reached) == []
    remaining = max(when + seconds for when, _ in running) - sent
    assert ended - sent <= remaining + 1.0, (ended - sent, remaining)
    workers = {int(what.split()[2]) for _, what in starts(str(log))} - {proc.pid}
    assert len(workers) == (2 if executor == "parallel" else 0)
    time.sleep(0.5)
    for pid in workers:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # gone (a spawned worker is reaped by the pool before exit)


# -- max_workers across pools ----------------------------------------------------------


def enter(path: str, delta: int) -> None:
    """Count a sync body in (``delta=1``) or out (``-1``) of the file ``path``
    (``running peak entered``), under a file lock: any thread or process."""
    with open(path, "r+") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        running, peak, entered = map(int, file.read().split())
        running += delta
        if delta > 0:
            peak, entered = max(peak, running), entered + 1
        file.seek(0)
        file.truncate()
        file.write(f"{running} {peak} {entered}")


@node(output_name="side")
def side_work(counter: str) -> str:
    enter(counter, 1)
    time.sleep(0.4)
    enter(counter, -1)
    return "done"


@node(output_name="y")
def item_work(x: int, counter: str) -> int:
    enter(counter, 1)
    time.sleep(0.1)
    enter(counter, -1)
    return x


@pytest.mark.parametrize("node_executor", ["threaded", "async"])
def test_max_workers_bounds_every_sync_body_of_a_run_across_pools(
    tmp_path: Path, node_executor: str
) -> None:
    counter = tmp_path / "counter"
    counter.write_text("0 0 0")
    items = Pipeline([item_work], name="items").as_node(
        name="items", map_over="x", output_mapping={"y": "ys"}
    )
    with HyperNodesEngine(
        node_executor=node_executor, map_executor="parallel", max_workers=1
    ) as engine:
        pipeline = Pipeline([side_work, items], engine=engine)
        warm = tmp_path / "warm"
        warm.write_text("0 0 0")
        pipeline.run({"x": [1], "counter": str(warm)})  # (the process pool starts up)
        result = pipeline.run({"x": [1, 2, 3, 4], "counter": str(counter)})
    assert result == {"side": "done", "ys": [1, 2, 3, 4]}
    running, peak, entered = map(int, counter.read_text().split())
    assert (running, peak, entered) == (0, 1, 5)


def test_late_counts_every_start_after_the_end_but_one_a_thread_was_cleared_for(
    tmp_path: Path,
) -> None:
    log = tmp_path / "log"
    log.write_text(
        "start 1.0 c1 1 10 1\n"  # thread 10/1: ended before, then one start after: cleared
        "end 2.0 c1 1 10 1\n"
        "start 1.5 c1 2 10 2\n"  # thread 10/2: stamped after the end, then started again
        "end 5.5 c1 2 10 2\n"
        "start 5.0 c2 1 10 1\n"
        "end 5.1 c2 1 10 1\n"
        "start 5.6 c2 2 10 2\n"
        "end 5.7 c2 2 10 2\n"
        "start 6.0 c3 1 10 1\n"  # thread 10/1's second start after the end
        "end 6.1 c3 1 10 1\n"
        "start 7.0 c1 3 11 1\n"  # a thread never seen before
        "end 7.1 c1 3 11 1\n"
    )
    assert late(str(log), 4.0) == [
        "c2 2 10 2 +1600 ms",
        "c3 1 10 1 +2000 ms",
        "c1 3 11 1 +3000 ms",
    ]
