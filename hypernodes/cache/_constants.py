"""Which values code depends on by value: constants, which cannot change once made.

Where a function refers to a value by name (a module global or a closure variable), a
constant counts by its value; any other object counts only by what it is (its type, or
its class's code), because its state can change under the function, the function's own
side effects included. See ``code.py``.

This module must not import the rest of HyperNodes except the cache's own helpers.
"""

from __future__ import annotations

import dataclasses
import functools
from enum import Enum
from typing import Any

from ._serialize import is_immutable

__all__ = ["is_constant"]


@functools.cache
def _value_types() -> tuple[type, ...]:
    # Imported on first use (only when a code identity meets a non-built-in value).
    import datetime
    import decimal
    import fractions
    import operator
    import pathlib
    import re
    import uuid

    return (
        pathlib.PurePath,
        datetime.date,
        datetime.time,
        datetime.timedelta,
        datetime.timezone,
        decimal.Decimal,
        fractions.Fraction,
        uuid.UUID,
        re.Pattern,
        range,
        operator.itemgetter,
        operator.attrgetter,
        operator.methodcaller,
    )


def is_constant(value: object) -> bool:
    """Whether ``value`` cannot change once made, so code referring to it depends on its
    value: built-in immutables, enum members, the standard library's value types (paths,
    dates and times, decimals, fractions, UUIDs, compiled patterns, ranges, ``operator``
    getters), and tuples, frozensets, named tuples and frozen dataclasses made of them.
    """
    try:
        return _constant(value)
    except RecursionError:
        return False


def _constant(value: Any) -> bool:
    if is_immutable(value):
        return True
    t = type(value)
    if t is tuple or t is frozenset or (isinstance(value, tuple) and hasattr(t, "_fields")):
        return all(_constant(item) for item in value)
    if isinstance(value, Enum):
        return _constant(value._value_)
    params = getattr(t, "__dataclass_params__", None)
    if params is not None and params.frozen and not isinstance(value, type):
        return all(_constant(getattr(value, f.name, None)) for f in dataclasses.fields(value))
    return isinstance(value, _value_types())
