"""``import hypernodes`` stays light: optional and heavy libraries load only when used."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest

import hypernodes

# Top-level module names that `import hypernodes` must not load.
HEAVY = (
    "asyncio",  # about half of a cold import: only running (not defining) needs it
    "concurrent",
    "cloudpickle",  # only remote executors need it
    "networkx",  # only Pipeline.graph needs it
    "anyio",
    "uvloop",  # only a run creates a loop
    "nest_asyncio",
    "nest_asyncio2",
    "aiofiles",
    "tqdm",
    "rich",
    "click",
    "yaml",
    "opentelemetry",
    "graphviz",
    "dask",
    "distributed",
    "ray",
    "daft",
    "numpy",
    "pandas",
    "pyarrow",
    "loky",
    "IPython",
    "ipykernel",
    "fastapi",
    "pydantic",
)


def loaded_after(code: str) -> set[str]:
    """Top-level module names in ``sys.modules`` after running ``code`` in a fresh process."""
    script = textwrap.dedent(code) + textwrap.dedent(
        """
        import json, sys
        print(json.dumps(sorted({name.partition(".")[0] for name in sys.modules})))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.fixture(scope="module")
def after_import() -> set[str]:
    return loaded_after("import hypernodes")


@pytest.mark.parametrize("module", HEAVY)
def test_import_hypernodes_does_not_load(after_import: set[str], module: str) -> None:
    assert "hypernodes" in after_import
    assert module not in after_import


def test_the_check_can_see_a_heavy_import() -> None:
    # Guard against a vacuous test: the same probe does see networkx once it is used.
    loaded = loaded_after(
        """
        import hypernodes

        @hypernodes.node
        def f(x):
            return x

        hypernodes.Pipeline([f]).graph
        """
    )
    assert "networkx" in loaded


def test_subpackages_stay_light() -> None:
    loaded = loaded_after(
        """
        import hypernodes.engines
        import hypernodes.executors
        import hypernodes.cache
        from hypernodes.executors import AsyncExecutor
        """
    )
    for module in ("daft", "dask", "distributed", "ray", "networkx", "numpy", "pandas"):
        assert module not in loaded, module


def test_defining_and_running_a_pipeline_stays_light() -> None:
    loaded = loaded_after(
        """
        from hypernodes import Pipeline, node

        @node
        def double(x):
            return 2 * x

        assert Pipeline([double]).run({"x": 2}) == {"double": 4}
        """
    )
    for module in ("networkx", "tqdm", "rich", "click", "opentelemetry", "dask", "ray", "daft"):
        assert module not in loaded, module


def test_version_matches_the_installed_distribution() -> None:
    assert hypernodes.__version__ == metadata.version("hypernodes")


def test_the_package_is_typed() -> None:
    assert (Path(hypernodes.__file__).parent / "py.typed").is_file()
