"""DaftEngine: run a pipeline as a Daft plan (extra ``hypernodes[daft]``).

Layout: ``program`` (a pipeline as row-wise ops), ``calls`` (the function run per row),
``frame`` (the Daft DataFrame; the only module importing ``daft``), ``rows`` (results,
errors and replayed events), ``cached`` (HyperNodes caches), ``engine`` (the engine).
"""

from __future__ import annotations

from .engine import DaftEngine
from .program import UnsupportedNodeError

__all__ = ["DaftEngine", "UnsupportedNodeError"]
