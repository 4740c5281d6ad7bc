"""The built-in renderer: a laid-out diagram as a standalone SVG document (no Graphviz).

Shapes and colours tell kinds apart: inputs are blue pills (dashed when optional, grey
when bound), function nodes amber rounded boxes, nested pipelines purple double-bordered
boxes (stacked like cards when they map over items), expanded nested pipelines dashed
purple frames, pipeline outputs green hexagons. Labels use a monospace font, so their
width is known without measuring glyphs.
"""

from __future__ import annotations

import itertools
import unicodedata
from collections.abc import Callable
from xml.sax.saxutils import escape, quoteattr

from .layout import Placed, Point, layout
from .model import Diagram, Item

__all__ = ["render_svg"]

FONT = "ui-monospace, SFMono-Regular, Menlo, Consolas, 'DejaVu Sans Mono', 'Liberation Mono', monospace"
TITLE_SIZE = 13.0
LINE_SIZE = 11.0
CHAR = 0.6  # a monospace glyph is 0.6 em wide
TITLE_BAND = 24.0
MARGIN = 16.0
STACK = 5.0  # offset of each card behind a mapped nested pipeline

STYLE = {
    # kind: (fill, stroke, dash)
    "input": ("#E8F1FB", "#3F72AF", None),
    "optional": ("#F5F9FD", "#7FA3CF", "5 3"),
    "bound": ("#F1F2F4", "#8A929C", "5 3"),
    "node": ("#FFF6E5", "#C9822B", None),
    "pipeline": ("#F3EEFB", "#7152A3", None),
    "output": ("#E8F6EE", "#2F8A57", None),
    "cluster": ("#FBF9FE", "#9B84C6", "6 4"),
}
INK = "#1F2933"
MUTED = "#5B6571"
EDGE = "#6B7280"


def text_width(text: str, size: float) -> float:
    """The width of ``text`` in the monospace font (wide East Asian glyphs count twice)."""
    cells = sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)
    return cells * size * CHAR


def size_of(item: Item) -> Point:
    """(width, height) of an item as drawn (clusters are sized by the layout)."""
    if item.kind == "port":
        return (10.0, 0.0)
    if item.kind == "cluster":  # the least room for its title; its content decides the rest
        return (text_width(cluster_label(item), 12) + 24, 0.0)
    if item.kind in ("input", "optional", "bound"):
        return (text_width(item.title, 12) + 28, 28.0)
    if item.kind == "output":
        return (text_width(item.title, 12) + 34, 28.0)
    width = max(
        [text_width(item.title, TITLE_SIZE)] + [text_width(line, LINE_SIZE) for line in item.lines]
    )
    w, h = width + 26, 30.0 + 15 * len(item.lines)
    if item.mapped:
        w, h = w + 2 * STACK, h + 2 * STACK
    return (w, h)


def render_svg(diagram: Diagram, *, orient: str = "TB", caption: str | None = None) -> str:
    """The SVG document of ``diagram`` drawn in direction ``orient`` (TB, BT, LR, RL)."""
    vertical = orient in ("TB", "BT")

    def measure(item: Item) -> Point:
        w, h = size_of(item)
        return (w, h) if vertical else (h, w)

    band = (0.0, TITLE_BAND) if vertical else (TITLE_BAND, 0.0)
    placed = layout(diagram, measure, band)
    top = MARGIN + (22.0 if caption else 0.0)
    if vertical:
        width, height = placed.breadth + 2 * MARGIN, placed.depth + top + MARGIN
    else:
        width, height = placed.depth + 2 * MARGIN, placed.breadth + top + MARGIN
    depth = placed.depth

    def to_xy(o: float, r: float) -> Point:
        if orient == "BT" or orient == "RL":
            r = depth - r
        x, y = (o, r) if vertical else (r, o)
        return (x + MARGIN, y + top)

    canvas = _Canvas(to_xy, vertical, title_at_end=orient == "BT")
    canvas.level(diagram, placed, 0.0, 0.0)
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.1f} {height:.1f}" font-family={quoteattr(FONT)} '
        f'role="img" aria-label={quoteattr(f"pipeline {diagram.name}")}>'
    )
    defs = (
        '<defs><marker id="hn-arrow" viewBox="0 0 10 10" refX="9.5" refY="5" '
        'markerWidth="9" markerHeight="9" markerUnits="userSpaceOnUse" orient="auto">'
        f'<path d="M0,1 L10,5 L0,9 z" fill="{EDGE}"/></marker></defs>'
    )
    parts = [head, f"<title>{escape(f'pipeline {diagram.name}')}</title>", defs]
    parts.append('<rect width="100%" height="100%" fill="#FFFFFF"/>')
    if caption:
        parts.append(
            f'<text x="{MARGIN}" y="{MARGIN + 12}" font-size="12" fill="{MUTED}">'
            f"{escape(caption)}</text>"
        )
    parts.extend(canvas.frames)
    parts.extend(canvas.edges)
    parts.extend(canvas.labels)
    parts.extend(canvas.shapes)
    parts.append("</svg>")
    return "\n".join(parts)


class _Canvas:
    """Collects SVG elements: cluster frames below edges, edges below shapes."""

    def __init__(
        self, to_xy: Callable[[float, float], Point], vertical: bool, *, title_at_end: bool
    ) -> None:
        self.to_xy = to_xy
        self.vertical = vertical
        self.title_at_end = title_at_end  # bottom to top: the title band ends up below
        self.frames: list[str] = []
        self.edges: list[str] = []
        self.shapes: list[str] = []
        self.labels: list[str] = []

    def level(self, diagram: Diagram, placed: Placed, o0: float, r0: float) -> None:
        for edge, points in placed.routes:
            into_port = "@in:" in edge.dst or "@out:" in edge.dst  # port ids; see model
            self.edge([(o0 + o, r0 + r) for o, r in points], edge.label, arrow=not into_port)
        for box in placed.boxes.values():
            item = diagram.items[box.id]
            o, r = o0 + box.o, r0 + box.r
            w, h = (box.b, box.d) if self.vertical else (box.d, box.b)
            x, y = self.to_xy(o, r)
            if item.kind == "cluster" and item.inner is not None:
                self.cluster(item, x - w / 2, y - h / 2, w, h, box.title)
                inner_o, inner_r = box.origin
                self.level(item.inner, placed.inner[item.id], o + inner_o, r + inner_r)
            elif item.kind == "port":
                self.shapes.append(
                    f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="#FFFFFF" '
                    f'stroke="{STYLE["cluster"][1]}" stroke-width="1.5"/>'
                )
            else:
                self.shape(item, x, y, w, h)

    def edge(self, points: list[Point], label: str | None, *, arrow: bool = True) -> None:
        # Cubic segments whose tangents follow the layer axis: straight where aligned.
        d = []
        for n, (p, q) in enumerate(itertools.pairwise(points)):
            mid = (q[1] - p[1]) / 2
            c1, c2 = self.to_xy(p[0], p[1] + mid), self.to_xy(q[0], q[1] - mid)
            a, b = self.to_xy(*p), self.to_xy(*q)
            if n == 0:
                d.append(f"M{a[0]:.1f},{a[1]:.1f}")
            d.append(f"C{c1[0]:.1f},{c1[1]:.1f} {c2[0]:.1f},{c2[1]:.1f} {b[0]:.1f},{b[1]:.1f}")
        self.edges.append(
            f'<path d="{" ".join(d)}" fill="none" stroke="{EDGE}" stroke-width="1.3"'
            + (' marker-end="url(#hn-arrow)"/>' if arrow else "/>")
        )
        if label:  # on the longest hop, over a white backing (no paint-order halo)
            p, q = max(itertools.pairwise(points), key=lambda s: abs(s[1][1] - s[0][1]))
            x, y = self.to_xy((p[0] + q[0]) / 2, (p[1] + q[1]) / 2)
            self.edges.append(
                f'<rect x="{x + 2:.1f}" y="{y - 6:.1f}" width="{text_width(label, 10) + 4:.1f}" '
                f'height="13" fill="#FFFFFF" fill-opacity="0.85"/>'
                f'<text x="{x + 4:.1f}" y="{y + 4:.1f}" font-size="10" fill="{MUTED}">'
                f"{escape(label)}</text>"
            )

    def cluster(self, item: Item, x: float, y: float, w: float, h: float, title: float) -> None:
        """A frame; its title starts ``title`` along the layer axis (the layout keeps the
        edges entering the frame clear of it)."""
        fill, stroke, dash = STYLE["cluster"]
        frames: list[str] = []
        if item.mapped:
            frames.extend(
                _rect(x + k * STACK, y + k * STACK, w, h, 10, fill, stroke, dash, 0.6)
                for k in (2, 1)
            )
        frames.append(_rect(x, y, w, h, 10, fill, stroke, dash, 1.2))
        label = cluster_label(item)
        ty = y + h - 9 if self.title_at_end else y + 16
        tx = x + 10 + (title if self.vertical else 0.0)
        self.labels.append(
            f'<text x="{tx:.1f}" y="{ty:.1f}" font-size="12" font-weight="600" '
            f'fill="{STYLE["pipeline"][1]}">{escape(label)}</text>'
        )
        self.frames.append(
            f'<g class="hn-cluster"><title>{escape(label)}</title>{"".join(frames)}</g>'
        )

    def shape(self, item: Item, cx: float, cy: float, w: float, h: float) -> None:
        fill, stroke, dash = STYLE[item.kind]
        x, y = cx - w / 2, cy - h / 2
        out = [f'<g class="hn-{item.kind}"><title>{escape(_tooltip(item))}</title>']
        if item.kind in ("input", "optional", "bound"):
            out.append(_rect(x, y, w, h, h / 2, fill, stroke, dash, 1.4))
            out.append(_text(cx, cy + 4, item.title, 12, INK, anchor="middle"))
        elif item.kind == "output":
            k = h / 2
            pts = f"{x},{cy} {x + k},{y} {x + w - k},{y} {x + w},{cy} {x + w - k},{y + h} {x + k},{y + h}"
            out.append(
                f'<polygon points="{pts}" fill="{fill}" stroke="{stroke}" stroke-width="1.4"/>'
            )
            out.append(_text(cx, cy + 4, item.title, 12, INK, anchor="middle"))
        else:
            if item.mapped:  # cards behind: this node runs once per item
                w, h = w - 2 * STACK, h - 2 * STACK
                out.extend(
                    _rect(x + k * STACK, y + k * STACK, w, h, 7, fill, stroke, dash, 1.0)
                    for k in (2, 1)
                )
            out.append(_rect(x, y, w, h, 7, fill, stroke, dash, 1.4))
            if item.kind == "pipeline":
                out.append(_rect(x + 3, y + 3, w - 6, h - 6, 5, "none", stroke, None, 0.8))
            top = y + 20
            out.append(
                _text(x + w / 2, top, item.title, TITLE_SIZE, INK, anchor="middle", bold=True)
            )
            for n, line in enumerate(item.lines):
                out.append(
                    _text(x + w / 2, top + 15 * (n + 1), line, LINE_SIZE, MUTED, anchor="middle")
                )
        out.append("</g>")
        self.shapes.append("".join(out))


def cluster_label(item: Item) -> str:
    """The title line of an expanded nested pipeline."""
    return item.title + (f"  ·  {item.lines[0]}" if item.lines else "")


def _rect(
    x: float,
    y: float,
    w: float,
    h: float,
    rx: float,
    fill: str,
    stroke: str,
    dash: str | None,
    width: float,
) -> str:
    dashed = f' stroke-dasharray="{dash}"' if dash else ""
    return (
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" rx="{rx:.1f}" '
        f'fill="{fill}" stroke="{stroke}" stroke-width="{width}"{dashed}/>'
    )


def _text(
    x: float, y: float, text: str, size: float, color: str, *, anchor: str, bold: bool = False
) -> str:
    weight = ' font-weight="600"' if bold else ""
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size:g}" fill="{color}" '
        f'text-anchor="{anchor}"{weight}>{escape(text)}</text>'
    )


def _tooltip(item: Item) -> str:
    kind = {
        "input": "input",
        "optional": "optional input",
        "bound": "bound input",
        "node": "node",
        "pipeline": "nested pipeline",
        "output": "output",
    }.get(item.kind, item.kind)
    return " | ".join([f"{kind}: {item.title}", *item.lines])
