"""Executors: ``AsyncExecutor``, the aliases, and adapters for Dask and Ray."""

from __future__ import annotations

from .async_executor import AsyncExecutor
from .workers import ALIASES

__all__ = ["ALIASES", "AsyncExecutor"]
