"""Bounded stores: MemoryCache(max_size, ttl) and DiskCache(ttl, max_bytes), also with
several writer processes."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from hypernodes.cache import MISSING, DiskCache, MemoryCache
from hypernodes.cache import _database as database_module
from hypernodes.cache import memory as memory_module


class Clock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def mono(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock(1000.0)
    monkeypatch.setattr(memory_module, "clock", clock)
    return clock


@pytest.fixture
def wall(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock(1_700_000_000.0)
    monkeypatch.setattr(database_module, "clock", clock)
    monkeypatch.setattr("hypernodes.cache.disk.clock", clock)
    return clock


# -- validation ------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -1, float("inf"), float("nan"), True, "60"])
def test_ttl_is_validated(bad: Any, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ttl must be a positive number of seconds or None"):
        MemoryCache(ttl=bad)
    with pytest.raises(ValueError, match="ttl must be a positive number of seconds or None"):
        DiskCache(tmp_path, ttl=bad)


@pytest.mark.parametrize("bad", [0, -5, 1.5, True, "1GB"])
def test_max_bytes_is_validated(bad: Any, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"max_bytes must be a positive int or None \(a number"):
        DiskCache(tmp_path, max_bytes=bad)


def test_bounds_travel_with_the_pickled_store(tmp_path: Path) -> None:
    import pickle

    memory = pickle.loads(pickle.dumps(MemoryCache(max_size=3, ttl=5)))
    assert (memory.max_size, memory.ttl) == (3, 5.0)
    assert "ttl=5" in repr(memory)
    disk = pickle.loads(pickle.dumps(DiskCache(tmp_path, None, 60, 1 << 20)))
    assert (disk.ttl, disk.max_bytes) == (60.0, 1 << 20)
    assert "max_bytes=1048576" in repr(disk)


# -- MemoryCache -----------------------------------------------------------------------


def test_memory_entries_expire_after_ttl(mono: Clock) -> None:
    cache = MemoryCache(ttl=10)
    cache.put("a", 1)
    mono.now += 5
    cache.put("b", [2])
    assert cache.get("a") == 1 and "a" in cache
    mono.now += 5  # a is 10 s old: expired; b is 5 s old
    assert cache.get("a") is MISSING and "a" not in cache
    assert cache.get("b") == [2]
    cache.put("b", [3])  # a new put starts a new life
    mono.now += 9
    assert cache.get("b") == [3]
    assert len(cache) == 1
    mono.now += 1
    assert len(cache) == 0
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.evictions) == (3, 1, 2)


def test_memory_lru_by_size_with_ttl(mono: Clock) -> None:
    cache = MemoryCache(max_size=2, ttl=100)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # a is now the most recently used
    cache.put("c", 3)
    assert "b" not in cache and "a" in cache and "c" in cache
    mono.now += 100
    cache.put("d", 4)  # drops the expired a and c on the way
    assert len(cache) == 1 and cache.get("d") == 4


def test_memory_lru_keeps_max_size_entries() -> None:
    cache = MemoryCache(max_size=3)
    for i in range(10):
        cache.put(str(i), i)
        cache.get("0")  # kept by use
    assert sorted(cache._data) == ["0", "8", "9"]
    assert cache.stats().evictions == 7


# -- DiskCache -------------------------------------------------------------------------


def test_disk_entries_expire_after_ttl(tmp_path: Path, wall: Clock) -> None:
    cache = DiskCache(tmp_path / "c", ttl=60)
    cache.put("old", "x")
    cache.flush()
    wall.now += 30
    cache.put("new", "y")
    cache.flush()
    assert cache.get("old") == "x"
    wall.now += 31  # old: 61 s, new: 31 s
    assert cache.get("old") is MISSING and "old" not in cache
    assert cache.get("new") == "y"
    other = DiskCache(tmp_path / "c")  # no ttl of its own, same process: still there
    assert other.get("old") == "x"
    cache.put("newer", "z")
    cache.flush()  # a commit deletes the expired rows
    assert [e.key for e in other.entries()] == ["new", "newer"]


def test_disk_ttl_covers_large_entries_and_the_files_layout(tmp_path: Path, wall: Clock) -> None:
    large = b"L" * (300 << 10)
    for layout in ("sqlite", "files"):
        cache = DiskCache(tmp_path / layout, ttl=10, layout=layout)
        cache.put("k", large)
        cache.flush()
        if layout == "files":  # judged by the file's modification time
            os.utime(cache._files.file("k")[1], (wall.now, wall.now))
        assert cache.get("k") == large
        wall.now += 11
        assert cache.get("k") is MISSING, layout
        wall.now -= 11


def test_disk_max_bytes_evicts_the_least_recently_used(tmp_path: Path, wall: Clock) -> None:
    cache = DiskCache(tmp_path / "c", max_bytes=10_000)
    value = b"v" * 900  # ~ 1 KB per entry with header and pickle
    for i in range(8):
        cache.put(f"k{i}", value)
        cache.flush()
        wall.now += 1
    assert cache.get("k0") == value  # k0 used: k1 is now the least recently used
    cache.flush()  # records the use
    wall.now += 1
    for i in range(8, 12):
        cache.put(f"k{i}", value)
        cache.flush()
        wall.now += 1
    keys = [e.key for e in cache.entries()]
    total = sum(e.size for e in cache.entries())
    assert total <= 10_000
    assert "k0" in keys and "k1" not in keys and "k11" in keys
    assert len(keys) == 10_000 // cache.entries()[0].size


def test_reads_do_not_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(database_module, "FLUSH_DELAY", 30.0)
    cache = DiskCache(tmp_path / "c", max_bytes=1 << 20)
    cache.put("k", 1)
    cache.flush()
    log = tmp_path / "c" / "cache.db-wal"
    before = log.stat().st_size
    for _ in range(100):
        assert cache.get("k") == 1
    assert log.stat().st_size == before  # the use is recorded by the next commit
    cache.flush()
    with contextlib.closing(sqlite3.connect(tmp_path / "c" / "cache.db")) as conn:
        assert conn.execute("SELECT used FROM entries").fetchone()[0] is not None


def test_an_older_database_gets_the_new_columns(tmp_path: Path) -> None:
    root = tmp_path / "c"
    root.mkdir(mode=0o700)
    conn = sqlite3.connect(root / "cache.db")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(
        "CREATE TABLE entries (id INTEGER PRIMARY KEY AUTOINCREMENT, "
        "key TEXT NOT NULL UNIQUE, entry BLOB, written REAL NOT NULL)"
    )
    conn.execute("PRAGMA application_id = 1213088835")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    cache = DiskCache(root)
    assert cache.entries() == []
    cache.put("k", 1, node="n")
    assert [(e.key, e.node) for e in cache.entries()] == [("k", "n")]


def _writer(path: str, start: int, count: int, max_bytes: int) -> None:
    cache = DiskCache(path, max_bytes=max_bytes)
    for i in range(start, start + count):
        cache.put(f"p{i:05d}", os.urandom(2000), node=f"w{start}")
        if i % 7 == 0:
            cache.get(f"p{start:05d}")
    cache.flush()


def test_max_bytes_holds_with_several_writer_processes(tmp_path: Path) -> None:
    path = str(tmp_path / "c")
    limit = 60_000
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, n * 1000, 120, limit)) for n in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    entries = DiskCache(path).entries()
    total = sum(e.size for e in entries)
    assert 0 < total <= limit
    assert len(entries) >= limit // 2200 - 1  # evicted down to the bound, not far below
    for e in entries:  # every row left is readable
        assert len(DiskCache(path).get(e.key)) == 2000
    with contextlib.closing(sqlite3.connect(Path(path) / "cache.db")) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
