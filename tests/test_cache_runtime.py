"""Caching through the kernel: keys, invalidation, every path, the peers' failures."""

from __future__ import annotations

import asyncio
import importlib
import subprocess
import sys
import textwrap
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from hypernodes import (
    DiskCache,
    HyperNodesEngine,
    MemoryCache,
    Pipeline,
    PipelineCallback,
    node,
    set_default_config,
)
from hypernodes.cache.base import CacheWarning

calls: Counter[str] = Counter()
lock = threading.Lock()


def count(name: str) -> None:
    with lock:
        calls[name] += 1


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    calls.clear()


@pytest.fixture(params=["memory", "disk"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    return MemoryCache() if request.param == "memory" else DiskCache(tmp_path / "cache")


@node(output_name="a")
def make_a(x: int) -> int:
    count("make_a")
    return x + 1


@node(output_name="b")
def make_b(a: int) -> int:
    count("make_b")
    return a * 10


@node(output_name="nothing")
def returns_none(x: int) -> None:
    count("returns_none")
    return None


@node(output_name="c")
async def make_c(b: int) -> int:
    count("make_c")
    await asyncio.sleep(0)
    return b + 5


class Cached(PipelineCallback):
    def __init__(self) -> None:
        self.cached: list[str] = []
        self.ran: list[str] = []

    def on_node_cached(self, *, context: Any, node: Any, outputs: dict[str, Any]) -> None:
        self.cached.append(node.name)

    def on_node_end(self, *, context: Any, node: Any, outputs: Any, duration: float) -> None:
        self.ran.append(node.name)


def test_second_run_hits_every_node(store: Any) -> None:
    pipeline = Pipeline([make_a, make_b, make_c], cache=store)
    first = pipeline.run({"x": 1})
    second = pipeline.run({"x": 1})
    assert first == second == {"a": 2, "b": 20, "c": 25}
    assert calls == {"make_a": 1, "make_b": 1, "make_c": 1}
    assert store.stats().hits == 3


def test_a_different_input_misses(store: Any) -> None:
    pipeline = Pipeline([make_a, make_b], cache=store)
    pipeline.run({"x": 1})
    assert pipeline.run({"x": 2}) == {"a": 3, "b": 30}
    assert calls == {"make_a": 2, "make_b": 2}


def test_none_and_falsy_results_are_cached(store: Any) -> None:
    # hypernodes 0.4.8 never hits the cache for a node that returns None.
    pipeline = Pipeline([returns_none], cache=store)
    assert pipeline.run({"x": 0}) == {"nothing": None}
    assert pipeline.run({"x": 0}) == {"nothing": None}
    assert calls["returns_none"] == 1


def test_callbacks_see_cache_hits_and_stats_count_them(store: Any) -> None:
    seen = Cached()
    pipeline = Pipeline([make_a, make_b], cache=store, callbacks=[seen])
    pipeline.run({"x": 1})
    assert seen.ran == ["make_a", "make_b"] and seen.cached == []
    pipeline.run({"x": 1})
    assert seen.cached == ["make_a", "make_b"]
    stats = store.stats()
    assert (stats.hits, stats.misses) == (2, 2)


def test_returned_values_are_safe_from_mutation(store: Any) -> None:
    # pipefunc #905: mutating a returned value corrupted its cache.
    @node(output_name="items")
    def items(n: int) -> list[int]:
        count("items")
        return list(range(n))

    pipeline = Pipeline([items], cache=store)
    first = pipeline.run({"n": 3})["items"]
    first.append(99)
    second = pipeline.run({"n": 3})["items"]
    assert second == [0, 1, 2]
    second.append(100)
    assert pipeline.run({"n": 3})["items"] == [0, 1, 2]
    assert calls["items"] == 1


def test_node_opt_out_and_downstream_still_cached(store: Any) -> None:
    @node(output_name="a", cache=False)
    def impure(x: int) -> int:
        count("impure")
        return x + 1

    pipeline = Pipeline([impure, make_b], cache=store)
    pipeline.run({"x": 1})
    pipeline.run({"x": 1})
    assert calls == {"impure": 2, "make_b": 1}  # b keyed by the fingerprint of a's value


def test_with_cache_none_turns_caching_off_over_the_global_default(store: Any) -> None:
    set_default_config(cache=store)
    pipeline = Pipeline([make_a])
    pipeline.run({"x": 1})
    pipeline.run({"x": 1})
    assert calls["make_a"] == 1
    pipeline.with_cache(None)
    pipeline.run({"x": 1})
    assert calls["make_a"] == 2


def test_async_run_and_arun_share_entries(store: Any) -> None:
    pipeline = Pipeline([make_a, make_b, make_c], cache=store)

    async def main() -> dict[str, Any]:
        return await pipeline.arun({"x": 3})

    assert asyncio.run(main()) == {"a": 4, "b": 40, "c": 45}
    assert pipeline.run({"x": 3}) == {"a": 4, "b": 40, "c": 45}
    assert calls == {"make_a": 1, "make_b": 1, "make_c": 1}


@pytest.mark.parametrize("executor", ["async", "threaded", "parallel"])
def test_every_node_executor_stores_results(executor: str, tmp_path: Path) -> None:
    # Results computed in threads and processes are stored by the orchestrator.
    store = DiskCache(tmp_path / "cache")
    seen = Cached()
    with HyperNodesEngine(node_executor=executor, max_workers=2) as engine:
        pipeline = Pipeline([make_a, make_b, make_c], engine=engine, cache=store, callbacks=[seen])
        assert pipeline.run({"x": 1}) == {"a": 2, "b": 20, "c": 25}
        assert pipeline.run({"x": 1}) == {"a": 2, "b": 20, "c": 25}
    assert sorted(seen.cached) == ["make_a", "make_b", "make_c"]


def test_map_items_are_cached_per_item(store: Any) -> None:
    pipeline = Pipeline([make_a, make_b], cache=store)
    assert [r["b"] for r in pipeline.map({"x": [1, 2]}, map_over="x")] == [20, 30]
    assert [r["b"] for r in pipeline.map({"x": [1, 2, 3]}, map_over="x")] == [20, 30, 40]
    assert calls == {"make_a": 3, "make_b": 3}  # adding an item computed only the new one


@pytest.mark.parametrize("executor", ["threaded", "async", "parallel"])
def test_map_executors_store_per_item(executor: str, tmp_path: Path) -> None:
    store = DiskCache(tmp_path / "cache")
    seen = Cached()
    with HyperNodesEngine(map_executor=executor, max_workers=2) as engine:
        pipeline = Pipeline([make_a, make_b], engine=engine, cache=store, callbacks=[seen])
        pipeline.map({"x": [1, 2]}, map_over="x")
        assert seen.cached == []
        results = pipeline.map({"x": [1, 2, 3]}, map_over="x")
    assert [r["b"] for r in results] == [20, 30, 40]
    assert sorted(seen.cached) == ["make_a", "make_a", "make_b", "make_b"]
    assert seen.ran.count("make_a") == 3  # two in the first map, the new item in the second


def test_remote_items_only_run_what_missed(tmp_path: Path) -> None:
    # A process-pool map: keys are computed here, only the missing nodes run remotely.
    store = DiskCache(tmp_path / "cache")
    with HyperNodesEngine(map_executor="parallel", max_workers=2) as engine:
        first = Pipeline([make_a], engine=engine, cache=store)
        first.map({"x": [1, 2]}, map_over="x")
        seen = Cached()
        both = Pipeline([make_a, make_b], engine=engine, cache=store, callbacks=[seen])
        results = both.map({"x": [1, 2]}, map_over="x")
    assert [r["b"] for r in results] == [20, 30]
    assert seen.cached == ["make_a", "make_a"]
    assert seen.ran == ["make_b", "make_b"]


def test_nested_pipeline_cached_as_a_whole_and_per_inner_node(store: Any) -> None:
    inner = Pipeline([make_a, make_b], name="inner")

    @node(output_name="total")
    def total(b: int, y: int) -> int:
        count("total")
        return b + y

    seen = Cached()
    outer = Pipeline([inner.as_node(name="sub"), total], cache=store, callbacks=[seen])
    assert outer.run({"x": 1, "y": 1})["total"] == 21
    assert outer.run({"x": 1, "y": 2})["total"] == 22
    assert "sub" in seen.cached  # the nested node hit as a whole
    assert calls == {"make_a": 1, "make_b": 1, "total": 2}
    # The inner nodes have entries of their own: the inner pipeline alone hits them.
    inner.with_cache(store)
    inner.run({"x": 1})
    assert calls["make_a"] == 1


def test_nested_map_adding_items_computes_only_new_ones(store: Any) -> None:
    inner = Pipeline([make_a, make_b], name="inner")
    outer = Pipeline([inner.as_node(name="each", map_over="x")], cache=store)
    assert outer.run({"x": [1, 2]}) == {"a": [2, 3], "b": [20, 30]}
    assert outer.run({"x": [1, 2, 3]}) == {"a": [2, 3, 4], "b": [20, 30, 40]}
    assert calls == {"make_a": 3, "make_b": 3}


def test_as_node_cache_override_turns_caching_off_inside(store: Any) -> None:
    inner = Pipeline([make_a], name="inner")
    outer = Pipeline([inner.as_node(name="sub", cache=None)], cache=store)
    outer.run({"x": 1})
    outer.run({"x": 1})
    assert calls["make_a"] == 2


def test_unfingerprintable_input_runs_uncached_with_a_warning(store: Any) -> None:
    @node(output_name="size")
    def size(handle: Any) -> int:
        count("size")
        return 1

    pipeline = Pipeline([size], cache=store)
    with pytest.warns(CacheWarning, match=r"node 'size' is not cached.*'handle'.*lock"):
        assert pipeline.run({"handle": threading.Lock()}) == {"size": 1}
    with pytest.warns(CacheWarning):
        pipeline.run({"handle": threading.Lock()})
    assert calls["size"] == 2


def test_arrays_differing_in_one_element_do_not_collide(store: Any) -> None:
    # hypernodes 0.4.8 falls back to repr(): two 5,000-element arrays differing in one
    # element collide there.
    np = pytest.importorskip("numpy")

    @node(output_name="total")
    def total(arr: Any) -> float:
        count("total")
        return float(arr.sum())

    pipeline = Pipeline([total], cache=store)
    a = np.zeros(5000)
    b = a.copy()
    b[2500] = 1.0
    assert pipeline.run({"arr": a}) == {"total": 0.0}
    assert pipeline.run({"arr": b}) == {"total": 1.0}
    assert calls["total"] == 2


# -- closures ------------------------------------------------------------------------------


def test_a_node_counting_its_calls_in_a_closure_hits_on_the_second_run(store: Any) -> None:
    # The node's own side effect on a closed-over object used to change its key.
    ran = Counter[str]()
    log: list[int] = []

    @node(output_name="y")
    def counted(x: int) -> int:
        ran["counted"] += 1
        log.append(x)
        return x * 2

    pipeline = Pipeline([counted], cache=store)
    assert pipeline.run({"x": 1}) == {"y": 2}
    assert pipeline.run({"x": 1}) == {"y": 2}
    assert ran == {"counted": 1}
    assert log == [1]
    assert store.stats().hits == 1


def test_a_factorys_immutable_closure_value_is_part_of_the_key(store: Any) -> None:
    def make(threshold: float) -> Any:
        @node(output_name="flag")
        def above(x: float) -> bool:
            count("above")
            return x > threshold

        return above

    assert Pipeline([make(0.5)], cache=store).run({"x": 0.7}) == {"flag": True}
    assert Pipeline([make(0.9)], cache=store).run({"x": 0.7}) == {"flag": False}
    assert Pipeline([make(0.5)], cache=store).run({"x": 0.7}) == {"flag": True}
    assert calls == {"above": 2}


CLOSURE_MODULE = """
from collections import Counter
from hypernodes import node

COUNTS = Counter()

def make(threshold):
    seen = []

    @node(output_name="y")
    def scaled(x):
        COUNTS["scaled"] += 1
        seen.append(x)
        return x {op} threshold

    return scaled
"""


def test_editing_a_node_with_a_mutated_closure_still_invalidates(tmp_path: Path) -> None:
    store = MemoryCache()
    modules = []
    for name, op in (("closure_v1", "*"), ("closure_v2", "+")):
        (tmp_path / f"{name}.py").write_text(CLOSURE_MODULE.format(op=op))
        sys.path.insert(0, str(tmp_path))
        try:
            modules.append(importlib.import_module(name))
        finally:
            sys.path.remove(str(tmp_path))
    v1, v2 = modules
    fn = v1.make(3)
    assert Pipeline([fn], cache=store).run({"x": 2}) == {"y": 6}
    assert Pipeline([fn], cache=store).run({"x": 2}) == {"y": 6}
    assert Pipeline([v2.make(3)], cache=store).run({"x": 2}) == {"y": 5}
    assert (v1.COUNTS, v2.COUNTS) == ({"scaled": 1}, {"scaled": 1})


# -- invalidation by code edits ------------------------------------------------------------

MODULE = """
from hypernodes import node

def helper(v):
    return v {helper_op}

@node(output_name="up")
def up(x):
    COUNTS["up"] += 1
    return x {up_op}

@node(output_name="down")
def down(up):
    COUNTS["down"] += 1
    return helper(up)

@node(output_name="side")
def side(x):
    COUNTS["side"] += 1
    return x
"""


def _load(tmp_path: Path, name: str, **ops: str) -> Any:
    source = MODULE.format(helper_op=ops.get("helper_op", "* 2"), up_op=ops.get("up_op", "+ 1"))
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    sys.path.insert(0, str(tmp_path))
    try:
        sys.modules.pop(name, None)
        module = importlib.import_module(name)
    finally:
        sys.path.remove(str(tmp_path))
    module.COUNTS = Counter()
    return module


def test_editing_a_node_invalidates_it_and_downstream_only(tmp_path: Path) -> None:
    # pipefunc serves stale downstream results after an upstream function is edited.
    store = MemoryCache()
    v1 = _load(tmp_path, "flow_v1")
    p1 = Pipeline([v1.up, v1.down, v1.side], cache=store)
    assert p1.run({"x": 1}) == {"up": 2, "down": 4, "side": 1}
    v2 = _load(tmp_path, "flow_v2", up_op="+ 2")  # same names, edited `up`
    p2 = Pipeline([v2.up, v2.down, v2.side], cache=store)
    assert p2.run({"x": 1}) == {"up": 3, "down": 6, "side": 1}
    assert v2.COUNTS == {"up": 1, "down": 1}  # `side` was not touched by the edit


def test_editing_a_helper_invalidates_the_node_calling_it(tmp_path: Path) -> None:
    # hypernodes 0.4.8 misses edits to helper functions.
    store = MemoryCache()
    v1 = _load(tmp_path, "helper_v1")
    Pipeline([v1.up, v1.down], cache=store).run({"x": 1})
    v2 = _load(tmp_path, "helper_v2", helper_op="* 3")
    assert Pipeline([v2.up, v2.down], cache=store).run({"x": 1}) == {"up": 2, "down": 6}
    assert v2.COUNTS == {"down": 1}


def test_redefining_a_helper_in_place_invalidates(tmp_path: Path) -> None:
    # Jupyter style: the helper is redefined in the same namespace.
    store = MemoryCache()
    mod = _load(tmp_path, "helper_inplace")
    pipeline = Pipeline([mod.up, mod.down], cache=store)
    assert pipeline.run({"x": 1})["down"] == 4
    exec("def helper(v):\n    return v * 5\n", mod.__dict__)
    assert pipeline.run({"x": 1})["down"] == 10
    assert mod.COUNTS == {"up": 1, "down": 2}


def test_keys_are_stable_across_processes(tmp_path: Path) -> None:
    # hypernodes 0.4.8 hashes nested pipelines by memory address.
    script = tmp_path / "flow.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            from hypernodes import DiskCache, Pipeline, node

            ran = []

            @node(output_name="a")
            def a(x):
                ran.append("a")
                return {{"x": x, "tags": {{"b", "a", "c"}}}}

            inner = Pipeline([a], name="inner")
            outer = Pipeline([inner.as_node(name="sub")], cache=DiskCache({str(tmp_path / "c")!r}))
            outer.run({{"x": 1}})
            print(len(ran))
            """
        )
    )
    runs = [
        subprocess.run(
            [sys.executable, str(script)],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed, "PATH": ""},
        ).stdout.strip()
        for seed in ("1", "2")
    ]
    assert runs == ["1", "0"]


# -- value-addressed keys (issue 16) ---------------------------------------------------


@node(output_name="region")
def user_region(user: str) -> str:
    count("user_region")
    return {"ann": "eu", "bob": "eu", "cid": "us"}[user]


@node(output_name="config")
def load_config(region: str) -> dict[str, str]:
    count("load_config")
    return {"region": region}


def test_two_users_in_one_region_load_the_config_once(store: Any) -> None:
    pipeline = Pipeline([user_region, load_config], cache=store)
    results = pipeline.map({"user": ["ann", "bob"]}, map_over="user")
    assert [r["config"] for r in results] == [{"region": "eu"}, {"region": "eu"}]
    assert calls == {"user_region": 2, "load_config": 1}
    assert pipeline.run({"user": "cid"})["config"] == {"region": "us"}
    assert calls["load_config"] == 2


async def _two_users(pipeline: Pipeline) -> list[dict[str, Any]]:
    return list(
        await asyncio.gather(pipeline.arun({"user": "ann"}), pipeline.arun({"user": "bob"}))
    )


@pytest.mark.asyncio
async def test_two_users_in_one_region_concurrently(store: Any) -> None:
    pipeline = Pipeline([user_region, load_config], cache=store)
    results = await _two_users(pipeline)
    assert [r["config"] for r in results] == [{"region": "eu"}, {"region": "eu"}]
    assert calls["load_config"] == 1


def test_an_output_that_cannot_be_fingerprinted_still_caches_downstream(store: Any) -> None:
    class Handle:
        def __init__(self, x: int) -> None:
            self.x = x
            self.lock = threading.Lock()  # pickle refuses it: no fingerprint

    @node(output_name="handle", cache=False)
    def open_handle(x: int) -> Handle:
        return Handle(x)

    @node(output_name="y")
    def use(handle: Handle) -> int:
        count("use")
        return handle.x

    pipeline = Pipeline([open_handle, use], cache=store)
    with pytest.warns(CacheWarning, match="'use'.*Handle"):
        pipeline.run({"x": 1})  # today's behaviour: the reader is uncached, one warning


def test_entries_carry_the_fingerprints_of_their_outputs(store: Any) -> None:
    from hypernodes.cache import fingerprint

    pipeline = Pipeline([make_a, make_b], cache=store)
    pipeline.run({"x": 1})
    record = store.get_record("make_b")
    assert record is not None and record["inputs"] == {"a": fingerprint(2)}
    assert store.entry_versions(record["key"]) == (fingerprint(20),)
    assert store.get_entry(record["key"]) == (20, (fingerprint(20),))


def test_a_remote_item_back_is_stored_by_value_too(tmp_path: Path) -> None:
    # Keys of remote items are resolved before their values exist (derived from upstream
    # keys); once an item is back, its results are also stored under value-addressed
    # keys, which a local run looks up.
    store = DiskCache(tmp_path / "cache")
    with HyperNodesEngine(map_executor="parallel", max_workers=2) as engine:
        remote = Pipeline([make_a, make_b], engine=engine, cache=store, callbacks=[Cached()])
        remote.map({"x": [1, 2]}, map_over="x")
    seen = Cached()
    local = Pipeline([make_a, make_b], cache=store, callbacks=[seen])
    assert local.run({"x": 2}) == {"a": 3, "b": 30}
    assert seen.cached == ["make_a", "make_b"] and seen.ran == []


@node(output_name="words")
def split_words(text: str) -> list[str]:
    count("split_words")
    return text.split()


@pytest.mark.parametrize("mode", ["run", "arun"])
def test_a_list_of_strs_is_joined_once_for_its_fingerprint_and_its_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    # The runtime hands the text its fingerprint made to the store, which writes it
    # instead of scanning and joining the list again (it would, through joined_strs).
    from hypernodes.cache import _serialize

    text = " ".join(f"w{i}" for i in range(100))
    rejoined: list[object] = []
    real = _serialize.joined_strs
    monkeypatch.setattr(_serialize, "joined_strs", lambda v: rejoined.append(v) or real(v))
    pipeline = Pipeline([split_words], cache=DiskCache(tmp_path / "c"))
    got = (
        pipeline.run({"text": text})
        if mode == "run"
        else asyncio.run(pipeline.arun({"text": text}))
    )
    assert got == {"words": text.split()} and rejoined == []
    pipeline.cache.flush()  # type: ignore[union-attr]
    again = Pipeline([split_words], cache=DiskCache(tmp_path / "c"))
    assert again.run({"text": text}) == {"words": text.split()}
    assert calls["split_words"] == 1


class PlainPuts(DiskCache):
    """A user's store overriding put_entry without ``text``: it is called without it."""

    seen: list[str] = []

    def put_entry(self, key: str, value: Any, versions: Any, *, node: str | None = None) -> None:
        self.seen.append(key)
        super().put_entry(key, value, versions, node=node)


def test_a_store_whose_put_entry_takes_no_text_is_called_without_it(tmp_path: Path) -> None:
    store = PlainPuts(tmp_path / "c")
    text = " ".join(f"w{i}" for i in range(100))
    assert Pipeline([split_words], cache=store).run({"text": text}) == {"words": text.split()}
    assert len(store.seen) == 1
    store.flush()
    assert Pipeline([split_words], cache=DiskCache(tmp_path / "c")).run({"text": text})
    assert calls["split_words"] == 1
