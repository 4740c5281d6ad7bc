"""The SQL of a DiskCache database: opening it, its one table, inserting a batch, and what
a SQLite error means for the cache. No state: ``_database`` owns the connections.

The table is ``entries(id, key, entry, written, node, size, used)``: ``id`` grows with
every row written (``AUTOINCREMENT``: never reused, so "rows since id N" finds every later
commit), ``key`` is unique, ``entry`` holds an entry's bytes as ``_entry`` frames them
(``NULL``: the entry is a file), ``written`` the Unix time of its commit, ``node`` the
name of the node whose result it is (``NULL``: not said), ``size`` its bytes (row or
file), ``used`` the Unix time of its last lookup (as committed by the reader's writer
thread) or of its commit. ``PRAGMA application_id`` marks the file as a HyperNodes cache,
``PRAGMA user_version`` gives the schema version.

The last three columns came later, without a new schema version: they are added to older
databases when first opened for writing, and writers that do not know them leave them
``NULL`` (no node; a size of 0 when bounding; least recently used first).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import time
from typing import NamedTuple

from ._hashing import digest128

__all__ = [
    "APPLICATION_ID",
    "BUSY_TIMEOUT",
    "DB_NAME",
    "SCHEMA_VERSION",
    "SELECT",
    "DatabaseProblem",
    "Rows",
    "connect",
    "create_schema",
    "commit_rows",
    "delete_rows",
    "problem",
    "row_key",
    "select_many",
]

DB_NAME = "cache.db"
SCHEMA_VERSION = 1
APPLICATION_ID = 0x484E4443  # b"HNDC", like the magic of an entry
BUSY_TIMEOUT = 10.0
"""Seconds to wait for another process's write transaction before giving up."""

SELECT = "SELECT entry, written FROM entries WHERE key = ?"


@functools.cache
def select_many(keys: int) -> str:
    """The query of ``keys`` rows at once: ``(key, entry, written)`` of those found."""
    return f"SELECT key, entry, written FROM entries WHERE key IN ({', '.join('?' * keys)})"


_ROWS_PER_STATEMENT = 100
# Many rows per statement, so few sqlite3_step calls: the sqlite3 module takes the GIL
# back after every step, and a writer thread stepping row by row would take it from the
# thread computing results hundreds of times per commit.


@functools.cache
def _insert_sql(rows: int) -> str:
    values = ", ".join(["(?, ?, ?, ?, ?, ?)"] * rows)
    columns = "key, entry, written, node, size, used"
    return f"INSERT OR REPLACE INTO entries ({columns}) VALUES {values}"


@functools.cache
def _touch_sql(rows: int) -> str:
    marks = ", ".join(["?"] * rows)
    return f"UPDATE entries SET used = ? WHERE key IN ({marks})"


_LATER_COLUMNS = (("node", "TEXT"), ("size", "INTEGER"), ("used", "REAL"))
_INDEX = "CREATE INDEX IF NOT EXISTS entries_by_use ON entries (used, size)"


_DAMAGED = frozenset({"SQLITE_CORRUPT", "SQLITE_NOTADB"})


def row_key(key: str) -> str:
    """The key's row: the key itself when it is printable ASCII (every key the runtime
    makes), else ``=`` and a hash of it (SQLite text cannot hold lone surrogates, and NUL
    cuts it short). An entry's checksum covers the real key, so a collision is a miss."""
    if key.isascii() and key.isprintable():
        return key
    return "=" + digest128(key.encode("utf-8", "surrogatepass")).hex()


class DatabaseProblem(Exception):
    """The database cannot be read or written; the message says why and names the file.

    Attributes:
        damaged: The file is corrupt or not a database (``clear()`` replaces it), as
            opposed to a passing problem (a lock held too long, a full disk).
    """

    def __init__(self, message: str, *, damaged: bool = False) -> None:
        super().__init__(message)
        self.damaged = damaged


def problem(path: str, exc: sqlite3.Error) -> DatabaseProblem:
    """What a SQLite error on the database ``path`` means for the cache."""
    damaged = getattr(exc, "sqlite_errorname", "") in _DAMAGED
    what = "is damaged" if damaged else "cannot be used"
    return DatabaseProblem(f"cache database {path} {what} ({exc})", damaged=damaged)


def connect(path: str) -> sqlite3.Connection:
    """A connection to the existing file ``path`` (never creates it), in autocommit mode
    (transactions are explicit), usable by one thread at a time from any thread.

    Raises:
        sqlite3.Error: It cannot be opened.
    """
    # The URI's mode=rw: a lookup never creates the file. Only %, ? and # need escaping
    # (not urllib's quote: importing it costs 4 ms).
    name = path.replace("%", "%25").replace("?", "%3f").replace("#", "%23")
    if os.sep == "\\":
        name = "/" + name.replace("\\", "/")  # file:/C:/dir/cache.db
    conn = sqlite3.connect(
        f"file:{name}?mode=rw",
        timeout=BUSY_TIMEOUT,
        isolation_level=None,
        check_same_thread=False,
        uri=True,
    )
    try:
        conn.execute("PRAGMA trusted_schema = OFF")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA journal_size_limit = 67108864")
        # The writer thread checkpoints (copies the log into the database, with fsyncs)
        # after its commits, instead of the commit that happens to fill the log.
        conn.execute("PRAGMA wal_autocheckpoint = 0")
    except BaseException:
        conn.close()
        raise
    return conn


def create_schema(conn: sqlite3.Connection, path: str) -> None:
    """Switch to WAL mode and create the table, unless there; check it is ours.

    Raises:
        DatabaseProblem: WAL mode is not available here, or the file is another
            application's database or of another schema version.
        sqlite3.Error: SQLite failed.
    """
    mode = _wal(conn)
    if mode != "wal":
        raise DatabaseProblem(
            f"cache database {path} cannot use write-ahead logging here (journal mode "
            f"{mode!r}); use DiskCache(path, layout='files') on this filesystem"
        )
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        app = conn.execute("PRAGMA application_id").fetchone()[0]
        empty = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
        if empty and version == 0 and app == 0:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS entries (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                "key TEXT NOT NULL UNIQUE, entry BLOB, written REAL NOT NULL, "
                "node TEXT, size INTEGER, used REAL)"
            )
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        elif app != APPLICATION_ID or version != SCHEMA_VERSION:
            raise DatabaseProblem(
                f"{path} is not a HyperNodes cache database of schema {SCHEMA_VERSION} "
                f"(application id {app:#x}, version {version}); move it away, or point "
                "the DiskCache at another directory"
            )
        else:
            _add_later_columns(conn)
        conn.execute(_INDEX)
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise


def _add_later_columns(conn: sqlite3.Connection) -> None:
    """Give a database made by an earlier HyperNodes the columns added since."""
    have = {row[1] for row in conn.execute("PRAGMA table_info(entries)")}
    missing = [(name, kind) for name, kind in _LATER_COLUMNS if name not in have]
    for name, kind in missing:
        conn.execute(f"ALTER TABLE entries ADD COLUMN {name} {kind}")
    if missing:
        conn.execute("UPDATE entries SET size = length(entry), used = written")


def _wal(conn: sqlite3.Connection) -> str:
    """Switch the database to WAL mode (persistent: once per file); the journal mode.

    Several processes creating the database at once: switching needs the file to
    itself, and SQLite reports "locked" at once instead of waiting, so wait here.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT
    while True:
        try:
            mode: str = conn.execute("PRAGMA journal_mode").fetchone()[0]
            if mode != "wal":
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            return mode
        except sqlite3.OperationalError as exc:
            busy = getattr(exc, "sqlite_errorname", "") in ("SQLITE_BUSY", "SQLITE_LOCKED")
            if not busy or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


class Rows(NamedTuple):
    """Rows to write, column by column: their keys, entries (``None``: a file), nodes and
    sizes. No object per row: a tuple per row, alive for the whole commit, made the
    garbage collector of the thread computing results run about once more per commit."""

    keys: list[str]
    entries: list[bytes | None]
    nodes: list[str | None]
    sizes: list[int]


def commit_rows(
    conn: sqlite3.Connection,
    rows: Rows,
    touched: list[str],
    now: float,
    *,
    ttl: float | None = None,
    max_bytes: int | None = None,
) -> tuple[list[str], tuple[int, int]]:
    """In one transaction: insert or replace ``rows``, mark the ``touched`` keys used at
    ``now``, delete the rows written more than ``ttl`` seconds ago and, while the entries
    hold more than ``max_bytes``, the least recently used ones.

    Returns the keys of the deleted rows whose entries are files (for the caller to
    remove once committed), and the highest row id ever given before and after the
    inserts: the rows inserted are exactly those with ids in between (the transaction
    holds the database's write lock).

    Raises:
        sqlite3.Error: The transaction failed (nothing of it was committed).
    """
    cur = conn.cursor()  # one for the transaction (sqlite3 keeps a weakref per cursor)
    cur.execute("BEGIN IMMEDIATE")
    try:
        before = _last_id(cur)
        _insert(cur, rows, now)
        after = _last_id(cur) if rows.keys else before
        for start in range(0, len(touched), _ROWS_PER_STATEMENT):
            chunk = touched[start : start + _ROWS_PER_STATEMENT]
            cur.execute(_touch_sql(len(chunk)), [now, *chunk])
        files: list[str] = []
        if ttl is not None:
            files += delete_rows(conn, "written < ?", (now - ttl,))[1]
        if max_bytes is not None:
            files += _evict(conn, max_bytes)
        cur.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    finally:
        cur.close()
    return files, (before, after)


def _last_id(cur: sqlite3.Cursor) -> int:
    """The highest row id given so far (``AUTOINCREMENT`` never gives one twice)."""
    row = cur.execute("SELECT seq FROM sqlite_sequence WHERE name = 'entries'").fetchone()
    return int(row[0]) if row is not None else 0


def _insert(cur: sqlite3.Cursor, rows: Rows, now: float) -> None:
    keys, entries, nodes, sizes = rows
    for start in range(0, len(keys), _ROWS_PER_STATEMENT):
        end = min(start + _ROWS_PER_STATEMENT, len(keys))
        params: list[object] = []
        for i in range(start, end):
            params += (keys[i], entries[i], now, nodes[i], sizes[i], now)
        cur.execute(_insert_sql(end - start), params)


def delete_rows(
    conn: sqlite3.Connection, where: str, params: tuple[object, ...]
) -> tuple[int, list[str]]:
    """Delete the rows matching ``where`` (inside the caller's transaction): how many,
    and the keys of those whose entries are files."""
    deleted = conn.execute(
        f"DELETE FROM entries WHERE {where} RETURNING key, entry IS NULL", params
    ).fetchall()
    return len(deleted), [key for key, is_file in deleted if is_file]


def _evict(conn: sqlite3.Connection, max_bytes: int) -> list[str]:
    """Delete the least recently used rows until the entries hold at most ``max_bytes``."""
    total = conn.execute("SELECT total(size) FROM entries").fetchone()[0]
    excess = total - max_bytes
    if excess <= 0:
        return []
    ids: list[int] = []
    files: list[str] = []
    # NULL sorts first: rows of writers that do not record use go first.
    rows = conn.execute("SELECT id, key, size, entry IS NULL FROM entries ORDER BY used, id")
    for row_id, key, size, is_file in rows:
        ids.append(row_id)
        if is_file:
            files.append(key)
        excess -= size or 0
        if excess <= 0:
            break
    rows.close()
    for start in range(0, len(ids), _ROWS_PER_STATEMENT):
        chunk = ids[start : start + _ROWS_PER_STATEMENT]
        marks = ", ".join(["?"] * len(chunk))
        conn.execute(f"DELETE FROM entries WHERE id IN ({marks})", chunk)
    return files
