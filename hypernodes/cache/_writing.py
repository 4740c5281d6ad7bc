"""The writing half of DiskCache: entries staged for the next commit (large ones written
as files at once), and commits on demand; the store's reads stay in ``disk``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ._database import Database, WriteFailed
from ._entry import encode_header
from ._files import EntryFiles
from ._serialize import dumps_entry, type_name
from ._sqlite import DatabaseProblem
from .base import CacheWriteError, StatsCounter

__all__ = ["LARGE_ENTRY", "DiskWrites", "lost"]

LARGE_ENTRY = 256 << 10
"""Pickles larger than this (bytes) are kept as files: SQLite writes and reads them two
to four times slower than a file (measured from 256 KiB up, on ext4)."""
_LOOP_FRAME_MAX = 64 << 10  # aput checksums or signs payloads up to this on the loop


class DiskWrites:
    """``put``, ``aput`` (and their ``_entry`` forms) and ``flush`` of a DiskCache.

    A base of :class:`~hypernodes.cache.DiskCache` only: it writes through the store's
    directory, database, secret and statistics, which the store sets up.
    """

    path: str
    _secret: bytes | None
    _files: EntryFiles
    _db_file: str
    _stats: StatsCounter
    _warned: set[str]

    def _database(self) -> Database | None:
        raise NotImplementedError  # the store's: its database, or None for files

    def _trim_files(self) -> None:
        raise NotImplementedError  # the store's: enforces its bounds on entry files

    def _write(self, key: str, payload: bytes, value_type: str, node: str | None = None) -> None:
        """Write or stage one entry.

        Raises:
            CacheWriteError: It cannot be written (nothing is left behind), or entries
                staged shortly before could not be committed.
        """
        header = encode_header(key, payload, self._secret)
        db = self._database()
        try:
            if db is None:
                self._files.write(key, header, payload)
                self._written(key)
                self._trim_files()
                return
            if not db.writable:
                self._open(db, key)
            if len(payload) > LARGE_ENTRY:
                self._files.write(key, header, payload)
                due = self._stage(db, key, None, value_type, node, len(header) + len(payload))
            else:
                due = self._stage(db, key, header + payload, value_type, node)
            if due:
                db.flush()
        except CacheWriteError as exc:
            exc.value_type = value_type
            raise
        except WriteFailed as exc:
            raise CacheWriteError(key, value_type, lost(exc)) from None

    def _stage(
        self,
        db: Database,
        key: str,
        entry: bytes | None,
        value_type: str,
        node: str | None,
        size: int = 0,
    ) -> bool:
        """Stage an entry (``size``: of a file entry); whether the caller must commit now.

        Raises:
            CacheWriteError: Entries staged before could not be committed.
        """
        try:
            due = db.stage(key, entry, value_type, node, len(entry) if entry else size)
        except WriteFailed as exc:
            raise CacheWriteError(key, value_type, lost(exc)) from None
        self._written(key)
        return due

    def _written(self, key: str) -> None:
        self._stats.add_write()
        if key in self._warned:
            with self._stats.lock:
                self._warned.discard(key)

    def _open(self, db: Database, key: str) -> None:
        try:
            self._files.make_root()
            db.open_for_writing()
        except (OSError, DatabaseProblem) as exc:
            fix = ""
            if isinstance(exc, DatabaseProblem) and exc.damaged:
                fix = f"; DiskCache({self.path!r}).clear() replaces it"
            reason = f"cannot open {self._db_file} ({exc}){fix}"
            raise CacheWriteError(key, "bytes", reason) from exc

    def put(self, key: str, value: Any, *, node: str | None = None) -> None:
        """Store ``value`` under ``key``: staged for the next commit (a large value is
        written to its file at once, atomically). ``node`` names the node whose result
        it is (``hypernodes cache ls --node``; not kept in the ``"files"`` layout).

        Raises:
            CacheWriteError: The value cannot be pickled or written (nothing is left
                behind), or entries written shortly before could not be committed.
            TypeError: ``key`` is not a str.
        """
        self.put_entry(key, value, None, node=node)

    def put_entry(
        self,
        key: str,
        value: Any,
        versions: tuple[str, ...] | None,
        *,
        node: str | None = None,
        text: bytes | None = None,
    ) -> None:
        """:meth:`put` with the versions of the node's outputs (kept in the entry, ahead
        of the pickle, so :meth:`entry_versions` reads them without unpickling).

        A list of 16 or more strs (none holding a NUL) is kept as their UTF-8 joined by
        NULs rather than pickled; ``text`` is that text when the caller has it already
        (the cache runtime gets it from the value's fingerprint,
        :func:`~hypernodes.cache.fingerprint.fingerprint_text`), and must be.

        Raises:
            CacheWriteError: As :meth:`put`.
            TypeError: ``key`` is not a str.
        """
        if type(key) is not str:
            raise TypeError(f"cache keys are str, got {type(key).__name__}")
        self._write(key, dumps_entry(key, value, versions, text), type_name(value), node)

    async def aput(self, key: str, value: Any, *, node: str | None = None) -> None:
        """Async ``put``: the value is pickled on the loop (so nothing can mutate it
        half-way); a small entry is staged right there, anything that writes to the disk
        happens in a worker thread.

        Raises:
            CacheWriteError: The value cannot be pickled or written, or entries written
                shortly before could not be committed.
            TypeError: ``key`` is not a str.
        """
        await self.aput_entry(key, value, None, node=node)

    async def aput_entry(
        self,
        key: str,
        value: Any,
        versions: tuple[str, ...] | None,
        *,
        node: str | None = None,
        text: bytes | None = None,
    ) -> None:
        """Async :meth:`put_entry`, written like :meth:`aput`.

        Raises:
            CacheWriteError: As :meth:`aput`.
            TypeError: ``key`` is not a str.
        """
        if type(key) is not str:
            raise TypeError(f"cache keys are str, got {type(key).__name__}")
        payload, name = dumps_entry(key, value, versions, text), type_name(value)
        db = self._database()
        loop = asyncio.get_running_loop()
        if db is None or not db.writable or len(payload) > _LOOP_FRAME_MAX:
            await loop.run_in_executor(None, self._write, key, payload, name, node)
        elif self._stage(db, key, encode_header(key, payload, self._secret) + payload, name, node):
            await loop.run_in_executor(None, self.flush)

    def flush(self) -> None:
        """Commit what this process has staged for this directory now (else it is
        committed within :data:`FLUSH_DELAY` seconds, 0.2 s while puts keep coming, and
        at exit); a no-op for files.

        Raises:
            CacheWriteError: Staged entries could not be committed (now, or by the
                writer thread since the last ``put``).
        """
        db = self._database()
        if db is None:
            return
        try:
            db.flush()
        except WriteFailed as exc:
            raise CacheWriteError(exc.key, exc.type_name, lost(exc)) from None


def lost(exc: WriteFailed) -> str:
    """Why ``exc``'s staged entries were lost, in words, with how many."""
    entries = "entry" if exc.count == 1 else "entries"
    return f"{exc.reason}; {exc.count} {entries} written shortly before could not be committed"
