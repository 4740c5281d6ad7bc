"""DiskCache integrity: batched atomic commits, corrupt entries and databases, concurrent
writers, kill -9, HMAC, permissions, layouts, the event loop.

Entries live in three places, and each guarantee is checked in each: a row of the SQLite
database ("row"), a file of a ``layout="files"`` store ("file"), and the file of a large
entry of a SQLite store ("large").
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import os
import pickle
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hypernodes.cache import MISSING, CacheWarning, CacheWriteError, DiskCache
from hypernodes.cache import _database as database_module
from hypernodes.cache import _entry as entry_module
from hypernodes.cache import _files as files_module
from hypernodes.cache import _hashing as hashing
from hypernodes.cache import _known as known_module
from hypernodes.cache import _per_process as per_process
from hypernodes.cache import _serialize as serialize
from hypernodes.cache import disk as disk_module
from hypernodes.cache._entry import encode_header

KEY = "0123456789abcdef0123456789abcdef"
ROOT = str(Path(__file__).resolve().parent.parent)
SMALL = list(range(100))
LARGE = b"L" * (disk_module.LARGE_ENTRY + 1000)  # pickled, over the limit: a file
WHERE = ["row", "file", "large"]


def key(i: int) -> str:
    return f"{i:032x}"


def db_file(cache: DiskCache) -> Path:
    return Path(cache.path) / "cache.db"


def entry_file(cache: DiskCache, k: str = KEY) -> Path:
    return Path(cache.path) / k[:2] / k


def temp_files(path: Path) -> list[Path]:
    return sorted(path.rglob(".tmp-*"))


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    return env


@contextlib.contextmanager
def raw(cache: DiskCache) -> Iterator[sqlite3.Connection]:
    """A connection of our own to the store's database: what another process sees."""
    conn = sqlite3.connect(db_file(cache), isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


def rows(cache: DiskCache) -> dict[str, Any]:
    if not db_file(cache).exists():
        return {}
    with raw(cache) as conn:
        return dict(conn.execute("SELECT key, entry FROM entries").fetchall())


def fresh(cache: DiskCache) -> DiskCache:
    """A new store on the same directory with connections of its own, as another process
    would open it (the old store object must not be used afterwards)."""
    cache.flush()
    per_process._DATABASES.pop(str(db_file(cache)), None)
    return DiskCache(cache.path, cache._secret, layout=cache.layout)


def checkpoint(cache: DiskCache) -> None:
    """Move everything committed from the log into the database file."""
    with raw(cache) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()


class Entry:
    """Where one entry's bytes are ("row", "file" or "large"), to read and damage them."""

    def __init__(self, tmp_path: Path, where: str, secret: bytes | None = None) -> None:
        layout = "files" if where == "file" else "sqlite"
        self.where = where
        self.cache = DiskCache(tmp_path / "c", secret, layout=layout)
        self.value: Any = LARGE if where == "large" else SMALL

    def put(self, k: str = KEY, value: Any = None) -> None:
        self.cache.put(k, self.value if value is None else value)
        self.cache.flush()

    def name(self, k: str = KEY) -> str:
        """How warnings name the entry."""
        if self.where == "row":
            return f"{k} in {db_file(self.cache)}"
        return str(entry_file(self.cache, k))

    def read(self, k: str = KEY) -> bytes:
        if self.where == "row":
            return rows(self.cache)[k]  # type: ignore[no-any-return]
        return entry_file(self.cache, k).read_bytes()

    def write(self, data: Any, k: str = KEY) -> None:
        if self.where == "row":
            with raw(self.cache) as conn:
                conn.execute("UPDATE entries SET entry = ? WHERE key = ?", (data, k))
        else:
            entry_file(self.cache, k).write_bytes(data)


@pytest.fixture(params=WHERE)
def where(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def no_timer(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Commits happen only when asked for (the writer thread sleeps long)."""
    monkeypatch.setattr(database_module, "FLUSH_DELAY", 30.0)
    yield


@pytest.fixture
def commits(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """(thread id, rows) of every commit."""
    seen: list[tuple[int, int]] = []
    real = database_module.commit_rows

    def commit_rows(conn: sqlite3.Connection, rows: Any, *args: Any, **kw: Any) -> Any:
        if rows.keys:  # (not the commits that only record lookups)
            seen.append((threading.get_ident(), len(rows.keys)))
        return real(conn, rows, *args, **kw)

    monkeypatch.setattr(database_module, "commit_rows", commit_rows)
    return seen


# -- batched, atomic commits ------------------------------------------------------------


def test_the_writer_checkpoints_the_log_every_few_mib_and_when_nothing_is_left(
    tmp_path: Path, no_timer: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database_module, "CHECKPOINT_BYTES", 10_000)
    cache = DiskCache(tmp_path / "c")
    cache.put(key(0), b"x" * 4000)
    db = cache._database()
    assert db is not None
    checkpoints: list[int] = []
    real_checkpoint = db._checkpoint
    monkeypatch.setattr(db, "_checkpoint", lambda: checkpoints.append(1) or real_checkpoint())
    real_commit = database_module.commit_rows
    staged = [3, 2, 1]

    def commit_rows(*args: Any, **kwargs: Any) -> Any:
        if staged:  # another entry is staged while this one commits
            cache.put(key(staged.pop()), b"x" * 4000)
        return real_commit(*args, **kwargs)

    monkeypatch.setattr(database_module, "commit_rows", commit_rows)
    turns = []
    while True:  # the writer thread's turns, here and now
        turns.append(db._turn())
        turns.append(len(checkpoints))
        if not turns[-2]:
            break
    # 4 kB, 8 kB: not yet; 12 kB: a checkpoint; the last commit leaves nothing staged.
    assert turns == [True, 0, True, 0, True, 1, False, 2]
    file_size = os.path.getsize(tmp_path / "c" / "cache.db")
    assert file_size > 16_000  # the entries are in the database file, not only the log
    assert [cache.get(key(i)) for i in range(4)] == [b"x" * 4000] * 4


def test_the_writer_thread_turns_grow_apart_while_entries_keep_coming(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each turn hands the GIL to and from the putting thread: fewer turns in a long run.
    db = database_module.Database(str(tmp_path / "cache.db"))
    more = [True] * 5 + [False]  # what each turn finds staged after its commit
    monkeypatch.setattr(db, "_turn", lambda: more.pop(0))
    slept: list[float] = []
    monkeypatch.setattr(database_module, "_sleep", slept.append)
    db._tick()
    step = database_module.FLUSH_DELAY
    assert slept == pytest.approx([step, 2 * step, 3 * step, 4 * step, 4 * step, 4 * step])
    assert pytest.approx(4 * step) == database_module.BUSY_FLUSH_DELAY
    assert more == []


def test_small_entries_are_rows_of_one_database_committed_many_per_transaction(
    tmp_path: Path, no_timer: None, commits: list[tuple[int, int]]
) -> None:
    # One file per entry cost a create and a rename per entry (issue 14).
    cache = DiskCache(tmp_path / "c")
    for i in range(500):
        cache.put(key(i), {"i": i})
    assert commits == []  # staged: nothing written yet
    assert DiskCache(tmp_path / "c").get(key(7)) == {"i": 7}  # this process sees them
    cache.flush()
    assert [n for _, n in commits] == [500]  # one transaction
    assert len(rows(cache)) == 500
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [
        "cache.db",
        "cache.db-shm",
        "cache.db-wal",
    ]
    assert fresh(cache).get(key(499)) == {"i": 499}


def test_the_writer_thread_commits_what_is_staged_without_being_asked(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "c")
    cache.put(KEY, "soon")
    deadline = time.monotonic() + 30
    while KEY not in rows(cache):  # another process's view
        assert time.monotonic() < deadline, "the entry was never committed"
        time.sleep(0.01)
    assert fresh(cache).get(KEY) == "soon"


def test_the_putting_thread_commits_once_too_much_is_staged(
    tmp_path: Path,
    no_timer: None,
    commits: list[tuple[int, int]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(database_module, "PENDING_LIMIT", 20_000)
    cache = DiskCache(tmp_path / "c")
    for i in range(100):
        cache.put(key(i), b"x" * 1000)
    me = threading.get_ident()
    assert len(commits) >= 4 and all(t == me for t, _ in commits)
    assert len(rows(cache)) >= 90  # committed without a flush


def test_large_entries_are_files_written_to_a_temp_file_fsynced_then_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = DiskCache(tmp_path / "c", layout="sqlite")
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        assert not os.path.exists(dst), "the entry must not exist before the rename"
        assert Path(src).stat().st_size == len(Path(src).read_bytes()) > 0
        events.append(("replace", f"{src} -> {dst}"))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    cache.put(KEY, LARGE)
    final = entry_file(cache)
    assert [e[0] for e in events] == ["fsync", "replace"]
    tmp = events[0][1]
    assert Path(tmp).parent == final.parent and Path(tmp).name.startswith(".tmp-")
    assert events[1][1] == f"{tmp} -> {final}"
    monkeypatch.undo()
    cache.flush()
    assert rows(cache) == {KEY: None}  # the row says: a file
    assert cache.get(KEY) == LARGE and fresh(cache).get(KEY) == LARGE
    assert temp_files(tmp_path) == []


@pytest.mark.parametrize("fail_in", ["write", "fsync", "replace"])
@pytest.mark.parametrize("where", ["file", "large"])
def test_a_failed_file_write_leaves_no_entry_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_in: str, where: str
) -> None:
    entry = Entry(tmp_path, where)
    entry.put(value=b"old" * 100_000)

    def boom(*args: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, fail_in, boom)
    with pytest.raises(CacheWriteError, match=r"type bytes.*No space left") as info:
        entry.cache.put(KEY, b"new" * 100_000)
    assert isinstance(info.value.__cause__, OSError)
    monkeypatch.undo()
    assert entry.cache.get(KEY) == b"old" * 100_000  # the previous entry is untouched
    assert temp_files(tmp_path) == []
    assert entry.cache.stats().writes == 1


def test_a_failed_commit_is_raised_by_flush_and_by_the_next_put(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "c")
    cache.put(KEY, "old")
    cache.flush()
    writer = cache._database()._writer  # type: ignore[union-attr]
    assert writer is not None
    pages = writer.execute("PRAGMA page_count").fetchone()[0]
    writer.execute(f"PRAGMA max_page_count = {pages}")  # a full disk, for this process
    cache.put(KEY, os.urandom(100_000))
    with pytest.raises(CacheWriteError, match=r"type bytes.*disk is full.*1 entry") as info:
        cache.flush()
    assert info.value.key == KEY
    assert cache.get(KEY) == "old"  # the failed batch was dropped: the old entry stands
    cache.put(key(1), os.urandom(100_000))  # committed, and failing, by the writer thread
    deadline = time.monotonic() + 30
    with pytest.raises(CacheWriteError, match=r"disk is full.*could not be committed"):
        while time.monotonic() < deadline:
            cache.put(key(2), "next")
            time.sleep(0.01)
    writer.execute("PRAGMA max_page_count = 1073741823")
    cache.put(key(3), "after")
    cache.flush()
    assert fresh(cache).get(key(3)) == "after"


@pytest.mark.parametrize("layout", ["sqlite", "files"])
def test_an_unwritable_location_raises_cache_write_error(tmp_path: Path, layout: str) -> None:
    (tmp_path / "file").write_text("not a directory")
    cache = DiskCache(tmp_path / "file" / "c", layout=layout)
    with pytest.raises(CacheWriteError, match=r"cannot (create|open)"):
        cache.put(KEY, 1)
    assert cache.get(KEY) is MISSING


class Word(str):
    """A str subclass: lists holding one are pickled the usual way."""


@pytest.mark.parametrize(
    "value",
    [
        [f"w{i % 7}" for i in range(100)],
        ["same"] * 100,
        tuple(range(100)),
        [i / 3 for i in range(100)],
        [*["a"] * 99, Word("b")],
        [*range(99), True],
        [*range(99), 2**70],
        [["nested"]] * 100,  # shared lists stay shared
        ["a\0b"] * 20,  # str lists text cannot hold, pickled: a NUL, a tuple, 15 strs
        ("a",) * 20,
        ["a"] * 15,
    ],
    ids=[
        "strs",
        "one str",
        "int tuple",
        "floats",
        "str subclass",
        "bool",
        "big int",
        "shared",
        "a NUL",
        "str tuple",
        "15 strs",
    ],
)
def test_long_lists_of_atoms_round_trip_exactly(tmp_path: Path, value: Any) -> None:
    # Lists of strs are written as text (see below), other lists and tuples of exact
    # strs, ints or floats are pickled without pickle's memo.
    cache = DiskCache(tmp_path / "c")
    cache.put(KEY, value)
    cache.flush()
    got = DiskCache(tmp_path / "c").get(KEY)
    assert got == value and type(got) is type(value)
    assert [type(x) for x in got] == [type(x) for x in value]
    if isinstance(value[0], list):
        assert all(x is got[0] for x in got)


@pytest.mark.parametrize("layout", ["sqlite", "files"])
@pytest.mark.parametrize(
    "value",
    [
        [f"w{i % 7}" for i in range(16)],
        ["", "é", "x\ud800y", "日本", *[""] * 12],  # empty strs, non-ASCII, a lone surrogate
        [f"line {i}\n\t" for i in range(40_000)],  # over LARGE_ENTRY: a file in any layout
    ],
    ids=["16 words", "odd strs", "large"],
)
def test_a_list_of_strs_is_stored_as_text_and_read_back_exactly(
    tmp_path: Path, layout: str, value: list[str]
) -> None:
    # Such lists are kept as their UTF-8 joined by NULs (splitting is faster than
    # unpickling), in a row or a file alike.
    cache = DiskCache(tmp_path / "c", layout=layout)
    cache.put(KEY, value)
    cache.flush()
    stored = rows(cache).get(KEY) if layout == "sqlite" else None
    if stored is None:
        stored = entry_file(cache, KEY).read_bytes()
    assert b"\x00S" + "\0".join(value).encode("utf-8", "surrogatepass") in stored
    got = DiskCache(tmp_path / "c", layout=layout).get(KEY)
    assert got == value and type(got) is list and all(type(x) is str for x in got)


def _arrays() -> list[Any]:
    import numpy as np

    return [
        np.linspace(0, 1, 64, dtype=np.float32),
        np.arange(6, dtype=">i8").reshape(2, 3),  # big-endian
        np.array(3.5),  # 0-d
        np.zeros((0, 3)),
        np.array([True, False]),
        np.array([1 + 2j, -0.0]),
        np.ones(3, np.float16),
        np.arange(80_000, dtype=np.float64),  # over LARGE_ENTRY: a file
    ]


@pytest.mark.parametrize("layout", ["sqlite", "files"])
@pytest.mark.parametrize("index", range(8))
def test_numpy_arrays_are_stored_as_shape_and_bytes_and_read_back_owning_their_memory(
    tmp_path: Path, layout: str, index: int
) -> None:
    from hypernodes.cache import fingerprint

    value = _arrays()[index]
    cache = DiskCache(tmp_path / "c", layout=layout)
    cache.put(KEY, value)
    cache.flush()
    stored = rows(cache).get(KEY) if layout == "sqlite" else None
    if stored is None:
        stored = entry_file(cache, KEY).read_bytes()
    assert b"\x00A" + bytes([len(value.dtype.str), value.ndim]) in stored
    got = DiskCache(tmp_path / "c", layout=layout).get(KEY)
    assert type(got) is type(value) and got.dtype == value.dtype and got.shape == value.shape
    assert got.tobytes() == value.tobytes() and fingerprint(got) == fingerprint(value)
    assert got.base is None and got.flags.owndata and got.flags.writeable


def test_other_arrays_are_pickled_and_read_back_exactly(tmp_path: Path) -> None:
    import numpy as np

    values = {
        "strided": np.arange(10)[::2],
        "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        "str": np.array(["a", "bc"]),
        "object": np.array([1, None], dtype=object),
        "structured": np.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f8")]),
        "datetime": np.array(["2026-12-05"], dtype="datetime64[D]"),
        "masked": np.ma.masked_array([1, 2], mask=[False, True]),
    }
    cache = DiskCache(tmp_path / "c")
    for name, value in values.items():
        cache.put(name * 4, value)
    cache.flush()
    again = DiskCache(tmp_path / "c")
    for name, value in values.items():
        got = again.get(name * 4)
        assert type(got) is type(value) and got.dtype == value.dtype, name
        assert got.shape == value.shape and got.tobytes() == value.tobytes(), name
    assert list(again.get("masked" * 4).mask) == [False, True]


def test_a_str_list_pickled_by_an_older_version_still_loads(tmp_path: Path) -> None:
    value = [f"w{i}" for i in range(100)]
    payload = serialize.dumps(KEY, value)  # what put wrote before lists became text
    assert payload.startswith(pickle.PROTO)
    cache = DiskCache(tmp_path / "c")
    cache.put(KEY, "placeholder")
    cache.flush()
    with raw(cache) as conn:  # (a sqlite3 connection's own ``with`` does not close it)
        data = encode_header(KEY, payload, None) + payload
        conn.execute("UPDATE entries SET entry = ? WHERE key = ?", (data, KEY))
    assert DiskCache(tmp_path / "c").get(KEY) == value


# -- corrupt entries ------------------------------------------------------------------------


def corrupt(kind: str, data: bytes) -> Any:
    if kind == "truncated":
        return data[: len(data) // 2]
    if kind == "empty":
        return b""
    if kind == "garbage":
        return os.urandom(len(data))
    if kind == "bitflip":  # same length, one payload byte changed
        return data[:-3] + bytes([data[-3] ^ 0x40]) + data[-2:]
    if kind == "trailing":
        return data + b"x"
    if kind == "text":  # a row holding text where the entry's bytes belong
        return "not an entry"
    return data[:40]  # "header": a plausible length that does not match


@pytest.mark.parametrize(
    "kind", ["truncated", "empty", "garbage", "bitflip", "trailing", "header", "text"]
)
def test_a_corrupt_entry_is_a_miss_with_one_warning_and_is_rewritten(
    tmp_path: Path, where: str, kind: str
) -> None:
    # pipefunc raises on a truncated file while reporting the key as present.
    if kind == "text" and where != "row":
        pytest.skip("only a database row can hold text")
    entry = Entry(tmp_path, where)
    entry.put()
    entry.write(corrupt(kind, entry.read()))
    cache = entry.cache
    with pytest.warns(CacheWarning, match=rf"cache entry {entry.name()} .*miss") as record:
        assert KEY not in cache
        assert cache.get(KEY) is MISSING
        assert cache.get(KEY, "dflt") == "dflt"
    assert len(record) == 1  # one warning, not one per lookup
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.errors) == (0, 2, 3)
    entry.put(value="rewritten")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cache.get(KEY) == "rewritten" and KEY in cache


def test_a_payload_that_cannot_be_unpickled_is_a_miss_with_a_warning(
    tmp_path: Path, where: str
) -> None:
    entry = Entry(tmp_path, where)
    entry.put()
    payload = b"cno_such_module_xyz\nThing\n."  # a valid checksum over a broken pickle
    entry.write(encode_header(KEY, payload, None) + payload)
    with pytest.warns(CacheWarning, match="cannot be unpickled.*no_such_module_xyz"):
        assert entry.cache.get(KEY) is MISSING
    assert entry.cache.stats().errors == 1


def test_an_unsigned_entry_copied_to_another_key_is_a_miss_with_a_warning(
    tmp_path: Path, where: str
) -> None:
    entry = Entry(tmp_path, where)
    other = "f" * 32
    entry.put(KEY, [b"for KEY", entry.value])
    entry.put(other, [b"for other", entry.value])
    entry.write(entry.read(KEY), other)
    cache = entry.cache
    with pytest.warns(CacheWarning, match=rf"{other} .*fails its checksum.*another key") as record:
        assert other not in cache
        assert cache.get(other) is MISSING
    assert len(record) == 1
    assert cache.get(KEY)[0] == b"for KEY"
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.errors) == (1, 1, 2)


def old_format_entry(payload: bytes) -> bytes:
    """An unsigned entry as format version 1 wrote it: the checksum covered the payload
    only."""
    algorithm = 1 if hashing.ALGORITHM == "xxh3-128" else 2
    head = entry_module.MAGIC + bytes([1, 0, algorithm, 0]) + len(payload).to_bytes(8, "little")
    return head + hashing.digest128(payload) + payload


def test_an_entry_of_the_old_format_is_a_plain_miss_and_is_rewritten(
    tmp_path: Path, where: str
) -> None:
    # Reading them would keep the hole open: a copied old entry cannot be told apart.
    entry = Entry(tmp_path, where)
    entry.put()
    entry.write(old_format_entry(pickle.dumps("old")))
    cache = entry.cache
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert KEY not in cache
        assert cache.get(KEY) is MISSING
    stats = cache.stats()
    assert (stats.misses, stats.errors) == (1, 0)
    entry.put(value="new")
    assert cache.get(KEY) == "new"


def test_an_entry_of_a_newer_format_is_a_miss_with_a_warning(tmp_path: Path, where: str) -> None:
    entry = Entry(tmp_path, where)
    entry.put()
    data = bytearray(entry.read())
    data[4] = entry_module.FORMAT_VERSION + 1
    entry.write(bytes(data))
    with pytest.warns(CacheWarning, match="format version .*this reader needs"):
        assert entry.cache.get(KEY) is MISSING


def test_warnings_are_per_entry(tmp_path: Path, where: str) -> None:
    entry = Entry(tmp_path, where)
    keys = [key(i) for i in range(3)]
    for k in keys:
        entry.put(k)
        entry.write(b"junk", k)
    with pytest.warns(CacheWarning) as record:
        for k in keys * 2:
            assert entry.cache.get(k) is MISSING
    assert len(record) == 3


def test_an_unreadable_entry_file_is_a_miss_with_a_warning(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "c", layout="files")
    cache.put(KEY, 1)
    file = entry_file(cache)
    file.unlink()
    file.mkdir()  # reading a directory fails with an OSError
    with pytest.warns(CacheWarning, match="cannot be read"):
        assert cache.get(KEY) is MISSING


def test_a_large_entry_whose_file_is_gone_is_a_plain_miss(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "c", layout="sqlite")
    cache.put(KEY, LARGE)
    entry_file(cache).unlink()  # removed by hand, or by clear() in another process
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cache.get(KEY) is MISSING and KEY not in cache


# -- damaged databases ----------------------------------------------------------------------


def filled(tmp_path: Path) -> DiskCache:
    """A store whose database holds 50 entries, all in the database file proper, opened
    afresh (no page of it cached yet)."""
    cache = DiskCache(tmp_path / "c", layout="sqlite")
    for i in range(50):
        cache.put(key(i), [i] * 500)
    cache = fresh(cache)
    checkpoint(cache)
    return cache


@pytest.mark.parametrize("damage", ["pages", "not_a_database"])
def test_a_damaged_database_is_a_miss_with_one_warning_until_clear_replaces_it(
    tmp_path: Path, damage: str
) -> None:
    cache = filled(tmp_path)
    file = db_file(cache)
    data = file.read_bytes()
    if damage == "pages":  # everything but the first page (the schema) overwritten
        file.write_bytes(data[:4096] + os.urandom(len(data) - 4096))
    else:
        file.write_bytes(os.urandom(len(data)))
    with pytest.warns(CacheWarning, match=r"cache database .* is damaged.*clear\(\)") as record:
        assert cache.get(key(1)) is MISSING
        assert key(2) not in cache
        assert cache.get(key(3)) is MISSING
    assert len(record) == 1
    stats = cache.stats()
    assert (stats.misses, stats.errors) == (2, 3)
    with pytest.raises(CacheWriteError, match="damaged"):
        cache.put(KEY, "new")
        cache.flush()
    (tmp_path / "c" / "notes.txt").write_text("mine")
    cache.clear()
    assert (tmp_path / "c" / "notes.txt").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cache.get(key(1)) is MISSING
        cache.put(KEY, "after clear")
        assert cache.get(KEY) == "after clear"
        assert fresh(cache).get(KEY) == "after clear"


def test_a_database_of_another_application_is_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "c").mkdir(mode=0o700)
    with contextlib.closing(sqlite3.connect(tmp_path / "c" / "cache.db")) as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
        conn.execute("INSERT INTO notes VALUES ('keep me')")
        conn.commit()
    opened: list[sqlite3.Connection] = []
    real_connect = database_module.connect

    def connect(path: str) -> sqlite3.Connection:
        opened.append(real_connect(path))
        return opened[-1]

    monkeypatch.setattr(database_module, "connect", connect)
    cache = DiskCache(tmp_path / "c")
    for _ in range(3):
        with pytest.raises(CacheWriteError, match="not a HyperNodes cache database"):
            cache.put(KEY, 1)
    assert len(opened) == 3 and all(map(_is_closed, opened))  # each put closed its own
    with pytest.raises(OSError, match="not a HyperNodes cache database"):
        cache.clear()
    with contextlib.closing(sqlite3.connect(tmp_path / "c" / "cache.db")) as conn:
        assert conn.execute("SELECT text FROM notes").fetchall() == [("keep me",)]


def _is_closed(conn: sqlite3.Connection) -> bool:
    try:
        conn.execute("SELECT 1")
    except sqlite3.ProgrammingError:
        return True
    return False


# -- concurrent writers and killed writers ----------------------------------------------

WRITER = """
import hashlib, os, sys, warnings
warnings.simplefilter("error")
from hypernodes.cache import DiskCache
cache = DiskCache(sys.argv[1])
me, rounds, size = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
for i in range(rounds):
    blob = bytes([(me * 31 + i) % 256]) * size
    cache.put(sys.argv[5], (me, i, hashlib.sha256(blob).hexdigest(), blob))
    cache.put(f"{me:02d}-{i:04d}", (me, i, hashlib.sha256(blob).hexdigest(), blob[:100]))
    if i % 3 == 0:
        cache.flush()  # many commits, interleaved with the other writers'
"""


def check_value(value: Any) -> None:
    me, i, digest, blob = value
    assert hashlib.sha256(blob).hexdigest() == digest or len(blob) == 100
    assert blob[:1] == bytes([(me * 31 + i) % 256])


@pytest.mark.slow
@pytest.mark.parametrize("size", [100_000, 400_000], ids=["rows", "large_files"])
def test_processes_writing_concurrently_leave_one_valid_entry_and_lose_nothing(
    tmp_path: Path, size: int
) -> None:
    path, writers, rounds = tmp_path / "c", 8, 30
    reader = DiskCache(path)
    reader.put("setup", 0)
    for i in range(2 * known_module.BUILD_AFTER):  # misses answered from memory from now on
        assert reader.get(f"absent-{i}") is MISSING
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), str(me), str(rounds), str(size), KEY],
            env=child_env(),
            stderr=subprocess.PIPE,
        )
        for me in range(writers)
    ]
    seen = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a torn or corrupt read would raise here
        while any(p.poll() is None for p in procs):
            value = reader.get(KEY)
            if value is not MISSING:
                check_value(value)
                seen += 1
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err.decode()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_value(reader.get(KEY))
        assert reader.get(KEY)[1] == rounds - 1  # the last write of one of the writers
        for me in range(writers):  # every entry of every writer was committed
            for i in range(rounds):
                value = reader.get(f"{me:02d}-{i:04d}")
                assert value is not MISSING and value[:2] == (me, i)
                check_value(value)
    assert reader.stats().errors == 0
    assert temp_files(path) == []


KILLED_WRITER = """
import os, sqlite3, sys, time
mode = sys.argv[2]
real_connect, real_fsync = sqlite3.connect, os.fsync
state = {"armed": False}
def hang(*args):
    print("HANGING", flush=True)
    time.sleep(600)
def connect(*args, **kwargs):  # every connection the store opens: hang mid-statement
    conn = real_connect(*args, **kwargs)
    conn.set_progress_handler(lambda: hang() if state["armed"] else 0, 20)
    return conn
sqlite3.connect = connect
def fsync(fd):
    if state["armed"]:
        hang()
    real_fsync(fd)
os.fsync = fsync
from hypernodes.cache import DiskCache
from hypernodes.cache import _database
_database.FLUSH_DELAY = 600.0  # commits happen when asked for, below
cache = DiskCache(sys.argv[1])
size = 1_000_000 if mode == "large" else 20_000
for i in range(1_000_000):
    key = f"{i % 4:032x}"
    state["armed"] = mode == "large" and i == 7  # inside the fsync of its file
    cache.put(key, (i, bytes([i % 251]) * size))
    if i % 2:
        state["armed"] = mode == "commit" and i == 7  # inside the commit of 6 and 7
        cache.flush()
    print("WROTE", i, flush=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["commit", "large", "loop"])
def test_a_writer_killed_mid_write_leaves_no_entry_that_reads_back_wrong(
    tmp_path: Path, mode: str
) -> None:
    path = tmp_path / "c"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(path), mode],
        env=child_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            # "commit": killed inside a SQLite transaction; "large": inside the fsync of a
            # large entry's file; "loop": writing and committing back to back, killed
            # wherever it happens to be (staged entries included).
            if line.startswith("HANGING") or (mode == "loop" and line == "WROTE 40\n"):
                break
        else:
            pytest.fail("the writer exited early")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    if mode == "large":
        assert temp_files(path), "the writer was killed inside a write, leaving its temp file"
    size = 1_000_000 if mode == "large" else 20_000
    cache = DiskCache(path)
    found = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any torn entry would warn, and fail here
        for i in range(4):
            value = cache.get(key(i))
            if value is not MISSING:
                found += 1
                n, blob = value
                assert n % 4 == i and blob == bytes([n % 251]) * size
    assert found == 4
    if mode == "commit":  # the interrupted commit (of 6 and 7) left 2 and 3 as they were
        assert cache.get(key(2))[0] == 2 and cache.get(key(3))[0] == 3
    if mode == "large":  # the interrupted write of 7 left 3 as it was
        assert cache.get(key(3))[0] == 3
    cache.clear()
    assert temp_files(path) == []


# -- misses answered from memory ----------------------------------------------------------


def insert_elsewhere(cache: DiskCache, k: str, value: Any) -> None:
    """Commit an entry the way another process would: through a connection of its own."""
    payload = pickle.dumps(value, protocol=5)
    with raw(cache) as conn:
        conn.execute(
            "INSERT OR REPLACE INTO entries (key, entry, written) VALUES (?, ?, 0)",
            (k, encode_header(k, payload, None) + payload),
        )


def selects(cache: DiskCache) -> list[str]:
    """The lookups the store's reading connection runs from now on."""
    seen: list[str] = []
    conn = cache._database()._reader  # type: ignore[union-attr]
    assert conn is not None
    conn.set_trace_callback(lambda sql: seen.append(sql) if "SELECT entry" in sql else None)
    return seen


def missing_often(tmp_path: Path) -> DiskCache:
    cache = DiskCache(tmp_path / "c")
    cache.put("setup", 0)
    cache.flush()
    for i in range(known_module.BUILD_AFTER):
        assert cache.get(f"absent-{i}") is MISSING
    return cache


def eventually_found(cache: DiskCache, k: str) -> Any:
    deadline = time.monotonic() + 30
    while (value := cache.get(k)) is MISSING:
        assert time.monotonic() < deadline, f"{k} was never found"
        time.sleep(0.001)
    return value


def test_a_store_that_misses_often_answers_misses_without_a_query(tmp_path: Path) -> None:
    cache = missing_often(tmp_path)
    seen = selects(cache)
    for i in range(200):
        assert cache.get(key(i)) is MISSING and key(i) not in cache
    assert seen == []
    assert cache.get("setup") == 0  # a hit is still looked up
    assert len(seen) == 1
    assert cache.stats().misses == known_module.BUILD_AFTER + 200


def test_what_this_process_commits_is_found_at_once(tmp_path: Path) -> None:
    cache = missing_often(tmp_path)
    for i in range(20):
        cache.put(key(i), i)
        cache.flush()  # committed: out of the staged entries
        assert cache.get(key(i)) == i  # no wait for a look at the log


def test_entries_other_processes_commit_are_found_soon(tmp_path: Path) -> None:
    cache = missing_often(tmp_path)
    for i in range(5):
        assert cache.get(key(i)) is MISSING
        insert_elsewhere(cache, key(i), f"elsewhere {i}")
        assert eventually_found(cache, key(i)) == f"elsewhere {i}"
    with raw(cache) as conn:  # cleared by another process: row ids keep growing
        conn.execute("DELETE FROM entries")
        conn.execute("VACUUM")
    time.sleep(2 * known_module.RECHECK)
    assert cache.get(key(0)) is MISSING
    insert_elsewhere(cache, KEY, "after the clear")
    assert eventually_found(cache, KEY) == "after the clear"


def test_this_process_never_reads_its_own_commits_back_but_sees_others_between_them(
    tmp_path: Path,
) -> None:
    # Rows committed right after the last row seen count as seen at once (the next look
    # at the log reads only what others committed since); a row another process committed
    # in between is never skipped.
    cache = missing_often(tmp_path)
    known = cache._database()._known  # type: ignore[union-attr]

    def last_row() -> int:
        with raw(cache) as conn:
            return int(conn.execute("SELECT max(id) FROM entries").fetchone()[0])

    for i in range(3):
        cache.put(key(i), i)
        cache.flush()
        assert known._last_id == last_row()  # no look at the log since
    before = last_row()
    insert_elsewhere(cache, "theirs", "committed elsewhere")
    cache.put(key(9), 9)  # committed after theirs, before this process looked
    cache.flush()
    assert known._last_id == before  # theirs not read yet: not skipped
    assert eventually_found(cache, "theirs") == "committed elsewhere"
    assert cache.get(key(9)) == 9
    assert known._last_id == last_row()


def test_a_store_keeps_no_keys_beyond_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(known_module, "LIMIT", 10)
    cache = DiskCache(tmp_path / "c")
    for i in range(20):
        cache.put(key(i), i)
    cache = fresh(cache)
    for i in range(known_module.BUILD_AFTER):
        assert cache.get(f"absent-{i}") is MISSING
    seen = selects(cache)
    assert cache.get("absent-0") is MISSING and seen  # looked up: no keys kept
    assert all(cache.get(key(i)) == i for i in range(20))


# -- stale temporary files (of large entries) ---------------------------------------------


def plant_temp(cache: DiskCache, name: str, age: float, k: str = KEY) -> Path:
    shard = Path(cache.path) / k[:2]
    shard.mkdir(parents=True, exist_ok=True)
    file = shard / name
    file.write_bytes(b"left by a writer")
    then = time.time() - age
    os.utime(file, (then, then))
    return file


@pytest.mark.parametrize("layout", ["sqlite", "files"])
def test_stale_temp_files_are_removed_when_a_store_first_writes_there(
    tmp_path: Path, layout: str
) -> None:
    # Writers killed mid-write (SIGKILL) leave their temp files behind.
    cache = DiskCache(tmp_path / "c", layout=layout)
    old = plant_temp(cache, ".tmp-killed", age=2 * disk_module.STALE_TEMP_AGE)
    fresh_temp = plant_temp(cache, ".tmp-live", age=1.0)
    other = plant_temp(cache, "notes.txt", age=2 * disk_module.STALE_TEMP_AGE)
    elsewhere = plant_temp(cache, ".tmp-other-shard", 2 * disk_module.STALE_TEMP_AGE, "ff" * 16)
    assert cache.get(KEY) is MISSING  # reading removes nothing
    assert old.exists()
    cache.put(KEY, LARGE)
    assert not old.exists()
    assert fresh_temp.exists() and other.exists()  # a live writer's file; not ours at all
    assert elsewhere.exists()  # swept when a write goes to that directory
    DiskCache(tmp_path / "c", layout=layout).put("ff" * 16, LARGE)
    assert not elsewhere.exists()
    assert cache.get(KEY) == LARGE


def test_a_long_lived_store_sweeps_again_once_temp_files_can_have_gone_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(files_module, "monotonic", lambda: clock[0])
    cache = DiskCache(tmp_path / "c", layout="files")
    cache.put(KEY, 1)
    old = plant_temp(cache, ".tmp-killed", age=2 * disk_module.STALE_TEMP_AGE)
    cache.put(KEY, 2)
    assert old.exists()  # swept a moment ago: not scanned on every write
    clock[0] += disk_module.STALE_TEMP_AGE + 1
    cache.put(KEY, 3)
    assert not old.exists()


LIVE_WRITER = """
import os, sys
from hypernodes.cache import DiskCache
real_fsync = os.fsync
def fsync(fd):
    print("WRITING", flush=True)
    sys.stdin.readline()  # the test lets the write finish
    real_fsync(fd)
os.fsync = fsync
DiskCache(sys.argv[1], layout="files").put(sys.argv[2], "from the other process")
print("DONE", flush=True)
"""


@pytest.mark.slow
def test_a_writer_in_another_process_keeps_its_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "c"
    mine, theirs = KEY, KEY[:2] + "f" * 30  # one directory
    proc = subprocess.Popen(
        [sys.executable, "-c", LIVE_WRITER, str(path), theirs],
        env=child_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert proc.stdout.readline() == "WRITING\n"
        (their_temp,) = temp_files(path)
        DiskCache(path, layout="files").put(mine, "mine")  # its first write there: a sweep
        assert their_temp.exists()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == "DONE\n"
    finally:
        proc.stdin.close()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    assert proc.returncode == 0
    assert DiskCache(path, layout="files").get(theirs) == "from the other process"
    assert temp_files(path) == []


# -- permissions ------------------------------------------------------------------------


@pytest.mark.skipif(os.name == "nt", reason="POSIX permissions")
def test_directories_are_created_private_and_files_owner_only(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "a" / "b" / "c", layout="sqlite")
    cache.put(KEY, 1)
    cache.put(key(1), LARGE)
    cache.flush()
    root = Path(cache.path)
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    for name in ("cache.db", "cache.db-wal", "cache.db-shm"):
        assert stat.S_IMODE((root / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE(entry_file(cache, key(1)).parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(entry_file(cache, key(1)).stat().st_mode) == 0o600
    files = DiskCache(tmp_path / "f", layout="files")
    files.put(KEY, 1)
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o700
    assert stat.S_IMODE(entry_file(files).stat().st_mode) == 0o600


@pytest.mark.skipif(os.name == "nt", reason="POSIX permissions")
@pytest.mark.parametrize("layout", ["sqlite", "files"])
def test_a_directory_others_can_write_is_warned_about_once(tmp_path: Path, layout: str) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    cache = DiskCache(shared, layout=layout)
    with pytest.warns(CacheWarning, match=r"writable by other users \(mode 0o777\).*chmod 700"):
        cache.put(KEY, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cache.get(KEY) == 1
        DiskCache(shared, layout=layout).get(KEY)  # once per directory and process
        assert stat.S_IMODE(shared.stat().st_mode) == 0o777  # left as it is
    signed_dir = tmp_path / "signed"
    signed_dir.mkdir()
    signed_dir.chmod(0o777)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DiskCache(signed_dir, secret=b"k", layout=layout).put(KEY, 1)  # signed: no risk


# -- HMAC -------------------------------------------------------------------------------


def test_signed_entries_round_trip_and_survive_a_new_store(tmp_path: Path, where: str) -> None:
    entry = Entry(tmp_path, where, secret=b"s3cret")
    entry.put(value=[{"a": 1}, entry.value])
    again = fresh(entry.cache)
    assert DiskCache(again.path, "s3cret", layout=again.layout).get(KEY) == [{"a": 1}, entry.value]


def test_a_tampered_signed_entry_is_a_miss_with_a_warning(tmp_path: Path, where: str) -> None:
    entry = Entry(tmp_path, where, secret=b"k")
    entry.put()
    entry.write(corrupt("bitflip", entry.read()))
    with pytest.warns(CacheWarning, match="signature that does not match"):
        assert entry.cache.get(KEY) is MISSING
    assert entry.cache.stats().errors == 1


def test_an_entry_forged_with_a_correct_checksum_is_refused(tmp_path: Path, where: str) -> None:
    entry = Entry(tmp_path, where, secret=b"k")
    entry.put()
    payload = b"cos\nsystem\n(S'echo pwned'\ntR."  # what an attacker would plant
    entry.write(encode_header(KEY, payload, None) + payload)
    with pytest.warns(CacheWarning, match="not signed"):
        assert entry.cache.get(KEY) is MISSING


def test_a_row_forged_into_the_database_is_refused(tmp_path: Path) -> None:
    # Whoever can write the directory can write the database: rows prove nothing.
    cache = DiskCache(tmp_path / "c", secret=b"k")
    cache.put(KEY, "genuine")
    cache.flush()
    payload = b"cos\nsystem\n(S'echo pwned'\ntR."
    with raw(cache) as conn:
        conn.execute(
            "INSERT INTO entries (key, entry, written) VALUES (?, ?, 0)",
            ("f" * 32, encode_header("f" * 32, payload, None) + payload),
        )
    with pytest.warns(CacheWarning, match="not signed"):
        assert cache.get("f" * 32) is MISSING


def test_a_signed_entry_copied_to_another_key_is_refused(tmp_path: Path, where: str) -> None:
    entry = Entry(tmp_path, where, secret=b"k")
    other = "f" * 32
    entry.put(KEY)
    entry.put(other)
    entry.write(entry.read(KEY), other)
    with pytest.warns(CacheWarning, match="signature"):
        assert entry.cache.get(other) is MISSING


@pytest.mark.parametrize(
    ("writer", "reader", "problem"),
    [
        (b"one", b"two", "signature that does not match"),
        (None, b"k", "not signed"),
        (b"k", None, "signed, but this DiskCache has no secret"),
    ],
)
@pytest.mark.parametrize("layout", ["sqlite", "files"])
def test_mismatched_secrets_are_a_miss_with_a_warning(
    tmp_path: Path, writer: bytes | None, reader: bytes | None, problem: str, layout: str
) -> None:
    DiskCache(tmp_path / "c", secret=writer, layout=layout).put(KEY, 1)
    with pytest.warns(CacheWarning, match=problem):
        assert DiskCache(tmp_path / "c", secret=reader, layout=layout).get(KEY) is MISSING


def test_arguments_are_validated() -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        DiskCache("x", secret=b"")
    with pytest.raises(TypeError, match="secret must be bytes, str or None"):
        DiskCache("x", secret=123)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"path must be a str or os\.PathLike"):
        DiskCache(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"layout must be 'auto', 'sqlite' or 'files'"):
        DiskCache("x", layout="sql")  # type: ignore[arg-type]


# -- layouts and housekeeping -------------------------------------------------------------


@pytest.mark.parametrize("layout", ["sqlite", "files"])
def test_entries_survive_a_new_store_on_the_same_path(tmp_path: Path, layout: str) -> None:
    cache = DiskCache(tmp_path / "c", layout=layout)
    cache.put(KEY, [None, 0])
    again = fresh(cache)
    assert KEY in again and again.get(KEY) == [None, 0]


WEIRD_KEYS = ["../escape", "/abs", "a" * 300, "ü", "..", "x/y", "\ud800", "nul\0key", ""]


def test_any_string_is_a_key_in_the_database(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "c", layout="sqlite")
    for k in WEIRD_KEYS:
        cache.put(k, k)
    again = fresh(cache)
    for k in WEIRD_KEYS:
        assert again.get(k) == k and k in again
    assert again.get("nul") is MISSING and again.get("\ud801") is MISSING
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


@pytest.mark.parametrize("name", ["a b", "what?", "#1", "100%", "%3f", "ü"])
def test_a_directory_may_have_any_name(tmp_path: Path, name: str) -> None:
    # SQLite is opened by URI (to never create the file on a lookup): names are escaped.
    cache = DiskCache(tmp_path / name / "c", layout="sqlite")
    assert cache.get(KEY) is MISSING
    cache.put(KEY, name)
    assert fresh(cache).get(KEY) == name
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
    assert (tmp_path / name / "c" / "cache.db").exists()


@pytest.mark.parametrize("where", ["file", "large"])
def test_keys_that_are_not_file_names_stay_inside_the_directory(tmp_path: Path, where: str) -> None:
    entry = Entry(tmp_path, where)
    for k in WEIRD_KEYS:
        entry.cache.put(k, [k, entry.value])
        assert entry.cache.get(k) == [k, entry.value]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]
    files = [p for p in (tmp_path / "c").rglob("*") if p.is_file() and "cache.db" not in p.name]
    assert len(files) == len(WEIRD_KEYS)
    assert all(p.parent.parent == tmp_path / "c" for p in files)


def test_clear_removes_only_what_the_store_wrote(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path, layout="sqlite")
    cache.put(KEY, 1)
    cache.put(key(1), LARGE)
    cache.flush()
    cache.put(key(2), "staged, not committed")
    (tmp_path / "notes.txt").write_text("mine")
    shard = entry_file(cache, key(1)).parent
    (shard / "mine.txt").write_text("mine too")
    (shard / ".tmp-stray").write_bytes(b"left by a killed writer")
    cache.clear()
    assert (tmp_path / "notes.txt").exists() and (shard / "mine.txt").exists()
    assert not entry_file(cache, key(1)).exists() and temp_files(tmp_path) == []
    assert rows(cache) == {}
    assert all(cache.get(k) is MISSING for k in (KEY, key(1), key(2)))
    cache.put(KEY, 2)  # the directories are recreated when needed
    cache.put(key(1), LARGE)
    assert fresh(cache).get(KEY) == 2


@pytest.mark.parametrize("layout", ["sqlite", "files"])
def test_clear_by_another_store_does_not_break_writes(tmp_path: Path, layout: str) -> None:
    one, two = DiskCache(tmp_path / "c", layout=layout), DiskCache(tmp_path / "c", layout=layout)
    one.put(KEY, 1)
    one.put(key(1), LARGE)
    two.clear()
    one.put(KEY, 2)
    one.put(key(1), LARGE + b"2")  # its shard directory vanished; it is recreated
    assert two.get(KEY) == 2 and two.get(key(1)) == LARGE + b"2"


def test_a_removed_directory_is_recreated_by_the_next_commit(tmp_path: Path) -> None:
    import shutil

    cache = DiskCache(tmp_path / "c")
    cache.put(KEY, 1)
    cache.flush()
    shutil.rmtree(tmp_path / "c")  # by hand, while the store has the database open
    cache.put(KEY, 2)
    cache.flush()
    assert rows(cache).keys() == {KEY}
    assert fresh(cache).get(KEY) == 2


REMOVING_WRITER = """
import shutil, sys
from hypernodes.cache import DiskCache
from hypernodes.cache import _database
_database.FLUSH_DELAY = 600.0  # only the end of the process would commit
cache = DiskCache(sys.argv[1])
cache.put("k", 1)
cache.flush()
cache.put("staged", 2)
shutil.rmtree(sys.argv[1])
"""


def test_what_is_staged_for_a_removed_directory_is_dropped(tmp_path: Path, run_python: Any) -> None:
    # Removing a cache directory removes it: a commit behind the scenes brings nothing back.
    cache = DiskCache(tmp_path / "c")
    cache.put(KEY, 1)
    cache.flush()
    cache.put(key(1), "staged")
    (tmp_path / "c" / "cache.db").unlink()
    for name in ("cache.db-wal", "cache.db-shm"):
        (tmp_path / "c" / name).unlink(missing_ok=True)
    (tmp_path / "c").rmdir()
    deadline = time.monotonic() + 30
    while cache._database()._pending:  # type: ignore[union-attr]  # the writer's next turn
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.1)
    assert not (tmp_path / "c").exists()
    assert cache.get(key(1)) is MISSING
    proc = run_python(REMOVING_WRITER.replace("sys.argv[1]", repr(str(tmp_path / "d"))))
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "d").exists()  # the exit commit did not bring it back
    cache.put(KEY, 2)  # a put does make it again
    assert fresh(cache).get(KEY) == 2


def old_layout_entry(root: Path, k: str, value: Any) -> Path:
    """An entry as earlier DiskCaches wrote it: a file of its own, no database."""
    file = root / k[:2] / k
    file.parent.mkdir(parents=True, exist_ok=True)
    payload = pickle.dumps(value, protocol=5)
    file.write_bytes(encode_header(k, payload, None) + payload)
    return file


def test_a_directory_of_the_file_per_entry_layout_is_a_miss_and_clear_removes_it(
    tmp_path: Path,
) -> None:
    root = tmp_path / "c"
    old = [old_layout_entry(root, key(i), i) for i in range(3)]
    cache = DiskCache(root, layout="sqlite")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cache.get(key(1)) is MISSING  # computed again once, then a row
    assert DiskCache(root, layout="files").get(key(1)) == 1  # what layout="files" reads
    cache.clear()
    assert not any(f.exists() for f in old)
    assert sorted(p.name for p in root.iterdir()) == []


@pytest.mark.parametrize(
    ("fstype", "sqlite"),
    [("ext4", True), ("tmpfs", True), ("overlay", True), (None, True), ("nfs4", False),
     ("cifs", False), ("fuse.sshfs", False), ("fuse", False), ("virtiofs", False)],
)  # fmt: skip
def test_auto_keeps_files_on_network_and_fuse_filesystems(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fstype: str | None, sqlite: bool
) -> None:
    monkeypatch.setattr(disk_module, "filesystem_type", lambda path: fstype)
    cache = DiskCache(tmp_path / "c")
    cache.put(KEY, 1)
    cache.flush()
    assert db_file(cache).exists() is sqlite
    assert entry_file(cache).exists() is not sqlite
    assert cache.get(KEY) == 1


@pytest.mark.skipif(not Path("/proc/self/mountinfo").exists(), reason="Linux")
def test_filesystem_type_reads_the_mount_table(tmp_path: Path) -> None:
    with open("/proc/self/mountinfo") as fh:
        kinds = {line.split(" - ")[1].split()[0] for line in fh}
    assert files_module.filesystem_type(str(tmp_path)) in kinds
    assert files_module.filesystem_type(str(tmp_path / "not" / "yet")) == (
        files_module.filesystem_type(str(tmp_path))
    )
    assert files_module.filesystem_type("/proc/self") == "proc"


def test_repr_shows_state(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "c", secret=b"k")
    cache.get(KEY)
    assert repr(cache) == f"DiskCache({str(tmp_path / 'c')!r}, signed, hits=0, misses=1)"


# -- when staged entries are committed ----------------------------------------------------


def test_pickling_a_store_commits_what_it_staged(tmp_path: Path, no_timer: None) -> None:
    # A worker that reopens the store must see what was written before it was shipped.
    cache = DiskCache(tmp_path / "c")
    cache.put(KEY, "before shipping")
    assert rows(cache) == {}
    clone = pickle.loads(pickle.dumps(cache))
    assert KEY in rows(cache)
    assert clone.get(KEY) == "before shipping"


EXITING_WRITER = """
import multiprocessing, os, sys
from hypernodes.cache import DiskCache
from hypernodes.cache import _database
_database.FLUSH_DELAY = 600.0  # only the end of the process commits

def child(path):
    DiskCache(path).put("from-the-forked-child", 2)

if __name__ == "__main__":
    DiskCache(sys.argv[1]).put("from-the-parent", 1)
    p = multiprocessing.get_context("fork").Process(target=child, args=(sys.argv[1],))
    p.start()
    p.join()
    assert p.exitcode == 0
"""


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_the_end_of_a_process_commits_what_it_staged(tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(EXITING_WRITER)
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "c")],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    cache = DiskCache(tmp_path / "c")
    assert cache.get("from-the-parent") == 1  # atexit
    assert cache.get("from-the-forked-child") == 2  # os._exit: multiprocessing's finalizers


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_forked_child_opens_the_database_anew(tmp_path: Path, no_timer: None) -> None:
    # (no_timer: the parent's writer thread must not commit key(1) while the child looks)
    cache = DiskCache(tmp_path / "c")
    cache.put(KEY, "parent")
    cache.flush()
    assert cache.get(KEY) == "parent"  # the parent's connections are open
    cache.put(key(1), "staged in the parent")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        ok = False
        try:
            ok = cache.get(KEY) == "parent"
            ok = ok and cache.get(key(1)) is MISSING  # the parent's to commit, not ours
            cache.put(key(2), "child")
            cache.flush()
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert cache.get(key(2)) == "child" and cache.get(KEY) == "parent"
    cache.flush()
    assert rows(cache).keys() == {KEY, key(1), key(2)}


# -- the event loop ---------------------------------------------------------------------


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Callable[[Any, str], list[int]]:
    """``spy(owner, name)``: the threads that call ``owner.name`` from now on."""

    def install(owner: Any, name: str) -> list[int]:
        threads: list[int] = []
        real = getattr(owner, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            threads.append(threading.get_ident())
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, call)
        return threads

    return install


@pytest.mark.asyncio
async def test_aput_stages_on_the_loop_and_commits_in_another_thread(
    tmp_path: Path, spy: Callable[[Any, str], list[int]]
) -> None:
    cache = DiskCache(tmp_path / "c")
    loop_thread = threading.get_ident()
    opened = spy(database_module.Database, "open_for_writing")
    committed = spy(database_module, "commit_rows")
    await cache.aput(KEY, "first")  # opens the database: in a worker thread
    assert opened and loop_thread not in opened
    staged = spy(database_module.Database, "stage")
    await cache.aput(key(1), "second")  # stages right here
    assert staged == [loop_thread]
    assert await cache.aget(key(1)) == "second"
    await asyncio.get_running_loop().run_in_executor(None, cache.flush)
    assert committed and loop_thread not in committed


@pytest.mark.asyncio
async def test_aput_writes_and_fsyncs_large_entries_in_a_worker_thread(
    tmp_path: Path, spy: Callable[[Any, str], list[int]]
) -> None:
    for layout in ("sqlite", "files"):
        cache = DiskCache(tmp_path / layout, layout=layout)
        await cache.aput(KEY, 1)
        threads = spy(os, "fsync")
        await cache.aput(KEY, LARGE)
        assert threads and threading.get_ident() not in threads


@pytest.mark.asyncio
async def test_aput_pickles_on_the_loop_so_later_mutation_cannot_tear_the_entry(
    tmp_path: Path,
) -> None:
    cache = DiskCache(tmp_path / "c")
    value = list(range(1000))
    task = asyncio.ensure_future(cache.aput(KEY, value))
    await asyncio.sleep(0)  # aput has started: the value is already serialized
    value.clear()
    await task
    assert cache.get(KEY) == list(range(1000))


@pytest.mark.asyncio
async def test_aget_reads_the_database_in_a_worker_thread(
    tmp_path: Path, spy: Callable[[Any, str], list[int]]
) -> None:
    cache = DiskCache(tmp_path / "c", layout="sqlite")
    cache.put(KEY, {"small": True})
    cache.put(key(1), LARGE)
    cache.flush()
    finds = spy(database_module.Database, "find")
    reads = spy(disk_module, "read_file")
    assert await cache.aget(KEY) == {"small": True}
    assert await cache.aget(key(1)) == LARGE
    assert await cache.aget(key(2), "miss") == "miss"
    assert len(finds) == 3 and threading.get_ident() not in finds
    assert reads and threading.get_ident() not in reads


@pytest.mark.asyncio
async def test_aget_serves_what_this_process_staged_on_the_loop(
    tmp_path: Path, no_timer: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = DiskCache(tmp_path / "c")
    cache.put(KEY, {"staged": True})

    async def no_thread(*args: Any) -> None:
        raise AssertionError("went to a thread")

    monkeypatch.setattr(asyncio.get_running_loop(), "run_in_executor", no_thread)
    assert await cache.aget(KEY) == {"staged": True}
    monkeypatch.undo()
    cache.flush()


@pytest.mark.asyncio
async def test_aget_answers_misses_it_knows_of_on_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = missing_often(tmp_path)
    loop = asyncio.get_running_loop()

    async def no_thread(*args: Any) -> None:
        raise AssertionError("went to a thread")

    monkeypatch.setattr(loop, "run_in_executor", no_thread)
    for i in range(100):
        assert await cache.aget(key(i), "miss") == "miss"
    monkeypatch.undo()
    assert await cache.aget("setup") == 0  # a hit: read in a thread
    insert_elsewhere(cache, KEY, "elsewhere")
    deadline = time.monotonic() + 30
    while await cache.aget(KEY) is MISSING:  # the log changed: looked up in a thread
        assert time.monotonic() < deadline
        await asyncio.sleep(0.001)
    assert cache.stats().misses >= known_module.BUILD_AFTER + 100


@pytest.mark.asyncio
@pytest.mark.parametrize("case", ["inline_off", "large", "not_in_page_cache", "first_use"])
async def test_aget_of_a_file_reads_in_a_thread_whenever_the_disk_could_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    cache = DiskCache(tmp_path / "c", inline_reads=case != "inline_off", layout="files")
    value = b"y" * (2_000_000 if case == "large" else 100)
    DiskCache(tmp_path / "c", layout="files").put(KEY, value)
    if case != "first_use":
        cache.get("f" * 32)  # the store has looked at its directory once
    if case == "not_in_page_cache":

        def preadv(*args: Any) -> int:
            raise BlockingIOError(11, "Resource temporarily unavailable")

        monkeypatch.setattr(os, "preadv", preadv)
    loop_thread = threading.get_ident()
    readers: list[int] = []
    real_read = disk_module.read_file

    def read(path: str) -> Any:
        readers.append(threading.get_ident())
        return real_read(path)

    monkeypatch.setattr(disk_module, "read_file", read)
    assert await cache.aget(KEY) == value
    assert readers and loop_thread not in readers


@pytest.mark.asyncio
@pytest.mark.skipif(entry_module.NOWAIT is None, reason="needs RWF_NOWAIT (Linux)")
async def test_aget_serves_a_page_cached_small_entry_file_on_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = DiskCache(tmp_path / "c", layout="files")
    cache.put(KEY, {"small": True})
    monkeypatch.setattr(disk_module, "read_file", None)  # the thread path is not taken
    assert await cache.aget(KEY) == {"small": True}
    assert await cache.aget("e" * 32, "miss") == "miss"


def test_the_docs_say_entries_are_pickles_and_what_a_kill_loses() -> None:
    doc = textwrap.dedent(DiskCache.__doc__ or "") + (disk_module.__doc__ or "")
    assert "pickles" in doc and "runs their code" in doc and "secret" in doc
    assert "kill -9" in doc and "never wrong values" in doc


def test_a_collected_store_closes_its_connections(tmp_path: Path) -> None:
    # Python 3.13 warns about SQLite connections left open (an error under our settings).
    cache = DiskCache(tmp_path / "c")
    cache.put(KEY, 1)
    cache.flush()
    assert cache.get(KEY) == 1
    connections = list(cache._database()._connections)  # type: ignore[union-attr]
    assert connections
    del cache
    deadline = time.monotonic() + 30
    while str(tmp_path / "c" / "cache.db") in per_process._DATABASES:
        assert time.monotonic() < deadline, "the database object was never collected"
        gc.collect()
        time.sleep(0.01)
    for conn in connections:
        with pytest.raises(sqlite3.ProgrammingError, match="closed"):
            conn.execute("SELECT 1")


def _peak_growth(steps: list[Callable[[], None]]) -> int:
    """The most objects the garbage collector tracked beyond those before ``steps``, as
    seen after each step (sqlite3 drops dead cursor references in bursts)."""
    gc.collect()
    gc.disable()
    try:
        before = peak = len(gc.get_objects())
        for step in steps:
            step()
            peak = max(peak, len(gc.get_objects()))
        return peak - before
    finally:
        gc.enable()


def test_lookups_and_staged_entries_leave_no_object_per_entry(
    tmp_path: Path, no_timer: None
) -> None:
    # Each tracked object left behind makes the garbage collector run sooner: a cursor
    # per lookup left a weak reference behind (sqlite3 drops dead ones every 200), and a
    # staged entry was a tuple until its commit.
    cache = DiskCache(tmp_path / "c")
    keys = [f"{i:032x}" for i in range(400)]
    for k in keys:
        cache.put(k, 1.5)
    cache.flush()
    assert cache.get(keys[0]) == 1.5  # the reader is connected

    def look(part: list[str]) -> Callable[[], None]:
        def step() -> None:
            for k in part:
                assert cache.get(k) == 1.5

        return step

    def stage(part: list[str]) -> Callable[[], None]:
        def step() -> None:
            for k in part:
                cache.put(k[::-1], 2.5)

        return step

    parts = [keys[i : i + 20] for i in range(0, len(keys), 20)]
    assert _peak_growth([look(part) for part in parts]) < 20
    assert _peak_growth([stage(part) for part in parts]) < 20
    cache.flush()
    assert DiskCache(tmp_path / "c").get(keys[7][::-1]) == 2.5


def test_a_commit_makes_no_object_per_row(
    tmp_path: Path, no_timer: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A tuple per row, alive for the whole commit, made the garbage collector of the
    # thread computing results run once more per commit of a busy writer thread.
    cache = DiskCache(tmp_path / "c")
    for i in range(1000):
        cache.put(key(i), 1.5)
    growth: list[int] = []
    real = database_module.commit_rows

    def commit_rows(conn: sqlite3.Connection, rows: Any, *args: Any, **kw: Any) -> Any:
        growth.append(len(gc.get_objects()) - before)  # the rows, as the commit holds them
        return real(conn, rows, *args, **kw)

    monkeypatch.setattr(database_module, "commit_rows", commit_rows)
    gc.collect()
    gc.disable()
    try:
        before = len(gc.get_objects())
        cache.flush()
    finally:
        gc.enable()
    assert len(growth) == 1 and growth[0] < 50  # (1,000 and more with a tuple per row)
    assert fresh(cache).get(key(999)) == 1.5
