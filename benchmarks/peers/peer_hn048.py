"""hypernodes 0.4.8 (PyPI) implementations of the workloads, through its public API.

Public API used (its README): ``Pipeline(nodes=..., engine=...)``, ``@node(output_name=)``,
``Pipeline.run(inputs=)``, ``Pipeline.map(inputs=, map_over=)``, ``SeqEngine(cache=,
callbacks=)``, ``DiskCache(path=)``, ``PipelineCallback``. 0.4.8 ships only a sequential
engine (plus Daft/Dask map engines), so concurrent workloads run one node at a time:
those figures are measured as is and labelled "sequential".
"""

from __future__ import annotations

import tempfile
from typing import Any

from peer_common import (
    NotAvailable,
    async_sources,
    chain_source,
    deep,
    fanin_source,
    load_module,
    map_source,
    peak_rss_growth,
    sleep_sources,
    time_reps,
)

from hypernodes import DiskCache, Pipeline, PipelineCallback, SeqEngine, node


def _pipeline(name: str, src: str, outputs: list[str], **kwargs: Any) -> Pipeline:
    mod = load_module(name, src)
    return Pipeline(nodes=[node(output_name=o)(getattr(mod, o)) for o in outputs], **kwargs)


def _repeat(p: Pipeline, inputs: dict[str, Any], inner: int) -> None:
    for _ in range(inner):
        p.run(inputs=inputs)


def chain(n: int, inner: int, reps: int) -> dict[str, Any]:
    p = _pipeline(f"hn048_chain{n}", *chain_source(n))
    assert p.run(inputs={"v0": 0})[f"v{n}"] == n
    return {"raw": {"main": time_reps(lambda: _repeat(p, {"v0": 0}, inner), reps=reps)}}


def fanin(n: int, inner: int, reps: int) -> dict[str, Any]:
    p = _pipeline(f"hn048_fanin{n}", *fanin_source(n))
    return {"raw": {"main": time_reps(lambda: _repeat(p, {"x": 0}, inner), reps=reps)}}


def _async(n: int, inner: int, reps: int, chain: bool) -> dict[str, Any]:
    src, outs = async_sources(n, chain=chain)
    p = _pipeline(f"hn048_async{n}{chain}", src, outs)
    inputs = {"a0": 0} if chain else {"x": 0}
    raw = time_reps(lambda: _repeat(p, inputs, inner), reps=reps)
    return {"raw": {"main": raw}, "note": "sequential (SeqEngine)"}


def async_chain(n: int, inner: int, reps: int) -> dict[str, Any]:
    return _async(n, inner, reps, chain=True)


def async_wide(n: int, inner: int, reps: int) -> dict[str, Any]:
    return _async(n, inner, reps, chain=False)


def async_sleep(n: int, sleep: float, reps: int) -> dict[str, Any]:
    src, outs = async_sources(n, chain=False, sleep=sleep)
    p = _pipeline(f"hn048_asleep{n}", src, outs)
    raw = time_reps(lambda: p.run(inputs={"x": 0}), reps=reps, warmup=0, budget=5.0)
    return {"raw": {"main": raw}, "note": "sequential: 0.4.8 has no concurrent node engine"}


def threaded_sleep(n: int, sleep: float, workers: int, reps: int) -> dict[str, Any]:
    p = _pipeline(f"hn048_tsleep{n}", *sleep_sources(n, sleep))
    raw = time_reps(lambda: p.run(inputs={"x": 0}), reps=reps, warmup=0, budget=3.0)
    return {"raw": {"main": raw}, "note": "sequential: 0.4.8 has no thread node executor"}


def _scale(n: int, build_reps: int, run_reps: int) -> dict[str, Any]:
    src, outs = chain_source(n)
    mod = load_module(f"hn048_scale{n}", src)
    nodes = [node(output_name=o)(getattr(mod, o)) for o in outs]
    holder: list[Pipeline] = []
    build = time_reps(
        lambda: holder.append(Pipeline(nodes=nodes)), reps=build_reps, warmup=0, budget=10.0
    )
    p = holder[-1]
    first = time_reps(lambda: p.run(inputs={"v0": 0}), reps=1, warmup=0)
    run = time_reps(lambda: p.run(inputs={"v0": 0}), reps=run_reps, warmup=0, budget=10.0)
    return {"raw": {"build": build, "first_run": first, "run": run}}


def scale(n: int, build_reps: int, run_reps: int) -> dict[str, Any]:
    out: dict[str, Any] = deep(lambda: _scale(n, build_reps, run_reps), depth=20 * n + 1000)
    out["note"] = "recursion limit raised"
    return out


def map_items(n: int, reps: int) -> dict[str, Any]:
    src, outs = map_source()
    p = _pipeline("hn048_map", src, outs)
    xs = list(range(n))
    out = p.map(inputs={"a": xs}, map_over="a")
    assert out[-1]["d"] == (n - 1 + 1) * 2 - 1
    raw = time_reps(lambda: p.map(inputs={"a": xs}, map_over="a"), reps=reps, budget=10.0)
    return {"raw": {"main": raw}}


def async_map(n: int, sleep: float, reps: int) -> dict[str, Any]:
    mod = load_module(
        "hn048_amap",
        f"import asyncio\n\n\nasync def y(x: int) -> int:\n"
        f"    await asyncio.sleep({sleep!r})\n    return x\n",
    )
    p = Pipeline(nodes=[node(output_name="y")(mod.y)])
    xs = list(range(n))
    raw = time_reps(lambda: p.map(inputs={"x": xs}, map_over="x"), reps=reps, warmup=0, budget=5.0)
    return {"raw": {"main": raw}, "note": "sequential: 0.4.8 maps items one at a time"}


def map_memory(n: int) -> dict[str, Any]:
    mod = load_module("hn048_mem", map_source()[0])
    p = Pipeline(nodes=[node(output_name="y")(mod.y)])
    xs = list(range(n))
    p.map(inputs={"x": xs[:10]}, map_over="x")  # warm-up, as for HyperNodes
    return {"raw": {"main": [peak_rss_growth(lambda: p.map(inputs={"x": xs}, map_over="x"))]}}


def cache_disk(n: int, sleep: float, reps: int) -> dict[str, Any]:
    src, outs = chain_source(n, sleep=sleep)
    engine = SeqEngine(cache=DiskCache(path=tempfile.mkdtemp(prefix="hn048-cache-")))
    p = _pipeline(f"hn048_cache{n}", src, outs, engine=engine)
    cold = time_reps(lambda: p.run(inputs={"v0": 0}), reps=1, warmup=0)
    hit = time_reps(lambda: p.run(inputs={"v0": 0}), reps=reps, warmup=1)
    return {"raw": {"cold": cold, "hit": hit}}


def cache_memory(n: int, sleep: float, reps: int) -> dict[str, Any]:
    raise NotAvailable("0.4.8 documents only DiskCache")


class _Idle(PipelineCallback):
    """Overrides nothing."""


def callbacks_idle(n: int, inner: int, reps: int) -> dict[str, Any]:
    src, outs = chain_source(n)
    plain = _pipeline(f"hn048_cb{n}", src, outs, engine=SeqEngine())
    idle = _pipeline(f"hn048_cbi{n}", src, outs, engine=SeqEngine(callbacks=[_Idle()]))
    return {
        "raw": {
            "none": time_reps(lambda: _repeat(plain, {"v0": 0}, inner), reps=reps),
            "idle": time_reps(lambda: _repeat(idle, {"v0": 0}, inner), reps=reps),
        }
    }


def arun_chain(n: int, inner: int, reps: int) -> dict[str, Any]:
    raise NotAvailable("0.4.8 has no async run API (run() blocks the caller's loop)")


def versions() -> dict[str, Any]:
    from importlib.metadata import version

    return {"raw": {}, "note": f"hypernodes {version('hypernodes')}"}


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
    "versions": versions,
}
