"""Executors: ``AsyncExecutor``, the aliases, and adapters for Dask and Ray.

``DaskExecutor`` and ``RayExecutor`` need their optional extras and are imported on first
access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .async_executor import AsyncExecutor
from .pools import ALIASES

if TYPE_CHECKING:
    from .dask import DaskExecutor
    from .ray import RayExecutor

__all__ = ["ALIASES", "AsyncExecutor", "DaskExecutor", "RayExecutor"]


def __getattr__(name: str) -> Any:
    if name == "DaskExecutor":
        from .dask import DaskExecutor  # deferred: the optional dask extra

        return DaskExecutor
    if name == "RayExecutor":
        from .ray import RayExecutor  # deferred: the optional ray extra

        return RayExecutor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
