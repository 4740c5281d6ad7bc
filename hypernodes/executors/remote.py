"""What crosses a process boundary: cloudpickled callables, their arguments and replies.

(What a worker runs for a whole shipped map item is engine code: ``engines/worker.py``.)

The functions here are importable top-level functions, so any executor that pickles its
tasks (process pools, loky, Dask, Ray) can ship them. Callables are cloudpickled once and
unpickled once per worker process (cached by digest), so closures, lambdas and functions
defined in ``__main__`` or a notebook work under the spawn start method.
"""

from __future__ import annotations

import functools
import hashlib
import io
import types
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import cloudpickle

from ..errors import NodeError, PathFrame
from .depot import cached, keep
from .halting import check_enclosing
from .worker_tracebacks import Part, capture, remember, render

__all__ = [
    "Parcel",
    "RemoteFailure",
    "Shipped",
    "call_shipped",
    "failed",
    "reply",
    "stuck_output",
    "unwrap",
]

_CACHE_LIMIT = 256


class Shipped:
    """A cloudpickled object with a digest, unpickled at most once per worker process.

    A pool that can leave it once on the machine for its workers (a ``ProcessPool``, see
    ``depot``) sends a ``Stored`` handle in its place, which loads the same way.
    """

    __slots__ = ("blob", "digest")

    def __init__(self, obj: object) -> None:
        self.blob = dumps(obj)
        self.digest = hashlib.blake2b(self.blob, digest_size=16).digest()

    def load(self) -> Any:
        """The original object (cached in this process by digest)."""
        obj = cached(self.digest)
        if obj is None:
            obj = cloudpickle.loads(self.blob)
            keep(self.digest, obj, len(self.blob))
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


class Parcel:
    """A value crossing a process boundary cloudpickled, in either direction.

    Classes defined in ``__main__`` (a script, a notebook) then travel by value, and come
    back as the very classes they left as: cloudpickle tracks the classes it ships by
    value, so a script's dataclass returned by a node, or its exception raised by one, is
    the script's own class again here (the standard pickle would look the class up in the
    worker's ``__main__``, where it is another object or missing). Where nothing pickles
    it (an in-process executor), a parcel is just a box.
    """

    __slots__ = ("blob", "value")

    def __init__(self, value: Any) -> None:
        self.value = value
        self.blob: bytes | None = None

    def seal(self) -> Parcel:
        """Pickle the value now, so that a failure to pickle it is raised here.

        Raises:
            Exception: Whatever cloudpickle raises for a value it cannot pickle.
        """
        self.blob = dumps(self.value)
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        blob = self.blob if self.blob is not None else dumps(self.value)
        return (_open_parcel, (blob,))


def _open_parcel(blob: bytes) -> Parcel:
    return Parcel(cloudpickle.loads(blob))


def reply(result: Any, explain: Callable[[Exception], BaseException]) -> Parcel:
    """A worker's result, sealed for the way back; a failure to pickle it is a failure,
    the error ``explain`` makes of it."""
    try:
        return Parcel(result).seal()
    except Exception as exc:
        return failed(explain(exc))


def _stuck(value: Any, error: Exception) -> TypeError:
    """Why a node's result cannot travel back from the worker, and what to do instead."""
    kind = type(value).__qualname__
    if isinstance(value, Iterator):
        fix = f"return a list instead (list(...) of the {kind})"
    else:
        fix = "return a value that pickles (no locks, open files, connections or generators)"
    # (The pickling error is named in the message: an exception's __cause__ does not
    # travel.)
    return TypeError(
        f"the node returned a {kind}, which cannot travel back from the worker process: "
        f"it cannot be pickled ({type(error).__name__}: {error}); {fix}"
    )


def stuck_output(
    pipe: Any, outputs: dict[str, Any], error: Exception, item: int | None = None
) -> BaseException:
    """The ``NodeError`` of the node whose output in ``outputs`` cannot be pickled (else
    ``error`` itself); ``item``: the map item whose outputs they are."""
    for name, value in outputs.items():
        try:
            dumps(value)
        except Exception as why:
            producer = next((n.name for n in pipe.nodes if name in n.outputs), name)
            stuck = NodeError(producer, (PathFrame(pipe.name, item=item),))
            stuck.__cause__ = _stuck(value, why)
            return stuck
    return error


def failed(error: BaseException, records: list[Any] | None = None) -> Parcel:
    """A worker's failure, sealed for the way back (a stand-in if it cannot travel)."""
    failure = RemoteFailure(error, records)
    try:
        return Parcel(failure).seal()
    except Exception as why:
        failure.error = RuntimeError(
            f"{type(error).__name__}: {error} (the worker could not send this exception "
            f"back: {type(why).__name__}: {why})"
        )
        failure.records = None
        return Parcel(failure).seal()


def call_shipped(fn: Shipped, args: Parcel, kwargs: dict[str, Any]) -> Parcel:
    """Run a shipped sync callable in a worker (failures come back as ``RemoteFailure``).

    Raises:
        Halted: The run that sent it ended while it was being loaded (see ``halting``).
    """
    func: Callable[..., Any] = fn.load()
    check_enclosing()  # loading may take long (imports): the body starts only now
    try:
        result = func(*args.value, **kwargs)
    except Exception as exc:
        return failed(exc)
    return reply(result, functools.partial(_stuck, result))


def unwrap(parcel: Parcel) -> Any:
    """A worker's result, re-raising a ``RemoteFailure``."""
    result = parcel.value
    if type(result) is RemoteFailure:
        result.reraise()
    return result
