"""The benchmark data model (workloads, metrics, cells, rows) and the peer subprocess runner.

A *workload* is one thing to measure, implemented for HyperNodes (in this process, or a
fresh subprocess where it must be), for a *limit* (raw asyncio, a list comprehension, a
dict-passing interpreter…) and for *peers* (run by ``.venv-peers/bin/python`` through
``benchmarks/peers/runner.py``). Every implementation returns ``{"raw": {key: [numbers]},
"note": str}``: seconds (or bytes) per repetition; a *metric* turns one key into a table
row in its unit (median and min over the repetitions).
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .peers.peer_common import MARKER, NotAvailable

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
    "run_peer",
    "run_peer_batch",
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
    """A goal from the issues: ``max``/``min`` bound in the row's unit, or ``limit`` ratio."""

    text: str
    kind: str  # "max" | "min" | "limit"
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
        ratio = row.vs_limit()
        return None if ratio is None else ratio <= self.bound


def at_most(bound: float, unit: str) -> Target:
    return Target(f"<= {bound:g} {unit}", "max", bound)


def at_least(bound: float, unit: str) -> Target:
    return Target(f">= {bound:g} {unit}", "min", bound)


def within(ratio: float, of: str = "limit") -> Target:
    return Target(f"<= {ratio:g}x {of}", "limit", ratio)


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


def _peer_process(ctx: Context, spec: Any, timeout: float) -> tuple[str, str, int | None]:
    """Run the peers' runner on ``spec``: (stdout, stderr, returncode; None on timeout).

    The child runs with a temporary working directory and no ``PYTHONPATH``, so the peers'
    ``hypernodes`` (0.4.8) is the one imported. On timeout its process group is killed.
    """
    assert ctx.peers_python is not None
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    with tempfile.TemporaryDirectory(prefix="hn-bench-peer-") as cwd:
        proc = subprocess.Popen(
            [ctx.peers_python, str(RUNNER), json.dumps(spec)],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            return out, err, None
    return out, err, proc.returncode


def _results(out: str) -> list[Raw]:
    return [dict(json.loads(ln[len(MARKER) :])) for ln in out.splitlines() if ln.startswith(MARKER)]


def _failure(err: str, out: str, code: int | None) -> Raw:
    tail = (err or out).strip().splitlines()[-1:] or ["no output"]
    return {"status": "error", "note": f"peer process exited {code}: {tail[0]}"[:300]}


def run_peer(ctx: Context, peer: str, workload: str, params: Params, timeout: float) -> Raw:
    """Run ``peer``'s implementation of ``workload`` in a fresh peers-venv process.

    A child still running after ``timeout`` seconds (scaled by ``ctx``) is killed and the
    result says "> timeout".
    """
    if ctx.peers_python is None:
        return {"status": "skipped", "note": "peers not run"}
    timeout *= ctx.peer_timeout_scale
    spec = {"peer": peer, "workload": workload, "params": params}
    out, err, code = _peer_process(ctx, spec, timeout)
    if code is None:
        return {"status": "timeout", "note": f"> {timeout:g} s"}
    got = _results(out)
    return got[-1] if got else _failure(err, out, code)


def run_peer_batch(
    ctx: Context, peer: str, items: list[tuple[str, Params]], timeout: float
) -> list[Raw]:
    """Several ``(workload, params)`` of one peer in one process (``--quick``).

    Saves an interpreter start and a library import per measurement; the price is that
    the measurements share a process. Items not reached before ``timeout`` are timeouts.
    """
    if ctx.peers_python is None:
        return [{"status": "skipped", "note": "peers not run"} for _ in items]
    specs = [{"peer": peer, "workload": w, "params": p} for w, p in items]
    out, err, code = _peer_process(ctx, specs, timeout)
    by_index = {r.pop("index"): r for r in _results(out)}
    missing: Raw = (
        {"status": "timeout", "note": f"> {timeout:g} s (batch)"}
        if code is None
        else _failure(err, out, code)
    )
    return [by_index.get(i, missing) for i in range(len(items))]


def python_seconds(python: str, code: str, *, reps: int, cwd: str | None = None) -> list[float]:
    """Wall-clock seconds of ``python -c code``, ``reps`` times (fresh process each)."""
    import time

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    out = []
    with tempfile.TemporaryDirectory(prefix="hn-bench-py-") as tmp:
        for _ in range(reps):
            t0 = time.perf_counter()
            subprocess.run([python, "-c", code], cwd=cwd or tmp, env=env, check=True)
            out.append(time.perf_counter() - t0)
    return out


def run_child(module: str, *args: str, timeout: float = 600.0) -> Raw:
    """Run ``python -m module args`` in this venv (repo root as cwd) and read its result line.

    Raises:
        RuntimeError: The child failed or printed no result line.
    """
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(MARKER):
            return dict(json.loads(line[len(MARKER) :]))
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
    raise RuntimeError(f"{module} exited {proc.returncode}: {tail[0]}")


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
