"""The bundled demo: right answers, eager overlap under "async", and both ways to run it."""

from __future__ import annotations

import io
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hypernodes import HyperNodesEngine, Pipeline
from hypernodes.demo import Timeline, pipeline

ROOT = Path(__file__).resolve().parent.parent
FAST = {"user_id": 7, "latency": 0.5, "work": 2}


def run_with(executor: str) -> tuple[dict[str, object], Timeline, str]:
    stream = io.StringIO()
    timeline = Timeline(stream=stream)
    demo = Pipeline(list(pipeline.nodes), callbacks=[timeline], name="demo")
    with HyperNodesEngine(node_executor=executor) as engine:
        result = engine.run(demo, FAST)
    return result, timeline, stream.getvalue()


def intervals(timeline: Timeline) -> dict[str, tuple[float, float]]:
    return {label: (start, end) for label, start, end in timeline.last}


def test_demo_result() -> None:
    result, _, _ = run_with("async")
    report = result["report"]
    assert isinstance(report, dict)
    assert report["user"] == "user-7"
    assert report["orders"] == 5
    assert report["total_spent"] == 142.5
    assert set(report["recommendations"]) == {"item-49", "item-50", "item-51"}
    assert 0 <= report["score"] < 1
    assert len(report["orders_digest"]) == 16


def test_async_starts_nodes_as_soon_as_their_inputs_are_ready() -> None:
    _, timeline, text = run_with("async")
    spans = intervals(timeline)
    assert set(spans) == {
        "fetch_profile",
        "fetch_orders",
        "fetch_recommendations",
        "fetch_prices",
        "score_profile",
        "digest_orders",
        "build_report",
    }
    fetches = [spans[n] for n in ("fetch_profile", "fetch_orders", "fetch_recommendations")]
    # All three fetches were in flight together: each started before any of them ended.
    assert max(start for start, _ in fetches) < min(end for _, end in fetches)
    # Eager, not level by level: the CPU node on the profile started while orders were
    # still being fetched.
    assert spans["score_profile"][0] < spans["fetch_orders"][1]
    # The fan-in ran last.
    assert spans["build_report"][0] >= max(
        end for name, (_, end) in spans.items() if name != "build_report"
    )
    assert "x overlap" in text and "try --node-executor" not in text


def test_sequential_runs_one_node_at_a_time_and_says_so() -> None:
    _, timeline, text = run_with("sequential")
    ordered = sorted(intervals(timeline).values())
    for (_, end), (next_start, _) in itertools.pairwise(ordered):
        assert end <= next_start
    assert "nodes ran one at a time: try --node-executor async" in text


def test_timeline_format_lists_every_node() -> None:
    _, timeline, text = run_with("async")
    lines = text.strip().splitlines()
    assert lines[0].split() == ["node", "start", "end"]
    assert len(lines) == 1 + 7 + 1
    assert lines[-1].startswith("wall ") and "s of node time" in lines[-1]
    assert timeline.format() == text.strip()


def test_timeline_covers_maps() -> None:
    stream = io.StringIO()
    demo = Pipeline(list(pipeline.nodes), callbacks=[Timeline(stream=stream)], name="demo")
    inputs = {**FAST, "user_id": [1, 2], "latency": 0.1}
    results = demo.map(inputs, map_over="user_id", output_name="report")
    assert [r["report"]["user"] for r in results] == ["user-1", "user-2"]  # type: ignore[index]
    text = stream.getvalue()
    assert "fetch_orders[0]" in text and "fetch_orders[1]" in text


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(["-m", "hypernodes.demo", "42"], id="standalone"),
        pytest.param(
            [
                "-m",
                "hypernodes",
                "run",
                "hypernodes.demo:pipeline",
                "--inputs",
                '{"user_id": 42}',
                "--node-executor",
                "async",
            ],
            id="make-demo-cli",
        ),
    ],
)
def test_demo_commands(tmp_path: Path, command: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, *command],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert output["report"]["user"] == "user-42"
    assert "x overlap" in result.stderr
    assert "fetch_orders" in result.stderr
    assert "try --node-executor" not in result.stderr


def test_standalone_demo_rejects_a_bad_argument() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hypernodes.demo", "abc"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "usage: python -m hypernodes.demo [USER_ID]" in result.stderr
