"""DiskCache integrity: atomic writes, corrupt entries, concurrent writers, kill -9, HMAC."""

from __future__ import annotations

import asyncio
import hashlib
import os
import pickle
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

from hypernodes.cache import MISSING, CacheWarning, CacheWriteError, DiskCache
from hypernodes.cache import _entry as entry_module
from hypernodes.cache import _hashing as hashing
from hypernodes.cache import disk as disk_module
from hypernodes.cache._entry import encode_header

KEY = "0123456789abcdef0123456789abcdef"
ROOT = str(Path(__file__).resolve().parent.parent)


def entry_file(cache: DiskCache, key: str = KEY) -> Path:
    return Path(cache.path) / key[:2] / key


def temp_files(path: Path) -> list[Path]:
    return sorted(path.rglob(".tmp-*"))


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    return env


# -- atomic writes ----------------------------------------------------------------------


def test_a_write_goes_to_a_temp_file_in_the_same_directory_fsynced_then_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = DiskCache(tmp_path / "c")
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
    cache.put(KEY, {"v": 1})
    final = entry_file(cache)
    assert [e[0] for e in events] == ["fsync", "replace"]
    tmp = events[0][1]
    assert Path(tmp).parent == final.parent and Path(tmp).name.startswith(".tmp-")
    assert events[1][1] == f"{tmp} -> {final}"
    assert cache.get(KEY) == {"v": 1}
    assert temp_files(tmp_path) == []


@pytest.mark.parametrize("fail_in", ["write", "fsync", "replace"])
def test_a_failed_write_leaves_no_entry_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_in: str
) -> None:
    cache = DiskCache(tmp_path / "c")
    cache.put(KEY, "old")

    def boom(*args: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, fail_in, boom)
    with pytest.raises(CacheWriteError, match=r"type str.*No space left") as info:
        cache.put(KEY, "new")
    assert isinstance(info.value.__cause__, OSError)
    monkeypatch.undo()
    assert cache.get(KEY) == "old"  # the previous entry is untouched
    assert temp_files(tmp_path) == []
    assert cache.stats().writes == 1


def test_an_unwritable_location_raises_cache_write_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    cache = DiskCache(tmp_path / "file" / "c")
    with pytest.raises(CacheWriteError, match="cannot create"):
        cache.put(KEY, 1)
    assert cache.get(KEY) is MISSING


# -- corrupt entries ------------------------------------------------------------------------


def corrupt(kind: str, file: Path) -> None:
    data = file.read_bytes()
    if kind == "truncated":
        file.write_bytes(data[: len(data) // 2])
    elif kind == "empty":
        file.write_bytes(b"")
    elif kind == "garbage":
        file.write_bytes(os.urandom(len(data)))
    elif kind == "bitflip":  # same length, one payload byte changed
        file.write_bytes(data[:-3] + bytes([data[-3] ^ 0x40]) + data[-2:])
    elif kind == "trailing":
        file.write_bytes(data + b"x")
    else:  # "header": a plausible length that does not match
        file.write_bytes(data[:40])


@pytest.mark.parametrize("kind", ["truncated", "empty", "garbage", "bitflip", "trailing", "header"])
def test_a_corrupt_entry_is_a_miss_with_one_warning_and_is_rewritten(
    tmp_path: Path, kind: str
) -> None:
    # pipefunc raises on a truncated file while reporting the key as present.
    cache = DiskCache(tmp_path / "c")
    cache.put(KEY, list(range(100)))
    corrupt(kind, entry_file(cache))
    with pytest.warns(CacheWarning, match=rf"cache entry {entry_file(cache)} .*miss") as record:
        assert KEY not in cache
        assert cache.get(KEY) is MISSING
        assert cache.get(KEY, "dflt") == "dflt"
    assert len(record) == 1  # one warning, not one per lookup
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.errors) == (0, 2, 3)
    cache.put(KEY, "rewritten")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cache.get(KEY) == "rewritten" and KEY in cache


def test_a_payload_that_cannot_be_unpickled_is_a_miss_with_a_warning(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "c")
    cache.put(KEY, 1)
    payload = b"cno_such_module_xyz\nThing\n."  # a valid checksum over a broken pickle
    entry_file(cache).write_bytes(encode_header(KEY, payload, None) + payload)
    with pytest.warns(CacheWarning, match="cannot be unpickled.*no_such_module_xyz"):
        assert cache.get(KEY) is MISSING
    assert cache.stats().errors == 1


def test_an_unsigned_entry_copied_to_another_key_is_a_miss_with_a_warning(
    tmp_path: Path,
) -> None:
    cache = DiskCache(tmp_path / "c")
    other = "f" * 32
    cache.put(KEY, "for KEY")
    cache.put(other, "for other")
    entry_file(cache, other).write_bytes(entry_file(cache).read_bytes())
    with pytest.warns(CacheWarning, match=rf"{other} fails its checksum.*another key") as record:
        assert other not in cache
        assert cache.get(other) is MISSING
    assert len(record) == 1
    assert cache.get(KEY) == "for KEY"
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.errors) == (1, 1, 2)


def old_format_entry(payload: bytes) -> bytes:
    """An unsigned entry as format version 1 wrote it: the checksum covered the payload
    only."""
    algorithm = 1 if hashing.ALGORITHM == "xxh3-128" else 2
    head = entry_module.MAGIC + bytes([1, 0, algorithm, 0]) + len(payload).to_bytes(8, "little")
    return head + hashing.digest128(payload) + payload


def test_an_entry_of_the_old_format_is_a_plain_miss_and_is_rewritten(tmp_path: Path) -> None:
    # Reading them would keep the hole open: a copied old entry cannot be told apart.
    cache = DiskCache(tmp_path / "c")
    cache.put(KEY, 1)
    entry_file(cache).write_bytes(old_format_entry(pickle.dumps("old")))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert KEY not in cache
        assert cache.get(KEY) is MISSING
    stats = cache.stats()
    assert (stats.misses, stats.errors) == (1, 0)
    cache.put(KEY, "new")
    assert cache.get(KEY) == "new"


def test_an_entry_of_a_newer_format_is_a_miss_with_a_warning(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "c")
    cache.put(KEY, 1)
    data = bytearray(entry_file(cache).read_bytes())
    data[4] = entry_module.FORMAT_VERSION + 1
    entry_file(cache).write_bytes(bytes(data))
    with pytest.warns(CacheWarning, match="format version .*this reader needs"):
        assert cache.get(KEY) is MISSING


def test_warnings_are_per_entry(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "c")
    keys = [f"{i:032x}" for i in range(3)]
    for k in keys:
        cache.put(k, k)
        entry_file(cache, k).write_bytes(b"junk")
    with pytest.warns(CacheWarning) as record:
        for k in keys * 2:
            assert cache.get(k) is MISSING
    assert len(record) == 3


def test_an_unreadable_entry_is_a_miss_with_a_warning(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "c")
    cache.put(KEY, 1)
    file = entry_file(cache)
    file.unlink()
    file.mkdir()  # reading a directory fails with an OSError
    with pytest.warns(CacheWarning, match="cannot be read"):
        assert cache.get(KEY) is MISSING


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
"""


def check_value(value: Any) -> None:
    me, i, digest, blob = value
    assert hashlib.sha256(blob).hexdigest() == digest
    assert blob[:1] == bytes([(me * 31 + i) % 256])


@pytest.mark.slow
def test_processes_writing_one_key_concurrently_leave_one_valid_entry(tmp_path: Path) -> None:
    path = tmp_path / "c"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), str(me), "40", "200000", KEY],
            env=child_env(),
            stderr=subprocess.PIPE,
        )
        for me in range(4)
    ]
    reader = DiskCache(path)
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
    assert sorted(p.name for p in (path / KEY[:2]).iterdir()) == [KEY]  # no temp files
    check_value(reader.get(KEY))
    assert reader.get(KEY)[1] == 39  # the last write of one of the writers
    assert reader.stats().errors == 0


KILLED_WRITER = """
import os, sys, time
from hypernodes.cache import DiskCache
mode = sys.argv[2]
real_fsync, real_write = os.fsync, os.write
state = {"armed": False}
def hang(*args):
    print("HANGING", flush=True)
    time.sleep(600)
if mode == "fsync":
    def fsync(fd):
        if state["armed"]:
            hang()
        real_fsync(fd)
    os.fsync = fsync
elif mode == "write":
    def write(fd, data):
        if state["armed"]:
            real_write(fd, bytes(data[: len(data) // 2]))  # half of it reaches the file
            hang()
        return real_write(fd, data)
    os.write = write
cache = DiskCache(sys.argv[1])
for i in range(1_000_000):
    key = f"{i % 4:032x}"
    state["armed"] = mode != "loop" and i == 6
    blob = bytes([i % 251]) * 4_000_000
    cache.put(key, (i, blob))
    print("WROTE", i, flush=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["fsync", "write", "loop"])
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
            # "fsync"/"write": killed while provably inside a write; "loop": killed while
            # writing 4 MB entries back to back, wherever it happens to be.
            if line.startswith("HANGING") or (mode == "loop" and line == "WROTE 9\n"):
                break
        else:
            pytest.fail("the writer exited early")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    if mode != "loop":
        assert temp_files(path), "the writer was killed inside a write, leaving its temp file"
    cache = DiskCache(path)
    found = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any torn entry would warn, and fail here
        for i in range(4):
            k = f"{i:032x}"
            value = cache.get(k)
            if value is not MISSING:
                found += 1
                n, blob = value
                assert n % 4 == i and blob == bytes([n % 251]) * 4_000_000
    assert found == 4
    if mode != "loop":  # the interrupted write (i == 6, key 2) never became the entry
        assert cache.get(f"{2:032x}")[0] == 2
    cache.clear()
    assert temp_files(path) == []


# -- stale temporary files --------------------------------------------------------------


def plant_temp(cache: DiskCache, name: str, age: float, key: str = KEY) -> Path:
    shard = Path(cache.path) / key[:2]
    shard.mkdir(parents=True, exist_ok=True)
    file = shard / name
    file.write_bytes(b"left by a writer")
    then = time.time() - age
    os.utime(file, (then, then))
    return file


def test_stale_temp_files_are_removed_when_a_store_first_writes_there(tmp_path: Path) -> None:
    # Writers killed mid-write (SIGKILL) leave their temp files behind.
    cache = DiskCache(tmp_path / "c")
    old = plant_temp(cache, ".tmp-killed", age=2 * disk_module.STALE_TEMP_AGE)
    fresh = plant_temp(cache, ".tmp-live", age=1.0)
    other = plant_temp(cache, "notes.txt", age=2 * disk_module.STALE_TEMP_AGE)
    elsewhere = plant_temp(cache, ".tmp-other-shard", 2 * disk_module.STALE_TEMP_AGE, "ff" * 16)
    assert cache.get(KEY) is MISSING  # reading removes nothing
    assert old.exists()
    cache.put(KEY, 1)
    assert not old.exists()
    assert fresh.exists() and other.exists()  # a live writer's file; not ours at all
    assert elsewhere.exists()  # swept when a write goes to that directory
    DiskCache(tmp_path / "c").put("ff" * 16, 2)
    assert not elsewhere.exists()
    assert cache.get(KEY) == 1


def test_a_long_lived_store_sweeps_again_once_temp_files_can_have_gone_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(disk_module, "monotonic", lambda: clock[0])
    cache = DiskCache(tmp_path / "c")
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
DiskCache(sys.argv[1]).put(sys.argv[2], "from the other process")
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
        DiskCache(path).put(mine, "mine")  # this store's first write there: a sweep
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
    assert DiskCache(path).get(theirs) == "from the other process"
    assert temp_files(path) == []


# -- permissions ------------------------------------------------------------------------


@pytest.mark.skipif(os.name == "nt", reason="POSIX permissions")
def test_directories_are_created_private(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "a" / "b" / "c")
    cache.put(KEY, 1)
    root = Path(cache.path)
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert stat.S_IMODE((root / KEY[:2]).stat().st_mode) == 0o700
    assert stat.S_IMODE(entry_file(cache).stat().st_mode) == 0o600


@pytest.mark.skipif(os.name == "nt", reason="POSIX permissions")
def test_a_directory_others_can_write_is_warned_about_once(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    cache = DiskCache(shared)
    with pytest.warns(CacheWarning, match=r"writable by other users \(mode 0o777\).*chmod 700"):
        cache.put(KEY, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cache.get(KEY) == 1
        DiskCache(shared).get(KEY)  # once per directory and process
        assert stat.S_IMODE(shared.stat().st_mode) == 0o777  # left as it is
    signed_dir = tmp_path / "signed"
    signed_dir.mkdir()
    signed_dir.chmod(0o777)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DiskCache(signed_dir, secret=b"k").put(KEY, 1)  # signed entries: no risk to warn of


# -- HMAC -------------------------------------------------------------------------------


def test_signed_entries_round_trip_and_survive_a_new_store(tmp_path: Path) -> None:
    DiskCache(tmp_path / "c", secret="s3cret").put(KEY, {"a": 1})
    assert DiskCache(tmp_path / "c", secret=b"s3cret").get(KEY) == {"a": 1}


def test_a_tampered_signed_entry_is_a_miss_with_a_warning(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "c", secret=b"k")
    cache.put(KEY, "genuine")
    corrupt("bitflip", entry_file(cache))
    with pytest.warns(CacheWarning, match="signature that does not match"):
        assert cache.get(KEY) is MISSING
    assert cache.stats().errors == 1


def test_an_entry_forged_with_a_correct_checksum_is_refused(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "c", secret=b"k")
    cache.put(KEY, "genuine")
    payload = b"cos\nsystem\n(S'echo pwned'\ntR."  # what an attacker would plant
    entry_file(cache).write_bytes(encode_header(KEY, payload, None) + payload)
    with pytest.warns(CacheWarning, match="not signed"):
        assert cache.get(KEY) is MISSING


def test_an_entry_copied_to_another_key_is_refused(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "c", secret=b"k")
    other = "f" * 32
    cache.put(KEY, "for KEY")
    cache.put(other, "for other")
    entry_file(cache, other).write_bytes(entry_file(cache).read_bytes())
    with pytest.warns(CacheWarning, match="signature"):
        assert cache.get(other) is MISSING


@pytest.mark.parametrize(
    ("writer", "reader", "problem"),
    [
        (b"one", b"two", "signature that does not match"),
        (None, b"k", "not signed"),
        (b"k", None, "signed, but this DiskCache has no secret"),
    ],
)
def test_mismatched_secrets_are_a_miss_with_a_warning(
    tmp_path: Path, writer: bytes | None, reader: bytes | None, problem: str
) -> None:
    DiskCache(tmp_path / "c", secret=writer).put(KEY, 1)
    with pytest.warns(CacheWarning, match=problem):
        assert DiskCache(tmp_path / "c", secret=reader).get(KEY) is MISSING


def test_secret_is_validated() -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        DiskCache("x", secret=b"")
    with pytest.raises(TypeError, match="secret must be bytes, str or None"):
        DiskCache("x", secret=123)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"path must be a str or os\.PathLike"):
        DiskCache(None)  # type: ignore[arg-type]


# -- layout and housekeeping --------------------------------------------------------------


def test_entries_survive_a_new_store_on_the_same_path(tmp_path: Path) -> None:
    DiskCache(tmp_path / "c").put(KEY, [None, 0])
    again = DiskCache(tmp_path / "c")
    assert KEY in again and again.get(KEY) == [None, 0]


def test_keys_that_are_not_file_names_stay_inside_the_directory(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "c")
    for k in ["../escape", "/abs", "a" * 300, "ü", "..", "x/y"]:
        cache.put(k, k)
        assert cache.get(k) == k
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]
    files = [p for p in (tmp_path / "c").rglob("*") if p.is_file()]
    assert len(files) == 6 and all(p.parent.parent == tmp_path / "c" for p in files)


def test_clear_removes_only_what_the_store_wrote(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path)
    cache.put(KEY, 1)
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / KEY[:2] / "mine.txt").write_text("mine too")
    (tmp_path / KEY[:2] / ".tmp-stray").write_bytes(b"left by a killed writer")
    cache.clear()
    assert (tmp_path / "notes.txt").exists() and (tmp_path / KEY[:2] / "mine.txt").exists()
    assert not entry_file(cache).exists() and temp_files(tmp_path) == []
    cache.put(KEY, 2)  # the shard directory is recreated when needed
    assert cache.get(KEY) == 2


def test_clear_by_another_store_does_not_break_writes(tmp_path: Path) -> None:
    one, two = DiskCache(tmp_path / "c"), DiskCache(tmp_path / "c")
    one.put(KEY, 1)
    two.clear()
    one.put(KEY, 2)  # its shard directory vanished; it is recreated
    assert two.get(KEY) == 2


def test_repr_shows_state(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "c", secret=b"k")
    cache.get(KEY)
    assert repr(cache) == f"DiskCache({str(tmp_path / 'c')!r}, signed, hits=0, misses=1)"


# -- the event loop ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_aput_writes_and_fsyncs_in_a_worker_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = DiskCache(tmp_path / "c")
    loop_thread = threading.get_ident()
    threads: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        threads.append(threading.get_ident())
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    await cache.aput(KEY, b"x" * 1000)
    assert threads and loop_thread not in threads


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
@pytest.mark.parametrize("case", ["inline_off", "large", "not_in_page_cache", "first_use"])
async def test_aget_reads_in_a_thread_whenever_the_disk_could_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    cache = DiskCache(tmp_path / "c", inline_reads=case != "inline_off")
    value = b"y" * (2_000_000 if case == "large" else 100)
    DiskCache(tmp_path / "c").put(KEY, value)
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
async def test_aget_serves_a_page_cached_small_entry_on_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = DiskCache(tmp_path / "c")
    cache.put(KEY, {"small": True})
    monkeypatch.setattr(disk_module, "read_file", None)  # the thread path is not taken
    assert await cache.aget(KEY) == {"small": True}
    assert await cache.aget("e" * 32, "miss") == "miss"


def test_the_docs_say_entries_are_pickles() -> None:
    doc = textwrap.dedent(DiskCache.__doc__ or "") + (disk_module.__doc__ or "")
    assert "pickles" in doc and "runs their code" in doc and "secret" in doc
