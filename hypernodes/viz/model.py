"""What a picture shows: a pipeline turned into items (inputs, nodes, outputs, nested
pipelines, expanded clusters) and edges, independent of how it is laid out or drawn."""

from __future__ import annotations

import inspect
import re
import typing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from ..node import Node
    from ..pipeline import Pipeline

__all__ = ["Diagram", "Edge", "Item", "build"]

Kind = Literal["input", "optional", "bound", "node", "pipeline", "output", "cluster", "port"]


@dataclass
class Item:
    """One thing drawn.

    Attributes:
        id: Unique in the whole picture (clusters included).
        kind: What it is: an input (required, ``optional`` with a default, ``bound``), a
            function ``node``, a collapsed nested ``pipeline``, a pipeline ``output``, an
            expanded nested pipeline (``cluster``, with ``inner``), or a ``port`` (where a
            value enters or leaves a cluster).
        title: The main label.
        lines: Smaller lines under the title.
        mapped: Whether it maps over items (nested pipelines with ``map_over``).
        inner: For a cluster, the diagram inside it.
        side: For a port, ``"in"`` or ``"out"``.
    """

    id: str
    kind: Kind
    title: str
    lines: list[str] = field(default_factory=list)
    mapped: bool = False
    inner: Diagram | None = None
    side: str | None = None


@dataclass
class Edge:
    """A value passed from one item to another (several values between the same pair share
    one edge); ``label`` is set where the value's name is not obvious."""

    src: str
    dst: str
    names: list[str]
    label: str | None = None


@dataclass
class Diagram:
    """The items and edges of one level (clusters hold the levels below)."""

    name: str
    items: dict[str, Item] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)

    def add_edge(self, src: str, dst: str, name: str, *, labelled: bool) -> None:
        for edge in self.edges:
            if edge.src == src and edge.dst == dst:
                if name not in edge.names:
                    edge.names.append(name)
                    edge.label = ", ".join(edge.names) if labelled or edge.label else None
                return
        self.edges.append(Edge(src, dst, [name], name if labelled else None))

    def walk(self) -> list[Item]:
        """Every item, clusters' insides included."""
        found: list[Item] = []
        for item in self.items.values():
            found.append(item)
            if item.inner is not None:
                found.extend(item.inner.walk())
        return found


def build(pipeline: Pipeline, *, depth: int | None, show_types: bool) -> Diagram:
    """The diagram of ``pipeline``; nested pipelines expand ``depth - 1`` levels down
    (all the way when ``depth`` is ``None``)."""
    return _Builder(show_types).level(pipeline, depth, "", ports=None)


class _Builder:
    def __init__(self, show_types: bool) -> None:
        self.show_types = show_types

    def level(
        self,
        pipeline: Pipeline,
        depth: int | None,
        prefix: str,
        ports: tuple[list[str], list[str]] | None,
    ) -> Diagram:
        diagram = Diagram(pipeline.name)
        types = _types(pipeline) if self.show_types else ({}, {})
        producer: dict[str, tuple[str, bool, str | None]] = {}  # value -> (id, multi, port)
        consumed: set[str] = set()
        for n in pipeline.nodes:
            consumed.update(n.inputs)
        for n in pipeline.nodes:
            item = self.node_item(n, prefix, depth, types)
            diagram.items[item.id] = item
            for out in n.outputs:
                port = (
                    _port_id(item.id, "out", _inner_name(n, out))
                    if item.kind == "cluster"
                    else None
                )
                producer[out] = (item.id, len(n.outputs) > 1, port)
        # Root inputs: drawn as inputs at the top level, as ports inside a cluster.
        for name in pipeline.graph.nodes:
            if not isinstance(name, str):
                continue
            if ports is not None and name not in pipeline.bound:
                item = Item(_port_id(prefix.rstrip("/"), "in", name), "port", name, side="in")
            else:
                item = self.input_item(pipeline, name, prefix, types[0].get(name))
            diagram.items[item.id] = item
            producer[name] = (item.id, False, None)
        for n in pipeline.nodes:
            dst = prefix + n.name
            for name in n.inputs:
                src, multi, port = producer[name]
                target = diagram.items[dst]
                entry = (
                    _port_id(dst, "in", _outer_to_inner(n, name))
                    if target.kind == "cluster"
                    else dst
                )
                diagram.add_edge(port or src, entry, name, labelled=multi)
        exposed = (
            ports[1] if ports is not None else [o for o in pipeline.outputs if o not in consumed]
        )
        for out in exposed:
            src, multi, port = producer[out]
            if ports is not None:
                oid = _port_id(prefix.rstrip("/"), "out", out)
                diagram.items[oid] = Item(oid, "port", out, side="out")
            else:
                oid = f"{prefix}{out}@output"
                title = _typed(out, types[1].get(out)) if self.show_types else out
                diagram.items[oid] = Item(oid, "output", title)
            diagram.add_edge(port or src, oid, out, labelled=multi)
        return diagram

    def node_item(
        self, n: Node, prefix: str, depth: int | None, types: tuple[dict[str, str], dict[str, str]]
    ) -> Item:
        inner: Pipeline | None = getattr(n, "pipeline", None)
        ident = prefix + n.name
        returns = types[1]
        outs = [_typed(o, returns.get(o)) if self.show_types else o for o in n.outputs]
        if inner is None:
            lines = ["async"] if n.is_async else []
            if self.show_types or list(n.outputs) != [n.name]:
                lines.append("→ " + ", ".join(outs))
            return Item(ident, "node", n.name, lines)
        map_over = getattr(n, "map_over", None)
        mapped = f"map over {', '.join(map_over)}" if map_over else None
        if mapped and getattr(n, "map_mode", "zip") == "product":
            mapped += " (product)"
        if depth is not None and depth <= 1:
            lines = [f"pipeline {inner.name}"] if inner.name != n.name else ["pipeline"]
            if mapped:
                lines.append(mapped)
            if list(n.outputs) != [n.name]:
                lines.append("→ " + ", ".join(outs))
            return Item(ident, "pipeline", n.name, lines, mapped=bool(map_over))
        ins = [_outer_to_inner(n, name) for name in n.inputs]
        exposed = [_inner_name(n, out) for out in n.outputs]
        sub = self.level(inner, None if depth is None else depth - 1, ident + "/", (ins, exposed))
        title = n.name if inner.name == n.name else f"{n.name} · pipeline {inner.name}"
        return Item(ident, "cluster", title, [mapped] if mapped else [], bool(map_over), sub)

    def input_item(self, pipeline: Pipeline, name: str, prefix: str, hint: str | None) -> Item:
        ident = f"{prefix}{name}@input"
        title = _typed(name, hint) if self.show_types else name
        if name in pipeline.bound:
            return Item(ident, "bound", f"{title} = {_short(pipeline.bound[name])}", ["bound"])
        optional = pipeline.optional_inputs
        if name in optional:
            return Item(ident, "optional", f"{title} = {_short(optional[name])}")
        return Item(ident, "input", title)


def _port_id(cluster: str, side: str, name: str) -> str:
    return f"{cluster}@{side}:{name}"


def _outer_to_inner(n: Node, outer: str) -> str:
    mapping: dict[str, str] = getattr(n, "input_mapping", {})
    return mapping.get(outer, outer)


def _inner_name(n: Node, outer: str) -> str:
    mapping: dict[str, str] = getattr(n, "output_mapping", {})
    for inner, out in mapping.items():
        if out == outer:
            return inner
    return outer


def _short(value: Any, limit: int = 24) -> str:
    try:
        text = repr(value)
    except Exception:  # a repr that fails must not break a picture
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _typed(name: str, hint: str | None) -> str:
    return f"{name}: {hint}" if hint else name


def _types(pipeline: Pipeline) -> tuple[dict[str, str], dict[str, str]]:
    """Annotations by value name: (parameters, outputs), nested pipelines included."""
    params: dict[str, str] = {}
    returns: dict[str, str] = {}
    for n in pipeline.nodes:
        inner: Pipeline | None = getattr(n, "pipeline", None)
        if inner is not None:
            inner_params, inner_returns = _types(inner)
            to_outer = {v: k for k, v in getattr(n, "input_mapping", {}).items()}
            mapped = set(getattr(n, "map_over", None) or ())
            for name, hint in inner_params.items():
                outer = to_outer.get(name, name)
                # A mapped input carries one value per item: the outer value is their list.
                params.setdefault(outer, f"list[{hint}]" if outer in mapped else hint)
            for out in n.outputs:
                found = inner_returns.get(_inner_name(n, out))
                if found:
                    returns[out] = f"list[{found}]" if getattr(n, "map_over", None) else found
            continue
        hints = _hints(n.func)
        for name in n.inputs:
            if name in hints:
                params.setdefault(name, type_name(hints[name]))
        ret = hints.get("return", inspect.Parameter.empty)
        if ret is inspect.Parameter.empty:
            continue
        if len(n.outputs) == 1:
            returns[n.outputs[0]] = type_name(ret)
            continue
        parts = typing.get_args(ret)
        if len(parts) == len(n.outputs):
            returns.update(zip(n.outputs, map(type_name, parts), strict=True))
    return params, returns


def _hints(func: Any) -> dict[str, Any]:
    target = getattr(func, "__wrapped__", func)
    try:
        return typing.get_type_hints(target)
    except Exception:  # forward references that do not resolve: use the raw annotations
        try:
            sig = inspect.signature(target)
        except (TypeError, ValueError):
            return {}
        hints = {
            p.name: p.annotation for p in sig.parameters.values() if p.annotation is not p.empty
        }
        if sig.return_annotation is not sig.empty:
            hints["return"] = sig.return_annotation
        return hints


_MODULES = re.compile(r"\b(?:[A-Za-z_]\w*\.)+(?=[A-Za-z_])")


def type_name(hint: Any) -> str:
    """A short readable name for a type annotation (``dict[str, list[int]]``)."""
    if isinstance(hint, str):  # unresolved; quoted again under `from __future__ import annotations`
        return hint[1:-1] if len(hint) > 1 and hint[0] == hint[-1] and hint[0] in "'\"" else hint
    if hint is type(None):
        return "None"
    if isinstance(hint, type) and not typing.get_args(hint):
        return hint.__qualname__
    return _MODULES.sub("", str(hint))
