"""Caching: the Cache protocol, MemoryCache, DiskCache, keys and fingerprints."""

from __future__ import annotations

from .base import MISSING, Cache, CacheStats
from .disk import DiskCache
from .memory import MemoryCache

__all__ = ["MISSING", "Cache", "CacheStats", "DiskCache", "MemoryCache"]
