"""Results as JSON: every value becomes something ``json.dumps`` can write, never a crash.

Conversions, in order:

- ``None``, ``bool``, ``int``, ``str`` as they are; finite floats as they are, ``NaN`` and
  the infinities as ``null`` (strict JSON has no spelling for them).
- Mappings as objects (keys that are not strings, numbers, booleans or ``null`` are
  written with ``repr``); lists, tuples, sets (sorted when sortable) and other sequences
  as arrays; enums as their value.
- Dataclass instances as objects of their fields; objects with ``model_dump()``
  (pydantic) through it; NumPy arrays and pandas objects through ``tolist()`` (DataFrames
  as a list of row objects) and NumPy scalars through ``item()``.
- ``datetime`` / ``date`` / ``time`` as ISO 8601 strings, ``timedelta`` as seconds,
  ``Decimal``, ``UUID``, ``Path`` and ``complex`` as strings.
- ``bytes`` as ``{"__bytes__": "<base64>"}``.
- Anything else as ``{"__type__": "module.Class", "__repr__": "<repr>"}``, and a
  container that contains itself as the same with ``"__repr__": "<cycle>"``.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime
import decimal
import enum
import json
import math
import uuid
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

__all__ = ["dumps", "to_jsonable"]


def dumps(value: Any, *, indent: int | None = 2) -> str:
    """``value`` as one strict JSON document (see the module docstring for conversions)."""
    return json.dumps(to_jsonable(value), indent=indent, ensure_ascii=False, allow_nan=False)


def to_jsonable(value: Any) -> Any:
    """A structure of dicts, lists, strings, numbers, booleans and ``None`` for ``value``."""
    return _convert(value, set())


def _convert(value: Any, seen: set[int]) -> Any:
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, enum.Enum):
        return _convert(value.value, seen)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, bytes | bytearray | memoryview):
        return {"__bytes__": base64.b64encode(bytes(value)).decode("ascii")}
    simple = _simple(value)
    if simple is not _NOT_SIMPLE:
        return simple
    key = id(value)
    if key in seen:
        return _fallback(value, "<cycle>")
    seen.add(key)
    try:
        return _container(value, seen)
    finally:
        seen.discard(key)


_NOT_SIMPLE: Any = object()


def _simple(value: Any) -> Any:
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal | uuid.UUID | PurePath | complex):
        return str(value)
    return _NOT_SIMPLE


def _container(value: Any, seen: set[int]) -> Any:
    if isinstance(value, Mapping):
        return {_key(k): _convert(v, seen) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_convert(v, seen) for v in value]
    if isinstance(value, set | frozenset):
        items = list(value)
        with contextlib.suppress(TypeError):
            items.sort()
        return [_convert(v, seen) for v in items]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _convert(getattr(value, f.name), seen) for f in dataclasses.fields(value)}
    converted = _by_protocol(value)
    if converted is not _NOT_SIMPLE:
        return _convert(converted, seen)
    return _fallback(value)


def _by_protocol(value: Any) -> Any:
    """Third-party types by duck typing, so NumPy and pandas are never imported here."""
    module = type(value).__module__.partition(".")[0]
    try:
        if module == "pandas" and type(value).__name__ == "DataFrame":
            return value.to_dict(orient="records")
        if module in ("numpy", "pandas"):
            if callable(getattr(value, "tolist", None)):
                return value.tolist()
            if callable(getattr(value, "item", None)):
                return value.item()
        dump = getattr(value, "model_dump", None)
        if callable(dump) and not isinstance(value, type):
            return dump(mode="json")
    except Exception:
        return _NOT_SIMPLE
    return _NOT_SIMPLE


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, enum.Enum):
        key = key.value
    if key is None or isinstance(key, bool | int | float):
        return json.dumps(key) if not isinstance(key, float) or math.isfinite(key) else str(key)
    simple = _simple(key)
    return simple if isinstance(simple, str) else repr(key)


def _fallback(value: Any, shown: str | None = None) -> dict[str, str]:
    kind = type(value)
    name = (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )
    if shown is None:
        try:
            shown = repr(value)
        except Exception as exc:
            shown = f"<repr failed: {type(exc).__name__}>"
    return {"__type__": name, "__repr__": shown}
