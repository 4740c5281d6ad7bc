"""The Cache protocol every store implements, its statistics, and the MISSING marker."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["MISSING", "Cache", "CacheStats"]


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
        errors: Entries found corrupt, tampered with or unreadable (each also a miss).
    """

    hits: int = 0
    misses: int = 0
    writes: int = 0
    errors: int = 0

    @property
    def hit_rate(self) -> float:
        """Hits over lookups (0.0 before any lookup)."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class Cache(ABC):
    """A key-value store of node results. Keys are hex strings; values are any picklable.

    Stores must hand back values that are safe from mutation by the caller, treat an
    unreadable entry as a miss, be picklable (so a pipeline with its cache can be shipped
    to a process or a Dask worker) and create nothing on disk until first used.
    """

    @abstractmethod
    def get(self, key: str, default: Any = MISSING) -> Any:
        """The value stored under ``key``, or ``default`` on a miss."""

    @abstractmethod
    def put(self, key: str, value: Any) -> None:
        """Store ``value`` under ``key`` (replacing any previous value)."""

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
        """Async ``put``; stores doing I/O override it so the event loop never blocks."""
        self.put(key, value)
