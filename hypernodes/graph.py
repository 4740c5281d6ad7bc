"""Build and validate a pipeline's dependency graph once, and select what an output needs.

The graph is plain adjacency data (dicts and tuples): building it is linear in the number
of nodes and edges, and it needs no heavy import, so ``import hypernodes`` stays light. A
networkx ``DiGraph`` view is built on demand for introspection (``Pipeline.graph``).

This module must not run nodes, know about engines, caches or callbacks, or import
asyncio: it answers questions about structure only.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import CycleError, DuplicateOutputError, PipelineDefinitionError
from .node import Node

if TYPE_CHECKING:
    import networkx as nx

__all__ = ["UNNAMED", "Graph", "Selection"]

UNNAMED = "pipeline"
"""The name of a pipeline given none (a nested one is then named after its outputs)."""


@dataclass(frozen=True, slots=True)
class Selection:
    """The part of a graph needed to compute some outputs from some provided names.

    Attributes:
        order: Indices of the nodes to run, in topological order.
        nodes: The node to run at each position of ``order``: the graph's node, or the
            graph's node narrowed to the outputs needed of it.
        required: Root inputs that must be supplied, each with the nodes that need it.
        optional: Root inputs that may be omitted, with the default used when they are.
    """

    order: tuple[int, ...]
    nodes: tuple[Node, ...]
    required: dict[str, tuple[int, ...]]
    optional: dict[str, Any]


class Graph:
    """The validated structure of a list of nodes.

    Attributes:
        nodes: The nodes in declaration order.
        producer: Maps each output name to the index of the node producing it.
        consumers: Maps every name (input or output) to the indices of nodes reading it.
        order: All node indices in topological order (ties broken by declaration order).
        root_inputs: Names read by some node and produced by none, in first-use order.
        defaults: Default values of the optional root inputs (those every reader of
            which has a default).
    """

    __slots__ = ("consumers", "defaults", "nodes", "order", "producer", "root_inputs")

    def __init__(self, nodes: Sequence[Node]) -> None:
        """Validate ``nodes`` and index them.

        Raises:
            TypeError: An element is not a ``Node``.
            DuplicateOutputError: Two nodes produce the same output.
            PipelineDefinitionError: Two nodes share a name, or disagree on a default.
            CycleError: The nodes depend on each other in a cycle.
        """
        self.nodes = tuple(nodes)
        self.producer: dict[str, int] = {}
        self.consumers: dict[str, list[int]] = {}
        names: dict[str, int] = {}
        for i, n in enumerate(self.nodes):
            if not isinstance(n, Node):
                hint = " (did you forget @node?)" if callable(n) else ""
                raise TypeError(f"Pipeline nodes must be Node objects, got {n!r}{hint}")
            if n.name in names:
                renamed = repr(n.name + "_2")
                example = (
                    f"pipeline.as_node(name={renamed})"
                    if getattr(n, "pipeline", None) is not None
                    else f"node(f, name={renamed})"
                )
                raise PipelineDefinitionError(
                    f"two nodes are named {n.name!r}; node names must be unique: pass "
                    f"name='...' to one of them (e.g. {example})"
                )
            names[n.name] = i
            for out in n.outputs:
                if out in self.producer:
                    raise DuplicateOutputError(out, [self.nodes[self.producer[out]].name, n.name])
                self.producer[out] = i
            for name in n.inputs:
                self.consumers.setdefault(name, []).append(i)
        self.order = self._toposort()
        self.root_inputs = tuple(k for k in self.consumers if k not in self.producer)
        self.defaults = self._root_defaults()

    def parents(self, i: int) -> Iterable[int]:
        """Indices of the nodes producing the inputs of node ``i``."""
        producer = self.producer
        return {producer[name] for name in self.nodes[i].inputs if name in producer}

    def _toposort(self) -> tuple[int, ...]:
        n = len(self.nodes)
        indegree = [0] * n
        children: list[list[int]] = [[] for _ in range(n)]
        for i in range(n):
            for p in self.parents(i):
                indegree[i] += 1
                children[p].append(i)
        ready = [i for i in range(n) if indegree[i] == 0]
        heapq.heapify(ready)
        order: list[int] = []
        while ready:
            i = heapq.heappop(ready)
            order.append(i)
            for c in children[i]:
                indegree[c] -= 1
                if indegree[c] == 0:
                    heapq.heappush(ready, c)
        if len(order) != n:
            self._raise_cycle({i for i in range(n) if indegree[i] > 0})
        return tuple(order)

    def _raise_cycle(self, stuck: set[int]) -> None:
        # Every stuck node has a stuck parent, so walking parents must revisit a node.
        start = min(stuck)
        seen: dict[int, int] = {}
        walk: list[int] = []
        i = start
        while i not in seen:
            seen[i] = len(walk)
            walk.append(i)
            i = min(p for p in self.parents(i) if p in stuck)
        loop = walk[seen[i] :][::-1]  # parent walk reversed: producer -> consumer order
        loop.append(loop[0])
        via = []
        for a, b in itertools.pairwise(loop):
            shared = [o for o in self.nodes[a].outputs if o in self.nodes[b].inputs]
            via.append(shared[0])
        raise CycleError([self.nodes[k].name for k in loop], via)

    def _root_defaults(self) -> dict[str, Any]:
        # A root input is optional only when every node reading it has a default: if one
        # reader has none, a whole run needs the value (``select`` agrees per selection).
        defaults: dict[str, Any] = {}
        owner: dict[str, str] = {}
        required: set[str] = set()
        for name in self.root_inputs:
            for i in self.consumers[name]:
                node = self.nodes[i]
                if name not in node.defaults:
                    required.add(name)
                    continue
                value = node.defaults[name]
                if name in defaults and not _same(defaults[name], value):
                    raise PipelineDefinitionError(
                        f"input {name!r} has default {defaults[name]!r} in node "
                        f"{owner[name]!r} but {value!r} in node {node.name!r}; give both the "
                        "same default, or rename one parameter"
                    )
                defaults.setdefault(name, value)
                owner.setdefault(name, node.name)
        return {k: v for k, v in defaults.items() if k not in required}

    def select(self, outputs: Iterable[str], provided: frozenset[str]) -> Selection:
        """The nodes needed to compute ``outputs`` when the names in ``provided`` are given.

        A provided name that some node produces overrides it: that node is skipped, and so
        are nodes needed only by it. A node of which only some outputs are needed is
        narrowed to them (``Node.narrowed``): a nested pipeline then runs only the inner
        nodes those outputs need, and reads only the inputs they read.
        """
        needed = {o for o in outputs if o not in provided}
        chosen: dict[int, Node] = {}
        # Consumers come after their producers in topological order, so walking it
        # backwards, every output a node must deliver is known by the time it is reached.
        for i in reversed(self.order):
            node = self.nodes[i]
            wanted = [o for o in node.outputs if o in needed]
            if not wanted:
                continue
            if len(wanted) < len(node.outputs):
                node = node.narrowed(wanted)
            chosen[i] = node
            needed.update(name for name in node.inputs if name not in provided)
        order = tuple(i for i in self.order if i in chosen)
        nodes = tuple(chosen[i] for i in order)
        required: dict[str, list[int]] = {}
        optional: dict[str, Any] = {}
        for i, node in zip(order, nodes, strict=True):
            for name in node.inputs:
                if name in provided or name in self.producer:
                    continue
                if name in node.defaults:
                    optional.setdefault(name, node.defaults[name])
                else:
                    required.setdefault(name, []).append(i)
        for name in required:
            optional.pop(name, None)
        return Selection(order, nodes, {k: tuple(v) for k, v in required.items()}, optional)

    def to_networkx(self) -> nx.DiGraph:
        """A networkx view: ``Node`` objects and root-input names (``str``) as graph nodes.

        Each edge carries the value name it passes (``name``); graph nodes carry ``kind``
        (``"input"``, ``"node"`` or ``"pipeline"``).
        """
        import networkx as nx  # deferred: a heavy import that only introspection needs

        g = nx.DiGraph()
        for name in self.root_inputs:
            g.add_node(name, kind="input", optional=name in self.defaults)
        for n in self.nodes:
            kind = "pipeline" if getattr(n, "pipeline", None) is not None else "node"
            g.add_node(n, kind=kind)
        for n in self.nodes:
            for name in n.inputs:
                src: Any = self.nodes[self.producer[name]] if name in self.producer else name
                g.add_edge(src, n, name=name)
        return g


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    try:
        return bool(type(a) is type(b) and a == b)
    except Exception:  # values whose == is not a plain bool (arrays) are "different"
        return False
