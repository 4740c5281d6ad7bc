"""MemoryCache (placeholder: being written)."""

from __future__ import annotations

from .base import Cache

__all__ = ["MemoryCache"]


class MemoryCache(Cache):  # type: ignore[misc]  # placeholder
    """Placeholder."""
