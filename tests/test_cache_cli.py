"""``hypernodes cache stats | ls | clear | prune PATH``."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from hypernodes.cache import DiskCache
from hypernodes.cache import _database as database_module
from hypernodes.cli.app import cli
from hypernodes.cli.cache import parse_age

DAY = 86400.0


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, ["cache", *args], catch_exceptions=False)


@pytest.fixture
def filled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache with entries written 10, 5 and 1 days ago and now, of nodes a and b."""
    path = tmp_path / "c"
    now = time.time()
    for days, names in ((10, ["old1", "old2"]), (5, ["mid"]), (1, ["new"]), (0, ["now"])):
        monkeypatch.setattr(database_module, "clock", lambda d=days: now - d * DAY)
        store = DiskCache(path)
        for name in names:
            store.put(name, name * 10, node="a" if name.startswith("old") else "b")
        store.flush()
    store.put("big", b"x" * (300 << 10), node="a")  # a file entry
    store.flush()
    monkeypatch.undo()
    return path


def keys(path: Path) -> list[str]:
    return sorted(e.key for e in DiskCache(path).entries())


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("30m", 1800), ("12h", 43200), ("7d", 7 * DAY), ("1.5h", 5400)],
)
def test_ages(text: str, seconds: float) -> None:
    assert parse_age(text) == seconds


def test_prune_older_than_removes_exactly_the_old_entries(filled: Path) -> None:
    result = invoke("prune", str(filled), "--older-than", "7d")
    assert result.exit_code == 0, result.stderr
    assert "removed 2 entries" in result.stderr
    assert keys(filled) == ["big", "mid", "new", "now"]
    assert invoke("prune", str(filled), "--older-than", "2d").exit_code == 0
    assert keys(filled) == ["big", "new", "now"]
    assert DiskCache(filled).get("new") == "new" * 10


def test_prune_by_node_and_age_together(filled: Path) -> None:
    result = invoke("prune", str(filled), "--node", "a", "--older-than", "1h")
    assert result.exit_code == 0 and "removed 2 entries" in result.stderr
    assert keys(filled) == ["big", "mid", "new", "now"]
    assert invoke("prune", str(filled), "--node", "a").exit_code == 0
    assert keys(filled) == ["mid", "new", "now"]
    assert not any(p.is_file() for p in filled.glob("bi/*"))  # the file entry is gone


def test_ls_and_its_json(filled: Path) -> None:
    text = invoke("ls", str(filled), "--node", "b").stdout.splitlines()
    assert [line.split()[0] for line in text] == ["mid", "new", "now"]  # oldest first
    rows = json.loads(invoke("ls", str(filled), "--json", "--older-than", "3d").stdout)
    assert [(r["key"], r["node"], r["file"]) for r in rows] == [
        ("old1", "a", False),
        ("old2", "a", False),
        ("mid", "b", False),
    ]
    assert all(r["bytes"] > 0 and r["written"].endswith("+00:00") for r in rows)


def test_stats_and_its_json(filled: Path) -> None:
    doc = json.loads(invoke("stats", str(filled), "--json").stdout)
    assert doc["entries"] == 6
    assert doc["bytes"] > 300 << 10
    assert [(n["node"], n["entries"]) for n in doc["nodes"]] == [("a", 3), ("b", 3)]
    text = invoke("stats", str(filled)).stdout
    assert "6 entries" in text and "oldest written 10.0d ago" in text


def test_clear_everything_or_one_node(filled: Path) -> None:
    result = invoke("clear", str(filled), "--node", "b")
    assert result.exit_code == 0 and "removed 3 entries" in result.stderr
    assert keys(filled) == ["big", "old1", "old2"]
    assert invoke("clear", str(filled)).exit_code == 0
    assert keys(filled) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["prune", "{path}"], "prune needs --older-than AGE or --node NAME"),
        (["prune", "{path}", "--older-than", "7"], "'7' is not an age"),
        (["ls", "{path}", "--older-than", "0d"], "'0d' is not an age"),
        (["stats", "{missing}"], "no cache directory at"),
    ],
)
def test_errors_are_one_line_with_exit_code_2(
    filled: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    argv = [a.format(path=filled, missing=tmp_path / "nope") for a in args]
    result = invoke(*argv)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hypernodes: error: ") and message in lines[0]
    assert result.stdout == ""


def test_node_on_a_files_layout_directory_is_a_usage_error(tmp_path: Path) -> None:
    store = DiskCache(tmp_path / "f", layout="files")
    store.put("k", 1, node="a")
    assert keys(tmp_path / "f") == ["k"]
    result = invoke("prune", str(tmp_path / "f"), "--node", "a")
    assert result.exit_code == 2 and "do not record their node" in result.stderr
    assert invoke("prune", str(tmp_path / "f"), "--older-than", "1d").exit_code == 0
    assert keys(tmp_path / "f") == ["k"]


def test_the_real_command(filled: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "hypernodes", "cache", "ls", str(filled), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)) == 6


def test_entries_written_by_a_run_name_their_node(tmp_path: Path) -> None:
    from hypernodes import Pipeline, node

    @node(output_name="doubled")
    def double(x: int) -> int:
        return 2 * x

    @node(output_name="shown")
    def show(doubled: int) -> str:
        return str(doubled)

    store = DiskCache(tmp_path / "c")
    Pipeline([double, show], cache=store).map(inputs={"x": [1, 2, 3]}, map_over="x")
    assert sorted(e.node for e in store.entries()) == ["double"] * 3 + ["show"] * 3
    assert len(store.entries(node="show")) == 3
