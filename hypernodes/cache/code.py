"""Code identity: a digest of what a callable does, covering the user code it reaches.

``code_identity(func)`` hashes the function's source and bytecode (without comments,
docstrings, blank lines or formatting: see ``_normalize.py``), its default values,
and, followed transitively, the functions, classes and values it refers to by name:
module-level ones by global name (``helper(...)``, ``helpers.scale(...)``, ``from .helpers
import scale`` inside the body) and closure variables, by one rule for both:

- user functions and classes count by their code (walked into); standard-library and
  site-packages callees are named with their library's version, never followed;
- constants count by value (``THRESHOLD = 0.5``, a factory's ``threshold``: numbers,
  strings, bytes, ``None``, enum members, paths, dates, decimals, and tuples, frozensets,
  named tuples and frozen dataclasses of them; see ``_constants.py``);
- any other object counts by what it is, never by its state: the code of its class for an
  instance of a user class (``model.predict(x)``), else its type (a logger, a client, a
  config dict, a call log the node appends to). Its state can change under the function,
  the function's own side effects included, so it must not move the key: pass what
  results depend on as an input. Methods called on input objects are not followed (their
  class is identified by name in the input's fingerprint).

Repeated calls are cheap: each root function keeps its digest plus the list of everything
it was computed from (global bindings, ``__code__`` / ``__defaults__`` / closure cells of
each function reached, mutable default values to re-fingerprint). A call re-checks that
list with identity tests and recomputes only when something changed, so redefining a
helper in a notebook (same name, new function object) is seen at once, and re-decorating
an unchanged function (new object, same code) gives the same identity.

This module must not import the rest of HyperNodes except the cache's own helpers.
"""

from __future__ import annotations

import functools
import threading
import types
import weakref
from collections.abc import Callable
from typing import Any

from ._encoding import qualname
from ._hashing import digest128
from ._walk import ABSENT, Walk
from .base import UnfingerprintableError
from .fingerprint import fingerprint_digest

__all__ = ["code_dependencies", "code_functions", "code_identity"]

_local = threading.local()
_ROOTS = (types.FunctionType, type)  # a tuple, not a union rebuilt on every call


class _Entry:
    """A root's identity and what it was computed from, re-checked on every call."""

    __slots__ = ("cells", "digest", "functions", "names", "parts", "ref", "volatile")

    def __init__(self, walk: Walk, root: Any, digest: str) -> None:
        key, pop = id(root), _ENTRIES.pop  # bound now: module globals vanish at shutdown
        self.ref = weakref.ref(root, lambda _: pop(key, None))
        self.digest = digest
        self.names = tuple(walk.names.values())
        self.functions = tuple(walk.functions)
        self.cells = tuple(walk.cells)
        self.volatile = tuple(walk.volatile)
        self.parts = _parts(walk)

    def unchanged(self) -> bool:
        """The identity checks: bindings, code, defaults and closure cells."""
        for mapping, name, expected in self.names:
            if mapping.get(name, ABSENT) is not expected:
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
                current = ABSENT
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
        walk = Walk()
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
        return Walk().callable(func).hex()
    except RecursionError:
        raise UnfingerprintableError(
            qualname(type(func)), "its code refers to code nested deeper than the recursion limit"
        ) from None


def _parts(walk: Walk) -> dict[str, tuple[str, tuple[str, ...]]]:
    digests = walk.digests
    return {  # in the order the walk reached them: the root first
        name: (digests[name].hex(), tuple(c for c in walk.calls.get(name, ()) if c != name))
        for name in walk.followed
        if name in digests
    }


def code_functions(func: Callable[..., Any]) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Per user function or class ``func``'s identity covers (by qualified name, ``func``
    first): its own digest (which covers what it reaches) and the functions and classes
    it refers to directly. Comparing two of these says which function an edit changed: a
    changed one whose callees did not change.

    Raises:
        UnfingerprintableError: As :func:`code_identity`.
        TypeError: ``func`` is not callable.
    """
    if isinstance(func, _ROOTS):
        code_identity(func)  # refreshes the root's entry when something changed
        entry = _ENTRIES.get(id(func))
        if entry is not None and entry.ref() is func:
            return entry.parts
    if not callable(func):
        raise TypeError(f"code_functions needs a callable, got {type(func).__name__}")
    walk = Walk()
    try:
        walk.callable(func)
    except RecursionError:
        raise UnfingerprintableError(
            qualname(type(func)), "its code refers to code nested deeper than the recursion limit"
        ) from None
    return _parts(walk)


def code_dependencies(func: Callable[..., Any]) -> tuple[str, ...]:
    """The qualified names of the user functions and classes ``func``'s identity covers
    (itself first): what to look at when asking "which edits invalidate this node?".

    Raises:
        UnfingerprintableError: As :func:`code_identity`.
    """
    walk = Walk()
    walk.callable(func)
    return tuple(walk.followed)
