"""Every public signature resolves with ``typing.get_type_hints``: FastAPI, pydantic and doc
tools read them at run time, where names imported only under ``TYPE_CHECKING`` do not exist.
"""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
import textwrap
import typing
from collections.abc import Callable, Iterator

import pytest

# Modules whose ``__all__`` is the public surface (DaftEngine, DaskExecutor, RayExecutor
# and TelemetryCallback load their optional extras, installed in the dev environment).
PUBLIC = (
    "hypernodes",
    "hypernodes.cache",
    "hypernodes.callbacks",
    "hypernodes.engines",
    "hypernodes.executors",
    "hypernodes.progress",
    "hypernodes.telemetry",
)

# Dunders that are part of a class's public signature.
PUBLIC_DUNDERS = ("__init__", "__call__")


def _ours(obj: object) -> bool:
    return getattr(obj, "__module__", "").partition(".")[0] == "hypernodes"


def _members(cls: type) -> Iterator[tuple[str, Callable[..., object]]]:
    """The functions behind a class's public methods, property getters, class- and static
    methods, ``__init__`` and ``__call__``, inherited ones included (if ours)."""
    for name in dir(cls):
        if name.startswith("_") and name not in PUBLIC_DUNDERS:
            continue
        raw = inspect.getattr_static(cls, name)
        if isinstance(raw, property):
            functions = [f for f in (raw.fget, raw.fset) if f is not None]
        elif isinstance(raw, classmethod | staticmethod):
            functions = [raw.__func__]
        elif inspect.isfunction(raw):
            functions = [raw]
        else:
            continue
        for function in functions:
            if _ours(function):
                yield name, function


def _cases() -> Iterator[tuple[str, object]]:
    seen: set[int] = set()
    for module_name in PUBLIC:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            # Constants (``MISSING``, ``HOOKS``, ``ALIASES``) have no signature to resolve.
            has_signature = inspect.isclass(obj) or inspect.isfunction(obj)
            if not has_signature or not _ours(obj) or id(obj) in seen:
                continue
            seen.add(id(obj))
            label = f"{obj.__module__}.{obj.__qualname__}"
            yield label, obj
            if inspect.isclass(obj):
                for member, function in _members(obj):
                    yield f"{label}.{member}", function


CASES = dict(_cases())


def test_the_walk_found_the_public_surface() -> None:
    # Guard against a vacuous walk: the names of the issue are among the cases.
    for label in (
        "hypernodes.engines.hypernodes.HyperNodesEngine.__init__",
        "hypernodes.engines.daft.engine.DaftEngine.__init__",
        "hypernodes.pipeline.Pipeline.run",
        "hypernodes.pipeline.Pipeline.arun",
        "hypernodes.node.node",
        "hypernodes.telemetry.TelemetryCallback.on_node_end",
        "hypernodes.cache.disk.DiskCache",
        "hypernodes.executors.async_executor.AsyncExecutor.submit",
        "hypernodes.callbacks.CallbackContext",
    ):
        assert label in CASES, label


@pytest.mark.parametrize("label", sorted(CASES))
def test_public_type_hints_resolve(label: str) -> None:
    typing.get_type_hints(CASES[label])


def test_lazily_imported_names_resolve_to_the_real_classes() -> None:
    # networkx, the scheduler (asyncio) and plan stay out of `import hypernodes`
    # (tests/test_import.py); resolving the hints imports them and gives the real classes.
    import networkx

    from hypernodes import Pipeline, PipelineNode
    from hypernodes.plan import Plan
    from hypernodes.scheduler import Scope

    assert typing.get_type_hints(Pipeline.graph.fget)["return"] is networkx.DiGraph
    assert typing.get_type_hints(Pipeline.plan)["return"] is Plan
    assert typing.get_type_hints(PipelineNode.cache_for)["scope"] is Scope


# The kernel modules that name each other and so import each other at their ends.
KERNEL_CYCLE = ("callbacks", "config", "engines.base", "nested", "pipeline")


@pytest.mark.parametrize("first", KERNEL_CYCLE)
def test_kernel_modules_import_in_any_order(first: str) -> None:
    # A bare package object skips hypernodes/__init__.py, whose import order would otherwise
    # always decide which module of the cycle comes first.
    code = f"""
        import importlib, importlib.util, sys, types, typing

        spec = importlib.util.find_spec("hypernodes")
        package = types.ModuleType("hypernodes")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["hypernodes"] = package
        importlib.import_module("hypernodes.{first}")
        for name in {KERNEL_CYCLE!r}:
            importlib.import_module("hypernodes." + name)

        from hypernodes.callbacks import PipelineCallback
        from hypernodes.config import set_default_config
        from hypernodes.engines.base import Engine
        from hypernodes.nested import PipelineNode
        from hypernodes.pipeline import Pipeline

        for function in (
            PipelineCallback.on_pipeline_start, set_default_config, Engine.run,
            PipelineNode.__init__, Pipeline.__init__, Pipeline.as_node,
        ):
            typing.get_type_hints(function)
        print("ok")
        """
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
