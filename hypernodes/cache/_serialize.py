"""How stores turn values into bytes and back: pickle protocol 5, cloudpickle as fallback.

Also decides which values are immutable enough to be kept as they are in memory.
"""

from __future__ import annotations

import io
import pickle
import struct
from operator import countOf
from typing import Any

from ._encoding import joined_strs
from .base import CacheWriteError

__all__ = [
    "dumps",
    "dumps_entry",
    "is_immutable",
    "loads",
    "loads_entry",
    "peek_versions",
    "type_name",
]

PROTOCOL = 5

_ATOMIC: frozenset[type] = frozenset(
    {type(None), bool, int, float, complex, str, bytes, type(...), type(NotImplemented)}
)


def type_name(value: object) -> str:
    """``module.QualName`` of the value's type (``builtins`` left out)."""
    t = type(value)
    module = getattr(t, "__module__", None)
    qual = getattr(t, "__qualname__", t.__name__)
    return qual if module in (None, "builtins") else f"{module}.{qual}"


def is_immutable(value: object) -> bool:
    """Whether ``value`` can be shared with callers without copying.

    Only exact built-in immutable types, and tuples / frozensets made of them, qualify:
    a subclass may carry mutable attributes.
    """
    t = type(value)
    if t in _ATOMIC:
        return True
    if t is tuple or t is frozenset:
        try:
            return all(is_immutable(item) for item in value)  # type: ignore[attr-defined]
        except RecursionError:
            return False
    return False


_FLAT_MIN = 64  # lists and tuples shorter than this are pickled the usual way


def _atoms(value: list[Any] | tuple[Any, ...]) -> bool:
    """Whether ``value`` is long and holds exact strs, ints or floats of one type only."""
    if len(value) < _FLAT_MIN:
        return False
    first = type(value[0])
    if first is str or first is int or first is float:
        return countOf(map(type, value), first) == len(value)
    return False


def _dumps_flat(value: list[Any] | tuple[Any, ...]) -> bytes:
    """Pickle a list or tuple of exact strs, ints or floats without pickle's memo (twice
    as fast for 1,000 words; one str object held twice is written twice). Sharing among
    such elements means nothing (they are immutable); the container cannot hold itself."""
    out = io.BytesIO()
    pickler = pickle.Pickler(out, PROTOCOL)
    try:
        pickler.fast = True  # (documented as deprecated, yet without a warning)
    except AttributeError:  # pragma: no cover - a Python without it
        return pickle.dumps(value, protocol=PROTOCOL)
    pickler.dump(value)
    return out.getvalue()


def dumps(key: str, value: object) -> bytes:
    """Pickle ``value`` (protocol 5), falling back to cloudpickle for lambdas, local
    classes and functions defined in ``__main__``.

    Raises:
        CacheWriteError: Neither pickle nor cloudpickle can serialize the value.
    """
    if (type(value) is list or type(value) is tuple) and _atoms(value):
        return _dumps_flat(value)
    try:
        return pickle.dumps(value, protocol=PROTOCOL)
    except Exception as first:  # any failure means "try cloudpickle"
        try:
            import cloudpickle  # deferred: heavy; only values pickle refuses need it

            data: bytes = cloudpickle.dumps(value, protocol=PROTOCOL)
        except Exception as exc:
            raise CacheWriteError(
                key,
                type_name(value),
                f"it cannot be pickled ({type(exc).__name__}: {exc}); make the value "
                "picklable or opt the node out with @node(cache=False)",
            ) from first
        return data


def loads(data: bytes | bytearray | memoryview) -> Any:
    """Unpickle ``data`` (anything :func:`dumps` wrote)."""
    return pickle.loads(data)


# An entry's payload may start with the versions of the node's outputs: ``\x00V``, their
# length (4 bytes, little-endian) and the versions joined by ``\x1f`` (UTF-8). Then the
# value: a pickle; or (``\x00S``) a list of strs as their UTF-8 joined by NULs (see
# ``_encoding.joined_strs``); or (``\x00A``) a numpy array: the length of its dtype's
# ``str``, its number of dimensions (a byte each), that ``str`` (ASCII), the shape (8
# bytes, little-endian, per dimension) and the bytes of its elements in C order. A pickle
# (protocol 2 and up) starts with ``\x80``, so a payload without versions (written before
# they existed, or by ``put``) is read as it always was.
_VERSIONS = b"\x00V"
_TEXT = b"\x00S"
_ARRAY = b"\x00A"
_LENGTH = struct.Struct("<I")
_START = len(_VERSIONS) + _LENGTH.size
_ARRAY_HEAD = struct.Struct("<BB")
_ARRAY_KINDS = frozenset("biufc")  # bool, ints, floats, complex: their dtype.str says all


def _array(value: Any) -> bytes | None:
    """The ``\\x00A`` form of an exact ``numpy.ndarray`` of bools or numbers in C order,
    else ``None`` (subclasses, other dtypes and other layouts are pickled).

    Faster both ways than pickle for small arrays (1.8 vs 4.7 us to write, 1.7 vs 3.0 us
    to read 64 floats), and the array read back owns its memory: pickle's protocol 5
    gives a view of a bytearray, through a memoryview, two more objects for the garbage
    collector to walk per array.
    """
    t = type(value)
    if t.__name__ != "ndarray" or t.__module__ != "numpy":
        return None
    dtype = value.dtype
    if dtype.kind not in _ARRAY_KINDS or not value.flags.c_contiguous:
        return None
    descr = dtype.str.encode("ascii")
    shape = value.shape
    data = memoryview(value).cast("B") if value.size else b""
    dims = struct.pack(f"<{len(shape)}q", *shape)
    return b"".join((_ARRAY, _ARRAY_HEAD.pack(len(descr), len(shape)), descr, dims, data))


def _load_array(body: memoryview) -> Any:
    import numpy  # deferred: only entries holding arrays need it (and numpy wrote them)

    size, ndim = _ARRAY_HEAD.unpack_from(body, 2)
    start = 2 + _ARRAY_HEAD.size
    dtype = numpy.dtype(str(body[start : start + size], "ascii"))
    start += size
    shape = struct.unpack_from(f"<{ndim}q", body, start)
    data = body[start + 8 * ndim :]
    if not data:
        return numpy.empty(shape, dtype)
    return numpy.frombuffer(data, dtype).reshape(shape).copy()  # (a copy owns its memory)


def dumps_entry(
    key: str, value: object, versions: tuple[str, ...] | None, text: bytes | None = None
) -> bytes:
    """:func:`dumps`, preceded by ``versions`` when given; a list of 16 or more strs
    without NULs is written as their joined text instead (``text``: that text, when the
    caller has it already, e.g. from :func:`~hypernodes.cache.fingerprint.fingerprint_text`),
    a numpy array of numbers in C order as its shape and bytes.

    Raises:
        CacheWriteError: As :func:`dumps`.
    """
    if text is None:
        text = joined_strs(value)
    data = (_TEXT + text) if text is not None else (_array(value) or dumps(key, value))
    if versions is None:
        return data
    head = "\x1f".join(versions).encode("utf-8", "surrogatepass")
    return b"".join((_VERSIONS, _LENGTH.pack(len(head)), head, data))


def peek_versions(data: bytes | bytearray | memoryview) -> tuple[tuple[str, ...] | None, int]:
    """The versions at the start of a payload (``None``: none) and where the value starts."""
    if data[:2] != _VERSIONS:
        return None, 0
    end = _START + _LENGTH.unpack_from(data, 2)[0]
    head = bytes(data[_START:end]).decode("utf-8", "surrogatepass")
    return (tuple(head.split("\x1f")) if head else ()), end


def loads_entry(data: bytes | bytearray | memoryview) -> tuple[Any, tuple[str, ...] | None]:
    """``(value, versions)`` of a payload written by :func:`dumps_entry` (or :func:`dumps`)."""
    versions, start = peek_versions(data)
    kind = data[start : start + 2]
    if kind == _ARRAY:
        return _load_array(memoryview(data)[start:]), versions
    if kind != _TEXT:
        return pickle.loads(data[start:] if start else data), versions
    body = data[start + 2 :]
    try:
        text = str(body, "utf-8")  # (strict is much faster; lone surrogates need the pass)
    except UnicodeDecodeError:
        text = str(body, "utf-8", "surrogatepass")
    return text.split("\0"), versions
