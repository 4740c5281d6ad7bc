"""MemoryCache: an in-process store, optionally LRU-bounded and expiring, safe from
caller mutation."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

from ._serialize import dumps, is_immutable, loads
from .base import MISSING, Cache, CacheStats, Entry, StatsCounter, check_count, check_seconds

__all__ = ["MemoryCache"]


def clock() -> float:
    """The monotonic time entries are stamped with and judged by (``ttl``)."""
    return time.monotonic()


class _Pickled:
    """A stored value kept as pickled bytes (so nobody can mutate the stored copy)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class MemoryCache(Cache):
    """Results kept in this process's memory; least recently used first out when bounded.

    Values never share mutable state with the caller: immutable values (``None``, numbers,
    strings, bytes, and tuples / frozensets of those) are kept as they are, anything else is
    kept pickled, so each ``get`` returns a fresh copy and mutating a value after ``put``
    changes nothing stored.

    The store is thread-safe. Pickling a ``MemoryCache`` keeps only its configuration
    (``max_size``, ``ttl``), not its entries: a copy shipped to another process (a process
    pool, a Dask worker) starts empty and is a separate store.

    Args:
        max_size: The most entries kept; ``None`` (the default) for no bound. When full,
            a ``put`` drops the least recently used entry (read or written).
        ttl: Seconds an entry stays valid after its ``put``; ``None`` (the default) for
            ever. An expired entry is a miss, and is dropped.

    Raises:
        ValueError: ``max_size`` is not ``None`` or a positive int, or ``ttl`` is not
            ``None`` or a positive number.
    """

    def __init__(self, max_size: int | None = None, ttl: float | None = None) -> None:
        self.max_size = check_count("max_size", max_size, "entries")
        self.ttl = check_seconds("ttl", ttl)
        # key -> (value or _Pickled, output versions): a hit of an immutable value hands
        # back the stored pair itself, allocating nothing.
        self._data: OrderedDict[str, tuple[Any, tuple[str, ...] | None]] = OrderedDict()
        self._records: dict[str, dict[str, Any]] = {}
        # With a ttl: when each key was put, oldest first (reads do not reorder it).
        self._born: OrderedDict[str, float] | None = None if ttl is None else OrderedDict()
        self._stats = StatsCounter()
        self._lock = self._stats.lock  # one lock guards entries and counters together

    def get(self, key: str, default: Any = MISSING) -> Any:
        """The value stored under ``key`` (a fresh copy unless immutable), or ``default``."""
        entry = self.get_entry(key)
        return default if entry is MISSING else entry[0]

    def get_entry(self, key: str) -> Entry | Any:
        """``(value, output versions)`` stored under ``key`` (the value a fresh copy unless
        immutable), or :data:`MISSING`."""
        with self._lock:
            entry = self._data.get(key)
            if entry is None:
                self._stats.misses += 1
                return MISSING
            if self._born is not None and self._expired(key):
                self._stats.misses += 1
                return MISSING
            self._stats.hits += 1
            if self.max_size is not None:
                self._data.move_to_end(key)
        stored = entry[0]
        if type(stored) is _Pickled:
            return loads(stored.data), entry[1]
        return entry

    async def aget_entry(self, key: str) -> Entry | Any:
        """:meth:`get_entry` (memory never blocks)."""
        return self.get_entry(key)

    def entry_versions(self, key: str) -> tuple[str, ...] | Any | None:
        """The output versions recorded with ``key``'s entry (:data:`MISSING`: no entry);
        not a lookup."""
        if key not in self:
            return MISSING
        entry = self._data.get(key)
        return MISSING if entry is None else entry[1]

    def _expired(self, key: str) -> bool:
        """Whether ``key``'s entry is past its ttl; drops it if so (under the lock)."""
        born = self._born
        assert born is not None and self.ttl is not None
        if clock() - born[key] < self.ttl:
            return False
        del self._data[key], born[key]
        self._stats.evictions += 1
        return True

    def _drop_expired(self) -> None:
        """Drop the entries past their ttl, oldest first (under the lock)."""
        born = self._born
        assert born is not None and self.ttl is not None
        limit = clock() - self.ttl
        while born:
            key, at = next(iter(born.items()))
            if at > limit:
                return
            del self._data[key], born[key]
            self._stats.evictions += 1

    def put(self, key: str, value: Any, *, node: str | None = None) -> None:
        """Store ``value`` under ``key``; evict the least recently used entry when full
        (and, with a ``ttl``, the expired ones). ``node`` is not recorded.

        Raises:
            CacheWriteError: The value is neither immutable nor picklable (by pickle or
                cloudpickle); nothing is stored.
        """
        self.put_entry(key, value, None)

    def put_entry(
        self, key: str, value: Any, versions: tuple[str, ...] | None, *, node: str | None = None
    ) -> None:
        """:meth:`put` with the versions of the node's outputs.

        Raises:
            CacheWriteError: As :meth:`put`.
        """
        stored: object = value if is_immutable(value) else _Pickled(dumps(key, value))
        with self._lock:
            self._data[key] = (stored, versions)
            self._stats.writes += 1
            born = self._born
            if born is not None:
                born[key] = clock()
                born.move_to_end(key)
                self._drop_expired()
            if self.max_size is not None:
                self._data.move_to_end(key)
                while len(self._data) > self.max_size:
                    old, _ = self._data.popitem(last=False)
                    if born is not None:
                        del born[old]
                    self._stats.evictions += 1

    async def aput_entry(
        self, key: str, value: Any, versions: tuple[str, ...] | None, *, node: str | None = None
    ) -> None:
        """:meth:`put_entry` (memory never blocks).

        Raises:
            CacheWriteError: As :meth:`put`.
        """
        self.put_entry(key, value, versions)

    def put_record(self, node: str, record: dict[str, Any]) -> None:
        """Keep ``record`` as ``node``'s last (for ``explain``)."""
        with self._lock:
            self._records[node] = record

    def get_record(self, node: str) -> dict[str, Any] | None:
        """``node``'s last record, or ``None``."""
        return self._records.get(node)

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` has an unexpired entry (not counted as a lookup, does not
        refresh LRU)."""
        if self._born is None:
            return key in self._data
        with self._lock:
            return key in self._data and not self._expired(key)  # type: ignore[arg-type]

    def __len__(self) -> int:
        """How many entries are stored (expired ones are dropped first)."""
        if self._born is not None:
            with self._lock:
                self._drop_expired()
        return len(self._data)

    def clear(self) -> None:
        """Remove every entry and reset the statistics."""
        with self._lock:
            self._data.clear()
            self._records.clear()
            if self._born is not None:
                self._born.clear()
            self._stats.hits = self._stats.misses = self._stats.writes = 0
            self._stats.errors = self._stats.evictions = 0

    def stats(self) -> CacheStats:
        """Hit / miss / write / eviction counters (errors stay 0: memory does not rot)."""
        return self._stats.snapshot()

    def __reduce__(self) -> tuple[type[MemoryCache], tuple[int | None, float | None]]:
        return (type(self), (self.max_size, self.ttl))

    def __repr__(self) -> str:
        s = self._stats
        bound = "" if self.max_size is None else f"max_size={self.max_size}, "
        bound += "" if self.ttl is None else f"ttl={self.ttl:g}, "
        return f"MemoryCache({bound}entries={len(self._data)}, hits={s.hits}, misses={s.misses})"
