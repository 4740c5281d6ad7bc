"""The keys a cache database holds, kept in memory by a process that misses often, so a
miss costs a set lookup instead of a SQLite query (~10 µs in a busy process).

The set is loaded once a process has missed :data:`BUILD_AFTER` times in a database of at
most :data:`LIMIT` rows, then kept current: the keys this process commits are added as it
commits them, and the rows other processes commit are loaded (by increasing row id) when
the database's write-ahead log has changed, looked at no more often than every
:data:`RECHECK` seconds. So another process's entry can be missed for that long after its
commit, on top of the wait before its commit: a miss, never a wrong value.
"""

from __future__ import annotations

import os
import sqlite3
from time import monotonic

__all__ = ["BUILD_AFTER", "LIMIT", "RECHECK", "KnownKeys"]

BUILD_AFTER = 64
"""Database misses of a process before it loads the keys."""
LIMIT = 250_000
"""Keys beyond which a process does not keep them (~100 bytes each)."""
RECHECK = 0.02
"""Seconds between looks at the log for commits of other processes (a ``stat``, which
hands the GIL to any thread waiting for it; other processes commit every 50-200 ms)."""

_SINCE = "SELECT id, key FROM entries WHERE id > ? ORDER BY id LIMIT ?"

Stamp = tuple[int, int, int] | None


def _stamp(path: str) -> Stamp:
    """What changes whenever a transaction is committed: the log's inode, size and time."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


class KnownKeys:
    """The row keys of one database, as of the last look at its log, plus those this
    process has committed since. Not thread-safe: the caller holds its lock.

    Row ids only grow (``AUTOINCREMENT``; a replaced row gets a new id), so loading the
    rows with ids above the last one seen catches every commit since, whoever made it. A
    row deleted since stays in the set: a lookup, then a miss.
    """

    def __init__(self, database: str) -> None:
        self._log = database + "-wal"
        self.reset()

    def reset(self) -> None:
        """Forget everything (the database was emptied or replaced)."""
        self._keys: set[str] | None = None
        self._last_id = 0
        self._stamp: Stamp = None
        self._next_look = 0.0
        self._misses = 0
        self._off = False  # too many keys to keep

    def absent(self, conn: sqlite3.Connection, key: str) -> bool:
        """Whether the row key ``key`` is certainly not in the database (``False``: look
        it up)."""
        keys = self._keys
        if keys is None or key in keys:
            return False
        now = monotonic()
        if now < self._next_look:
            return True
        self._next_look = now + RECHECK
        stamp = _stamp(self._log)
        if stamp == self._stamp:
            return True
        self._load(conn, stamp)
        return self._keys is not None and key not in self._keys

    def surely_absent(self, key: str) -> bool:
        """Like :meth:`absent`, but never reads the database (a ``stat`` of its log at
        most): ``False`` also when rows committed since must be read first."""
        keys = self._keys
        if keys is None or key in keys:
            return False
        now = monotonic()
        if now < self._next_look:
            return True
        if _stamp(self._log) != self._stamp:
            return False
        self._next_look = now + RECHECK
        return True

    def missed(self, conn: sqlite3.Connection) -> None:
        """Count a lookup that found nothing; load the keys once there were enough."""
        if self._keys is None and not self._off:
            self._misses += 1
            if self._misses >= BUILD_AFTER:
                self._load(conn, _stamp(self._log))

    def committed(self, keys: list[str], ids: tuple[int, int]) -> None:
        """Add the row keys this process has just committed, as rows ``ids`` (the highest
        row id given before and after them). When they follow the last row seen, they
        count as seen: the next look at the log reads only rows committed since by
        others, instead of reading all of this process's own rows back (22 ms in a cold
        run of 8,000 entries)."""
        if self._keys is not None:
            self._keys.update(keys)
            if ids[0] == self._last_id:
                self._last_id = ids[1]

    def _load(self, conn: sqlite3.Connection, stamp: Stamp) -> None:
        # The stamp is taken before the rows are read: a commit in between is seen again.
        keys = self._keys if self._keys is not None else set()
        try:
            rows = conn.execute(_SINCE, (self._last_id, LIMIT + 1 - len(keys))).fetchall()
        except sqlite3.Error:  # the lookup itself will say what is wrong
            self._keys = None
            return
        if len(keys) + len(rows) > LIMIT:
            self._keys, self._off = None, True
            return
        keys.update(key for _, key in rows)
        if rows:
            self._last_id = rows[-1][0]
        self._keys, self._stamp = keys, stamp
