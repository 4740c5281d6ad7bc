"""The types of run and map arguments (``output_name``, ``map_mode``, ``on_error``), for
annotations anywhere in the kernel."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

__all__ = ["MapMode", "OnError", "OutputName"]

OutputName = str | Sequence[str] | None
MapMode = Literal["zip", "product"]
OnError = Literal["raise", "collect"]
