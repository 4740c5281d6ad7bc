"""Map items: zip/product expansion, per-item runs, results in input order.

Items are produced lazily from the input lists and consumed by at most ``width`` item
workers, so a map over a million items holds a million results and nothing else that
grows with the item count.
"""

from __future__ import annotations

import difflib
import inspect
import itertools
import math
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from .errors import InvalidInputError, NodeError
from .executors.halting import Halt, Halted
from .inline import Failed, iter_plain, run_plain_batch, run_plain_items
from .items import Source, stream_items
from .level import Scope
from .plan import Plan

if TYPE_CHECKING:
    from .pipeline import Pipeline

__all__ = [
    "Expansion",
    "Failed",
    "expand",
    "map_plain",
    "run_items",
    "stream_plain",
]


@dataclass(frozen=True, slots=True)
class Expansion:
    """The items of a map.

    Attributes:
        names: The mapped input names.
        columns: The mapped input values, one per name: sized iterables, or (zip mode)
            any iterable or async iterable, read lazily.
        count: How many items there are, or ``None`` when an input is not sized.
        shared: The inputs every item shares.
        mode: ``"zip"`` or ``"product"``.
    """

    names: tuple[str, ...]
    columns: tuple[Any, ...]
    count: int | None
    shared: dict[str, Any]
    mode: str
    is_async: bool = field(init=False)
    """Whether an input is an async iterable (items can only be read on a loop)."""

    def __post_init__(self) -> None:
        is_async = any(hasattr(c, "__aiter__") for c in self.columns)
        object.__setattr__(self, "is_async", is_async)

    def items(self) -> Iterator[tuple[Any, ...]]:
        """Each item's mapped values, in order (lazily; sync inputs only)."""
        if self.mode == "product":
            return itertools.product(*self.columns)
        if self.count is not None:
            return zip(*self.columns, strict=False)
        return _zip_lazy(self.names, [iter(c) for c in self.columns])

    def numbered(self) -> Source:
        """``(index, item)`` pairs, read lazily; closing it closes the inputs that are
        generators (sync or async)."""
        if self.is_async:
            return _numbered_async(self)
        return _numbered(self)

    def item_inputs(self, item: tuple[Any, ...]) -> dict[str, Any]:
        """The full inputs of one item."""
        values = dict(self.shared)
        values.update(zip(self.names, item, strict=True))
        return values

    def mapped(self, item: tuple[Any, ...]) -> dict[str, Any]:
        """One item's own (mapped) values, by name."""
        return dict(zip(self.names, item, strict=True))


def _numbered(exp: Expansion) -> Iterator[tuple[int, tuple[Any, ...]]]:
    try:
        yield from enumerate(exp.items())
    finally:
        for column in exp.columns:
            close = getattr(column, "close", None)
            if inspect.isgenerator(column) and callable(close):
                close()


async def _numbered_async(exp: Expansion) -> AsyncIterator[tuple[int, tuple[Any, ...]]]:
    readers = [c.__aiter__() if hasattr(c, "__aiter__") else iter(c) for c in exp.columns]
    index = 0
    try:
        while True:
            item = []
            for k, reader in enumerate(readers):
                try:
                    if hasattr(reader, "__anext__"):
                        item.append(await reader.__anext__())
                    else:
                        item.append(next(reader))
                except (StopIteration, StopAsyncIteration):
                    if k == 0 or len(readers) == 1:
                        _all_ended(exp.names, readers[1:], index)
                        return
                    raise _uneven(exp.names, exp.names[k], index) from None
            yield index, tuple(item)
            index += 1
    finally:
        for column in exp.columns:
            if inspect.isasyncgen(column):
                await column.aclose()
            elif inspect.isgenerator(column):
                column.close()


def _zip_lazy(names: tuple[str, ...], readers: list[Iterator[Any]]) -> Iterator[tuple[Any, ...]]:
    """``zip(*readers)`` that says which input ended early (zip mode pairs one to one)."""
    index = 0
    while True:
        item = []
        for k, reader in enumerate(readers):
            try:
                item.append(next(reader))
            except StopIteration:
                if k == 0:
                    _all_ended(names, readers[1:], index)
                    return
                raise _uneven(names, names[k], index) from None
        yield tuple(item)
        index += 1


def _all_ended(names: tuple[str, ...], others: list[Any], index: int) -> None:
    """The first input ended after ``index`` items: the others must end there too.

    Raises:
        InvalidInputError: Another (sync) input has more items.
    """
    for reader in others:
        if hasattr(reader, "__anext__"):
            continue  # (cannot be checked without awaiting; its extra items are ignored)
        if next(reader, _END) is not _END:
            raise _uneven(names, names[0], index)


_END = object()


def _uneven(names: tuple[str, ...], short: str, index: int) -> InvalidInputError:
    listed = ", ".join(map(repr, names))
    return InvalidInputError(
        f"map_over inputs {listed} have different lengths: {short!r} ended after {index} "
        "items; zip mode pairs them one to one (use map_mode='product' for every "
        "combination)"
    )


def normalize_map_over(map_over: str | Sequence[str]) -> tuple[str, ...]:
    """``map_over`` as a tuple of names.

    Raises:
        InvalidInputError: It is empty or not made of strings.
    """
    if isinstance(map_over, str):
        names: tuple[Any, ...] = (map_over,)
    elif type(map_over) is tuple:  # (checked below; no ABC check for the common case)
        names = map_over
    elif isinstance(map_over, Iterable) and not isinstance(map_over, bytes | Mapping):
        names = tuple(map_over)
    else:
        names = ()
    if not names or not all(isinstance(n, str) for n in names):
        raise InvalidInputError(
            f"map_over must name one or more inputs (a str or a list of str), got {map_over!r}"
        )
    if len(set(names)) != len(names):
        raise InvalidInputError(f"map_over names an input twice: {names!r}")
    return names


def expand(
    inputs: Mapping[str, Any],
    map_over: str | Sequence[str],
    map_mode: str,
    *,
    pipeline: Pipeline,
) -> Expansion:
    """Validate a map's arguments and describe its items.

    Args:
        inputs: All inputs; the mapped ones hold iterables (sized ones, or in zip mode
            any iterable or async iterable, read lazily); a mapped input absent from them
            maps over the pipeline's bound value.
        map_over: The mapped input name(s).
        map_mode: ``"zip"`` pairs the lists; ``"product"`` takes every combination.
        pipeline: The pipeline mapped: its inputs (and, as overrides, its outputs) may be
            mapped over.

    Raises:
        InvalidInputError: A bad mode, an unknown or missing mapped name, a value that is
            not an iterable (or not sized in product mode), or zip lists of different
            lengths.
    """
    if map_mode not in ("zip", "product"):
        raise InvalidInputError(f"map_mode must be 'zip' or 'product', got {map_mode!r}")
    names = normalize_map_over(map_over)
    known = pipeline.known_names
    columns = []
    for name in names:
        if name not in known:
            raise InvalidInputError(
                f"map_over names {name!r}, which is not an input of pipeline "
                f"{pipeline.name!r}{_unknown(name, pipeline)}"
            )
        if name in inputs:
            value = inputs[name]
        elif name in pipeline.bound:  # a bound list is mapped over too (inputs= win)
            value = pipeline.bound[name]
        else:
            raise InvalidInputError(
                f"map_over names {name!r} but inputs= has no value for it; pass a list: "
                f"inputs={{{name!r}: [...]}} (or bind one: pipeline.bind({name}=[...]))"
            )
        columns.append(_checked(name, value, lazy_ok=map_mode == "zip"))
    sized = [c for c in columns if _is_sized(c)]
    lengths = [len(c) for c in sized]
    if map_mode == "zip" and len(set(lengths)) > 1:
        listed = ", ".join(
            f"{n!r} has {len(c)}" for n, c in zip(names, columns, strict=True) if _is_sized(c)
        )
        raise InvalidInputError(
            f"map_over lists have different lengths: {listed} items; zip mode pairs them one "
            "to one (use map_mode='product' for every combination)"
        )
    count: int | None
    if map_mode == "product":
        count = math.prod(lengths)
    else:
        count = lengths[0] if len(sized) == len(columns) else None
    shared = {k: v for k, v in inputs.items() if k not in names}
    return Expansion(names, tuple(columns), count, shared, map_mode)


def _unknown(name: str, pipeline: Pipeline) -> str:
    """Did-you-mean and the inputs (required, optional, bound) that can be mapped over."""
    inputs = list(dict.fromkeys((*pipeline.inputs, *pipeline.optional_inputs, *pipeline.bound)))
    close = difflib.get_close_matches(name, inputs, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    listed = ", ".join(map(repr, inputs)) or "none"
    return f"{hint}; its inputs are {listed}"


_PLAIN = frozenset({list, tuple, range})
"""Sized, iterable, neither text nor a mapping: mapped over as they are."""


def _is_sized(value: Any) -> bool:
    return hasattr(value, "__len__") and hasattr(value, "__iter__")


def _checked(name: str, value: Any, *, lazy_ok: bool) -> Any:
    if type(value) in _PLAIN:
        return value
    if isinstance(value, str | bytes | bytearray):
        raise InvalidInputError(
            f"map_over input {name!r} is a {type(value).__name__}; map over a list of "
            f"values, e.g. [{value!r}]"
        )
    if isinstance(value, Mapping):
        raise InvalidInputError(
            f"map_over input {name!r} is a mapping; map over a list (e.g. list(d.items()))"
        )
    if _is_sized(value):
        return value
    if lazy_ok and (hasattr(value, "__iter__") or hasattr(value, "__aiter__")):
        return value  # read lazily, item by item
    if hasattr(value, "__iter__") or hasattr(value, "__aiter__"):
        raise InvalidInputError(
            f"map_over input {name!r} is a {type(value).__name__} without a length; "
            "map_mode='product' needs sized inputs (list, tuple, range, array): pass "
            "list(...) of it, or use zip mode"
        )
    raise InvalidInputError(
        f"map_over input {name!r} must be an iterable (list, tuple, range, array, "
        f"generator, async iterable), got {type(value).__name__}"
    )


async def run_items(
    items: Iterator[tuple[Any, ...]] | Source,
    count: int | None,
    width: int,
    run_one: Callable[[int, Any], Awaitable[Any]],
    *,
    halt: Halt,
    collect: Callable[[int, Any, NodeError], Any] | None = None,
    numbered: bool = False,
) -> list[Any]:
    """Run ``run_one(index, item)`` for every item, at most ``width`` at a time, and
    collect the outcomes in item order (see ``items.stream_items``).

    ``items`` are the items (``numbered``: ``(index, item)`` pairs already); ``count``
    sizes the result when known.

    Raises:
        NodeError: The first item that failed (without ``collect``); it cancels the others
            and ends the run (``halt``), marked with its item index.
    """
    source = cast(Source, items if numbered else enumerate(cast(Iterator[Any], items)))
    results: list[Any] = [None] * count if count is not None else []
    async for index, outcome in stream_items(source, width, run_one, halt=halt, collect=collect):
        if index >= len(results):
            results.extend([None] * (index + 1 - len(results)))
        results[index] = outcome
    return results


# At most this many items of a plain map go to a worker thread in one hop.
_CHUNK = 512


async def map_plain(
    plan: Plan,
    exp: Expansion,
    base: dict[str, Any],
    scope: Scope,
    width: int,
    failed: Failed | None = None,
) -> list[dict[str, Any]]:
    """A map whose every node is a plain sync call: whole items in one synchronous loop
    (sized inputs; see ``stream_plain`` for the others).

    Inline on a loop HyperNodes owns; otherwise in chunks of items, each chunk one hop to a
    worker thread (``width`` chunks in flight), so the caller's loop is never blocked.
    ``failed`` makes a failed item's outcome (``on_error="collect"``).
    """
    assert exp.count is not None
    results: list[Any] = [None] * exp.count
    numbered = enumerate(exp.items())
    halt = scope.halt
    if scope.inline:
        # Nothing suspends between items here: a cancel (Ctrl-C) is only seen by checking.
        stop = halt.inline()
        try:
            run_plain_items(
                plan, exp.names, base, numbered, results, exp.count, scope.pipeline, stop, failed
            )
        except Halted:
            await halt.halted()
        return results
    # Chunks of items are the units of work; the iterator is only advanced on the loop.
    # Small chunks keep every worker busy (16 blocking items on 8 threads: 1 per hop);
    # big ones amortise the hop when items are trivial.
    size = max(1, min(_CHUNK, exp.count // (8 * width)))
    chunks = iter(lambda: list(itertools.islice(numbered, size)), [])
    names, pipeline = exp.names, scope.pipeline

    # The run's halt is set by the first failure (in its worker thread) or when the run
    # ends: the chunks still running in other threads stop before their next node.
    def run_chunk(index: int, chunk: tuple[Any, ...]) -> Awaitable[Any]:
        numbered = chunk[0]
        args = (plan, names, base, iter(numbered), results, size, pipeline, halt, failed)
        label = f"{pipeline}[items {numbered[0][0]}-{numbered[-1][0]}]"
        return scope.offload(run_plain_items, args, None, label)

    await run_items(((c,) for c in chunks), -(-exp.count // size), width, run_chunk, halt=halt)
    return results


async def stream_plain(
    plan: Plan,
    exp: Expansion,
    base: dict[str, Any],
    scope: Scope,
    width: int,
    *,
    failed: Failed | None = None,
    window: int | None = None,
) -> AsyncGenerator[tuple[int, Any], None]:
    """``map_plain`` as a stream of ``(index, result)`` pairs (any sync input, read
    lazily): inline in batches, or batches offloaded one hop each (``width`` in flight)."""
    halt = scope.halt
    names, pipeline = exp.names, scope.pipeline
    numbered = exp.numbered()
    assert isinstance(numbered, Iterator)
    try:
        if scope.inline:
            batch = max(1, min(window or _CHUNK, _CHUNK))
            stop = halt.inline()
            try:
                for pairs in iter_plain(plan, names, base, numbered, pipeline, stop, batch, failed):
                    for pair in pairs:
                        yield pair
            except Halted:
                await halt.halted()
            return
        batch = max(1, min(_CHUNK, (window or 16 * width * _CHUNK) // (2 * width)))
        chunks = iter(lambda: list(itertools.islice(numbered, batch)), [])

        def run_chunk(index: int, chunk: list[tuple[int, Any]]) -> Awaitable[Any]:
            args = (plan, names, base, chunk, pipeline, halt, failed)
            label = f"{pipeline}[items {chunk[0][0]}-{chunk[-1][0]}]"
            return scope.offload(run_plain_batch, args, None, label)

        ahead = max(1, window // batch) if window else None  # (chunks read, not consumed)
        chunked = stream_items(
            enumerate(chunks), width, run_chunk, halt=halt, window=ahead, ordered=True
        )
        async for _, pairs in chunked:
            for pair in pairs:
                yield pair
    finally:
        numbered.close()  # type: ignore[attr-defined]
