"""MemoryCache: an in-process store, optionally LRU-bounded, safe from caller mutation."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from ._serialize import dumps, is_immutable, loads
from .base import MISSING, Cache, CacheStats, StatsCounter

__all__ = ["MemoryCache"]


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
    (``max_size``), not its entries: a copy shipped to another process (a process pool, a
    Dask worker) starts empty and is a separate store.

    Args:
        max_size: The most entries kept; ``None`` (the default) for no bound.

    Raises:
        ValueError: ``max_size`` is not ``None`` or a positive int.
    """

    def __init__(self, max_size: int | None = None) -> None:
        if max_size is not None and (
            not isinstance(max_size, int) or isinstance(max_size, bool) or max_size < 1
        ):
            raise ValueError(f"max_size must be a positive int or None, got {max_size!r}")
        self.max_size = max_size
        self._data: OrderedDict[str, object] = OrderedDict()
        self._stats = StatsCounter()
        self._lock = self._stats.lock  # one lock guards entries and counters together

    def get(self, key: str, default: Any = MISSING) -> Any:
        """The value stored under ``key`` (a fresh copy unless immutable), or ``default``."""
        with self._lock:
            stored = self._data.get(key, MISSING)
            if stored is MISSING:
                self._stats.misses += 1
                return default
            self._stats.hits += 1
            if self.max_size is not None:
                self._data.move_to_end(key)
        if type(stored) is _Pickled:
            return loads(stored.data)
        return stored

    def put(self, key: str, value: Any) -> None:
        """Store ``value`` under ``key``; evict the least recently used entry when full.

        Raises:
            CacheWriteError: The value is neither immutable nor picklable (by pickle or
                cloudpickle); nothing is stored.
        """
        stored: object = value if is_immutable(value) else _Pickled(dumps(key, value))
        with self._lock:
            self._data[key] = stored
            self._stats.writes += 1
            if self.max_size is not None:
                self._data.move_to_end(key)
                while len(self._data) > self.max_size:
                    self._data.popitem(last=False)
                    self._stats.evictions += 1

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` has an entry (not counted as a lookup, does not refresh LRU)."""
        return key in self._data

    def __len__(self) -> int:
        """How many entries are stored."""
        return len(self._data)

    def clear(self) -> None:
        """Remove every entry and reset the statistics."""
        with self._lock:
            self._data.clear()
            self._stats.hits = self._stats.misses = self._stats.writes = 0
            self._stats.errors = self._stats.evictions = 0

    def stats(self) -> CacheStats:
        """Hit / miss / write / eviction counters (errors stay 0: memory does not rot)."""
        return self._stats.snapshot()

    def __reduce__(self) -> tuple[type[MemoryCache], tuple[int | None]]:
        return (type(self), (self.max_size,))

    def __repr__(self) -> str:
        s = self._stats
        bound = "" if self.max_size is None else f"max_size={self.max_size}, "
        return f"MemoryCache({bound}entries={len(self._data)}, hits={s.hits}, misses={s.misses})"
