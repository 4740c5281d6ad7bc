"""One contract suite run over every cache store, plus what is specific to MemoryCache."""

from __future__ import annotations

import asyncio
import os
import pickle
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hypernodes.cache import (
    MISSING,
    Cache,
    CacheStats,
    CacheWriteError,
    DiskCache,
    MemoryCache,
)

KEY = "0123456789abcdef0123456789abcdef"
STORES = ["memory", "memory_lru", "disk", "disk_signed", "disk_files"]


def make_store(kind: str, path: Path) -> Cache:
    if kind == "memory":
        return MemoryCache()
    if kind == "memory_lru":
        return MemoryCache(max_size=64)
    if kind == "disk":
        return DiskCache(path / "cache")
    if kind == "disk_files":  # one file per entry, as on network filesystems
        return DiskCache(path / "cache", layout="files")
    return DiskCache(path / "cache", secret=b"k")


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Cache:
    return make_store(request.param, tmp_path)


def key(i: int) -> str:
    return f"{i:032x}"


# -- get / put / contains / clear / stats --------------------------------------------------


def test_a_miss_returns_missing_or_the_default(store: Cache) -> None:
    assert store.get(KEY) is MISSING
    sentinel = object()
    assert store.get(KEY, sentinel) is sentinel
    assert KEY not in store
    assert store.stats() == CacheStats(misses=2)


def test_put_then_get_round_trips_and_overwrites(store: Cache) -> None:
    value = {"a": [1, 2.5, "x"], "b": (None, b"\x00")}
    store.put(KEY, value)
    assert KEY in store
    assert store.get(KEY) == value
    store.put(KEY, "second")
    assert store.get(KEY) == "second"
    stats = store.stats()
    assert (stats.hits, stats.misses, stats.writes, stats.errors) == (2, 0, 2, 0)
    assert stats.hit_rate == 1.0 and stats.lookups == 2


@pytest.mark.parametrize("value", [None, False, 0, 0.0, "", b"", [], {}, (), set()])
def test_none_and_falsy_values_are_cached(store: Cache, value: Any) -> None:
    # hypernodes 0.4.8 never hits the cache for a node that returns None.
    store.put(KEY, value)
    assert KEY in store
    got = store.get(KEY, default="miss")
    assert got == value and type(got) is type(value)
    assert store.stats().hits == 1 and store.stats().misses == 0


def test_keys_are_independent(store: Cache) -> None:
    for i in range(10):
        store.put(key(i), i * i)
    assert [store.get(key(i)) for i in range(10)] == [i * i for i in range(10)]
    assert store.get(key(10)) is MISSING


def test_clear_removes_everything_and_resets_stats(store: Cache) -> None:
    store.put(KEY, 1)
    store.put(key(1), 2)
    store.get(KEY)
    store.get(key(2))
    store.clear()
    assert KEY not in store and key(1) not in store
    assert store.stats() == CacheStats()
    assert store.get(KEY) is MISSING
    store.put(KEY, 3)  # still usable after a clear
    assert store.get(KEY) == 3


# -- values handed back are safe from mutation (pipefunc #905) ----------------------------


def test_mutating_a_value_after_put_does_not_change_the_entry(store: Cache) -> None:
    value: Any = {"items": [1, 2, 3], "meta": {"n": 3}}
    store.put(KEY, value)
    value["items"].append(4)
    value["meta"]["n"] = 99
    assert store.get(KEY) == {"items": [1, 2, 3], "meta": {"n": 3}}


def test_mutating_a_returned_value_does_not_change_the_entry(store: Cache) -> None:
    store.put(KEY, [[1], [2]])
    first = store.get(KEY)
    first[0].append("mutated")
    first.append("mutated")
    assert store.get(KEY) == [[1], [2]]
    assert store.get(KEY) is not store.get(KEY)


def test_tuples_holding_mutable_values_are_copied_too(store: Cache) -> None:
    inner: list[int] = [1]
    store.put(KEY, (inner, 2))
    inner.append(2)
    got: Any = store.get(KEY)
    got[0].append(3)
    assert store.get(KEY) == ([1], 2)


def test_numpy_arrays_are_copied(store: Cache) -> None:
    np = pytest.importorskip("numpy")
    arr = np.arange(5)
    store.put(KEY, arr)
    arr[0] = 100
    got = store.get(KEY)
    got[1] = 100
    assert store.get(KEY).tolist() == [0, 1, 2, 3, 4]


# -- values pickle cannot handle ------------------------------------------------------------


def test_an_unpicklable_value_raises_cache_write_error_and_stores_nothing(store: Cache) -> None:
    store.put(KEY, "before")
    with pytest.raises(
        CacheWriteError, match=r"type dict.*cannot be pickled.*_thread\.lock"
    ) as info:
        store.put(KEY, {"lock": threading.Lock()})
    assert info.value.key == KEY
    assert info.value.value_type == "dict"
    assert store.get(KEY) == "before"
    assert store.stats().writes == 1


def test_lambdas_and_local_classes_are_stored_with_cloudpickle(store: Cache) -> None:
    class Local:
        def __init__(self, n: int) -> None:
            self.n = n

    store.put(KEY, (lambda x: x + 1, Local(3)))
    fn, obj = store.get(KEY)
    assert fn(1) == 2 and obj.n == 3


def test_keys_must_be_strings_for_disk_and_any_string_works(store: Cache) -> None:
    weird = "not/hex ..\\ key with spaces ü"
    store.put(weird, 1)
    assert store.get(weird) == 1 and weird in store
    assert 123 not in store


# -- picklable, lazy ---------------------------------------------------------------------


def test_a_store_pickles_to_its_configuration_only(store: Cache) -> None:
    store.put(KEY, b"x" * 100_000)
    data = pickle.dumps(store)
    assert len(data) < 1_000  # no entries, no locks, no file handles
    clone = pickle.loads(data)
    assert type(clone) is type(store)
    assert clone.stats() == CacheStats()
    if isinstance(store, DiskCache):
        assert clone.get(KEY) == b"x" * 100_000  # same directory, same entries
        assert clone.signed == store.signed  # type: ignore[attr-defined]
        assert clone.layout == store.layout  # type: ignore[attr-defined]
    else:
        assert isinstance(clone, MemoryCache)
        assert clone.get(KEY) is MISSING and clone.max_size == store.max_size  # type: ignore[attr-defined]
    clone.put(key(1), 1)
    assert clone.get(key(1)) == 1


def test_a_pickled_store_works_in_another_process(
    store: Cache, run_python: Any, tmp_path: Path
) -> None:
    store.put(KEY, {"answer": 42})
    (tmp_path / "store.pkl").write_bytes(pickle.dumps(store))
    proc = run_python(
        f"""
        import pickle
        store = pickle.loads(open({str(tmp_path / "store.pkl")!r}, "rb").read())
        print(repr(store.get({KEY!r}, "miss")))
        store.put("{key(7)}", "from the child")
        """
    )
    assert proc.returncode == 0, proc.stderr
    if isinstance(store, DiskCache):
        assert proc.stdout.strip() == "{'answer': 42}"
        assert store.get(key(7)) == "from the child"
    else:
        assert proc.stdout.strip() == "'miss'"  # a separate, empty store
        assert store.get(key(7)) is MISSING


def test_constructing_and_reading_creates_nothing(store: Cache, tmp_path: Path) -> None:
    assert store.get(KEY) is MISSING
    assert KEY not in store
    store.stats()
    pickle.loads(pickle.dumps(store))
    repr(store)
    assert list(tmp_path.iterdir()) == []
    store.put(KEY, 1)
    if isinstance(store, DiskCache):
        assert (tmp_path / "cache").is_dir()


# -- threads --------------------------------------------------------------------------------


def test_threads_hammering_one_store_see_consistent_values_and_counts(store: Cache) -> None:
    n_threads, rounds = 8, 60
    barrier = threading.Barrier(n_threads)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            barrier.wait()
            for i in range(rounds):
                own = key(1000 * (t + 1) + i % 7)
                store.put(own, {"t": t, "i": i % 7})
                assert store.get(own) in ({"t": t, "i": i % 7}, MISSING)  # LRU may evict
                shared = key(i % 5)
                store.put(shared, ["shared", i % 5])
                got = store.get(shared)
                assert got is MISSING or got == ["shared", i % 5]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors[0]
    stats = store.stats()
    assert stats.writes == n_threads * rounds * 2
    assert stats.hits + stats.misses == n_threads * rounds * 2
    assert stats.errors == 0


# -- async -----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_aget_and_aput(store: Cache) -> None:
    assert await store.aget(KEY) is MISSING
    assert await store.aget(KEY, "dflt") == "dflt"
    await store.aput(KEY, None)
    assert await store.aget(KEY, "dflt") is None
    await store.aput(key(1), [1, 2])
    got = await store.aget(key(1))
    got.append(3)
    assert await store.aget(key(1)) == [1, 2]
    assert store.get(KEY, "dflt") is None  # sync and async views agree
    stats = store.stats()
    assert (stats.hits, stats.misses, stats.writes) == (4, 2, 2)


@pytest.mark.asyncio
async def test_many_concurrent_aget_aput_on_one_loop(store: Cache) -> None:
    async def one(i: int) -> Any:
        await store.aput(key(i), {"i": i})
        return await store.aget(key(i))

    results = await asyncio.gather(*(one(i) for i in range(40)))
    assert results == [{"i": i} for i in range(40)]


def test_stores_say_whether_their_sync_methods_block(store: Cache) -> None:
    # The runtime calls aget/aput on a loop exactly for stores whose I/O can block.
    assert store.blocking_io is isinstance(store, DiskCache)


# -- MemoryCache specifics ----------------------------------------------------------------


def test_memory_lru_evicts_the_least_recently_used() -> None:
    cache = MemoryCache(max_size=2)
    cache.put(key(1), 1)
    cache.put(key(2), 2)
    assert cache.get(key(1)) == 1  # key(1) is now the most recent
    cache.put(key(3), 3)
    assert key(2) not in cache and key(1) in cache and key(3) in cache
    assert len(cache) == 2
    assert cache.stats().evictions == 1
    cache.put(key(1), 10)  # overwriting refreshes without evicting
    assert len(cache) == 2 and cache.stats().evictions == 1
    cache.put(key(4), 4)
    assert key(3) not in cache and cache.get(key(1)) == 10


def test_memory_unbounded_keeps_everything() -> None:
    cache = MemoryCache()
    for i in range(500):
        cache.put(key(i), i)
    assert len(cache) == 500 and cache.stats().evictions == 0


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "3"])
def test_memory_max_size_is_validated(bad: Any) -> None:
    with pytest.raises(ValueError, match="max_size must be a positive int or None"):
        MemoryCache(max_size=bad)


def test_memory_keeps_immutable_values_as_they_are() -> None:
    cache = MemoryCache()
    value = ("a", 1, (2.5, None), frozenset({b"x"}))
    cache.put(KEY, value)
    assert cache.get(KEY) is value  # nothing to protect: no copy


def test_memory_repr_shows_state() -> None:
    cache = MemoryCache(max_size=3)
    cache.put(KEY, 1)
    cache.get(KEY)
    cache.get(key(1))
    assert repr(cache) == "MemoryCache(max_size=3, entries=1, hits=1, misses=1)"
    assert repr(MemoryCache()) == "MemoryCache(entries=0, hits=0, misses=0)"


@pytest.fixture
def no_cwd_change() -> Iterator[None]:
    cwd = os.getcwd()
    yield
    os.chdir(cwd)


def test_disk_relative_paths_are_made_absolute(tmp_path: Path, no_cwd_change: None) -> None:
    os.chdir(tmp_path)
    cache = DiskCache("rel")
    assert cache.path == str(tmp_path / "rel")
    cache.put(KEY, 1)
    os.chdir("/")
    assert pickle.loads(pickle.dumps(cache)).get(KEY) == 1
