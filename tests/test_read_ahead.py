"""A map's cache lookups read ahead: ``Cache.get_entries`` and ``CacheRuntime.read_ahead``.

A sequential map through a store that reads many entries at once (DiskCache) looks up
the keys of its next items a step at a time in one batched read each, instead of one
query per node and item. These tests prove the batching happened (calls counted), that
every result and every statistic is what the lookups one by one would give, and the
cases it must leave alone.
"""

from __future__ import annotations

import os
import sqlite3
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
)
from hypernodes.cache import CacheWarning
from hypernodes.cache import _database as database_module
from hypernodes.cache import _per_process as per_process
from hypernodes.cache import disk as disk_module
from hypernodes.cache.runtime import CacheRuntime

calls: Counter[str] = Counter()
lock = threading.Lock()


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    calls.clear()


@node(output_name="a")
def make_a(x: int) -> int:
    with lock:
        calls["make_a"] += 1
    return x + 1


@node(output_name="b")
def make_b(a: int) -> list[str]:
    with lock:
        calls["make_b"] += 1
    return [f"w{a}-{i}" for i in range(20)]  # (a list of 16+ strs: stored as text)


@node(output_name="c")
def make_c(b: list[str]) -> int:
    with lock:
        calls["make_c"] += 1
    if b[0] == "w5-0":
        raise ValueError("item 4 fails")
    return len(b)


class Spy(DiskCache):
    """Counts the store's batched and single lookups (same methods, counted)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches: list[int] = []
        self.singles = 0

    def get_entries(self, keys: list[str]) -> dict[str, Any]:
        self.batches.append(len(keys))
        return super().get_entries(keys)

    def get_entry(self, key: str) -> Any:
        self.singles += 1
        return super().get_entry(key)


class Cached(PipelineCallback):
    def __init__(self) -> None:
        self.cached: list[str] = []

    def on_node_cached(self, *, context: Any, node: Any, outputs: dict[str, Any]) -> None:
        self.cached.append(node.name)


def key(i: int) -> str:
    return f"{i:032x}"


def reopened(cache: DiskCache) -> DiskCache:
    """The same directory through new connections, as another process would see it."""
    cache.flush()
    per_process._DATABASES.pop(str(Path(cache.path) / "cache.db"), None)
    return DiskCache(cache.path, ttl=cache.ttl, layout=cache.layout)


def stats(cache: Any) -> tuple[int, int]:
    s = cache.stats()
    return s.hits, s.misses


# -- get_entries --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sqlite", "files", "memory"])
def test_get_entries_finds_rows_files_and_staged_entries_and_leaves_misses_out(
    tmp_path: Path, kind: str
) -> None:
    cache: Any = MemoryCache() if kind == "memory" else DiskCache(tmp_path / "c", layout=kind)
    big = b"L" * (disk_module.LARGE_ENTRY + 10)  # a file even in the sqlite layout
    cache.put_entry(key(1), [1, 2], ("v1",))
    cache.put_entry(key(2), big, ("v2",))
    if kind != "memory":
        cache = reopened(cache)  # both committed, read back through the database
    cache.put_entry(key(3), "staged", None)  # not committed yet: found in memory
    found = cache.get_entries([key(1), key(2), key(3), key(4)])
    assert found == {key(1): ([1, 2], ("v1",)), key(2): (big, ("v2",)), key(3): ("staged", None)}
    assert stats(cache) == (3, 1)  # each key one lookup, as get_entry would count it


def test_get_entries_reads_many_keys_in_few_queries(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "c", layout="sqlite")
    for i in range(600):
        cache.put(key(i), i)
    cache = reopened(cache)
    database = cache._database()
    assert database is not None
    queries: list[str] = []
    database._connect()  # (the reader is made on first use: trace the one made now)
    reader = database._reader = database._connect()
    database._reads = reader.cursor()
    database._reader_epoch = database._epoch
    reader.set_trace_callback(queries.append)
    wanted = [key(i) for i in range(0, 1200, 2)]  # 300 present, 300 absent
    found = cache.get_entries(wanted)
    assert found == {key(i): (i, None) for i in range(0, 600, 2)}
    selects = [q for q in queries if q.startswith("SELECT key, entry")]
    assert len(selects) == 3  # 600 keys, 256 a query (not one query per key)
    assert stats(cache) == (300, 300)


def test_get_entries_leaves_out_entries_older_than_ttl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr(database_module, "clock", lambda: now[0])
    cache = DiskCache(tmp_path / "c", ttl=60, layout="sqlite")
    cache.put(key(1), "old")
    cache.flush()  # (a row is stamped when committed)
    now[0] += 50
    cache.put(key(2), "new")
    cache = reopened(cache)
    now[0] += 20  # key 1 is 70 s old, key 2 is 20 s old
    assert cache.get_entries([key(1), key(2)]) == {key(2): ("new", None)}
    assert stats(cache) == (1, 1)


def test_get_entries_of_a_corrupt_row_is_a_miss_with_one_warning(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "c", layout="sqlite")
    cache.put(key(1), "good")
    cache.put(key(2), "soon corrupt")
    cache = reopened(cache)
    conn = sqlite3.connect(Path(cache.path) / "cache.db", isolation_level=None)
    try:
        conn.execute("UPDATE entries SET entry = ? WHERE key = ?", (b"HNDC\x02junk", key(2)))
    finally:
        conn.close()
    with pytest.warns(CacheWarning, match=rf"cache entry {key(2)} in .*miss") as record:
        assert cache.get_entries([key(1), key(2)]) == {key(1): ("good", None)}
    assert len(record) == 1
    s = cache.stats()
    assert (s.hits, s.misses, s.errors) == (1, 1, 1)


def test_get_entries_on_a_damaged_database_is_a_miss_per_key_with_one_warning(
    tmp_path: Path,
) -> None:
    cache = DiskCache(tmp_path / "c", layout="sqlite")
    for i in range(50):
        cache.put(key(i), [i] * 500)
    cache = reopened(cache)
    file = Path(cache.path) / "cache.db"
    conn = sqlite3.connect(file, isolation_level=None)
    try:  # everything into the database file, then all but its first page overwritten
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    finally:
        conn.close()
    data = file.read_bytes()
    file.write_bytes(data[:4096] + os.urandom(len(data) - 4096))
    with pytest.warns(CacheWarning, match=r"cache database .*: lookups are misses") as record:
        assert cache.get_entries([key(1), key(2), key(3)]) == {}
    assert len(record) == 1
    s = cache.stats()
    assert (s.hits, s.misses, s.errors) == (0, 3, 3)


def test_get_entries_refuses_a_key_that_is_not_a_str(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "c")
    with pytest.raises(TypeError, match="cache keys are str, got int"):
        cache.get_entries([key(1), 7])  # type: ignore[list-item]


# -- maps reading ahead -------------------------------------------------------------------


def test_a_warm_map_reads_its_lookups_ahead_in_batches(tmp_path: Path) -> None:
    pipeline = Pipeline([make_a, make_b], cache=DiskCache(tmp_path / "c"))
    xs = list(range(100))
    first = pipeline.map({"x": xs}, map_over="x")
    assert calls == {"make_a": 100, "make_b": 100}
    store = Spy(tmp_path / "c")
    seen = Cached()
    again = Pipeline([make_a, make_b], cache=store, callbacks=[seen]).map({"x": xs}, map_over="x")
    assert again == first
    assert calls == {"make_a": 100, "make_b": 100}  # nothing computed again
    # Two steps, items 64 at a time: a batch per step and group of items, no single lookup.
    assert store.batches == [64, 64, 36, 36]
    assert store.singles == 0
    assert stats(store) == (200, 0)
    assert seen.cached == ["make_a", "make_b"] * 100  # every hit still reported


def test_a_cold_map_counts_each_lookup_once_and_computes_each_node_once(
    tmp_path: Path,
) -> None:
    store = Spy(tmp_path / "c")
    results = Pipeline([make_a, make_b], cache=store).map({"x": list(range(100))}, map_over="x")
    assert [r["a"] for r in results] == list(range(1, 101))
    assert calls == {"make_a": 100, "make_b": 100}
    # The first 64 items' first step was read ahead: all missing, not asked again. The
    # next batch is left to its own lookups (nothing was found), and the second step's
    # keys depend on values computed in the run: looked up one by one.
    assert store.batches == [64]
    assert store.singles == 36 + 100
    assert stats(store) == (0, 200)


def test_read_ahead_backs_off_in_a_cold_stretch_and_resumes_at_a_hit(tmp_path: Path) -> None:
    Pipeline([make_a, make_b], cache=DiskCache(tmp_path / "c")).map(
        {"x": list(range(300, 600))}, map_over="x"
    )
    calls.clear()
    store = Spy(tmp_path / "c")
    results = Pipeline([make_a, make_b], cache=store).map({"x": list(range(600))}, map_over="x")
    assert [r["a"] for r in results] == list(range(1, 601))
    assert calls == {"make_a": 300, "make_b": 300}  # only the items not cached before
    # Batches of 64 items: 0 read (nothing), 1 skipped, 2 read (nothing), 3-4 skipped,
    # 5 read (items 320-383, cached: both steps), then every batch read again.
    assert store.batches == [64, 64] + [64, 64] * 4 + [24, 24]
    assert stats(store) == (600, 600)


def test_items_sharing_keys_compute_them_once(tmp_path: Path) -> None:
    store = Spy(tmp_path / "c")
    pipeline = Pipeline([make_a, make_b], cache=store)
    xs = [1, 1, 2, 1, 2, 3]
    results = pipeline.map({"x": xs}, map_over="x")
    assert [r["a"] for r in results] == [x + 1 for x in xs]
    assert calls == {"make_a": 3, "make_b": 3}  # an item's miss is the next one's hit
    calls.clear()
    results = Pipeline([make_a, make_b], cache=Spy(tmp_path / "c")).map({"x": xs}, map_over="x")
    assert [r["b"][0] for r in results] == [f"w{x + 1}-0" for x in xs]
    assert calls == {}


def test_a_partly_warm_map_computes_only_the_new_items(tmp_path: Path) -> None:
    pipeline = Pipeline([make_a, make_b], cache=DiskCache(tmp_path / "c"))
    pipeline.map({"x": [1, 2]}, map_over="x")
    calls.clear()
    store = Spy(tmp_path / "c")
    results = Pipeline([make_a, make_b], cache=store).map({"x": [1, 2, 3]}, map_over="x")
    assert [r["a"] for r in results] == [2, 3, 4]
    assert calls == {"make_a": 1, "make_b": 1}
    assert stats(store) == (4, 2)


def test_failed_items_collected_leave_the_next_items_right(tmp_path: Path) -> None:
    xs = list(range(8))  # item 4 fails in make_c
    first = Pipeline([make_a, make_b, make_c], cache=DiskCache(tmp_path / "c")).map(
        {"x": xs}, map_over="x", on_error="collect"
    )
    assert calls == {"make_a": 8, "make_b": 8, "make_c": 8}
    calls.clear()
    store = Spy(tmp_path / "c")
    again = Pipeline([make_a, make_b, make_c], cache=store).map(
        {"x": xs}, map_over="x", on_error="collect"
    )
    assert [r["c"] for i, r in enumerate(again) if i != 4] == [20] * 7
    assert [r["c"] for i, r in enumerate(first) if i != 4] == [20] * 7
    assert "item 4 fails" in str(again[4].error.__cause__)
    assert calls == {"make_c": 1}  # only the failed node runs again


def test_a_store_overriding_get_entry_is_not_read_ahead(tmp_path: Path) -> None:
    class Logged(DiskCache):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.looked: list[str] = []

        def get_entry(self, key: str) -> Any:
            self.looked.append(key)
            return super().get_entry(key)

    Pipeline([make_a, make_b], cache=DiskCache(tmp_path / "c")).map({"x": [1, 2]}, map_over="x")
    store = Logged(tmp_path / "c")
    Pipeline([make_a, make_b], cache=store).map({"x": [1, 2]}, map_over="x")
    assert len(store.looked) == 4  # each of its lookups went through its own method


def test_a_map_of_concurrent_items_is_not_read_ahead(tmp_path: Path) -> None:
    Pipeline([make_a, make_b], cache=DiskCache(tmp_path / "c")).map({"x": [1, 2]}, map_over="x")
    store = Spy(tmp_path / "c")
    with HyperNodesEngine(map_executor="threaded", max_workers=2) as engine:
        pipeline = Pipeline([make_a, make_b], engine=engine, cache=store)
        assert [r["a"] for r in pipeline.map({"x": [1, 2]}, map_over="x")] == [2, 3]
    assert store.batches == []
    assert stats(store) == (4, 0)


def test_a_stream_left_early_drops_what_it_read_ahead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline = Pipeline([make_a, make_b], cache=DiskCache(tmp_path / "c"))
    pipeline.map({"x": list(range(10))}, map_over="x")
    calls.clear()
    left: list[int] = []
    forget = CacheRuntime.forget_ahead

    def spy(self: CacheRuntime) -> None:
        left.append(len(self._ahead))
        forget(self)
        assert not self._ahead

    monkeypatch.setattr(CacheRuntime, "forget_ahead", spy)
    store = Spy(tmp_path / "c")
    stream = Pipeline([make_a, make_b], cache=store).map_iter({"x": list(range(10))}, map_over="x")
    index, first = next(stream)
    assert (index, first["a"]) == (0, 1)
    stream.close()
    assert store.batches == [10, 10]  # read ahead for all ten items
    assert len(left) == 1 and left[0] <= 18  # ...and what the items left run was dropped
    assert store.singles == 0
    assert calls == {}


def test_an_unfingerprintable_input_warns_once_per_run_not_when_read_ahead(
    tmp_path: Path,
) -> None:
    class Opaque:
        def __reduce__(self) -> Any:
            raise TypeError("no")

    @node(output_name="y")
    def use(x: Any) -> int:
        return 1

    with pytest.warns(CacheWarning, match="not cached in this run") as record:
        results = Pipeline([use], cache=DiskCache(tmp_path / "c")).map(
            {"x": [Opaque(), Opaque()]}, map_over="x"
        )
    assert [r["y"] for r in results] == [1, 1]
    assert len({str(w.message) for w in record}) == 1


def test_a_key_read_ahead_as_missing_then_stored_by_another_run_is_a_hit(
    tmp_path: Path,
) -> None:
    class Late(DiskCache):
        """Its batched read returns after another run stored and landed the key."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.read, self.other_done = threading.Event(), threading.Event()

        def get_entries(self, keys: list[str]) -> dict[str, Any]:
            found = super().get_entries(keys)
            self.read.set()
            assert self.other_done.wait(10)
            return found

    store = Late(tmp_path / "c")

    @node(output_name="a")
    def slow_a(x: int) -> int:
        with lock:
            calls["slow_a"] += 1
        assert store.read.wait(10)  # the map read the key ahead while it missed
        return x + 1

    pipeline = Pipeline([slow_a], cache=store)

    def other() -> None:
        try:
            assert pipeline.run({"x": 9}) == {"a": 10}
        finally:
            store.other_done.set()

    thread = threading.Thread(target=other)
    thread.start()
    results = pipeline.map({"x": [9]}, map_over="x")
    thread.join(10)
    assert [r["a"] for r in results] == [10]
    assert calls == {"slow_a": 1}  # the map read the key again when it claimed it: a hit
