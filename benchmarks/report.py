"""Render rows as one text table per issue (with footnotes) and as JSON."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .harness import PEER_NAMES, Cell, Row

__all__ = ["ISSUES", "YARDSTICK_TABLES", "fmt", "render"]

ISSUES = {
    "kernel": "Issue 2 - kernel: per-node overhead, concurrency, scale, import",
    "map": "Issue 3 - map: throughput, async concurrency, memory",
    "cache": "Issue 4 - cache: hit overhead, fingerprints",
    "callbacks": "Issue 5 - callbacks: idle overhead",
    "distributed": "Issue 7 - distributed",
    "policies": "Issue 11 - call policies: Limit and Retry",
    "streams": "Issue 12 - maps as streams: map_iter, first result, memory",
    "streaming": "Issue 13 - streaming nodes: astream per chunk",
    "workloads": "Issue 14 - real workloads: HyperNodes vs a hand-written yardstick",
}

YARDSTICK_TABLES = {"workloads"}
"""Issues whose table compares HyperNodes with one hand-written yardstick (no peers):
``HN / hand`` is the plain ratio of the two values, whatever the unit's direction."""


def fmt(value: float | None) -> str:
    """A number with about three significant digits, never in scientific notation."""
    if value is None:
        return "-"
    a = abs(value)
    if a >= 10_000:
        return f"{value:,.0f}"
    if a >= 100:
        return f"{value:.0f}"
    if a >= 10:
        return f"{value:.1f}"
    if a >= 1:
        return f"{value:.2f}"
    if a >= 0.001 or a == 0:
        return f"{value:.3g}"
    return f"{value:.1e}"


class _Notes:
    """Numbered footnotes, deduplicated by text."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def mark(self, text: str) -> str:
        if not text:
            return ""
        if text not in self.items:
            self.items.append(text)
        return f" [{self.items.index(text) + 1}]"


def _cell(cell: Cell | None, who: str, notes: _Notes) -> str:
    if cell is None:
        return "-"
    if cell.ok:
        return fmt(cell.value) + notes.mark(f"{who}: {cell.note}" if cell.note else "")
    if cell.status == "timeout":
        return cell.note or "timeout"
    if cell.status == "skipped" and cell.note and len(cell.note) <= 24:
        return f"({cell.note})"
    label = {"na": "n/a", "error": "error", "skipped": "skipped"}.get(cell.status, cell.status)
    return label + notes.mark(f"{who}: {cell.note}" if cell.note else "")


def _ratio_vs_peer(row: Row) -> str:
    r = row.vs_best_peer()
    if r is None:
        return "-"
    best = row.best_peer()
    name = PEER_NAMES.get(best[0], best[0]) if best else ""
    word = f"{r:.1f}x better" if r >= 1 else f"{1 / r:.1f}x worse"
    return f"{word} ({name})" if name else word


def _table(header: list[str], body: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    line = "+".join("-" * (w + 2) for w in widths)
    out = ["|".join(f" {h:<{w}} " for h, w in zip(header, widths, strict=True)), line]
    out += ["|".join(f" {c:<{w}} " for c, w in zip(r, widths, strict=True)) for r in body]
    return "\n".join(out)


def _times(ratio: float) -> str:
    """``0.56x``; small ratios keep three significant digits (``0.00234x``, not ``0.00x``)."""
    return f"{ratio:.2f}x" if ratio >= 0.1 else f"{ratio:.3g}x"


def _yardstick_table(mine: list[Row]) -> tuple[list[str], list[list[str]], _Notes]:
    """workload | unit | HyperNodes | hand-written | yardstick is | HN / hand | goal | met?"""
    notes = _Notes()
    header = ["workload", "unit", "HyperNodes", "hand-written", "yardstick is"]
    header += ["HN / hand", "goal", "met?"]
    body = []
    for r in mine:
        ratio = r.ratio()
        body.append(
            [
                r.title,
                r.unit,
                _cell(r.hypernodes, "HyperNodes", notes),
                _cell(r.limit, r.limit_label or "hand-written", notes),
                r.limit_label,
                "-" if ratio is None else _times(ratio),
                "" if r.target is None else r.target.text,
                {True: "yes", False: "NO", None: "?" if r.target else ""}[r.met()],
            ]
        )
    return header, body, notes


def render(rows: Iterable[Row], *, title_suffix: str = "") -> str:
    """One table per issue: workload | unit | HyperNodes | peers | limit | ratios | target."""
    rows = list(rows)
    chunks: list[str] = []
    for issue, heading in ISSUES.items():
        mine = [r for r in rows if r.issue == issue]
        if not mine:
            continue
        if issue in YARDSTICK_TABLES and not any(r.peers for r in mine):
            header, body, notes = _yardstick_table(mine)
            chunks.append(f"## {heading}{title_suffix}\n\n{_table(header, body)}")
            if notes.items:
                chunks.append("\n".join(f"  [{i}] {t}" for i, t in enumerate(notes.items, 1)))
            continue
        peer_keys = [k for k in PEER_NAMES if any(k in r.peers for r in mine)]
        peer_keys += sorted({k for r in mine for k in r.peers} - set(peer_keys))
        notes = _Notes()
        header = ["workload", "unit", "HyperNodes"]
        header += [PEER_NAMES.get(k, k) for k in peer_keys]
        header += ["limit", "limit is", "vs best peer", "vs limit", "target", "met?"]
        body = []
        for r in mine:
            met = r.met()
            vs_limit = r.vs_limit()
            body.append(
                [
                    r.title,
                    r.unit,
                    _cell(r.hypernodes, "HyperNodes", notes),
                    *(_cell(r.peers.get(k), PEER_NAMES.get(k, k), notes) for k in peer_keys),
                    _cell(r.limit, r.limit_label, notes),
                    r.limit_label,
                    _ratio_vs_peer(r),
                    "-" if vs_limit is None else f"{vs_limit:.2f}x",
                    "" if r.target is None else r.target.text,
                    {True: "yes", False: "NO", None: "?" if r.target else ""}[met],
                ]
            )
        chunks.append(f"## {heading}{title_suffix}\n\n{_table(header, body)}")
        if notes.items:
            chunks.append("\n".join(f"  [{i}] {t}" for i, t in enumerate(notes.items, 1)))
    return "\n\n".join(chunks)


def summary(rows: Iterable[Row]) -> str:
    """Targets met / missed / unmeasured, listed by row."""
    met: list[str] = []
    missed: list[str] = []
    unknown: list[str] = []
    for r in rows:
        if r.target is None:
            continue
        verdict = r.met()
        value = fmt(r.hypernodes.value) + " " + r.unit if r.hypernodes.ok else r.hypernodes.status
        ratio = r.ratio()
        if r.target.kind.startswith("ratio") and ratio is not None:
            value = f"{_times(ratio)} ({value} vs {fmt(r.limit.value if r.limit else None)})"
        line = f"{r.title}: {value} (target {r.target.text})"
        {True: met, False: missed, None: unknown}[verdict].append(line)
    out = [f"Targets: {len(met)} met, {len(missed)} missed, {len(unknown)} not measured"]
    out += [f"  MISSED  {x}" for x in missed]
    out += [f"  n/a     {x}" for x in unknown]
    return "\n".join(out)


def to_json(
    rows: Iterable[Row], meta: dict[str, Any], external: list[dict[str, Any]]
) -> dict[str, Any]:
    """The machine-readable report (``--json``)."""
    return {"meta": meta, "rows": [r.to_json() for r in rows], "external": external}
