"""Code identity: a digest of what a callable does, covering the user code it reaches.

``code_identity(func)`` hashes the function's source and bytecode, its default values,
its closure values, and, followed transitively, the module-level functions and classes it
refers to by global name (``helper(...)``, ``helpers.scale(...)``, ``from .helpers import
scale`` inside the body) that live in the user's modules. Standard-library and
site-packages callees are named with their library's version, never followed. Module-level
simple constants it reads (``THRESHOLD = 0.5``: numbers, strings, bytes, tuples of them)
count too, and so does the class of a module-level instance of a user class
(``model.predict(x)``); the state of other module-level objects (a logger, a client, a
config dict) does not: pass those as inputs when results depend on them. Methods called on input objects are not
followed (their class is identified by name in the input's fingerprint).

Repeated calls are cheap: each root function keeps its digest plus the list of everything
it was computed from (global bindings, ``__code__`` / ``__defaults__`` / closure cells of
each function reached, mutable values to re-fingerprint). A call re-checks that list with
identity tests and recomputes only when something changed, so redefining a helper in a
notebook (same name, new function object) is seen at once, and re-decorating an unchanged
function (new object, same code) gives the same identity.

This module must not import the rest of HyperNodes except the cache's own helpers.
"""

from __future__ import annotations

import functools
import threading
import types
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from ._bytecode import (
    class_source_digest,
    code_digest,
    global_refs,
    is_user_function,
    is_user_module,
    library_ref,
)
from ._encoding import qualname
from ._hashing import digest128
from ._serialize import is_immutable
from .base import UnfingerprintableError
from .fingerprint import fingerprint_digest

__all__ = ["code_dependencies", "code_identity"]

_ABSENT: Any = object()
_CLASS_SKIP = frozenset(
    {"__dict__", "__weakref__", "__module__", "__qualname__", "__doc__", "__annotations__"}
)
_local = threading.local()
_ROOTS = (types.FunctionType, type)  # a tuple, not a union rebuilt on every call


def _encode(text: str) -> bytes:
    data = text.encode("utf-8", "surrogatepass")
    return b"%x:" % len(data) + data


class _Entry:
    """A root's identity and what it was computed from, re-checked on every call."""

    __slots__ = ("cells", "digest", "functions", "names", "ref", "volatile")

    def __init__(self, walk: _Walk, root: Any, digest: str) -> None:
        key, pop = id(root), _ENTRIES.pop  # bound now: module globals vanish at shutdown
        self.ref = weakref.ref(root, lambda _: pop(key, None))
        self.digest = digest
        self.names = tuple(walk.names.values())
        self.functions = tuple(walk.functions)
        self.cells = tuple(walk.cells)
        self.volatile = tuple(walk.volatile)

    def unchanged(self) -> bool:
        """The identity checks: bindings, code, defaults and closure cells."""
        for mapping, name, expected in self.names:
            if mapping.get(name, _ABSENT) is not expected:
                return False
        for f, code, defaults, kwdefaults in self.functions:
            if f.__code__ is not code or f.__defaults__ is not defaults:
                return False
            if f.__kwdefaults__ is not kwdefaults:
                return False
        for cell, expected in self.cells:
            try:
                current = cell.cell_contents
            except ValueError:  # an empty cell
                current = _ABSENT
            if current is not expected:
                return False
        return True

    def same_values(self) -> bool:
        """Mutable values the identity covers fingerprint as they did."""
        for value, digest in self.volatile:
            try:
                if fingerprint_digest(value) != digest:
                    return False
            except UnfingerprintableError:
                return False
        return True


_ENTRIES: dict[int, _Entry] = {}


class _Walk:
    """One traversal from a root through the user code it reaches."""

    def __init__(self) -> None:
        self.stack: dict[int, int] = {}
        self.memo: dict[int, bytes] = {}
        self.names: dict[tuple[int, str], tuple[Mapping[str, Any], str, Any]] = {}
        self.functions: list[tuple[types.FunctionType, Any, Any, Any]] = []
        self.cells: list[tuple[types.CellType, Any]] = []
        self.volatile: list[tuple[Any, bytes]] = []
        self.followed: dict[str, None] = {}

    def watch(self, mapping: Mapping[str, Any], name: str, value: Any) -> None:
        self.names[(id(mapping), name)] = (mapping, name, value)

    def value(self, v: Any, what: str) -> bytes:
        """A default or closure value: code is walked, data is fingerprinted."""
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
        depth = self.stack.get(id(obj))
        if depth is not None:
            return b"R%x;" % depth  # recursion: refer back to the frame being walked
        memo = self.memo.get(id(obj))
        if memo is not None:
            return memo
        self.stack[id(obj)] = len(self.stack)
        self.followed[qualname(obj)] = None
        return None

    def _leave(self, obj: Any, parts: bytearray) -> bytes:
        del self.stack[id(obj)]
        digest = digest128(parts)
        self.memo[id(obj)] = digest
        return digest

    def function(self, f: types.FunctionType) -> bytes:
        early = self._enter(f)
        if early is not None:
            return early
        try:
            code = f.__code__
            self.functions.append((f, code, f.__defaults__, f.__kwdefaults__))
            parts = bytearray(b"F" + code_digest(code))
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
        try:
            contents = cell.cell_contents
        except ValueError:
            self.cells.append((cell, _ABSENT))
            return b"-"
        self.cells.append((cell, contents))
        return self.value(contents, what)

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
                elif is_immutable(attr):
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
        obj = globals_.get(first, _ABSENT)
        self.watch(globals_, first, obj)
        if obj is _ABSENT:
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
            obj = namespace.get(attr, _ABSENT)
            self.watch(namespace, attr, obj)
            walked += _encode(attr)
            if obj is _ABSENT:
                return bytes(walked) + b"?"
        return bytes(walked) + self.referenced(obj)

    def _import(self, f: types.FunctionType, spec: tuple[str, ...]) -> bytes:
        import importlib.util
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
        """Something a function refers to by global name."""
        if isinstance(obj, types.FunctionType):
            return self.function(obj) if is_user_function(obj) else self.library(obj)
        if isinstance(obj, type):
            return self.klass(obj)
        if isinstance(obj, types.ModuleType):
            return b"m" + _encode(obj.__name__)
        if isinstance(obj, functools.partial | types.MethodType):
            try:
                return self.callable(obj)
            except UnfingerprintableError:
                return b"-"  # best effort for module-level bound state
        if isinstance(obj, types.BuiltinFunctionType):
            return library_ref(obj)
        if is_immutable(obj):
            return b"k" + fingerprint_digest(obj)
        if callable(obj) and hasattr(obj, "__wrapped__"):  # a module-level @lru_cache helper
            return self.library(obj)
        cls = type(obj)
        if is_user_module(getattr(cls, "__module__", None)):
            # ``model = Model()`` at module level, ``model.predict(x)`` in the node: the
            # class's code counts (its methods run); the object's state does not.
            return b"c" + self.klass(cls)
        return b"-"  # other module-level objects are not part of the identity


def _in_progress() -> dict[int, None]:
    active: dict[int, None] | None = getattr(_local, "active", None)
    if active is None:
        active = _local.active = {}
    return active


def _root_identity(root: Any) -> str:
    entry = _ENTRIES.get(id(root))
    if (
        entry is not None
        and not entry.volatile
        and entry.ref() is root
        and entry.unchanged()  # identity checks only: cannot come back here
    ):
        return entry.digest
    active = _in_progress()
    if id(root) in active:  # a value inside the root's own closure refers back to it
        return "cycle:" + qualname(root)
    active[id(root)] = None  # also while validating: re-fingerprinting may come back here
    try:
        if entry is not None and entry.ref() is root and entry.unchanged() and entry.same_values():
            return entry.digest
        walk = _Walk()
        digest = walk.callable(root).hex()
    finally:
        del active[id(root)]
    _ENTRIES[id(root)] = _Entry(walk, root, digest)
    return digest


def code_identity(func: Callable[..., Any]) -> str:
    """A 32-character hex digest of what ``func`` does (see the module docstring).

    Functions and classes are cached and re-validated per call; partials, bound methods
    and callable objects combine the cached identity of their function or class with the
    fingerprint of their bound state.

    Raises:
        UnfingerprintableError: A closure value, default value or bound object cannot be
            fingerprinted (the message names it), or the code graph is deeper than the
            recursion limit.
        TypeError: ``func`` is not callable.
    """
    try:
        if isinstance(func, _ROOTS):
            return _root_identity(func)
        if not callable(func):
            raise TypeError(f"code_identity needs a callable, got {type(func).__name__}")
        if isinstance(func, functools.partial):
            inner = code_identity(func.func)
            bound = fingerprint_digest((func.args, func.keywords))
            return digest128(b"P" + inner.encode() + bound).hex()
        if isinstance(func, types.MethodType):
            inner = code_identity(func.__func__)
            return digest128(b"M" + inner.encode() + fingerprint_digest(func.__self__)).hex()
        return _Walk().callable(func).hex()
    except RecursionError:
        raise UnfingerprintableError(
            qualname(type(func)), "its code refers to code nested deeper than the recursion limit"
        ) from None


def code_dependencies(func: Callable[..., Any]) -> tuple[str, ...]:
    """The qualified names of the user functions and classes ``func``'s identity covers
    (itself first): what to look at when asking "which edits invalidate this node?".

    Raises:
        UnfingerprintableError: As :func:`code_identity`.
    """
    walk = _Walk()
    walk.callable(func)
    return tuple(walk.followed)
