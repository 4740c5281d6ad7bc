"""Fingerprints of values: a 128-bit digest, equal for equal values in any process.

``fingerprint(value)`` hashes a canonical, self-delimiting encoding of the value (see
``_encoding``). The encoding carries every type (``1``, ``1.0`` and ``True`` differ; so do
a list and a tuple), the whole content (no depth limit, no sampling, never ``repr()`` or
``id()``), and never depends on hash randomization (dicts and sets are order-insensitive
through sorting). Values that cannot be described reliably (locks, files, sockets,
generators, anything pickle refuses) raise :class:`UnfingerprintableError`, which names
the type and where it sits inside the value.

Dispatch is per type: exact built-in types through a table (a subclass never borrows a
built-in's handler and silently loses its extra state), everything else through a
``functools.singledispatch`` registry that users extend with :func:`register_fingerprint`.
numpy, pandas and pydantic are never imported here: their handlers are registered the
first time a value is fingerprinted while the library is already imported. Objects
without a handler are described by their pickle reduction (``__reduce_ex__(4)``):
whatever pickle needs to rebuild an object is what identifies it.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar, overload

from . import _libraries, _objects  # noqa: F401 - they register the object and library handlers
from ._encoding import Writer, feed, feed_ref, feed_str_list, handler, type_name
from .base import UnfingerprintableError

__all__ = [
    "UnfingerprintableError",
    "fingerprint",
    "fingerprint_digest",
    "fingerprint_text",
    "register_fingerprint",
]

F = TypeVar("F", bound=Callable[..., object])


@overload
def register_fingerprint(cls: type, func: None = None) -> Callable[[F], F]: ...


@overload
def register_fingerprint(cls: type, func: F) -> F: ...


def register_fingerprint(cls: type, func: F | None = None) -> F | Callable[[F], F]:
    """Teach :func:`fingerprint` a type: ``func(value)`` returns something fingerprintable
    that identifies the value (a tuple of its fields, its bytes, ...).

    The type's qualified name is always mixed in, so two types reducing to the same data
    stay apart. Subclasses use the handler of their nearest registered base (like
    ``functools.singledispatch``, which this is). Exact built-in types (``int``, ``list``,
    ``dict``, ...) always keep the built-in encoding.

    Example::

        @register_fingerprint(Point)
        def _(p: Point) -> object:
            return (p.x, p.y)

    Args:
        cls: The type to handle.
        func: The reducer; omit it to use ``register_fingerprint`` as a decorator.

    Returns:
        ``func``, or a decorator that registers and returns its argument.

    Raises:
        TypeError: ``cls`` is not a class.
    """
    if not isinstance(cls, type):
        raise TypeError(f"register_fingerprint needs a class, got {type(cls).__name__}")

    def register(reducer: F) -> F:
        def encode(v: Any, w: Writer) -> None:
            w.b += b"u"
            feed_ref(cls, w)
            try:
                reduced = reducer(v)
            except UnfingerprintableError:
                raise
            except Exception as exc:
                err = UnfingerprintableError(
                    type_name(v),
                    f"its registered fingerprint function raised {type(exc).__name__}: {exc}",
                )
                err.child = v
                raise err from exc
            try:
                feed(reduced, w)
            except UnfingerprintableError as err:
                err.inside("", v)
                raise

        handler.register(cls, encode)
        return reducer

    return register if func is None else register(func)


def fingerprint_digest(value: object) -> bytes:
    """The 16 raw bytes behind :func:`fingerprint`.

    Raises:
        UnfingerprintableError: ``value`` (or something inside it) cannot be fingerprinted.
    """
    w = Writer()
    try:
        try:
            feed(value, w)
        except RecursionError:
            w = _deep(value)
    except UnfingerprintableError as exc:
        exc.child = None  # the walk's bookkeeping must not keep the value alive
        raise
    return w.digest()


_DEEP_LIMIT = 20_000
_deep_lock = threading.Lock()
_deep_local = threading.local()


def _deep(value: object) -> Writer:
    """Walk a value nested deeper than the recursion limit allows, with a raised limit
    (rare: one deep walk at a time, the usual limit restored afterwards; never nested).

    Raises:
        UnfingerprintableError: Even the raised limit is not enough.
    """
    too_deep = UnfingerprintableError(
        type_name(value), f"it is nested more than {_DEEP_LIMIT} frames deep"
    )
    if getattr(_deep_local, "active", False):
        raise too_deep  # an inner walk of a deep walk: let the outer one give up once
    with _deep_lock:
        _deep_local.active = True
        old = sys.getrecursionlimit()
        sys.setrecursionlimit(max(old, _DEEP_LIMIT))
        try:
            w = Writer()
            feed(value, w)
            return w
        except RecursionError:
            raise too_deep from None
        finally:
            sys.setrecursionlimit(old)
            _deep_local.active = False


def fingerprint(value: object) -> str:
    """A 32-character hex digest of ``value``: equal for equal values of the same types,
    stable across processes, runs and hash seeds, different for different values.

    Covers ``None``, bool, int, float (all NaNs alike, ``-0.0`` apart from ``0.0``),
    complex, str, bytes / bytearray / memoryview, tuple, list, dict (order-insensitive),
    set / frozenset, range, slice, Enum, datetime types, Decimal, Fraction, paths, UUID,
    OrderedDict, defaultdict, deque, Counter, dataclasses, named tuples, pydantic models,
    numpy arrays (dtype, shape and every byte, hashed in place) and scalars, pandas
    DataFrame / Series / Index, functions (by their code identity), classes (by qualified
    name), types registered with :func:`register_fingerprint`, and any other object whose
    pickle reduction is made of those. Reference cycles become back-references.

    Raises:
        UnfingerprintableError: ``value`` (or something inside it) cannot be fingerprinted
            reliably: pickle refuses it (locks, files, sockets, generators, ...) or it is
            nested deeper than the recursion limit.
    """
    return fingerprint_digest(value).hex()


def fingerprint_text(value: object) -> tuple[str, bytes | None]:
    """:func:`fingerprint` of ``value``, and, for a list of strs (see
    ``_encoding.joined_strs``), the text its encoding carried, else ``None``: a cache
    that stores such a list writes that text instead of joining and scanning it again.

    Raises:
        UnfingerprintableError: As :func:`fingerprint`.
    """
    if type(value) is list:
        w = Writer()
        text = feed_str_list(value, w)
        if text is not None:
            return w.digest().hex(), text
    return fingerprint(value), None
