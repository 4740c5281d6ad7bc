"""What crosses a process boundary: cloudpickled callables and whole map-item sub-runs.

The functions here are importable top-level functions, so any executor that pickles its
tasks (process pools, loky, Dask, Ray) can ship them. Callables are cloudpickled once and
unpickled once per worker process (cached by digest), so closures, lambdas and functions
defined in ``__main__`` or a notebook work under the spawn start method.
"""

from __future__ import annotations

import hashlib
import io
import threading
import types
from collections.abc import Callable
from typing import Any, NoReturn

import cloudpickle

from .processes import tracked
from .worker_tracebacks import Part, capture, remember, render

__all__ = [
    "RemoteFailure",
    "Shipped",
    "call_shipped",
    "run_shipped_item",
    "unwrap",
    "worker_engine",
]

_CACHE_LIMIT = 256
_loaded: dict[bytes, Any] = {}
_loaded_lock = threading.Lock()


class Shipped:
    """A cloudpickled object with a digest, unpickled at most once per worker process."""

    __slots__ = ("blob", "digest")

    def __init__(self, obj: object) -> None:
        self.blob = dumps(obj)
        self.digest = hashlib.blake2b(self.blob, digest_size=16).digest()

    def load(self) -> Any:
        """The original object (cached in this process by digest)."""
        with _loaded_lock:
            obj = _loaded.get(self.digest)
        if obj is None:
            obj = cloudpickle.loads(self.blob)
            with _loaded_lock:
                if len(_loaded) >= _CACHE_LIMIT:
                    _loaded.pop(next(iter(_loaded)))
                _loaded[self.digest] = obj
        return obj

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_shipped, (self.blob, self.digest))


def _rebuild_shipped(blob: bytes, digest: bytes) -> Shipped:
    shipped = Shipped.__new__(Shipped)
    shipped.blob = blob
    shipped.digest = digest
    return shipped


class _Pickler(cloudpickle.Pickler):  # type: ignore[misc]  # cloudpickle is untyped
    """cloudpickle, remembering where each code object it ships by value came from."""

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is types.CodeType:
            remember(obj)  # so that worker tracebacks name the user's file and line
        return super().reducer_override(obj)


def dumps(obj: object) -> bytes:
    """``cloudpickle.dumps(obj)``, noting the origin of the code it carries (see
    ``worker_tracebacks``)."""
    with io.BytesIO() as file:
        _Pickler(file).dump(obj)
        return file.getvalue()


class RemoteFailure:
    """An exception raised in a worker, sent back as a value.

    Executors that re-raise worker exceptions themselves may rewrite them (the standard
    process pool replaces ``__cause__`` with its traceback text), which would lose the
    user's exception behind a ``NodeError``. Returned as a value, it arrives intact; the
    worker's traceback travels as data and is rendered here, with the user's files and
    source lines (see ``worker_tracebacks``), as a note.
    """

    __slots__ = ("error", "records", "trace")

    def __init__(self, error: BaseException, records: list[Any] | None = None) -> None:
        self.error = error
        self.records = records
        self.trace: tuple[Part, ...] = capture(error)

    def reraise(self) -> NoReturn:
        """Raise the worker's exception here, with the worker's traceback as a note."""
        self.error.add_note(f"Traceback in the worker:\n{render(self.trace).rstrip()}")
        raise self.error


def call_shipped(fn: Shipped, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Run a shipped sync callable in a worker (failures come back as ``RemoteFailure``)."""
    func: Callable[..., Any] = fn.load()
    try:
        return func(*args, **kwargs)
    except Exception as exc:
        return RemoteFailure(exc)


def unwrap(result: Any) -> Any:
    """A worker's result, re-raising a ``RemoteFailure``."""
    if type(result) is RemoteFailure:
        result.reraise()
    return result


def run_shipped_item(
    bundle: Shipped,
    mapped: dict[str, Any],
    output_name: tuple[str, ...] | None,
    observe: bool = False,
) -> Any:
    """Run one map item's whole sub-run in a worker.

    ``bundle`` is the shipped ``(pipeline, shared inputs)`` pair, unpickled once per
    worker; ``mapped`` holds this item's own values (and any cached values the
    orchestrator already has). The sub-run is sequential inside the worker (nested maps
    too), so a worker never waits on another worker: the pool's size bounds the work, at
    any nesting depth.

    Returns:
        The outputs dict; with ``observe``, ``(outputs, records)`` where ``records`` are
        the node events to replay on the orchestrator (see ``Recorder``). Failures come
        back as a ``RemoteFailure``.
    """
    from ..bridge import run_sync

    pipe, shared = bundle.load()
    inputs = {**shared, **mapped}
    names = list(output_name) if output_name else None
    recorder = None
    if observe:
        from ..engines.shipping import Marker, Recorder  # deferred: engines import us

        recorder = Recorder()
        callbacks = [recorder, Marker(pipe)] if tracked() else [recorder]
        pipe = pipe.stripped().with_callbacks(callbacks)
    elif tracked():
        pipe = _marked(bundle, pipe)
    try:
        outputs = run_sync(worker_engine().arun(pipe, inputs, names))
    except Exception as exc:
        if recorder is not None:
            return RemoteFailure(exc, recorder.records)
        return RemoteFailure(exc)
    return outputs if recorder is None else (outputs, recorder.records)


# Shipped pipelines with a ``Marker`` (see ``run_shipped_item``), by bundle digest.
_marked_pipelines: dict[bytes, Any] = {}


def _marked(bundle: Shipped, pipe: Any) -> Any:
    """``pipe`` noting on the pool's board which of its nodes runs (made once per bundle)."""
    marked = _marked_pipelines.get(bundle.digest)
    if marked is None:
        from ..engines.shipping import Marker  # deferred: engines import us

        marked = pipe.stripped().with_callbacks([Marker(pipe)])
        if len(_marked_pipelines) >= _CACHE_LIMIT:
            _marked_pipelines.pop(next(iter(_marked_pipelines)))
        _marked_pipelines[bundle.digest] = marked
    return marked


_engine: Any = None


def worker_engine() -> Any:
    """The sequential ``HyperNodesEngine`` that runs shipped sub-runs in this worker."""
    global _engine
    if _engine is None:
        from ..engines.hypernodes import HyperNodesEngine

        _engine = HyperNodesEngine()
    return _engine
