"""dask.bag implementation of the map-throughput workload (fused maps, sync scheduler)."""

from __future__ import annotations

from typing import Any

import dask.bag as db
from peer_common import load_module, map_source, time_reps


def map_items(n: int, reps: int) -> dict[str, Any]:
    mod = load_module("dask_map", map_source()[0])
    xs = list(range(n))
    parts = max(1, min(16, n // 10_000))

    def go() -> list[Any]:
        bag = db.from_sequence(xs, npartitions=parts).map(mod.b).map(mod.c).map(mod.d)
        return bag.compute(scheduler="sync")  # type: ignore[no-any-return]

    assert go()[-1] == n * 2 - 1
    raw = time_reps(go, reps=reps, budget=10.0)
    return {"raw": {"main": raw}, "note": f"bag.map x3, {parts} partitions, sync scheduler"}


WORKLOADS = {"map": map_items}
