"""``Pipeline.explain``: hit or miss per node, and the reason, without running a node."""

from __future__ import annotations

import importlib
import itertools
import json
import linecache
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from click.testing import CliRunner

from hypernodes import DiskCache, MemoryCache, Node, Pipeline, node
from hypernodes.cache import Cache, CacheStats
from hypernodes.cache.base import MISSING
from hypernodes.cache.explain import REASONS
from hypernodes.cli.app import cli

_counter = itertools.count()

SOURCE = '''
THRESHOLD = 10
RAN = []


def helper(x):
    return x * 2


def prepare(x: int, scale: int = 3) -> int:
    """Prepare x."""
    RAN.append("prepare")
    return helper(x) + scale  # scaled


def finish(prepared: int) -> int:
    RAN.append("finish")
    return prepared + THRESHOLD


def other(x: int) -> int:
    RAN.append("other")
    return x - 1
'''

# (edit, old text, new text, expected misses: node -> (reason, names))
EDITS: list[tuple[str, str, str, dict[str, tuple[str, tuple[str, ...]]]]] = [
    ("comment", "# scaled", "# scaled by scale, see the docs", {}),
    ("docstring", '"""Prepare x."""', '"""Prepare x for finishing."""', {}),
    (
        "formatting",
        "return helper(x) + scale",
        "return (\n        helper(x)\n        + scale\n    )",
        {},
    ),
    (
        "default",
        "scale: int = 3",
        "scale: int = 4",
        {
            "prepare": ("code changed", ("M.prepare",)),
            "finish": ("upstream changed", ("prepare",)),
        },
    ),
    (
        "constant",
        "THRESHOLD = 10",
        "THRESHOLD = 11",
        {"finish": ("code changed", ("M.finish",))},
    ),
    (
        "helper",
        "return x * 2",
        "return x * 3",
        {
            "prepare": ("code changed", ("M.helper",)),
            "finish": ("upstream changed", ("prepare",)),
        },
    ),
]


class Modules:
    """Writes a module into a temporary directory on ``sys.path`` and (re)imports it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.name = f"hnexplain{next(_counter)}"

    def load(self, source: str) -> ModuleType:
        (self.root / f"{self.name}.py").write_text(textwrap.dedent(source))
        linecache.checkcache()
        importlib.invalidate_caches()
        if self.name in sys.modules:
            return importlib.reload(sys.modules[self.name])
        return importlib.import_module(self.name)


@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Modules]:
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # no stale .pyc between edits
    mods = Modules(tmp_path)
    yield mods
    sys.modules.pop(mods.name, None)


@pytest.fixture(params=["memory", "disk"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    return MemoryCache() if request.param == "memory" else DiskCache(tmp_path / "cache")


def build(mod: ModuleType, store: Any) -> Pipeline:
    return Pipeline(
        [
            Node(mod.prepare, output_name="prepared"),
            Node(mod.finish, output_name="finished"),
            Node(mod.other, output_name="o"),
        ],
        cache=store,
    )


def summary(report: Any) -> dict[str, tuple[str, tuple[str, ...]]]:
    return {r.node: (r.reason, r.names) for r in report if r.status == "miss"}


@pytest.mark.parametrize(("edit", "old", "new", "misses"), EDITS, ids=[e[0] for e in EDITS])
def test_an_edit_misses_exactly_that_node_and_its_downstream(
    modules: Modules,
    store: Any,
    edit: str,
    old: str,
    new: str,
    misses: dict[str, tuple[str, tuple[str, ...]]],
) -> None:
    mod = modules.load(SOURCE)
    build(mod, store).run({"x": 1})
    assert SOURCE.count(old) == 1
    mod = modules.load(SOURCE.replace(old, new))
    pipeline = build(mod, store)
    report = pipeline.explain({"x": 1})
    expected = {
        n: (reason, tuple(x.replace("M.", f"{modules.name}.") for x in names))
        for n, (reason, names) in misses.items()
    }
    assert summary(report) == expected
    assert mod.RAN == []  # explain ran nothing
    # The run does what explain said, and leaves every node a hit.
    pipeline.run({"x": 1})
    assert sorted(mod.RAN) == sorted(misses)
    assert pipeline.explain({"x": 1}).misses == []


def test_the_reasons_in_words(modules: Modules, store: Any) -> None:
    mod = modules.load(SOURCE)
    pipeline = build(mod, store)
    cold = pipeline.explain({"x": 1})
    assert [(r.node, r.status, r.reason) for r in cold] == [
        ("prepare", "miss", "never computed"),
        ("finish", "miss", "upstream changed"),
        ("other", "miss", "never computed"),
    ]
    pipeline.run({"x": 1})
    warm = pipeline.explain({"x": 1})
    assert warm.hits == ["prepare", "finish", "other"]
    changed = pipeline.explain({"x": 2})
    assert changed["prepare"].detail == "input 'x' changed"
    assert changed["other"].names == ("x",)
    assert changed["finish"].detail.startswith("upstream node 'prepare' re-runs first")
    mod = modules.load(SOURCE.replace("return x * 2", "return x * 3"))
    edited = build(mod, store).explain({"x": 1})
    assert edited["prepare"].detail == f"helper '{modules.name}.helper' changed"


def test_a_value_reached_through_another_path_is_a_hit(store: Any) -> None:
    @node(output_name="region")
    def user_region(user: str) -> str:
        return {"ann": "eu", "bob": "eu", "cid": "us"}[user]

    @node(output_name="config")
    def load_config(region: str) -> str:
        return f"config of {region}"

    pipeline = Pipeline([user_region, load_config], cache=store)
    pipeline.run({"user": "ann"})
    pipeline.run({"user": "bob"})
    assert pipeline.explain({"user": "bob"}).hits == ["user_region", "load_config"]
    assert pipeline.explain({"user": "cid"}).misses == ["user_region", "load_config"]


def test_cache_false_not_cacheable_and_no_cache() -> None:
    @node(output_name="a", cache=False)
    def impure(x: int) -> int:
        return x

    @node(output_name="b")
    def locked(a: int, guard: Any) -> int:
        return a

    report = Pipeline([impure, locked], cache=MemoryCache()).explain(
        {"x": 1, "guard": threading.Lock()}
    )
    assert report["impure"].reason == "cache=False"
    row = report["locked"]
    assert (row.status, row.reason, row.names) == ("miss", "not cacheable", ("guard",))
    assert "lock" in row.detail and "register_fingerprint" in row.detail
    bare = Pipeline([impure]).explain({"x": 1})
    assert bare["impure"].reason == "no cache"


def test_an_evicted_entry_is_not_in_the_store() -> None:
    @node(output_name="a")
    def first(x: int) -> int:
        return x + 1

    @node(output_name="b")
    def second(x: int) -> int:
        return x + 2

    pipeline = Pipeline([first, second], cache=MemoryCache(max_size=1))
    pipeline.run({"x": 1})  # second's entry pushes first's out
    report = pipeline.explain({"x": 1})
    assert [(r.node, r.reason) for r in report] == [("first", "not in store"), ("second", "cached")]


def test_table_rows_html_and_repr() -> None:
    @node(output_name="a")
    def first(x: int) -> int:
        return x + 1

    pipeline = Pipeline([first], cache=MemoryCache(), name="tiny")
    pipeline.run({"x": 1})
    report = pipeline.explain({"x": 1})
    assert str(report).splitlines() == [
        "node   cache  why",
        "-----  -----  ---",
        "first  hit    cached",
    ]
    assert report.rows == [
        {"node": "first", "status": "hit", "reason": "cached", "detail": "cached", "names": []}
    ]
    assert "<td><code>first</code></td>" in report._repr_html_()
    assert repr(report) == "<Explanation of 'tiny': 1 hits, 0 misses>"
    assert {r["reason"] for r in report.rows} <= set(REASONS)


def test_a_store_without_the_new_methods_still_explains() -> None:
    class DictStore(Cache):
        def __init__(self) -> None:
            self.data: dict[str, Any] = {}

        def get(self, key: str, default: Any = MISSING) -> Any:
            return self.data.get(key, default)

        def put(self, key: str, value: Any, *, node: str | None = None) -> None:
            self.data[key] = value

        def __contains__(self, key: object) -> bool:
            return key in self.data

        def clear(self) -> None:
            self.data.clear()

        def stats(self) -> CacheStats:
            return CacheStats()

    @node(output_name="a")
    def first(x: int) -> int:
        return x + 1

    @node(output_name="b")
    def second(a: int) -> int:
        return a * 2

    pipeline = Pipeline([first, second], cache=DictStore())
    assert pipeline.explain({"x": 1}).misses == ["first", "second"]
    pipeline.run({"x": 1})
    assert pipeline.explain({"x": 1}).hits == ["first", "second"]


def test_cli_run_explain(tmp_path: Path) -> None:
    script = tmp_path / "flow.py"
    script.write_text(
        textwrap.dedent(
            f"""
            from hypernodes import DiskCache, Pipeline, node

            @node(output_name="y")
            def double(x: int) -> int:
                return 2 * x

            pipeline = Pipeline([double], cache=DiskCache({str(tmp_path / "c")!r}))
            """
        )
    )
    runner = CliRunner()
    args = ["run", f"{script}:pipeline", "--inputs", '{"x": 2}']
    table = runner.invoke(cli, [*args, "--explain"])
    assert table.exit_code == 0, table.output
    assert "double  miss   never computed" in table.output
    assert runner.invoke(cli, args).exit_code == 0
    rows = runner.invoke(cli, [*args, "--explain", "--json"])
    assert rows.exit_code == 0, rows.output
    assert json.loads(rows.output) == [
        {"node": "double", "status": "hit", "reason": "cached", "detail": "cached", "names": []}
    ]
    bad = runner.invoke(cli, [*args, "--json"])
    assert bad.exit_code == 2 and "--json goes with --explain" in bad.output
