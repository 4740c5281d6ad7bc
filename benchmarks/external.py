"""Hooks for the standalone benchmark scripts other work adds next to this harness.

``benchmarks/bench_cache_stores.py``, ``bench_callbacks.py`` and ``bench_distributed.py``
are picked up when present:

- if the script defines ``bench_rows(quick: bool) -> list[dict]``, its rows join the
  tables of their issue. Each dict has ``title``, ``unit`` and ``hypernodes`` (a number,
  or a string saying why not), and optionally ``issue``, ``workload``, ``note``,
  ``higher_is_better``, ``peers`` (``{name: number or reason}``), ``limit``,
  ``limit_label`` and ``target`` (``{"text": "<= 1.2x ideal", "kind": "max"|"min"|"limit",
  "bound": 1.2}``; ``"limit"`` compares HyperNodes to ``limit``);
- otherwise (full runs only) it runs as ``python -m benchmarks.<script>`` and its output
  is printed under its own heading.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from typing import Any

from .harness import ROOT, Cell, Context, Row, Target
from .peers.peer_common import MARKER
from .procs import run_child

__all__ = ["SCRIPTS", "collect"]

SCRIPTS = {
    "bench_cache_stores": "cache",
    "bench_callbacks": "callbacks",
    "bench_distributed": "distributed",
}
"""Script module name -> the issue table its rows join."""


def _cell(value: Any, note: str = "") -> Cell:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return Cell("ok", value=float(value), reps=1, note=note)
    return Cell("na", note=str(value) if value else (note or "not measured"))


def _row(d: dict[str, Any], script: str, issue: str) -> Row:
    target = d.get("target")
    limit = d.get("limit")
    return Row(
        issue=d.get("issue", issue),
        workload=d.get("workload", script),
        title=str(d["title"]),
        unit=str(d.get("unit", "")),
        higher_is_better=bool(d.get("higher_is_better", False)),
        hypernodes=_cell(d.get("hypernodes"), d.get("note", "")),
        peers={str(k): _cell(v) for k, v in (d.get("peers") or {}).items()},
        limit=None if limit is None else _cell(limit),
        limit_label=str(d.get("limit_label", "")),
        target=None
        if not target
        else Target(str(target["text"]), str(target["kind"]), float(target["bound"])),
    )


def collect(ctx: Context, selected: set[str] | None) -> tuple[list[Row], list[dict[str, Any]]]:
    """Rows from scripts with ``bench_rows``, and a record (with output) for each script.

    ``selected``: issue or script names to include (``None``: all).
    """
    rows: list[Row] = []
    records: list[dict[str, Any]] = []
    for script, issue in SCRIPTS.items():
        if selected is not None and not ({script, issue} & selected):
            continue
        path = ROOT / "benchmarks" / f"{script}.py"
        record: dict[str, Any] = {"script": f"benchmarks/{script}.py", "issue": issue}
        records.append(record)
        if not path.exists():
            record["status"] = "absent"
            continue
        if ctx.quick and selected is None and issue == "distributed":
            record.update(status="skipped", note="slow to start; --only distributed runs it")
            continue
        if "def bench_rows(" in path.read_text():
            try:  # in a child process: clusters it starts end with it
                args = [script, "--quick"] if ctx.quick else [script]
                out = run_child("benchmarks.external", *args, timeout=900)
                got = [_row(d, script, issue) for d in out["rows"]]
            except Exception as exc:  # someone else's script failing is a finding
                record.update(status="error", note=f"{type(exc).__name__}: {exc}"[:300])
                continue
            rows += got
            record.update(status="ok", rows=len(got))
            continue
        if ctx.quick:
            record.update(status="skipped", note="no bench_rows(quick=) hook; skipped in --quick")
            continue
        try:
            proc = subprocess.run(
                [sys.executable, "-m", f"benchmarks.{script}"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=600,
            )
        except subprocess.TimeoutExpired:
            record.update(status="timeout", note="> 600 s")
            continue
        record.update(
            status="ok" if proc.returncode == 0 else "error",
            returncode=proc.returncode,
            output=proc.stdout[-20_000:],
            stderr=proc.stderr[-2000:],
        )
    return rows, records


def _main() -> None:
    """``python -m benchmarks.external SCRIPT [--quick]``: print that script's rows."""
    script, quick = sys.argv[1], "--quick" in sys.argv[2:]
    module = importlib.import_module(f"benchmarks.{script}")
    rows = list(module.bench_rows(quick=quick))
    print(MARKER + json.dumps({"rows": rows}, default=str), flush=True)


if __name__ == "__main__":
    _main()
