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
    "Entry",
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

Entry = tuple[Any, "tuple[str, ...] | None"]
"""What ``Cache.get_entry`` returns on a hit: the value and the versions (fingerprints) of
the node's outputs recorded with it, or ``None`` when the store keeps none."""


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

    # -- what the cache runtime and ``explain`` use beyond get / put --------------------------
    # Every method below has a default built on the five abstract ones, so a store written
    # before they existed still works: its hits then carry no output versions (the runtime
    # fingerprints the value instead) and it keeps no node records (``explain`` says
    # "never computed" rather than which function changed).

    def get_entry(self, key: str) -> Entry | Any:
        """``(value, versions)`` stored under ``key``, or :data:`MISSING` (counted as a
        lookup, like ``get``). ``versions`` are the fingerprints of the node's outputs
        recorded by :meth:`put_entry`, in output order, or ``None``."""
        value = self.get(key, MISSING)
        return MISSING if value is MISSING else (value, None)

    def get_entries(self, keys: list[str]) -> dict[str, Entry]:
        """:meth:`get_entry` of many keys (each counted as a lookup): the entry of each
        key found; a key missed is left out. Stores that can read many entries at once
        override it (a map reads ahead through it, see ``CacheRuntime.read_ahead``)."""
        found: dict[str, Entry] = {}
        for key in keys:
            entry = self.get_entry(key)
            if entry is not MISSING:
                found[key] = entry
        return found

    async def aget_entry(self, key: str) -> Entry | Any:
        """Async :meth:`get_entry` (stores doing I/O keep the event loop free)."""
        value = await self.aget(key, MISSING)
        return MISSING if value is MISSING else (value, None)

    def put_entry(
        self, key: str, value: Any, versions: tuple[str, ...] | None, *, node: str | None = None
    ) -> None:
        """Store ``value`` under ``key`` with the ``versions`` of the node's outputs
        (the default drops them).

        Raises:
            CacheWriteError: The value cannot be serialized or written.
        """
        if node is None:
            self.put(key, value)
        else:
            self.put(key, value, node=node)

    async def aput_entry(
        self, key: str, value: Any, versions: tuple[str, ...] | None, *, node: str | None = None
    ) -> None:
        """Async :meth:`put_entry`.

        Raises:
            CacheWriteError: The value cannot be serialized or written.
        """
        if node is None:
            await self.aput(key, value)
        else:
            await self.aput(key, value, node=node)

    def entry_versions(self, key: str) -> tuple[str, ...] | Any | None:
        """The output versions recorded with ``key``'s entry without reading its value
        and without counting a lookup: :data:`MISSING` when there is no entry, ``None``
        when its versions were not recorded."""
        return None if key in self else MISSING

    def put_record(self, node: str, record: dict[str, Any]) -> None:  # noqa: B027
        """Keep ``record`` (JSON-able: a node's last key, code identity per function and
        input versions) as the last one of ``node`` (the default keeps nothing: an
        optional hook, not an abstract method).

        Raises:
            OSError: It cannot be written (the runtime warns and goes on).
        """

    def get_record(self, node: str) -> dict[str, Any] | None:
        """The last record :meth:`put_record` kept for ``node``, or ``None``."""
        return None
