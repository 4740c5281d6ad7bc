"""Where a run keeps cache versions: the ``(VERSION, name)`` slots of its values dict.

Both the plan (which precomputes each step's slots) and the cache runtime (which fills
them) read ``VERSION`` from here, so neither imports the other. Nothing else belongs here.
"""

from __future__ import annotations

__all__ = ["VERSION"]

VERSION = "\x00version"
"""First element of the ``(VERSION, name)`` keys that hold cache versions in a values
dict (they can never clash with value names, and only outputs are ever collected)."""
