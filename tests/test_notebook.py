"""Used in Jupyter: notebooks/quickstart.ipynb runs top to bottom in a real kernel.

The kernel is this venv's Python (a ``python3`` kernelspec installed into a temporary
directory that is put first on ``JUPYTER_PATH``), so a clean clone with only ``.venv``
runs it. Jupyter already runs an event loop in the kernel's main thread: the notebook
uses both top-level ``await pipeline.arun()`` and plain ``pipeline.run()``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "quickstart.ipynb"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@pytest.fixture(scope="module")
def jupyter_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A data dir holding a ``python3`` kernelspec that runs this very interpreter."""
    prefix = tmp_path_factory.mktemp("jupyter")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "ipykernel",
            "install",
            "--prefix",
            str(prefix),
            "--name",
            "python3",
        ],
        check=True,
        capture_output=True,
    )
    return str(prefix / "share" / "jupyter")


def text_of(cell: Any) -> str:
    parts = []
    for output in cell.get("outputs", []):
        if output["output_type"] == "stream":
            parts.append(output["text"])
        elif output["output_type"] in ("execute_result", "display_data"):
            parts.append(output["data"].get("text/plain", "") + "\n")
        elif output["output_type"] == "error":
            parts.append(f"ERROR {output['ename']}: {output['evalue']}\n")
    return "".join(parts).strip()


@pytest.fixture(scope="module")
def executed(jupyter_path: str) -> dict[str, str]:
    """Run the notebook once; the text output of each tagged cell."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # A probe that is not part of the notebook: which Python ran it, was anything patched.
    nb.cells.append(
        nbformat.v4.new_code_cell(
            "import asyncio, sys\n"
            "print(sys.prefix)\n"
            "print(hasattr(asyncio, '_nest_patched'), 'nest_asyncio2' in sys.modules)\n"
            "print(type(asyncio.get_running_loop()).__module__)",
            metadata={"tags": ["probe"]},
        )
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", jupyter_path)
        mp.setenv("JUPYTER_PLATFORM_DIRS", "1")
        client = nbclient.NotebookClient(
            nb,
            kernel_name="python3",
            timeout=120,
            resources={"metadata": {"path": str(NOTEBOOK.parent)}},
        )
        client.execute()
    outputs = {}
    for cell in nb.cells:
        for tag in cell.get("metadata", {}).get("tags", []):
            outputs[tag] = text_of(cell)
            outputs[f"{tag}.traceback"] = traceback_of(cell)
            outputs[f"{tag}.bars"] = bars_of(cell)
    return outputs


def bars_of(cell: Any) -> str:
    """Each output of a cell that draws a progress bar, one per line, as saved."""
    shown = []
    for output in cell.get("outputs", []):
        text = output.get("text") or output.get("data", {}).get("text/plain", "")
        if "%|" in text:
            shown.append(f"{output['output_type']}: {text.strip()!r}")
    return "\n".join(shown)


def traceback_of(cell: Any) -> str:
    """The traceback the notebook shows for a failing cell, as plain text."""
    lines = []
    for output in cell.get("outputs", []):
        if output["output_type"] == "error":
            lines.extend(_ANSI.sub("", line) for line in output["traceback"])
    return "\n".join(lines)


def test_the_notebook_is_a_quickstart() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    kinds = [cell.cell_type for cell in nb.cells]
    assert kinds.count("markdown") >= 10  # every step is explained
    sources = "\n".join(cell.source for cell in nb.cells if cell.cell_type == "code")
    for needed in (
        "await asyncio.gather(",
        "pipeline.arun(",
        "pipeline.run(",
        ".map(",
        ".amap(",
        ".stream(",
        ".map_iter(",
        'on_error="collect"',
    ):
        assert needed in sources
    assert nb.metadata["kernelspec"]["name"] == "python3"


def test_the_kernel_is_this_venvs_python_and_nothing_is_patched(
    executed: dict[str, str],
) -> None:
    prefix, patched, loop_module = executed["probe"].splitlines()
    assert prefix == sys.prefix
    assert patched == "False False"
    assert loop_module.startswith("asyncio")  # Jupyter's own loop, running in this thread


def test_structure(executed: dict[str, str]) -> None:
    assert executed["structure"] == (
        "inputs:          ('url',)\n"
        "optional inputs: {'lowercase': True}\n"
        "outputs:         ('fetch', 'text', 'n_words', 'n_chars')"
    )


def test_plain_run_in_a_cell(executed: dict[str, str]) -> None:
    # run() from a cell, with Jupyter's loop already running in the kernel's thread.
    assert executed["run"] == (
        "{'fetch': '<html>  Welcome to example.com!  The Quick Brown Fox.  </html>',\n"
        " 'text': 'welcome to example.com!  the quick brown fox.',\n"
        " 'n_words': 7,\n"
        " 'n_chars': 45}"
    )
    assert (
        executed["run-output-name"] == "{'text': 'Welcome to example.com!  The Quick Brown Fox.'}"
    )


def test_top_level_await_arun(executed: dict[str, str]) -> None:
    assert executed["arun"] == "[{'n_words': 7}, {'n_words': 7}, {'n_words': 7}]"


def test_map_and_product(executed: dict[str, str]) -> None:
    assert executed["map"] == "[{'n_chars': 39}, {'n_chars': 40}, {'n_chars': 41}]"
    assert executed["map-product"] == (
        "[{'text': 'welcome to a.com!  the quick brown fox.'},\n"
        " {'text': 'Welcome to a.com!  The Quick Brown Fox.'},\n"
        " {'text': 'welcome to bb.com!  the quick brown fox.'},\n"
        " {'text': 'Welcome to bb.com!  The Quick Brown Fox.'}]"
    )


def test_concurrent_amap(executed: dict[str, str]) -> None:
    assert executed["amap"] == "(100, [{'n_words': 7}, {'n_words': 7}])"


def test_nested_pipeline_and_nested_map(executed: dict[str, str]) -> None:
    assert executed["nested"] == (
        "site inputs: ('urls',) outputs: ('words_per_page', 'total_words')\n"
        "{'words_per_page': [7, 7, 7], 'total_words': 21}"
    )
    assert executed["nested-map"] == "{'small': 7, 'big': 21}"


def test_failure_names_the_path(executed: dict[str, str]) -> None:
    assert executed["error"] == (
        "node 'fetch' failed in site[item 1] > per_page -> pages[item 1]: "
        "ValueError: not a URL: 'not a url'\n"
        "item indices: (1, 1)\n"
        "cause: ValueError(\"not a URL: 'not a url'\")"
    )


def test_an_uncaught_failure_shows_the_users_lines_not_the_kernels(
    executed: dict[str, str],
) -> None:
    shown = executed["traceback.traceback"]
    assert executed["traceback"].startswith("ERROR NodeError: node 'fetch' failed in site[item 1]")
    assert 'raise ValueError(f"not a URL: {url!r}")' in shown  # the node's line
    assert 'site.map({"urls": [["a.com"], ["b.com", "not a url"]]}' in shown  # the caller's
    assert "ValueError: not a URL: 'not a url'" in shown
    assert "HYPERNODES_DEBUG=1" in shown
    assert "/hypernodes/" not in shown and "asyncio/" not in shown
    assert len(shown.splitlines()) < 30  # it was about 140 lines, some 20 of them frames


def test_async_executor_in_jupyter(executed: dict[str, str]) -> None:
    assert executed["executor"] == "[60, 60, 60, 23]"


def test_a_saved_notebook_shows_the_finished_bar(executed: dict[str, str]) -> None:
    # Without ipywidgets the bar is one line of text. Redrawn with "\r" on stderr, a saved
    # notebook kept every redraw, and viewers that do not apply "\r" showed the first: 0%.
    # Updated in place, the saved output is the last state only.
    (bar,) = executed["progress.bars"].splitlines()
    assert bar.startswith("display_data: 'site")
    assert "100%" in bar and "20/20" in bar and "per_page 40/40" in bar


def test_cache_progress_and_picture(executed: dict[str, str]) -> None:
    # The second run came from the cache: three nodes, three hits.
    assert "CacheStats(hits=3, misses=3, writes=3" in executed["cache"]
    # The bar counted every item, and the nested pipeline's runs added into one bar.
    assert "20/20" in executed["progress"]
    assert "per_page 40/40" in executed["progress"]
    assert executed["progress"].endswith("20")
    assert executed["picture"].startswith("<GraphPicture 'site' items=")


def test_stream_in_a_cell(executed: dict[str, str]) -> None:
    # stream() from a cell (Jupyter's loop running): each chunk, then the output.
    assert executed["stream"] == "welcome to example.com! the quick brown fox. \nwords: 7 words"


def test_big_jobs_in_a_cell(executed: dict[str, str]) -> None:
    # on_error="collect" keeps going past the bad URL; map_iter streams a generator.
    lines = executed["big-jobs"].splitlines()
    assert lines[0] == "ok: False"
    assert lines[1] == ("failed: 2 {'url': 'not a url'} ValueError(\"not a URL: 'not a url'\")")
    assert lines[2:] == [
        f"{i} {{'n_chars': {len(f'welcome to site{i}.org!  the quick brown fox.')}}}"
        for i in range(5)
    ]
