"""Engines: ``Engine`` (the interface), ``HyperNodesEngine`` and ``DaftEngine``."""

from __future__ import annotations

from typing import Any

from .base import Engine
from .hypernodes import HyperNodesEngine

__all__ = ["DaftEngine", "Engine", "HyperNodesEngine"]


def __getattr__(name: str) -> Any:
    # DaftEngine needs the optional `daft` extra: import it only when asked for.
    if name == "DaftEngine":
        from .daft import DaftEngine

        return DaftEngine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
