"""The Cache protocol every store implements, its statistics, errors and warnings, MISSING."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from ..errors import HyperNodesError

__all__ = [
    "MISSING",
    "Cache",
    "CacheStats",
    "CacheWarning",
    "CacheWriteError",
    "StatsCounter",
    "UnfingerprintableError",
]


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __reduce__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()
"""Returned by ``Cache.get`` on a miss (``None`` is a cacheable value)."""


class CacheWarning(UserWarning):
    """Something in a cache was wrong but the run goes on: a corrupt, truncated or tampered
    entry (read as a miss), an unsafe cache directory, a value that is not cached."""


class CacheWriteError(HyperNodesError):
    """A value could not be stored: it cannot be pickled, or the store could not write it.

    The store is unchanged (no partial entry is ever left behind). The caller decides what
    to do; the cache runtime runs the node uncached and warns.

    Attributes:
        key: The key that was being written.
        value_type: The qualified name of the value's type.
        reason: What went wrong, in words.
    """

    def __init__(self, key: str, value_type: str, reason: str) -> None:
        self.key = key
        self.value_type = value_type
        self.reason = reason
        super().__init__(key, value_type, reason)

    def __str__(self) -> str:
        return (
            f"cannot cache a value of type {self.value_type} under key {self.key!r}: {self.reason}"
        )


class UnfingerprintableError(HyperNodesError, TypeError):
    """A value cannot be fingerprinted reliably, so results depending on it are not cached.

    Attributes:
        type_name: The qualified name of the offending type, e.g. ``_thread.lock``.
        location: Where the offending value sits inside the value that was fingerprinted,
            e.g. ``value['db'][0]`` (``value`` when it is the value itself).
        reason: Why it cannot be fingerprinted.
    """

    def __init__(self, type_name: str, reason: str, location: str = "value") -> None:
        super().__init__(type_name, reason, location)
        self.type_name = type_name
        self.reason = reason
        self.location = location
        self.child: object = None  # the innermost container walked so far (while raising)

    def __str__(self) -> str:
        where = "" if self.location == "value" else f" at {self.location}"
        short = self.type_name.rpartition(".")[2]
        return (
            f"cannot fingerprint a value of type {self.type_name}{where}: {self.reason}; "
            f"teach HyperNodes how with @register_fingerprint({short}), or opt the node "
            "out of caching with @node(cache=False)"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.type_name, self.reason, self.location))

    def inside(self, segment: str, parent: object) -> None:
        """Record, while propagating, that the failing part sat at ``segment`` of ``parent``."""
        self.location = "value" + segment + self.location[len("value") :]
        self.child = parent


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Counters of a store since it was created (or cleared).

    Attributes:
        hits: Lookups that found a valid entry.
        misses: Lookups that found nothing, or an entry that could not be read.
        writes: Entries written.
        errors: Entries found corrupt, tampered with or unreadable (each also a miss when
            found by a lookup).
        evictions: Entries dropped to respect a size bound (``MemoryCache(max_size=...)``).
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
    def put(self, key: str, value: Any) -> None:
        """Store ``value`` under ``key`` (replacing any previous value).

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

    async def aput(self, key: str, value: Any) -> None:
        """Async ``put``; stores doing I/O override it so the event loop never blocks.

        Raises:
            CacheWriteError: The value cannot be serialized or written.
        """
        self.put(key, value)
