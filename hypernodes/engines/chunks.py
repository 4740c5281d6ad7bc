"""Map items shipped in chunks: a plain remote map (no cache, no callbacks) sends many
items per task.

One task per item costs a round trip per item (pickling, the pool's queues, a sub-run
set up in the worker), far more than a trivial item. Here the items go in chunks, sized
as the map runs (``_Sizer``): the first tasks hold a 16th of a worker's share (one item
in small maps) and are timed in the worker, later ones as many as fit in
``TARGET_SECONDS``, at most half a worker's share (so the workers end close together;
a whole share when it takes a tenth of that target or less, ``WHOLE_SHARE``) and
``MAX_BYTES`` of pickled items. Each worker has one chunk at a time: a chunk is cut
when a worker frees, from the latest measurements. An executor whose calls are costly
(Dask: ``hypernodes_chunk_rounds``) has the rest planned when the first chunk is timed,
in rounds of one chunk per worker, each half of what is left (``_rounds``).

In the worker, a map whose items are calls of one plain node loops over the chunk's
columns and calls the node (``run_direct``); any other goes through the plain step loop
(``run_plain_items``) or a sub-run per item. What one task per item guaranteed still
holds, per item:

- nothing starts after the run is over: the worker checks the run's mark before every
  node of every item (read inline by the item loop, or the run's halt) and stops the
  chunk;
- a failing item stops its chunk, fails the map with its own ``NodeError`` and item
  index, and cancels the other chunks;
- a worker that dies names the item it was running (marked on the pool's board) and,
  for a pipeline of several nodes, the node (``Marker``).
"""

from __future__ import annotations

import itertools
import operator
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import NodeError, PathFrame, node_failed
from ..executors.halting import Halt, Halted, Ticket, check_enclosing, enclosing, new_halt
from ..executors.processes import item_marks
from ..executors.remote import Parcel, RemoteFailure, failed, reply, stuck_output
from ..executors.workers import in_flight
from ..inline import run_plain_items
from ..mapping import Expansion, run_items
from .worker import direct_call, marked, run_direct, worker_engine

if TYPE_CHECKING:
    from ..executors.workers import Lane
    from ..pipeline import Pipeline
    from ..scheduler import Plan, Scope, Step

__all__ = ["MAX_BYTES", "TARGET_SECONDS", "lost_in", "map_chunks", "run_shipped_chunk"]

TARGET_SECONDS = 0.05
"""How long a chunk should take in its worker, once items have been timed (an executor
whose calls cost more says how long instead: ``hypernodes_chunk_seconds``)."""
MAX_BYTES = 8 * 1024 * 1024
"""How many bytes of pickled items a chunk may hold (at least one item)."""
GROWTH = 16
"""How much bigger than the biggest chunk timed so far the next one may be."""
WHOLE_SHARE = 0.1
"""A worker's share of the items that takes at most this fraction of a chunk's target
goes in one chunk (see ``_Sizer``)."""


class _Sizer:
    """How many items the next chunk holds, from what the chunks so far measured.

    With ``rounds`` (an executor whose calls cost milliseconds of CPU each, such as
    Dask's: ``hypernodes_chunk_rounds``), the items not yet cut when the first chunk
    comes back are planned then, in rounds of one chunk per worker (``_rounds``): the
    first round holds half of them, each next one half of what is left, down to chunks
    of ``target`` seconds; the last round splits the rest evenly. Few calls (one a
    worker per halving), and the workers end together: what one worker runs ahead of
    another (a slower item, a busier core) the short last chunks even out, as one item
    per call would. ``target`` is then the shortest a chunk should run, not the longest;
    ``cap`` and ``MAX_BYTES`` still bound the biggest.
    """

    __slots__ = (
        "biggest",
        "cap",
        "count",
        "cut",
        "per_item",
        "plan",
        "rounds",
        "share",
        "size",
        "target",
        "workers",
    )

    def __init__(
        self, count: int, workers: int, target: float = TARGET_SECONDS, *, rounds: bool = False
    ) -> None:
        self.target = target
        self.share = max(1, -(-count // workers))
        self.count = count
        self.workers = workers
        self.rounds = rounds
        # Each chunk costs a round trip to the loop, during which its worker waits (one
        # chunk at a time each): a few chunks a worker, and the last ones end close enough.
        self.cap = max(1, -(-count // (2 * workers)))
        # Untimed, a chunk holds 1/16 of a worker's share: one item in maps of up to
        # 16 items a worker, few enough to time in any map (GROWTH reaches the cap).
        self.size = max(1, count // (16 * workers))
        self.biggest = 0
        self.cut = 0
        self.per_item: float | None = None
        self.plan: list[int] = []  # (rounds) the sizes of the chunks left to cut, last first

    def take(self) -> int:
        """The size of the next chunk, counted as cut."""
        size = self.plan.pop() if self.plan else self.size
        self.cut += size
        return size

    def measured(self, items: int, seconds: float, nbytes: int) -> None:
        self.biggest = max(self.biggest, items)
        per = seconds / items
        self.per_item = per if self.per_item is None else (self.per_item + per) / 2
        share = self.share
        if self.per_item * share <= WHOLE_SHARE * self.target:
            # Items this quick: the round trip a second chunk a worker costs (~1 ms on a
            # local pool, tens on a cluster, during which that worker idles) is more than
            # the time by which whole shares can end apart.
            self.cap = share
        by_time = int(self.target / max(self.per_item, 1e-7))
        by_bytes = MAX_BYTES * items // max(nbytes, 1)
        self.size = max(1, min(self.cap, by_time, by_bytes, GROWTH * self.biggest))
        if self.rounds and not self.plan and self.cut < self.count:
            most = max(1, min(self.cap, by_bytes))
            sizes = _rounds(self.count - self.cut, self.workers, min(max(1, by_time), most), most)
            self.plan = sizes[::-1]


def _rounds(left: int, workers: int, least: int, most: int) -> list[int]:
    """Chunk sizes for ``left`` items on ``workers``, in rounds of one chunk per worker:
    each round half of what is left (``least`` to ``most`` items a chunk), until a round
    can hold the rest, which it splits evenly (sizes at most one apart).

    Equal workers given the chunks in turn, each its next as it frees, end within one
    item of each other; there are about ``workers * log2(left / (workers * least))``
    chunks.
    """
    sizes: list[int] = []
    while left > 0:
        each = min(most, max(least, -(-left // (2 * workers))))
        if left <= workers * each:
            n = min(workers, left)
            small, bigger = divmod(left, n)
            return [*sizes, *[small + 1] * bigger, *[small] * (n - bigger)]
        sizes += [each] * workers
        left -= each * workers
    return sizes


async def map_chunks(
    pipeline: Pipeline,
    plan: Plan,
    exp: Expansion,
    scope: Scope,
    lane: Lane,
    bundle: Any,
) -> list[dict[str, Any]]:
    """Run a plain map's items in chunks on a remote lane; results in item order.

    A chunk travels as columns (one list of values per mapped input, sliced straight
    from list inputs) and comes back as columns (one list per output): no dict per item
    is pickled either way, and the result dicts are made here, once, after the last
    chunk is back: made as chunks arrive, they would hold this process's GIL while the
    pool's threads wait for it to send the next chunk to a worker (~1 ms a chunk of
    5,000 items, during which that worker idles).

    Raises:
        NodeError: The first item that failed (its index on its path), or a
            ``WorkerLostError`` for an item whose worker died.
    """
    assert exp.count is not None, "chunks need sized inputs"
    pieces: list[tuple[int, Sequence[list[Any]]]] = []
    target = getattr(lane.executor, "hypernodes_chunk_seconds", TARGET_SECONDS)
    rounds = bool(getattr(lane.executor, "hypernodes_chunk_rounds", False))
    sizer = _Sizer(exp.count, lane.width, target, rounds=rounds)
    steps = plan.steps
    outputs = plan.outputs

    async def run_chunk(start: int, columns: tuple[list[Any], ...]) -> None:
        parcel = _sealed(start, columns, pipeline, steps)
        stop = start + len(columns[0]) - 1
        try:
            answer = await lane.ship(
                run_shipped_chunk,
                bundle,
                exp.names,
                start,
                parcel,
                outputs,
                halt=scope.halt,
                budget=scope.budget,
                label=f"{pipeline.name}[items {start}-{stop}]",
            )
        except Exception as exc:  # the chunk never came back: its worker died, say
            item = getattr(exc.__cause__, "item", None)
            error = lost_in(exc, pipeline, steps)
            error._mark_item(start if item is None else item)
            raise error from error.__cause__
        value = answer.value
        if type(value) is RemoteFailure:
            value.reraise()  # (a NodeError carries its item index from the worker)
        got, seconds = value
        pieces.append((start, got))
        sizer.measured(len(got[0]), seconds, len(parcel.blob or b""))

    # (A chunk index never reaches an error: every NodeError has its item's by then.)
    chunks = _columns(exp, sizer)
    # (Each worker's next chunk waits on it where the executor allows: ``in_flight``.)
    await run_items(chunks, None, in_flight(lane), run_chunk, halt=scope.halt, numbered=True)
    return _dicts(outputs, pieces)


def _columns(exp: Expansion, sizer: _Sizer) -> Iterator[tuple[int, tuple[list[Any], ...]]]:
    """``(first item index, columns)`` of each chunk, cut as the chunks are shipped
    (``sizer.take()`` items): slices of list and tuple inputs (zip mode), else the items
    read in turn and turned into columns."""
    columns, count = exp.columns, exp.count
    assert count is not None
    if exp.mode == "zip" and all(type(c) in (list, tuple, range) for c in columns):
        start = 0
        while start < count:
            stop = min(count, start + sizer.take())
            yield start, tuple(c[start:stop] for c in columns)
            start = stop
        return
    items, start = exp.items(), 0
    while chunk := list(itertools.islice(items, sizer.take())):
        yield start, tuple(map(list, zip(*chunk, strict=True)))
        start += len(chunk)


def _dicts(
    outputs: tuple[str, ...], pieces: list[tuple[int, Sequence[list[Any]]]]
) -> list[dict[str, Any]]:
    """Each item's outputs dict, in item order, from the chunks' ``(first item index,
    output columns)`` (which cover the items once each, in any order)."""
    pieces.sort(key=operator.itemgetter(0))
    if len(outputs) == 1:
        only = outputs[0]
        return [{only: value} for _, columns in pieces for value in columns[0]]
    return [
        dict(zip(outputs, row, strict=True))
        for _, columns in pieces
        for row in zip(*columns, strict=True)
    ]


def _sealed(
    start: int, columns: tuple[list[Any], ...], pipeline: Pipeline, steps: Sequence[Step]
) -> Parcel:
    """The chunk's columns, pickled here, so that an item that cannot be is named.

    Raises:
        NodeError: An item cannot be pickled (marked with its index).
    """
    try:
        return Parcel(columns).seal()
    except Exception:
        for offset, item in enumerate(zip(*columns, strict=True)):
            try:
                Parcel(item).seal()
            except Exception as exc:
                error = lost_in(exc, pipeline, steps)
                error._mark_item(start + offset)
                raise error from exc
        raise


def lost_in(lost: Exception, pipeline: Pipeline, running: Sequence[Step]) -> NodeError:
    """The error of an item that never came back (its worker died, or it could not be
    shipped), naming the node its worker marked, else the nodes it was to run."""
    position = getattr(lost.__cause__, "position", 0)
    if 0 < position <= len(pipeline.nodes):
        name = pipeline.nodes[position - 1].name
    else:
        name = " or ".join(step.name for step in running)
    error = node_failed(name, lost)
    return error._prepend(PathFrame(pipeline.name))


# -- in the worker -----------------------------------------------------------------------


def _numbered(
    start: int,
    items: Iterator[tuple[Any, ...]],
    run: tuple[Sequence[int], int, int],
    board: tuple[Any, int],
) -> Iterator[tuple[int, tuple[Any, ...]]]:
    """The items with their map indices. Before each starts, the run's mark is read
    (``run``: ``(view, slot, serial)``, over once ``view[slot] == serial``; ``Halted``
    then) and the item is noted on the pool's board (``board``: ``(board, k)``), both
    inlined here: a call per item for either would cost more than a trivial item."""
    marks, slot, serial = run
    notes, at = board
    for index, item in enumerate(items, start):
        if marks[slot] == serial:
            raise Halted
        notes[at] = index + 1
        yield index, item


def run_shipped_chunk(
    bundle: Any,
    names: tuple[str, ...],
    start: int,
    columns: Parcel,
    outputs: tuple[str, ...],
) -> Parcel:
    """Run a chunk of a plain map's items, from item ``start``, in a worker.

    ``bundle`` is the shipped (or stored) ``(pipeline, shared inputs)`` pair; ``columns``
    holds the chunk's values of each mapped input. Items run in order; the run's mark is
    checked before every node (``Halted`` ends the chunk, which the caller of this task
    sees as ``Skipped``), and the first failure ends it.

    Returns:
        A parcel of ``(a list of values per output, seconds the items took)``, or of the
        ``RemoteFailure`` of the first failing item (a ``NodeError`` with its index).
    """
    pipe, shared = bundle.load()
    check_enclosing()  # loading may take long: the items start only now
    given: tuple[Any, ...] = columns.value
    count = len(given[0])
    plan = pipe.plan(list(outputs), (*shared, *names))
    notes = item_marks()
    items = zip(*given, strict=True)
    halt, run = _watch(len(plan.steps) == 1)
    numbered: Iterator[tuple[int, tuple[Any, ...]]]
    if notes is None and run is _NEVER:
        numbered = enumerate(items, start)
    else:
        numbered = _numbered(start, items, run, notes or ([0], 0))
    began = time.perf_counter()
    results: dict[int, Any] = {}
    try:
        base = {**plan.optional, **pipe.bound, **shared}
        direct = direct_call(plan, names, base, given) if type(halt) is Halt else None
        if direct is not None and not (notes and len(pipe.nodes) > 1):
            step, args = direct
            column = run_direct(step, args, start, run, notes or ([0], 0), pipe.name)
            seconds = time.perf_counter() - began
            return reply(
                ([column], seconds), lambda error: _stuck_column(pipe, step, start, column, error)
            )
        if plan.simple and not (notes and len(pipe.nodes) > 1):
            run_plain_items(plan, names, base, numbered, results, count, pipe.name, halt)
        else:  # item by item, with a Marker naming the node on the board if there is one
            each = marked(bundle, pipe) if notes else pipe
            _run_each(each, shared, names, numbered, outputs, results)
    except Exception as exc:
        return failed(exc)
    seconds = time.perf_counter() - began
    got = [list(map(operator.itemgetter(name), results.values())) for name in outputs]
    return reply((got, seconds), lambda error: _stuck(pipe, results, error))


_NEVER: tuple[Sequence[int], int, int] = ((0, 0), 1, -1)
"""A run's mark that never says the run is over."""


def _watch(one_step: bool) -> tuple[Halt, tuple[Sequence[int], int, int]]:
    """The halt a chunk's items run under, and the run's mark ``_numbered`` reads.

    With one step and the sending run's mark readable here, the mark is read before each
    item (that is before each node) and the items' own halt is a plain one; otherwise
    the halt follows the sending run (its mark read before every node, see ``halting``).
    """
    outer = enclosing()
    marks = outer.marks() if one_step and isinstance(outer, Ticket) else None
    if marks is None:
        return new_halt(), _NEVER
    assert isinstance(outer, Ticket)
    return Halt(), (*marks, outer.serial)


def _run_each(
    pipe: Any,
    shared: dict[str, Any],
    names: tuple[str, ...],
    numbered: Iterator[tuple[int, tuple[Any, ...]]],
    outputs: tuple[str, ...],
    results: dict[int, Any],
) -> None:
    from ..bridge import run_sync  # deferred, as in run_shipped_item

    engine = worker_engine()

    async def run_all() -> None:
        for index, item in numbered:
            check_enclosing()
            inputs = {**shared, **dict(zip(names, item, strict=True))}
            try:
                results[index] = await engine.arun(pipe, inputs, list(outputs))
            except NodeError as err:
                err._mark_item(index)
                raise

    run_sync(run_all())


def _stuck_column(
    pipe: Any, step: Step, start: int, column: list[Any], error: Exception
) -> BaseException:
    """``_stuck`` for the output column of ``run_direct``."""
    out = step.out
    assert out is not None
    return _stuck(pipe, {start + k: {out: v} for k, v in enumerate(column)}, error)


def _stuck(pipe: Any, results: dict[int, Any], error: Exception) -> BaseException:
    """The ``NodeError`` of the first item whose outputs cannot travel back."""
    for index, outputs in results.items():
        stuck = stuck_output(pipe, outputs, error, index)
        if stuck is not error:
            return stuck
    return error
