"""How a run uses a cache store: a key per node run, lookups and writes by the orchestrator.

The key of a node run is a pure function of the node's code identity (its source and the
helpers it calls, see ``code.py``), its structure (inputs, outputs) and one *version* per
input. Keys are value-addressed wherever the values are at hand: an input's version is
the fingerprint of its value, whether a root input or another node's output, so the same
value reached through another upstream path is a hit. A node's outputs are fingerprinted
once, when it ran (the fingerprints are stored with the entry, so a hit hands them to the
nodes downstream without fingerprinting anything). Where values are not at hand yet
(``key(..., missing_ok=True)``: remote items resolved before shipping, DaftEngine), an
output's version is derived from its node's key instead; when such an item comes back,
its results are also stored under their value-addressed keys. An output that cannot be
fingerprinted gets a version derived from its node's key too (today's behaviour).

Concurrent runs missing one key compute it once (``flights.py``); a miss leaves a small
record per node in the store (its key, code identity per function, input versions) that
``explain`` compares with to say why a node would re-run.

Versions live in the run's own values dict under ``(VERSION, name)`` keys, which can never
clash with input names (strings) and never reach results (only outputs are collected).
A value that cannot be fingerprinted makes the nodes reading it uncached for that run,
with one warning naming the node and the type.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Hashable, Iterable
from typing import TYPE_CHECKING, Any

from . import flights
from ._hashing import digest128
from ._identity import (
    DERIVED,
    Unversioned,
    is_derived,
    node_identity,
    output_text,
    output_version,
    structure,
)
from ._kinds import KINDS, domain_of, kind_of
from .base import MISSING, Cache, CacheWarning, UnfingerprintableError
from .code import code_functions, code_identity
from .fingerprint import fingerprint
from .versions import VERSION

if TYPE_CHECKING:
    from ..level import Scope
    from ..plan import Step

__all__ = ["VERSION", "CacheRuntime", "node_identity"]

_UNSEEN: Any = object()  # a key not looked up ahead
_KEYED = "\x00key"  # (_KEYED, node name): a key made ahead, in an item's values


class CacheRuntime:
    """One store as used by runs: computes keys, reads hits, writes results.

    Lookups that miss return a *token* for the later ``save``: the key's
    :class:`~hypernodes.cache.flights.Flight` when this run computes it for everyone
    (``save`` and ``release`` land it), or the key itself.

    Args:
        store: The cache store.

    Raises:
        TypeError: ``store`` is not a :class:`~hypernodes.cache.Cache`.
    """

    __slots__ = (
        "_ahead",
        "_domain",
        "_get_entries",
        "_get_entry",
        "_identities",
        "_recorded",
        "blocking",
        "named",
        "recording",
        "store",
        "texts",
        "versioned",
    )

    def __init__(self, store: Cache) -> None:
        kind = KINDS.get(type(store))  # (a runtime is made per run: kept cheap)
        if kind is None:
            if not isinstance(store, Cache):
                hint = " (pass an instance, not the class)" if isinstance(store, type) else ""
                raise TypeError(f"cache must be a hypernodes Cache store, got {store!r}{hint}")
            kind = kind_of(store)
        self.store = store
        # Stores doing I/O are read and written off the event loop (their aget/aput).
        self.blocking = bool(getattr(store, "blocking_io", False))
        self.named = kind.named
        self.versioned = kind.versioned
        self.recording = kind.recording
        self.texts = kind.texts
        self._domain: Hashable = None
        self._get_entry = store.get_entry
        self._get_entries = store.get_entries if kind.batched else None
        # What ``read_ahead`` found for a map's next items, per key: the entry, or, for a
        # key not there, ``flights.landings()`` before it was read (an int); each taken
        # by the first lookup of its key.
        self._ahead: dict[str, Any] = {}
        # Node identities for the life of this runtime (one top-level run): code cannot
        # change meaningfully within a run, and a map looks each node up once per item.
        # Keyed by id() only while the run holds the nodes, never part of a key.
        self._identities: dict[int, tuple[Any, str]] = {}
        # Nodes whose record this run wrote (one record per node and run is enough).
        self._recorded: set[str] = set()

    @property
    def reads_ahead(self) -> bool:
        """Whether the store reads many entries at once (see :meth:`read_ahead`)."""
        return self._get_entries is not None

    @property
    def domain(self) -> Hashable:
        """What runs computing a key of this store share (see ``flights``)."""
        if self._domain is None:
            self._domain = domain_of(self.store)
        return self._domain

    @classmethod
    def create(cls, store: Cache | None) -> CacheRuntime | None:
        """A runtime for ``store``, or ``None`` when there is no store."""
        return None if store is None else cls(store)

    # -- keys ---------------------------------------------------------------------------

    def identity(self, step: Step) -> str:
        """The node's identity (code and structure) as part of its keys.

        Raises:
            UnfingerprintableError: The code or a bound value cannot be fingerprinted.
        """
        node = step.node
        if step.nested is None:
            # A plain node: its code identity is re-checked (cheaply) on every lookup, so
            # an edit is seen at once; the rest of its identity is kept on the step.
            code = code_identity(node.func)
            memo = step.identity
            if memo is None or memo[0] != code:
                memo = step.identity = (code, structure(code, node))
            return memo[1]
        known = self._identities.get(id(node))
        if known is not None and known[0] is node:
            return known[1]
        identity = node_identity(node)
        self._identities[id(node)] = (node, identity)
        return identity

    def version(self, values: dict[Any, Any], name: str) -> str | Unversioned | None:
        """The version of ``values[name]``: the fingerprint of the value (computed once,
        kept in ``values``) or a version derived from its node's key (``None`` when the
        value does not exist yet and has no version)."""
        slot = (VERSION, name)
        version: str | Unversioned | None = values.get(slot)
        if version is None:
            if name not in values:
                return None
            try:
                version = fingerprint(values[name])
            except UnfingerprintableError:
                version = Unversioned(type(values[name]).__qualname__)
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

    def key(
        self,
        step: Step,
        values: dict[Any, Any],
        *,
        missing_ok: bool = False,
        quiet: bool = False,
    ) -> str | None:
        """The key of ``step`` on ``values``, or ``None`` when it cannot be cached this run.

        With ``missing_ok`` (values not at hand: keys resolved before the nodes run
        elsewhere), an input that has neither a value nor a version yet (the output of an
        uncached upstream node) gives ``None`` silently, and the step's outputs get
        versions derived from this key, for the keys downstream. With ``quiet`` (a key
        wanted ahead of the run), ``None`` is silent whatever the reason, and nothing is
        derived.
        """
        node = step.node
        try:
            if step.nested is None:  # the common case, inlined: this is the hit path
                code = code_identity(node.func)
                memo = step.identity
                if memo is None or memo[0] != code:
                    memo = step.identity = (code, structure(code, node))
                identity = memo[1]
            else:
                identity = self.identity(step)
        except UnfingerprintableError as exc:
            if not quiet:
                _warn_uncached(node.name, str(exc))
            return None
        parts = [identity]
        get = values.get
        for slot in step.version_slots:
            version = get(slot)
            if version.__class__ is not str:  # not versioned yet (or not fingerprintable)
                version = self._input_version(step, values, slot[1], missing_ok, quiet)
                if version is None:
                    return None
            parts.append(version)
        key = digest128("\x1f".join(parts).encode()).hex()
        if missing_ok and not quiet:
            for slot in step.output_slots:  # (a supplied output keeps its own fingerprint)
                values[slot] = key + DERIVED + slot[1]
        return key

    def _input_version(
        self, step: Step, values: dict[Any, Any], name: str, missing_ok: bool, quiet: bool
    ) -> str | None:
        version = self.version(values, name)
        if version is None:
            if missing_ok or quiet:
                return None
            raise KeyError(name)
        if isinstance(version, Unversioned):
            if quiet:
                return None
            _warn_uncached(
                step.node.name,
                f"its input {name!r} is a {version.type_name}, which cannot be "
                "fingerprinted reliably",
                hint=f"register one with hypernodes.cache.register_fingerprint({version.type_name})",
            )
            return None
        return version

    def _hit(self, step: Step, versions: tuple[str, ...] | None, values: dict[Any, Any]) -> None:
        """Record the output versions stored with a hit, for the keys downstream."""
        if versions is None:
            return  # (a store that keeps none: downstream fingerprints the values)
        slots = step.output_slots
        if len(versions) == len(slots) == 1:
            values[slots[0]] = versions[0]
        elif len(versions) == len(step.outputs):
            keep = step.keep
            for name, version in zip(step.outputs, versions, strict=True):
                if name not in keep:
                    values[(VERSION, name)] = version

    def _outputs(
        self, step: Step, key: str, result: Any, values: dict[Any, Any] | None
    ) -> tuple[tuple[str, ...], bytes | None]:
        """The versions of a result's outputs (recorded in ``values`` too), and the text
        the store writes for a one-output result that is a list of strs (``None``: none,
        or the store does not take it)."""
        outputs = step.outputs
        if len(outputs) == 1 and step.nested is None:  # the common case, no loops
            if self.texts:
                version, text = output_text(result, key, outputs[0])
            else:
                version, text = output_version(result, key, outputs[0]), None
            slots = step.output_slots  # (empty when the caller supplied the output)
            if values is not None and slots and not is_derived(values.get(slots[0])):
                values[slots[0]] = version
            return (version,), text
        versions = [
            output_version(value, key, name)
            for name, value in zip(outputs, tuple(result), strict=False)
        ]
        if values is not None:
            keep = step.keep
            for name, version in zip(step.outputs, versions, strict=False):
                # (A version derived before the value existed stays: it marks the inputs
                # whose keys downstream were resolved that way, see ``_value_key``.)
                if name not in keep and not is_derived(values.get((VERSION, name))):
                    values[(VERSION, name)] = version
        return tuple(versions), None

    def _value_key(self, step: Step, values: dict[Any, Any]) -> str | None:
        """The value-addressed key of a step whose key was resolved before its inputs
        existed (a remote item, now back), or ``None`` (no such input, or it is gone)."""
        parts = []
        derived = False
        for slot in step.version_slots:
            version = values.get(slot)
            if version.__class__ is not str:
                return None
            if is_derived(version):
                name = slot[1]
                if name not in values:
                    return None
                try:
                    version = fingerprint(values[name])
                except UnfingerprintableError:
                    return None
                derived = True
            parts.append(version)
        if not derived:
            return None
        try:
            identity = self.identity(step)
        except UnfingerprintableError:
            return None
        return digest128("\x1f".join([identity, *parts]).encode()).hex()

    # -- in the thread that owns the run ------------------------------------------------

    def lookup_now(
        self, step: Step, values: dict[Any, Any]
    ) -> tuple[flights.Flight | str | None, tuple[Any] | None]:
        """``lookup`` in the calling thread, for runs that own their thread (inline);
        waiting for another thread computing the same key blocks this one."""
        ahead = self._ahead
        key = values.pop((_KEYED, step.name), None) if ahead else None
        if key is None:
            key = self.key(step, values)
            if key is None:
                return None, None
        entry = ahead.pop(key, _UNSEEN) if ahead else _UNSEEN
        if entry is _UNSEEN:
            seen = flights.landings()
            entry = self._get_entry(key)
        elif entry.__class__ is int:  # read ahead as missing, when the landings were this
            seen, entry = entry, MISSING
        if entry is not MISSING:
            versions = entry[1]
            slots = step.output_slots
            if versions is not None and len(versions) == len(slots) == 1:
                values[slots[0]] = versions[0]  # (``_hit``'s common case: the hit path)
            else:
                self._hit(step, versions, values)
            return key, (entry[0],)
        while True:
            flight, owner = flights.claim(self.domain, key)
            if owner:
                if not flights.landed_since(key, seen):
                    return flight, None
                flights.land(flight)  # stored since it was read, perhaps: read again
            elif not flights.wait_now(flight):
                return key, None  # claimed in this thread: compute without it
            seen = flights.landings()
            entry = self._get_entry(key)
            if entry is not MISSING:
                self._hit(step, entry[1], values)
                return key, (entry[0],)

    def read_ahead(self, steps: Iterable[Step], rows: list[dict[Any, Any]]) -> int:
        """Look up ahead what the next items of a map will look up, for a store that
        reads many entries at once (``lookup_now`` then takes them from memory).

        ``rows`` are the values of items about to run in this thread, one after the
        other. Step by step in plan order, the keys every item can already make are read
        in one ``get_entries`` call (each counted as a lookup), and a hit's output
        versions go into its item's values, as the run itself would put them: they make
        the next step's keys. A key found missing is kept as such, so the run does not
        ask again (unless a run stored it meanwhile, see ``flights.landed_since``). Each key
        is taken once, by the first lookup of it: an item sharing a key with an earlier
        one looks it up itself (a miss of the first is then its hit, staged). Nothing
        here warns or fails: what cannot be looked up ahead is looked up by the run.
        Returns how many entries were found.
        """
        get_entries = self._get_entries
        if get_entries is None:
            return 0
        ahead = self._ahead
        hits = 0
        for step in steps:
            if not step.node.cache:
                continue
            batch: dict[str, dict[Any, Any]] = {}
            slot = (_KEYED, step.name)
            for values in rows:
                key = self.key(step, values, quiet=True)
                if key is None:
                    continue
                values[slot] = key  # (the run's lookup takes it instead of making it)
                if key not in ahead and key not in batch:
                    batch[key] = values
            if not batch:
                continue
            seen = flights.landings()
            try:
                found = get_entries(list(batch))
            except Exception:  # (the run's own lookups report what is wrong)
                return hits
            for key, values in batch.items():
                hit = found.get(key)
                ahead[key] = seen if hit is None else hit
                if hit is not None:
                    hits += 1
                    self._hit(step, hit[1], values)
        return hits

    def forget_ahead(self) -> None:
        """Drop what ``read_ahead`` found and no lookup took (the map is over)."""
        self._ahead.clear()

    def save_now(
        self,
        step: Step,
        token: flights.Flight | str,
        result: Any,
        values: dict[Any, Any] | None = None,
    ) -> None:
        """``save`` in the calling thread, for runs that own their thread (inline)."""
        flight, key = _unpack(token)
        try:
            versions, text = (
                self._outputs(step, key, result, values) if self.versioned else (None, None)
            )
            self._put(step, key, result, versions, text)
            if self.recording and step.name not in self._recorded:
                self._record(step, key, values)
        finally:
            if flight is not None:
                flights.land(flight)

    def release(self, token: flights.Flight | str | None) -> None:
        """Give up a key this run missed without saving it (the node failed, the run was
        cancelled): a run waiting for it then computes it."""
        if type(token) is flights.Flight:
            flights.land(token)

    def _put(
        self,
        step: Step,
        key: str,
        result: Any,
        versions: tuple[str, ...] | None,
        text: bytes | None = None,
    ) -> None:
        store = self.store
        try:
            if text is not None:
                store.put_entry(key, result, versions, node=step.name, text=text)  # type: ignore[call-arg]
            elif self.versioned:
                store.put_entry(key, result, versions, node=step.name)
            elif self.named:
                store.put(key, result, node=step.name)
            else:
                store.put(key, result)
        except Exception as exc:
            _warn_uncached(step.name, f"its result could not be stored: {exc}")

    def _record(self, step: Step, key: str, values: dict[Any, Any] | None) -> None:
        """Keep what ``explain`` compares with: the node's key, code identity per function
        and input versions of this run (once per node and run; failures are ignored, a
        record only ever explains)."""
        self._recorded.add(step.name)
        try:
            self.store.put_record(step.name, self.record(step, key, values))
        except Exception as exc:  # an explanation is not worth failing a run for
            _warn_uncached(step.name, f"its record for explain() could not be written: {exc}")

    def record(self, step: Step, key: str | None, values: dict[Any, Any] | None) -> dict[str, Any]:
        """What a node's record holds (see :meth:`Cache.put_record`).

        Raises:
            UnfingerprintableError: The node's code cannot be fingerprinted.
        """
        identity = self.identity(step)
        functions: dict[str, Any] = {}
        code = identity
        if step.nested is None:
            code = step.identity[0] if step.identity is not None else identity
            functions = {q: [d, list(c)] for q, (d, c) in code_functions(step.node.func).items()}
        inputs: dict[str, str] = {}
        if values is not None:
            for slot in step.version_slots:
                version = values.get(slot)
                if version.__class__ is str:
                    inputs[slot[1]] = version
        return {
            "key": key,
            "identity": identity,
            "code": code,
            "functions": functions,
            "inputs": inputs,
        }

    # -- on the event loop ----------------------------------------------------------------

    async def lookup(
        self, step: Step, args: tuple[Any, ...], values: dict[Any, Any], scope: Scope
    ) -> tuple[flights.Flight | str | None, tuple[Any] | None]:
        """``(key, (value,))`` on a hit, ``(token, None)`` on a miss, ``(None, None)``
        when the step cannot be cached this run. A miss of a key another run is computing
        waits for that run (then a hit, or this run's turn to compute it)."""
        key = self.key(step, values)
        if key is None:
            return None, None
        store = self.store
        seen = flights.landings()
        entry = await store.aget_entry(key) if self.blocking else self._get_entry(key)
        while entry is MISSING:
            flight, owner = flights.claim(self.domain, key)
            if owner:
                if not flights.landed_since(key, seen):
                    return flight, None
                flights.land(flight)  # stored since it was read, perhaps: read again
            else:
                await flights.wait(flight)
            seen = flights.landings()
            entry = await store.aget_entry(key) if self.blocking else self._get_entry(key)
        self._hit(step, entry[1], values)
        return key, (entry[0],)

    async def lookup_key(self, key: str) -> tuple[Any] | None:
        """``(value,)`` when ``key`` is in the store, else ``None``."""
        store = self.store
        value = await store.aget(key) if self.blocking else store.get(key)
        return None if value is MISSING else (value,)

    async def save(
        self,
        step: Step,
        token: flights.Flight | str,
        result: Any,
        values: dict[Any, Any] | None = None,
        scope: Scope | None = None,
    ) -> None:
        """Store a node's result (and the versions of its outputs) under the key of
        ``token``; a value that cannot be stored is skipped with a warning (the run goes
        on). Lands the key's flight, if this run held it."""
        if not self.blocking:
            self.save_now(step, token, result, values)
            if values is not None:
                self._save_by_value(step, result, values)
            return
        flight, key = _unpack(token)
        try:
            versions, text = (
                self._outputs(step, key, result, values) if self.versioned else (None, None)
            )
            store = self.store
            try:
                if text is not None:
                    await store.aput_entry(key, result, versions, node=step.name, text=text)  # type: ignore[call-arg]
                elif self.versioned:
                    await store.aput_entry(key, result, versions, node=step.name)
                elif self.named:
                    await store.aput(key, result, node=step.name)
                else:
                    await store.aput(key, result)
            except Exception as exc:
                _warn_uncached(step.name, f"its result could not be stored: {exc}")
            if self.recording and step.name not in self._recorded:
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(None, self._record, step, key, values)
        finally:
            if flight is not None:
                flights.land(flight)
        if values is not None:
            self._save_by_value(step, result, values)

    def _save_by_value(self, step: Step, result: Any, values: dict[Any, Any]) -> None:
        """A result whose key was resolved before its inputs existed (a remote item, back
        now) is also stored under its value-addressed key, which local runs look up."""
        if not step.version_slots:
            return
        key = self._value_key(step, values)
        if key is not None:
            versions, text = (
                self._outputs(step, key, result, None) if self.versioned else (None, None)
            )
            self._put(step, key, result, versions, text)


def _unpack(token: flights.Flight | str) -> tuple[flights.Flight | None, str]:
    """The flight (``None``: this run does not hold one) and the key of a lookup's token."""
    if isinstance(token, flights.Flight):
        return token, token.key
    return None, token


def _warn_uncached(node: str, why: str, hint: str | None = None) -> None:
    message = f"node {node!r} is not cached in this run: {why}"
    if hint:
        message += f"; {hint}"
    warnings.warn(message, CacheWarning, stacklevel=2)
