"""Engines: ``Engine`` (the interface), ``HyperNodesEngine`` and ``DaftEngine``.

``HyperNodesEngine`` (which needs asyncio) and ``DaftEngine`` (which needs the optional
``daft`` extra) are imported on first access, so defining pipelines stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import Engine

if TYPE_CHECKING:
    from .daft import DaftEngine
    from .hypernodes import HyperNodesEngine

__all__ = ["DaftEngine", "Engine", "HyperNodesEngine"]


def __getattr__(name: str) -> Any:
    if name == "HyperNodesEngine":
        from .hypernodes import HyperNodesEngine  # deferred: asyncio (see the docstring)

        return HyperNodesEngine
    if name == "DaftEngine":
        from .daft import DaftEngine  # deferred: the optional daft extra

        return DaftEngine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
