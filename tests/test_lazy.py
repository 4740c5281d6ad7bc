"""LazyModule imports its module on first use, never on introspection."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from hypernodes.lazy import LazyModule


def test_attribute_access_imports_the_module() -> None:
    import fractions

    assert LazyModule("fractions").Fraction is fractions.Fraction


def test_dunders_and_introspection_do_not_import() -> None:
    code = """
        import copy, inspect, json, sys
        from hypernodes.lazy import LazyModule

        lazy = LazyModule("networkx")
        copy.copy(lazy)
        inspect.unwrap(lazy)
        repr(lazy)
        print(json.dumps("networkx" in sys.modules))
        """
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert json.loads(out.stdout) is False


def test_missing_module_and_attribute() -> None:
    assert repr(LazyModule("no_such_module_xyz")) == "<LazyModule 'no_such_module_xyz'>"
    with pytest.raises(ImportError):
        LazyModule("no_such_module_xyz").anything  # noqa: B018
    with pytest.raises(AttributeError):
        LazyModule("fractions").NoSuchName  # noqa: B018
