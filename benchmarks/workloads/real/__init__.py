"""Issue 14: workloads users run, each next to the code they would write by hand.

Each side runs in fresh processes of its own (``Workload.apart``), alternating with the
other over several rounds; the table shows medians and ``HN / hand``, the plain ratio of
the two values (throughputs: below 1 is slower; costs: above 1 is dearer).

The machine's speed drifts by tens of percent from minute to minute (a 2-process pool
map of 32 items of ~30 ms took 0.54 s, and 0.69-0.73 s a few minutes later, its two
workers computing all along), and two processes a minute apart see different machines:
the rows measured in short processes and the cold cache row take more rounds (below),
so that one slow minute on one side does not decide the row.
"""

from __future__ import annotations

from typing import Any

from ...harness import Metric, Target, Workload, per_rep, rate, ratio_at_least, ratio_at_most
from . import cluster, documents, pools, resources, service

__all__ = ["WORKLOADS"]

ISSUE = "workloads"


def _same(value: float, params: dict[str, Any]) -> float:
    return value


def _more_is_better(value: float, params: dict[str, Any]) -> float:
    return value


_more_is_better.higher_is_better = True  # type: ignore[attr-defined]

_MS_PER_CALL = per_rep(1e3, count="calls")


def _service(name: str, label: str, work: int, reps: int, rounds: int) -> Workload:
    prefix = f"service, {label} CPU node: {{calls}} arun() at concurrency {{concurrency}}"
    return Workload(
        name=name,
        issue=ISSUE,
        metrics=[
            Metric(
                "wall",
                f"{prefix}, throughput",
                "calls/s",
                rate("calls"),
                ratio_at_least(0.9),
                higher_is_better=True,
            ),
            Metric("cpu", f"{prefix}, CPU per call", "ms/call", _MS_PER_CALL, ratio_at_most(1.15)),
        ],
        hypernodes=service.hn_service,
        limit=service.hand_service,
        limit_label="gather + to_thread",
        params={"calls": 3000, "concurrency": 200, "work": work, "warmup": 400, "reps": reps},
        quick={"calls": 300, "concurrency": 50, "work": work, "warmup": 50, "reps": 1},
        apart=True,
        rounds=rounds,
        describe=service.describe,
    )


WORKLOADS: list[Workload] = [
    _service("real_service_light", "light", 100, reps=2, rounds=5),
    _service("real_service_cpu", "~1.6 ms", 32_000, reps=1, rounds=3),
    Workload(
        name="real_disk_cache",
        issue=ISSUE,
        metrics=[
            Metric(
                "cold_ratio",
                "{docs} docs tokenize/embed/score/label, DiskCache cold",
                "x no-cache",
                _same,
                Target("HN <= 1.3x no-cache", "max", 1.3),
            ),
            Metric(
                "warm_ratio",
                "{docs} docs tokenize/embed/score/label, DiskCache warm rerun",
                "x no-cache",
                _same,
                Target("HN <= 0.2x no-cache", "max", 0.2),
            ),
        ],
        hypernodes=documents.hn_documents,
        limit=documents.hand_documents,
        limit_label="pickle file per doc, no fsync",
        params={"docs": 2000, "reps": 2},
        quick={"docs": 100, "reps": 1},
        apart=True,
        rounds=3,
        describe=documents.describe,
    ),
    Workload(
        name="real_shared_input",
        issue=ISSUE,
        metrics=[
            Metric(
                "main",
                '"parallel" map, 2 workers, {items} items sharing one {mb} MB input',
                "s",
                _same,
                ratio_at_most(1.5),
            )
        ],
        hypernodes=pools.hn_shared,
        limit=pools.hand_shared,
        limit_label="pool initializer",
        params={"items": 100, "mb": 50, "reps": 1},
        quick={"items": 10, "mb": 2, "reps": 1},
        apart=True,
        rounds=2,
    ),
    Workload(
        name="real_resource_model",
        issue=ISSUE,
        metrics=[
            Metric(
                "main",
                '"parallel" map, 2 workers, {items} items using a {mb} MB process resource',
                "s",
                _same,
                ratio_at_most(1.2),
            )
        ],
        hypernodes=resources.hn_model,
        limit=resources.hand_model,
        limit_label="pool initializer",
        params={"items": 100, "mb": 50, "reps": 1},
        quick={"items": 10, "mb": 2, "reps": 1},
        apart=True,
        rounds=5,
    ),
    Workload(
        name="real_tiny_items",
        issue=ISSUE,
        metrics=[
            Metric(
                "main",
                '"parallel" map of {n} trivial items, 2 workers (warm)',
                "items/s",
                rate("n"),
                ratio_at_least(0.5),
                higher_is_better=True,
            )
        ],
        hypernodes=pools.hn_tiny,
        limit=pools.hand_tiny,
        limit_label="ProcessPoolExecutor.map",
        params={"n": 10_000, "reps": 2},
        quick={"n": 1000, "reps": 1},
        apart=True,
        rounds=3,
    ),
    Workload(
        name="real_dask_cpu",
        issue=ISSUE,
        metrics=[
            Metric(
                "speedup",
                "CPU map, {items} items x ~30 ms, 2-worker local Dask: speed-up vs sequential",
                "x",
                _more_is_better,
                ratio_at_least(0.9, "bare pool's"),
                higher_is_better=True,
            )
        ],
        hypernodes=cluster.hn_cluster,
        limit=cluster.hand_cluster,
        limit_label="bare 2-process pool",
        params={"items": 32, "iters": 600_000, "reps": 4},
        quick={"items": 4, "iters": 100_000, "reps": 1},
        apart=True,
        rounds=4,
        describe=cluster.describe,
    ),
]
