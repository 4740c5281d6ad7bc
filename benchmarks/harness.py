"""The benchmark data model: workloads, metrics, targets, cells, rows, unit conversions.

A *workload* is one thing to measure, implemented for HyperNodes (run in a fresh process
per workload, see ``workloads/child.py``), for a *limit* (raw asyncio, a list comprehension, a
dict-passing interpreter…) and for *peers* (run by ``.venv-peers/bin/python`` through
``benchmarks/peers/runner.py``). Every implementation returns ``{"raw": {key: [numbers]},
"note": str}``: seconds (or bytes) per repetition; a *metric* turns one key into a table
row in its unit (median and min over the repetitions).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .peers.peer_common import NotAvailable

__all__ = [
    "PEER_NAMES",
    "Cell",
    "Context",
    "Metric",
    "NotAvailable",
    "Row",
    "Target",
    "Workload",
    "call_impl",
    "cell_from",
    "ratio_at_least",
    "ratio_at_most",
]

ROOT = Path(__file__).resolve().parent.parent
RUNNER = Path(__file__).resolve().parent / "peers" / "runner.py"

PEER_NAMES = {
    "hn048": "hypernodes 0.4.8",
    "pipefunc": "pipefunc",
    "hamilton": "Hamilton",
    "dask": "dask.bag",
}
"""Peer key (module ``peers/peer_<key>.py``) -> column title."""

Raw = dict[str, Any]
Params = dict[str, Any]


@dataclass
class Context:
    """What a run knows: the peers' interpreter (None: no peers), quick mode, isolation."""

    peers_python: str | None
    quick: bool = False
    peer_timeout_scale: float = 1.0
    isolate: bool = True  # HyperNodes/limit of each workload in a fresh process


@dataclass
class Cell:
    """One measured value (median over repetitions) or why there is none."""

    status: str  # ok | na | timeout | error | skipped
    value: float | None = None
    min: float | None = None
    reps: int = 0
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok" and self.value is not None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in (None, "")}


@dataclass(frozen=True)
class Target:
    """A goal from the issues.

    ``max``/``min``: a bound on HyperNodes' value in the row's unit; ``limit``: a bound on
    ``vs_limit`` (HyperNodes' cost over the limit's); ``ratio_max``/``ratio_min``: a bound
    on the plain value ratio HyperNodes / limit (``Row.ratio``), e.g. ">= 0.9x the
    hand-written throughput".
    """

    text: str
    kind: str  # "max" | "min" | "limit" | "ratio_max" | "ratio_min"
    bound: float

    def met(self, row: Row) -> bool | None:
        hn = row.hypernodes
        if not hn.ok:
            return None
        assert hn.value is not None
        if self.kind == "max":
            return hn.value <= self.bound
        if self.kind == "min":
            return hn.value >= self.bound
        if self.kind in ("ratio_max", "ratio_min"):
            r = row.ratio()
            if r is None:
                return None
            return r <= self.bound if self.kind == "ratio_max" else r >= self.bound
        ratio = row.vs_limit()
        return None if ratio is None else ratio <= self.bound


def at_most(bound: float, unit: str) -> Target:
    return Target(f"<= {bound:g} {unit}", "max", bound)


def at_least(bound: float, unit: str) -> Target:
    return Target(f">= {bound:g} {unit}", "min", bound)


def within(ratio: float, of: str = "limit") -> Target:
    return Target(f"<= {ratio:g}x {of}", "limit", ratio)


def ratio_at_most(bound: float, of: str = "hand-written") -> Target:
    """HyperNodes' value at most ``bound`` times the limit's (e.g. CPU per call)."""
    return Target(f"<= {bound:g}x {of}", "ratio_max", bound)


def ratio_at_least(bound: float, of: str = "hand-written") -> Target:
    """HyperNodes' value at least ``bound`` times the limit's (e.g. throughput)."""
    return Target(f">= {bound:g}x {of}", "ratio_min", bound)


Convert = Callable[[float, Params], float]


@dataclass(frozen=True)
class Metric:
    """How one raw key of a workload becomes a table row.

    Attributes:
        key: The raw key read from HyperNodes' and the peers' results.
        title: The row title.
        unit: Unit of the converted values.
        convert: ``(raw value, params) -> value in unit``.
        target: The goal, if the issues set one.
        higher_is_better: True for throughputs.
        limit_key: Raw key read from the limit's result (default: ``key``).
        limit_from_hn: Read the limit from HyperNodes' own result (overhead rows).
        limit_label: Overrides the workload's limit label for this row.
        peers: Whether peer cells are shown on this row.
    """

    key: str
    title: str
    unit: str
    convert: Convert
    target: Target | None = None
    higher_is_better: bool = False
    limit_key: str | None = None
    limit_from_hn: bool = False
    limit_label: str | None = None
    peers: bool = True


Impl = Callable[..., Raw]


@dataclass
class Workload:
    """One measurement, implemented for HyperNodes, a limit and peers.

    Attributes:
        name: Unique id (``--only`` matches it by substring, or the issue name).
        issue: Table it belongs to (``kernel``, ``map``, ``cache``, ``callbacks``, …).
        metrics: Rows produced from the results.
        hypernodes: ``(ctx, **params) -> raw`` for this repository's HyperNodes.
        params / quick: Parameters for the full and the ``--quick`` run.
        peers: Peer keys to run (their ``WORKLOADS[peer_workload]``).
        peer_workload: Name in the peers' ``WORKLOADS`` (default: ``name``).
        peer_params: Overrides merged into params for peers (e.g. fewer repetitions).
        limit / limit_label: ``(ctx, **params) -> raw`` for the lower bound, and its name.
        peer_timeout: Seconds before a peer measurement is reported as "> N s".
        escalate: Workloads sharing this group skip a peer after it timed out on an
            earlier (smaller) one.
        check: ``raw -> error message or None``, applied to every implementation's result.
        peer_call: Replaces the runner subprocess for peers: ``(ctx, peer, params) -> raw``.
        apart: Run HyperNodes and the limit in fresh processes of their own (never in
            one process), alternating, ``rounds`` pairs of processes in a full run (one
            in ``--quick``); their repetitions are pooled before the medians.
        rounds: Process pairs per full run when ``apart``.
        describe: ``raw -> note`` from the pooled repetitions (e.g. absolute seconds
            behind a ratio), appended to the implementation's own note.
    """

    name: str
    issue: str
    metrics: list[Metric]
    hypernodes: Impl
    params: Params
    quick: Params
    peers: tuple[str, ...] = ()
    peer_workload: str | None = None
    peer_params: Params = field(default_factory=dict)
    limit: Impl | None = None
    limit_label: str = ""
    peer_timeout: float = 60.0
    escalate: str | None = None
    check: Callable[[Raw], str | None] | None = None
    peer_call: Callable[[Context, str, Params], Raw] | None = None
    apart: bool = False
    rounds: int = 1
    describe: Callable[[Raw], str] | None = None


@dataclass
class Row:
    """One table row: HyperNodes, each peer and the limit, in one unit."""

    issue: str
    workload: str
    title: str
    unit: str
    higher_is_better: bool
    hypernodes: Cell
    peers: dict[str, Cell]
    limit: Cell | None
    limit_label: str
    target: Target | None

    def best_peer(self) -> tuple[str, Cell] | None:
        measured = [(k, c) for k, c in self.peers.items() if c.ok]
        if not measured:
            return None
        pick = max if self.higher_is_better else min
        return pick(measured, key=lambda kc: kc[1].value or 0.0)

    def vs_best_peer(self) -> float | None:
        """How many times better than the best peer HyperNodes is (> 1: better)."""
        best = self.best_peer()
        hn = self.hypernodes
        if best is None or not hn.ok or not hn.value or not best[1].value:
            return None
        if self.higher_is_better:
            return hn.value / best[1].value
        return best[1].value / hn.value

    def vs_limit(self) -> float | None:
        """HyperNodes' cost in units of the limit's cost (1.0: at the limit)."""
        lim = self.limit
        hn = self.hypernodes
        if lim is None or not lim.ok or not hn.ok or not lim.value or not hn.value:
            return None
        if self.higher_is_better:
            return lim.value / hn.value
        return hn.value / lim.value

    def ratio(self) -> float | None:
        """HyperNodes' value over the limit's, in the row's unit (no inversion)."""
        lim = self.limit
        hn = self.hypernodes
        if lim is None or not lim.ok or not hn.ok or not lim.value or hn.value is None:
            return None
        return hn.value / lim.value

    def met(self) -> bool | None:
        return None if self.target is None else self.target.met(self)

    def to_json(self) -> dict[str, Any]:
        return {
            "issue": self.issue,
            "workload": self.workload,
            "title": self.title,
            "unit": self.unit,
            "higher_is_better": self.higher_is_better,
            "hypernodes": self.hypernodes.to_json(),
            "peers": {PEER_NAMES.get(k, k): c.to_json() for k, c in self.peers.items()},
            "limit": None if self.limit is None else self.limit.to_json(),
            "limit_label": self.limit_label,
            "vs_best_peer": self.vs_best_peer(),
            "vs_limit": self.vs_limit(),
            "ratio": self.ratio(),
            "target": None if self.target is None else self.target.text,
            "met": self.met(),
        }


# -- running implementations ---------------------------------------------------------------


def call_impl(impl: Impl, ctx: Context, params: Params) -> Raw:
    """Run an in-process implementation; failures become a result with a status."""
    try:
        out = impl(ctx, **params)
    except NotAvailable as exc:
        return {"status": "na", "note": str(exc)}
    except Exception as exc:  # a benchmark failing is a finding, not a crash
        return {"status": "error", "note": f"{type(exc).__name__}: {exc}"[:300]}
    return {"status": "ok", "raw": out.get("raw", {}), "note": out.get("note", "")}


def cell_from(result: Raw, key: str, convert: Convert, params: Params) -> Cell:
    """The cell for ``key`` of an implementation's result, converted to the row's unit."""
    status = result.get("status", "ok")
    note = result.get("note", "")
    if status != "ok":
        return Cell(status, note=note)
    values = result.get("raw", {}).get(key)
    if not values:
        return Cell("na", note=note or f"no {key!r} measurement")
    converted = [convert(v, params) for v in values]
    return Cell(
        "ok",
        value=statistics.median(converted),
        min=min(converted) if not _higher(convert) else max(converted),
        reps=len(converted),
        note=note,
    )


def _higher(convert: Convert) -> bool:
    return bool(getattr(convert, "higher_is_better", False))


def per_rep(scale: float, *, count: str | None = None, inner: str | None = None) -> Convert:
    """Seconds per rep -> ``seconds * scale / params[count] / params[inner]``."""

    def convert(seconds: float, params: Mapping[str, Any]) -> float:
        div = (params[count] if count else 1) * (params[inner] if inner else 1)
        return seconds * scale / div

    return convert


def rate(count: str) -> Convert:
    """Seconds per rep -> ``params[count] / seconds`` (items/s); higher is better."""

    def convert(seconds: float, params: Mapping[str, Any]) -> float:
        return float(params[count]) / seconds

    convert.higher_is_better = True  # type: ignore[attr-defined]
    return convert
