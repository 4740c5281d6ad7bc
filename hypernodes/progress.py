"""ProgressCallback (placeholder: being written)."""

from __future__ import annotations

from .callbacks import PipelineCallback

__all__ = ["ProgressCallback"]


class ProgressCallback(PipelineCallback):
    """Placeholder."""
