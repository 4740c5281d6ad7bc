"""The Graphviz renderer: a diagram as DOT source, drawn by ``dot`` when it is installed.

Clusters become ``subgraph cluster_*`` blocks; the ports the built-in layout uses are
dissolved (edges go straight to the nodes inside), which is how Graphviz draws clusters.
"""

from __future__ import annotations

import shutil
from xml.sax.saxutils import escape

from .model import Diagram, Item
from .svg import STYLE, cluster_label

__all__ = ["dot_available", "pipe", "to_dot"]

_SHAPES = {
    "input": 'shape=box, style="rounded,filled"',
    "optional": 'shape=box, style="rounded,filled,dashed"',
    "bound": 'shape=box, style="rounded,filled,dashed"',
    "node": 'shape=box, style="rounded,filled"',
    "pipeline": 'shape=box, style="rounded,filled", peripheries=2',
    "output": 'shape=hexagon, style="filled"',
}


def dot_available() -> bool:
    """Whether Graphviz's ``dot`` program and the ``graphviz`` package are both there."""
    if shutil.which("dot") is None:
        return False
    try:
        import graphviz  # noqa: F401
    except ImportError:
        return False
    return True


def to_dot(diagram: Diagram, *, orient: str = "TB") -> str:
    """DOT source for ``diagram``."""
    ids: dict[str, str] = {}
    lines = [
        "digraph hypernodes {",
        f"  rankdir={orient}; nodesep=0.35; ranksep=0.45; bgcolor=white;",
        f"  label={_quote(diagram.name)}; labelloc=t; labeljust=l; fontname=monospace; "
        'fontsize=11; fontcolor="#5B6571";',
        '  node [fontname=monospace, fontsize=11, margin="0.15,0.05", height=0.3];',
        '  edge [color="#6B7280", arrowsize=0.7, fontname=monospace, fontsize=9, '
        'fontcolor="#5B6571"];',
    ]
    _items(diagram, lines, ids, "  ")
    for src, dst, label in _flat_edges(diagram):
        attr = f" [label={_quote(label)}]" if label else ""
        lines.append(f"  {ids[src]} -> {ids[dst]}{attr};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def pipe(source: str, fmt: str) -> bytes:
    """Run ``dot`` on ``source``; the picture in format ``fmt`` (svg, png, pdf, ...)."""
    import graphviz  # deferred: optional; dot_available() checks it

    data: bytes = graphviz.Source(source).pipe(format=fmt)
    return data


def _items(diagram: Diagram, lines: list[str], ids: dict[str, str], indent: str) -> None:
    for item in diagram.items.values():
        if item.kind == "port":
            continue
        ident = ids[item.id] = f"n{len(ids)}"
        if item.kind == "cluster" and item.inner is not None:
            fill, stroke, _ = STYLE["cluster"]
            label = cluster_label(item)
            lines.append(f"{indent}subgraph cluster_{ident} {{")
            lines.append(
                f'{indent}  label={_quote(label)}; style="rounded,dashed,filled"; '
                f'color="{stroke}"; fillcolor="{fill}"; fontcolor="{STYLE["pipeline"][1]}";'
                + (" penwidth=2;" if item.mapped else "")
            )
            _items(item.inner, lines, ids, indent + "  ")
            lines.append(f"{indent}}}")
            continue
        fill, stroke, _ = STYLE[item.kind]
        shape = "box3d" if item.mapped else None
        attrs = _SHAPES[item.kind] if shape is None else f'shape={shape}, style="filled"'
        lines.append(
            f'{indent}{ident} [{attrs}, fillcolor="{fill}", color="{stroke}", '
            f"label={_label(item)}];"
        )


def _flat_edges(diagram: Diagram) -> list[tuple[str, str, str | None]]:
    """Every edge between drawn items, ports dissolved."""
    edges: list[tuple[str, str, str | None]] = []
    ports: set[str] = set()

    def collect(d: Diagram) -> None:
        for item in d.items.values():
            if item.kind == "port":
                ports.add(item.id)
            if item.inner is not None:
                collect(item.inner)
        edges.extend((e.src, e.dst, e.label) for e in d.edges)

    collect(diagram)
    while True:
        port = next((p for p in ports if any(p in (s, t) for s, t, _ in edges)), None)
        if port is None:
            return edges
        into = [(s, lab) for s, t, lab in edges if t == port]
        out = [(t, lab) for s, t, lab in edges if s == port]
        edges = [e for e in edges if port not in (e[0], e[1])]
        edges.extend((s, t, la or lb) for s, la in into for t, lb in out)
        ports.discard(port)


def _label(item: Item) -> str:
    rows = [f"<b>{escape(item.title)}</b>"]
    rows.extend(
        f'<font point-size="9" color="#5B6571">{escape(line)}</font>' for line in item.lines
    )
    if item.kind in ("input", "optional", "bound", "output"):
        rows = [escape(item.title)]
    return "<" + "<br/>".join(rows) + ">"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
