"""What one code object contributes to a code identity: its source and bytecode digest,
and the global names (with attribute chains and imports) it refers to.

Both are computed once per code object and kept (code objects are immutable). Which
modules count as the user's (followed) or as libraries (named only) is decided here too.
"""

from __future__ import annotations

import dis
import inspect
import os
import site
import sys
import sysconfig
import threading
import types
import weakref
from typing import Any

from ._encoding import qualname
from ._hashing import digest128
from ._normalize import PARSE_LOCK, normalized_instructions, normalized_source
from .fingerprint import fingerprint_digest

__all__ = [
    "GlobalRef",
    "class_source_digest",
    "code_digest",
    "global_refs",
    "is_user_function",
    "is_user_module",
    "library_ref",
    "library_version",
]

GlobalRef = tuple[str, tuple[str, ...]]
"""``("global", ("helpers", "scale"))`` for ``helpers.scale``; ``("import", (module,
level, name...))`` for an import inside the function."""

_CODE_DIGESTS: dict[int, tuple[types.CodeType, bytes]] = {}
_GLOBAL_REFS: dict[int, tuple[types.CodeType, tuple[GlobalRef, ...]]] = {}
_MAX_CACHED = 50_000  # code objects are small, but a process exec'ing code forever must not grow
_LOCK = threading.Lock()


def _remember(
    cache: dict[int, tuple[types.CodeType, Any]], code: types.CodeType, value: Any
) -> None:
    with _LOCK:
        if len(cache) >= _MAX_CACHED:
            cache.clear()
        cache[id(code)] = (code, value)  # the code object is kept so its id stays unique


def _source(code: types.CodeType, func: types.FunctionType | None = None) -> str | None:
    # Asked for the function, inspect finds its module by name; asked for a bare code
    # object, it maps every loaded module's file to its module first (realpath of each:
    # 10-20 ms on a process's first identity). A wrapper's function would give the source
    # of what it wraps (inspect unwraps it): its code object is asked instead.
    if func is None or func.__code__ is not code or hasattr(func, "__wrapped__"):
        func = None
    try:
        lines, _ = inspect.getsourcelines(code if func is None else func)
    except (OSError, TypeError, IndexError):  # no file, exec'd, or built without source
        return None
    return "".join(lines)


def _const(value: Any) -> Any:
    return (b"code", _bytecode(value)) if isinstance(value, types.CodeType) else value


def _bytecode(code: types.CodeType) -> bytes:
    """Everything that decides behaviour; nothing positional (file, line numbers, the
    placeholders and offsets that follow them) and no docstring (see ``_normalize``)."""
    return fingerprint_digest(
        (
            normalized_instructions(code, _const),
            code.co_names,
            code.co_varnames,
            code.co_freevars,
            code.co_cellvars,
            code.co_argcount,
            code.co_posonlyargcount,
            code.co_kwonlyargcount,
            code.co_flags,
            code.co_name,
        )
    )


def code_digest(code: types.CodeType, func: types.FunctionType | None = None) -> bytes:
    """The digest of a code object's source (when it can be found) and its bytecode,
    both without comments, docstrings, blank lines or formatting (see ``_normalize``).
    ``func``, a function of that code, only makes finding the source faster.

    Both count: the source so that an edit is seen even where bytecode would not differ
    (it always differs when behaviour does), the bytecode so that a file edited on disk
    but not yet re-imported never gives the *running* code the identity of the new text.
    """
    hit = _CODE_DIGESTS.get(id(code))
    if hit is not None and hit[0] is code:
        return hit[1]
    source = _source(code, func)
    text = normalized_source(source) if source is not None else None
    digest = digest128(
        (b"S" + text.encode("utf-8", "surrogatepass") if text is not None else b"-")
        + _bytecode(code)
    )
    _remember(_CODE_DIGESTS, code, digest)
    return digest


_GLOBAL_OPS = frozenset({"LOAD_GLOBAL", "LOAD_NAME"})
_ATTR_OPS = frozenset({"LOAD_ATTR", "LOAD_METHOD"})
_CONST_OPS = frozenset({"LOAD_CONST", "LOAD_SMALL_INT"})


def _refs_of(code: types.CodeType, out: dict[GlobalRef, None]) -> None:
    chain: list[str] = []
    before: list[dis.Instruction] = []  # the two instructions before this one
    importing: tuple[str, str] | None = None
    for ins in dis.get_instructions(code):
        op = ins.opname
        if op in _ATTR_OPS and chain:
            chain.append(ins.argval)
            continue
        if chain:
            out[("global", tuple(chain))] = None
            chain = []
        if op in _GLOBAL_OPS:
            chain = [ins.argval]
        elif op == "IMPORT_NAME":
            # ``LOAD_CONST level; LOAD_CONST fromlist; IMPORT_NAME module``
            first = before[0] if len(before) == 2 else None
            level = first.argval if first is not None and first.opname in _CONST_OPS else 0
            importing = (ins.argval, str(level if isinstance(level, int) else 0))
            out[("import", importing)] = None
        elif op == "IMPORT_FROM" and importing is not None:
            out[("import", (*importing, ins.argval))] = None
        before = [*before[-1:], ins]
    if chain:
        out[("global", tuple(chain))] = None
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _refs_of(const, out)


def global_refs(code: types.CodeType) -> tuple[GlobalRef, ...]:
    """The global names the code (and its nested code) loads, with the attribute chains
    that follow them (``helpers.scale`` -> ``("helpers", "scale")``), and its imports, in
    order of first appearance."""
    hit = _GLOBAL_REFS.get(id(code))
    if hit is not None and hit[0] is code:
        return hit[1]
    out: dict[GlobalRef, None] = {}
    _refs_of(code, out)
    refs = tuple(out)
    _remember(_GLOBAL_REFS, code, refs)
    return refs


# -- user code versus libraries ------------------------------------------------------------


def _library_prefixes() -> tuple[str, ...]:
    paths: set[str] = set()
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        value = sysconfig.get_paths().get(key)
        if value:
            paths.add(value)
    try:
        paths.update(site.getsitepackages())
        paths.add(site.getusersitepackages())
    except AttributeError:  # some embedded / old virtualenv site modules
        pass
    real = {os.path.realpath(p) for p in paths}
    return tuple(sorted(p.rstrip(os.sep) + os.sep for p in real | paths))


LIBRARY_PREFIXES: tuple[str, ...] = _library_prefixes()
"""Directories whose modules are libraries: named by version, never followed."""

_USER: dict[str, bool] = {}


def is_user_module(name: str | None) -> bool:
    """Whether functions of module ``name`` are the user's code (followed into), rather
    than the standard library, site-packages or HyperNodes itself (named only)."""
    if name is None or name == "__main__":
        return True  # exec'd code and notebooks/scripts
    known = _USER.get(name)
    if known is not None:
        return known
    top = name.partition(".")[0]
    module = sys.modules.get(name)
    if top == "hypernodes" or top in sys.stdlib_module_names or name in sys.builtin_module_names:
        user = False
    elif module is None:
        user = True  # made by exec with a module name of its own
    else:
        file = getattr(module, "__file__", None)
        if file is None:
            user = False  # built-in or namespace package
        else:
            path = os.path.realpath(file)
            user = not any(path.startswith(p) for p in LIBRARY_PREFIXES)
    _USER[name] = user
    return user


_LIBRARY_FILES: dict[str, bool] = {}


def is_user_function(f: types.FunctionType) -> bool:
    """Whether ``f`` is the user's code: its module is (see :func:`is_user_module`) and
    its code does not live in a library directory. The file matters for wrappers made by
    library decorators, which copy the user's ``__module__`` (``functools.wraps``)."""
    filename = f.__code__.co_filename
    library = _LIBRARY_FILES.get(filename)
    if library is None:
        if filename.startswith("<"):  # exec'd or generated: judged by its module alone
            library = False
        else:
            path = os.path.realpath(filename)
            library = any(path.startswith(p) for p in LIBRARY_PREFIXES)
        _LIBRARY_FILES[filename] = library
    return not library and is_user_module(getattr(f, "__module__", None))


def library_version(module: str | None) -> str:
    """The version a library reference is tied to (Python's for the standard library)."""
    top = (module or "builtins").partition(".")[0]
    if top in sys.stdlib_module_names or top in sys.builtin_module_names:
        return sys.version
    version = getattr(sys.modules.get(top), "__version__", None)
    return version if isinstance(version, str) else ""


# -- library references and class sources ------------------------------------------------


def _sized(text: str) -> bytes:
    data = text.encode("utf-8", "surrogatepass")
    return b"%x:" % len(data) + data


_SOURCES: dict[int, tuple[weakref.ref[type], bytes]] = {}


def library_ref(obj: Any) -> bytes:
    """A library function or class: its qualified name and its library's version."""
    module = getattr(obj, "__module__", None)
    return b"r" + _sized(qualname(obj)) + _sized(library_version(module))


def class_source_digest(cls: type) -> bytes:
    """The digest of a class's source without comments, docstrings or formatting
    (``b"-"`` when it cannot be found), cached."""
    hit = _SOURCES.get(id(cls))
    if hit is not None and hit[0]() is cls:
        return hit[1]
    try:
        with PARSE_LOCK:  # (it parses the class's module: see ``_normalize``)
            source = inspect.getsource(cls)
    except (OSError, TypeError, IndexError):
        digest = b"-"
    else:
        digest = digest128(normalized_source(source).encode("utf-8", "surrogatepass"))
    key, pop = id(cls), _SOURCES.pop  # bound now: module globals vanish at shutdown

    def forget(_: object) -> None:
        pop(key, None)

    _SOURCES[key] = (weakref.ref(cls, forget), digest)
    return digest
