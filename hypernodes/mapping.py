"""Map items: zip/product expansion, per-item runs, results in input order.

Items are produced lazily from the input lists and consumed by at most ``width`` item
workers, so a map over a million items holds a million results and nothing else that
grows with the item count.
"""

from __future__ import annotations

import asyncio
import difflib
import itertools
import math
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from .errors import InvalidInputError, NodeError, PathFrame
from .executors.halting import Halt, Halted, InlineStop
from .level import Scope
from .plan import Plan
from .scheduler import cancel_requests, raise_first

if TYPE_CHECKING:
    from .pipeline import Pipeline

__all__ = ["Expansion", "expand", "map_plain", "run_items", "run_plain_items"]


@dataclass(frozen=True, slots=True)
class Expansion:
    """The items of a map.

    Attributes:
        names: The mapped input names.
        columns: The mapped input values, one sized iterable per name.
        count: How many items there are.
        shared: The inputs every item shares.
        mode: ``"zip"`` or ``"product"``.
    """

    names: tuple[str, ...]
    columns: tuple[Any, ...]
    count: int
    shared: dict[str, Any]
    mode: str

    def items(self) -> Iterator[tuple[Any, ...]]:
        """Each item's mapped values, in order (lazily)."""
        if self.mode == "product":
            return itertools.product(*self.columns)
        return zip(*self.columns, strict=False)

    def item_inputs(self, item: tuple[Any, ...]) -> dict[str, Any]:
        """The full inputs of one item."""
        values = dict(self.shared)
        values.update(zip(self.names, item, strict=True))
        return values


def normalize_map_over(map_over: str | Sequence[str]) -> tuple[str, ...]:
    """``map_over`` as a tuple of names.

    Raises:
        InvalidInputError: It is empty or not made of strings.
    """
    if isinstance(map_over, str):
        names: tuple[Any, ...] = (map_over,)
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
        inputs: All inputs; the mapped ones hold sized iterables (a mapped input absent
            from them maps over the pipeline's bound value).
        map_over: The mapped input name(s).
        map_mode: ``"zip"`` pairs the lists; ``"product"`` takes every combination.
        pipeline: The pipeline mapped: its inputs (and, as overrides, its outputs) may be
            mapped over.

    Raises:
        InvalidInputError: A bad mode, an unknown or missing mapped name, a value that is
            not a sized iterable, or zip lists of different lengths.
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
        columns.append(_sized(name, value))
    lengths = [len(c) for c in columns]
    if map_mode == "zip" and len(set(lengths)) > 1:
        listed = ", ".join(f"{n!r} has {k}" for n, k in zip(names, lengths, strict=True))
        raise InvalidInputError(
            f"map_over lists have different lengths: {listed} items; zip mode pairs them one "
            "to one (use map_mode='product' for every combination)"
        )
    count = math.prod(lengths) if map_mode == "product" else lengths[0]
    shared = {k: v for k, v in inputs.items() if k not in names}
    return Expansion(names, tuple(columns), count, shared, map_mode)


def _unknown(name: str, pipeline: Pipeline) -> str:
    """Did-you-mean and the inputs (required, optional, bound) that can be mapped over."""
    inputs = list(dict.fromkeys((*pipeline.inputs, *pipeline.optional_inputs, *pipeline.bound)))
    close = difflib.get_close_matches(name, inputs, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    listed = ", ".join(map(repr, inputs)) or "none"
    return f"{hint}; its inputs are {listed}"


def _sized(name: str, value: Any) -> Any:
    if isinstance(value, str | bytes | bytearray):
        raise InvalidInputError(
            f"map_over input {name!r} is a {type(value).__name__}; map over a list of "
            f"values, e.g. [{value!r}]"
        )
    if isinstance(value, Mapping):
        raise InvalidInputError(
            f"map_over input {name!r} is a mapping; map over a list (e.g. list(d.items()))"
        )
    if not (hasattr(value, "__len__") and hasattr(value, "__iter__")):
        raise InvalidInputError(
            f"map_over input {name!r} must be a sized iterable (list, tuple, range, array), "
            f"got {type(value).__name__}; pass list(...) of it"
        )
    return value


async def run_items(
    items: Iterator[tuple[Any, ...]],
    count: int,
    width: int,
    run_one: Callable[[int, tuple[Any, ...]], Awaitable[Any]],
    *,
    halt: Halt,
) -> list[Any]:
    """Run ``run_one(index, item)`` for every item, at most ``width`` at a time.

    Results come back in item order whatever the completion order. The first failing
    item cancels the others and ends the run (``halt``): no item starts after it; its
    ``NodeError`` is marked with the item index.

    Raises:
        NodeError: The first item that failed.
    """
    results: list[Any] = [None] * count
    numbered = enumerate(items)

    async def worker() -> None:
        index = -1
        try:
            for index, item in numbered:
                if halt.over:
                    await halt.halted()
                results[index] = await run_one(index, item)
        except NodeError as err:
            halt.set()
            err._mark_item(index)
            failures.append(err)
            raise
        except BaseException as exc:
            failures.append(exc)
            raise

    failures: list[BaseException] = []
    if width <= 1 or count <= 1:
        await worker()
        return results
    requests = cancel_requests()
    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(min(width, count) - 1):
                group.create_task(worker())
            await worker()
    except BaseExceptionGroup as group_error:
        raise_first(group_error, failures, requests)
    return results


# At most this many items of a plain map go to a worker thread in one hop.
_CHUNK = 512


async def map_plain(
    plan: Plan, exp: Expansion, base: dict[str, Any], scope: Scope, width: int
) -> list[dict[str, Any]]:
    """A map whose every node is a plain sync call: whole items in one synchronous loop.

    Inline on a loop HyperNodes owns; otherwise in chunks of items, each chunk one hop to a
    worker thread (``width`` chunks in flight), so the caller's loop is never blocked.
    """
    results: list[Any] = [None] * exp.count
    numbered = enumerate(exp.items())
    halt = scope.halt
    if scope.inline:
        # Nothing suspends between items here: a cancel (Ctrl-C) is only seen by checking.
        stop = halt.inline()
        try:
            run_plain_items(
                plan, exp.names, base, numbered, results, exp.count, scope.pipeline, stop
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
        args = (plan, names, base, iter(numbered), results, size, pipeline, halt)
        label = f"{pipeline}[items {numbered[0][0]}-{numbered[-1][0]}]"
        return scope.offload(run_plain_items, args, None, label)

    await run_items(((c,) for c in chunks), -(-exp.count // size), width, run_chunk, halt=halt)
    return results


def run_plain_items(
    plan: Plan,
    names: tuple[str, ...],
    base: dict[str, Any],
    numbered: Iterator[tuple[int, tuple[Any, ...]]],
    results: list[Any],
    limit: int,
    pipeline: str,
    stop: Halt | InlineStop | None = None,
) -> None:
    """Run up to ``limit`` items of a plain map in this thread, storing their results.

    With ``stop`` (the run's halt), a failure here ends the run, and no node starts once
    the run is over.

    Raises:
        NodeError: An item failed; the pipeline frame and item index are on its path.
        Halted: ``stop`` said the run is over before a node started (or after the last).
    """
    steps = plan.steps
    outputs = plan.outputs
    index = -1
    if stop is None:
        stop = Halt()  # (a map with no run around it: the loop-free path)
    # ``stop.over``, inlined for this loop (a property call per node costs 30%).
    halt, cancelling, asked = stop.probe()
    # The innermost loop of a map: the step loop is inlined, its parts looked up once.
    calls = tuple((s.call, s.out, s) for s in steps)
    single = names[0] if len(names) == 1 else None
    collect = itemgetter(*outputs) if len(outputs) > 1 else None
    only = outputs[0]
    try:
        for index, item in itertools.islice(numbered, limit):
            values = base.copy()
            if single is not None:
                values[single] = item[0]
            else:
                values.update(zip(names, item, strict=True))
            for call, out, step in calls:
                if halt.over or (cancelling is not None and cancelling() > asked):
                    raise Halted
                try:
                    result = call(values)
                except Exception as exc:  # (a NodeError from user code is wrapped too)
                    raise NodeError(step.name) from exc
                if out is not None:
                    values[out] = result
                else:
                    step.store(result, values)
            if collect is not None:
                results[index] = dict(zip(outputs, collect(values), strict=True))
            else:
                results[index] = {only: values[only]}
    except NodeError as err:
        stop.set()
        err._prepend(PathFrame(pipeline))
        err._mark_item(index)
        raise
    if stop.over:
        raise Halted
