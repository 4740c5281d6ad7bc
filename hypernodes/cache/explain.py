"""``Pipeline.explain``: which nodes a run would take from the cache, and why the others
would run, without running any node.

Keys are computed as a run computes them (``CacheRuntime.key``): root inputs are
fingerprinted, and a hit hands the output fingerprints stored with its entry to the nodes
downstream. A miss is explained against the node's record in the store (its last key,
code identity per function and input versions, see ``CacheRuntime.record``). What a node
that will run returns is not known before it runs, so the nodes reading it are reported
as misses because of it ("upstream changed"): with value-addressed keys they may still
hit, when it returns what it returned before.

This module must not import the plan, the engines or the rest of HyperNodes above the
cache: ``Pipeline.explain`` hands it the compiled plan, the values and the store.
"""

from __future__ import annotations

import html
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from .base import MISSING, Cache, UnfingerprintableError
from .code import code_functions
from .fingerprint import fingerprint
from .runtime import CacheRuntime
from .versions import VERSION

if TYPE_CHECKING:
    from ..plan import Plan, Step

__all__ = ["REASONS", "Explanation", "Row", "explain"]

REASONS = (
    "cached",
    "code changed",
    "input changed",
    "upstream changed",
    "never computed",
    "not in store",
    "not cacheable",
    "cache=False",
    "no cache",
)
"""Every ``Row.reason``: ``cached`` for a hit; for a miss, the first that applies, in the
order of the checks: no store (``no cache``), the node opted out (``cache=False``), its
code or an input cannot be fingerprinted (``not cacheable``); when it reads the output of
a node that will run, its code changed since its last record (``code changed``), else
``upstream changed``; otherwise, when its key is not in the store: no record (``never
computed``), its code changed, a root input's value changed (``input changed``), a node's
output changed (``upstream changed``), else it was computed with this very key and is gone
(``not in store``: evicted, expired or cleared)."""


@dataclass(frozen=True, slots=True)
class Row:
    """One node of an explanation.

    Attributes:
        node: The node's name.
        status: ``"hit"`` or ``"miss"``.
        reason: One of :data:`REASONS`.
        detail: The reason in words ("helper 'mod.scale' changed").
        names: What the reason is about: the changed functions, inputs or upstream
            nodes, the value that cannot be fingerprinted (empty when not applicable).
    """

    node: str
    status: str
    reason: str
    detail: str
    names: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The row as JSON-able data."""
        data = asdict(self)
        data["names"] = list(self.names)
        return data


class Explanation:
    """What a run would do with the cache, node by node (in the order they would run).

    ``str()`` is a table, one line per node; :attr:`rows` the same as data.
    """

    __slots__ = ("_rows", "pipeline")

    def __init__(self, pipeline: str, rows: list[Row]) -> None:
        self.pipeline = pipeline
        self._rows = tuple(rows)

    @property
    def rows(self) -> list[dict[str, Any]]:
        """One dict per node: ``node``, ``status``, ``reason``, ``detail``, ``names``."""
        return [row.as_dict() for row in self._rows]

    def __iter__(self) -> Iterator[Row]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, node: str) -> Row:
        """The row of the node named ``node``.

        Raises:
            KeyError: No node of that name would run.
        """
        for row in self._rows:
            if row.node == node:
                return row
        raise KeyError(node)

    @property
    def hits(self) -> list[str]:
        """The nodes that would come from the cache."""
        return [r.node for r in self._rows if r.status == "hit"]

    @property
    def misses(self) -> list[str]:
        """The nodes that would run."""
        return [r.node for r in self._rows if r.status == "miss"]

    def __str__(self) -> str:
        header = ("node", "cache", "why")
        lines = [(r.node, r.status, r.detail) for r in self._rows]
        width = [max(len(x[i]) for x in [header, *lines]) for i in range(2)]
        out = [f"{header[0]:<{width[0]}}  {header[1]:<{width[1]}}  {header[2]}"]
        out.append(f"{'-' * width[0]}  {'-' * width[1]}  {'-' * 3}")
        out.extend(f"{n:<{width[0]}}  {s:<{width[1]}}  {d}" for n, s, d in lines)
        return "\n".join(out)

    def _repr_html_(self) -> str:
        cells = "".join(
            f"<tr><td><code>{html.escape(r.node)}</code></td>"
            f"<td style='color:{'green' if r.status == 'hit' else '#b45309'}'>{r.status}</td>"
            f"<td>{html.escape(r.detail)}</td></tr>"
            for r in self._rows
        )
        head = "<tr><th>node</th><th>cache</th><th>why</th></tr>"
        return f"<table>{head}{cells}</table>"

    def __repr__(self) -> str:
        hits = sum(r.status == "hit" for r in self._rows)
        return f"<Explanation of {self.pipeline!r}: {hits} hits, {len(self._rows) - hits} misses>"


class _Level:
    """What ``PipelineNode.cache_for`` reads of a level: its cache runtime."""

    __slots__ = ("cache",)

    def __init__(self, cache: CacheRuntime | None) -> None:
        self.cache = cache


def explain(plan: Plan, values: dict[Any, Any], store: Cache | None, pipeline: str) -> Explanation:
    """Explain ``plan`` on ``values`` (its inputs, defaults and bound values) against
    ``store`` (``None``: the pipeline has no cache). Nothing runs; only root inputs are
    fingerprinted, and stored values are never read (except from a store that keeps no
    output versions, whose hits are read and fingerprinted).

    Raises:
        KeyError: A value the plan needs is not in ``values``.
    """
    runtime = CacheRuntime.create(store)
    produced: dict[str, str] = {o: s.name for s in plan.steps for o in s.outputs}
    running: dict[str, str] = {}  # output -> the node that will run to make it
    rows = []
    for step in plan.steps:
        row = _explain_step(step, values, runtime, produced, running)
        if row.status == "miss":
            for name in step.outputs:
                running[name] = step.name
        rows.append(row)
    return Explanation(pipeline, rows)


def _explain_step(
    step: Step,
    values: dict[Any, Any],
    outer: CacheRuntime | None,
    produced: Mapping[str, str],
    running: Mapping[str, str],
) -> Row:
    node = step.node
    runtime = outer
    if step.nested is not None and node.cache:
        runtime = step.nested.cache_for(_Level(outer))  # type: ignore[arg-type]
    name = step.name
    if runtime is None:
        return Row(name, "miss", "no cache", "no cache store")
    if not node.cache:
        why = "a node inside has cache=False" if step.nested is not None else "cache=False"
        return Row(name, "miss", "cache=False", why)
    try:
        identity = runtime.identity(step)
    except UnfingerprintableError as exc:
        return Row(name, "miss", "not cacheable", f"its code cannot be fingerprinted: {exc}")
    upstream: list[str] = []
    for input_name in node.inputs:
        if input_name in running:
            upstream.append(running[input_name])
            continue
        version = runtime.version(values, input_name)
        if version is None:
            if input_name not in produced:
                raise KeyError(input_name)
            upstream.append(produced[input_name])  # a hit whose outputs have no versions
            continue
        if version.__class__ is not str:
            kind = getattr(version, "type_name", "value")
            return Row(
                name,
                "miss",
                "not cacheable",
                f"input {input_name!r} is a {kind}, which cannot be fingerprinted "
                f"(register one with hypernodes.cache.register_fingerprint({kind}))",
                (input_name,),
            )
    store = runtime.store
    if upstream:
        changed = _code_change(step, store.get_record(name), identity)
        if changed is not None:
            return changed
        nodes = tuple(dict.fromkeys(upstream))
        detail = (
            f"{_names('upstream node', nodes)} re-runs first (a hit if {_its(nodes)} unchanged)"
        )
        return Row(name, "miss", "upstream changed", detail, nodes)
    key = runtime.key(step, values)
    assert key is not None  # every input has a version, the identity is known
    versions = store.entry_versions(key)
    if versions is not MISSING:
        _record_outputs(step, key, versions, values, store)
        return Row(name, "hit", "cached", "cached")
    record = store.get_record(name)
    if record is None:
        return Row(name, "miss", "never computed", "never computed (no record in the store)")
    changed = _code_change(step, record, identity)
    if changed is not None:
        return changed
    old = record.get("inputs") or {}
    diff = [n for n in node.inputs if old.get(n) != values.get((VERSION, n))]
    roots = tuple(n for n in diff if n not in produced)
    nodes = tuple(dict.fromkeys(produced[n] for n in diff if n in produced))
    if roots:
        return Row(name, "miss", "input changed", f"{_names('input', roots)} changed", roots)
    if nodes:
        detail = f"{_names('upstream node', nodes)} returned a different value"
        return Row(name, "miss", "upstream changed", detail, nodes)
    return Row(
        name,
        "miss",
        "not in store",
        "computed before with these inputs, no longer in the store (evicted, expired or cleared)",
    )


def _code_change(step: Step, record: dict[str, Any] | None, identity: str) -> Row | None:
    """A row saying which function changed, or ``None`` when the node's code did not
    change since its record (or there is none)."""
    if record is None or record.get("identity") == identity:
        return None
    name = step.name
    if step.nested is not None:
        return Row(name, "miss", "code changed", "a node of the nested pipeline changed")
    code = step.identity[0] if step.identity is not None else None
    if record.get("code") == code:
        detail = "its definition changed (inputs, outputs or name)"
        return Row(name, "miss", "code changed", detail)
    old = record.get("functions") or {}
    try:
        new = code_functions(step.node.func)
    except UnfingerprintableError:
        new = {}
    changed = {q for q, (digest, _) in new.items() if (old.get(q) or [None])[0] != digest}
    # A function's digest covers what it calls: the edit is in a changed function none
    # of whose callees changed (a helper), else in the callers.
    culprits = sorted(q for q in changed if not changed.intersection(new[q][1]))
    if not culprits:
        return Row(name, "miss", "code changed", "its code changed")
    root = next(iter(new), None)
    words = [f"{'function' if q == root else 'helper'} {q!r}" for q in culprits]
    return Row(name, "miss", "code changed", f"{', '.join(words)} changed", tuple(culprits))


def _record_outputs(
    step: Step, key: str, versions: Any, values: dict[Any, Any], store: Cache
) -> None:
    """Give the nodes downstream the versions of a hit's outputs (without its value when
    the store recorded them)."""
    if versions is None:  # a store keeping no versions: read the value, fingerprint it
        value = store.get(key)
        parts = (value,) if len(step.outputs) == 1 and step.nested is None else tuple(value)
        found = []
        for part in parts:
            try:
                found.append(fingerprint(part))
            except UnfingerprintableError:
                return
        versions = tuple(found)
    if len(versions) != len(step.outputs):
        return
    for name, version in zip(step.outputs, versions, strict=True):
        if name not in step.keep:
            values[(VERSION, name)] = version


def _names(kind: str, names: tuple[str, ...]) -> str:
    quoted = ", ".join(repr(n) for n in names)
    return f"{kind} {quoted}" if len(names) == 1 else f"{kind}s {quoted}"


def _its(names: tuple[str, ...]) -> str:
    return "its value is" if len(names) == 1 else "their values are"
