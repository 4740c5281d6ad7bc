"""Apache Hamilton implementations of the workloads, through its public API.

Public API used (its docs/docstrings): ``driver.Builder().with_modules().with_adapters()
.with_cache().build()``, ``Driver.execute(final_vars, inputs=)``,
``async_driver.Builder`` / ``AsyncDriver.execute``, ``h_threadpool.FutureAdapter``,
``lifecycle.NodeExecutionHook``, ``caching.stores.memory`` stores. Hamilton has no map
API: a map is one ``execute`` per item.
"""

from __future__ import annotations

import asyncio
import tempfile
from typing import Any

from hamilton import async_driver, driver, lifecycle
from hamilton.plugins import h_threadpool
from peer_common import (
    NotAvailable,
    async_sources,
    chain_source,
    deep,
    fanin_source,
    load_module,
    map_source,
    sleep_sources,
    time_reps,
)


def _driver(name: str, src: str, *adapters: Any, cache: dict[str, Any] | None = None) -> Any:
    builder = driver.Builder().with_modules(load_module(name, src))
    if adapters:
        builder = builder.with_adapters(*adapters)
    if cache is not None:
        builder = builder.with_cache(**cache)
    return builder.build()


def _repeat(dr: Any, outs: list[str], inputs: dict[str, Any], inner: int) -> None:
    for _ in range(inner):
        dr.execute(outs, inputs=inputs)


def chain(n: int, inner: int, reps: int) -> dict[str, Any]:
    dr = _driver(f"ham_chain{n}", chain_source(n)[0])
    assert dr.execute([f"v{n}"], inputs={"v0": 0})[f"v{n}"] == n
    raw = time_reps(lambda: _repeat(dr, [f"v{n}"], {"v0": 0}, inner), reps=reps)
    return {"raw": {"main": raw}}


def fanin(n: int, inner: int, reps: int) -> dict[str, Any]:
    dr = _driver(f"ham_fanin{n}", fanin_source(n)[0])
    raw = time_reps(lambda: _repeat(dr, ["total"], {"x": 0}, inner), reps=reps)
    return {"raw": {"main": raw}}


def _async_times(
    name: str, src: str, outs: list[str], inputs: dict[str, Any], inner: int, reps: int
) -> list[float]:
    async def main() -> list[float]:
        dr = await async_driver.Builder().with_modules(load_module(name, src)).build()

        async def once() -> None:
            for _ in range(inner):
                await dr.execute(outs, inputs=inputs)

        loop = asyncio.get_running_loop()
        await once()
        times = []
        for _ in range(reps):
            t0 = loop.time()
            await once()
            times.append(loop.time() - t0)
        return times

    return asyncio.run(main())


def arun_chain(n: int, inner: int, reps: int) -> dict[str, Any]:
    src, outs = chain_source(n)
    raw = _async_times(f"ham_achain{n}", src, [outs[-1]], {"v0": 0}, inner, reps)
    return {"raw": {"main": raw}, "note": "async_driver"}


def async_chain(n: int, inner: int, reps: int) -> dict[str, Any]:
    src, outs = async_sources(n, chain=True)
    raw = _async_times(f"ham_asc{n}", src, [outs[-1]], {"a0": 0}, inner, reps)
    return {"raw": {"main": raw}, "note": "async_driver"}


def async_wide(n: int, inner: int, reps: int) -> dict[str, Any]:
    src, outs = async_sources(n, chain=False)
    raw = _async_times(f"ham_asw{n}", src, outs, {"x": 0}, inner, reps)
    return {"raw": {"main": raw}, "note": "async_driver"}


def async_sleep(n: int, sleep: float, reps: int) -> dict[str, Any]:
    src, outs = async_sources(n, chain=False, sleep=sleep)
    raw = _async_times(f"ham_asleep{n}", src, outs, {"x": 0}, 1, reps)
    return {"raw": {"main": raw}, "note": "async_driver"}


def threaded_sleep(n: int, sleep: float, workers: int, reps: int) -> dict[str, Any]:
    src, outs = sleep_sources(n, sleep)
    dr = _driver(f"ham_tsleep{n}", src, h_threadpool.FutureAdapter(max_workers=workers))
    raw = time_reps(lambda: dr.execute(outs, inputs={"x": 0}), reps=reps)
    return {"raw": {"main": raw}, "note": "FutureAdapter"}


def _scale(n: int, build_reps: int, run_reps: int) -> dict[str, Any]:
    mod = load_module(f"ham_scale{n}", chain_source(n)[0])
    holder: list[Any] = []
    build = time_reps(
        lambda: holder.append(driver.Builder().with_modules(mod).build()),
        reps=build_reps,
        warmup=0,
        budget=10.0,
    )
    dr = holder[-1]
    first = time_reps(lambda: dr.execute([f"v{n}"], inputs={"v0": 0}), reps=1, warmup=0)
    run = time_reps(
        lambda: dr.execute([f"v{n}"], inputs={"v0": 0}), reps=run_reps, warmup=0, budget=10.0
    )
    return {"raw": {"build": build, "first_run": first, "run": run}}


def scale(n: int, build_reps: int, run_reps: int) -> dict[str, Any]:
    out: dict[str, Any] = deep(lambda: _scale(n, build_reps, run_reps), depth=20 * n + 1000)
    out["note"] = "recursion limit raised"
    return out


def map_items(n: int, reps: int) -> dict[str, Any]:
    dr = _driver("ham_map", map_source()[0])
    xs = list(range(n))

    def go() -> list[Any]:
        return [dr.execute(["b", "c", "d"], inputs={"a": x}) for x in xs]

    return {"raw": {"main": time_reps(go, reps=reps, budget=10.0)}, "note": "execute per item"}


def async_map(n: int, sleep: float, reps: int) -> dict[str, Any]:
    src = (
        f"import asyncio\n\n\nasync def y(x: int) -> int:\n"
        f"    await asyncio.sleep({sleep!r})\n    return x\n"
    )

    async def main() -> list[float]:
        dr = await async_driver.Builder().with_modules(load_module("ham_amap", src)).build()
        loop = asyncio.get_running_loop()
        times = []
        for _ in range(reps + 1):
            t0 = loop.time()
            await asyncio.gather(*(dr.execute(["y"], inputs={"x": x}) for x in range(n)))
            times.append(loop.time() - t0)
        return times[1:]

    return {"raw": {"main": asyncio.run(main())}, "note": "gather of execute per item"}


def _cache(n: int, sleep: float, reps: int, **cache: Any) -> dict[str, Any]:
    src, outs = chain_source(n, sleep=sleep)
    dr = _driver(f"ham_cache{n}{len(cache)}", src, cache=cache)
    cold = time_reps(lambda: dr.execute(outs, inputs={"v0": 0}), reps=1, warmup=0)
    hit = time_reps(lambda: dr.execute(outs, inputs={"v0": 0}), reps=reps)
    return {"raw": {"cold": cold, "hit": hit}}


def cache_disk(n: int, sleep: float, reps: int) -> dict[str, Any]:
    return _cache(n, sleep, reps, path=tempfile.mkdtemp(prefix="ham-cache-"))


def cache_memory(n: int, sleep: float, reps: int) -> dict[str, Any]:
    from hamilton.caching.stores.memory import InMemoryMetadataStore, InMemoryResultStore

    out = _cache(
        n,
        sleep,
        reps,
        metadata_store=InMemoryMetadataStore(),
        result_store=InMemoryResultStore(),
    )
    out["note"] = "in-memory stores"
    return out


class _NoOpHook(lifecycle.NodeExecutionHook):
    def run_before_node_execution(self, **_: Any) -> None:
        pass

    def run_after_node_execution(self, **_: Any) -> None:
        pass


def callbacks_idle(n: int, inner: int, reps: int) -> dict[str, Any]:
    src, outs = chain_source(n)
    plain = _driver(f"ham_cb{n}", src)
    idle = _driver(f"ham_cbi{n}", src, _NoOpHook())
    return {
        "raw": {
            "none": time_reps(lambda: _repeat(plain, [outs[-1]], {"v0": 0}, inner), reps=reps),
            "idle": time_reps(lambda: _repeat(idle, [outs[-1]], {"v0": 0}, inner), reps=reps),
        },
        "note": "no-op NodeExecutionHook",
    }


def map_memory(n: int) -> dict[str, Any]:
    raise NotAvailable("no map API (a per-item execute loop holds whatever you collect)")


WORKLOADS = {
    "chain": chain,
    "fanin": fanin,
    "arun_chain": arun_chain,
    "async_chain": async_chain,
    "async_wide": async_wide,
    "async_sleep": async_sleep,
    "threaded_sleep": threaded_sleep,
    "scale": scale,
    "map": map_items,
    "async_map": async_map,
    "map_memory": map_memory,
    "cache_disk": cache_disk,
    "cache_memory": cache_memory,
    "callbacks_idle": callbacks_idle,
}


def fingerprint(mb: int, reps: int) -> dict[str, Any]:
    import numpy as np
    from hamilton.caching import fingerprinting

    arr = np.random.default_rng(0).integers(0, 255, size=mb * 1_000_000, dtype=np.uint8)
    raw = time_reps(lambda: fingerprinting.hash_value(arr), reps=reps)
    return {"raw": {"main": raw}, "note": "caching.fingerprinting.hash_value"}


WORKLOADS["fingerprint"] = fingerprint
