"""What a worker process runs for a map item shipped whole: the item's sub-run on a
sequential ``HyperNodesEngine`` of its own, recording its events for the orchestrator
to replay when asked, and marking on the pool's board which node runs; and, for a chunk
of items that are calls of one plain node, the loop that calls it (``run_direct``)."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import NodeError, PathFrame
from ..executors.depot import Stored
from ..executors.halting import Halted
from ..executors.processes import tracked
from ..executors.remote import Parcel, Shipped, failed, reply, stuck_output
from ..resources import for_workers
from .recording import Marker, Recorder

if TYPE_CHECKING:
    from ..scheduler import Plan, Step

__all__ = ["direct_call", "marked", "run_direct", "run_shipped_item", "worker_engine"]

_CACHE_LIMIT = 256


def run_shipped_item(
    bundle: Shipped | Stored,
    mapped: Parcel,
    output_name: tuple[str, ...] | None,
    observe: bool = False,
) -> Parcel:
    """Run one map item's whole sub-run in a worker.

    ``bundle`` is the shipped ``(pipeline, shared inputs)`` pair (or the handle of its
    copy stored on this machine), unpickled once per worker; ``mapped`` holds this item's own values (and any cached values the
    orchestrator already has). The sub-run is sequential inside the worker (nested maps
    too), so a worker never waits on another worker: the pool's size bounds the work, at
    any nesting depth.

    Returns:
        A parcel of the outputs dict; with ``observe``, of ``(outputs, records)`` where
        ``records`` are the node events to replay on the orchestrator (see ``Recorder``).
        Failures come back as a ``RemoteFailure``.
    """
    from ..bridge import run_sync  # deferred: only workers running an item need a loop

    pipe, shared = bundle.load()
    inputs = {**shared, **mapped.value}
    names = list(output_name) if output_name else None
    recorder = None
    if observe:
        recorder = Recorder()
        callbacks = [recorder, Marker(pipe)] if tracked() and len(pipe.nodes) > 1 else [recorder]
        pipe = pipe.stripped().with_callbacks(callbacks)
    elif tracked() and len(pipe.nodes) > 1:  # (with one node, there is nothing to mark)
        pipe = marked(bundle, pipe)
    try:
        outputs = run_sync(worker_engine().arun(pipe, inputs, names))
    except Exception as exc:
        return failed(exc, None if recorder is None else recorder.records)
    answer = outputs if recorder is None else (outputs, recorder.records)
    return reply(answer, functools.partial(stuck_output, pipe, outputs))


# Shipped pipelines with a ``Marker`` (see ``run_shipped_item``), by bundle digest.
_marked_pipelines: dict[bytes, Any] = {}


def marked(bundle: Shipped | Stored, pipe: Any) -> Any:
    """``pipe`` noting on the pool's board which of its nodes runs (made once per bundle)."""
    marked = _marked_pipelines.get(bundle.digest)
    if marked is None:
        marked = pipe.stripped().with_callbacks([Marker(pipe)])
        if len(_marked_pipelines) >= _CACHE_LIMIT:
            _marked_pipelines.pop(next(iter(_marked_pipelines)))
        _marked_pipelines[bundle.digest] = marked
    return marked


_engine: Any = None


def worker_engine() -> Any:
    """The sequential ``HyperNodesEngine`` that runs shipped sub-runs in this worker (every
    resource it meets is built once per worker process, see ``hypernodes.resources``)."""
    global _engine
    if _engine is None:
        from .hypernodes import HyperNodesEngine  # deferred: it imports this module

        # Its runs resolve every resource in this process's registry: a worker builds a
        # resource once, whatever its scope, and tears it down when it exits.
        _engine = for_workers(HyperNodesEngine())
    return _engine


def direct_call(
    plan: Plan, names: tuple[str, ...], base: dict[str, Any], given: tuple[list[Any], ...]
) -> tuple[Step, tuple[Any, ...]] | None:
    """The one step of a map whose items are calls of one plain node returning the map's
    one output, and its arguments (a column per input: the chunk's own for a mapped
    input, else the shared value repeated); ``None`` for any other map.

    Such a chunk needs no dict per item (see ``run_direct``)."""
    if len(plan.steps) != 1 or not plan.simple:
        return None
    step = plan.steps[0]
    if step.out is None or plan.outputs != (step.out,):
        return None
    mapped = dict(zip(names, given, strict=True))
    args: list[Any] = []
    for name in step.node.inputs:
        if name in mapped:
            args.append(mapped[name])
        elif name in base:
            args.append(itertools.repeat(base[name]))
        else:
            return None  # (the generic loop says what is missing)
    return step, tuple(args)


def run_direct(
    step: Step,
    args: tuple[Any, ...],
    start: int,
    run: tuple[Sequence[int], int, int],
    board: tuple[Any, int],
    pipeline: str,
) -> list[Any]:
    """The node called on each item of a chunk, from item ``start``: the output column.

    Before each item the run's mark is read (``Halted`` once the run is over) and the item
    is noted on the pool's board, inlined as in ``chunks._numbered``; nothing else is done per
    item (no inputs dict, no outputs dict): a tenth of a microsecond an item beyond the
    call, where the step loop of ``run_plain_items`` costs half a microsecond.

    Raises:
        NodeError: An item failed (the node's error as its cause, the item's index on it).
        Halted: The run is over.
    """
    fn = step.fn
    marks, slot, serial = run
    notes, at = board
    column: list[Any] = []
    append = column.append
    index = start
    try:
        if len(args) == 1:
            for index, value in enumerate(args[0], start):
                if marks[slot] == serial:
                    raise Halted
                notes[at] = index + 1
                append(fn(value))
        else:
            for index, values in enumerate(zip(*args, strict=False), start):  # (repeats)
                if marks[slot] == serial:
                    raise Halted
                notes[at] = index + 1
                append(fn(*values))
    except Exception as exc:  # (a NodeError from user code is wrapped too, as inline)
        error = NodeError(step.name)._prepend(PathFrame(pipeline))
        raise error._mark_item(index) from exc
    return column
