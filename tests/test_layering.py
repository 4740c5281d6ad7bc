"""Imports point down: a lower layer of ``hypernodes`` never imports a higher one.

Every module of the package is parsed with ``ast`` (nothing is imported). Counted as an
import of a ``hypernodes`` module: ``import``/``from ... import`` statements anywhere (at
module level, at the end of a module, inside functions), relative ones resolved to
absolute names (``from . import x`` names the module ``x`` when there is one, else the
package), and string literals given to ``importlib.import_module`` or ``LazyModule``.
Imports under ``if TYPE_CHECKING:`` are not counted: they never run, they only name types
for the type checker.

Three checks:

- each module sits in one layer of ``LAYERS`` (lowest first); an import may go to its own
  layer or a lower one, never to a higher one, and never against a rule of ``RULES``,
  unless ``ALLOWED`` lists it with the reason;
- every import made inside a function (deferred) says why in a comment, on its line or
  on the comment line just above it (or above the group of imports it opens), unless a
  ``try``/``except ImportError`` (or ``suppress(ImportError)``) around it says it is
  optional;
- ``ALLOWED`` lists nothing that no longer happens, so it only ever shrinks.
"""

from __future__ import annotations

import ast
import io
import tokenize
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "hypernodes"

# The layers, lowest first. A name stands for that module and every module below it; a
# module belongs to the layer of its longest matching name.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("foundations", ("hypernodes.errors", "hypernodes.lazy", "hypernodes.tracebacks")),
    ("results", ("hypernodes.results", "hypernodes.arguments")),  # plain data and aliases
    # Whether one annotation fits another, and how a type reads: pure typing, no kernel.
    ("type fit", ("hypernodes.typing_fit",)),
    # The per-node policies ``@node`` takes (``Limit``, ``Retry``).
    ("policies", ("hypernodes.layers.limit", "hypernodes.layers.retry")),
    ("node", ("hypernodes.node",)),
    ("graph", ("hypernodes.graph",)),
    ("cache", ("hypernodes.cache",)),  # stores, keys, fingerprints, code identity
    ("loops", ("hypernodes.bridge",)),  # run() <-> arun(): the only code making loops
    # The registries that build a resource's object once per scope, and the keeper loop.
    ("resource scopes", ("hypernodes.resource_scopes",)),
    ("resources", ("hypernodes.resources",)),  # ``@resource``, its handles, plan wiring
    ("executors", ("hypernodes.executors",)),
    ("callbacks and configuration", ("hypernodes.callbacks", "hypernodes.config")),
    ("level", ("hypernodes.level",)),  # the frozen scope of one level of a run
    ("layers", ("hypernodes.layers",)),  # the layers a plan builds each step from
    ("plan", ("hypernodes.plan",)),
    ("sync driver", ("hypernodes.inline",)),  # plain sync steps in the calling thread
    ("scheduler", ("hypernodes.scheduler",)),
    ("items", ("hypernodes.items",)),  # map items as a stream, on the loop
    ("mapping", ("hypernodes.mapping",)),
    # Pipelines, nested pipelines and the build-time check of the types at their edges.
    # (``streaming``: a run's chunk and output events, for ``Pipeline.astream``.)
    (
        "pipelines",
        (
            "hypernodes.pipeline",
            "hypernodes.running",
            "hypernodes.nested",
            "hypernodes.edges",
            "hypernodes.streaming",
        ),
    ),
    ("engines", ("hypernodes.engines",)),
    # Nothing below this line is the core: the core never imports what follows.
    ("optional engines", ("hypernodes.engines.daft",)),
    (
        "tools",
        (
            "hypernodes.progress",
            "hypernodes.telemetry",
            "hypernodes.viz",
            "hypernodes.models",  # pydantic models of a pipeline's inputs and outputs
            "hypernodes.config_files",
        ),
    ),
    ("command line", ("hypernodes.cli", "hypernodes.__main__")),
    ("demo", ("hypernodes.demo",)),
    ("public surface", ("hypernodes",)),  # the package's __init__ only: re-exports
)

CORE_TOP = "engines"  # the highest layer of the core

# Rules that hold whatever the order of the layers: (importer, imported, why).
RULES: tuple[tuple[str, str, str], ...] = (
    (
        "hypernodes.executors",
        "hypernodes.engines",
        "executors only run callables where they are sent; engines drive runs",
    ),
    (
        "hypernodes.plan",
        "hypernodes.executors.remote",
        "a plan is data; shipping a callable to a worker is the executors' business",
    ),
    (
        "hypernodes.cache.runtime",
        "hypernodes.plan",
        "the cache keys nodes by name, code and input versions, not by plan",
    ),
)

# The known exceptions, each with its reason: (importer, imported) -> why. An entry that
# no longer matches an import fails ``test_allowed_imports_still_happen``: delete it.
ALLOWED: dict[tuple[str, str], str] = {
    # The kernel's API objects name each other in annotations that ``get_type_hints``
    # must resolve at run time, so each binds the others at the end of its module (after
    # its own classes exist, marked noqa E402); see the comment in hypernodes/nested.py.
    ("hypernodes.callbacks", "hypernodes.pipeline"): "end-of-module cycle for type hints",
    ("hypernodes.config", "hypernodes.pipeline"): "end-of-module cycle for type hints",
    ("hypernodes.config", "hypernodes.engines.base"): "end-of-module cycle for type hints",
    ("hypernodes.pipeline", "hypernodes.engines.base"): "end-of-module cycle for type hints",
    ("hypernodes.nested", "hypernodes.engines.base"): "end-of-module cycle for type hints",
    # Deferred upward imports, each at the one place that needs it.
    ("hypernodes.config", "hypernodes.engines.hypernodes"): (
        "library_engine() makes the default engine on first use: configuration names the "
        "engine it falls back to, and the engine reads configuration"
    ),
    ("hypernodes.pipeline", "hypernodes.viz"): (
        "Pipeline.visualize() is the public door to the optional diagrams; viz loads only "
        "when it is called"
    ),
    ("hypernodes.pipeline", "hypernodes.models"): (
        "Pipeline.input_model()/output_model() are the public doors to the optional pydantic "
        "models; they load only when called"
    ),
    ("hypernodes.engines", "hypernodes.engines.daft"): (
        "the engines package re-exports DaftEngine on first attribute access (PEP 562 "
        "__getattr__); no kernel module reads it"
    ),
    ("hypernodes.telemetry", "hypernodes"): (
        "reads __version__ from the package, which has run before any of its modules"
    ),
    ("hypernodes.cli.app", "hypernodes"): (
        "reads __version__ from the package, which has run before any of its modules"
    ),
}


@dataclass(frozen=True, slots=True)
class Import:
    """One import of one module, as written in ``importer``."""

    importer: str
    target: str
    line: int
    deferred: bool  # made inside a function, or by name (import_module, LazyModule)
    explained: bool  # a comment next to it says why


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules(root: Path = PACKAGE) -> dict[str, Path]:
    return {
        module_name(path, root): path
        for path in sorted(root.rglob("*.py"))
        if "__pycache__" not in path.parts
    }


def _comment_lines(source: str) -> tuple[set[int], set[int]]:
    """(lines holding a comment, lines holding nothing but a comment)."""
    anywhere: set[int] = set()
    alone: set[int] = set()
    code: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            anywhere.add(tok.start[0])
        elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
            code.update(range(tok.start[0], tok.end[0] + 1))
    alone = anywhere - code
    return anywhere, alone


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(importer: str, is_package: bool, module: str | None, level: int) -> str:
    if level == 0:
        return module or ""
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    if level > 1:
        base = base[: -(level - 1)]
    return ".".join([*base, module] if module else base)


def imports_of(
    source: str, importer: str, *, is_package: bool = False, known: Iterable[str] = ()
) -> list[Import]:
    """Every import ``source`` (the module ``importer``) makes, of any module.

    ``known`` names the package's modules, to tell ``from . import module`` from
    ``from . import name``.
    """
    known = set(known)
    tree = ast.parse(source)
    anywhere, alone = _comment_lines(source)
    found: list[Import] = []

    def says_why(stmt: ast.stmt | ast.expr, previous: ast.stmt | None, prev_ok: bool) -> bool:
        end = stmt.end_lineno or stmt.lineno
        if anywhere.intersection(range(stmt.lineno, end + 1)):
            return True
        if stmt.lineno - 1 in alone:
            return True
        # The group of imports it belongs to is explained by its first one.
        return (
            prev_ok
            and isinstance(previous, ast.Import | ast.ImportFrom)
            and (previous.end_lineno or previous.lineno) == stmt.lineno - 1
        )

    def add(target: str, line: int, deferred: bool, explained: bool) -> None:
        found.append(Import(importer, target, line, deferred, explained))

    def from_targets(stmt: ast.ImportFrom) -> Iterator[str]:
        base = _resolve(importer, is_package, stmt.module, stmt.level)
        for alias in stmt.names:
            sub = f"{base}.{alias.name}" if base else alias.name
            yield sub if sub in known else base

    def by_name(call: ast.Call, deferred: bool) -> None:
        fn = call.func
        name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", None)
        if name not in ("import_module", "LazyModule") or not call.args:
            return
        arg = call.args[0]
        if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
            return  # a computed name: nothing to check statically
        target = arg.value
        if target.startswith("."):
            level = len(target) - len(target.lstrip("."))
            target = _resolve(importer, is_package, target.lstrip(".") or None, level)
        end = call.end_lineno or call.lineno
        explained = bool(anywhere.intersection(range(call.lineno, end + 1)))
        add(target, call.lineno, True, explained or call.lineno - 1 in alone)

    def walk_expr(node: ast.AST, deferred: bool) -> None:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Call):
                by_name(sub, deferred)

    def visit(body: list[ast.stmt], deferred: bool, optional: bool = False) -> None:
        previous: ast.stmt | None = None
        prev_ok = False
        for stmt in body:
            ok = False
            if isinstance(stmt, ast.Import | ast.ImportFrom):
                ok = optional or says_why(stmt, previous, prev_ok)
                targets = (
                    [a.name for a in stmt.names]
                    if isinstance(stmt, ast.Import)
                    else list(from_targets(stmt))
                )
                for target in dict.fromkeys(targets):
                    add(target, stmt.lineno, deferred, ok)
            elif isinstance(stmt, ast.If) and _is_type_checking(stmt.test):
                visit(stmt.orelse, deferred)  # the body only names types
            elif isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
                for expr in [*stmt.decorator_list, *stmt.args.defaults, *stmt.args.kw_defaults]:
                    if expr is not None:
                        walk_expr(expr, deferred)
                visit(stmt.body, True)
            elif isinstance(stmt, ast.Try | ast.TryStar):
                guarded = any(_catches_import_error(h.type) for h in stmt.handlers)
                visit(stmt.body, deferred, optional or guarded)
                for handler in stmt.handlers:
                    visit(handler.body, deferred, optional)
                visit(stmt.orelse, deferred, optional)
                visit(stmt.finalbody, deferred, optional)
            elif isinstance(stmt, ast.With | ast.AsyncWith):
                for item in stmt.items:
                    walk_expr(item.context_expr, deferred)
                guarded = any(_suppresses_import_error(i.context_expr) for i in stmt.items)
                visit(stmt.body, deferred, optional or guarded)
            elif isinstance(stmt, ast.ClassDef):
                for expr in stmt.decorator_list:
                    walk_expr(expr, deferred)
                visit(stmt.body, deferred)
            else:
                for field, value in ast.iter_fields(stmt):
                    if isinstance(value, list) and value and isinstance(value[0], ast.stmt):
                        visit(value, deferred)
                    elif isinstance(value, list) and value and isinstance(value[0], ast.AST):
                        for item in value:  # except handlers, match cases, with items
                            if isinstance(item, ast.ExceptHandler | ast.match_case):
                                visit(item.body, deferred)
                            else:
                                walk_expr(item, deferred)
                    elif isinstance(value, ast.AST) and field != "body":
                        walk_expr(value, deferred)
            previous, prev_ok = stmt, ok
        return

    visit(tree.body, False)
    return found


def _catches_import_error(kind: ast.expr | None) -> bool:
    names = kind.elts if isinstance(kind, ast.Tuple) else [kind]
    return any(
        isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError") for n in names
    )


def _suppresses_import_error(expr: ast.expr) -> bool:
    return (
        isinstance(expr, ast.Call)
        and getattr(expr.func, "attr", getattr(expr.func, "id", None)) == "suppress"
        and any(_catches_import_error(arg) for arg in expr.args)
    )


def layer_of(module: str) -> int | None:
    """The index in ``LAYERS`` of ``module``'s layer (``None``: no layer names it)."""
    best: tuple[int, int] | None = None
    for index, (_, names) in enumerate(LAYERS):
        for name in names:
            # The root package names its own __init__ only: a new module must be placed.
            under = module == name or ("." in name and module.startswith(name + "."))
            if under and (best is None or len(name) > best[0]):
                best = (len(name), index)
    return None if best is None else best[1]


def _under(module: str, name: str) -> bool:
    return module == name or module.startswith(name + ".")


def problem(imp: Import) -> str | None:
    """Why ``imp`` breaks the layering, or ``None`` (ignoring ``ALLOWED``)."""
    if not _under(imp.target, "hypernodes"):
        return None
    low, high = layer_of(imp.importer), layer_of(imp.target)
    if low is None or high is None:
        return f"{imp.importer if low is None else imp.target} is in no layer of LAYERS"
    for importer, imported, why in RULES:
        if _under(imp.importer, importer) and _under(imp.target, imported):
            return f"{importer} must not import {imported}: {why}"
    core_top = [name for name, _ in LAYERS].index(CORE_TOP)
    if low <= core_top < high:
        return (
            f"the core ({LAYERS[low][0]!r}) must not import {LAYERS[high][0]!r}: it is "
            "optional, and the core never imports the CLI, progress bars, telemetry, "
            "pictures or optional engines"
        )
    if high > low:
        return f"layer {LAYERS[low][0]!r} imports the higher layer {LAYERS[high][0]!r}"
    return None


def all_imports(root: Path = PACKAGE) -> list[tuple[Path, Import]]:
    modules = package_modules(root)
    return [
        (path, imp)
        for name, path in modules.items()
        for imp in imports_of(
            path.read_text(), name, is_package=path.name == "__init__.py", known=modules
        )
    ]


def violations(
    pairs: Iterable[tuple[Path, Import]], allowed: dict[tuple[str, str], str]
) -> list[str]:
    out = []
    for path, imp in pairs:
        why = problem(imp)
        if why is not None and (imp.importer, imp.target) not in allowed:
            out.append(f"{path}:{imp.line}: {imp.importer} imports {imp.target}: {why}")
    return out


def unexplained(pairs: Iterable[tuple[Path, Import]]) -> list[str]:
    return [
        f"{path}:{imp.line}: {imp.importer} imports {imp.target} inside a function with no "
        "comment saying why (e.g. '# deferred: heavy', '# deferred: cycle with X')"
        for path, imp in pairs
        if imp.deferred and not imp.explained
    ]


# --- the package --------------------------------------------------------------------------


def test_every_module_has_a_layer() -> None:
    missing = [name for name in package_modules() if layer_of(name) is None]
    assert not missing, f"add these modules to LAYERS: {missing}"


def test_imports_point_down() -> None:
    found = violations(all_imports(), ALLOWED)
    assert not found, "imports that point up:\n" + "\n".join(found)


def test_deferred_imports_say_why() -> None:
    found = unexplained(all_imports())
    assert not found, "\n".join(found)


def test_allowed_imports_still_happen() -> None:
    happening = {(imp.importer, imp.target) for _, imp in all_imports() if problem(imp)}
    stale = sorted(set(ALLOWED) - happening)
    assert not stale, f"these ALLOWED entries no longer happen, delete them: {stale}"


# --- the checker itself: it must be able to fail ------------------------------------------


def _check(source: str, importer: str, *, known: Iterable[str] = ()) -> list[str]:
    pairs = [(Path("fake.py"), imp) for imp in imports_of(source, importer, known=known)]
    return violations(pairs, {})


def test_checker_reports_an_upward_module_level_import() -> None:
    found = _check("from ..engines.hypernodes import HyperNodesEngine\n", "hypernodes.cache.x")
    assert len(found) == 1
    assert "hypernodes.cache.x imports hypernodes.engines.hypernodes" in found[0]
    assert "higher layer 'engines'" in found[0]


def test_checker_reports_an_upward_import_inside_a_function() -> None:
    source = "def f():\n    from ..scheduler import Scope  # deferred: cycle\n"
    found = _check(source, "hypernodes.executors.workers")
    assert len(found) == 1 and "'executors' imports the higher layer 'scheduler'" in found[0]


def test_checker_applies_the_rules() -> None:
    source = "def f():\n    from .executors.remote import Shipped  # deferred\n"
    found = _check(source, "hypernodes.plan")
    assert len(found) == 1 and "hypernodes.plan must not import" in found[0]
    found = _check("from ..plan import VERSION\n", "hypernodes.cache.runtime")
    assert len(found) == 1 and "must not import hypernodes.plan" in found[0]


def test_checker_keeps_the_core_off_the_tools() -> None:
    found = _check("import hypernodes.progress\n", "hypernodes.scheduler")
    assert len(found) == 1 and "the core ('scheduler') must not import 'tools'" in found[0]
    assert (
        _check("from . import pipeline\n", "hypernodes.progress", known=["hypernodes.pipeline"])
        == []
    )


def test_checker_resolves_relative_and_named_imports() -> None:
    source = (
        "from . import scheduler\n"
        "x = LazyModule('hypernodes.mapping')  # for type hints\n"
        "def f():\n"
        "    return importlib.import_module('..engines', __name__)  # deferred\n"
    )
    imports = imports_of(source, "hypernodes.executors.x", known=["hypernodes.executors.scheduler"])
    assert [i.target for i in imports] == [
        "hypernodes.executors.scheduler",
        "hypernodes.mapping",
        "hypernodes.engines",
    ]
    assert [i.deferred for i in imports] == [False, True, True]
    # `from . import name` that is no module names the package itself.
    (imp,) = imports_of("from .. import __version__\n", "hypernodes.cli.app")
    assert imp.target == "hypernodes"


def test_checker_skips_type_checking_imports_but_not_their_else() -> None:
    source = (
        "if TYPE_CHECKING:\n"
        "    from .scheduler import Scope\n"
        "else:\n"
        "    from .engines import base\n"
    )
    assert [i.target for i in imports_of(source, "hypernodes.node")] == ["hypernodes.engines"]


def test_checker_wants_a_reason_for_deferred_imports() -> None:
    source = (
        "def f():\n"
        "    import json\n"
        "def g():\n"
        "    import numpy  # deferred: heavy\n"
        "def h():\n"
        "    # deferred: only the CLI needs them\n"
        "    import click\n"
        "    import yaml\n"
        "\n"
        "    import rich\n"
        "def i():\n"
        "    try:\n"
        "        import uvloop\n"
        "    except ImportError:\n"
        "        import asyncio\n"
        "    with contextlib.suppress(ImportError):\n"
        "        import cloudpickle\n"
    )
    pairs = [(Path("fake.py"), imp) for imp in imports_of(source, "hypernodes.node")]
    found = unexplained(pairs)
    assert [f.split(" imports ")[1].split()[0] for f in found] == ["json", "rich", "asyncio"]


def test_checker_wants_new_modules_placed() -> None:
    found = _check("from .unplaced import Model\n", "hypernodes.pipeline")
    assert len(found) == 1 and "hypernodes.unplaced is in no layer of LAYERS" in found[0]


@pytest.mark.parametrize("module", ["hypernodes.cache.x", "hypernodes.executors.y"])
def test_checker_allows_imports_down_and_across(module: str) -> None:
    source = "from ..errors import NodeError\nfrom . import sibling\n"
    assert _check(source, module) == []
