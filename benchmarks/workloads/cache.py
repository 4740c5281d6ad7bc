"""Issue 4 (cache): cache-hit overhead per node (disk, memory) and fingerprint throughput.

Tolerant of a cache still being written: a store that cannot be built is "n/a", and a
second run that is not clearly faster than the first is reported as "not a cache hit".
"""

from __future__ import annotations

import hashlib
import importlib
import os
import pickle
from collections.abc import Callable
from typing import Any

from ..harness import Context, Metric, NotAvailable, Workload, at_least, at_most
from ..peers.peer_common import chain_source, scratch_dir, time_reps
from .common import Step, direct_steps, hn_pipeline

__all__ = ["WORKLOADS"]

_CANDIDATES = (
    ("hypernodes.cache", "fingerprint"),
    ("hypernodes.cache.fingerprint", "fingerprint"),
    ("hypernodes.cache.fingerprints", "fingerprint"),
    ("hypernodes.cache.keys", "fingerprint"),
    ("hypernodes.cache.keys", "fingerprint_value"),
    ("hypernodes.cache.hashing", "fingerprint"),
)
"""Where the value-fingerprint function may live (first found is used)."""


def _store(kind: str) -> Any:
    import hypernodes

    cls = getattr(hypernodes, kind)
    try:
        return cls(scratch_dir("hn-bench-cache-")) if kind == "DiskCache" else cls()
    except TypeError as exc:
        raise NotAvailable(f"{kind} cannot be built yet ({exc})") from exc


def _hn_cache(kind: str, n: int, sleep: float, reps: int) -> dict[str, Any]:
    p = hn_pipeline(f"cache{kind}{n}", chain_source(n, sleep=sleep), cache=_store(kind))
    cold = time_reps(lambda: p.run({"v0": 0}), reps=1, warmup=0)
    hit = time_reps(lambda: p.run({"v0": 0}), reps=reps)
    return {"raw": {"cold": cold, "hit": hit}}


def hn_cache_disk(ctx: Context, *, n: int, sleep: float, reps: int) -> dict[str, Any]:
    return _hn_cache("DiskCache", n, sleep, reps)


def hn_cache_memory(ctx: Context, *, n: int, sleep: float, reps: int) -> dict[str, Any]:
    return _hn_cache("MemoryCache", n, sleep, reps)


def _cached_run(
    steps: list[Step],
    inputs: dict[str, Any],
    get: Callable[[str], Any],
    put: Callable[[str, Any], None],
) -> dict[str, Any]:
    values = dict(inputs)
    for fn, names, out in steps:
        args = [values[n] for n in names]
        key = hashlib.sha256(pickle.dumps((out, args))).hexdigest()
        value = get(key)
        if value is _MISS:
            value = fn(*args)
            put(key, value)
        values[out] = value
    return values


_MISS = object()


def pickle_file_cache(ctx: Context, *, n: int, sleep: float, reps: int) -> dict[str, Any]:
    """The hand-written limit: one pickle file per key, atomic writes (temp + os.replace)."""
    steps = direct_steps(f"cache{n}", chain_source(n, sleep=sleep))
    root = scratch_dir("hn-bench-pickle-")

    def get(key: str) -> Any:
        try:
            with open(root / key, "rb") as fh:
                return pickle.load(fh)
        except FileNotFoundError:
            return _MISS

    def put(key: str, value: Any) -> None:
        tmp = root / f"{key}.tmp"
        with open(tmp, "wb") as fh:
            pickle.dump(value, fh)
        os.replace(tmp, root / key)

    cold = time_reps(lambda: _cached_run(steps, {"v0": 0}, get, put), reps=1, warmup=0)
    hit = time_reps(lambda: _cached_run(steps, {"v0": 0}, get, put), reps=reps)
    return {"raw": {"cold": cold, "hit": hit}}


def dict_cache(ctx: Context, *, n: int, sleep: float, reps: int) -> dict[str, Any]:
    """The in-memory limit: a dict keyed by a hash of (output, pickled inputs)."""
    steps = direct_steps(f"mcache{n}", chain_source(n, sleep=sleep))
    store: dict[str, Any] = {}
    cold = time_reps(
        lambda: _cached_run(steps, {"v0": 0}, lambda k: store.get(k, _MISS), store.__setitem__),
        reps=1,
        warmup=0,
    )
    hit = time_reps(
        lambda: _cached_run(steps, {"v0": 0}, lambda k: store.get(k, _MISS), store.__setitem__),
        reps=reps,
    )
    return {"raw": {"cold": cold, "hit": hit}}


def check_hits(raw: dict[str, Any]) -> str | None:
    cold, hit = raw.get("cold"), raw.get("hit")
    if cold and hit and min(hit) > 0.5 * cold[0]:
        return f"not a cache hit: second run {min(hit):.3f} s vs first {cold[0]:.3f} s"
    return None


def _find_fingerprint() -> Callable[[Any], Any]:
    for module, attr in _CANDIDATES:
        try:
            fn = getattr(importlib.import_module(module), attr, None)
        except ImportError:
            continue
        if callable(fn):
            return fn  # type: ignore[no-any-return]
    looked = ", ".join(f"{m}.{a}" for m, a in _CANDIDATES)
    raise NotAvailable(f"no value-fingerprint function yet (looked for {looked})")


def _array(mb: int) -> Any:
    import numpy as np

    return np.random.default_rng(0).integers(0, 255, size=mb * 1_000_000, dtype=np.uint8)


def hn_fingerprint(ctx: Context, *, mb: int, reps: int) -> dict[str, Any]:
    fingerprint = _find_fingerprint()
    arr = _array(mb)
    return {"raw": {"main": time_reps(lambda: fingerprint(arr), reps=reps)}}


def fast_hash(ctx: Context, *, mb: int, reps: int) -> dict[str, Any]:
    """The limit: hashing the raw buffer with xxh3_128 (if installed), else sha256."""
    arr = _array(mb)
    try:
        import xxhash

        def digest() -> bytes:
            return xxhash.xxh3_128(memoryview(arr)).digest()  # type: ignore[no-any-return]

        name = "xxhash.xxh3_128"
    except ImportError:

        def digest() -> bytes:
            return hashlib.sha256(memoryview(arr)).digest()

        name = "hashlib.sha256"
    return {"raw": {"main": time_reps(digest, reps=reps)}, "note": name}


def _us_per_node(seconds: float, params: dict[str, Any]) -> float:
    return seconds * 1e6 / params["n"]


def _gb_per_s(seconds: float, params: dict[str, Any]) -> float:
    return params["mb"] * 1e6 / 1e9 / seconds


_gb_per_s.higher_is_better = True  # type: ignore[attr-defined]

_CHAIN = {"n": 20, "sleep": 0.01, "reps": 15}
_CHAIN_QUICK = {"n": 5, "sleep": 0.01, "reps": 3}

WORKLOADS: list[Workload] = [
    Workload(
        name="cache_disk20",
        issue="cache",
        metrics=[
            Metric(
                "hit",
                "{n}-node chain (10 ms/node), DiskCache hit",
                "µs/node",
                _us_per_node,
                at_most(15, "µs/node"),
            )
        ],
        hypernodes=hn_cache_disk,
        limit=pickle_file_cache,
        limit_label="pickle file per key",
        params=_CHAIN,
        quick=_CHAIN_QUICK,
        peers=("hn048", "pipefunc", "hamilton"),
        peer_workload="cache_disk",
        check=check_hits,
    ),
    Workload(
        name="cache_memory20",
        issue="cache",
        metrics=[
            Metric(
                "hit",
                "{n}-node chain (10 ms/node), MemoryCache hit",
                "µs/node",
                _us_per_node,
                at_most(3, "µs/node"),
            )
        ],
        hypernodes=hn_cache_memory,
        limit=dict_cache,
        limit_label="dict, sha256 key",
        params=_CHAIN,
        quick=_CHAIN_QUICK,
        peers=("hn048", "pipefunc", "hamilton"),
        peer_workload="cache_memory",
        check=check_hits,
    ),
    Workload(
        name="fingerprint100mb",
        issue="cache",
        metrics=[
            Metric(
                "main",
                "fingerprint a {mb} MB numpy array",
                "GB/s",
                _gb_per_s,
                at_least(1, "GB/s"),
                True,
            )
        ],
        hypernodes=hn_fingerprint,
        limit=fast_hash,
        limit_label="hash of the buffer",
        params={"mb": 100, "reps": 5},
        quick={"mb": 10, "reps": 2},
        peers=("hamilton",),
        peer_workload="fingerprint",
    ),
]
