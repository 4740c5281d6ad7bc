"""The Cache protocol every store implements, its statistics, errors and warnings, MISSING."""

from __future__ import annotations

import math
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from ..errors import CacheWarning, CacheWriteError, UnfingerprintableError

__all__ = [
    "MISSING",
    "Cache",
    "CacheStats",
    "CacheWarning",
    "CacheWriteError",
    "StatsCounter",
    "UnfingerprintableError",
    "check_count",
    "check_seconds",
]


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __reduce__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()
"""Returned by ``Cache.get`` on a miss (``None`` is a cacheable value)."""


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Counters of a store since it was created (or cleared).

    Attributes:
        hits: Lookups that found a valid entry.
        misses: Lookups that found nothing, or an entry that could not be read.
        writes: Entries written.
        errors: Entries found corrupt, tampered with or unreadable (each also a miss when
            found by a lookup).
        evictions: Entries dropped to respect a bound: ``MemoryCache(max_size=...)``, or
            an entry found expired (``ttl``) by a lookup of this store object.
    """

    hits: int = 0
    misses: int = 0
    writes: int = 0
    errors: int = 0
    evictions: int = 0

    @property
    def lookups(self) -> int:
        """Hits plus misses."""
        return self.hits + self.misses

    @property
    def hit_rate(self) -> float:
        """Hits over lookups (0.0 before any lookup)."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class StatsCounter:
    """Thread-safe hit / miss / write / error / eviction counters behind ``Cache.stats()``.

    Stores that already hold a lock around their own state may update the public
    attributes under that lock; everyone else uses the ``add_*`` methods.
    """

    __slots__ = ("errors", "evictions", "hits", "lock", "misses", "writes")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.hits = self.misses = self.writes = self.errors = self.evictions = 0

    def add_hit(self) -> None:
        """Count a hit."""
        with self.lock:
            self.hits += 1

    def add_miss(self, *, error: bool = False) -> None:
        """Count a miss (and an error, when the miss came from an unreadable entry)."""
        with self.lock:
            self.misses += 1
            if error:
                self.errors += 1

    def add_write(self) -> None:
        """Count a write."""
        with self.lock:
            self.writes += 1

    def add_error(self) -> None:
        """Count an error that was not a lookup (e.g. found by ``in``)."""
        with self.lock:
            self.errors += 1

    def reset(self) -> None:
        """Set every counter back to zero."""
        with self.lock:
            self.hits = self.misses = self.writes = self.errors = self.evictions = 0

    def snapshot(self) -> CacheStats:
        """The counters as an immutable :class:`CacheStats`."""
        with self.lock:
            return CacheStats(self.hits, self.misses, self.writes, self.errors, self.evictions)


def check_seconds(name: str, value: object) -> float | None:
    """``value`` as a number of seconds: ``None``, or a positive finite int or float.

    Raises:
        ValueError: It is anything else (the message names ``name``).
    """
    if value is None:
        return None
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(
            f"{name} must be a positive number of seconds or None, got {value!r} "
            f"(e.g. {name}=3600 for an hour; None keeps entries until evicted or cleared)"
        )
    return float(value)


def check_count(name: str, value: object, unit: str) -> int | None:
    """``value`` as a bound: ``None`` or a positive int.

    Raises:
        ValueError: It is anything else (the message names ``name`` and ``unit``).
    """
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(
            f"{name} must be a positive int or None (a number of {unit}), got {value!r}"
        )
    return value


class Cache(ABC):
    """A key-value store of node results. Keys are hex strings; values are any picklable.

    Stores must hand back values that are safe from mutation by the caller, treat an
    unreadable entry as a miss, be thread-safe, be picklable (so a pipeline with its cache
    can be shipped to a process or a Dask worker) and create nothing on disk until first
    used.

    Attributes:
        blocking_io: Whether ``get`` / ``put`` may block on I/O. When ``True``, code running
            on an event loop must use ``aget`` / ``aput`` (which keep the loop free); when
            ``False`` the sync methods are cheaper and just as safe there.
    """

    blocking_io: ClassVar[bool] = False

    @abstractmethod
    def get(self, key: str, default: Any = MISSING) -> Any:
        """The value stored under ``key``, or ``default`` on a miss."""

    @abstractmethod
    def put(self, key: str, value: Any, *, node: str | None = None) -> None:
        """Store ``value`` under ``key`` (replacing any previous value).

        ``node`` names the node whose result it is, for stores that can list their
        entries by node (``hypernodes cache ls --node``); stores may ignore it.

        Raises:
            CacheWriteError: The value cannot be serialized or written.
        """

    @abstractmethod
    def __contains__(self, key: object) -> bool:
        """Whether a readable entry exists for ``key`` (does not count as a lookup)."""

    @abstractmethod
    def clear(self) -> None:
        """Remove every entry and reset the statistics."""

    @abstractmethod
    def stats(self) -> CacheStats:
        """Hit / miss / write / error counters."""

    async def aget(self, key: str, default: Any = MISSING) -> Any:
        """Async ``get``; stores doing I/O override it so the event loop never blocks."""
        return self.get(key, default)

    async def aput(self, key: str, value: Any, *, node: str | None = None) -> None:
        """Async ``put``; stores doing I/O override it so the event loop never blocks.

        Raises:
            CacheWriteError: The value cannot be serialized or written.
        """
        if node is None:  # stores written before ``node`` existed take two arguments
            self.put(key, value)
        else:
            self.put(key, value, node=node)
