"""``python -m benchmarks.run``: HyperNodes next to its peers, one table of ratios per issue.

Usage::

    python -m benchmarks.run --peers-python .venv-peers/bin/python [--quick]
        [--only NAME[,NAME]] [--no-peers] [--json out.json]

HyperNodes and the limits run here; each peer measurement runs in a fresh process of the
peers' interpreter (see ``benchmarks/peers/runner.py``). See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import external
from .harness import (
    PEER_NAMES,
    Cell,
    Context,
    Row,
    Workload,
    call_impl,
    cell_from,
)
from .procs import run_child, run_peer, run_peer_batch
from .report import fmt, render, summary, to_json
from .workloads import all_workloads, scale

__all__ = ["main", "measure", "run_workloads"]


def _params(wl: Workload, ctx: Context) -> dict[str, Any]:
    return dict(wl.quick if ctx.quick else wl.params)


def _check(wl: Workload, result: dict[str, Any]) -> dict[str, Any]:
    if wl.check is not None and result.get("status", "ok") == "ok":
        problem = wl.check(result.get("raw", {}))
        if problem:
            return {"status": "error", "note": problem}
    return result


def _child(
    wl: Workload, ctx: Context, params: dict[str, Any], side: str | None = None
) -> dict[str, Any]:
    """``{"hypernodes": result, "limit": result}`` from a fresh process (``side``: one only)."""
    spec = json.dumps({"params": params, "quick": ctx.quick, "side": side})
    try:
        return run_child("benchmarks.workloads.child", wl.name, spec, timeout=900)
    except (RuntimeError, subprocess.SubprocessError) as exc:
        failed = {"status": "error", "note": str(exc)[:300]}
        return {"hypernodes": failed, "limit": failed}


def _pooled(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Results of several processes as one: repetitions concatenated, the first failure wins."""
    for r in results:
        if r.get("status", "ok") != "ok":
            return r
    raw: dict[str, list[Any]] = {}
    notes: list[str] = []
    for r in results:
        for key, values in r.get("raw", {}).items():
            raw.setdefault(key, []).extend(values)
        if r.get("note") and r["note"] not in notes:
            notes.append(r["note"])
    return {"status": "ok", "raw": raw, "note": "; ".join(notes)}


def _own(
    wl: Workload, ctx: Context, params: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """HyperNodes' and the limit's results: in a fresh process unless ``ctx.isolate`` is off.

    ``wl.apart``: each side in processes of its own, alternating (ABBA) over the rounds.
    """
    if not ctx.isolate:
        limit = None if wl.limit is None else call_impl(wl.limit, ctx, params)
        return call_impl(wl.hypernodes, ctx, params), limit
    if not wl.apart or wl.limit is None:
        out = _child(wl, ctx, params)
        return out["hypernodes"], out["limit"]
    got: dict[str, list[dict[str, Any]]] = {"hypernodes": [], "limit": []}
    for i in range(1 if ctx.quick else max(1, wl.rounds)):
        for side in ("hypernodes", "limit") if i % 2 == 0 else ("limit", "hypernodes"):
            got[side].append(_child(wl, ctx, params, side)[side])
    return _pooled(got["hypernodes"]), _pooled(got["limit"])


def _described(wl: Workload, result: dict[str, Any]) -> dict[str, Any]:
    if wl.describe is None or result.get("status", "ok") != "ok":
        return result
    extra = wl.describe(result.get("raw", {}))
    note = "; ".join(n for n in (result.get("note", ""), extra) if n)
    return {**result, "note": note}


def measure(
    wl: Workload,
    ctx: Context,
    timed_out: dict[tuple[str, str], str] | None = None,
    prefetched: dict[tuple[str, str], dict[str, Any]] | None = None,
) -> list[Row]:
    """Run one workload (HyperNodes, limit, peers) and turn its results into rows.

    ``prefetched`` holds peer results already measured in a batch (``--quick``).
    """
    timed_out = {} if timed_out is None else timed_out
    prefetched = {} if prefetched is None else prefetched
    params = _params(wl, ctx)
    hn_raw, limit_raw = _own(wl, ctx, params)
    hn = _described(wl, _check(wl, hn_raw))
    limit = None if limit_raw is None else _described(wl, _check(wl, limit_raw))
    peers: dict[str, dict[str, Any]] = {}
    for peer in wl.peers if ctx.peers_python else ():
        peer_params = params if ctx.quick else {**params, **wl.peer_params}
        if wl.escalate and (wl.escalate, peer) in timed_out:
            peers[peer] = {"status": "skipped", "note": timed_out[(wl.escalate, peer)]}
            continue
        if (peer, wl.name) in prefetched:
            peers[peer] = _check(wl, prefetched[(peer, wl.name)])
        elif wl.peer_call is not None:
            try:
                peers[peer] = wl.peer_call(ctx, peer, peer_params)
            except Exception as exc:
                peers[peer] = {"status": "error", "note": f"{type(exc).__name__}: {exc}"}
        else:
            timeout = wl.peer_timeout
            name = wl.peer_workload or wl.name
            peers[peer] = _check(wl, run_peer(ctx, peer, name, peer_params, timeout))
        status = peers[peer].get("status")
        if wl.escalate and status in ("timeout", "error"):
            what = peers[peer]["note"] if status == "timeout" else "failed"
            timed_out[(wl.escalate, peer)] = f"{what} at n={params.get('n')}"
        peers[peer]["params"] = peer_params
    rows = []
    for m in wl.metrics:
        limit_result = hn if m.limit_from_hn else limit
        limit_cell = (
            None
            if limit_result is None
            else cell_from(limit_result, m.limit_key or m.key, m.convert, params)
        )
        peer_cells = {
            k: cell_from(r, m.key, m.convert, r.get("params", params))
            for k, r in peers.items()
            if m.peers
        }
        rows.append(
            Row(
                issue=wl.issue,
                workload=wl.name,
                title=m.title.format(**params),
                unit=m.unit,
                higher_is_better=m.higher_is_better,
                hypernodes=cell_from(hn, m.key, m.convert, params),
                peers=peer_cells,
                limit=limit_cell,
                limit_label=m.limit_label or wl.limit_label,
                target=m.target,
            )
        )
    return rows


def _selected(wl: Workload, only: set[str] | None) -> bool:
    """``--only`` tokens: an issue, a workload name, or a glob (``'scale_*'``)."""
    return only is None or any(fnmatch.fnmatchcase(wl.name, o) or o == wl.issue for o in only)


def _progress(row: Row) -> str:
    def show(c: Cell | None) -> str:
        return fmt(c.value) if c is not None and c.ok else (c.status if c else "-")

    peers = ", ".join(f"{PEER_NAMES.get(k, k)} {show(c)}" for k, c in row.peers.items())
    return (
        f"  {row.title}: HyperNodes {show(row.hypernodes)} {row.unit}"
        f" | limit {show(row.limit)}" + (f" | {peers}" if peers else "")
    )


def run_workloads(ctx: Context, only: set[str] | None = None) -> list[Row]:
    """Measure every selected workload, printing progress to stderr."""
    rows: list[Row] = []
    timed_out: dict[tuple[str, str], str] = {}
    chosen = [wl for wl in all_workloads() if _selected(wl, only)]
    prefetched = _batch_peers(ctx, chosen) if ctx.quick else {}
    for i, wl in enumerate(chosen, 1):
        t0 = time.perf_counter()
        print(f"[{i}/{len(chosen)}] {wl.name} ...", file=sys.stderr, flush=True)
        got = measure(wl, ctx, timed_out, prefetched)
        for row in got:
            print(_progress(row), file=sys.stderr, flush=True)
        print(f"  ({time.perf_counter() - t0:.1f} s)", file=sys.stderr, flush=True)
        rows += got
    rows += scale.derive(rows)
    order = {name: i for i, name in enumerate(w.name for w in chosen)}
    order["scale_ratio"] = order.get("scale_10k", len(order)) + 0.5  # type: ignore[assignment]
    rows.sort(key=lambda r: order.get(r.workload, len(order)))
    return rows


def _batch_peers(ctx: Context, chosen: list[Workload]) -> dict[tuple[str, str], dict[str, Any]]:
    """``--quick``: each peer's workloads in one process (one import instead of twenty)."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    if ctx.peers_python is None:
        return out
    for peer in PEER_NAMES:
        mine = [wl for wl in chosen if peer in wl.peers and wl.peer_call is None]
        if not mine:
            continue
        print(f"[peers] {PEER_NAMES[peer]}: {len(mine)} workloads ...", file=sys.stderr, flush=True)
        items = [(wl.peer_workload or wl.name, _params(wl, ctx)) for wl in mine]
        timeout = sum(wl.peer_timeout for wl in mine) * ctx.peer_timeout_scale
        for wl, (_, params), result in zip(
            mine, items, run_peer_batch(ctx, peer, items, timeout), strict=True
        ):
            out[(peer, wl.name)] = {**result, "params": params}
    return out


def _peer_versions(python: str) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json\n"
        "names = ['hypernodes', 'pipefunc', 'apache-hamilton', 'sf-hamilton', 'dask']\n"
        "out = {}\n"
        "for n in names:\n"
        "    try: out[n] = m.version(n)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))\n"
    )
    try:
        proc = subprocess.run(
            [python, "-c", code], capture_output=True, text=True, timeout=60, cwd="/"
        )
        return dict(json.loads(proc.stdout))
    except (OSError, ValueError, subprocess.SubprocessError):
        return {}


def _meta(ctx: Context) -> dict[str, Any]:
    import hypernodes

    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "hypernodes": hypernodes.__version__,
        "quick": ctx.quick,
        "peers_python": ctx.peers_python,
        "peers": _peer_versions(ctx.peers_python) if ctx.peers_python else {},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--peers-python", help="interpreter of the peers venv (.venv-peers/bin/python)"
    )
    parser.add_argument(
        "--no-peers", action="store_true", help="measure HyperNodes and limits only"
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (< 1 min)")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run HyperNodes workloads in this process (debugging; default: one process each)",
    )
    parser.add_argument(
        "--only",
        help="comma-separated workload names, globs ('scale_*') or issues (kernel, map, "
        "cache, callbacks, distributed, workloads)",
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)

    peers_python = None if args.no_peers else args.peers_python
    if peers_python is not None and not Path(peers_python).exists():
        print(
            f"warning: {peers_python} not found; running without peers "
            "(make .venv-peers/.installed creates it)",
            file=sys.stderr,
        )
        peers_python = None
    if peers_python is not None:
        peers_python = os.path.abspath(peers_python)  # not resolve(): keep the venv's symlink
    ctx = Context(
        peers_python=peers_python,
        quick=args.quick,
        peer_timeout_scale=0.25 if args.quick else 1.0,
        isolate=not args.in_process,
    )
    only = None if not args.only else {s.strip() for s in args.only.split(",") if s.strip()}

    meta = _meta(ctx)
    t0 = time.perf_counter()
    rows = run_workloads(ctx, only)
    ext_rows, ext_records = external.collect(ctx, only)
    rows += ext_rows
    meta["seconds"] = round(time.perf_counter() - t0, 1)
    meta["loadavg_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None

    def load(avg: Any) -> str:
        return "?" if avg is None else "/".join(f"{x:.2f}" for x in avg)

    peers = ", ".join(f"{k} {v}" for k, v in meta["peers"].items()) or "not run"
    print(
        f"# HyperNodes {meta['hypernodes']} vs peers ({peers})\n"
        f"# Python {meta['python']}, {meta['cpus']} CPUs, "
        f"load {load(meta['loadavg'])} -> {load(meta['loadavg_end'])} (1/5/15 min), "
        f"{'quick' if ctx.quick else 'full'} run, {meta['seconds']} s. "
        "Medians; 'vs limit' = HyperNodes cost / limit cost.\n"
    )
    print(render(rows))
    for rec in ext_records:
        if rec.get("output"):
            print(f"\n## Output of {rec['script']}\n\n{rec['output'].rstrip()}")
        elif rec.get("status") not in ("ok",):
            print(f"\n# {rec['script']}: {rec.get('status')} {rec.get('note', '')}".rstrip())
    print("\n" + summary(rows))
    if args.json is not None:
        args.json.write_text(json.dumps(to_json(rows, meta, ext_records), indent=2, default=str))
        print(f"\nJSON written to {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
