"""How the command reports: exit codes, one-line errors on stderr, ``--traceback``.

Exit codes: 0 ok, 1 the pipeline failed (a node raised, or something unexpected), 2 a usage
or configuration error. Every error is one line, ``hypernodes: error: ...``, on stderr.
"""

from __future__ import annotations

import contextlib
import json
import sys
import traceback
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

import click

from ..errors import HyperNodesError, MissingInputError, NodeError

__all__ = [
    "EXIT_CODES_HELP",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "PROG",
    "ReportingGroup",
    "reporting",
    "say",
    "traceback_option",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
PROG = "hypernodes"

EXIT_CODES_HELP = """\b
Exit codes:
  0  success
  1  the pipeline failed (a node raised; --traceback shows where)
  2  usage or configuration error (bad option, JSON, YAML, TARGET, inputs)"""


class ReportingGroup(click.Group):
    """A group whose errors are one line on stderr, with the exit codes documented."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        code = EXIT_OK
        try:
            value = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            code = value if isinstance(value, int) else EXIT_OK
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else PROG
            say(f"error: {exc.format_message()} (see '{where} --help')")
            code = exc.exit_code
        except click.ClickException as exc:
            say(f"error: {exc.format_message()}")
            code = exc.exit_code
        except click.Abort:
            say("interrupted")
            code = 130
        if standalone_mode:
            sys.exit(code)
        return code


def say(message: str) -> None:
    click.echo(f"{PROG}: {message}", err=True)


@contextlib.contextmanager
def reporting(show_traceback: bool) -> Iterator[None]:
    """Turn errors into one line on stderr and the documented exit code."""
    try:
        yield
    except (click.ClickException, click.exceptions.Exit, click.Abort):
        raise
    except KeyboardInterrupt:
        raise click.Abort() from None
    except NodeError as exc:
        _fail(str(exc), EXIT_FAILED, exc, show_traceback)
    except MissingInputError as exc:
        _fail(_missing_message(exc), EXIT_USAGE, exc, show_traceback)
    except HyperNodesError as exc:
        _fail(str(exc), EXIT_USAGE, exc, show_traceback)
    except ImportError as exc:
        if (exc.name or "").startswith("hypernodes"):  # our own bug, not a missing extra
            _fail(f"unexpected {type(exc).__name__}: {exc}", EXIT_FAILED, exc, show_traceback)
        _fail(str(exc), EXIT_USAGE, exc, show_traceback)  # an optional extra is missing
    except Exception as exc:
        _fail(f"unexpected {type(exc).__name__}: {exc}", EXIT_FAILED, exc, show_traceback)


def _fail(message: str, code: int, exc: BaseException, show_traceback: bool) -> NoReturn:
    if show_traceback:
        traceback.print_exception(exc, file=sys.stderr)
    elif code == EXIT_FAILED:
        message += " (run with --traceback for the full trace)"
    say(f"error: {message}")
    raise click.exceptions.Exit(code)


def _missing_message(exc: MissingInputError) -> str:
    needed = ", ".join(
        f"{name!r} (needed by {', '.join(map(repr, nodes))})" for name, nodes in exc.missing.items()
    )
    example = json.dumps(dict.fromkeys(exc.missing, "..."))
    return f"missing inputs: {needed}; pass them with --inputs '{example}'"


traceback_option = click.option(
    "--traceback",
    "show_traceback",
    is_flag=True,
    help="On error, print the full Python traceback too.",
)
