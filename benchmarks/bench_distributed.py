"""Beyond one machine: ``python -m benchmarks.bench_distributed [--quick] [--json PATH]``.

Two workloads, each on Dask, Ray and Daft (all local here: 2 cores):

- **sleep**: 16 items of ``time.sleep(0.1)`` with 8 worker threads. The ideal is 0.2 s
  (two waves of 8). Target: ``map_executor="dask"`` with ``max_workers=8`` and nothing
  else tuned within 1.2x of it. For reference (from the issue), hypernodes 0.4.8's
  DaskEngine took 1.6 s with its defaults and 0.21 s hand-tuned.
- **cpu**: 8 items of pure-Python arithmetic (about 0.25 s each), sequential on
  ``HyperNodesEngine()`` versus a 2-worker local cluster. Target: Dask at least 1.7x
  faster than sequential.

Clusters start before the timed repetitions; their start-up time is reported apart.
Every figure is the median of several repetitions after a warm-up run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import cloudpickle

from hypernodes import Engine, HyperNodesEngine, Pipeline, node

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

SLEEP = 0.1
SLEEP_ITEMS = 16
THREADS = 8
CPU_ITEMS = 8
CPU_SECONDS = 0.25  # per item


@node(output_name="slept")
def nap(x: int, seconds: float) -> int:
    time.sleep(seconds)
    return x


def _crunch(x: int, n: int) -> int:
    total = 0
    for i in range(n):
        total += (i * x) % 7
    return total


crunch = node(_crunch, output_name="total")


# Workers (Dask processes, Ray) cannot import this module by name when it runs as a
# script: ship its functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _calibrate(seconds: float) -> int:
    """The ``n`` for which ``crunch`` takes about ``seconds`` here."""
    n = 200_000
    started = time.perf_counter()
    _crunch(3, n)
    took = time.perf_counter() - started
    return max(1, int(n * seconds / took))


def _median(call: Callable[[], Any], reps: int) -> tuple[float, float]:
    """(warm-up seconds, median seconds of ``reps`` runs; 0 when ``reps`` is 0)."""
    started = time.perf_counter()
    call()
    warm = time.perf_counter() - started
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return warm, statistics.median(times) if times else 0.0


def _sleep_map(engine: Engine) -> Callable[[], Any]:
    pipe = Pipeline([nap], engine=engine)
    inputs = {"x": list(range(SLEEP_ITEMS)), "seconds": SLEEP}

    def run() -> None:
        assert [r["slept"] for r in pipe.map(inputs, map_over="x")] == inputs["x"]

    return run


def _cpu_map(engine: Engine, n: int) -> Callable[[], Any]:
    pipe = Pipeline([crunch], engine=engine)
    inputs = {"x": list(range(CPU_ITEMS)), "n": n}
    expected = [_crunch(x, n) for x in inputs["x"]]

    def run() -> None:
        assert [r["total"] for r in pipe.map(inputs, map_over="x")] == expected

    return run


def _paired(
    make_engine: Callable[[], Engine], n: int, baseline: Callable[[], Any], reps: int
) -> dict[str, float]:
    """The CPU map on an engine, each repetition right after a sequential one: the
    speed-up is the median of the per-pair ratios, so load from other work on a shared
    machine hits both sides of a ratio alike."""
    started = time.perf_counter()
    engine = make_engine()
    call = _cpu_map(engine, n)
    try:
        first = _median(call, 0)[0]
        pairs = []
        for _ in range(reps):
            t0 = time.perf_counter()
            baseline()
            t1 = time.perf_counter()
            call()
            t2 = time.perf_counter()
            pairs.append((t1 - t0, t2 - t1))
    finally:
        engine.close()
    return {
        "median": statistics.median(b for _, b in pairs),
        "sequential": statistics.median(a for a, _ in pairs),
        "speedup": statistics.median(a / b for a, b in pairs),
        "first": first,
        "total": time.perf_counter() - started,
    }


def _timed(
    make_engine: Callable[[], Engine],
    workload: Callable[[Engine], Any],
    reps: int,
    raw: Callable[[Engine], Callable[[], Any]] | None = None,
) -> dict[str, float]:
    started = time.perf_counter()
    engine = make_engine()
    call = workload(engine)
    figures: dict[str, float] = {}
    try:
        warm, median = _median(call, reps)
        if raw is not None:  # the same work on the same cluster, without HyperNodes
            figures["raw"] = _median(raw(engine), reps)[1]
    finally:
        engine.close()
    figures.update(median=median, first=warm, total=time.perf_counter() - started)
    return figures


def _raw_dask_sleeps(engine: Engine) -> Callable[[], Any]:
    """16 sleeps submitted straight to the engine's Dask client (``pure=False``)."""
    client = engine.lanes[1].executor.client  # type: ignore[attr-defined,union-attr]
    plain = client.get_executor(pure=False)

    def run() -> None:
        futures = [plain.submit(time.sleep, SLEEP) for _ in range(SLEEP_ITEMS)]
        for future in futures:
            future.result()

    return run


class _BarePool(Engine):
    """Not an engine for users: the CPU items on a bare 2-process pool, to show what this
    machine allows right now (other work on a shared machine lowers it)."""

    def __init__(self) -> None:
        import concurrent.futures
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self.pool = concurrent.futures.ProcessPoolExecutor(2, mp_context=context)

    async def arun(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        raise NotImplementedError

    async def amap(self, pipeline: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        xs = inputs["x"]
        totals = self.pool.map(_crunch, xs, [inputs["n"]] * len(xs))
        return [{"total": t} for t in totals]

    def close(self) -> None:
        self.pool.shutdown()


def measure(quick: bool = False) -> dict[str, Any]:
    """Every figure, as a dict (seconds)."""
    from hypernodes.engines import DaftEngine

    reps = 3 if quick else 7
    cpu_seconds = CPU_SECONDS / 4 if quick else CPU_SECONDS
    n = _calibrate(cpu_seconds)
    figures: dict[str, Any] = {"cpu_count": os.cpu_count(), "quick": quick, "reps": reps}

    def dask(workers: int) -> Engine:
        return HyperNodesEngine(map_executor="dask", max_workers=workers)

    def ray(workers: int) -> Engine:
        return HyperNodesEngine(map_executor="ray", max_workers=workers)

    figures["sleep"] = {
        "ideal": SLEEP * SLEEP_ITEMS / THREADS,
        "dask": _timed(lambda: dask(THREADS), _sleep_map, reps, _raw_dask_sleeps),
        "ray": _timed(lambda: ray(THREADS), _sleep_map, reps),
        "daft": _timed(DaftEngine, _sleep_map, reps),
    }
    cpu_reps = max(3, reps // 2)
    sequential = _cpu_map(HyperNodesEngine(), n)
    figures["cpu"] = {
        "items": CPU_ITEMS,
        "dask": _paired(lambda: dask(2), n, sequential, cpu_reps),
        "ray": _paired(lambda: ray(2), n, sequential, cpu_reps),
        "daft": _paired(DaftEngine, n, sequential, cpu_reps),
        "pool": _paired(_BarePool, n, sequential, cpu_reps),
    }
    return figures


def bench_rows(quick: bool) -> list[dict[str, Any]]:
    """Rows for ``benchmarks.run`` (the "distributed" table)."""
    figures = measure(quick)
    sleep, cpu = figures["sleep"], figures["cpu"]
    ideal = sleep["ideal"]
    rows: list[dict[str, Any]] = []
    for name in ("dask", "ray", "daft"):
        rows.append(
            {
                "workload": f"sleep_{name}",
                "title": f"16 x sleep(0.1 s), 8 threads, map_executor={name!r}"
                if name != "daft"
                else "16 x sleep(0.1 s), DaftEngine()",
                "unit": "s",
                "hypernodes": sleep[name]["median"],
                "limit": ideal,
                "limit_label": "ideal (2 waves)",
                "note": f"first run {sleep[name]['first']:.2f} s (incl. worker start)"
                + (
                    f"; the same sleeps via client.submit on that cluster: "
                    f"{sleep[name]['raw']:.3f} s"
                    if "raw" in sleep[name]
                    else ""
                ),
                "target": {"text": "<= 1.2x ideal", "kind": "limit", "bound": 1.2}
                if name == "dask"
                else None,
            }
        )
    for name in ("dask", "ray", "daft"):
        rows.append(
            {
                "workload": f"cpu_{name}",
                "title": f"CPU map, 2 workers: speed-up over sequential ({name})",
                "unit": "x",
                "higher_is_better": True,
                "hypernodes": cpu[name]["speedup"],
                "limit": cpu["pool"]["speedup"],
                "limit_label": "bare 2-process pool",
                "note": f"{cpu[name]['median']:.2f} s vs {cpu[name]['sequential']:.2f} s "
                "sequential (median of paired runs)",
                "target": {"text": ">= 1.7x", "kind": "min", "bound": 1.7}
                if name == "dask"
                else None,
            }
        )
    return rows


def _report(figures: dict[str, Any]) -> str:
    sleep, cpu = figures["sleep"], figures["cpu"]
    ideal = sleep["ideal"]
    lines = [
        f"{SLEEP_ITEMS} x sleep({SLEEP}) with {THREADS} worker threads "
        f"(ideal {ideal:.2f} s; median of {figures['reps']})",
        f"{'':8} {'median':>8} {'vs ideal':>9} {'first run':>10}",
    ]
    for name in ("dask", "ray", "daft"):
        f = sleep[name]
        lines.append(f"{name:8} {f['median']:8.3f} {f['median'] / ideal:8.2f}x {f['first']:9.2f}s")
    raw = sleep["dask"]["raw"]
    lines.append(f"{'raw dask':8} {raw:8.3f} {raw / ideal:8.2f}x  client.submit, same cluster")
    lines += [
        "",
        f"CPU-bound map, {CPU_ITEMS} items, 2 workers; each run paired with a sequential one",
        f"{'':8} {'median':>8} {'sequential':>11} {'speed-up':>9}",
    ]
    for name in ("dask", "ray", "daft", "pool"):
        f = cpu[name]
        label = "  a bare 2-process pool: the machine's limit now" if name == "pool" else ""
        lines.append(
            f"{name:8} {f['median']:8.3f} {f['sequential']:11.3f} {f['speedup']:8.2f}x{label}"
        )
    met_sleep = sleep["dask"]["median"] <= 1.2 * ideal
    met_cpu = cpu["dask"]["speedup"] >= 1.7
    lines += [
        "",
        f"target dask sleep <= 1.2x ideal: {'met' if met_sleep else 'MISSED'}",
        f"target dask cpu >= 1.7x sequential: {'met' if met_cpu else 'MISSED'}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, less work")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    figures = measure(args.quick)
    print(_report(figures))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(figures, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
