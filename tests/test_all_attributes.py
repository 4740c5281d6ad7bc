"""Keep the public surface honest: sorted ``__all__``s that name real objects, and every name
of the design contract importable from where the contract says (after anyio's
``tests/test_all_attributes.py``)."""

from __future__ import annotations

import concurrent.futures
import importlib
import importlib.util
import json
import pkgutil
import subprocess
import sys
import textwrap
import types

import pytest

import hypernodes

# The import block of DESIGN.md, section 2.
CONTRACT_TOP_LEVEL = (
    "node",
    "Node",
    "Pipeline",
    "PipelineNode",
    "HyperNodesEngine",
    "Engine",
    "DiskCache",
    "MemoryCache",
    "Cache",
    "PipelineCallback",
    "ProgressCallback",
    "set_default_config",
    "get_default_config",
    "reset_default_config",
    "enable_nested_loops",
    "HyperNodesError",
    "NodeError",
    "MissingInputError",
    "CycleError",
    "DuplicateOutputError",
    "InvalidExecutorError",
)


def _public_modules() -> list[str]:
    names = ["hypernodes"]
    for info in pkgutil.walk_packages(hypernodes.__path__, "hypernodes."):
        leaf = info.name.rpartition(".")[2]
        if leaf == "__main__" or leaf.startswith("_"):
            continue
        names.append(info.name)
    return names


PUBLIC_MODULES = _public_modules()


def _pending(module: str) -> bool:
    return importlib.util.find_spec(module) is None


# -- the top level ----------------------------------------------------------------------


def test_all_is_sorted_and_unique() -> None:
    assert hypernodes.__all__ == sorted(hypernodes.__all__)
    assert len(set(hypernodes.__all__)) == len(hypernodes.__all__)


@pytest.mark.parametrize("name", hypernodes.__all__)
def test_every_name_in_all_is_importable(name: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from hypernodes import {name}", namespace)
    assert namespace[name] is getattr(hypernodes, name)


@pytest.mark.parametrize("name", [n for n in hypernodes.__all__ if n != "__version__"])
def test_every_exported_object_is_defined_in_hypernodes(name: str) -> None:
    obj = getattr(hypernodes, name)
    assert not name.startswith("_")
    assert obj.__module__.startswith("hypernodes."), obj.__module__
    # Not re-exported from a private module that users would see in reprs and docs.
    assert not any(part.startswith("_") for part in obj.__module__.split("."))


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from hypernodes import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(hypernodes.__all__)


@pytest.mark.parametrize("name", CONTRACT_TOP_LEVEL)
def test_design_contract_names_are_exported(name: str) -> None:
    assert name in hypernodes.__all__
    assert getattr(hypernodes, name) is not None


def test_contract_names_have_the_expected_kinds() -> None:
    assert issubclass(hypernodes.PipelineNode, hypernodes.Node)
    assert issubclass(hypernodes.HyperNodesEngine, hypernodes.Engine)
    for cache in (hypernodes.MemoryCache, hypernodes.DiskCache):
        assert issubclass(cache, hypernodes.Cache)
    assert issubclass(hypernodes.ProgressCallback, hypernodes.PipelineCallback)
    for name in CONTRACT_TOP_LEVEL:
        if name.endswith("Error"):
            assert issubclass(getattr(hypernodes, name), hypernodes.HyperNodesError)
    for name in ("node", "set_default_config", "get_default_config", "reset_default_config"):
        assert callable(getattr(hypernodes, name))


# -- subpackages ------------------------------------------------------------------------


def test_async_executor_from_hypernodes_executors() -> None:
    from hypernodes.executors import AsyncExecutor

    assert issubclass(AsyncExecutor, concurrent.futures.Executor)
    assert "AsyncExecutor" in importlib.import_module("hypernodes.executors").__all__


def _probe(code: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_daft_engine_is_exported_lazily_from_hypernodes_engines() -> None:
    if _pending("hypernodes.engines.daft"):
        pytest.xfail("pending: daft engine helper (hypernodes/engines/daft.py does not exist)")
    result = _probe(
        """
        import json, sys
        import hypernodes.engines as engines
        before = "daft" in sys.modules
        from hypernodes.engines import DaftEngine
        from hypernodes.engines.base import Engine
        print(json.dumps({
            "before": before,
            "after": "daft" in sys.modules,
            "engine": issubclass(DaftEngine, Engine),
            "listed": "DaftEngine" in engines.__all__,
        }))
        """
    )
    assert result == {"before": False, "after": True, "engine": True, "listed": True}


def test_telemetry_callback_from_hypernodes_telemetry() -> None:
    if _pending("hypernodes.telemetry"):
        pytest.xfail("pending: telemetry helper")
    result = _probe(
        """
        import json, sys
        import hypernodes
        before = "opentelemetry" in sys.modules
        from hypernodes.telemetry import TelemetryCallback
        print(json.dumps({
            "before": before,
            "callback": issubclass(TelemetryCallback, hypernodes.PipelineCallback),
        }))
        """
    )
    assert result == {"before": False, "callback": True}


def test_unknown_attribute_of_engines_is_an_attribute_error() -> None:
    import hypernodes.engines

    with pytest.raises(AttributeError, match="NoSuchEngine"):
        hypernodes.engines.NoSuchEngine  # noqa: B018


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_module_has_a_docstring(module_name: str) -> None:
    module = importlib.import_module(module_name)
    doc = (module.__doc__ or "").strip()
    assert doc, f"{module_name} has no module docstring"


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_module_all_names_real_objects(module_name: str) -> None:
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None)
    if names is None:
        pytest.skip(f"{module_name} has no __all__")
    assert len(set(names)) == len(names), f"{module_name}.__all__ repeats a name"
    for name in names:
        pending_daft = module_name == "hypernodes.engines" and name == "DaftEngine"
        if pending_daft and _pending("hypernodes.engines.daft"):
            continue  # covered (as pending) by the lazy-export test above
        assert hasattr(module, name), f"{module_name}.__all__ names missing {name!r}"


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_modules_do_not_export_private_names(module_name: str) -> None:
    module = importlib.import_module(module_name)
    for name in getattr(module, "__all__", ()):
        assert not (name.startswith("_") and not name.startswith("__")), name


def test_the_module_walk_found_the_kernel() -> None:
    for name in ("hypernodes.node", "hypernodes.graph", "hypernodes.pipeline", "hypernodes.config"):
        assert name in PUBLIC_MODULES
    assert all(isinstance(importlib.import_module(m), types.ModuleType) for m in PUBLIC_MODULES)
