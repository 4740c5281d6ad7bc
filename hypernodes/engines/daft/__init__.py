"""DaftEngine: run a pipeline as a Daft plan (extra ``hypernodes[daft]``).

Importing this package imports ``daft`` (a missing extra fails here, with the
``pip install`` line); ``import hypernodes`` and ``import hypernodes.engines`` never do.

Layout: ``program`` (a pipeline as row-wise ops), ``calls`` (the function run per row),
``frame`` (the Daft DataFrame; the only module using ``daft``), ``rows`` (results,
errors and replayed events), ``cached`` (HyperNodes caches), ``engine`` (the engine).
"""

from __future__ import annotations

from .frame import import_daft

import_daft()

from .engine import DaftEngine  # noqa: E402
from .program import UnsupportedNodeError  # noqa: E402

__all__ = ["DaftEngine", "UnsupportedNodeError"]
