"""Code identity: edits to a node or the user code it reaches change it; nothing else does."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import functools
import importlib
import itertools
import json
import linecache
import logging
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from hypernodes import node
from hypernodes.cache import (
    UnfingerprintableError,
    _bytecode,
    _walk,
    code_dependencies,
    code_identity,
    fingerprint,
    register_fingerprint,
)

_counter = itertools.count()


class Modules:
    """Writes modules into a temporary directory on ``sys.path`` and (re)imports them,
    the way an edit followed by a fresh run would."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.prefix = f"hnci{next(_counter)}_"
        self.names: list[str] = []

    def name(self, short: str) -> str:
        return self.prefix + short

    def write(self, short: str, source: str) -> None:
        text = textwrap.dedent(source).replace("PFX_", self.prefix)
        (self.root / f"{self.name(short)}.py").write_text(text)
        linecache.checkcache()

    def load(self, *shorts: str) -> list[ModuleType]:
        """(Re)import modules in the order given (dependencies first)."""
        importlib.invalidate_caches()
        out = []
        for short in shorts:
            full = self.name(short)
            if full in sys.modules:
                out.append(importlib.reload(sys.modules[full]))
            else:
                self.names.append(full)
                out.append(importlib.import_module(full))
        return out


@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Modules]:
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # no stale .pyc between edits
    mods = Modules(tmp_path)
    yield mods
    for name in mods.names:
        sys.modules.pop(name, None)


HELPERS2 = """
def deep(v):
    return v {op}
"""

HELPERS = """
from PFX_helpers2 import deep

def scale(v):
    return deep(v) * 2

def unrelated(v):
    return v {unrelated}
"""

NODES = """
import json
import os.path
import PFX_helpers as helpers

{padding}

def local_helper(v):
    return helpers.scale(v) + 1

def my_node(x):
    return local_helper(x) + len(json.dumps(x)) + len(os.path.join("a", "b"))

def other_node(x):
    return x {other}
"""


def build(
    modules: Modules,
    *,
    op: str = "+ 1",
    unrelated: str = "- 1",
    padding: str = "",
    other: str = "* 3",
    node_op: str = "+ 1",
) -> Callable[..., Any]:
    modules.write("helpers2", HELPERS2.format(op=op))
    modules.write("helpers", HELPERS.format(unrelated=unrelated))
    nodes = NODES.format(padding=padding, other=other).replace(
        "helpers.scale(v) + 1", f"helpers.scale(v) {node_op}"
    )
    modules.write("nodes", nodes)
    _, _, mod = modules.load("helpers2", "helpers", "nodes")
    return mod.my_node  # type: ignore[no-any-return]


def test_identity_is_a_stable_hex_digest(modules: Modules) -> None:
    fn = build(modules)
    ident = code_identity(fn)
    assert len(ident) == 32 and int(ident, 16) >= 0
    assert code_identity(fn) == ident


def test_editing_the_node_changes_it(modules: Modules) -> None:
    before = code_identity(build(modules))
    assert code_identity(build(modules, node_op="+ 2")) != before


def test_a_function_source_is_found_through_its_module_not_a_file_search(
    modules: Modules, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Finding the module of a bare code object makes inspect map every loaded module's
    # file first (10-20 ms on a process's first identity); a function names its module.
    modules.write(
        "plain",
        """
        import functools

        def inner(x):
            return x + 1

        @functools.wraps(inner)
        def wrapper(x):
            return inner(x) * 2
    """,
    )
    (mod,) = modules.load("plain")
    searched: list[object] = []
    getmodule = _bytecode.inspect.getmodule

    def spy(obj: object, *args: object) -> object:
        if not hasattr(obj, "__module__"):
            searched.append(obj)
        return getmodule(obj, *args)

    monkeypatch.setattr(_bytecode.inspect, "getmodule", spy)
    source = _bytecode._source(mod.inner.__code__, mod.inner)
    assert searched == []
    assert source is not None and "return x + 1" in source
    assert source == _bytecode._source(mod.inner.__code__)  # the same source either way
    assert searched != []  # (the spy sees the search a bare code object makes)
    # A wrapper's own code is digested with its own source, not the source inspect would
    # unwrap it to.
    assert "inner(x) * 2" in (_bytecode._source(mod.wrapper.__code__, mod.wrapper) or "")
    assert _bytecode._source(mod.inner.__code__, mod.wrapper) is not None  # (code asked)


def test_editing_a_helper_two_levels_deep_changes_it(modules: Modules) -> None:
    # pipefunc serves stale downstream results after an upstream function is edited;
    # hypernodes 0.4.8 misses edits to helper functions.
    before = code_identity(build(modules))
    assert code_identity(build(modules, op="+ 2")) != before
    assert code_identity(build(modules, op="+ 1")) == before  # edit undone


def test_editing_unrelated_code_does_not_change_it(modules: Modules) -> None:
    before = code_identity(build(modules))
    assert code_identity(build(modules, unrelated="- 2")) == before  # same module as a helper
    assert code_identity(build(modules, other="* 4")) == before  # same module as the node
    moved = build(modules, padding="# a comment\n\nCONSTANT_LIST = [1, 2]\n\n\n")
    assert code_identity(moved) == before  # the node moved down the file


def test_reloading_unchanged_code_gives_the_same_identity(modules: Modules) -> None:
    first = build(modules)
    before = code_identity(first)
    again = build(modules)
    assert again is not first
    assert code_identity(again) == before


def test_the_identity_is_the_same_in_a_fresh_process(modules: Modules) -> None:
    ident = code_identity(build(modules))
    script = f"""
        import sys
        sys.path.insert(0, {str(modules.root)!r})
        from hypernodes.cache import code_identity
        import {modules.name("nodes")} as nodes
        print(code_identity(nodes.my_node))
    """
    root = str(Path(__file__).resolve().parent.parent)
    outputs = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": root}
        proc = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(script)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        outputs.add(proc.stdout.strip())
    assert outputs == {ident}


def test_dependencies_list_user_code_only(modules: Modules) -> None:
    deps = code_dependencies(build(modules))
    p = modules.prefix
    assert deps == (
        f"{p}nodes.my_node",
        f"{p}nodes.local_helper",
        f"{p}helpers.scale",
        f"{p}helpers2.deep",
    )  # json.dumps, os.path.join and len are named, never followed


def test_library_callees_are_not_followed(
    modules: Modules, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A module under a site-packages-like directory is a library: named, never followed.
    site = modules.root / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(_bytecode, "LIBRARY_PREFIXES", (str(site) + os.sep,))
    monkeypatch.setattr(_bytecode, "_USER", {})
    lib = modules.name("lib")
    (site / f"{lib}.py").write_text("def libfn(v):\n    return v + 1\n")
    modules.write("app", "from PFX_lib import libfn\n\ndef run(x):\n    return libfn(x)\n")
    (app,) = modules.load("app")
    modules.names.append(lib)
    assert code_dependencies(app.run) == (f"{modules.prefix}app.run",)
    before = code_identity(app.run)
    (site / f"{lib}.py").write_text("def libfn(v):\n    return v + 2\n")
    importlib.reload(sys.modules[lib])
    (app,) = modules.load("app")
    assert app.run(1) == 3  # the edit is live...
    assert code_identity(app.run) == before  # ...but library code is not followed


LIBRARY_DECORATOR = """
import functools, threading

def retry(fn):
    state = {"lock": threading.Lock()}  # library state no fingerprint could describe

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with state["lock"]:
            return fn(*args, **kwargs)

    return wrapper
"""


def test_code_wrapped_by_library_decorators_is_followed(
    modules: Modules, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = modules.root / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(_bytecode, "LIBRARY_PREFIXES", (str(site) + os.sep,))
    monkeypatch.setattr(_bytecode, "_USER", {})
    monkeypatch.setattr(_bytecode, "_LIBRARY_FILES", {})
    lib = modules.name("retrylib")
    (site / f"{lib}.py").write_text(LIBRARY_DECORATOR)
    modules.names.append(lib)
    source = """
        import functools
        from PFX_retrylib import retry

        @functools.lru_cache
        def cached_helper(v):
            return v {op}

        @retry
        def my_node(x):
            return cached_helper(x)

        @functools.lru_cache
        def cached_node(x):
            return x {op}
    """
    modules.write("decorated", source.format(op="+ 1"))
    (mod,) = modules.load("decorated")
    before = (code_identity(mod.my_node), code_identity(mod.cached_node))
    assert mod.my_node.__module__ == mod.__name__  # the wrapper claims the user's module
    modules.write("decorated", source.format(op="+ 2"))
    (mod,) = modules.load("decorated")
    after = (code_identity(mod.my_node), code_identity(mod.cached_node))
    assert after[0] != before[0] and after[1] != before[1]


# -- notebooks: redefinition in one namespace -----------------------------------------------


def run_cell(namespace: dict[str, Any], source: str) -> None:
    """Run ``source`` the way IPython runs a cell: its own file name, source in linecache."""
    filename = f"<ipython-input-{next(_counter)}>"
    source = textwrap.dedent(source)
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    exec(compile(source, filename, "exec"), namespace)


def test_redefining_a_helper_in_a_notebook_changes_the_node() -> None:
    ns: dict[str, Any] = {"__name__": "__main__"}
    run_cell(ns, "def helper(v):\n    return v + 1\n")
    run_cell(ns, "def my_node(x):\n    return helper(x) * 2\n")
    before = code_identity(ns["my_node"])
    run_cell(ns, "def helper(v):\n    return v + 100\n")  # same name, new function
    after = code_identity(ns["my_node"])
    assert after != before
    run_cell(ns, "def helper(v):\n    return v + 1\n")  # back to the original text
    assert code_identity(ns["my_node"]) == before


def test_re_decorating_the_same_code_keeps_the_identity() -> None:
    ns: dict[str, Any] = {"__name__": "__main__"}
    cell = "def my_node(x):\n    return x + 1\n"
    run_cell(ns, cell)
    first = ns["my_node"]
    run_cell(ns, cell)
    assert ns["my_node"] is not first
    assert code_identity(ns["my_node"]) == code_identity(first)
    assert code_identity(node(ns["my_node"]).func) == code_identity(first)


def test_a_helper_defined_after_the_node_is_seen() -> None:
    ns: dict[str, Any] = {"__name__": "__main__"}
    run_cell(ns, "def my_node(x):\n    return later(x)\n")
    before = code_identity(ns["my_node"])  # ``later`` does not exist yet
    run_cell(ns, "def later(v):\n    return v\n")
    assert code_identity(ns["my_node"]) != before


def test_module_level_constants_count_other_objects_do_not() -> None:
    ns: dict[str, Any] = {"__name__": "__main__"}
    run_cell(ns, "THRESHOLD = 0.5\nCONFIG = {'k': 1}\n")
    run_cell(ns, "def my_node(x):\n    log.info('x'); return x > THRESHOLD and CONFIG['k']\n")
    ns["log"] = logging.getLogger("a")
    before = code_identity(ns["my_node"])
    ns["log"] = logging.getLogger("b")
    ns["CONFIG"] = {"k": 2}  # mutable module-level objects are inputs' business
    assert code_identity(ns["my_node"]) == before
    ns["THRESHOLD"] = 0.6
    assert code_identity(ns["my_node"]) != before


# -- closures, defaults, partials, methods, callable objects -------------------------------


def make_scaler(factor: Any) -> Callable[[int], Any]:
    def scaled(x: int) -> Any:
        return x * factor

    return scaled


def test_closure_values_are_part_of_the_identity() -> None:
    assert code_identity(make_scaler(2)) == code_identity(make_scaler(2))
    assert code_identity(make_scaler(2)) != code_identity(make_scaler(3))
    assert code_identity(make_scaler(2)) != code_identity(make_scaler(2.0))


def test_the_state_of_a_closed_over_mutable_object_is_not_part_of_the_identity() -> None:
    # Like a module-level object: a node's own side effect on it (a call log, a counter)
    # must not change its key. Its type still counts.
    weights = [1, 2]
    fn = make_scaler(weights)
    before = code_identity(fn)
    weights.append(3)
    assert code_identity(fn) == before
    assert code_identity(make_scaler([5])) == before
    assert code_identity(make_scaler({1: 2})) != before


def test_immutable_closure_values_count_by_value() -> None:
    class Mode(enum.Enum):
        FAST = 1
        SLOW = 2

    @dataclasses.dataclass(frozen=True)
    class Settings:
        threshold: float
        tags: tuple[str, ...] = ()

    for a, b in [
        (Mode.FAST, Mode.SLOW),
        (Settings(0.5), Settings(0.6)),
        (Path("a"), Path("b")),
        (datetime.date(2024, 1, 1), datetime.date(2024, 1, 2)),
        (decimal.Decimal("1.5"), decimal.Decimal("2.5")),
        (("a", (1, 2)), ("a", (1, 3))),
        (frozenset({1}), frozenset({2})),
        (None, b""),
    ]:
        assert code_identity(make_scaler(a)) == code_identity(make_scaler(a))
        assert code_identity(make_scaler(a)) != code_identity(make_scaler(b)), (a, b)


def test_a_frozen_dataclass_holding_a_mutable_object_counts_by_type() -> None:
    @dataclasses.dataclass(frozen=True)
    class Holder:
        items: list[int]

    held = Holder([1])
    fn = make_scaler(held)
    before = code_identity(fn)
    held.items.append(2)
    assert code_identity(fn) == before


def test_closed_over_code_counts_inside_tuples_and_bound_methods() -> None:
    def one(v: int) -> int:
        return v + 1

    def two(v: int) -> int:
        return v + 2

    assert code_identity(make_scaler((one, 3))) != code_identity(make_scaler((two, 3)))
    assert code_identity(make_scaler((one, 3))) != code_identity(make_scaler((one, 4)))
    # A bound method: the method's code and the class's code; the object's state does not.
    tool = Scaler(2)
    fn = make_scaler(tool.apply)
    before = code_identity(fn)
    tool.factor = 5
    assert code_identity(fn) == before
    assert code_identity(make_scaler(Scaler(7).apply)) == before
    assert code_identity(make_scaler(tool.__call__)) != before
    # A partial: its function and its immutable arguments.
    assert code_identity(make_scaler(functools.partial(one))) != code_identity(
        make_scaler(functools.partial(two))
    )
    assert code_identity(make_scaler(functools.partial(base_fn, k=1))) != code_identity(
        make_scaler(functools.partial(base_fn, k=2))
    )


def test_a_closed_over_user_object_counts_by_its_class() -> None:
    tool = Scaler(2)
    fn = make_scaler(tool)
    before = code_identity(fn)
    tool.factor = 3
    assert code_identity(fn) == before

    class Other(Scaler):
        pass

    assert code_identity(make_scaler(Other(2))) != before


def test_a_rebound_nonlocal_is_seen() -> None:
    state = 1

    def fn(x: int) -> int:
        return x + state

    before = code_identity(fn)
    state = 2  # rebinding the cell is the point
    assert code_identity(fn) != before


def test_a_constant_that_cannot_be_fingerprinted_raises_naming_the_closure_variable() -> None:
    @dataclasses.dataclass(frozen=True)
    class Opaque:
        n: int

    register_fingerprint(Opaque, lambda v: threading.Lock())
    with pytest.raises(UnfingerprintableError, match=r"closure variable 'factor'.*_thread.lock"):
        code_identity(make_scaler(Opaque(1)))


def test_a_closed_over_lock_or_module_counts_by_what_it_is() -> None:
    # Neither can be fingerprinted by value, and neither needs to be.
    assert code_identity(make_scaler(threading.Lock())) == code_identity(
        make_scaler(threading.Lock())
    )
    assert code_identity(make_scaler(json)) != code_identity(make_scaler(os))


def test_default_values_are_part_of_the_identity() -> None:
    def a(x: int, k: int = 1) -> int:
        return x + k

    before = code_identity(a)
    a.__defaults__ = (2,)
    assert code_identity(a) != before
    a.__defaults__ = (1,)
    assert code_identity(a) == before


def base_fn(x: int, k: int) -> int:
    return x * k


def test_partials_cover_their_bound_arguments() -> None:
    one = functools.partial(base_fn, k=1)
    assert code_identity(one) == code_identity(functools.partial(base_fn, k=1))
    assert code_identity(one) != code_identity(functools.partial(base_fn, k=2))
    assert code_identity(one) != code_identity(base_fn)


class Scaler:
    def __init__(self, factor: int) -> None:
        self.factor = factor

    def __call__(self, x: int) -> int:
        return x * self.factor

    def apply(self, x: int) -> int:
        return x * self.factor


def test_callable_objects_and_bound_methods_cover_their_state() -> None:
    assert code_identity(Scaler(2)) == code_identity(Scaler(2))
    assert code_identity(Scaler(2)) != code_identity(Scaler(3))
    assert code_identity(Scaler(2).apply) == code_identity(Scaler(2).apply)
    assert code_identity(Scaler(2).apply) != code_identity(Scaler(3).apply)
    assert code_identity(Scaler(2).apply) != code_identity(Scaler(2))


def test_editing_a_class_the_node_uses_changes_it(modules: Modules) -> None:
    source = """
        import functools

        class Tool:
            def run(self, x):
                return self.twice(x) + self.base

            @functools.cached_property
            def base(self):
                return 0

            @functools.lru_cache
            def twice(self, x):
                return x {op}

        def my_node(x):
            return Tool().run(x)
    """
    modules.write("tool", source.format(op="+ 1"))
    (mod,) = modules.load("tool")
    before = code_identity(mod.my_node)
    modules.write("tool", source.format(op="+ 2"))
    (mod,) = modules.load("tool")
    assert code_identity(mod.my_node) != before
    assert f"{modules.prefix}tool.Tool.run" in code_dependencies(mod.my_node)


def test_editing_the_class_of_a_module_level_object_changes_it(modules: Modules) -> None:
    source = """
        class Model:
            def predict(self, x):
                return x {op}

        model = Model()

        def my_node(x):
            return model.predict(x)
    """
    modules.write("model", source.format(op="* 2"))
    (mod,) = modules.load("model")
    before = code_identity(mod.my_node)
    mod.model.extra = [1]  # its state is not part of the identity
    assert code_identity(mod.my_node) == before
    modules.write("model", source.format(op="* 3"))
    (mod,) = modules.load("model")
    assert code_identity(mod.my_node) != before


def test_helpers_imported_inside_the_function_are_followed(modules: Modules) -> None:
    modules.write("inner", "def helper(v):\n    return v + 1\n")
    modules.write(
        "outer",
        """
        def my_node(x):
            from PFX_inner import helper
            import PFX_inner
            return helper(x) + PFX_inner.helper(x)
        """,
    )
    _, mod = modules.load("inner", "outer")
    before = code_identity(mod.my_node)
    assert f"{modules.prefix}inner.helper" in code_dependencies(mod.my_node)
    modules.write("inner", "def helper(v):\n    return v + 2\n")
    modules.load("inner")
    assert code_identity(mod.my_node) != before


def test_builtins_and_library_functions_are_named() -> None:
    assert code_identity(len) == code_identity(len)
    assert code_identity(len) != code_identity(abs)
    assert code_identity(json.dumps) != code_identity(json.loads)
    assert code_dependencies(json.dumps) == ()  # library code is named, not walked


def test_async_and_generator_functions() -> None:
    async def a(x: int) -> int:
        return x

    def g(x: int) -> Any:
        yield x

    def f(x: int) -> int:
        return x

    assert len({code_identity(a), code_identity(g), code_identity(f)}) == 3


def test_code_identity_needs_a_callable() -> None:
    with pytest.raises(TypeError, match="needs a callable"):
        code_identity(42)  # type: ignore[arg-type]


# -- recursion -----------------------------------------------------------------------------


def countdown(n: int) -> int:
    return 0 if n == 0 else countdown(n - 1)


def ping(n: int) -> int:
    return 0 if n == 0 else pong(n - 1)


def pong(n: int) -> int:
    return 0 if n == 0 else ping(n - 1)


class Tree:
    def size(self) -> int:
        return 1 + sum(child.size() for child in self.children())

    def children(self) -> list[Tree]:
        return [Tree()] if isinstance(self, Tree) else []


def test_recursion_does_not_hang() -> None:
    assert code_identity(countdown) == code_identity(countdown)
    assert code_identity(ping) != code_identity(pong)
    assert set(code_dependencies(ping)) == {f"{__name__}.ping", f"{__name__}.pong"}

    def make_rec() -> Callable[[int], int]:
        def rec(n: int) -> int:
            return 0 if n == 0 else rec(n - 1)

        return rec

    assert code_identity(make_rec()) == code_identity(make_rec())
    assert code_identity(Tree) == code_identity(Tree)

    holder: dict[str, Any] = {}

    def self_ref(x: int) -> Any:
        return holder

    holder["fn"] = self_ref  # a closure value that contains the function itself
    assert code_identity(self_ref) == code_identity(self_ref)


# -- speed and caching ---------------------------------------------------------------------


def test_repeated_calls_reuse_the_cached_identity(
    modules: Modules, monkeypatch: pytest.MonkeyPatch
) -> None:
    fn = build(modules)
    code_identity(fn)
    walks: list[Any] = []
    real = _walk.Walk.callable

    def counting(self: Any, obj: Any) -> bytes:
        walks.append(obj)
        return real(self, obj)

    monkeypatch.setattr(_walk.Walk, "callable", counting)
    for _ in range(5):
        code_identity(fn)
    assert walks == []
    mod = sys.modules[modules.name("nodes")]
    mod.local_helper = lambda v: v  # type: ignore[attr-defined]  # rebinding a helper is seen on the next call
    code_identity(fn)
    assert walks == [fn]


def test_threads_agree(modules: Modules) -> None:
    fn = build(modules)
    results: list[str] = []
    barrier = threading.Barrier(6)

    def work() -> None:
        barrier.wait()
        results.extend(code_identity(fn) for _ in range(50))

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 300 and len(set(results)) == 1


def test_function_values_fingerprint_by_code_identity() -> None:
    assert fingerprint(make_scaler(2)) == fingerprint(make_scaler(2))
    assert fingerprint(make_scaler(2)) != fingerprint(make_scaler(5))


# -- comments, docstrings and formatting do not count -------------------------------------

EDITABLE = '''
import PFX_lib as lib

LIMIT = {limit}

class Scaler:
    """{class_doc}"""

    factor = 2

    def apply(self, v):
        {method_comment}
        return v * self.factor


def helper(v):
    return v {helper_op}


def my_node(x, y={default}):
    """{doc}"""
    {comment}
    total = helper(x) + lib.shift(y)
    return [v for v in range(total) if v > LIMIT] + [Scaler().apply(x)]
'''

REFORMATTED = """
import PFX_lib as lib
LIMIT = {limit}
class Scaler:
    factor = 2
    def apply(self, v): return v * self.factor
def helper(v): return v {helper_op}
def my_node(
    x,
    y={default},
):
    total = (
        helper(x)
        + lib.shift(
            y,
        )
    )


    return [
        v
        for v in range(total)
        if v > LIMIT
    ] + [Scaler().apply(x)]
"""

LIB = """
def shift(v):
    return v {lib_op}
"""

EDIT_DEFAULTS = {
    "limit": "3",
    "class_doc": "Scales.",
    "method_comment": "# multiply",
    "helper_op": "+ 1",
    "default": "2",
    "doc": "Adds things.",
    "comment": "# a comment",
    "lib_op": "- 1",
}


def build_editable(modules: Modules, template: str = EDITABLE, **edits: str) -> Any:
    fields = {**EDIT_DEFAULTS, **edits}
    modules.write("lib", LIB.format(**fields))
    modules.write("editable", template.format(**fields))
    _, mod = modules.load("lib", "editable")
    return mod.my_node


@pytest.mark.parametrize(
    "edit",
    [
        {"comment": "# another comment, longer"},
        {"doc": "Adds things, and says so in a docstring\n    that now spans two lines."},
        {"class_doc": "Another class docstring."},
        {"method_comment": ""},
    ],
    ids=["comment", "docstring", "class-docstring", "method-comment"],
)
def test_comments_and_docstrings_keep_the_identity(modules: Modules, edit: dict[str, str]) -> None:
    before = code_identity(build_editable(modules))
    assert code_identity(build_editable(modules, **edit)) == before


def test_reformatting_keeps_the_identity(modules: Modules) -> None:
    before = code_identity(build_editable(modules))
    assert code_identity(build_editable(modules, REFORMATTED)) == before
    moved = EDITABLE.replace("LIMIT = {limit}", "\n\n\nLIMIT = {limit}  # moved down\n\n")
    assert code_identity(build_editable(modules, moved)) == before


def test_a_docstring_removed_or_added_keeps_the_identity(modules: Modules) -> None:
    before = code_identity(build_editable(modules))
    without = EDITABLE.replace('    """{doc}"""\n', "").replace('    """{class_doc}"""\n', "")
    assert code_identity(build_editable(modules, without)) == before


@pytest.mark.parametrize(
    "edit",
    [
        {"default": "3"},
        {"limit": "4"},
        {"helper_op": "+ 2"},
        {"lib_op": "- 2"},
        {"method_comment": "v = v + 1"},
    ],
    ids=["default", "constant", "helper", "helper-in-another-module", "method-body"],
)
def test_real_edits_change_the_identity(modules: Modules, edit: dict[str, str]) -> None:
    before = code_identity(build_editable(modules))
    assert code_identity(build_editable(modules, **edit)) != before
    if "method_comment" not in edit:  # (REFORMATTED has no slot for that one)
        # ... also when the edit comes with a reformatting of everything else
        assert code_identity(build_editable(modules, REFORMATTED, **edit)) != before


def test_a_string_constant_that_is_not_a_docstring_counts(modules: Modules) -> None:
    before = code_identity(build_editable(modules))
    edited = EDITABLE.replace("    {comment}\n", '    {comment}\n    x = x or "fallback"\n')
    changed = code_identity(build_editable(modules, edited))
    assert changed != before
    other = edited.replace('"fallback"', '"other"')
    assert code_identity(build_editable(modules, other)) != changed


def test_lambdas_ignore_comments_too(modules: Modules) -> None:
    source = """
    steps = dict(
        double=lambda v: v * {factor},  {comment}
    )
    """
    modules.write("lam", source.format(factor=2, comment="# twice"))
    (mod,) = modules.load("lam")
    before = code_identity(mod.steps["double"])
    modules.write("lam", source.format(factor=2, comment="# two times"))
    (mod,) = modules.load("lam")
    assert code_identity(mod.steps["double"]) == before
    modules.write("lam", source.format(factor=3, comment="# thrice"))
    (mod,) = modules.load("lam")
    assert code_identity(mod.steps["double"]) != before


def test_normalized_source_drops_layout_but_not_code() -> None:
    from hypernodes.cache._normalize import normalized_source

    a = normalized_source('def f(x):\n    """Doc."""\n    # c\n    return x + 1\n')
    b = normalized_source("def f(x): return (x\n    + 1)\n")
    assert a == b
    assert normalized_source("def f(x): return x + 2\n") != a
    # Indented fragments (methods) and fragments that do not parse alone (lambdas).
    assert normalized_source("    def m(self):\n        return 1\n") == normalized_source(
        "def m(self):\n    # one\n    return 1\n"
    )
    assert normalized_source("    key=lambda v: v,  # c\n") == normalized_source(
        "    key=lambda v:   v,\n"
    )


NODE_MODULE = '''
from hypernodes import node
import PFX_lib as lib

SCALE = {limit}
calls = []


def helper(v):
    return v {helper_op}


@node(output_name="a")
def first(x, y={default}):
    """{doc}"""
    {comment}
    calls.append("first")
    return helper(x) * SCALE + y


@node(output_name="b")
def second(a):
    calls.append("second")
    return lib.shift(a)
'''


def test_a_disk_cache_run_hits_after_comment_and_docstring_edits(
    modules: Modules, tmp_path: Path
) -> None:
    from hypernodes import DiskCache, Pipeline

    def run(**edits: str) -> tuple[Any, list[str]]:
        fields = {**EDIT_DEFAULTS, **edits}
        modules.write("lib", LIB.format(**fields))
        modules.write("pnodes", NODE_MODULE.format(**fields))
        _, mod = modules.load("lib", "pnodes")
        store = DiskCache(tmp_path / "cache")
        result = Pipeline([mod.first, mod.second], cache=store).run({"x": 5})
        store.flush()
        return result, list(mod.calls)

    assert run() == ({"a": 20, "b": 19}, ["first", "second"])
    assert run(comment="# explained", doc="Now documented.") == ({"a": 20, "b": 19}, [])
    assert run(default="3") == ({"a": 21, "b": 20}, ["first", "second"])  # a default
    assert run(default="3", limit="4")[1] == ["first", "second"]  # a constant
    assert run(default="3", limit="4", helper_op="+ 2")[1] == ["first", "second"]  # a helper
    assert run(default="3", limit="4", helper_op="+ 2", lib_op="- 3")[1] == ["second"]
    assert run(default="3", limit="4", helper_op="+ 2", lib_op="- 3", comment="# x")[1] == []


def test_no_two_threads_parse_source_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # On Python 3.11 two threads parsing at once can fail with "SystemError: AST
    # constructor recursion depth mismatch" (CPython gh-106905): it failed a map and a
    # run computing code identities in two threads. Each parse waits here for another
    # thread to start one too; under the lock none can, so the wait times out.
    import ast
    import inspect

    inside: dict[int, int] = {}  # thread -> how deep in parses (getsource parses too)
    most, lock = [0], threading.Lock()
    other = threading.Event()

    def watched(real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            me = threading.get_ident()
            with lock:
                inside[me] = inside.get(me, 0) + 1
                most[0] = max(most[0], len(inside))
                if len(inside) > 1:
                    other.set()
            try:
                other.wait(0.1)
                return real(*args, **kwargs)
            finally:
                with lock:
                    inside[me] -= 1
                    if not inside[me]:
                        del inside[me]

        return call

    monkeypatch.setattr(inspect, "getsource", watched(inspect.getsource))
    monkeypatch.setattr(ast, "parse", watched(ast.parse))

    class First:
        a = 1

    class Second:
        b = 2

    classes = [First, Second]
    errors: list[BaseException] = []

    def digest(cls: type) -> None:
        try:
            _bytecode.class_source_digest(cls)
        except BaseException as exc:  # (reported below, not lost in the thread)
            errors.append(exc)

    threads = [threading.Thread(target=digest, args=(cls,)) for cls in classes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert errors == []
    assert most == [1]
    assert not other.is_set()
