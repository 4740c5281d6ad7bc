"""The traceback a user sees: their frames and the message, not the kernel's machinery.

Tracebacks are read back the way a user reads them: ``traceback.format_exception`` of the
error that reached the caller, ``File "...", line N, in name`` by ``File ...`` line.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import re
import threading
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import hypernodes
from hypernodes import HyperNodesEngine, MissingInputError, NodeError, Pipeline, node
from hypernodes.tracebacks import DEBUG_ENV, hide_kernel_frames

_FILE = re.compile(r'^\s*File "(?P<file>[^"]+)", line \d+, in (?P<name>\S+)$', re.M)

# Where the kernel's machinery lives: none of it should reach the user by default.
MACHINERY = (
    os.path.dirname(hypernodes.__file__) + os.sep,
    os.path.dirname(asyncio.__file__) + os.sep,
    os.path.dirname(concurrent.futures.__file__) + os.sep,
    threading.__file__,
    "uvloop",
)


class UserError(Exception):
    """The user's own exception type."""


@node(output_name="ratio")
def ratio(x: int) -> float:
    if x == 0:
        raise UserError("x must not be zero")
    return 10 / x


@node(output_name="wait")
async def wait(ratio: float) -> float:
    await asyncio.sleep(0)
    return ratio


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DEBUG_ENV, raising=False)


@pytest.fixture
def engines() -> Iterator[Callable[..., HyperNodesEngine]]:
    made: list[HyperNodesEngine] = []

    def make(**kwargs: Any) -> HyperNodesEngine:
        made.append(HyperNodesEngine(**kwargs))
        return made[-1]

    yield make
    for engine in made:
        engine.close()


def shown(err: BaseException) -> str:
    return "".join(traceback.format_exception(err))


def frames(text: str) -> list[tuple[str, str]]:
    return [(m["file"], m["name"]) for m in _FILE.finditer(text)]


def machinery(text: str) -> list[tuple[str, str]]:
    return [(f, name) for f, name in frames(text) if any(m in f for m in MACHINERY)]


ENGINES = [
    {},
    {"node_executor": "async", "map_executor": "async"},
    {"node_executor": "threaded", "map_executor": "threaded", "max_workers": 2},
]
ENGINE_IDS = ["sequential", "async", "threaded"]


@pytest.mark.parametrize("config", ENGINES, ids=ENGINE_IDS)
def test_a_failing_map_item_shows_the_callers_line_and_the_nodes_line(
    config: dict[str, Any], engines: Callable[..., HyperNodesEngine]
) -> None:
    pipeline = Pipeline([ratio, wait], name="calc", engine=engines(**config))
    with pytest.raises(NodeError) as info:
        pipeline.map({"x": [1, 0, 2]}, map_over="x")
    text = shown(info.value)
    assert machinery(text) == []
    assert (__file__, "test_a_failing_map_item_shows_the_callers_line_and_the_nodes_line") in (
        frames(text)
    )
    assert (__file__, "ratio") in frames(text)
    assert 'raise UserError("x must not be zero")' in text
    assert 'pipeline.map({"x": [1, 0, 2]}, map_over="x")' in text
    assert "NodeError: node 'ratio' failed in calc[item 1]: UserError: x must not be zero" in text
    assert f"{DEBUG_ENV}=1" in text  # the note says how to get the frames back
    assert len(text.splitlines()) < 30


@pytest.mark.asyncio
@pytest.mark.parametrize("config", ENGINES, ids=ENGINE_IDS)
async def test_amap_and_arun_show_no_machinery_either(
    config: dict[str, Any], engines: Callable[..., HyperNodesEngine]
) -> None:
    pipeline = Pipeline([ratio, wait], name="calc", engine=engines(**config))
    with pytest.raises(NodeError) as info:
        await pipeline.amap({"x": [1, 0]}, map_over="x")
    assert machinery(shown(info.value)) == []
    with pytest.raises(NodeError) as info:
        await pipeline.arun({"x": 0})
    text = shown(info.value)
    assert machinery(text) == []
    assert (__file__, "ratio") in frames(text)


@pytest.mark.asyncio
async def test_run_from_a_running_loop_shows_no_machinery() -> None:
    # run() inside a running loop goes through the background loop thread.
    with pytest.raises(NodeError) as info:
        Pipeline([ratio], name="calc").run({"x": 0})
    assert machinery(shown(info.value)) == []


def test_a_nested_map_failure_shows_the_node_and_the_caller() -> None:
    inner = Pipeline([ratio], name="inner")
    outer = Pipeline([inner.as_node(map_over="x", name="each")], name="outer")
    with pytest.raises(NodeError) as info:
        outer.map({"x": [[1], [2, 0]]}, map_over="x")
    text = shown(info.value)
    assert machinery(text) == []
    assert [name for _, name in frames(text)] == [
        "ratio",
        "test_a_nested_map_failure_shows_the_node_and_the_caller",
    ]


def test_the_error_reaching_the_user_carries_no_exception_group() -> None:
    # IPython falls back to a plain stderr dump when any __context__ is a group.
    pipeline = Pipeline([ratio], name="calc", engine=HyperNodesEngine(map_executor="async"))
    with pytest.raises(NodeError) as info:
        pipeline.map({"x": [1, 0, 2]}, map_over="x")
    chained: BaseException | None = info.value
    while chained is not None:
        assert not isinstance(chained, BaseExceptionGroup)
        chained = chained.__context__ or chained.__cause__


def test_input_errors_point_at_the_callers_line() -> None:
    @node(output_name="scaled")
    def scale(wait: float, factor: float) -> float:
        return wait * factor

    with pytest.raises(MissingInputError) as info:  # `factor` is missing for every item
        Pipeline([ratio, wait, scale], name="calc").map({"x": [1, 2]}, map_over="x")
    assert machinery(shown(info.value)) == []
    with pytest.raises(MissingInputError) as info:
        Pipeline([ratio], name="calc").run()
    text = shown(info.value)
    assert machinery(text) == []
    assert [name for _, name in frames(text)] == ["test_input_errors_point_at_the_callers_line"]


@pytest.mark.parametrize("config", ENGINES, ids=ENGINE_IDS)
def test_the_debug_switch_keeps_every_frame(
    config: dict[str, Any],
    engines: Callable[..., HyperNodesEngine],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(DEBUG_ENV, "1")
    pipeline = Pipeline([ratio, wait], name="calc", engine=engines(**config))
    with pytest.raises(NodeError) as info:
        pipeline.map({"x": [1, 0, 2]}, map_over="x")
    text = shown(info.value)
    assert any(f.startswith(MACHINERY[0]) for f, _ in frames(text))
    assert (__file__, "ratio") in frames(text)
    assert f"{DEBUG_ENV}=1" not in text


def test_frames_of_stdlib_code_the_user_called_are_kept() -> None:
    @node(output_name="loop")
    def nested_loop(x: int) -> int:
        async def inner() -> int:
            raise UserError("from the user's own event loop")

        return asyncio.run(inner())

    with pytest.raises(NodeError) as info:
        Pipeline([nested_loop], name="calc").run({"x": 1})
    cause = info.value.__cause__
    assert isinstance(cause, UserError)
    names = [name for _, name in frames("".join(traceback.format_tb(cause.__traceback__)))]
    # The user's asyncio.run() is theirs: its frames stay between their two frames.
    assert names[0] == "nested_loop"
    assert names[-1] == "inner"
    assert "run_until_complete" in names


def test_errors_that_are_not_hypernodes_errors_keep_their_frames() -> None:
    def kernel_bug() -> None:
        raise RuntimeError("a bug")

    err = RuntimeError("not ours")
    try:
        kernel_bug()
    except RuntimeError as exc:
        err = exc
    before = frames(shown(err))
    with pytest.raises(TypeError):  # a bad argument is not a HyperNodesError: left alone
        Pipeline([ratio]).run([1])  # type: ignore[arg-type]
    assert frames(shown(err)) == before


def test_hiding_is_idempotent_and_notes_once() -> None:
    with pytest.raises(NodeError) as info:
        Pipeline([ratio], name="calc").run({"x": 0})
    err = info.value
    first = shown(err)
    hide_kernel_frames(err)
    assert shown(err) == first
    assert first.count(f"{DEBUG_ENV}=1") == 1


@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize("where", ["map_executor", "node_executor"])
def test_a_process_workers_traceback_shows_the_users_frames_not_the_kernels(
    where: str, debug: bool, engines: Callable[..., HyperNodesEngine], monkeypatch: Any
) -> None:
    # The worker's traceback arrives as a note (rendered from data): it is trimmed like
    # the local one, and the worker's own NodeError around the user's error is left out.
    if debug:
        monkeypatch.setenv(DEBUG_ENV, "1")
    pipeline = Pipeline([ratio], name="calc", engine=engines(**{where: "parallel"}))
    with pytest.raises(NodeError) as info:
        pipeline.map({"x": [1, 0, 2]}, map_over="x")
    err = info.value
    notes = "\n".join([*getattr(err, "__notes__", ()), *getattr(err.__cause__, "__notes__", ())])
    assert "Traceback in the worker:" in notes
    assert (__file__, "ratio") in frames(notes)
    assert 'raise UserError("x must not be zero")' in notes
    if debug:
        assert machinery(notes) != []
    else:
        assert machinery(notes) == []
        assert "hypernodes.errors.NodeError" not in notes
        assert len(shown(info.value).splitlines()) < 30
