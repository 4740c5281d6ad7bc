"""TARGET strings: ``path/to/file.py:attr`` or ``package.module:attr`` to a ``Pipeline``.

A file is imported by path. If it sits inside a package (directories with
``__init__.py``), it is imported as that package's module so relative imports work;
otherwise it becomes a top-level module named after the file, its directory goes first on
``sys.path`` (as ``python file.py`` does, so sibling imports work, here and in spawned
worker processes) and its functions pickle by value (so remote workers need not have the
file). A module name is imported with the working directory first on ``sys.path`` (as
``python -m`` does). ``attr`` may be dotted; a zero-argument callable is called; when
``:attr`` is left out, the module's only ``Pipeline`` is used.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.util
import inspect
import os
import sys
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from ..errors import TargetError
from ..node import Node
from ..pipeline import Pipeline

__all__ = ["Target", "TargetError", "load_target", "parse_target", "restored_sys_path"]

# Marks modules this loader created, so reloading the same file replaces them.
_MARK = "__hypernodes_target__"


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed TARGET.

    Attributes:
        spec: The string as given.
        location: The file path or the dotted module name.
        attr: The attribute path, or ``None`` to pick the module's only pipeline.
        is_file: Whether ``location`` is a file path.
    """

    spec: str
    location: str
    attr: str | None
    is_file: bool


def parse_target(spec: str) -> Target:
    """Split ``spec`` into a location and an attribute path.

    Raises:
        TargetError: The string is empty or its attribute part is not a dotted name.
    """
    if not spec.strip():
        raise TargetError("TARGET is empty; give path/to/file.py:attr or package.module:attr")
    location, sep, attr = spec.rpartition(":")
    # No colon, or a colon that belongs to the path (C:\...): no attribute given.
    if not sep or (attr and not _is_dotted(attr) and ("\\" in attr or "/" in attr)):
        location, attr = spec, ""
    elif not location:
        raise TargetError(f"TARGET {spec!r} has no module or file before ':'")
    elif not attr:
        raise TargetError(f"TARGET {spec!r} ends with ':'; name the pipeline after it")
    elif not _is_dotted(attr):
        raise TargetError(
            f"TARGET {spec!r}: {attr!r} is not an attribute name; use path/to/file.py:attr "
            "or package.module:attr"
        )
    is_file = location.endswith(".py") or "/" in location or os.sep in location
    if not is_file and not _is_dotted(location):
        raise TargetError(f"TARGET {spec!r}: {location!r} is neither a .py file nor a module name")
    return Target(spec, location, attr or None, is_file)


def load_target(spec: str) -> Pipeline:
    """Import ``spec`` and return the pipeline it names (changes ``sys.path``, see above).

    Raises:
        TargetError: The file or module is missing or fails to import (the message shows
            the error and its line), the attribute is missing (pipelines in the module are
            listed), or it is not a pipeline nor a zero-argument function returning one.
    """
    target = parse_target(spec)
    module = _import_file(target) if target.is_file else _import_module(target)
    if target.attr is None:
        return _only_pipeline(target, module)
    value: Any = module
    walked: list[str] = []
    for part in target.attr.split("."):
        if not hasattr(value, part):
            # Name what the user wrote: a file TARGET's module may have an internal name.
            where = target.location if target.is_file else f"module {target.location!r}"
            if walked:
                where = f"{target.location}:{'.'.join(walked)}"
            raise TargetError(
                f"{where} has no attribute {part!r}{_did_you_mean(part, value)}"
                f"{_suggest_pipelines(module, target)}"
            )
        walked.append(part)
        value = getattr(value, part)
    return _as_pipeline(value, target)


@contextlib.contextmanager
def restored_sys_path() -> Iterator[None]:
    """Undo the ``sys.path`` changes made by :func:`load_target` on exit."""
    saved = list(sys.path)
    try:
        yield
    finally:
        sys.path[:] = saved


def _import_file(target: Target) -> ModuleType:
    file = Path(target.location).expanduser()
    if not file.is_file():
        hint = "" if file.suffix == ".py" else " (a file TARGET must be a .py file)"
        raise TargetError(f"file {target.location!r} not found{hint}")
    file = file.resolve()
    parts = [file.stem]
    root = file.parent
    while (root / "__init__.py").is_file() and root.name.isidentifier():
        parts.insert(0, root.name)
        root = root.parent
    if len(parts) > 1 and all(p.isidentifier() for p in parts):
        _prepend_path(str(file.parent))
        _prepend_path(str(root))
        dotted = ".".join(parts)
        module = _import(dotted, target, file)
        loaded = Path(getattr(module, "__file__", None) or "").resolve()
        if loaded != file:
            raise TargetError(
                f"{target.location} is module {dotted!r} of a package, but importing "
                f"{dotted!r} gives {loaded} (another copy comes first on sys.path); "
                f"use TARGET {dotted}:{target.attr or 'ATTR'} or fix the install"
            )
        return module
    name = _script_module_name(file)
    _prepend_path(str(file.parent))
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:  # pragma: no cover - any .py file has a spec
        raise TargetError(f"cannot load {target.location!r} as a Python module")
    module = importlib.util.module_from_spec(spec)
    setattr(module, _MARK, True)
    previous = sys.modules.get(name)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        if previous is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = previous
        if isinstance(exc, Exception):
            raise TargetError(f"cannot import {target.location}: {_describe(exc, file)}") from exc
        raise
    with contextlib.suppress(ImportError):
        import cloudpickle

        cloudpickle.register_pickle_by_value(module)
    return module


def _script_module_name(file: Path) -> str:
    stem = file.stem
    existing = sys.modules.get(stem)
    if stem.isidentifier() and stem not in sys.stdlib_module_names:
        if existing is not None:
            if getattr(existing, _MARK, False):
                return stem
        else:
            try:
                found = importlib.util.find_spec(stem)
            except (ImportError, ValueError):
                found = None
            if found is None or found.origin == str(file):
                return stem
    safe = "".join(c if c.isalnum() else "_" for c in stem)
    return f"_hypernodes_target_{safe}"


def _import_module(target: Target) -> ModuleType:
    _prepend_path(os.getcwd())
    return _import(target.location, target, None)


def _import(name: str, target: Target, file: Path | None) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            raise TargetError(
                f"cannot find module {name!r} (is it installed, or are you in the directory "
                "that contains it?)"
            ) from exc
        where = file or _origin(name)
        raise TargetError(f"cannot import {target.location}: {_describe(exc, where)}") from exc
    except Exception as exc:
        where = file or _origin(name)
        raise TargetError(f"cannot import {target.location}: {_describe(exc, where)}") from exc


def _origin(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    return None if spec is None or spec.origin is None else Path(spec.origin)


def _prepend_path(entry: str) -> None:
    if entry in sys.path:
        sys.path.remove(entry)
    sys.path.insert(0, entry)


def _describe(exc: BaseException, file: Path | None) -> str:
    """``Type: message (file.py, line N)``: where in the user's code an import failed."""
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, SyntaxError) and exc.lineno is not None:
        text = f"{type(exc).__name__}: {exc.msg}"
        return f"{text} ({Path(exc.filename or '?').name}, line {exc.lineno})"
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if not f.filename.startswith("<frozen")
        and "importlib" not in f.filename
        and f.filename != __file__
    ]
    if not frames:
        return text
    mine = [f for f in frames if file is not None and f.filename == str(file)]
    frame = (mine or frames)[-1]
    return f"{text} ({Path(frame.filename).name}, line {frame.lineno})"


def _did_you_mean(name: str, owner: Any) -> str:
    public = [n for n in dir(owner) if not n.startswith("_")]
    close = difflib.get_close_matches(name, public, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _pipelines_in(module: ModuleType) -> list[str]:
    return [name for name, value in vars(module).items() if isinstance(value, Pipeline)]


def _suggest_pipelines(module: ModuleType, target: Target) -> str:
    names = _pipelines_in(module)
    if not names:
        return "; it defines no Pipeline objects"
    listed = ", ".join(f"{target.location}:{n}" for n in names)
    return f"; pipelines in it: {listed}"


def _only_pipeline(target: Target, module: ModuleType) -> Pipeline:
    names = _pipelines_in(module)
    if len(names) == 1:
        pipeline: Pipeline = getattr(module, names[0])
        return pipeline
    if not names:
        raise TargetError(
            f"{target.location} defines no Pipeline object; name one with "
            f"{target.location}:ATTR (a Pipeline or a function returning one)"
        )
    listed = ", ".join(f"{target.location}:{n}" for n in names)
    raise TargetError(f"{target.location} defines several pipelines; choose one: {listed}")


def _as_pipeline(value: Any, target: Target) -> Pipeline:
    if isinstance(value, Pipeline):
        return value
    where = f"{target.location}:{target.attr}"
    if isinstance(value, Node):
        raise TargetError(f"{where} is a node, not a Pipeline; wrap it: Pipeline([{target.attr}])")
    if callable(value) and not isinstance(value, type):
        required = _required_params(value)
        if required:
            raise TargetError(
                f"{where} is a function that needs arguments ({', '.join(required)}); "
                "TARGET must name a Pipeline or a function with no required arguments"
            )
        try:
            made = value()
        except Exception as exc:
            raise TargetError(f"calling {where}() failed: {_describe(exc, None)}") from exc
        if isinstance(made, Pipeline):
            return made
        raise TargetError(f"{where}() returned {type(made).__name__}, not a Pipeline")
    raise TargetError(f"{where} is {type(value).__name__}, not a Pipeline")


def _required_params(fn: Any) -> list[str]:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return []
    return [
        p.name
        for p in sig.parameters.values()
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]


def _is_dotted(text: str) -> bool:
    return all(part.isidentifier() for part in text.split("."))
