"""What a DiskCache directory holds, for people and ``hypernodes cache``: its entries
listed, and pruned by age or node, without unpickling anything.

Reads open their own SQLite connection (never creating the file); deletions go through
the process's :class:`~._database.Database`, so they are serialised with its commits.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass

from ._database import Database
from ._files import EntryFiles
from ._sqlite import connect, problem

__all__ = ["EntryInfo", "list_entries", "prune_entries"]


@dataclass(frozen=True, slots=True)
class EntryInfo:
    """One entry of a :class:`~hypernodes.cache.DiskCache` directory.

    Attributes:
        key: The entry's key (for keys that are not printable ASCII, ``=`` and a hash).
        node: The name of the node whose result it is, or ``None`` when not recorded
            (entries kept as files, or written by an earlier HyperNodes).
        size: Its bytes (header and pickle).
        written: When it was written (Unix time).
        used: When a lookup last found it, as recorded (Unix time; its ``written`` until
            then, ``None`` where not recorded).
        file: Whether the entry is a file of its own (large, or the ``"files"`` layout)
            rather than a database row.
    """

    key: str
    node: str | None
    size: int
    written: float
    used: float | None
    file: bool


def _columns(conn: sqlite3.Connection) -> set[str]:
    return {row[1] for row in conn.execute("PRAGMA table_info(entries)")}


def _rows(db_file: str, node: str | None) -> list[EntryInfo]:
    conn = connect(db_file)
    try:
        have = _columns(conn)
        if not have:
            return []
        pick = [c if c in have else "NULL" for c in ("node", "size", "used")]
        sql = (
            f"SELECT key, {pick[0]}, coalesce({pick[1]}, length(entry)), written, {pick[2]}, "
            "entry IS NULL FROM entries"
        )
        params: tuple[object, ...] = ()
        if node is not None:
            if "node" not in have:
                return []
            sql += " WHERE node = ?"
            params = (node,)
        rows = conn.execute(sql + " ORDER BY written, id", params).fetchall()
    finally:
        conn.close()
    root = os.path.dirname(db_file)
    out = []
    for key, node_name, size, written, used, is_file in rows:
        if size is None and is_file:  # a large entry of a writer that did not record sizes
            with contextlib.suppress(OSError):
                size = os.stat(EntryFiles(root, signed=False).file(key)[1]).st_size
        out.append(EntryInfo(key, node_name, size or 0, written, used, bool(is_file)))
    return out


def list_entries(db_file: str, files: EntryFiles, node: str | None = None) -> list[EntryInfo]:
    """The entries of the directory, oldest first: the database's rows when it has a
    database, else its entry files.

    Raises:
        DatabaseProblem: The database cannot be read.
    """
    if os.path.exists(db_file):
        try:
            return _rows(db_file, node)
        except sqlite3.Error as exc:
            raise problem(db_file, exc) from exc
    if node is not None:
        return []  # entries kept as files do not record their node
    found = [
        EntryInfo(os.path.basename(path), None, size, mtime, None, True)
        for path, mtime, size in files.scan()
    ]
    found.sort(key=lambda e: e.written)
    return found


def prune_entries(
    db: Database | None, files: EntryFiles, before: float | None, node: str | None
) -> int:
    """Remove the entries written before the Unix time ``before`` and/or of ``node``;
    how many went.

    Raises:
        DatabaseProblem: The database cannot be written.
        ValueError: ``node`` was given for entries kept as files.
    """
    if db is not None and os.path.exists(db.path):
        conditions: list[str] = []
        params: list[object] = []
        if before is not None:
            conditions.append("written < ?")
            params.append(before)
        if node is not None:
            conditions.append("node = ?")
            params.append(node)
        return db.delete(" AND ".join(conditions) or "1", tuple(params))
    if node is not None:
        raise ValueError(
            f"entries kept as files (in {files.root}) do not record their node: prune "
            "them by age, or clear the directory"
        )
    removed = 0
    for path, mtime, _ in files.scan():
        if before is None or mtime < before:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
                removed += 1
    return removed
