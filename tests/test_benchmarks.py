"""Smoke test for benchmarks/: every HyperNodes workload runs once at a tiny size.

No timing assertions (the benchmarks measure; tests only keep the harness from rotting):
each workload must produce its rows with a measured HyperNodes cell (or "n/a" where the
feature it measures is still a placeholder), the report must render, and the peer
subprocess protocol must work (exercised with this interpreter, no peers venv needed).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import external
from benchmarks.harness import Cell, Context, Row, Target, ratio_at_least, ratio_at_most
from benchmarks.procs import run_peer, run_peer_batch
from benchmarks.report import fmt, render, summary
from benchmarks.run import _pooled, main, measure
from benchmarks.workloads import all_workloads

# Workloads measuring features being written in parallel: "n/a" is accepted for them.
MAY_BE_PLACEHOLDER = {"cache_disk20", "cache_memory20", "fingerprint100mb"}

WORKLOADS = all_workloads()


def test_workload_names_are_unique() -> None:
    names = [wl.name for wl in WORKLOADS]
    assert len(names) == len(set(names))
    assert {wl.issue for wl in WORKLOADS} == {
        "kernel",
        "map",
        "cache",
        "callbacks",
        "policies",
        "streaming",
        "streams",
        "workloads",
    }


@pytest.mark.parametrize("wl", WORKLOADS, ids=lambda wl: wl.name)
def test_hypernodes_workload_runs_once(wl: Any) -> None:
    rows = measure(wl, Context(peers_python=None, quick=True))
    assert [r.workload for r in rows] == [wl.name] * len(wl.metrics)
    for row in rows:
        cell = row.hypernodes
        allowed = {"ok", "na"} if wl.name in MAY_BE_PLACEHOLDER else {"ok"}
        assert cell.status in allowed, f"{row.title}: {cell.status} {cell.note}"
        if cell.ok:
            # (Memory growth may truly be nothing: a stream over a generator keeps no
            # results; every other figure is a positive time or rate.)
            least = 0.0 if row.unit == "MiB" else 1e-12
            assert cell.value is not None and cell.value >= least and cell.reps >= 1
        if row.limit is not None:
            assert row.limit.status == "ok", f"limit of {row.title}: {row.limit.note}"
        assert row.peers == {}  # no peers venv in this test


def test_rows_render_with_ratios_and_targets() -> None:
    row = Row(
        issue="kernel",
        workload="x",
        title="chain",
        unit="µs/node",
        higher_is_better=False,
        hypernodes=Cell("ok", value=1.0, reps=3),
        peers={"pipefunc": Cell("ok", value=9.0), "hn048": Cell("na", note="cannot")},
        limit=Cell("ok", value=0.5),
        limit_label="direct",
        target=Target("<= 2 µs/node", "max", 2.0),
    )
    assert row.vs_best_peer() == pytest.approx(9.0)
    assert row.vs_limit() == pytest.approx(2.0)
    assert row.met() is True
    text = render([row])
    assert "9.0x better (pipefunc)" in text and "2.00x" in text and "n/a [1]" in text
    assert "[1] hypernodes 0.4.8: cannot" in text
    assert summary([row]).startswith("Targets: 1 met, 0 missed")
    throughput = Row(
        issue="map",
        workload="m",
        title="map",
        unit="items/s",
        higher_is_better=True,
        hypernodes=Cell("ok", value=100.0),
        peers={"dask": Cell("ok", value=400.0)},
        limit=Cell("ok", value=1000.0),
        limit_label="listcomp",
        target=Target(">= 300 items/s", "min", 300.0),
    )
    assert throughput.vs_best_peer() == pytest.approx(0.25)
    assert throughput.vs_limit() == pytest.approx(10.0)
    assert throughput.met() is False
    assert "4.0x worse (dask.bag)" in render([throughput])


def test_fmt_never_uses_scientific_notation_for_table_sized_numbers() -> None:
    assert fmt(412_345.6) == "412,346"
    assert fmt(0.0523) == "0.0523"
    assert fmt(8.4) == "8.40"
    assert fmt(None) == "-"


def test_peer_protocol_runs_measures_and_reports_unavailable() -> None:
    ctx = Context(peers_python=sys.executable)
    ok = run_peer(ctx, "dask", "map", {"n": 200, "reps": 1}, timeout=60)
    assert ok["status"] == "ok", ok
    assert len(ok["raw"]["main"]) == 1
    missing = run_peer(ctx, "dask", "no_such_workload", {}, timeout=60)
    assert missing["status"] == "na" and "no no_such_workload" in missing["note"]


def test_peer_timeout_kills_the_child() -> None:
    ctx = Context(peers_python=sys.executable)
    out = run_peer(ctx, "dask", "map", {"n": 200, "reps": 1}, timeout=0.01)
    assert out == {"status": "timeout", "note": "> 0.01 s"}


def test_external_rows_protocol() -> None:
    row = external._row(
        {
            "title": "16 items x 0.1 s on dask",
            "unit": "s",
            "hypernodes": 0.22,
            "limit": 0.2,
            "limit_label": "ideal",
            "peers": {"Ray": "not installed"},
            "target": {"text": "<= 1.2x ideal", "kind": "limit", "bound": 1.2},
        },
        "bench_distributed",
        "distributed",
    )
    assert row.issue == "distributed" and row.met() is True
    assert row.peers["Ray"].status == "na"
    assert "Issue 7" in render([row])


def test_main_quick_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    assert main(["--quick", "--no-peers", "--only", "chain100,import", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "100-node sync chain, run()" in printed and "Targets:" in printed
    data = json.loads(out.read_text())
    assert [r["workload"] for r in data["rows"]] == ["chain100", "import"]
    assert data["meta"]["quick"] is True
    scripts = {rec["script"] for rec in data["external"]}
    assert scripts <= {f"benchmarks/{s}.py" for s in external.SCRIPTS}


def test_peer_batch_returns_one_result_per_item_in_order() -> None:
    ctx = Context(peers_python=sys.executable)
    items = [("map", {"n": 100, "reps": 1}), ("nope", {}), ("map", {"n": 50, "reps": 1})]
    out = run_peer_batch(ctx, "dask", items, timeout=120)
    assert [r["status"] for r in out] == ["ok", "na", "ok"]
    assert all("index" not in r for r in out)


def _yardstick_row(title: str, hn: float, hand: float, target: Target, more: bool) -> Row:
    return Row(
        issue="workloads",
        workload="real_x",
        title=title,
        unit="calls/s" if more else "ms/call",
        higher_is_better=more,
        hypernodes=Cell("ok", value=hn, reps=3),
        peers={},
        limit=Cell("ok", value=hand, reps=3),
        limit_label="gather + to_thread",
        target=target,
    )


def test_yardstick_table_shows_the_plain_ratio_and_ratio_targets() -> None:
    slow = _yardstick_row("throughput", 560.0, 1000.0, ratio_at_least(0.9), more=True)
    dear = _yardstick_row("cpu", 1.1, 1.0, ratio_at_most(1.15), more=False)
    tiny = _yardstick_row("tiny", 2.0, 1000.0, ratio_at_least(0.5), more=True)
    assert slow.ratio() == pytest.approx(0.56) and slow.met() is False
    assert dear.ratio() == pytest.approx(1.1) and dear.met() is True
    text = render([slow, dear, tiny])
    assert "Issue 14" in text and "hand-written" in text and "HN / hand" in text
    assert "0.56x" in text and "1.10x" in text and "0.002x" in text
    assert "vs best peer" not in text  # the peers layout is not used for this issue
    assert "MISSED  throughput: 0.56x (560 calls/s vs 1000)" in summary([slow, dear])


def test_results_of_several_processes_pool_their_repetitions() -> None:
    a = {"status": "ok", "raw": {"wall": [1.0], "cpu": [2.0]}, "note": "x"}
    b = {"status": "ok", "raw": {"wall": [3.0]}, "note": "x"}
    assert _pooled([a, b]) == {
        "status": "ok",
        "raw": {"wall": [1.0, 3.0], "cpu": [2.0]},
        "note": "x",
    }
    failed = {"status": "error", "note": "boom"}
    assert _pooled([a, failed, b]) is failed
