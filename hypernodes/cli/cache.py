"""``hypernodes cache stats | ls | clear | prune PATH``: look into a DiskCache directory
and clean it, without unpickling anything (so without its secret)."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import click

from ..cache import DiskCache, EntryInfo
from .reporting import EXIT_CODES_HELP, reporting, say, traceback_option

__all__ = ["cache_group", "parse_age"]

_AGE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_age(text: str) -> float:
    """``"7d"``, ``"12h"``, ``"30m"``, ``"90s"`` (or ``"1.5h"``) as seconds.

    Raises:
        ValueError: Any other text, or zero.
    """
    match = _AGE.fullmatch(text)
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(
            f"{text!r} is not an age: a positive number and a unit, s, m, h or d (e.g. 7d, 12h)"
        )
    return float(match.group(1)) * _UNITS[match.group(2)]


class _Age(click.ParamType):  # type: ignore[type-arg]
    name = "AGE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, float):
            return value
        try:
            return parse_age(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


_EXAMPLES = (
    """\b
Examples:
  hypernodes cache stats .cache
  hypernodes cache ls .cache --node load_config --json
  hypernodes cache prune .cache --older-than 7d
  hypernodes cache clear .cache --node train

\b
PATH is a DiskCache directory. Entries are listed and removed without being read, so
no secret is needed. --node needs entries written by a HyperNodes that records it
(entries kept as files, layout="files", do not).

"""
    + EXIT_CODES_HELP
)

_path = click.argument("path", type=click.Path(file_okay=False, path_type=str))
_node = click.option("--node", metavar="NAME", help="Only the entries of this node.")
_older = click.option(
    "--older-than",
    "older_than",
    type=_Age(),
    metavar="AGE",
    help="Only the entries written longer ago than AGE (units s, m, h, d: 90s, 30m, 12h, 7d).",
)
_json = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")


@click.group("cache", epilog=_EXAMPLES)
def cache_group() -> None:
    """Show and clean a DiskCache directory: stats, ls, clear, prune."""


@contextmanager
def _store(path: str, show_traceback: bool) -> Iterator[DiskCache]:
    with reporting(show_traceback):
        if not os.path.isdir(path):
            raise click.BadParameter(f"no cache directory at {path}", param_hint="'PATH'")
        try:
            yield DiskCache(path)
        except ValueError as exc:  # e.g. --node for entries kept as files
            raise click.UsageError(str(exc)) from None


def _select(
    store: DiskCache, node: str | None, older_than: float | None
) -> tuple[list[EntryInfo], float]:
    now = time.time()
    entries = store.entries(node=node)
    if older_than is not None:
        entries = [e for e in entries if e.written < now - older_than]
    return entries, now


def _when(stamp: float | None) -> str | None:
    if stamp is None:
        return None
    return datetime.fromtimestamp(stamp, UTC).isoformat(timespec="seconds")


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # pragma: no cover


def _age(seconds: float) -> str:
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= length:
            return f"{seconds / length:.1f}{unit}"
    return f"{max(seconds, 0):.0f}s"


@cache_group.command("stats", epilog=_EXAMPLES)
@_path
@_node
@_older
@_json
@traceback_option
def stats_command(
    path: str, node: str | None, older_than: float | None, as_json: bool, show_traceback: bool
) -> None:
    """How many entries the cache at PATH holds, their size and age, per node."""
    with _store(path, show_traceback) as store:
        entries, now = _select(store, node, older_than)
    nodes: dict[str, dict[str, int]] = {}
    for e in entries:
        per = nodes.setdefault(e.node if e.node is not None else "", {"entries": 0, "bytes": 0})
        per["entries"] += 1
        per["bytes"] += e.size
    oldest = min((e.written for e in entries), default=None)
    newest = max((e.written for e in entries), default=None)
    total = sum(e.size for e in entries)
    if as_json:
        document = {
            "path": os.path.abspath(path),
            "entries": len(entries),
            "bytes": total,
            "oldest": _when(oldest),
            "newest": _when(newest),
            "nodes": [{"node": name or None, **per} for name, per in sorted(nodes.items())],
        }
        click.echo(json.dumps(document, indent=2))
        return
    click.echo(f"{os.path.abspath(path)}: {len(entries)} entries, {_size(total)}")
    if oldest is not None and newest is not None:
        click.echo(f"oldest written {_age(now - oldest)} ago, newest {_age(now - newest)} ago")
    width = max((len(name) for name in nodes), default=0)
    for name, per in sorted(nodes.items()):
        label = name or "(node not recorded)"
        click.echo(
            f"  {label:<{max(width, 19)}}  {per['entries']:>7} entries  {_size(per['bytes']):>10}"
        )


@cache_group.command("ls", epilog=_EXAMPLES)
@_path
@_node
@_older
@_json
@traceback_option
def ls_command(
    path: str, node: str | None, older_than: float | None, as_json: bool, show_traceback: bool
) -> None:
    """List the entries of the cache at PATH, oldest first."""
    with _store(path, show_traceback) as store:
        entries, now = _select(store, node, older_than)
    if as_json:
        rows = [
            {
                "key": e.key,
                "node": e.node,
                "bytes": e.size,
                "written": _when(e.written),
                "used": _when(e.used),
                "file": e.file,
            }
            for e in entries
        ]
        click.echo(json.dumps(rows, indent=2))
        return
    for e in entries:
        used = "" if e.used is None else f"  used {_age(now - e.used)} ago"
        click.echo(
            f"{e.key}  {e.node or '-'}  {_size(e.size)}  written {_age(now - e.written)} ago{used}"
        )


@cache_group.command("clear", epilog=_EXAMPLES)
@_path
@_node
@_older
@traceback_option
def clear_command(
    path: str, node: str | None, older_than: float | None, show_traceback: bool
) -> None:
    """Remove every entry of the cache at PATH (with --node or --older-than, those only)."""
    with _store(path, show_traceback) as store:
        if node is None and older_than is None:
            count = len(store.entries())
            store.clear()
        else:
            count = store.prune(older_than=older_than, node=node)
    say(f"removed {count} {'entry' if count == 1 else 'entries'} from {path}")


@cache_group.command("prune", epilog=_EXAMPLES)
@_path
@_node
@_older
@traceback_option
def prune_command(
    path: str, node: str | None, older_than: float | None, show_traceback: bool
) -> None:
    """Remove the entries of the cache at PATH written longer ago than --older-than
    and/or those of --node."""
    if node is None and older_than is None:
        raise click.UsageError("prune needs --older-than AGE or --node NAME (or both)")
    with _store(path, show_traceback) as store:
        count = store.prune(older_than=older_than, node=node)
    say(f"removed {count} {'entry' if count == 1 else 'entries'} from {path}")
