"""Caching: the Cache protocol, MemoryCache, DiskCache, fingerprints and code identity.

The stores are imported on first access (``DiskCache`` needs asyncio for its I/O), so
that ``import hypernodes`` stays light. ``fingerprint`` and ``code_identity`` are imported
at once: they share their names with their modules, and a lazy attribute would be
shadowed by the submodule as soon as anything imported it.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .base import (
    MISSING,
    Cache,
    CacheStats,
    CacheWarning,
    CacheWriteError,
    UnfingerprintableError,
)
from .code import code_dependencies, code_identity
from .fingerprint import fingerprint, fingerprint_digest, register_fingerprint

if TYPE_CHECKING:
    from ._inventory import EntryInfo
    from .disk import DiskCache
    from .memory import MemoryCache

__all__ = [
    "MISSING",
    "Cache",
    "CacheStats",
    "CacheWarning",
    "CacheWriteError",
    "DiskCache",
    "EntryInfo",
    "MemoryCache",
    "UnfingerprintableError",
    "code_dependencies",
    "code_identity",
    "fingerprint",
    "fingerprint_digest",
    "register_fingerprint",
]

_LAZY = {"DiskCache": ".disk", "EntryInfo": "._inventory", "MemoryCache": ".memory"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
