"""Compiled plans: what to run for some outputs, with everything the hot loop needs.

A ``Plan`` is compiled once per (requested outputs, provided names) and reused by every
run and map item. ``run_sync_steps`` is the innermost loop of every sequential run.
This module must not await anything: the scheduler does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Protocol

from .cache.versions import VERSION
from .errors import NodeError
from .graph import Graph, Selection
from .layers.chain import Attempt, compose
from .layers.place import Gauge
from .resources import wire_resources

if TYPE_CHECKING:
    from .level import Scope
    from .node import Node

__all__ = [
    "VERSION",
    "NestedRunner",
    "Plan",
    "Step",
    "compile_plan",
]


class NestedRunner(Protocol):
    """What the scheduler needs from a node that runs a whole pipeline (``PipelineNode``)."""

    def cache_for(self, scope: Scope) -> Any: ...

    async def run_nested(self, args: tuple[Any, ...], scope: Scope) -> tuple[Any, ...]: ...


class Step:
    """One node of a plan, with everything the hot loop needs precomputed."""

    __slots__ = (
        "attempt",
        "call",
        "children",
        "fn",
        "gather",
        "gauge",
        "identity",
        "is_async",
        "keep",
        "n_parents",
        "name",
        "nested",
        "node",
        "once",
        "out",
        "output_slots",
        "outputs",
        "simple",
        "version_slots",
    )

    def __init__(
        self, node: Node, names: Sequence[str], provided: frozenset[str] = frozenset()
    ) -> None:
        self.node = node
        # Outputs the caller supplied: a multi-output node that must still run (for its
        # other outputs) does not overwrite them.
        self.keep = provided.intersection(node.outputs)
        self.name = node.name
        self.fn = _positional(node)
        self.outputs = node.outputs
        self.is_async = node.is_async
        self.nested: NestedRunner | None = node if hasattr(node, "run_nested") else None  # type: ignore[assignment]
        # A result stored as is (one output); a nested run returns a tuple of its outputs.
        single = isinstance(node.output_name, str) and self.nested is None
        self.out = node.outputs[0] if single and not self.keep else None
        # The per-attempt layers (retry, limit, timeout, placement), or None for a plain
        # node: a single attempt, its placement alone.
        self.attempt: Attempt | None = compose(node)
        self.once = self.attempt is None
        self.simple = not self.is_async and self.nested is None and self.once
        self.gather = _gatherer(names)
        # How long its sync body takes in a worker thread: cheap ones run inline
        # (``layers.place``).
        self.gauge = Gauge(node.name)
        self.call = _caller(self.fn, names)
        self.children: tuple[int, ...] = ()
        self.n_parents = 0
        # (code identity, node identity) of the last cache lookup: reused while the code
        # identity (re-checked on every lookup) stays the same.
        self.identity: tuple[str, str] | None = None
        # Where the cache runtime finds the versions of the inputs and records the outputs'.
        self.version_slots = tuple((VERSION, n) for n in node.inputs)
        self.output_slots = tuple((VERSION, n) for n in node.outputs if n not in self.keep)

    def store(self, result: Any, values: dict[str, Any]) -> None:
        """Put a node's return value into ``values`` (unpacking tuple outputs)."""
        if self.out is not None:
            values[self.out] = result
            return
        outs = self.outputs
        parts = None
        # A str, bytes or mapping is one value, not a tuple to unpack into characters/keys.
        if not isinstance(result, str | bytes | bytearray | Mapping):
            try:
                parts = tuple(result)
            except TypeError:
                parts = None
        if parts is None or len(parts) != len(outs):
            got = f"{len(parts)} values" if parts is not None else type(result).__name__
            raise NodeError(
                self.name,
                detail=f"declares {len(outs)} outputs {outs!r} but returned {got}; return a "
                f"tuple of {len(outs)} values",
            )
        self.put(parts, values)

    def put(self, parts: Sequence[Any], values: dict[str, Any]) -> None:
        """Store one value per output, except those the caller supplied (``keep``)."""
        if self.keep:
            values.update(
                (n, v) for n, v in zip(self.outputs, parts, strict=True) if n not in self.keep
            )
        else:
            values.update(zip(self.outputs, parts, strict=True))


def _positional(node: Node) -> Callable[..., Any]:
    """The node's callable, taking every input positionally (keyword-only ones included)."""
    fn = node.func
    kw = node.call_keyword
    if not kw:
        return fn
    n = len(node.call_positional)

    def call(*args: Any) -> Any:
        return fn(*args[:n], **dict(zip(kw, args[n:], strict=True)))

    call.__name__ = getattr(fn, "__name__", node.name)
    call.__wrapped__ = fn  # type: ignore[attr-defined]
    return call


def _gatherer(names: Sequence[str]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    if not names:
        return lambda values: ()
    if len(names) == 1:
        (only,) = names
        return lambda values: (values[only],)
    return itemgetter(*names)


def _caller(fn: Callable[..., Any], names: Sequence[str]) -> Callable[[dict[str, Any]], Any]:
    # Specialised for the common arities: this is the innermost loop of every run.
    if not names:
        return lambda v: fn()
    if len(names) == 1:
        (a,) = names
        return lambda v: fn(v[a])
    if len(names) == 2:
        a, b = names
        return lambda v: fn(v[a], v[b])
    if len(names) == 3:
        a, b, c = names
        return lambda v: fn(v[a], v[b], v[c])
    get = itemgetter(*names)
    return lambda v: fn(*get(v))


class Plan:
    """What to run for some outputs given some provided names, compiled once.

    Attributes:
        steps: The nodes to run, in topological order.
        outputs: The names returned to the caller.
        optional: Defaults for optional inputs that were not provided.
        segments: For sequential runs: ``(True, steps)`` for a run of plain sync steps,
            ``(False, (step,))`` for any other step.
        roots: Indices of steps whose inputs are all provided.
        simple: Whether every step is a plain sync call (no async, retries, timeout,
            limits, nesting), so a whole run can be one synchronous call.
        nested: Whether some step runs a nested pipeline.
        linear: Whether the steps form one chain (one root, at most one child each):
            nothing in it can run concurrently, so it runs in order in one task.
        resources: The steps of resources (each makes a handle, see
            ``hypernodes.resources``).
        limited: Whether some node, at any depth, holds a ``Limit`` (its attempts must be
            granted by this process, so whole items are never shipped elsewhere).
        waits: Whether some node, at any depth, may wait between attempts (a limit, a
            retry's backoff): a map then lets more items be in flight than it has workers,
            bounding the attempts instead (waiting items hold no worker).
    """

    __slots__ = (
        "limited",
        "linear",
        "nested",
        "optional",
        "outputs",
        "resources",
        "roots",
        "segments",
        "simple",
        "steps",
        "waits",
    )

    def __init__(
        self,
        graph: Graph,
        selection: Selection,
        outputs: tuple[str, ...],
        provided: frozenset[str] = frozenset(),
        held: frozenset[str] = frozenset(),
    ) -> None:
        position = {idx: k for k, idx in enumerate(selection.order)}
        steps = [Step(node, node.inputs, provided) for node in selection.nodes]
        # Resources: their steps make handles; the steps reading them resolve handles.
        self.resources = wire_resources(steps, graph.nodes, graph.producer, held)
        children: list[list[int]] = [[] for _ in steps]
        producer = graph.producer
        for k, node in enumerate(selection.nodes):
            # (From the selected node's inputs: a narrowed nested node may read fewer.)
            parents = {
                position[producer[name]]
                for name in node.inputs
                if name in producer and producer[name] in position
            }
            steps[k].n_parents = len(parents)
            for p in parents:
                children[p].append(k)
        for step, kids in zip(steps, children, strict=True):
            step.children = tuple(kids)
        self.steps = tuple(steps)
        self.outputs = outputs
        self.optional = selection.optional
        self.roots = tuple(k for k, s in enumerate(steps) if s.n_parents == 0)
        self.simple = all(s.simple for s in steps)
        self.linear = len(self.roots) <= 1 and all(len(s.children) <= 1 for s in steps)
        self.nested = any(s.nested is not None for s in steps)
        self.limited = any(s.node.limited for s in steps)
        self.waits = any(s.node.waits for s in steps)
        segments: list[tuple[bool, tuple[Step, ...]]] = []
        run: list[Step] = []
        for s in steps:
            if s.simple:
                run.append(s)
                continue
            if run:
                segments.append((True, tuple(run)))
                run = []
            segments.append((False, (s,)))
        if run:
            segments.append((True, tuple(run)))
        self.segments = tuple(segments)

    def collect(self, values: dict[str, Any]) -> dict[str, Any]:
        """The result dict of one run."""
        return {name: values[name] for name in self.outputs}


def compile_plan(
    graph: Graph,
    selection: Selection,
    outputs: tuple[str, ...],
    provided: frozenset[str] = frozenset(),
    held: frozenset[str] = frozenset(),
) -> Plan:
    """Compile the steps for ``selection`` given the ``provided`` names (``held``: those of
    them that carry resource handles, from an enclosing pipeline); see :class:`Plan`."""
    return Plan(graph, selection, outputs, provided, held)
