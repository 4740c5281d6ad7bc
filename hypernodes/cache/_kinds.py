"""What a cache store supports beyond ``get`` / ``put``, decided once per store type from
the methods it defines (a user's store written against an older interface is called the
way it expects), and which stores are one store for single flight."""

from __future__ import annotations

import inspect
from collections.abc import Hashable
from typing import Any

from .base import Cache

__all__ = ["KINDS", "Kind", "domain_of", "kind_of"]


class Kind:
    """What a store type supports beyond get / put, decided once per type."""

    __slots__ = ("batched", "named", "recording", "texts", "versioned")

    def __init__(self, store: Cache) -> None:
        cls = type(store)
        # Stores that record which node wrote an entry (``hypernodes cache ls --node``);
        # a user's store written before ``put(..., node=)`` existed is called without it.
        self.named = _takes_node(store)
        # Stores keeping output versions with their entries, and node records.
        self.versioned = cls.put_entry is not Cache.put_entry
        # Stores writing a list of strs as its text, handed over by the fingerprint.
        self.texts = (
            self.versioned
            and _takes(store.put_entry, "text", named=True)
            and _takes(store.aput_entry, "text", named=True)
        )
        self.recording = cls.put_record is not Cache.put_record
        # Stores reading many entries at once (a map reads ahead through them), unless a
        # subclass overrides ``get_entry`` below them: its lookups then go through it.
        self.batched = cls.get_entries is not Cache.get_entries and issubclass(
            _owner(cls, "get_entries"), _owner(cls, "get_entry")
        )


KINDS: dict[type, Kind] = {}
"""The kind of each store type seen, decided once per type."""


def kind_of(store: Cache) -> Kind:
    """The kind of ``store``'s type (decided on first sight)."""
    kind = KINDS.get(type(store))
    if kind is None:
        kind = KINDS[type(store)] = Kind(store)
    return kind


def domain_of(store: Cache) -> Hashable:
    """What two store objects share when they are one store (for single flight): a
    directory's path, else the object itself."""
    path = getattr(store, "path", None)
    return ("path", path) if isinstance(path, str) else id(store)


def _owner(cls: type, name: str) -> type:
    """The class in ``cls``'s MRO that defines ``name``."""
    return next(c for c in cls.__mro__ if name in vars(c))


def _takes_node(store: Cache) -> bool:
    """Whether ``store.put`` (and ``aput``) take ``node=``."""
    return _takes(store.put, "node")


def _takes(method: Any, name: str, *, named: bool = False) -> bool:
    """Whether ``method`` takes the keyword argument ``name`` (``named``: by that name,
    not through ``**kwargs``)."""
    try:
        params = inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False
    if name in params:
        return True
    return not named and any(p.kind is p.VAR_KEYWORD for p in params.values())
