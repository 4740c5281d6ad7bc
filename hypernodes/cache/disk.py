"""DiskCache: entries in one SQLite database per directory (large ones as files), checked
on read, optionally signed.

Security: entries are pickles, and unpickling runs code. Anyone who can write into a
cache directory can make every process that reads it run their code. Keep the directory
private (it is created with mode 0o700, and a directory writable by others is warned
about), never point a DiskCache at a directory you do not trust, or give every reader and
writer the same ``secret`` so entries are signed (HMAC-SHA256) and unsigned or tampered
entries are refused.
"""

from __future__ import annotations

import asyncio
import os
import time
import warnings
from typing import Any, ClassVar, Literal

from ._database import FLUSH_DELAY, NOT_FOUND, UNKNOWN, Database, WriteFailed, clock
from ._entry import (
    STALE_TEMP_AGE,
    WOULD_BLOCK,
    CorruptEntry,
    OutdatedEntry,
    decode,
    read_file,
    read_file_nowait,
)
from ._files import SHARED_FILESYSTEMS, EntryFiles, filesystem_type
from ._inventory import EntryInfo, list_entries, prune_entries
from ._per_process import database_for
from ._records import NodeRecords
from ._serialize import loads_entry, peek_versions
from ._sqlite import DB_NAME, DatabaseProblem
from ._writing import LARGE_ENTRY, DiskWrites, lost
from .base import (
    MISSING,
    Cache,
    CacheStats,
    CacheWarning,
    CacheWriteError,
    Entry,
    StatsCounter,
    check_count,
    check_seconds,
)

__all__ = ["FLUSH_DELAY", "LARGE_ENTRY", "STALE_TEMP_AGE", "TRIM_INTERVAL", "DiskCache"]

TRIM_INTERVAL = 10.0
"""Entries as files: seconds between the scans that enforce ``ttl`` and ``max_bytes``."""
_LAYOUTS = ("auto", "sqlite", "files")
_DATABASE = "\0database"  # the key under which database problems are warned about


class DiskCache(DiskWrites, Cache):
    """Results kept in a directory, shared by every process that opens it.

    Entries live in one SQLite database, ``<path>/cache.db`` (write-ahead log); values
    pickling to over 256 KiB are files, ``<path>/<key[:2]>/<key>``. Each entry is a small
    header (magic, format version, length, checksum or HMAC, both covering the key) and
    the value pickled with protocol 5 (cloudpickle for lambdas and the like).

    ``put`` stages an entry in memory, where this process sees it at once; a writer
    thread commits what is staged in one transaction :data:`FLUSH_DELAY` seconds after
    the first put, then at most every 0.2 s while puts keep coming (the putting thread
    does when over 16 MiB wait), and so do :meth:`flush`, pickling
    the store and the end of the process; then other processes see it (removing the
    directory drops what was staged for it; a later ``put`` makes it anew). A commit is
    atomic, concurrent writers (threads or processes) leave one valid entry per key, and
    a process killed (``kill -9``) or a machine losing power before or during a commit
    loses those entries: misses, never wrong values. A failed commit (a full disk) is
    raised as :class:`CacheWriteError` by the next ``put`` or ``flush``. Large entries
    are written at once: a temporary file, fsynced, renamed over the entry with
    ``os.replace``; one left by a killed writer is removed by a later write into its
    directory once untouched for :data:`STALE_TEMP_AGE` seconds, or by :meth:`clear`.

    A truncated, corrupt or tampered entry, or one copied under another key, is a miss,
    counted in ``stats().errors``, warned about once (:class:`CacheWarning`) and replaced
    by the next ``put``; a damaged database is a miss for every lookup, warned about once,
    until :meth:`clear` replaces it. Entries of an older format, and directories of
    earlier DiskCaches (a file per entry), are plain misses; :meth:`clear` removes them.

    SQLite's locks do not work across the machines of a network filesystem: on NFS, SMB,
    FUSE and cluster filesystems (``layout="auto"``) every entry is a file, as with
    ``layout="files"``, slower for many small entries. Pass ``layout="files"`` also for a
    directory other machines see through copies merged file by file (a Modal volume).

    Nothing touches the disk until first use (the first ``put`` creates the directory,
    mode 0o700). The store is thread-safe and pickles to its configuration only, so it
    can be shipped to process pools and Dask workers. Entries are pickles: loading a
    directory someone else can write runs their code; with ``secret``, entries are signed
    (HMAC-SHA256) and unsigned or tampered ones refused. Every process sharing the
    directory needs the same secret, which travels with the pickled store.

    Bounds: with ``ttl``, an entry written more than ``ttl`` seconds ago is a miss, and
    the commits of this process delete such rows (and their files). With ``max_bytes``,
    each commit of this process then deletes the least recently used entries while all
    of them take more than ``max_bytes`` (rows and entry files, not the database's own
    overhead): a lookup hit marks its row used, recorded by the next commit of the writer
    thread (never by the lookup itself). Eviction runs inside the commit's transaction,
    so several processes writing at once keep the bound; stores of the same directory in
    one process share the strictest bounds. In the ``"files"`` layout, ``ttl`` is judged
    by the file's modification time and ``max_bytes`` by a scan of the directory after a
    write, at most every :data:`TRIM_INTERVAL` seconds, oldest files first.

    Args:
        path: The cache directory (created on first write). Relative paths are made
            absolute now, so a store shipped to a worker with another working directory
            still points at the same place.
        secret: Key for signing entries (bytes, or a str encoded as UTF-8), or ``None``.
        ttl: Seconds an entry stays valid after it was written; ``None`` for ever.
        max_bytes: The most bytes the entries may take; ``None`` for no bound.
        inline_reads: With entries as files, let ``aget`` read small ones (up to 1 MiB)
            on the event loop when already in the OS page cache (Linux ``RWF_NOWAIT``;
            the file is still opened on the loop: set ``False`` on network filesystems).
            SQLite has no read that refuses to wait for the disk, so the database is read
            in a worker thread; what this process staged, and misses it knows of (a
            ``stat`` of the log at most), are answered on the loop.
        layout: ``"auto"`` (SQLite, except on network and FUSE filesystems, as Linux's
            mount table tells; elsewhere pass ``"files"`` for a network drive),
            ``"sqlite"`` or ``"files"``. Every process sharing a directory must use the
            same layout.

    Raises:
        TypeError: ``path`` or ``secret`` has the wrong type.
        ValueError: ``secret`` is empty, ``layout`` is not one of the three, ``ttl`` is
            not a positive number or ``max_bytes`` not a positive int.
    """

    blocking_io: ClassVar[bool] = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        secret: bytes | str | None = None,
        ttl: float | None = None,
        max_bytes: int | None = None,
        *,
        inline_reads: bool = True,
        layout: Literal["auto", "sqlite", "files"] = "auto",
    ) -> None:
        if not isinstance(path, str | os.PathLike):
            raise TypeError(f"DiskCache path must be a str or os.PathLike, got {path!r}")
        if isinstance(secret, str):
            secret = secret.encode("utf-8")
        if secret is not None and not isinstance(secret, bytes | bytearray):
            raise TypeError(f"secret must be bytes, str or None, got {type(secret).__name__}")
        if secret is not None and not secret:
            raise ValueError("secret must not be empty; pass None for unsigned entries")
        if layout not in _LAYOUTS:
            raise ValueError(f"layout must be 'auto', 'sqlite' or 'files', got {layout!r}")
        self.ttl = check_seconds("ttl", ttl)
        self.max_bytes = check_count("max_bytes", max_bytes, "bytes")
        self._trimmed = 0.0  # monotonic time of the last trim (files layout)
        self.path = os.path.abspath(os.path.expanduser(os.fspath(path)))
        self._secret = bytes(secret) if secret is not None else None
        self.inline_reads = bool(inline_reads)
        self.layout = layout
        self._files = EntryFiles(self.path, signed=self._secret is not None)
        self._records = NodeRecords(self._files)
        self._db_file = os.path.join(self.path, DB_NAME)
        self._sqlite: bool | None = None if layout == "auto" else layout == "sqlite"
        self._db: Database | None = None
        self._stats = StatsCounter()
        self._warned: set[str] = set()

    @property
    def signed(self) -> bool:
        """Whether entries are signed with a secret."""
        return self._secret is not None

    def _database(self) -> Database | None:
        """The directory's database, or ``None`` when entries are files."""
        db = self._db
        if db is not None and not db.inherited:
            return db
        sqlite = self._sqlite
        if sqlite is None:  # decided on first use: reads /proc, not the disk
            kind = filesystem_type(self.path) or ""
            sqlite = self._sqlite = not (kind in SHARED_FILESYSTEMS or kind.startswith("fuse."))
        if sqlite:
            db = self._db = database_for(self._db_file)
            if self.ttl is not None or self.max_bytes is not None:
                db.bound(self.ttl, self.max_bytes)
        return db

    # -- reading ----------------------------------------------------------------------------

    def _problem(self, key: str, file: str | None, problem: str, *, lookup: bool) -> None:
        if lookup:
            self._stats.add_miss(error=True)
        else:
            self._stats.add_error()
        with self._stats.lock:
            if key in self._warned:
                return
            self._warned.add(key)
        if key == _DATABASE:
            message = problem
        else:
            where = file if file is not None else f"{key} in {self._db_file}"
            message = f"cache entry {where} {problem}; treating it as a miss (the next write "
            message += "replaces it)"
        warnings.warn(message, CacheWarning, stacklevel=4)

    def _database_problem(self, exc: DatabaseProblem, *, lookup: bool) -> None:
        fix = f"DiskCache({self.path!r}).clear() replaces it" if exc.damaged else "it may pass"
        self._problem(_DATABASE, None, f"{exc}: lookups are misses ({fix})", lookup=lookup)

    def _load(self, key: str, file: str | None, data: Any, default: Any) -> Any:
        """The entry ``(value, versions)`` in ``data``, or ``default``."""
        if data is None:
            self._stats.add_miss()
            return default
        try:
            entry = loads_entry(decode(key, data, self._secret))
        except OutdatedEntry:  # written by an older HyperNodes: nothing wrong, a miss
            self._stats.add_miss()
            return default
        except CorruptEntry as exc:
            self._problem(key, file, str(exc), lookup=True)
            return default
        except Exception as exc:  # an unpicklable payload: missing class, bad bytes, ...
            why = f"cannot be unpickled ({type(exc).__name__}: {exc})"
            self._problem(key, file, why, lookup=True)
            return default
        self._stats.add_hit()
        return entry

    def _read_file(self, key: str, default: Any, *, judge_age: bool = False) -> Any:
        _, file = self._files.file(key)
        try:
            if judge_age and self.ttl is not None and self._files.older(file, clock() - self.ttl):
                self._stats.add_miss()
                return default
            data = read_file(file)
        except OSError as exc:
            self._problem(key, file, f"cannot be read ({exc})", lookup=True)
            return default
        return self._load(key, file, data, default)

    def get(self, key: str, default: Any = MISSING) -> Any:
        """The value stored under ``key`` (freshly unpickled), or ``default`` on a miss.

        A corrupt, truncated or tampered entry, or a damaged database, is a miss; it is
        counted as an error and warned about once.

        Raises:
            TypeError: ``key`` is not a str.
        """
        entry = self.get_entry(key)
        return default if entry is MISSING else entry[0]

    def get_entry(self, key: str) -> Entry | Any:
        """``(value, output versions)`` stored under ``key``, or :data:`MISSING`; see
        :meth:`get`.

        Raises:
            TypeError: ``key`` is not a str.
        """
        default = MISSING
        if type(key) is not str:
            raise TypeError(f"cache keys are str, got {type(key).__name__}")
        if not self._files.checked:
            self._files.check_root()
        db = self._database()
        if db is None:
            return self._read_file(key, default, judge_age=True)
        try:
            found = db.find(key, self.ttl)
        except DatabaseProblem as exc:
            self._database_problem(exc, lookup=True)
            return default
        return self._entry(key, found)

    def _entry(self, key: str, found: Any) -> Entry | Any:
        """The entry of what the database found for ``key`` (bytes, ``None``: a file, or
        ``NOT_FOUND``), or :data:`MISSING`; counted as a lookup."""
        if found is NOT_FOUND:
            self._stats.add_miss()
            return MISSING
        if found is None:  # a large entry: a file
            return self._read_file(key, MISSING)
        return self._load(key, None, found, MISSING)

    def get_entries(self, keys: list[str]) -> dict[str, Entry]:
        """:meth:`get_entry` of many keys, the database read in a few queries (each key
        counted as a lookup): the entry of each key found; a key missed is left out.

        Raises:
            TypeError: A key is not a str.
        """
        for key in keys:
            if type(key) is not str:
                raise TypeError(f"cache keys are str, got {type(key).__name__}")
        if not self._files.checked:
            self._files.check_root()
        db = self._database()
        if db is None:
            return super().get_entries(keys)
        try:
            rows = db.find_many(keys, self.ttl)
        except DatabaseProblem as exc:
            for _ in keys:  # (each a miss, as its own lookup would be; warned once)
                self._database_problem(exc, lookup=True)
            return {}
        found: dict[str, Entry] = {}
        for key in keys:
            entry = self._entry(key, rows.get(key, NOT_FOUND))
            if entry is not MISSING:
                found[key] = entry
        return found

    async def aget(self, key: str, default: Any = MISSING) -> Any:
        """Async ``get``: what this process has staged, misses it knows of (its keys in
        memory), and (``inline_reads``) entry files already in the page cache are read
        on the loop; the rest in a worker thread.

        Raises:
            TypeError: ``key`` is not a str.
        """
        entry = await self.aget_entry(key)
        return default if entry is MISSING else entry[0]

    async def aget_entry(self, key: str) -> Entry | Any:
        """Async :meth:`get_entry`, read like :meth:`aget`.

        Raises:
            TypeError: ``key`` is not a str.
        """
        default = MISSING
        if type(key) is not str:
            raise TypeError(f"cache keys are str, got {type(key).__name__}")
        db = self._database()
        if db is not None:
            entry = db.find_now(key)
            if entry is NOT_FOUND:
                self._stats.add_miss()
                return default
            if entry is not UNKNOWN and entry is not None:
                return self._load(key, None, entry, default)
        elif self.inline_reads and self._files.checked and self.ttl is None:
            _, file = self._files.file(key)
            data = read_file_nowait(file)
            if data is not WOULD_BLOCK:
                return self._load(key, file, data, default)
        return await asyncio.get_running_loop().run_in_executor(None, self.get_entry, key)

    def __contains__(self, key: object) -> bool:
        """Whether a valid entry exists for ``key`` (corrupt entries count as absent, and
        are counted and warned about like in ``get``; no unpickling, not a lookup)."""
        return type(key) is str and self._verified(key) is not None

    def entry_versions(self, key: str) -> tuple[str, ...] | Any | None:
        """The output versions recorded with ``key``'s entry (:data:`MISSING`: no valid
        entry, ``None``: none recorded); nothing is unpickled, not a lookup."""
        payload = self._verified(key)
        return MISSING if payload is None else peek_versions(payload)[0]

    def _verified(self, key: str) -> memoryview | None:
        """The checked payload of ``key``'s entry, or ``None`` (see ``__contains__``)."""
        db = self._database()
        file = None
        data: Any = None
        try:
            if db is not None:
                data = db.find(key, self.ttl)
                if data is NOT_FOUND:
                    return None
            if data is None:  # entries are files, or this one is large
                _, file = self._files.file(key)
                ttl = self.ttl
                if db is None and ttl is not None and self._files.older(file, clock() - ttl):
                    return None
                data = read_file(file)
                if data is None:
                    return None
            return decode(key, data, self._secret)
        except DatabaseProblem as exc:
            self._database_problem(exc, lookup=False)
            return None
        except OutdatedEntry:
            return None
        except (OSError, CorruptEntry) as exc:
            self._problem(key, file, str(exc), lookup=False)
            return None

    # -- writing: put, put_entry, aput, aput_entry and flush come from DiskWrites -----------

    # -- node records (what ``explain`` compares with) ---------------------------------------

    def put_record(self, node: str, record: dict[str, Any]) -> None:
        """Keep ``record`` as ``node``'s last, in ``<path>/records/`` (JSON: nothing is
        unpickled when it is read; written atomically, last writer wins).

        Raises:
            OSError: It cannot be written.
        """
        self._records.put(node, record)

    def get_record(self, node: str) -> dict[str, Any] | None:
        """``node``'s last record, or ``None`` (also when unreadable)."""
        return self._records.get(node)

    # -- housekeeping -----------------------------------------------------------------------

    def clear(self) -> None:
        """Remove every entry (the database's rows, entry files, stray temporary files,
        the files of earlier DiskCaches) and reset the statistics; a damaged database is
        removed. Other files in the directory are left alone.

        Raises:
            OSError: The database cannot be emptied (another process held it locked for
                longer than 10 s).
        """
        if os.path.exists(self._db_file):
            try:
                database_for(self._db_file).clear()
            except DatabaseProblem as exc:
                raise OSError(f"cannot clear {self._db_file}: {exc}") from exc
        self._files.clear()
        self._records.clear()
        with self._stats.lock:
            self._warned.clear()
        self._stats.reset()

    def entries(self, *, node: str | None = None) -> list[EntryInfo]:
        """The entries of the directory (of ``node`` only, if given), oldest first,
        after committing what this process has staged. Nothing is unpickled.

        Raises:
            OSError: The database cannot be read (damaged, locked too long).
            CacheWriteError: What this process staged could not be committed.
        """
        self.flush()
        try:
            return list_entries(self._db_file, self._files, node)
        except DatabaseProblem as exc:
            raise OSError(str(exc)) from exc

    def prune(self, *, older_than: float | None = None, node: str | None = None) -> int:
        """Remove the entries written more than ``older_than`` seconds ago and/or those
        of ``node`` (both: the old entries of that node); how many were removed.

        Raises:
            ValueError: Neither is given (:meth:`clear` removes everything),
                ``older_than`` is not a positive number, or ``node`` is given for a
                directory whose entries are files (they do not record their node).
            OSError: The database cannot be written (damaged, locked too long).
            CacheWriteError: What this process staged could not be committed.
        """
        seconds = check_seconds("older_than", older_than)
        if seconds is None and node is None:
            raise ValueError("prune needs older_than or node; clear() removes every entry")
        before = None if seconds is None else clock() - seconds
        db = database_for(self._db_file) if os.path.exists(self._db_file) else None
        try:
            return prune_entries(db, self._files, before, node)
        except WriteFailed as exc:
            raise CacheWriteError(exc.key, exc.type_name, lost(exc)) from None
        except DatabaseProblem as exc:
            raise OSError(f"cannot prune {self._db_file}: {exc}") from exc

    def _trim_files(self) -> None:
        """Entries as files: enforce ``ttl`` and ``max_bytes`` by a scan, at most every
        :data:`TRIM_INTERVAL` seconds."""
        if self.ttl is None and self.max_bytes is None:
            return
        now = time.monotonic()
        if now - self._trimmed < TRIM_INTERVAL:
            return
        self._trimmed = now
        self._files.trim(clock(), self.ttl, self.max_bytes)

    def stats(self) -> CacheStats:
        """Hit / miss / write / error counters of this store object (not of the directory)."""
        return self._stats.snapshot()

    def __getstate__(self) -> dict[str, Any]:
        # A worker that reopens the store sees everything written before it was shipped.
        db = self._database()
        if db is not None:
            db.commit()  # a failure is raised by the next put or flush, not by pickle
        return {
            "path": self.path,
            "secret": self._secret,
            "ttl": self.ttl,
            "max_bytes": self.max_bytes,
            "inline_reads": self.inline_reads,
            "layout": self.layout,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            state["path"],
            state["secret"],
            state.get("ttl"),
            state.get("max_bytes"),
            inline_reads=state.get("inline_reads", True),
            layout=state.get("layout", "auto"),
        )

    def __repr__(self) -> str:
        s = self._stats
        signed = ", signed" if self._secret is not None else ""
        if self.ttl is not None:
            signed += f", ttl={self.ttl:g}"
        if self.max_bytes is not None:
            signed += f", max_bytes={self.max_bytes}"
        return f"DiskCache({self.path!r}{signed}, hits={s.hits}, misses={s.misses})"
