"""How a run uses a cache store: a key per node run, lookups and writes by the orchestrator.

The key of a node run is a pure function of the node's code identity (its source and the
helpers it calls, see ``code.py``), its structure (inputs, outputs) and one *version* per
input: the fingerprint of a root input's value, or, for a value another node produced,
a version derived from that node's key. So keys never depend on memory addresses or
``repr``, editing a node changes its key and, through the versions, every key downstream,
and keys can be computed before upstream values exist (which remote executors use).

Versions live in the run's own values dict under ``(VERSION, name)`` keys, which can never
clash with input names (strings) and never reach results (only outputs are collected).
A value that cannot be fingerprinted makes the nodes reading it uncached for that run,
with one warning naming the node and the type.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ._hashing import digest128
from .base import MISSING, Cache, CacheWarning, UnfingerprintableError
from .code import code_identity
from .fingerprint import fingerprint
from .versions import VERSION

if TYPE_CHECKING:
    from ..scheduler import Scope, Step

__all__ = ["VERSION", "CacheRuntime", "node_identity"]


class _Unversioned:
    """Marks a value that could not be fingerprinted (and why), so we warn only when used."""

    __slots__ = ("type_name",)

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name


def _digest(*parts: str) -> str:
    return digest128("\x1f".join(parts).encode()).hex()


def node_identity(node: Any) -> str:
    """The identity of a node: its code (and helpers') plus its structure.

    For a nested pipeline node, the identities of every inner node, the inner pipeline's
    bound values and the node's mappings: stable across processes, never an address.

    Raises:
        UnfingerprintableError: The code or a bound value cannot be fingerprinted.
    """
    inner = getattr(node, "pipeline", None)
    if inner is None:
        return _structure(code_identity(node.func), node)
    parts = ["pipeline", repr(node.outputs), ",".join(node.inputs)]
    parts.append(repr(sorted(node.input_mapping.items())))
    parts.append(repr(sorted(node.output_mapping.items())))
    parts.append(repr((node.map_over, node.map_mode)))
    parts.extend(node_identity(n) for n in inner.nodes)
    parts.extend(f"{k}={fingerprint(v)}" for k, v in sorted(inner.bound.items()))
    return _digest(*parts)


def _structure(code: str, node: Any) -> str:
    return _digest("node", code, repr(node.output_name), ",".join(node.inputs))


class CacheRuntime:
    """One store as used by runs: computes keys, reads hits, writes results.

    Args:
        store: The cache store.

    Raises:
        TypeError: ``store`` is not a :class:`~hypernodes.cache.Cache`.
    """

    __slots__ = ("_identities", "blocking", "named", "store")

    def __init__(self, store: Cache) -> None:
        if not isinstance(store, Cache):
            hint = " (pass an instance, not the class)" if isinstance(store, type) else ""
            raise TypeError(f"cache must be a hypernodes Cache store, got {store!r}{hint}")
        self.store = store
        # Stores doing I/O are read and written off the event loop (their aget/aput).
        self.blocking = bool(getattr(store, "blocking_io", False))
        # Stores that record which node wrote an entry (``hypernodes cache ls --node``);
        # a user's store written before ``put(..., node=)`` existed is called without it.
        self.named = _takes_node(store)
        # Node identities for the life of this runtime (one top-level run): code cannot
        # change meaningfully within a run, and a map looks each node up once per item.
        # Keyed by id() only while the run holds the nodes, never part of a key.
        self._identities: dict[int, tuple[Any, str]] = {}

    @classmethod
    def create(cls, store: Cache | None) -> CacheRuntime | None:
        """A runtime for ``store``, or ``None`` when there is no store."""
        return None if store is None else cls(store)

    def _identity(self, step: Step) -> str:
        node = step.node
        if step.nested is None:
            # A plain node: its code identity is re-checked (cheaply) on every lookup, so
            # an edit is seen at once; the rest of its identity is kept on the step.
            code = code_identity(node.func)
            memo = step.identity
            if memo is None or memo[0] != code:
                memo = step.identity = (code, _structure(code, node))
            return memo[1]
        known = self._identities.get(id(node))
        if known is not None and known[0] is node:
            return known[1]
        identity = node_identity(node)
        self._identities[id(node)] = (node, identity)
        return identity

    def version(self, values: dict[Any, Any], name: str) -> str | _Unversioned | None:
        """The version of ``values[name]``: its upstream-derived version or fingerprint
        (``None`` when the value does not exist yet and has no version)."""
        slot = (VERSION, name)
        version: str | _Unversioned | None = values.get(slot)
        if version is None:
            if name not in values:
                return None
            try:
                version = fingerprint(values[name])
            except UnfingerprintableError:
                version = _Unversioned(type(values[name]).__qualname__)
            values[slot] = version
        return version

    def prime(self, values: dict[Any, Any], names: Iterable[str]) -> None:
        """Fingerprint shared values once (e.g. a map's shared inputs, before copying).

        ``names`` may be ``values`` itself (or a view of it): the names are read before
        any version slot is added to ``values``.
        """
        for name in tuple(names):
            if name in values:
                self.version(values, name)

    def key(self, step: Step, values: dict[Any, Any], *, missing_ok: bool = False) -> str | None:
        """The key of ``step`` on ``values``, or ``None`` when it cannot be cached this run.

        Also records the versions of the step's outputs in ``values``. With
        ``missing_ok``, an input that has neither a value nor a version yet (the output of
        an uncached upstream node, before it ran) gives ``None`` silently.
        """
        node = step.node
        try:
            if step.nested is None:  # the common case, inlined: this is the hit path
                code = code_identity(node.func)
                memo = step.identity
                if memo is None or memo[0] != code:
                    memo = step.identity = (code, _structure(code, node))
                identity = memo[1]
            else:
                identity = self._identity(step)
        except UnfingerprintableError as exc:
            _warn_uncached(node.name, str(exc))
            return None
        parts = [identity]
        get = values.get
        for slot in step.version_slots:
            version = get(slot)
            if version.__class__ is not str:  # not versioned yet (or not fingerprintable)
                version = self._input_version(step, values, slot[1], missing_ok)
                if version is None:
                    return None
            parts.append(version)
        key = digest128("\x1f".join(parts).encode()).hex()
        for slot in step.output_slots:  # (a supplied output keeps its own fingerprint)
            values[slot] = key + slot[1]
        return key

    def _input_version(
        self, step: Step, values: dict[Any, Any], name: str, missing_ok: bool
    ) -> str | None:
        version = self.version(values, name)
        if version is None:
            if missing_ok:
                return None
            raise KeyError(name)
        if isinstance(version, _Unversioned):
            _warn_uncached(
                step.node.name,
                f"its input {name!r} is a {version.type_name}, which cannot be "
                "fingerprinted reliably",
                hint=f"register one with hypernodes.cache.register_fingerprint({version.type_name})",
            )
            return None
        return version

    def lookup_now(
        self, step: Step, values: dict[Any, Any]
    ) -> tuple[str | None, tuple[Any] | None]:
        """``lookup`` in the calling thread, for runs that own their thread (inline)."""
        key = self.key(step, values)
        if key is None:
            return None, None
        value = self.store.get(key)
        return key, None if value is MISSING else (value,)

    def save_now(self, step: Step, key: str, result: Any) -> None:
        """``save`` in the calling thread, for runs that own their thread (inline)."""
        try:
            if self.named:
                self.store.put(key, result, node=step.name)
            else:
                self.store.put(key, result)
        except Exception as exc:
            _warn_uncached(step.name, f"its result could not be stored: {exc}")

    async def lookup(
        self, step: Step, args: tuple[Any, ...], values: dict[Any, Any], scope: Scope
    ) -> tuple[str | None, tuple[Any] | None]:
        """``(key, (value,))`` on a hit, ``(key, None)`` on a miss, ``(None, None)`` when
        the step cannot be cached this run."""
        key = self.key(step, values)
        if key is None:
            return None, None
        return key, await self.lookup_key(key)

    async def lookup_key(self, key: str) -> tuple[Any] | None:
        """``(value,)`` when ``key`` is in the store, else ``None``."""
        store = self.store
        value = await store.aget(key) if self.blocking else store.get(key)
        return None if value is MISSING else (value,)

    async def save(
        self,
        step: Step,
        key: str,
        result: Any,
        values: dict[Any, Any] | None = None,
        scope: Scope | None = None,
    ) -> None:
        """Store a node's result under ``key``; a value that cannot be stored is skipped
        with a warning (the run goes on)."""
        store = self.store
        node = {"node": step.name} if self.named else {}
        try:
            if self.blocking:
                await store.aput(key, result, **node)
            else:
                store.put(key, result, **node)
        except Exception as exc:
            _warn_uncached(step.name, f"its result could not be stored: {exc}")


def _takes_node(store: Cache) -> bool:
    """Whether ``store.put`` (and ``aput``) take ``node=``."""
    try:
        params = inspect.signature(store.put).parameters
    except (TypeError, ValueError):
        return False
    return "node" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _warn_uncached(node: str, why: str, hint: str | None = None) -> None:
    message = f"node {node!r} is not cached in this run: {why}"
    if hint:
        message += f"; {hint}"
    warnings.warn(message, CacheWarning, stacklevel=2)
