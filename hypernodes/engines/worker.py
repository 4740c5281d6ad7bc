"""What a worker process runs for a map item shipped whole: the item's sub-run on a
sequential ``HyperNodesEngine`` of its own, recording its events for the orchestrator
to replay when asked, and marking on the pool's board which node runs."""

from __future__ import annotations

import functools
from typing import Any

from ..executors.depot import Stored
from ..executors.processes import tracked
from ..executors.remote import Parcel, Shipped, failed, reply, stuck_output
from ..resources import for_workers
from .recording import Marker, Recorder

__all__ = ["marked", "run_shipped_item", "worker_engine"]

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
