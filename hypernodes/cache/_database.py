"""One DiskCache database as a process sees it: staged writes, group commits, lookups.

There is one :class:`Database` per database file and process, shared by every
``DiskCache`` object on that directory, so a new store object sees what another one has
staged. A put is staged in memory (where lookups of this process find it at once); a
writer thread commits everything staged in one transaction :data:`FLUSH_DELAY` seconds
after the first put, then every :data:`BUSY_FLUSH_DELAY` at most while puts keep coming
(its turns grow apart), so a run of puts costs a commit per 50-200 ms, not one per entry.
It checkpoints the log (copies it into the database file) every :data:`CHECKPOINT_BYTES`
and once nothing is staged. The putting thread commits itself when more than
:data:`PENDING_LIMIT` bytes wait; ``flush()``, pickling a store and the end of the
process commit at once. A process killed before its entries are committed loses them:
misses, never wrong values.

The database runs in WAL mode with ``synchronous=NORMAL``: a commit is atomic and survives
``kill -9``; readers never wait for writers; several processes write one at a time (a
busy timeout); after a power loss the last commits may be missing, never half there.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import weakref
from typing import Any, Final

from ._files import entry_path, make_private_dir
from ._known import KnownKeys
from ._sqlite import (
    SELECT,
    DatabaseProblem,
    Rows,
    commit_rows,
    connect,
    create_schema,
    delete_rows,
    problem,
    row_key,
    select_many,
)

__all__ = [
    "BUSY_FLUSH_DELAY",
    "CHECKPOINT_BYTES",
    "FLUSH_DELAY",
    "NOT_FOUND",
    "PENDING_LIMIT",
    "UNKNOWN",
    "Database",
    "WriteFailed",
]

FLUSH_DELAY = 0.05
"""Seconds the first of a group of staged entries waits for others to share its commit."""
PENDING_LIMIT = 16 << 20
"""Staged bytes beyond which the putting thread commits at once."""
BUSY_FLUSH_DELAY = 0.2
"""Seconds between the writer thread's commits at most, while entries keep coming."""
CHECKPOINT_BYTES = 4 << 20
"""Bytes committed to the log after which the writer thread checkpoints it (else it does
once nothing is staged): a checkpoint per commit cost a third of a busy writer's time."""
NOT_FOUND: Final[Any] = object()
UNKNOWN: Final[Any] = object()

_ABSENT: Final[Any] = object()
_KEYS_PER_QUERY = 256
"""Keys per query of a batched lookup (SQLite allows 32,766 parameters since 3.32)."""


def _being_created(exc: sqlite3.Error) -> bool:
    """Whether a lookup failed because another process is creating the table."""
    return isinstance(exc, sqlite3.OperationalError) and str(exc).startswith("no such table")


class _Batch:
    """Entries staged for one commit: per key its bytes (``None``: the entry is a file),
    its node's name and, for a file, its size. Flat dicts, no object per entry: a tuple
    per entry, alive until its commit, made the cold documents workload (8,000 puts)
    collect garbage about twice as often as without a cache."""

    __slots__ = ("entries", "file_sizes", "first_type", "nbytes", "nodes")

    def __init__(self) -> None:
        self.entries: dict[str, bytes | None] = {}
        self.nodes: dict[str, str | None] = {}
        self.file_sizes: dict[str, int] = {}
        self.first_type = ""  # the value type of the first entry (for WriteFailed)
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self.entries)

    def add(
        self, key: str, entry: bytes | None, type_name: str, node: str | None, size: int
    ) -> None:
        if not self.entries:
            self.first_type = type_name
        self.entries[key] = entry
        self.nodes[key] = node
        if entry is None:
            self.file_sizes[key] = size
        else:
            self.nbytes += len(entry)

    def rows(self) -> Rows:
        """The entries as rows to write (row keys, entries, nodes, sizes)."""
        entries, nodes, sizes = self.entries, self.nodes, self.file_sizes
        return Rows(
            [row_key(k) for k in entries],
            list(entries.values()),
            [nodes[k] for k in entries],
            [sizes[k] if e is None else len(e) for k, e in entries.items()],
        )


_sleep = time.sleep  # the writer thread's wait between turns (tests replace it)


def clock() -> float:
    """The Unix time entries are stamped with (written, used) and judged by (``ttl``)."""
    return time.time()


class WriteFailed(Exception):
    """Staged entries could not be committed; they are dropped (misses later).

    Attributes:
        count: How many entries were lost.
        key: The first lost entry's key.
        type_name: The first lost entry's value type.
        reason: What went wrong, in words.
    """

    def __init__(self, count: int, key: str, type_name: str, reason: str) -> None:
        super().__init__(count, key, type_name, reason)
        self.count, self.key, self.type_name, self.reason = count, key, type_name, reason


class Database:
    """The entries of one cache database as this process sees them: committed rows plus
    what is staged here. Thread-safe: lookups go through one connection, commits through
    another, each used by one thread at a time."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.inherited = False  # set in a forked child: this object is the parent's
        self._lock = threading.Lock()  # what is staged, the failure, the timer flag
        self._read_lock = threading.Lock()  # the reading connection
        self._write_lock = threading.Lock()  # the writing connection
        self._pending = _Batch()
        self._flushing = _Batch()  # taken from _pending, being committed
        self._touched: dict[str, None] = {}  # row keys looked up since the last commit
        self.ttl: float | None = None  # the strictest bounds of the stores using it
        self.max_bytes: int | None = None
        self._timer = False
        self._failure: WriteFailed | None = None
        self._reader: sqlite3.Connection | None = None
        # Lookups go through one cursor: sqlite3 keeps a weak reference to every cursor
        # a connection makes (dropping dead ones every 200), so a cursor per lookup left
        # a trail of objects that made the garbage collector run about twice as often.
        self._reads: sqlite3.Cursor | None = None
        self._writer: sqlite3.Connection | None = None
        self._inode = 0  # of the file the writer has open
        self._epoch = 0  # bumped when the file is replaced: the reader reconnects
        self._reader_epoch = 0
        self._known = KnownKeys(path)  # under _read_lock
        self._unchecked = 0  # bytes committed since the last checkpoint (>0: dirty)
        self._connections: list[sqlite3.Connection] = []  # closed with this object
        weakref.finalize(self, _close_all, self._connections).atexit = False

    # -- reading ------------------------------------------------------------------------

    def _staged(self, key: str) -> Any:
        """The entry staged for ``key`` (``None``: a file), or ``_ABSENT``."""
        entry = self._pending.entries.get(key, _ABSENT)
        if entry is _ABSENT:
            entry = self._flushing.entries.get(key, _ABSENT)
        return entry

    def find_now(self, key: str) -> Any:
        """What is known of ``key`` without reading the database: the staged entry,
        ``NOT_FOUND`` when this process knows the key is absent, else ``UNKNOWN``.

        No I/O but a ``stat`` of the log: for the event loop.
        """
        entry = self._staged(key)
        if entry is not _ABSENT:
            return entry
        if not self._read_lock.acquire(blocking=False):  # a thread is reading: no waiting
            return UNKNOWN
        try:
            if self._reader is None or self._reader_epoch != self._epoch:
                return UNKNOWN
            return NOT_FOUND if self._known.surely_absent(row_key(key)) else UNKNOWN
        finally:
            self._read_lock.release()

    def bound(self, ttl: float | None, max_bytes: int | None) -> None:
        """Apply a store's bounds (with several stores, the strictest of each): rows
        older than ``ttl`` seconds are deleted, and the least recently used ones while
        the entries hold more than ``max_bytes``, by the commits of this process."""
        with self._lock:
            if ttl is not None and (self.ttl is None or ttl < self.ttl):
                self.ttl = ttl
            if max_bytes is not None and (self.max_bytes is None or max_bytes < self.max_bytes):
                self.max_bytes = max_bytes

    def find(self, key: str, ttl: float | None = None) -> Any:
        """The entry for ``key``: its bytes, ``None`` when it is a file, or ``NOT_FOUND``
        (also when it was written more than ``ttl`` seconds ago).

        With ``max_bytes`` bounding the database, a hit is remembered, and its row marked
        used by the next commit (in the writer thread: a lookup never writes).

        Raises:
            DatabaseProblem: The database cannot be read (damaged, locked too long, ...).
        """
        entry = self._staged(key)
        if entry is not _ABSENT:
            return entry
        name = row_key(key)
        with self._read_lock:
            try:
                conn = self._open_reader()
                if conn is None or self._known.absent(conn, name):
                    return NOT_FOUND
                assert self._reads is not None
                row = self._reads.execute(SELECT, (name,)).fetchone()
            except sqlite3.Error as exc:
                if _being_created(exc):
                    return NOT_FOUND
                raise problem(self.path, exc) from exc
            if row is None:
                self._known.missed(conn)
                return NOT_FOUND
        if ttl is not None and row[1] < clock() - ttl:
            return NOT_FOUND
        if self.max_bytes is not None:
            self._touch(name)
        return row[0]

    def find_many(self, keys: list[str], ttl: float | None = None) -> dict[str, Any]:
        """:meth:`find` for many keys in a few queries: the entry of each key found
        (bytes, or ``None`` when it is a file); a key not found is left out.

        Raises:
            DatabaseProblem: The database cannot be read (damaged, locked too long, ...).
        """
        found: dict[str, Any] = {}
        asked: dict[str, str] = {}  # row key -> key
        for key in keys:
            entry = self._staged(key)
            if entry is not _ABSENT:
                found[key] = entry
            else:
                asked[row_key(key)] = key
        if not asked:
            return found
        rows: list[tuple[str, Any, float]] = []
        with self._read_lock:
            try:
                conn = self._open_reader()
                if conn is None:
                    return found
                known = self._known
                names = [name for name in asked if not known.absent(conn, name)]
                assert self._reads is not None
                for start in range(0, len(names), _KEYS_PER_QUERY):
                    part = names[start : start + _KEYS_PER_QUERY]
                    rows += self._reads.execute(select_many(len(part)), part).fetchall()
            except sqlite3.Error as exc:
                if _being_created(exc):
                    return found
                raise problem(self.path, exc) from exc
            for _ in range(len(names) - len(rows)):
                known.missed(conn)
        oldest = None if ttl is None else clock() - ttl
        for name, entry, written in rows:
            if oldest is None or written >= oldest:
                found[asked[name]] = entry
                if self.max_bytes is not None:
                    self._touch(name)
        return found

    def _open_reader(self) -> sqlite3.Connection | None:
        """The reading connection (under ``_read_lock``), (re)made when the file was
        replaced; ``None`` when the file does not exist (nothing written yet)."""
        conn = self._reader
        if conn is None or self._reader_epoch != self._epoch:
            if not os.path.exists(self.path):
                return None  # nothing written yet, and nothing created
            conn = self._reader = self._connect()
            self._reads = conn.cursor()
            self._reader_epoch = self._epoch
            self._known.reset()
        return conn

    def _touch(self, name: str) -> None:
        with self._lock:
            self._touched[name] = None
            start, self._timer = not self._timer, True
        if start:
            self._start_timer()

    def _start_timer(self) -> bool:
        """Start the writer thread; ``False`` when the interpreter is shutting down."""
        try:
            threading.Thread(target=self._tick, name="hypernodes-cache", daemon=True).start()
        except RuntimeError:
            with self._lock:
                self._timer = False
            return False
        return True

    def _connect(self) -> sqlite3.Connection:
        conn = connect(self.path)
        with self._lock:
            self._connections.append(conn)
        return conn

    # -- writing ------------------------------------------------------------------------

    @property
    def writable(self) -> bool:
        """Whether this process has made sure the file and its table exist."""
        return self._writer is not None

    def open_for_writing(self) -> None:
        """Create the database (mode 0o600) and its table, unless this process has.

        Raises:
            DatabaseProblem: It cannot be created or opened, or is not a cache database.
            OSError: The directory or the file cannot be created.
        """
        if self._writer is None:
            with self._write_lock:
                self._prepare()

    def _prepare(self, *, recreate: bool = True) -> sqlite3.Connection | None:
        """The writing connection, to a file that exists with its table (under
        ``_write_lock``); (re)made if the file was removed or replaced. ``None`` when the
        directory is gone and ``recreate`` is off."""
        conn = self._writer
        if conn is not None and self._same_file():
            return conn
        if conn is not None:
            self._forget_writer()
        folder = os.path.dirname(self.path)
        if not recreate and not os.path.isdir(folder):
            return None
        make_private_dir(folder)
        # Made here first, so that the -wal and -shm files SQLite adds copy its mode.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            inode = os.fstat(fd).st_ino
        finally:
            os.close(fd)
        try:
            conn = self._connect()
        except sqlite3.Error as exc:
            raise problem(self.path, exc) from exc
        try:
            create_schema(conn, self.path)
        except BaseException as exc:
            with self._lock:
                self._connections.remove(conn)
            conn.close()
            if isinstance(exc, sqlite3.Error):
                raise problem(self.path, exc) from exc
            raise
        self._writer, self._inode = conn, inode
        return conn

    def _same_file(self) -> bool:
        try:
            return os.stat(self.path).st_ino == self._inode
        except OSError:
            return False

    def _forget_writer(self) -> None:
        """Drop the writing connection to a file that was removed or replaced, and make
        the reader reconnect."""
        if self._writer is not None:
            with contextlib.suppress(sqlite3.Error):
                self._writer.close()
        self._writer = None
        self._epoch += 1

    def stage(
        self, key: str, entry: bytes | None, type_name: str, node: str | None, size: int
    ) -> bool:
        """Stage an entry (``None``: it was written as a file, of ``size`` bytes) for
        the next commit.

        Returns whether so much is staged that the caller should ``flush()`` now.

        Raises:
            WriteFailed: Entries staged earlier could not be committed; this one is not
                staged either.
        """
        with self._lock:
            failure = self._failure
            if failure is not None:
                self._failure = None
                raise failure
            self._pending.add(key, entry, type_name, node, size)
            over = self._pending.nbytes > PENDING_LIMIT
            start, self._timer = not self._timer, True
        if start and not self._start_timer():  # shutting down: commit right here
            return True
        return over

    def _tick(self) -> None:
        """The writer thread: a turn FLUSH_DELAY after the first entry was staged, then
        further apart (up to BUSY_FLUSH_DELAY) while entries keep coming, until nothing
        is staged. Every turn hands the GIL back and forth with the putting thread a few
        times, which costs milliseconds each on a loaded machine: fewer turns, less of it.
        """
        delay = FLUSH_DELAY
        try:
            while True:
                _sleep(delay)
                if not self._turn():
                    return
                delay = min(delay + FLUSH_DELAY, BUSY_FLUSH_DELAY)
        except BaseException:
            with self._lock:
                self._timer = False
            raise

    def _turn(self) -> bool:
        """One turn of the writer thread: commit what is staged, then checkpoint the log
        if CHECKPOINT_BYTES were committed since the last checkpoint, or anything was and
        nothing is staged now. Whether the thread goes on (``False``: it ends)."""
        self.commit()
        with self._lock:
            idle = not self._pending and not self._touched
        if self._unchecked >= (1 if idle else CHECKPOINT_BYTES):
            self._checkpoint()
        with self._lock:
            if self._pending or self._touched:
                return True
            self._timer = False
            return False

    def _checkpoint(self) -> None:
        """Copy committed pages from the log into the database file, without waiting
        for readers (best effort: a later checkpoint, or SQLite at close, catches up)."""
        with self._write_lock, contextlib.suppress(sqlite3.Error):
            self._unchecked = 0
            if self._writer is not None:
                self._writer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def commit(self, *, recreate: bool = False) -> None:
        """Commit every staged entry, in this thread; a failure is kept for the next
        ``stage`` or ``flush`` to raise.

        A removed directory is made again only with ``recreate`` (a ``put`` or ``flush``
        asked for it); otherwise what was staged for it is dropped: whoever removed the
        directory meant its entries to go.
        """
        with self._write_lock:
            with self._lock:
                batch = self._pending
                touched = list(self._touched)
                if not batch and not touched:
                    return
                self._flushing = batch
                self._pending = _Batch()
                self._touched = {}
            try:
                if not batch and not os.path.exists(self.path):
                    return  # only uses to record, in a database removed meanwhile
                conn = self._prepare(recreate=recreate and bool(batch))
                if conn is None:
                    return
                rows = batch.rows()
                files, ids = commit_rows(
                    conn, rows, touched, clock(), ttl=self.ttl, max_bytes=self.max_bytes
                )
                self._unchecked += 1 + sum(len(e) for e in rows.entries if e is not None)
                with self._read_lock:  # before they leave _flushing
                    self._known.committed(rows.keys, ids)
                self.remove_files(files)
            except (sqlite3.Error, DatabaseProblem, OSError) as exc:
                if not batch:  # only uses were to be recorded: nothing is lost
                    return
                why = problem(self.path, exc) if isinstance(exc, sqlite3.Error) else exc
                key = next(iter(batch.entries))
                with self._lock:
                    if self._failure is None:
                        self._failure = WriteFailed(len(batch), key, batch.first_type, str(why))
                    else:
                        self._failure.count += len(batch)
            finally:
                self._flushing = _Batch()

    def flush(self, *, recreate: bool = True) -> None:
        """Commit every staged entry now (``recreate``: as in :meth:`commit`).

        Raises:
            WriteFailed: Staged entries could not be committed, now or since the last
                report.
        """
        self.commit(recreate=recreate)
        with self._lock:
            failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

    # -- housekeeping -------------------------------------------------------------------

    def delete(self, where: str, params: tuple[object, ...]) -> int:
        """Commit what is staged, then delete the rows matching the SQL condition
        ``where`` and their entry files; how many rows went.

        Raises:
            WriteFailed: Staged entries could not be committed.
            DatabaseProblem: The database cannot be written (locked too long, damaged).
        """
        self.flush(recreate=False)
        with self._write_lock:
            if not os.path.exists(self.path):
                return 0
            try:
                conn = self._prepare(recreate=False)
                if conn is None:
                    return 0
                conn.execute("BEGIN IMMEDIATE")
                try:
                    count, files = delete_rows(conn, where, params)
                    conn.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise problem(self.path, exc) from exc
            self._unchecked += 1
        self.remove_files(files)
        return count

    def remove_files(self, keys: list[str]) -> None:
        """Remove the entry files of deleted rows (best effort: one already gone, or
        rewritten by a writer meanwhile, is a miss at worst)."""
        root = os.path.dirname(self.path)
        for key in keys:
            with contextlib.suppress(OSError):
                os.unlink(entry_path(root, key)[1])

    def clear(self) -> None:
        """Drop every entry, staged here or committed; a damaged database file is
        removed instead (with its -wal and -shm files), and made anew by the next write.

        Raises:
            DatabaseProblem: The database cannot be emptied (e.g. locked too long), or
                is not a cache database.
        """
        with self._write_lock:
            with self._lock:
                self._pending, self._failure = _Batch(), None
                self._touched = {}
            if not os.path.exists(self.path):
                return
            try:
                conn = self._prepare()
                assert conn is not None
                conn.execute("DELETE FROM entries")
                conn.execute("VACUUM")  # give the space back (cheap: nothing is left)
            except sqlite3.Error as exc:
                why = problem(self.path, exc)
                if not why.damaged:
                    raise why from exc
                self._remove_files()
            except DatabaseProblem as exc:  # not ours, or no WAL here: leave it alone
                if not exc.damaged:
                    raise
                self._remove_files()

    def _remove_files(self) -> None:
        # Processes that have the old file open keep using it until they next write.
        self._forget_writer()
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path + suffix)

    def __repr__(self) -> str:
        return f"Database({self.path!r}, staged={len(self._pending)})"


def _close_all(connections: list[sqlite3.Connection]) -> None:
    for conn in connections:
        with contextlib.suppress(sqlite3.Error):
            conn.close()
