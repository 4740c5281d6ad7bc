"""The ``hypernodes`` command line: ``main()``, importing click only when it runs.

Nothing in the library imports this package; the console script and
``python -m hypernodes`` do. The commands live in :mod:`hypernodes.cli.app`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> None:
    """Run the ``hypernodes`` command with ``argv`` (default: ``sys.argv[1:]``) and exit.

    Raises:
        SystemExit: Always, with the exit code: 0 ok, 1 the pipeline failed, 2 a usage or
            configuration error.
    """
    try:
        import click  # noqa: F401
    except ImportError:
        print(
            "hypernodes: error: the command line needs click and PyYAML: "
            "pip install 'hypernodes[cli]'",
            file=sys.stderr,
        )
        sys.exit(2)
    from .app import cli  # deferred: after the check above names the missing extra

    cli.main(args=list(argv) if argv is not None else None, prog_name="hypernodes")
