"""The canonical encoding behind fingerprints: the walk over a value, built-in types.

Every value is written as a self-delimiting token stream (a type tag, then lengths and
content), so two different values can never produce the same stream. Exact built-in types
are handled through the ``EXACT`` table, everything else through the ``handler``
singledispatch registry (user registrations and the lazily loaded library handlers of
``_libraries``), then dataclasses, named tuples and, last, the pickle reduction.

This module must not import numpy, pandas or pydantic.
"""

from __future__ import annotations

import functools
import struct
import types
from array import array
from collections.abc import Callable, Iterable
from operator import countOf
from typing import Any

from ._hashing import Hasher, digest128, new_hasher
from .base import UnfingerprintableError

__all__ = [
    "EXACT",
    "Writer",
    "enter",
    "feed",
    "feed_bytes",
    "feed_callable",
    "feed_str_list",
    "feed_ref",
    "feed_type",
    "handler",
    "items",
    "joined_strs",
    "key_label",
    "mapping",
    "qualname",
    "sequence",
    "type_name",
]

_FLUSH = 1 << 16  # bytes buffered before they are handed to the hasher
_DOUBLE = struct.Struct("<d").pack
_NAN = float("nan")


def qualname(obj: Any) -> str:
    """``module.QualName`` of a class or function (``builtins.`` left out)."""
    module = getattr(obj, "__module__", None)
    qual = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or "?"
    return qual if module in (None, "builtins") else f"{module}.{qual}"


def type_name(value: object) -> str:
    """The qualified name of the value's type."""
    return qualname(type(value))


def key_label(key: object) -> str:
    # Only built-in reprs of str/int keys: a user's __repr__ is never called.
    if type(key) in (str, int):
        return f"[{key!r}]"
    return f"[<{type_name(key)} key>]"


class Writer:
    """The running encoding: a byte buffer flushed into a hasher, plus the containers
    being visited (for cycles).

    Attributes:
        b: Bytes not yet handed to the hasher (handlers append to it).
        h: The hasher, created at the first flush (small values are hashed in one call).
        active: ``id()`` of each mutable container being visited -> its depth. Used only
            to spot cycles; ids never reach the digest.
    """

    __slots__ = ("active", "b", "h")

    def __init__(self, active: dict[int, int] | None = None) -> None:
        self.b = bytearray()
        self.h: Hasher | None = None
        self.active: dict[int, int] = {} if active is None else active

    def flush(self) -> None:
        """Hand the buffered bytes to the hasher."""
        if self.h is None:
            self.h = new_hasher()
        self.h.update(self.b)
        self.b.clear()

    def raw(self, data: bytes | bytearray | memoryview) -> None:
        """Hash a (large) buffer without copying it into the byte buffer."""
        self.flush()
        assert self.h is not None
        self.h.update(data)

    def digest(self) -> bytes:
        """The 16-byte digest of everything written (the same however it was chunked)."""
        if self.h is None:
            return digest128(self.b)
        self.flush()
        return self.h.digest()


# -- the walk ----------------------------------------------------------------------------


def feed(v: Any, w: Writer) -> None:
    """Write the encoding of ``v``.

    Raises:
        UnfingerprintableError: ``v`` or something inside it cannot be encoded.
    """
    t = type(v)
    if t is str:
        data = v.encode("utf-8", "surrogatepass")
        w.b += b"s%x:%b" % (len(data), data)
    elif t is int:
        w.b += b"i%x;" % v  # hex: no int-to-str digit limit, exact for any size
    elif t is float:
        w.b += (b"f" + _DOUBLE(v)) if v == v else b"q"  # every NaN is the same NaN
    elif v is None:
        w.b += b"N"
    elif t is bool:
        w.b += b"T" if v else b"F"
    elif t is tuple:
        # Tuples are not tracked for cycles: a cycle always runs through a mutable
        # container, which is.
        w.b += b"t%x[" % len(v)
        try:
            items(v, w)
        except UnfingerprintableError as exc:
            exc.inside(f"[{_index_of(v, exc.child)}]", v)
            raise
    elif t is list:
        sequence(b"l", v, w)
    elif t is dict:
        mapping(b"d", v, w)
    else:
        exact = EXACT.get(t)
        if exact is not None:
            exact(v, w)
        else:
            handler.dispatch(t)(v, w)
    if len(w.b) > _FLUSH:
        w.flush()


def items(v: Any, w: Writer) -> None:
    """Write the elements of a sized iterable.

    Runs of 16 or more exact ints (within 64 bits), floats or strs are packed behind a
    non-letter marker byte (``\\x01`` / ``\\x02`` / ``\\x03``, see :func:`_strs`), which
    no element token starts with, so the encoding stays unambiguous (the caller has
    written how many elements follow); anything else goes element by element.
    """
    if len(v) >= 16:
        t = type(next(iter(v)))
        if (t is str or t is int or t is float) and countOf(map(type, v), t) == len(v):
            if t is int:
                try:
                    packed = array("q", v)
                except OverflowError:
                    w.b += b"".join([b"i%x;" % x for x in v])
                else:
                    w.b += b"\x01"
                    w.b += packed.tobytes()
                return
            if t is float:
                floats = array("d", v)
                total = sum(floats)
                if total != total:  # a NaN somewhere (or inf - inf): make every NaN alike
                    floats = array("d", [x if x == x else _NAN for x in v])
                w.b += b"\x02"
                w.b += floats.tobytes()
                return
            if t is str:
                _strs(v, w)
                return
    for item in v:
        feed(item, w)


def _strs(v: Any, w: Writer) -> None:
    """A run of strs whose count the caller has written: when none holds a NUL, marker
    ``\\x03``, the byte length and the UTF-8 of the strs joined by NULs (which the
    encoding of no other character contains, so the split is unique); else each str's
    own token. One join instead of a token per str: 30x faster for 1,000 words."""
    data = _joined(v)
    if data is not None:
        w.b += b"\x03%x:" % len(data)
        w.b += data
        return
    encoded = [x.encode("utf-8", "surrogatepass") for x in v]
    w.b += b"".join([b"s%x:%b" % (len(d), d) for d in encoded])


def _joined(v: Any) -> bytes | None:
    """The UTF-8 of the strs ``v`` joined by NULs, or ``None`` when one of them holds a
    NUL (the join could not be split back)."""
    joined = "\0".join(v)
    if joined.count("\0") != len(v) - 1:
        return None
    return joined.encode("utf-8", "surrogatepass")


def joined_strs(v: Any) -> bytes | None:
    """For an exact list of 16 or more exact strs, none holding a NUL: their UTF-8
    joined by NULs (what the encoding of the list carries, see :func:`_strs`), else
    ``None``. ``DiskCache`` stores such lists as this text: splitting it is faster than
    unpickling, and a fingerprint that made it hands it over instead of pickling."""
    if type(v) is not list or len(v) < 16 or type(v[0]) is not str:
        return None  # (most lists put are not of strs: no scan for them)
    if countOf(map(type, v), str) != len(v):
        return None
    return _joined(v)


def feed_str_list(v: Any, w: Writer) -> bytes | None:
    """Write the encoding of ``v`` and return :func:`joined_strs` of it, when that is not
    ``None`` (the same bytes :func:`feed` writes: ``v`` holds no container, so no
    back-reference); else write nothing and return ``None``."""
    data = joined_strs(v)
    if data is not None:
        w.b += b"l%x[\x03%x:" % (len(v), len(data))
        w.b += data
    return data


def enter(v: object, w: Writer) -> bool:
    """Start visiting a container; ``False`` (after writing a back-reference to the depth
    where it is already being visited) when it contains itself."""
    depth = w.active.get(id(v))
    if depth is not None:
        w.b += b"^%x;" % depth
        return False
    w.active[id(v)] = len(w.active)
    return True


def sequence(tag: bytes, v: Any, w: Writer) -> None:
    """An ordered container: tag, length, elements."""
    active, key = w.active, id(v)
    if key in active:  # the container contains itself: refer back to its depth
        w.b += b"^%x;" % active[key]
        return
    active[key] = len(active)
    try:
        w.b += b"%b%x[" % (tag, len(v))
        if len(v) < 16:
            for item in v:
                feed(item, w)
        else:
            items(v, w)
    except UnfingerprintableError as exc:
        exc.inside(f"[{_index_of(v, exc.child)}]", v)
        raise
    finally:
        del active[key]


def _index_of(container: Iterable[object], child: object) -> str:
    for i, item in enumerate(container):
        if item is child:
            return str(i)
    return "?"


def _sub_digest(w: Writer, *parts: object) -> bytes:
    s = Writer(w.active)
    for part in parts:
        feed(part, s)
    return s.digest()


def mapping(tag: bytes, v: Any, w: Writer) -> None:
    """An order-insensitive mapping (dict equality ignores order, so must we)."""
    active, key = w.active, id(v)
    if key in active:  # the mapping contains itself: refer back to its depth
        w.b += b"^%x;" % active[key]
        return
    active[key] = len(active)
    try:
        w.b += b"%b%x" % (tag, len(v))
        for k in v:
            if type(k) is not str:
                break
        else:
            # str keys have a total order: sort them, no sub-digests needed.
            w.b += b"{"
            if len(v) < 16:
                for k in sorted(v):
                    data = k.encode("utf-8", "surrogatepass")
                    w.b += b"s%x:%b" % (len(data), data)
                    feed(v[k], w)
            else:
                keys = sorted(v)
                _strs(keys, w)
                items([v[k] for k in keys], w)
            return
        w.b += b"<"
        for d in sorted([_sub_digest(w, k, val) for k, val in v.items()]):
            w.b += d
    except UnfingerprintableError as exc:
        exc.inside(_mapping_segment(list(v.items()), exc.child), v)
        raise
    finally:
        del active[key]


def _mapping_segment(pairs: list[tuple[Any, Any]], child: object) -> str:
    for k, val in pairs:
        if val is child:
            return key_label(k)
        if k is child:
            return f"<key {key_label(k)[1:-1]}>"
    return "[?]"


def _unordered(tag: bytes, v: Any, w: Writer) -> None:
    """A set: sorted elements when all are str or all int, else sorted sub-digests."""
    kinds = {type(x) for x in v}
    if len(kinds) == 1 and kinds <= {str, int}:
        w.b += b"%b%x[" % (tag, len(v))
        items(sorted(v), w)
        return
    w.b += b"%b%x<" % (tag, len(v))
    try:
        digests = sorted(_sub_digest(w, item) for item in v)
    except UnfingerprintableError as exc:
        exc.inside("{element}", v)
        raise
    for d in digests:
        w.b += d


# -- exact built-in types ----------------------------------------------------------------


def _feed_complex(v: complex, w: Writer) -> None:
    w.b += b"c"
    feed(v.real, w)
    feed(v.imag, w)


def feed_bytes(tag: bytes, v: bytes | bytearray | memoryview, w: Writer) -> None:
    """Tag, byte length, bytes (large buffers hashed in place)."""
    size = v.nbytes if isinstance(v, memoryview) else len(v)
    w.b += b"%b%x:" % (tag, size)
    if size > _FLUSH:
        w.raw(v)
    else:
        w.b += v


def _feed_memoryview(v: memoryview, w: Writer) -> None:
    w.b += b"m"
    feed(v.format, w)
    feed(v.shape, w)
    feed_bytes(b"b", v.cast("B") if v.c_contiguous else memoryview(v.tobytes()), w)


def feed_ref(obj: Any, w: Writer) -> None:
    """A class or module-level callable, referred to by its qualified name."""
    if getattr(obj, "__qualname__", None) is None and getattr(obj, "__name__", None) is None:
        feed(obj, w)  # not something named: describe the object itself
    else:
        feed(qualname(obj), w)


def feed_type(v: type, w: Writer) -> None:
    w.b += b"y"
    feed_ref(v, w)


def feed_callable(v: Any, w: Writer) -> None:
    from .code import code_identity  # code identities fingerprint closures: import late

    w.b += b"@"
    feed(code_identity(v), w)


def _tagged(tag: bytes, *attrs: str) -> Callable[[Any, Writer], None]:
    def encode(v: Any, w: Writer) -> None:
        w.b += tag
        feed(tuple(getattr(v, a) for a in attrs), w)

    return encode


def _constant(tag: bytes) -> Callable[[Any, Writer], None]:
    def encode(v: Any, w: Writer) -> None:
        w.b += tag

    return encode


def _feed_plain_bytes(v: bytes, w: Writer) -> None:
    feed_bytes(b"b", v, w)


def _feed_bytearray(v: bytearray, w: Writer) -> None:
    feed_bytes(b"B", v, w)


def _feed_set(v: set[Any], w: Writer) -> None:
    _unordered(b"e", v, w)


def _feed_frozenset(v: frozenset[Any], w: Writer) -> None:
    _unordered(b"g", v, w)


# Plain functions rather than partials: Python-to-Python calls keep deep values off the
# C stack.
EXACT: dict[type, Callable[[Any, Writer], None]] = {
    complex: _feed_complex,
    bytes: _feed_plain_bytes,
    bytearray: _feed_bytearray,
    memoryview: _feed_memoryview,
    set: _feed_set,
    frozenset: _feed_frozenset,
    range: _tagged(b"r", "start", "stop", "step"),
    slice: _tagged(b"z", "start", "stop", "step"),
    type: feed_type,
    type(...): _constant(b"E"),
    type(NotImplemented): _constant(b"I"),
    types.FunctionType: feed_callable,
    types.BuiltinFunctionType: feed_callable,
    types.MethodType: feed_callable,
    functools.partial: feed_callable,
}
"""Handlers of exact types (a subclass never borrows its base's handler); str, int,
float, bool, None, tuple, list and dict are handled inline by :func:`feed`."""


# -- the registry ----------------------------------------------------------------------


@functools.singledispatch
def handler(v: object, w: Writer) -> None:
    """Encode a value no exact handler took. ``_objects`` registers the real fallback for
    ``object`` (dataclasses, named tuples, pickle reductions); users and ``_libraries``
    register more specific types."""
    raise NotImplementedError("hypernodes.cache._objects registers the object handler")
