"""Type fit: whether a value annotated one way may go where another annotation is expected.

:func:`fits` is lenient: it flags only what cannot fit (``Any``, unions, ``Optional``,
``TypeVar``s, protocols and anything it cannot reason about fit); :func:`type_text` spells
a type for an error message. Both work on resolved annotations: reading and resolving them
off a pipeline's nodes is :mod:`hypernodes.edges`' business. This module must not import
any other module of the package, pydantic or asyncio.
"""

from __future__ import annotations

import collections.abc as cabc
import inspect
import types
import typing
from typing import Any

__all__ = ["UNKNOWN", "fits", "type_text"]


UNKNOWN: Any = type("Unknown", (), {"__repr__": lambda self: "UNKNOWN"})()
"""An unannotated or unresolvable end: it fits, and anything fits it."""

_NONE = type(None)
_CALLABLE: Any = cabc.Callable
_NUMERIC = {int: (float, complex), bool: (float, complex), float: (complex,)}
_STANDARD_MODULES = frozenset({"builtins", "collections", "collections.abc", "typing"})
_PROTOCOL_NOISE = frozenset(
    {
        "__abstractmethods__",
        "__annotations__",
        "__dict__",
        "__doc__",
        "__init__",
        "__module__",
        "__callable_proto_members_only__",
        "__non_callable_proto_members__",
        "__orig_bases__",
        "__parameters__",
        "__protocol_attrs__",
        "__qualname__",
        "__slots__",
        "__subclasshook__",
        "__type_params__",
        "__weakref__",
        "_abc_impl",
        "_is_protocol",
        "_is_runtime_protocol",
    }
)


def fits(src: Any, dst: Any) -> bool:
    """Whether a value annotated ``src`` may be passed where ``dst`` is annotated.

    Lenient: a union fits when any member fits (either side), ``Any``, ``object``,
    ``TypeVar``s, unresolvable types and anything this cannot reason about fit; ``int``
    fits ``float``; type arguments of standard containers are compared; a protocol is
    satisfied when the class has its members.
    """
    if src is dst:
        return True
    try:
        return _fits(src, dst)
    except Exception:  # an annotation we cannot reason about fits
        return True


def _fits(src: Any, dst: Any) -> bool:
    src, dst = _plain(src), _plain(dst)
    if src is dst or src is UNKNOWN or dst is UNKNOWN:
        return True
    if src is Any or dst is Any or dst is object or src is object:
        return True
    if isinstance(dst, typing.TypeVar):
        if dst.__constraints__:
            return any(_fits(src, c) for c in dst.__constraints__)
        return dst.__bound__ is None or _fits(src, dst.__bound__)
    if isinstance(src, typing.TypeVar):
        return True
    s_origin, d_origin = typing.get_origin(src), typing.get_origin(dst)
    if _is_union(s_origin):
        return any(_fits(m, dst) for m in typing.get_args(src))
    if _is_union(d_origin):
        return any(_fits(src, m) for m in typing.get_args(dst))
    if s_origin is typing.Literal:
        values = typing.get_args(src)
        if d_origin is typing.Literal:
            return bool(set(values) & set(typing.get_args(dst)))
        return any(_fits(type(v), dst) for v in values)
    if d_origin is typing.Literal:
        return any(_fits(type(v), src) for v in typing.get_args(dst))
    s_cls, d_cls = s_origin or src, d_origin or dst
    if not isinstance(s_cls, type) or not isinstance(d_cls, type):
        return True
    if _is_protocol(s_cls):
        return True  # a protocol says what a value can do, not what it is
    if _is_protocol(d_cls):
        return _has_members(s_cls, d_cls)  # structural: never issubclass (it may raise)
    if not issubclass(s_cls, d_cls) and d_cls not in _NUMERIC.get(s_cls, ()):
        return False
    return _args_fit(src, dst, s_cls, d_cls)


def _plain(tp: Any) -> Any:
    """``tp`` without what does not change what fits: ``Annotated``, ``NewType``, aliases."""
    for _ in range(20):  # aliases of aliases, but never forever
        if tp is None:
            return _NONE
        if isinstance(tp, str | typing.ForwardRef):
            return UNKNOWN
        if typing.get_origin(tp) is typing.Annotated:
            tp = tp.__origin__
        elif isinstance(tp, typing.NewType):
            tp = tp.__supertype__
        elif type(tp).__name__ == "TypeAliasType":  # ``type X = ...`` (Python 3.12+)
            tp = tp.__value__
        else:
            return tp
    return UNKNOWN


def _is_union(origin: Any) -> bool:
    return origin is typing.Union or origin is types.UnionType


def _is_protocol(cls: type) -> bool:
    # What typing.is_protocol (Python 3.13) checks.
    return bool(getattr(cls, "_is_protocol", False)) and cls is not typing.Protocol


def _has_members(cls: type, protocol: type) -> bool:
    known = set(dir(cls))
    for base in getattr(cls, "__mro__", ()):
        known.update(getattr(base, "__annotations__", {}))  # dataclass fields, attributes
    for base in protocol.__mro__:
        if base in (typing.Protocol, typing.Generic, object):
            continue
        # Its own members: attributes and methods, and dunder *methods* it defines (typing
        # adds dunder bookkeeping of its own, which differs between Python versions).
        members = {
            name
            for name, value in vars(base).items()
            if not (name.startswith("__") and name.endswith("__")) or inspect.isfunction(value)
        } | set(getattr(base, "__annotations__", {}))
        if any(m not in known for m in members - _PROTOCOL_NOISE if not m.startswith("_abc")):
            return False
    return True


def _args_fit(src: Any, dst: Any, s_cls: type, d_cls: type) -> bool:
    s_args, d_args = typing.get_args(src), typing.get_args(dst)
    if not s_args or not d_args or d_cls is _CALLABLE:  # parameters: not compared
        return True
    standard = s_cls is d_cls or (
        s_cls.__module__ in _STANDARD_MODULES and d_cls.__module__ in _STANDARD_MODULES
    )
    if not standard:  # a user generic may order its parameters differently from its base
        return True
    if issubclass(s_cls, tuple):
        s_each = list(s_args[:1] if len(s_args) == 2 and s_args[1] is Ellipsis else s_args)
        if issubclass(d_cls, tuple):
            if len(d_args) == 2 and d_args[1] is Ellipsis:
                return all(_fits(s, d_args[0]) for s in s_each)
            if len(s_args) == 2 and s_args[1] is Ellipsis:
                return all(_fits(s_each[0], d) for d in d_args)
            return len(s_args) == len(d_args) and all(map(_fits, s_args, d_args))
        if len(d_args) == 1:
            return all(_fits(s, d_args[0]) for s in s_each)
        return True
    if len(s_args) == len(d_args):
        return all(map(_fits, s_args, d_args))
    if len(d_args) == 1:  # dict[K, V] into Iterable[K]; Generator[Y, S, R] into Iterator[Y]
        return _fits(s_args[0], d_args[0])
    return True


# -- text -------------------------------------------------------------------------------


def type_text(tp: Any, *, qualified: bool = False) -> str:
    """A short, readable spelling of a type: ``list[int]``, ``int | None``, ``User``.

    Args:
        tp: The type.
        qualified: Name classes with their module (``shop.models.User``), for two types
            that would otherwise read the same.
    """

    def text(t: Any) -> str:
        return type_text(t, qualified=qualified)

    if tp is None or tp is _NONE:
        return "None"
    if tp is Ellipsis:
        return "..."
    if tp is UNKNOWN:
        return "?"
    if isinstance(tp, list):  # the parameters of a Callable
        return "[" + ", ".join(map(text, tp)) + "]"
    if isinstance(tp, typing.TypeVar | typing.ParamSpec):
        return tp.__name__
    if isinstance(tp, str | typing.ForwardRef):
        return tp if isinstance(tp, str) else tp.__forward_arg__
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if _is_union(origin):
        return " | ".join(map(text, args))
    if origin is typing.Literal:
        return f"Literal[{', '.join(map(repr, args))}]"
    if origin is typing.Annotated:
        return text(args[0])
    if origin is not None:
        name = _class_name(origin, qualified)
        return f"{name}[{', '.join(map(text, args))}]" if args else name
    if isinstance(tp, type):
        return _class_name(tp, qualified)
    return repr(tp).replace("typing.", "")


def _class_name(cls: Any, qualified: bool) -> str:
    name = getattr(cls, "__qualname__", None) or repr(cls)
    module = getattr(cls, "__module__", "builtins")
    if qualified and module not in ("builtins", "typing", "collections.abc"):
        return f"{module}.{name}"
    return str(name)
