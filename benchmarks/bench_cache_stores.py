"""Micro-benchmarks of the cache stores, fingerprints and code identity (no kernel).

Run: ``.venv/bin/python -m benchmarks.bench_cache_stores`` (``--quick`` for fewer rounds,
``--json FILE`` to save the numbers). Each figure is the best of several rounds, so a
busy machine inflates it less; targets are the budgets the store side has within the
kernel's per-node targets (MemoryCache hit 3 µs, DiskCache hit 15 µs, 1 GB/s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypernodes.cache import DiskCache, MemoryCache, code_identity, fingerprint
from hypernodes.cache._hashing import ALGORITHM

KEY = "0123456789abcdef0123456789abcdef"
SMALL = {"user": 42, "scores": [1.5, 2.5], "name": "ada"}


def best_us(fn: Callable[[], object], number: int, rounds: int) -> float:
    """The best per-call time over ``rounds`` rounds of ``number`` calls, in µs."""
    fn()
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - start) / number)
    return best * 1e6


def best_async_us(make: Callable[[], Any], number: int, rounds: int) -> float:
    async def run() -> float:
        await make()
        best = float("inf")
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(number):
                await make()
            best = min(best, (time.perf_counter() - start) / number)
        return best * 1e6

    return asyncio.run(run())


def helper_c(x: float) -> float:
    return x * 2


def helper_b(x: float) -> float:
    return helper_c(x) + 1


def helper_a(x: float) -> float:
    return helper_b(x) - helper_c(x)


def node_body(x: float, y: float = 2.0) -> float:
    return helper_a(x) * y + helper_b(y)


def measure(quick: bool) -> list[tuple[str, float, str, str]]:
    n = 20_000 if quick else 100_000
    r = 3 if quick else 7
    rows: list[tuple[str, float, str, str]] = []

    memory = MemoryCache()
    memory.put(KEY, 7)
    memory.put(KEY + "d", SMALL)
    rows.append(("MemoryCache.get (int)", best_us(lambda: memory.get(KEY), n, r), "µs", "≲1"))
    rows.append(
        ("MemoryCache.get (small dict)", best_us(lambda: memory.get(KEY + "d"), n, r), "µs", "≲1")
    )
    rows.append(("MemoryCache.put (int)", best_us(lambda: memory.put(KEY, 7), n, r), "µs", "≲1"))
    rows.append(
        (
            "MemoryCache.put (small dict)",
            best_us(lambda: memory.put(KEY + "d", SMALL), n, r),
            "µs",
            "≲1",
        )
    )
    lru = MemoryCache(max_size=1000)
    lru.put(KEY, 7)
    rows.append(("MemoryCache(max_size).get", best_us(lambda: lru.get(KEY), n, r), "µs", "≲1"))

    with tempfile.TemporaryDirectory() as tmp:
        disk = DiskCache(Path(tmp) / "c")
        disk.put(KEY, SMALL)
        rows.append(("DiskCache.get (hit)", best_us(lambda: disk.get(KEY), n // 5, r), "µs", "≲8"))
        rows.append(
            ("DiskCache.get (miss)", best_us(lambda: disk.get("f" * 32), n // 5, r), "µs", "")
        )
        rows.append(
            ("DiskCache.aget (hit)", best_async_us(lambda: disk.aget(KEY), n // 5, r), "µs", "")
        )
        rows.append(
            ("DiskCache.put (fsync)", best_us(lambda: disk.put(KEY, SMALL), 200, r), "µs", "")
        )
        signed = DiskCache(Path(tmp) / "s", secret=b"secret")
        signed.put(KEY, SMALL)
        rows.append(
            ("DiskCache(secret).get (hit)", best_us(lambda: signed.get(KEY), n // 5, r), "µs", "")
        )

    rows.append(("fingerprint(small dict)", best_us(lambda: fingerprint(SMALL), n, r), "µs", ""))
    ints = list(range(1000))
    rows.append(
        ("fingerprint(list of 1000 ints)", best_us(lambda: fingerprint(ints), 500, r), "µs", "")
    )
    try:
        import numpy as np
    except ImportError:
        pass
    else:
        big = np.random.default_rng(0).random(100 * 1024 * 1024 // 8)  # 100 MiB float64
        seconds = best_us(lambda: fingerprint(big), 3, r) / 1e6
        rows.append(("fingerprint(100 MiB float64)", big.nbytes / seconds / 1e9, "GB/s", "≥1"))

    code_identity(node_body)
    rows.append(
        (
            "code_identity (repeat, 3 helpers)",
            best_us(lambda: code_identity(node_body), n, r),
            "µs",
            "≲2",
        )
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    args = parser.parse_args(argv)
    rows = measure(args.quick)
    print(f"hash: {ALGORITHM}, Python {sys.version.split()[0]}")
    print(f"{'measure':<36} {'value':>10}  unit  target")
    for name, value, unit, target in rows:
        print(f"{name:<36} {value:>10.2f}  {unit:<4}  {target}")
    if args.json:
        Path(args.json).write_text(
            json.dumps([{"name": n, "value": v, "unit": u, "target": t} for n, v, u, t in rows])
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
