"""DiskCache (placeholder: being written)."""

from __future__ import annotations

from .base import Cache

__all__ = ["DiskCache"]


class DiskCache(Cache):  # type: ignore[misc]  # placeholder
    """Placeholder."""
