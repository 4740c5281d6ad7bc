"""Process workers: what travels to and from them, and what happens when one dies.

Worker tracebacks name the user's file, line and source text whatever file name the
shipped code carries in the worker. A worker that dies (``os._exit``, a segfault) fails the
node it was running with a ``WorkerLostError`` naming the node and item, and the engine
replaces the broken pool. Classes of the user's script travel both ways, and workers
exit when the process that runs them is killed.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hypernodes import HyperNodesEngine, NodeError, Pipeline, WorkerLostError, node
from hypernodes.errors import PathFrame
from hypernodes.executors.remote import Parcel, RemoteFailure, Shipped, call_shipped
from hypernodes.executors.worker_tracebacks import capture, render


class UserError(Exception):
    """An exception type of the user's."""


# -- worker tracebacks -----------------------------------------------------------------


def test_a_shipped_function_fails_with_its_own_file_line_and_source() -> None:
    def fails(x: int) -> int:
        raise UserError(f"no {x}")

    # Loaded from its pickle, as in a worker (here in this process).
    failure = call_shipped(Shipped(fails), Parcel((3,)), {}).value
    assert type(failure) is RemoteFailure
    with pytest.raises(UserError, match="no 3") as info:
        failure.reraise()
    (note,) = info.value.__notes__
    assert note.startswith("Traceback in the worker:\nTraceback (most recent call last):\n")
    line = fails.__code__.co_firstlineno + 1
    assert f'File "{__file__}", line {line}, in fails\n    raise UserError(f"no {{x}}")' in note
    assert note.endswith("UserError: no 3")


@pytest.mark.parametrize(
    "worker_file",
    ["<dynamic-code>", "/nowhere/renamed.py", __file__],
    ids=["rewritten", "missing-in-the-worker", "kept"],
)
def test_frames_map_back_to_the_shipped_codes_file(worker_file: str) -> None:
    # Whatever file name the worker's copy of the code carries (a pickler may rewrite it,
    # or keep a path the worker cannot read), the rendered frame names the real one.
    def fails(x: int) -> int:
        raise UserError(f"no {x}")

    Shipped(fails)  # this process ships the code: it knows where it came from
    code = fails.__code__.replace(co_filename=worker_file)
    in_worker = types.FunctionType(code, fails.__globals__, "fails", None, fails.__closure__)
    try:
        in_worker(4)
    except UserError as exc:
        trace = capture(exc)
    text = render(trace)
    line = fails.__code__.co_firstlineno + 1
    assert f'File "{__file__}", line {line}, in fails\n    raise UserError(f"no {{x}}")' in text
    assert worker_file == __file__ or worker_file not in text


def test_a_chained_worker_error_keeps_its_chain() -> None:
    def inner() -> None:
        raise KeyError("k")

    def fails(x: int) -> int:
        try:
            inner()
        except KeyError as exc:
            raise UserError("outer") from exc
        return x

    failure: Any = call_shipped(Shipped(fails), Parcel((1,)), {}).value
    with pytest.raises(UserError) as info:
        failure.reraise()
    (note,) = info.value.__notes__
    first, rest = note.split("The above exception was the direct cause")
    assert 'raise KeyError("k")' in first and "KeyError: 'k'" in first
    assert 'raise UserError("outer") from exc' in rest


# -- a worker that dies ----------------------------------------------------------------

WAIT = 30.0


def _wait_for(path: str) -> None:
    deadline = time.monotonic() + WAIT
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.01)


def _die(how: str) -> None:
    if how == "exit":
        os._exit(3)
    os.kill(os.getpid(), signal.SIGSEGV)  # what a crash in native code does


@pytest.fixture
def engines() -> Iterator[list[HyperNodesEngine]]:
    made: list[HyperNodesEngine] = []
    yield made
    for engine in made:
        engine.close()


@pytest.mark.parametrize("how", ["exit", "segfault"])
def test_a_worker_dying_in_a_map_names_the_node_and_item_and_the_next_map_works(
    how: str, tmp_path: Path, engines: list[HyperNodesEngine]
) -> None:
    started = str(tmp_path / "item-0-started")

    @node(output_name="y")
    def crash(x: int, started: str, how: str) -> int:
        if x == 0:  # keeps the other worker busy: its item is lost with the pool
            with open(started, "w"):
                pass
            time.sleep(WAIT)
        if x == 1:
            _wait_for(started)
            _die(how)
        return x

    engine = HyperNodesEngine(map_executor="parallel", max_workers=2)
    engines.append(engine)
    pipeline = Pipeline([crash], engine=engine, name="p")
    with pytest.raises(WorkerLostError) as info:
        pipeline.map({"x": [0, 1, 2, 3], "started": started, "how": how}, "x")
    err = info.value
    assert isinstance(err, NodeError)
    assert err.node == "crash"
    assert err.item_index == 1  # the item whose worker died, not the one lost with it
    assert err.pipeline_path == ("p",)
    assert err.reason == "running"
    assert str(err).startswith(
        "node 'crash' failed in p[item 1]: a worker process of ProcessPoolExecutor died "
        "abruptly while running it"
    )
    assert "__main__" not in str(err)  # the guard is not the problem here
    assert isinstance(err.__cause__, concurrent.futures.BrokenExecutor)
    # The engine replaced the broken pool: the next map works.
    results = pipeline.map({"x": [5, 6, 7], "started": started, "how": how}, "x")
    assert [r["y"] for r in results] == [5, 6, 7]


def test_the_node_an_item_was_running_when_its_worker_died_is_named(
    engines: list[HyperNodesEngine],
) -> None:
    @node(output_name="prepared")
    def prepare(x: int) -> int:
        return x

    @node(output_name="y")
    def crash(prepared: int) -> int:
        if prepared == 1:
            os._exit(3)
        return prepared

    @node(output_name="z")
    def finish(y: int) -> int:
        return y

    engine = HyperNodesEngine(map_executor="parallel", max_workers=1)
    engines.append(engine)
    pipeline = Pipeline([prepare, crash, finish], engine=engine, name="three")
    with pytest.raises(WorkerLostError) as info:
        pipeline.map({"x": [0, 1, 2]}, "x")
    assert info.value.node == "crash"
    assert info.value.item_index == 1
    assert [r["z"] for r in pipeline.map({"x": [4, 5]}, "x")] == [4, 5]


def test_a_worker_dying_in_a_run_names_the_node_and_the_next_run_works(
    tmp_path: Path, engines: list[HyperNodesEngine]
) -> None:
    started = str(tmp_path / "busy-started")

    @node(output_name="a")
    def busy(x: int, started: str) -> int:
        with open(started, "w"):
            pass
        time.sleep(WAIT)
        return x

    @node(output_name="b")
    def crash(x: int, started: str) -> int:
        _wait_for(started)
        os._exit(3)

    engine = HyperNodesEngine(node_executor="parallel", max_workers=2)
    engines.append(engine)
    with pytest.raises(WorkerLostError) as info:
        Pipeline([busy, crash], engine=engine, name="run").run({"x": 1, "started": started})
    err = info.value
    assert (err.node, err.pipeline_path, err.item_index) == ("crash", ("run",), None)
    assert err.reason == "running"
    assert "__main__" not in str(err)

    @node(output_name="c")
    def fine(x: int) -> int:
        return x + 1

    assert Pipeline([fine], engine=engine).run({"x": 1}) == {"c": 2}


def test_a_node_whose_worker_died_is_retried_on_a_fresh_pool(
    tmp_path: Path, engines: list[HyperNodesEngine]
) -> None:
    crashed = str(tmp_path / "crashed-once")

    @node(output_name="y", retries=1)
    def flaky(x: int, crashed: str) -> int:
        if not os.path.exists(crashed):
            with open(crashed, "w"):
                pass
            os._exit(3)
        return x * 2

    engine = HyperNodesEngine(node_executor="parallel", max_workers=1)
    engines.append(engine)
    assert Pipeline([flaky], engine=engine).run({"x": 4, "crashed": crashed}) == {"y": 8}


def test_worker_lost_error_pickles_with_its_node_and_reason() -> None:
    err = WorkerLostError("n", (PathFrame("p", item=2),), executor="Pool", reason="running")
    err.__cause__ = RuntimeError("broken")
    clone = pickle.loads(pickle.dumps(err))
    assert type(clone) is WorkerLostError
    assert (clone.node, clone.item_index, clone.reason, clone.executor) == (
        "n",
        2,
        "running",
        "Pool",
    )
    assert str(clone) == str(err)
    assert type(clone.__cause__) is RuntimeError


# -- classes of the user's script ------------------------------------------------------

SCRIPT = '''
import json
from dataclasses import dataclass

from hypernodes import HyperNodesEngine, NodeError, Pipeline, node


@dataclass
class Point:
    x: int
    y: int


class Boom(Exception):
    """The user's own exception."""


@node(output_name="point")
def make(x: int) -> Point:
    return Point(x, x + 1)


@node(output_name="moved")
def move(point: Point) -> Point:
    if not isinstance(point, Point):
        raise TypeError(f"not the script's Point: {type(point)!r}")
    if point.x == 2:
        raise Boom(f"cannot move {point}")
    return Point(point.x * 10, point.y)


def failure(call):
    try:
        call()
    except NodeError as err:
        return {
            "error": type(err).__name__,
            "node": err.node,
            "item": err.item_index,
            "cause_is_boom": type(err.__cause__) is Boom,
            "cause": str(err.__cause__),
            "notes": "\\n".join(
                [*getattr(err, "__notes__", []), *getattr(err.__cause__, "__notes__", [])]
            ),
        }
    return None


if __name__ == "__main__":
    report = {}
    for role in ("node_executor", "map_executor"):
        with HyperNodesEngine(**{role: "parallel"}, max_workers=2) as engine:
            pipeline = Pipeline([make, move], engine=engine, name="geo")
            ran = pipeline.run({"x": 1})
            mapped = pipeline.map({"x": [1, 3]}, "x")
            given = pipeline.map({"point": [Point(4, 0)]}, "point", output_name="moved")
            report[role] = {
                "run": [type(v) is Point for v in ran.values()] + [ran["moved"] == Point(10, 2)],
                "map": [type(r["moved"]) is Point for r in mapped]
                + [[r["moved"] for r in mapped] == [Point(10, 2), Point(30, 4)]],
                "given": given == [{"moved": Point(40, 0)}],
                "run_error": failure(lambda: pipeline.run({"x": 2})),
                "map_error": failure(lambda: pipeline.map({"x": [1, 2, 3]}, "x")),
            }
    print(json.dumps(report))
'''


def test_classes_of_the_main_script_travel_both_ways(tmp_path: Path) -> None:
    # A dataclass returned by a node, passed in, and an exception raised by one: all of
    # the script's __main__ module, which the workers import as __mp_main__.
    script = tmp_path / "geometry.py"
    script.write_text(SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    for role in ("node_executor", "map_executor"):
        got = report[role]
        assert got["run"] == [True, True, True], role
        assert got["map"] == [True, True, True], role
        assert got["given"] is True, role
        for key, item in (("run_error", None), ("map_error", 1)):
            error = got[key]
            assert error is not None, (role, key)
            assert (error["error"], error["node"], error["item"]) == ("NodeError", "move", item)
            assert error["cause_is_boom"] is True, (role, key, error)
            assert error["cause"] == "cannot move Point(x=2, y=3)"
            if role == "map_executor" and key == "run_error":
                continue  # ran here, not in a worker
            # The worker's traceback names the script and shows the line that raised.
            assert f'File "{script}", line ' in error["notes"], error["notes"]
            assert 'raise Boom(f"cannot move {point}")' in error["notes"]


# -- what cannot travel ----------------------------------------------------------------


def test_a_result_that_cannot_travel_back_fails_its_node(engines: list[HyperNodesEngine]) -> None:
    @node(output_name="lock")
    def make_lock(x: int) -> Any:
        return threading.Lock()

    engine = HyperNodesEngine(node_executor="parallel", max_workers=1)
    engines.append(engine)
    with pytest.raises(NodeError) as info:
        Pipeline([make_lock], engine=engine, name="p").run({"x": 1})
    assert type(info.value) is NodeError
    assert info.value.node == "make_lock"
    assert type(info.value.__cause__) is TypeError
    assert "cannot pickle '_thread.lock' object" in str(info.value.__cause__)


@pytest.mark.parametrize("role", ["map_executor", "node_executor"])
def test_a_generator_returned_in_a_parallel_map_is_a_node_error_saying_what_to_do(
    role: str, engines: list[HyperNodesEngine]
) -> None:
    # Was a raw TypeError out of map() with map_executor="parallel" (issue 17).
    @node(output_name="numbers")
    def numbers(x: int) -> Any:
        return (i for i in range(x)) if x == 1 else [x]

    engine = HyperNodesEngine(**{role: "parallel"}, max_workers=1)
    engines.append(engine)
    with pytest.raises(NodeError) as info:
        Pipeline([numbers], engine=engine, name="p").map({"x": [0, 1, 2]}, "x")
    assert (info.value.node, info.value.item_index) == ("numbers", 1)
    cause = info.value.__cause__
    assert type(cause) is TypeError
    assert str(cause).startswith("the node returned a generator, which cannot travel back")
    assert "(TypeError: cannot pickle 'generator' object); return a list instead" in str(cause)


def test_an_item_that_cannot_be_shipped_is_a_node_error_naming_it(
    engines: list[HyperNodesEngine],
) -> None:
    @node(output_name="y")
    def use(x: Any) -> int:
        return 1

    engine = HyperNodesEngine(map_executor="parallel", max_workers=1)
    engines.append(engine)
    with pytest.raises(NodeError) as info:
        Pipeline([use], engine=engine, name="p").map({"x": [1, threading.Lock()]}, "x")
    assert (info.value.node, info.value.item_index) == ("use", 1)
    assert type(info.value.__cause__) is TypeError
    assert "cannot pickle '_thread.lock' object" in str(info.value.__cause__)


class Unsendable(Exception):
    """An exception holding something that cannot be pickled."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


def test_an_exception_that_cannot_travel_back_is_named_by_a_stand_in(
    engines: list[HyperNodesEngine],
) -> None:
    @node(output_name="y")
    def fails(x: int) -> int:
        raise Unsendable(f"bad {x}")

    engine = HyperNodesEngine(node_executor="parallel", max_workers=1)
    engines.append(engine)
    with pytest.raises(NodeError) as info:
        Pipeline([fails], engine=engine).run({"x": 3})
    cause = info.value.__cause__
    assert type(cause) is RuntimeError
    assert str(cause).startswith("Unsendable: bad 3 (the worker could not send this exception")
    (note,) = cause.__notes__
    assert 'raise Unsendable(f"bad {x}")' in note


# -- when the process running a map is killed -------------------------------------------

HOLDING = """
import os
import sys
import time

from hypernodes import HyperNodesEngine, Pipeline, node


@node(output_name="y")
def hold(x: int, marks: str) -> int:
    with open(os.path.join(marks, str(os.getpid())), "w"):
        pass
    time.sleep(600)
    return x


if __name__ == "__main__":
    with HyperNodesEngine(map_executor="parallel", max_workers=2) as engine:
        Pipeline([hold], engine=engine).map({"x": [1, 2], "marks": sys.argv[1]}, "x")
"""


def test_workers_exit_when_the_process_running_the_map_is_killed(tmp_path: Path) -> None:
    psutil = pytest.importorskip("psutil")
    marks = tmp_path / "marks"
    marks.mkdir()
    script = tmp_path / "holding.py"
    script.write_text(HOLDING)
    proc = subprocess.Popen([sys.executable, str(script), str(marks)], cwd=tmp_path)
    children: list[Any] = []
    try:
        deadline = time.monotonic() + WAIT
        while len(os.listdir(marks)) < 2:  # both workers are running an item
            assert time.monotonic() < deadline, "the workers never started"
            assert proc.poll() is None, "the script ended early"
            time.sleep(0.05)
        # The pool's workers and the resource tracker.
        children = psutil.Process(proc.pid).children(recursive=True)
        workers = {int(name) for name in os.listdir(marks)}
        assert workers <= {child.pid for child in children}
        proc.kill()
        proc.wait(WAIT)

        def alive() -> list[Any]:
            running = []
            for child in children:
                with contextlib.suppress(psutil.NoSuchProcess):
                    if child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
                        running.append(child)
            return running

        deadline = time.monotonic() + 5
        while alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert alive() == [], [(c.pid, c.name()) for c in alive()]
    finally:
        proc.kill()
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()


def _exit_now(x: int) -> int:
    os._exit(3)


def test_a_broken_pool_is_kept_until_its_owner_shuts_down() -> None:
    # Dropping the last reference to a broken ProcessPoolExecutor while its manager
    # thread still terminates it can hang interpreter exit (CPython 3.13.0): the broken
    # generation stays referenced until the pool shuts down, which then waits for it.
    import weakref

    from hypernodes.executors.processes import ProcessPool

    pool = ProcessPool(1)
    with pytest.raises(Exception):  # noqa: B017 - whatever a dead worker's call raises
        pool.submit(_exit_now, 1).result(WAIT)
    first = weakref.ref(pool._current[0].pool)
    assert pool.submit(abs, -2).result(WAIT) == 2  # a fresh pool took over
    import gc

    gc.collect()
    assert first() is not None  # the broken one is still held
    pool.shutdown(wait=True)
    del pool
    gc.collect()
    assert first() is None
