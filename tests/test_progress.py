"""ProgressCallback: bars read back from the text they write (tqdm and rich)."""

from __future__ import annotations

import io
import pickle
import re
import subprocess
import sys
import threading
from typing import Any

import pytest

import hypernodes.progress as progress
from hypernodes import (
    CallbackContext,
    HyperNodesEngine,
    MemoryCache,
    NodeError,
    Pipeline,
    ProgressCallback,
    node,
)
from hypernodes.callbacks import Dispatcher

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_BAR = re.compile(
    r"^(?P<label>\s*\S.*?)\s*:\s+\d+%\|.*?\|\s*(?P<n>\d+)/(?P<total>\d+)\s*\[(?P<meta>[^\]]*)\]"
)


def states(text: str) -> list[tuple[str, int, int, str]]:
    """Every (label, n, total, postfix-ish meta) a tqdm bar drew, in order."""
    out = []
    for chunk in re.split(r"[\r\n]", _ANSI.sub("", text)):
        m = _BAR.match(chunk)
        if m:
            out.append((m["label"], int(m["n"]), int(m["total"]), m["meta"]))
    return out


def final(text: str) -> dict[str, tuple[int, int, str]]:
    """The last state of each bar, by label (indentation kept)."""
    return {label: (n, total, meta) for label, n, total, meta in states(text)}


def bars(**options: Any) -> tuple[ProgressCallback, io.StringIO]:
    out = io.StringIO()
    return ProgressCallback(file=out, backend="tqdm", min_interval=0, **options), out


@node
def double(x: int) -> int:
    return 2 * x


@node
def inc(double: int) -> int:
    return double + 1


@node
def total(inc: list[int]) -> int:
    return sum(inc)


def nested3() -> Pipeline:
    """top -> batches (map) -> middle -> each (map) -> inner(double, inc)."""
    inner = Pipeline([double, inc], name="inner")
    middle = Pipeline([inner.as_node(map_over="x", name="each"), total], name="middle")
    batch = middle.as_node(map_over="x", name="batches", output_mapping={"total": "totals"})
    return Pipeline([batch], name="top")


# -- runs and maps -----------------------------------------------------------------------


def test_a_run_has_one_bar_counting_its_nodes() -> None:
    cb, out = bars()
    assert Pipeline([double, inc], name="p", callbacks=[cb]).run({"x": 1}) == {
        "double": 2,
        "inc": 3,
    }
    assert final(out.getvalue()) == {"p": (2, 2, final(out.getvalue())["p"][2])}
    assert "node/s" in final(out.getvalue())["p"][2]
    seen = [n for _, n, _, _ in states(out.getvalue())]
    assert seen == sorted(seen) and seen[0] == 0  # starts at 0 and only goes up


def test_a_run_restricted_by_output_name_ends_full() -> None:
    cb, out = bars()
    Pipeline([double, inc], name="p", callbacks=[cb]).run({"x": 1}, output_name="double")
    n, tot, _ = final(out.getvalue())["p"]
    assert n == tot == 1


def test_a_map_counts_items() -> None:
    cb, out = bars()
    Pipeline([double, inc], name="p", callbacks=[cb]).map({"x": list(range(7))}, map_over="x")
    n, tot, meta = final(out.getvalue())["p"]
    assert (n, tot) == (7, 7) and "item/s" in meta


def test_items_finishing_out_of_order_are_counted_once_each() -> None:
    release = threading.Event()

    @node
    def gate(x: int) -> int:
        if x == 0:  # the first item finishes last
            assert release.wait(10)
        return x

    class Release(ProgressCallback):
        def on_map_item_end(self, **event: Any) -> None:
            super().on_map_item_end(**event)
            if event["index"] == 3:
                release.set()

    out = io.StringIO()
    cb = Release(file=out, backend="tqdm", min_interval=0)
    engine = HyperNodesEngine(map_executor="threaded", max_workers=4)
    with engine:
        Pipeline([gate], name="p", callbacks=[cb], engine=engine).map(
            {"x": list(range(8))}, map_over="x"
        )
    drawn = [(n, tot) for label, n, tot, _ in states(out.getvalue()) if label == "p"]
    assert drawn[-1] == (8, 8)
    assert all(n <= tot for n, tot in drawn)
    assert [n for n, _ in drawn] == sorted(n for n, _ in drawn)


def test_concurrent_nodes_on_the_async_executor() -> None:
    import asyncio

    @node
    async def a(x: int) -> int:
        await asyncio.sleep(0.01)
        return x

    @node
    async def b(x: int) -> int:
        return x

    @node
    def c(a: int, b: int) -> int:
        return a + b

    cb, out = bars()
    engine = HyperNodesEngine(node_executor="async", map_executor="async")
    Pipeline([a, b, c], name="p", callbacks=[cb], engine=engine).map({"x": [1, 2, 3]}, map_over="x")
    assert final(out.getvalue())["p"][:2] == (3, 3)


# -- nesting -----------------------------------------------------------------------------


def test_nested_maps_get_one_bar_per_level_with_aggregated_counts() -> None:
    cb, out = bars()
    pipeline = nested3().with_callbacks([cb])
    assert pipeline.run({"x": [[1, 2, 3], [4, 5], [6, 7, 8, 9]]}) == {"totals": [15, 20, 64]}
    text = out.getvalue()
    last = final(text)
    assert set(last) == {"top", "  batches", "    each"}  # three bars, not one per item
    assert last["top"][:2] == (1, 1)
    assert last["  batches"][:2] == (3, 3)
    assert last["    each"][:2] == (9, 9)
    first_seen = list(dict.fromkeys(label for label, *_ in states(text)))
    assert first_seen == ["top", "  batches", "    each"]  # outer bars above inner ones


def test_a_nested_pipeline_bar_counts_its_nodes() -> None:
    cb, out = bars()
    inner = Pipeline([double, inc], name="inner")
    outer = Pipeline(
        [inner.as_node(name="sub"), node(lambda inc: inc, name="last", output_name="y")]
    )
    outer.with_callbacks([cb]).with_name("outer").run({"x": 1})
    last = final(out.getvalue())
    assert last["outer"][:2] == (2, 2)
    assert last["  sub"][:2] == (2, 2)


def test_a_map_of_nested_pipelines_aggregates_into_one_bar() -> None:
    cb, out = bars()
    inner = Pipeline([double, inc], name="inner")
    outer = Pipeline([inner.as_node(name="sub")], name="outer", callbacks=[cb])
    outer.map({"x": list(range(5))}, map_over="x")
    last = final(out.getvalue())
    assert last == {"outer": last["outer"], "  sub": last["  sub"]}
    assert last["outer"][:2] == (5, 5)
    assert last["  sub"][:2] == (10, 10)  # 2 nodes x 5 items


# -- cache hits and failures -------------------------------------------------------------


def test_cache_hits_are_counted_and_shown() -> None:
    cache = MemoryCache()
    pipeline = Pipeline([double, inc], name="p", cache=cache)
    pipeline.run({"x": 5})
    cb, out = bars()
    pipeline.with_callbacks([cb]).run({"x": 5})
    n, tot, meta = final(out.getvalue())["p"]
    assert (n, tot) == (2, 2) and "cached=2" in meta


def test_cache_hits_inside_map_items_show_on_the_map_bar() -> None:
    cb, out = bars()
    level = CallbackContext("map", "p")
    pipeline = Pipeline([double], name="p")
    cb.on_map_start(context=level, pipeline=pipeline, n_items=2, map_over=("x",))
    for i in range(2):
        item = level.child("item", "p", index=i)
        cb.on_map_item_start(context=item, index=i)
        cb.on_node_cached(context=item, node=double, outputs={"double": 0})
        cb.on_map_item_end(context=item, index=i, duration=0.0, error=None)
    cb.on_map_end(context=level, pipeline=pipeline, n_items=2, duration=0.0, error=None)
    n, tot, meta = final(out.getvalue())["p"]
    assert (n, tot) == (2, 2) and "cached=2" in meta


def test_a_failing_run_closes_its_bars_and_shows_the_failure() -> None:
    @node
    def boom(double: int) -> int:
        raise RuntimeError("nope")

    cb, out = bars()
    with pytest.raises(NodeError):
        Pipeline([double, boom], name="p", callbacks=[cb]).run({"x": 1})
    n, tot, meta = final(out.getvalue())["p"]
    assert (n, tot) == (1, 2) and "failed=1" in meta
    assert out.getvalue().endswith("\n")  # closed: the cursor left the bar's line


def test_a_failing_item_in_a_nested_map_is_shown() -> None:
    @node
    def picky(x: int) -> int:
        if x == 3:
            raise ValueError(x)
        return x

    cb, out = bars()
    outer = Pipeline([Pipeline([picky], name="in").as_node(map_over="x", name="each")], name="o")
    with pytest.raises(NodeError):
        outer.with_callbacks([cb]).run({"x": [1, 2, 3, 4]})
    n, _, meta = final(out.getvalue())["  each"]
    assert n == 2 and "failed=1" in meta


# -- options, backends, environments -----------------------------------------------------


def test_disable_true_costs_nothing_and_draws_nothing() -> None:
    cb, out = bars(disable=True)
    assert Dispatcher.create([cb]) is None
    Pipeline([double], callbacks=[cb]).run({"x": 1})
    assert out.getvalue() == ""


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_disable_none_shows_bars_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "xterm")
    assert not ProgressCallback(disable=None, file=io.StringIO()).enabled
    assert ProgressCallback(disable=None, file=FakeTTY()).enabled


def test_rich_backend_draws_the_same_levels() -> None:
    out = io.StringIO()
    cb = ProgressCallback(file=out, backend="rich")
    nested3().with_callbacks([cb]).run({"x": [[1, 2, 3], [4, 5], [6, 7, 8, 9]]})
    text = out.getvalue()
    assert re.search(r"^top\s.*1/1 nodes", text, re.M)
    assert re.search(r"^  batches\s.*3/3 items", text, re.M)
    assert re.search(r"^    each\s.*9/9 items", text, re.M)


class Output:
    """A notebook cell output shown with a display id: what a saved notebook keeps."""

    def __init__(self, shown: list[Output], bundle: dict[str, str]) -> None:
        self.texts = [bundle["text/plain"]]
        shown.append(self)

    def update(self, bundle: dict[str, str], raw: bool) -> None:
        assert raw
        self.texts.append(bundle["text/plain"])


@pytest.fixture
def notebook_without_widgets(monkeypatch: pytest.MonkeyPatch) -> list[Output]:
    shown: list[Output] = []
    monkeypatch.setattr(progress, "_in_notebook", lambda: True)
    monkeypatch.setattr(progress, "_has_widgets", lambda: False)
    monkeypatch.setattr(progress, "_show", lambda bundle: Output(shown, bundle))
    return shown


def test_in_a_notebook_without_widgets_one_line_carries_every_level(
    notebook_without_widgets: list[Output], capsys: pytest.CaptureFixture[str]
) -> None:
    cb = ProgressCallback(backend="tqdm", min_interval=0)
    nested3().with_callbacks([cb]).run({"x": [[1, 2, 3], [4, 5], [6, 7, 8, 9]]})
    (output,) = notebook_without_widgets  # one output, updated in place
    assert all("\r" not in t and "\n" not in t for t in output.texts)
    last = final(output.texts[-1])
    assert set(last) == {"top"}
    assert "batches 3/3, each 9/9" in last["top"][2]
    assert capsys.readouterr().err == ""  # no stream of redraws


def test_in_a_notebook_without_widgets_a_finished_map_ends_at_100_percent(
    notebook_without_widgets: list[Output],
) -> None:
    # The last state is what a saved notebook shows (it read "0%" as a stream of redraws).
    cb = ProgressCallback(backend="tqdm")  # the default redraw interval: the map is quicker
    Pipeline([double], name="fast").with_callbacks([cb]).map({"x": list(range(50))}, "x")
    (output,) = notebook_without_widgets
    ((label, (n, total, _)),) = final(output.texts[-1]).items()
    assert (label, n, total) == ("fast", 50, 50)
    assert "100%|██████████|" in output.texts[-1]


def test_unknown_backend_and_missing_library_name_the_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ValueError, match="backend must be 'auto', 'tqdm' or 'rich'"):
        ProgressCallback(backend="bars")  # type: ignore[arg-type]
    monkeypatch.setattr(progress.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match=r"pip install 'hypernodes\[progress\]'"):
        ProgressCallback()


def test_it_pickles_without_its_stream() -> None:
    cb = ProgressCallback(file=io.StringIO(), leave=False)
    clone = pickle.loads(pickle.dumps(cb))
    assert clone.file is None and clone.leave is False and clone.backend == cb.backend


def test_importing_hypernodes_does_not_import_a_bar_library() -> None:
    code = (
        "import sys, hypernodes; hypernodes.ProgressCallback();"
        "print(sorted(m for m in ('tqdm', 'rich', 'IPython') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.slow
def test_process_pool_items_are_counted() -> None:
    cb, out = bars()
    engine = HyperNodesEngine(map_executor="parallel", max_workers=2)
    with engine:
        Pipeline([double, inc], name="p", callbacks=[cb], engine=engine).map(
            {"x": list(range(4))}, map_over="x"
        )
    assert final(out.getvalue())["p"][:2] == (4, 4)
