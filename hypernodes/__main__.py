"""``python -m hypernodes``: the command line (see :mod:`hypernodes.cli`)."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    main()
