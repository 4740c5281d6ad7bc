"""The walk behind a code identity: from a callable through the user code it reaches.

One ``Walk`` hashes a root's source and bytecode, its defaults, its closure variables and
the module-level functions, classes and values it refers to (see ``code.py`` for the
rules), and records everything it read so that ``code.py`` can re-check it cheaply.

This module must not import the rest of HyperNodes except the cache's own helpers.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Mapping
from typing import Any

from ._bytecode import (
    class_source_digest,
    code_digest,
    global_refs,
    is_user_function,
    is_user_module,
    library_ref,
)
from ._constants import is_constant
from ._encoding import qualname
from ._hashing import digest128
from ._serialize import is_immutable
from .base import UnfingerprintableError
from .fingerprint import fingerprint_digest

__all__ = ["ABSENT", "Walk"]

ABSENT: Any = object()
"""A name that is not bound, or a closure cell that is empty."""

_CLASS_SKIP = frozenset(
    {
        "__dict__",
        "__weakref__",
        "__module__",
        "__qualname__",
        "__doc__",
        "__annotations__",
        "__firstlineno__",  # Python 3.13: where the class starts, a line number
    }
)
_DESCRIPTORS = (
    types.MethodDescriptorType,
    types.WrapperDescriptorType,
    types.MethodWrapperType,
    types.ClassMethodDescriptorType,
)


def _encode(text: str) -> bytes:
    data = text.encode("utf-8", "surrogatepass")
    return b"%x:" % len(data) + data


class Walk:
    """One traversal from a root through the user code it reaches."""

    def __init__(self) -> None:
        self.stack: dict[int, int] = {}
        self.memo: dict[int, bytes] = {}
        self.names: dict[tuple[int, str], tuple[Mapping[str, Any], str, Any]] = {}
        self.functions: list[tuple[types.FunctionType, Any, Any, Any]] = []
        self.cells: list[tuple[types.CellType, Any]] = []
        self.volatile: list[tuple[Any, bytes]] = []
        self.followed: dict[str, None] = {}
        # Per user function or class reached (by qualified name): its digest (covering
        # what it reaches) and the ones it refers to directly; what ``explain`` compares
        # to say which function changed.
        self.digests: dict[str, bytes] = {}
        self.calls: dict[str, dict[str, None]] = {}
        self._names: dict[int, str] = {}

    def watch(self, mapping: Mapping[str, Any], name: str, value: Any) -> None:
        self.names[(id(mapping), name)] = (mapping, name, value)

    def value(self, v: Any, what: str) -> bytes:
        """A default value, a partial's arguments or a callable's bound object: code is
        walked, data is fingerprinted (mutable data again on every call: it is state the
        callable carries, like an input). Closure values follow :meth:`referenced`."""
        if isinstance(v, types.FunctionType | type | functools.partial | types.MethodType):
            return self.callable(v)
        try:
            digest = fingerprint_digest(v)
        except UnfingerprintableError as exc:
            exc.reason = f"{what} holds it, and {exc.reason}"
            raise
        if not is_immutable(v):
            self.volatile.append((v, digest))  # mutable: re-fingerprinted on every call
        return b"v" + digest

    def _enter(self, obj: Any) -> bytes | None:
        name = qualname(obj)
        if self.stack:  # the function or class being walked refers to this one
            self.calls[self._names[next(reversed(self.stack))]][name] = None
        depth = self.stack.get(id(obj))
        if depth is not None:
            return b"R%x;" % depth  # recursion: refer back to the frame being walked
        memo = self.memo.get(id(obj))
        if memo is not None:
            return memo
        self.stack[id(obj)] = len(self.stack)
        self._names[id(obj)] = name
        self.followed[name] = None
        self.calls.setdefault(name, {})
        return None

    def _leave(self, obj: Any, parts: bytearray) -> bytes:
        del self.stack[id(obj)]
        digest = digest128(parts)
        self.memo[id(obj)] = digest
        self.digests[self._names[id(obj)]] = digest
        return digest

    def function(self, f: types.FunctionType) -> bytes:
        early = self._enter(f)
        if early is not None:
            return early
        try:
            code = f.__code__
            self.functions.append((f, code, f.__defaults__, f.__kwdefaults__))
            parts = bytearray(b"F" + code_digest(code, f))
            name = f.__qualname__
            parts += self.value(f.__defaults__, f"a default of {name}")
            parts += self.value(f.__kwdefaults__, f"a default of {name}")
            for var, cell in zip(code.co_freevars, f.__closure__ or (), strict=False):
                what = f"closure variable {var!r} of {name}"
                parts += _encode(var) + self.cell(cell, what)
            for kind, chain in global_refs(code):
                parts += _encode(kind) + self.global_ref(f, kind, chain)
        except BaseException:
            del self.stack[id(f)]
            raise
        return self._leave(f, parts)

    def cell(self, cell: types.CellType, what: str) -> bytes:
        """A closure variable: the same rule as a module global (see :meth:`referenced`)."""
        try:
            contents = cell.cell_contents
        except ValueError:
            self.cells.append((cell, ABSENT))
            return b"-"
        self.cells.append((cell, contents))
        try:
            return self.referenced(contents)
        except UnfingerprintableError as exc:
            exc.reason = f"{what} holds it, and {exc.reason}"
            raise

    def klass(self, cls: type) -> bytes:
        if not is_user_module(getattr(cls, "__module__", None)):
            return library_ref(cls)
        early = self._enter(cls)
        if early is not None:
            return early
        try:
            parts = bytearray(b"C" + _encode(qualname(cls)) + class_source_digest(cls))
            for base in cls.__bases__:
                parts += self.klass(base)
            namespace = cls.__dict__
            for name in sorted(namespace):
                if name in _CLASS_SKIP:
                    continue
                attr = namespace[name]
                inner = attr.__func__ if isinstance(attr, staticmethod | classmethod) else attr
                if isinstance(inner, types.FunctionType):
                    self.watch(namespace, name, attr)
                    parts += _encode(name) + self.function(inner)
                elif isinstance(attr, property):
                    self.watch(namespace, name, attr)
                    for fn in (attr.fget, attr.fset, attr.fdel):
                        parts += self.callable(fn) if fn is not None else b"-"
                elif isinstance(attr, functools.cached_property):
                    self.watch(namespace, name, attr)
                    parts += _encode(name) + self.callable(attr.func)
                elif callable(attr) and hasattr(attr, "__wrapped__"):  # @lru_cache methods
                    self.watch(namespace, name, attr)
                    parts += _encode(name) + self.library(attr)
                elif isinstance(attr, type):
                    parts += _encode(name) + self.klass(attr)
                elif is_constant(attr):
                    self.watch(namespace, name, attr)
                    parts += _encode(name) + b"k" + fingerprint_digest(attr)
        except BaseException:
            del self.stack[id(cls)]
            raise
        return self._leave(cls, parts)

    def library(self, obj: Any) -> bytes:
        """Library code: named with its version, never walked, except what it wraps
        (``functools.wraps`` sets ``__wrapped__``: a retry or caching decorator from a
        library around the user's function)."""
        wrapped = getattr(obj, "__wrapped__", None)
        if wrapped is None or not callable(wrapped):
            return library_ref(obj)
        return b"W" + library_ref(obj) + self.callable(wrapped)

    def callable(self, obj: Any) -> bytes:
        """Any callable: functions are walked, bound state is fingerprinted."""
        if isinstance(obj, types.FunctionType):
            return self.function(obj) if is_user_function(obj) else self.library(obj)
        if isinstance(obj, type):
            return self.klass(obj)
        if isinstance(obj, functools.partial):
            args = self.value((obj.args, obj.keywords), "an argument of a partial")
            return b"P" + self.callable(obj.func) + args
        if isinstance(obj, types.MethodType):
            owner = self.value(obj.__self__, f"the object {obj.__name__} is bound to")
            return b"M" + self.callable(obj.__func__) + owner
        if isinstance(obj, types.BuiltinFunctionType | types.BuiltinMethodType):
            bound_to = getattr(obj, "__self__", None)
            if bound_to is None or isinstance(bound_to, types.ModuleType):
                return library_ref(obj)
            return b"b" + library_ref(obj) + self.value(bound_to, "a bound built-in method")
        if not is_user_module(getattr(type(obj), "__module__", None)) and hasattr(
            obj, "__wrapped__"
        ):  # e.g. functools.lru_cache: its state is a cache, not behaviour
            return b"w" + library_ref(type(obj)) + self.library(obj)
        # A callable instance: its class's code (incl. __call__) and its own state.
        state = self.value(obj, "the callable object")
        return b"I" + self.klass(type(obj)) + state

    def global_ref(self, f: types.FunctionType, kind: str, chain: tuple[str, ...]) -> bytes:
        globals_ = f.__globals__
        if kind == "import":
            return self._import(f, chain)
        first = chain[0]
        obj = globals_.get(first, ABSENT)
        self.watch(globals_, first, obj)
        if obj is ABSENT:
            builtins: Any = getattr(f, "__builtins__", None) or {}
            return b"B" if first in getattr(builtins, "__dict__", builtins) else b"?"
        return self._follow(obj, chain[1:])

    def _follow(self, obj: Any, attrs: tuple[str, ...]) -> bytes:
        """Follow ``module.attr.attr`` while inside user modules, then describe the end."""
        walked = bytearray()
        for attr in attrs:
            if not isinstance(obj, types.ModuleType) or not is_user_module(obj.__name__):
                break
            namespace = obj.__dict__
            obj = namespace.get(attr, ABSENT)
            self.watch(namespace, attr, obj)
            walked += _encode(attr)
            if obj is ABSENT:
                return bytes(walked) + b"?"
        return bytes(walked) + self.referenced(obj)

    def _import(self, f: types.FunctionType, spec: tuple[str, ...]) -> bytes:
        import importlib.util  # deferred: only functions that import inside their body get here
        import sys

        module_name, level = spec[0], int(spec[1])
        try:
            package = f.__globals__.get("__package__") or ""
            absolute = importlib.util.resolve_name("." * level + module_name, package)
        except (ImportError, ValueError):
            return b"?"
        module = sys.modules.get(absolute)
        if module is None:
            return b"?" + _encode(absolute)
        if len(spec) == 2:
            return b"m" + _encode(absolute)
        return self._follow(module, spec[2:])

    def referenced(self, obj: Any) -> bytes:
        """A value a function refers to by name, a global or a closure variable.

        Code counts (functions and classes walked, library callables named) and constants
        count by value (see :func:`is_constant`). Of any other object only what it is
        counts: the code of its class when that is the user's, else its type. Its state
        does not: it can change under the function (its own side effects included),
        and what changes results belongs in an input.
        """
        if isinstance(obj, types.FunctionType):
            return self.function(obj) if is_user_function(obj) else self.library(obj)
        if isinstance(obj, type):
            return self.klass(obj)
        if isinstance(obj, types.ModuleType):
            return b"m" + _encode(obj.__name__)
        if is_constant(obj):
            return b"k" + fingerprint_digest(obj)
        cls = type(obj)
        if cls is tuple or cls is frozenset:  # holding code: e.g. a factory's steps
            parts = [self.referenced(item) for item in obj]
            if cls is frozenset:
                parts.sort()
            return b"T%x;" % len(parts) + b"".join(_encode(p.hex()) for p in parts)
        if isinstance(obj, functools.partial):
            keywords = sorted(obj.keywords.items())
            kw = b"".join(_encode(k) + self.referenced(v) for k, v in keywords)
            return b"P" + self.referenced(obj.func) + self.referenced(obj.args) + kw
        if isinstance(obj, types.MethodType):
            return b"M" + self.callable(obj.__func__) + self.referenced(obj.__self__)
        if isinstance(obj, types.BuiltinFunctionType):
            bound_to = getattr(obj, "__self__", None)
            if bound_to is None or isinstance(bound_to, types.ModuleType):
                return library_ref(obj)
            return b"b" + library_ref(obj) + self.referenced(bound_to)  # e.g. ``log.append``
        if isinstance(obj, _DESCRIPTORS):  # ``str.upper``: named like a library function
            return library_ref(obj)
        if callable(obj) and hasattr(obj, "__wrapped__"):  # a module-level @lru_cache helper
            return self.library(obj)
        if is_user_module(getattr(cls, "__module__", None)):
            # ``model = Model()``, ``model.predict(x)`` in the node: the class's code counts
            # (its methods run); the object's state does not.
            return b"c" + self.klass(cls)
        return b"t" + library_ref(cls)
