"""Fingerprint encoding of objects: enums, dataclasses, named tuples, pickle reductions.

Registered as the ``object`` handler of the ``_encoding`` registry: whatever no exact type
handler, user registration or library handler took ends up here. Library handlers
(``_libraries``) are loaded from here the first time they can be needed.
"""

from __future__ import annotations

import copyreg
import functools
import sys
import types
from collections.abc import Callable
from enum import Enum
from typing import Any

from ._encoding import (
    Writer,
    enter,
    feed,
    feed_callable,
    feed_ref,
    feed_type,
    handler,
    key_label,
    type_name,
)
from .base import UnfingerprintableError

__all__ = ["LAZY", "UNSET", "generic", "object_fields", "reduced"]

LAZY: dict[str, Callable[[Any], None]] = {}
"""Module name -> function registering its handlers; run once the module is imported."""


def _load_lazy() -> bool:
    loaded = False
    for name in [m for m in LAZY if m in sys.modules]:
        LAZY.pop(name)(sys.modules[name])
        loaded = True
    return loaded


def generic(v: object, w: Writer) -> None:
    """Encode a value no exact or registered handler took."""
    if _load_lazy():
        feed(v, w)  # a library was imported since last time: retry with its handlers
    else:
        _generic(v, w)


handler.register(object, generic)


def _feed_enum(v: Enum, w: Writer) -> None:
    w.b += b"n"
    feed_ref(type(v), w)
    feed(v._value_, w)


handler.register(Enum, _feed_enum)


class _Unset:
    __slots__ = ()

    def __reduce__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()
"""A field that has no value (e.g. a dataclass field with ``init=False`` never set)."""


def _generic(v: Any, w: Writer) -> None:
    t = type(v)
    if isinstance(v, type):  # a class with a metaclass (Enum classes, pydantic models)
        feed_type(v, w)
    elif isinstance(
        v, types.FunctionType | types.MethodType | types.BuiltinFunctionType | functools.partial
    ):
        feed_callable(v, w)
    elif type(fields := getattr(t, "__dataclass_fields__", None)) is dict:
        object_fields(b"a", v, w, [(name, getattr(v, name, UNSET)) for name in fields])
    elif isinstance(v, tuple) and type(names := getattr(t, "_fields", None)) is tuple:
        object_fields(b"k", v, w, list(zip(names, v, strict=False)))
    else:
        reduced(v, w)


def object_fields(tag: bytes, v: Any, w: Writer, fields: list[tuple[str, Any]]) -> None:
    """An object described by its type and named fields (in a fixed order)."""
    if not enter(v, w):
        return
    try:
        w.b += tag
        feed_ref(type(v), w)
        w.b += b"%x{" % len(fields)
        for name, value in fields:
            feed(name, w)
            if value is UNSET:
                w.b += b"U"
            else:
                feed(value, w)
    except UnfingerprintableError as exc:
        exc.inside(_field_segment(fields, exc.child), v)
        raise
    finally:
        del w.active[id(v)]


def _field_segment(fields: list[tuple[str, Any]], child: object) -> str:
    for name, value in fields:
        if value is child:
            return f".{name}"
    return ".?"


def reduced(v: Any, w: Writer) -> None:
    """Describe ``v`` by what pickle would store to rebuild it.

    Raises:
        UnfingerprintableError: pickle refuses the object (locks, files, sockets,
            generators, ...), or something in its reduction cannot be encoded.
    """
    t = type(v)
    try:
        reducer = copyreg.dispatch_table.get(t)
        rv = reducer(v) if reducer is not None else v.__reduce_ex__(4)
    except Exception as exc:
        err = UnfingerprintableError(
            type_name(v), f"it cannot be pickled ({type(exc).__name__}: {exc})"
        )
        err.child = v
        raise err from None
    if isinstance(rv, str):  # a module-level singleton, named
        w.b += b"G"
        feed(getattr(v, "__module__", None) or getattr(t, "__module__", ""), w)
        feed(rv, w)
        return
    if not isinstance(rv, tuple) or not 2 <= len(rv) <= 6:
        err = UnfingerprintableError(type_name(v), "its __reduce__ returned something unusable")
        err.child = v
        raise err
    if not enter(v, w):
        return
    state = rv[2] if len(rv) > 2 else None
    try:
        w.b += b"o"
        feed_ref(rv[0], w)
        feed(rv[1], w)
        feed(state, w)
        list_items = rv[3] if len(rv) > 3 else None
        feed(None if list_items is None else list(list_items), w)
        # Dict items in pickle order: order-sensitive, which is right for ordered
        # mappings and merely conservative for the rest (plain dicts never get here).
        dict_items = rv[4] if len(rv) > 4 else None
        feed(None if dict_items is None else [tuple(kv) for kv in dict_items], w)
    except UnfingerprintableError as exc:
        exc.inside(_state_segment(state, exc.child), v)
        raise
    finally:
        del w.active[id(v)]


def _state_segment(state: object, child: object) -> str:
    parts = state if isinstance(state, tuple) else (state,)  # (dict, slots) from __getstate__
    for part in parts:
        if part is child:
            return ""
        if isinstance(part, dict):
            for k, val in part.items():
                if val is child:
                    return f".{k}" if type(k) is str else key_label(k)
    return ""
