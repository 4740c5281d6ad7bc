"""How a run uses a cache store: keys per node, lookups and writes by the orchestrator."""

from __future__ import annotations

from typing import Any

__all__ = ["CacheRuntime"]


class CacheRuntime:
    """Placeholder until the cache lands: a run with no store has no runtime."""

    def __init__(self, store: Any) -> None:
        self.store = store

    @classmethod
    def create(cls, store: Any) -> CacheRuntime | None:
        """A runtime for ``store``, or ``None`` when there is no store."""
        return None if store is None else cls(store)

    async def lookup(self, step: Any, args: Any, values: Any, scope: Any) -> tuple[Any, Any]:
        return None, None

    async def save(self, step: Any, key: Any, result: Any, values: Any, scope: Any) -> None:
        return None
