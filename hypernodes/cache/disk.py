"""DiskCache: one file per entry, written atomically, checked on read, optionally signed.

Security: entries are pickles, and unpickling runs code. Anyone who can write into a
cache directory can make every process that reads it run their code. Keep the directory
private (it is created with mode 0o700, and a directory writable by others is warned
about), never point a DiskCache at a directory you do not trust, or give every reader and
writer the same ``secret`` so entries are signed (HMAC-SHA256) and unsigned or tampered
entries are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import stat
import tempfile
import threading
import warnings
from time import monotonic
from typing import Any, ClassVar

from ._entry import (
    STALE_TEMP_AGE,
    WOULD_BLOCK,
    CorruptEntry,
    OutdatedEntry,
    decode,
    encode_header,
    read_file,
    read_file_nowait,
    remove_stale_temps,
    write_all,
)
from ._hashing import digest128
from ._serialize import dumps, loads, type_name
from .base import MISSING, Cache, CacheStats, CacheWarning, CacheWriteError, StatsCounter

__all__ = ["STALE_TEMP_AGE", "DiskCache"]

_SAFE_KEY = re.compile(r"[0-9A-Za-z_-]{1,128}")
_ENTRY_NAME = re.compile(r"[0-9A-Za-z_-]{1,128}|=[0-9a-f]{32}")
_SHARD_NAME = re.compile(r"[0-9A-Za-z_-]{1,2}")
_TEMP_PREFIX = ".tmp-"
_WARNED_DIRS: set[str] = set()


class DiskCache(Cache):
    """Results kept as files in a directory, shared by every process that opens it.

    Each entry is one file, ``<path>/<key[:2]>/<key>``: a small header (magic, format
    version, length, checksum or HMAC) and the value pickled with protocol 5 (cloudpickle
    for lambdas and the like). Writes go to a temporary file in the same directory, are
    fsynced, and then renamed over the entry with ``os.replace``, so a reader sees the old
    entry or the new one, never half of one; concurrent writers of one key leave one valid
    entry; a writer killed mid-write leaves at most a stray temporary file, removed by
    the next store writing into its directory once nothing has written it for
    :data:`STALE_TEMP_AGE` seconds (by the filesystem's clock), or by :meth:`clear`.

    An entry that is truncated, corrupt, fails its signature or belongs to another key
    (checksums and signatures both cover the key) is a miss, counted in
    ``stats().errors``, warned about once (:class:`CacheWarning`), and replaced by the next
    ``put``. An entry written in an older format is a plain miss, replaced the same way.

    Nothing touches the disk until first use: the directory is created (mode 0o700) by
    the first ``put``. The store is thread-safe, and pickles to its configuration only
    (path, secret), so it can be shipped to process pools and Dask workers.

    Entries are pickles: loading a directory that someone else can write runs their code.
    Pass ``secret`` to sign entries (HMAC-SHA256 of key, header and payload); then unsigned
    and tampered entries are refused. Every process sharing the directory needs the same
    secret, and the secret travels with the pickled store.

    Args:
        path: The cache directory (created on first write). Relative paths are made
            absolute now, so a store shipped to a worker with another working directory
            still points at the same place.
        secret: Key for signing entries (bytes, or a str encoded as UTF-8), or ``None``.
        inline_reads: Let ``aget`` read small entries (up to 1 MiB) directly on the event
            loop when their data is already in the OS page cache (Linux ``RWF_NOWAIT``);
            anything that would wait for the disk goes to a worker thread. Opening the file
            still happens on the loop, so set ``False`` on network filesystems, where even
            that can stall. A thread hop costs ~50-100 µs; an inline hit ~6 µs.

    Raises:
        TypeError: ``path`` or ``secret`` has the wrong type.
        ValueError: ``secret`` is empty.
    """

    blocking_io: ClassVar[bool] = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        secret: bytes | str | None = None,
        *,
        inline_reads: bool = True,
    ) -> None:
        if not isinstance(path, str | os.PathLike):
            raise TypeError(f"DiskCache path must be a str or os.PathLike, got {path!r}")
        if isinstance(secret, str):
            secret = secret.encode("utf-8")
        if secret is not None and not isinstance(secret, bytes | bytearray):
            raise TypeError(f"secret must be bytes, str or None, got {type(secret).__name__}")
        if secret is not None and not secret:
            raise ValueError("secret must not be empty; pass None for unsigned entries")
        self.path = os.path.abspath(os.path.expanduser(os.fspath(path)))
        self._secret = bytes(secret) if secret is not None else None
        self.inline_reads = bool(inline_reads)
        self._stats = StatsCounter()
        self._lock = threading.Lock()
        self._made: set[str] = set()
        self._swept: dict[str, float] = {}  # shard -> monotonic time of its last sweep
        self._warned: set[str] = set()
        self._checked = False

    @property
    def signed(self) -> bool:
        """Whether entries are signed with a secret."""
        return self._secret is not None

    # -- paths and directories --------------------------------------------------------------

    def _file(self, key: str) -> tuple[str, str]:
        """(shard directory, entry file) for ``key``."""
        if type(key) is not str:
            raise TypeError(f"cache keys are str, got {type(key).__name__}")
        if _SAFE_KEY.fullmatch(key):
            shard = f"{self.path}{os.sep}{key[:2]}"
            return shard, f"{shard}{os.sep}{key}"
        hexed = digest128(key.encode("utf-8", "surrogatepass")).hex()
        shard = f"{self.path}{os.sep}{hexed[:2]}"
        return shard, f"{shard}{os.sep}={hexed}"

    def _ensure_shard(self, shard: str) -> None:
        if shard in self._made:
            return
        try:
            os.mkdir(shard, 0o700)
        except FileExistsError:
            pass
        except FileNotFoundError:
            self._make_root()
            with contextlib.suppress(FileExistsError):
                os.mkdir(shard, 0o700)
        if not self._checked:
            self._check_root()
        with self._lock:
            self._made.add(shard)

    def _make_root(self) -> None:
        parent = os.path.dirname(self.path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        try:
            os.mkdir(self.path, 0o700)
        except FileExistsError:
            return
        os.chmod(self.path, 0o700)  # the umask may have narrowed it; never widened

    def _check_root(self) -> None:
        """Warn (once per process and directory) when others could plant entries."""
        self._checked = True
        if os.name == "nt" or self._secret is not None:
            return
        try:
            st = os.stat(self.path)
        except OSError:
            self._checked = False  # not there yet: check when it is
            return
        foreign = hasattr(os, "getuid") and st.st_uid != os.getuid()
        if not (st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) or foreign):
            return
        with self._lock:
            if self.path in _WARNED_DIRS:
                return
            _WARNED_DIRS.add(self.path)
        who = "owned by another user" if foreign else "writable by other users"
        warnings.warn(
            f"cache directory {self.path} is {who} (mode {stat.S_IMODE(st.st_mode):#o}): "
            "entries are pickles, so whoever can write there can run code in this process; "
            f"run `chmod 700 {self.path}`, or use DiskCache(path, secret=...) to sign entries",
            CacheWarning,
            stacklevel=4,
        )

    # -- reading ----------------------------------------------------------------------------

    def _problem(self, key: str, file: str, problem: str, *, lookup: bool) -> None:
        if lookup:
            self._stats.add_miss(error=True)
        else:
            self._stats.add_error()
        with self._lock:
            if key in self._warned:
                return
            self._warned.add(key)
        warnings.warn(
            f"cache entry {file} {problem}; treating it as a miss (the next write replaces it)",
            CacheWarning,
            stacklevel=4,
        )

    def _load(self, key: str, file: str, data: bytes | bytearray | None, default: Any) -> Any:
        if data is None:
            self._stats.add_miss()
            return default
        try:
            value = loads(decode(key, data, self._secret))
        except OutdatedEntry:  # written by an older HyperNodes: nothing wrong, a miss
            self._stats.add_miss()
            return default
        except CorruptEntry as exc:
            self._problem(key, file, str(exc), lookup=True)
            return default
        except Exception as exc:  # an unpicklable payload: missing class, bad bytes, ...
            self._problem(
                key, file, f"cannot be unpickled ({type(exc).__name__}: {exc})", lookup=True
            )
            return default
        self._stats.add_hit()
        return value

    def get(self, key: str, default: Any = MISSING) -> Any:
        """The value stored under ``key`` (freshly unpickled), or ``default`` on a miss.

        A corrupt, truncated or tampered entry is a miss; it is counted as an error and
        warned about once.

        Raises:
            TypeError: ``key`` is not a str.
        """
        _, file = self._file(key)
        if not self._checked:
            self._check_root()
        try:
            data = read_file(file)
        except OSError as exc:
            self._problem(key, file, f"cannot be read ({exc})", lookup=True)
            return default
        return self._load(key, file, data, default)

    async def aget(self, key: str, default: Any = MISSING) -> Any:
        """Async ``get``: data already in the page cache is read on the loop (no thread
        hop), anything that would wait for the disk is read in a worker thread.

        Raises:
            TypeError: ``key`` is not a str.
        """
        _, file = self._file(key)
        if self.inline_reads and self._checked:
            data = read_file_nowait(file)
            if data is not WOULD_BLOCK:
                return self._load(key, file, data, default)
        return await asyncio.get_running_loop().run_in_executor(None, self.get, key, default)

    def __contains__(self, key: object) -> bool:
        """Whether a valid entry exists for ``key`` (corrupt entries count as absent, and
        are counted and warned about like in ``get``; no unpickling, not a lookup)."""
        if type(key) is not str:
            return False
        _, file = self._file(key)
        try:
            data = read_file(file)
            if data is None:
                return False
            decode(key, data, self._secret)
        except OutdatedEntry:
            return False
        except (OSError, CorruptEntry) as exc:
            self._problem(key, file, str(exc), lookup=False)
            return False
        return True

    # -- writing ----------------------------------------------------------------------------

    def _write(self, key: str, payload: bytes) -> None:
        shard, file = self._file(key)
        header = encode_header(key, payload, self._secret)
        try:
            self._ensure_shard(shard)
            try:
                fd, tmp = tempfile.mkstemp(prefix=_TEMP_PREFIX, dir=shard)
            except FileNotFoundError:  # another store cleared the directory meanwhile
                with self._lock:
                    self._made.discard(shard)
                self._ensure_shard(shard)
                fd, tmp = tempfile.mkstemp(prefix=_TEMP_PREFIX, dir=shard)
        except OSError as exc:
            raise CacheWriteError(key, "bytes", f"cannot create {shard} ({exc})") from exc
        try:
            if self._sweep_due(shard):
                remove_stale_temps(shard, _TEMP_PREFIX, fd, tmp)
            try:
                write_all(fd, header, payload)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, file)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if isinstance(exc, OSError):
                raise CacheWriteError(key, "bytes", f"cannot write {file} ({exc})") from exc
            raise
        self._stats.add_write()
        if key in self._warned:
            with self._lock:
                self._warned.discard(key)

    def _sweep_due(self, shard: str) -> bool:
        """Whether to look for stale temporary files in ``shard``: on this store's first
        write there, then whenever any file found fresh then could have gone stale."""
        now = monotonic()
        with self._lock:
            last = self._swept.get(shard)
            if last is not None and now - last < STALE_TEMP_AGE:
                return False
            self._swept[shard] = now
        return True

    def put(self, key: str, value: Any) -> None:
        """Store ``value`` under ``key`` atomically (temp file, fsync, ``os.replace``).

        Raises:
            CacheWriteError: The value cannot be pickled, or the file cannot be written
                (nothing is left behind in either case).
            TypeError: ``key`` is not a str.
        """
        payload = dumps(key, value)
        try:
            self._write(key, payload)
        except CacheWriteError as exc:
            exc.value_type = type_name(value)
            raise

    async def aput(self, key: str, value: Any) -> None:
        """Async ``put``: the value is pickled on the loop (so nothing can mutate it
        half-way), the file is written and fsynced in a worker thread.

        Raises:
            CacheWriteError: The value cannot be pickled, or the file cannot be written.
            TypeError: ``key`` is not a str.
        """
        payload = dumps(key, value)
        try:
            await asyncio.get_running_loop().run_in_executor(None, self._write, key, payload)
        except CacheWriteError as exc:
            exc.value_type = type_name(value)
            raise

    # -- housekeeping -----------------------------------------------------------------------

    def clear(self) -> None:
        """Remove every entry (and stray temporary files) and reset the statistics.

        Only files this store could have written are removed: other files in the directory
        are left alone.
        """
        try:
            shards = [e for e in os.scandir(self.path) if _SHARD_NAME.fullmatch(e.name)]
        except FileNotFoundError:
            shards = []
        for shard in shards:
            if not shard.is_dir(follow_symlinks=False):
                continue
            for entry in os.scandir(shard.path):
                name = entry.name
                if _ENTRY_NAME.fullmatch(name) or name.startswith(_TEMP_PREFIX):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
            # Left in place when not empty: someone else's files, or a concurrent writer.
            with contextlib.suppress(OSError):
                os.rmdir(shard.path)
        with self._lock:
            self._made.clear()
            self._swept.clear()
            self._warned.clear()
        self._stats.reset()

    def stats(self) -> CacheStats:
        """Hit / miss / write / error counters of this store object (not of the directory)."""
        return self._stats.snapshot()

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "secret": self._secret, "inline_reads": self.inline_reads}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], state["secret"], inline_reads=state["inline_reads"])  # type: ignore[misc]

    def __repr__(self) -> str:
        s = self._stats
        signed = ", signed" if self._secret is not None else ""
        return f"DiskCache({self.path!r}{signed}, hits={s.hits}, misses={s.misses})"
