"""Caching: the Cache protocol, MemoryCache, DiskCache, fingerprints and code identity."""

from __future__ import annotations

from .base import (
    MISSING,
    Cache,
    CacheStats,
    CacheWarning,
    CacheWriteError,
    UnfingerprintableError,
)
from .code import code_dependencies, code_identity
from .disk import DiskCache
from .fingerprint import fingerprint, fingerprint_digest, register_fingerprint
from .memory import MemoryCache

__all__ = [
    "MISSING",
    "Cache",
    "CacheStats",
    "CacheWarning",
    "CacheWriteError",
    "DiskCache",
    "MemoryCache",
    "UnfingerprintableError",
    "code_dependencies",
    "code_identity",
    "fingerprint",
    "fingerprint_digest",
    "register_fingerprint",
]
