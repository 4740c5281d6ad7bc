"""Issue 5 (callbacks): what idle callbacks cost on the 100-node chain (target < 10%)."""

from __future__ import annotations

import time
from typing import Any

from hypernodes import PipelineCallback, ProgressCallback

from ..harness import Context, Metric, Workload, per_rep, within
from ..peers.peer_common import chain_source
from .common import hn_pipeline, repeat_run

__all__ = ["WORKLOADS"]


class IdleCallback(PipelineCallback):
    """Overrides nothing: with only-overridden-hooks dispatch it should cost ~nothing."""


def _progress() -> PipelineCallback | None:
    try:
        return ProgressCallback(disable=True)  # type: ignore[call-arg]
    except TypeError:
        return None


def hn_callbacks(ctx: Context, *, n: int, inner: int, reps: int) -> dict[str, Any]:
    src = chain_source(n)
    variants: dict[str, Any] = {
        "none": hn_pipeline(f"cb_none{n}", src),
        "idle": hn_pipeline(f"cb_idle{n}", src, callbacks=[IdleCallback()]),
    }
    progress = _progress()
    note = "" if progress is not None else "ProgressCallback(disable=True) not accepted yet"
    if progress is not None:
        variants["progress"] = hn_pipeline(f"cb_prog{n}", src, callbacks=[progress])
    raw: dict[str, list[float]] = {k: [] for k in variants}
    for p in variants.values():
        repeat_run(p, {"v0": 0}, inner)  # warm-up (plans, bars)
    for _ in range(reps):  # interleaved, so drift on a shared machine hits all alike
        for key, p in variants.items():
            t0 = time.perf_counter()
            repeat_run(p, {"v0": 0}, inner)
            raw[key].append(time.perf_counter() - t0)
    return {"raw": raw, "note": note}


_US = per_rep(1e6, count="n", inner="inner")

WORKLOADS: list[Workload] = [
    Workload(
        name="callbacks_idle",
        issue="callbacks",
        metrics=[
            Metric(
                "idle",
                "{n}-node chain + a callback overriding nothing",
                "µs/node",
                _US,
                within(1.10, "no callbacks"),
                limit_key="none",
                limit_from_hn=True,
                limit_label="HyperNodes, no callbacks",
            ),
            Metric(
                "progress",
                "{n}-node chain + ProgressCallback(disable=True)",
                "µs/node",
                _US,
                within(1.10, "no callbacks"),
                limit_key="none",
                limit_from_hn=True,
                limit_label="HyperNodes, no callbacks",
                peers=False,
            ),
        ],
        hypernodes=hn_callbacks,
        params={"n": 100, "inner": 20, "reps": 15},
        quick={"n": 100, "inner": 2, "reps": 3},
        peers=("hn048", "hamilton"),
        peer_workload="callbacks_idle",
    ),
]
