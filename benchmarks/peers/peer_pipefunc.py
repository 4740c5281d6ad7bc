"""pipefunc implementations of the workloads, through its public API.

Public API used (its docstrings): ``PipeFunc(func, output_name=, mapspec=, cache=)``,
``Pipeline(functions, cache_type=, cache_kwargs=)``, ``Pipeline.run(output_name,
kwargs=, full_output=)``, ``Pipeline.map(inputs, parallel=, executor=,
scheduling_strategy=, storage=)``. pipefunc 0.93 does not await ``async def`` functions
(they return a coroutine), so the async-node workloads are n/a.
"""

from __future__ import annotations

import tempfile
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from peer_common import (
    NotAvailable,
    chain_source,
    deep,
    fanin_source,
    load_module,
    map_source,
    peak_rss_growth,
    sleep_sources,
    time_reps,
)
from pipefunc import PipeFunc, Pipeline

_NO_ASYNC = "pipefunc 0.93 does not await async def functions (returns the coroutine)"


def _pipeline(name: str, src: str, outputs: list[str], **kwargs: Any) -> Pipeline:
    mod = load_module(name, src)
    cache = bool(kwargs.get("cache_type"))
    funcs = [PipeFunc(getattr(mod, o), output_name=o, cache=cache) for o in outputs]
    return Pipeline(funcs, **kwargs)


def _repeat(p: Pipeline, out: str, kwargs: dict[str, Any], inner: int) -> None:
    for _ in range(inner):
        p.run(out, kwargs=kwargs)


def chain(n: int, inner: int, reps: int) -> dict[str, Any]:
    p = _pipeline(f"pf_chain{n}", *chain_source(n))
    assert p.run(f"v{n}", kwargs={"v0": 0}) == n
    raw = time_reps(lambda: _repeat(p, f"v{n}", {"v0": 0}, inner), reps=reps)
    return {"raw": {"main": raw}}


def fanin(n: int, inner: int, reps: int) -> dict[str, Any]:
    p = _pipeline(f"pf_fanin{n}", *fanin_source(n))
    raw = time_reps(lambda: _repeat(p, "total", {"x": 0}, inner), reps=reps)
    return {"raw": {"main": raw}}


def threaded_sleep(n: int, sleep: float, workers: int, reps: int) -> dict[str, Any]:
    p = _pipeline(f"pf_tsleep{n}", *sleep_sources(n, sleep))
    with ThreadPoolExecutor(workers) as ex:
        raw = time_reps(
            lambda: p.map({"x": 0}, executor=ex, scheduling_strategy="eager"),
            reps=reps,
            warmup=1,
        )
    return {"raw": {"main": raw}, "note": "map(executor=ThreadPoolExecutor, eager)"}


def _scale(n: int, build_reps: int, run_reps: int) -> dict[str, Any]:
    src, outs = chain_source(n)
    mod = load_module(f"pf_scale{n}", src)
    funcs = [PipeFunc(getattr(mod, o), output_name=o) for o in outs]
    holder: list[Pipeline] = []
    build = time_reps(
        lambda: holder.append(Pipeline(funcs)), reps=build_reps, warmup=0, budget=10.0
    )
    p = holder[-1]
    first = time_reps(lambda: p.run(f"v{n}", kwargs={"v0": 0}), reps=1, warmup=0)
    run = time_reps(lambda: p.run(f"v{n}", kwargs={"v0": 0}), reps=run_reps, warmup=0, budget=10.0)
    return {"raw": {"build": build, "first_run": first, "run": run}}


def scale(n: int, build_reps: int, run_reps: int) -> dict[str, Any]:
    out: dict[str, Any] = deep(lambda: _scale(n, build_reps, run_reps), depth=20 * n + 1000)
    out["note"] = "recursion limit raised"
    return out


def map_items(n: int, reps: int) -> dict[str, Any]:
    mod = load_module("pf_map", map_source()[0])
    p = Pipeline(
        [
            PipeFunc(mod.b, output_name="b", mapspec="a[i] -> b[i]"),
            PipeFunc(mod.c, output_name="c", mapspec="b[i] -> c[i]"),
            PipeFunc(mod.d, output_name="d", mapspec="c[i] -> d[i]"),
        ]
    )
    xs = list(range(n))

    def go() -> Any:
        return p.map({"a": xs}, parallel=False, storage="dict")

    assert list(go()["d"].output)[-1] == n * 2 - 1
    return {"raw": {"main": time_reps(go, reps=reps, budget=10.0)}, "note": "mapspec, sequential"}


def async_map(n: int, sleep: float, reps: int) -> dict[str, Any]:
    # No awaited async functions (see _NO_ASYNC): the documented route for I/O-bound
    # maps is a thread pool over a blocking function.
    mod = load_module(
        "pf_amap",
        f"import time\n\n\ndef y(x: int) -> int:\n    time.sleep({sleep!r})\n    return x\n",
    )
    p = Pipeline([PipeFunc(mod.y, output_name="y", mapspec="x[i] -> y[i]")])
    xs = list(range(n))
    with ThreadPoolExecutor(n) as ex:
        raw = time_reps(lambda: p.map({"x": xs}, executor=ex, chunksizes=1), reps=reps)
    return {"raw": {"main": raw}, "note": f"threads (time.sleep in {n} threads)"}


def map_memory(n: int) -> dict[str, Any]:
    mod = load_module("pf_mem", map_source()[0])
    p = Pipeline([PipeFunc(mod.y, output_name="y", mapspec="x[i] -> y[i]")])
    xs = list(range(n))
    p.map({"x": xs[:10]}, parallel=False, storage="dict")  # warm-up, as for HyperNodes
    growth = peak_rss_growth(lambda: p.map({"x": xs}, parallel=False, storage="dict"))
    return {"raw": {"main": [growth]}}


def _cache(n: int, sleep: float, reps: int, **kwargs: Any) -> dict[str, Any]:
    src, outs = chain_source(n, sleep=sleep)
    p = _pipeline(f"pf_cache{n}{kwargs['cache_type']}", src, outs, **kwargs)
    # full_output: every output comes back, as HyperNodes' run() returns them all.
    cold = time_reps(lambda: p.run(f"v{n}", kwargs={"v0": 0}, full_output=True), reps=1, warmup=0)
    hit = time_reps(lambda: p.run(f"v{n}", kwargs={"v0": 0}, full_output=True), reps=reps)
    return {"raw": {"cold": cold, "hit": hit}}


def cache_disk(n: int, sleep: float, reps: int) -> dict[str, Any]:
    kwargs = {"cache_dir": tempfile.mkdtemp(prefix="pf-cache-"), "with_lru_cache": False}
    out = _cache(n, sleep, reps, cache_type="disk", cache_kwargs=kwargs)
    out["note"] = "DiskCache(with_lru_cache=False)"
    return out


def cache_memory(n: int, sleep: float, reps: int) -> dict[str, Any]:
    out = _cache(n, sleep, reps, cache_type="lru", cache_kwargs={"shared": False})
    out["note"] = "LRUCache(shared=False)"
    return out


def _no_async(**_: Any) -> dict[str, Any]:
    raise NotAvailable(_NO_ASYNC)


def _no_callbacks(**_: Any) -> dict[str, Any]:
    raise NotAvailable("pipefunc has no run-callback API")


WORKLOADS = {
    "chain": chain,
    "fanin": fanin,
    "arun_chain": _no_async,
    "async_chain": _no_async,
    "async_wide": _no_async,
    "async_sleep": _no_async,
    "threaded_sleep": threaded_sleep,
    "scale": scale,
    "map": map_items,
    "async_map": async_map,
    "map_memory": map_memory,
    "cache_disk": cache_disk,
    "cache_memory": cache_memory,
    "callbacks_idle": _no_callbacks,
}
