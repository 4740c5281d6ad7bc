"""A layered (Sugiyama-style) layout in pure Python, for pictures without Graphviz.

Coordinates are abstract: ``o`` runs along a layer (left to right when drawn top to
bottom) and ``r`` runs across layers (downwards). The renderer maps them to x/y for the
chosen orientation. Steps: longest-path layers (inputs pulled down next to their first
consumer), dummy boxes on long edges, barycentric ordering sweeps keeping the order with
the fewest crossings, then positions along each layer that sit as close as possible to
the neighbours' (an isotonic regression, solved exactly by pool-adjacent-violators).
Expanded nested pipelines are laid out first and placed as one big box, their ports
(where values enter and leave) acting as attachment points for the edges outside.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from .model import Diagram, Edge, Item

__all__ = ["PAD", "Box", "Placed", "layout"]

PAD = 14.0  # inside a cluster, around its content
GAP = 26.0  # between boxes of a layer
EDGE_GAP = 12.0  # next to a dummy (an edge passing through a layer)
RANK_GAP = 44.0  # between layers
DUMMY = 8.0
_SOURCES = ("input", "optional", "bound")

Point = tuple[float, float]


@dataclass
class Box:
    """A laid-out item (or a dummy point of a long edge): centre ``(o, r)``, size ``(b, d)``."""

    id: str
    kind: str
    b: float
    d: float
    layer: int = 0
    o: float = 0.0
    r: float = 0.0
    ports: dict[str, Point] = field(default_factory=dict)  # cluster ports, from the centre
    origin: Point = (0.0, 0.0)  # a cluster's content, from the centre
    title: float = 0.0  # where a cluster's title starts along ``o``, from its start edge


@dataclass
class Placed:
    """One laid-out level: boxes, a route per edge, its size, and its clusters' insides."""

    boxes: dict[str, Box]
    routes: list[tuple[Edge, list[Point]]]
    breadth: float
    depth: float
    inner: dict[str, Placed]


def layout(diagram: Diagram, measure: Callable[[Item], Point], band: Point = (0.0, 0.0)) -> Placed:
    """Lay ``diagram`` out; ``measure`` gives an item's (breadth, depth) and ``band`` the
    room a cluster keeps for its title at the start of each axis.

    Edges enter and leave a cluster straight along ``r``, at their port's ``o``. When the
    title band runs across ``r`` (its start, where the in-ports are), the title is placed
    along ``o`` between those straight lines, and the cluster widened if it cannot be:
    no edge ever crosses a title.
    """
    boxes: dict[str, Box] = {}
    inner: dict[str, Placed] = {}
    owner: dict[str, str] = {}  # port id -> the cluster box it belongs to
    for item in diagram.items.values():
        if item.kind == "cluster" and item.inner is not None:
            sub = layout(item.inner, measure, band)
            need_b, need_d = sub.breadth + 2 * PAD + band[0], sub.depth + 2 * PAD + band[1]
            min_b, min_d = measure(item)  # room for the title
            b, d = max(need_b, min_b), max(need_d, min_d)
            shift, title = (b - need_b) / 2, 0.0  # content centred, title at the start
            if band[1] > 0:  # the title's band lies across the edges that enter
                entries = [PAD + band[0] + p.o for p in sub.boxes.values() if p.kind == "port-in"]
                shift, title, b = _title_place(sorted(entries), min_b, need_b, b)
            start_o = -b / 2 + shift + PAD + band[0]
            start_r = -d / 2 + PAD + band[1] + (d - need_d) / 2
            box = Box(item.id, "cluster", b, d, origin=(start_o, start_r), title=title)
            for pid, port in sub.boxes.items():
                if port.kind.startswith("port"):
                    box.ports[pid] = (start_o + port.o, start_r + port.r)
                    owner[pid] = item.id
            inner[item.id] = sub
        else:
            b, d = measure(item)
            kind = f"port-{item.side}" if item.kind == "port" else item.kind
            box = Box(item.id, kind, b, d)
        boxes[item.id] = box
    edges = [(owner.get(e.src, e.src), owner.get(e.dst, e.dst), e) for e in diagram.edges]
    _assign_layers(boxes, edges)
    chains = _add_dummies(boxes, edges)
    layers = _order(boxes, chains)
    _place(boxes, layers, chains, diagram.edges)
    depth = _ranks(boxes, layers)
    routes = [(e, _route(boxes, chain, e)) for chain, e in zip(chains, diagram.edges, strict=True)]
    _spread(boxes, routes, owner)
    left = min((bx.o - bx.b / 2 for bx in boxes.values()), default=0.0)
    for bx in boxes.values():
        bx.o -= left
    routes = [(e, [(o - left, r) for o, r in pts]) for e, pts in routes]
    breadth = max((bx.o + bx.b / 2 for bx in boxes.values()), default=0.0)
    real = {k: v for k, v in boxes.items() if v.kind != "dummy"}
    return Placed(real, routes, breadth, depth, inner)


def _assign_layers(boxes: dict[str, Box], edges: list[tuple[str, str, Edge]]) -> None:
    preds: dict[str, list[str]] = {k: [] for k in boxes}
    succs: dict[str, list[str]] = {k: [] for k in boxes}
    for u, v, _ in edges:
        preds[v].append(u)
        succs[u].append(v)
    pending = {k: len(p) for k, p in preds.items()}
    ready = [k for k in boxes if pending[k] == 0]
    order: list[str] = []
    while ready:
        k = ready.pop(0)
        order.append(k)
        for v in succs[k]:
            pending[v] -= 1
            if pending[v] == 0:
                ready.append(v)
    for k in order:
        boxes[k].layer = max((boxes[u].layer + 1 for u in preds[k]), default=0)
    # Sources other than in-ports sit just above their first consumer.
    for k in reversed(order):
        box = boxes[k]
        if not preds[k] and succs[k] and box.kind != "port-in":
            box.layer = min(boxes[v].layer for v in succs[k]) - 1
    outs = [b for b in boxes.values() if b.kind == "port-out"]
    if outs:
        last = max((b.layer for b in boxes.values() if b.kind != "port-out"), default=0) + 1
        for b in outs:
            b.layer = last


def _add_dummies(boxes: dict[str, Box], edges: list[tuple[str, str, Edge]]) -> list[list[str]]:
    """Each edge as the chain of boxes it passes through (dummies on skipped layers)."""
    chains = []
    for n, (u, v, _) in enumerate(edges):
        chain = [u]
        for layer in range(boxes[u].layer + 1, boxes[v].layer):
            dummy = Box(f"~{n}.{layer}", "dummy", DUMMY, 0.0, layer)
            boxes[dummy.id] = dummy
            chain.append(dummy.id)
        chain.append(v)
        chains.append(chain)
    return chains


def _order(boxes: dict[str, Box], chains: list[list[str]]) -> list[list[str]]:
    n_layers = max((b.layer for b in boxes.values()), default=0) + 1
    up: dict[str, list[str]] = {k: [] for k in boxes}
    down: dict[str, list[str]] = {k: [] for k in boxes}
    for chain in chains:
        for a, b in itertools.pairwise(chain):
            down[a].append(b)
            up[b].append(a)
    # Initial order: depth-first from the sources, in declaration order.
    layers: list[list[str]] = [[] for _ in range(n_layers)]
    seen: set[str] = set()

    def visit(k: str) -> None:
        stack = [k]
        while stack:
            cur = stack.pop()
            if cur in seen:
                continue
            seen.add(cur)
            layers[boxes[cur].layer].append(cur)
            stack.extend(reversed(down[cur]))

    for k in boxes:
        if not up[k]:
            visit(k)
    for k in boxes:
        visit(k)
    best = [list(layer) for layer in layers]
    best_cross = _crossings(layers, down)
    for sweep in range(16):
        downward = sweep % 2 == 0
        indices = range(1, n_layers) if downward else range(n_layers - 2, -1, -1)
        for i in indices:
            ref = layers[i - 1] if downward else layers[i + 1]
            layers[i] = _sorted_by_barycentre(layers[i], ref, up if downward else down)
        cross = _crossings(layers, down)
        if cross < best_cross:
            best, best_cross = [list(layer) for layer in layers], cross
        if best_cross == 0:
            break
    return best


def _sorted_by_barycentre(
    layer: list[str], ref: list[str], near: dict[str, list[str]]
) -> list[str]:
    pos = {k: j for j, k in enumerate(ref)}
    current = {k: j for j, k in enumerate(layer)}

    def key(k: str) -> tuple[float, int]:
        ns = [pos[x] for x in near[k] if x in pos]
        return (sum(ns) / len(ns) if ns else float(current[k]), current[k])

    return sorted(layer, key=key)


def _crossings(layers: list[list[str]], down: dict[str, list[str]]) -> int:
    total = 0
    for upper, lower in itertools.pairwise(layers):
        pos = {k: j for j, k in enumerate(lower)}
        segs = [(i, pos[v]) for i, u in enumerate(upper) for v in down[u] if v in pos]
        for a in range(len(segs)):
            ua, va = segs[a]
            for ub, vb in segs[a + 1 :]:
                if (ua - ub) * (va - vb) < 0:
                    total += 1
    return total


def _place(
    boxes: dict[str, Box], layers: list[list[str]], chains: list[list[str]], edges: list[Edge]
) -> None:
    # (neighbour, its attachment offset, my attachment offset) per direction
    up: dict[str, list[tuple[str, float, float]]] = {k: [] for k in boxes}
    down: dict[str, list[tuple[str, float, float]]] = {k: [] for k in boxes}
    for chain, edge in zip(chains, edges, strict=True):
        src_off, dst_off = _offsets(boxes, chain, edge)
        for n, (a, b) in enumerate(itertools.pairwise(chain)):
            oa = src_off if n == 0 else 0.0
            ob = dst_off if n == len(chain) - 2 else 0.0
            down[a].append((b, ob, oa))
            up[b].append((a, oa, ob))
    for layer in layers:
        o = 0.0
        for j, k in enumerate(layer):
            if j:
                o += _sep(boxes[layer[j - 1]], boxes[k])
            boxes[k].o = o
    passes: list[tuple[bool, bool]] = [(True, False), (False, True)] * 4 + [(True, True)] * 2
    for use_up, use_down in passes:
        order = layers if use_up else layers[::-1]
        for layer in order:
            targets, weights = [], []
            for k in layer:
                ns = (up[k] if use_up else []) + (down[k] if use_down else [])
                box = boxes[k]
                if ns:
                    targets.append(sum(boxes[n].o + on - om for n, on, om in ns) / len(ns))
                else:
                    targets.append(box.o)
                weights.append(4.0 if box.kind == "dummy" else 1.0)
            seps = [_sep(boxes[a], boxes[b]) for a, b in itertools.pairwise(layer)]
            for k, o in zip(layer, _isotonic(targets, weights, seps), strict=True):
                boxes[k].o = o


def _offsets(boxes: dict[str, Box], chain: list[str], edge: Edge) -> Point:
    """Where an edge attaches along ``o`` at its two ends (ports of clusters), from centre."""
    src = boxes[chain[0]].ports.get(edge.src, (0.0, 0.0))
    dst = boxes[chain[-1]].ports.get(edge.dst, (0.0, 0.0))
    return (src[0], dst[0])


def _sep(a: Box, b: Box) -> float:
    gap = EDGE_GAP if "dummy" in (a.kind, b.kind) else GAP
    return (a.b + b.b) / 2 + gap


def _isotonic(targets: list[float], weights: list[float], seps: list[float]) -> list[float]:
    """Positions as close as possible to ``targets`` (weighted least squares), in order,
    at least ``seps[i]`` apart: pool-adjacent-violators on the shifted targets."""
    shift = [0.0]
    for s in seps:
        shift.append(shift[-1] + s)
    blocks: list[list[float]] = []  # [weighted sum, weight, count]
    for t, w, c in zip(targets, weights, shift, strict=True):
        blocks.append([(t - c) * w, w, 1])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            s2, w2, n2 = blocks.pop()
            blocks[-1][0] += s2
            blocks[-1][1] += w2
            blocks[-1][2] += n2
    out: list[float] = []
    for total, weight, count in blocks:
        out.extend([total / weight] * int(count))
    return [y + c for y, c in zip(out, shift, strict=True)]


def _ranks(boxes: dict[str, Box], layers: list[list[str]]) -> float:
    r = 0.0
    for layer in layers:
        band = max((boxes[k].d for k in layer), default=0.0)
        for k in layer:
            box = boxes[k]
            if box.kind in _SOURCES or box.kind == "port-out":
                box.r = r + band - box.d / 2  # next to what reads it
            elif box.kind == "port-in":
                box.r = r + box.d / 2
            else:
                box.r = r + band / 2
        r += band + RANK_GAP
    return max(r - RANK_GAP, 0.0)


def _title_place(
    entries: list[float], room: float, content: float, breadth: float
) -> tuple[float, float, float]:
    """Where a cluster's content and title go so that no entering edge crosses the title.

    ``entries`` are where edges enter (sorted, from the start edge, content not shifted),
    ``room`` the title's length with its margins, ``content`` the content's length with
    its padding, ``breadth`` the cluster's length so far. Returns the content's shift, the
    title's start and the (possibly greater) length: the centred content with the title at
    the start when that is clear, else the shortest cluster with the title in a gap.
    """
    text = (6.0, room - 10.0)  # the title's text (plus a hair) from its start

    def clear(shift: float, title: float) -> bool:
        return all(not (title + text[0] < shift + e < title + text[1]) for e in entries)

    centred = (breadth - content) / 2
    if clear(centred, 0.0):
        return centred, 0.0, breadth
    options = []
    # Every edge after the title: the content moves along until the first one is clear.
    shift = max(0.0, text[1] - entries[0])
    options.append((max(shift + content, room, breadth), shift, 0.0))
    # The title right after edge k-1 (and before edge k, when the gap is wide enough).
    for k in range(1, len(entries) + 1):
        title = max(0.0, entries[k - 1] - text[0])
        if k == len(entries) or title + text[1] <= entries[k]:
            options.append((max(content, title + room, breadth), 0.0, title))
    length, shift, title = min(options)
    return shift, title, length


def _route(boxes: dict[str, Box], chain: list[str], edge: Edge) -> list[Point]:
    """The points of an edge; at a cluster's port it runs straight along ``r`` from the
    cluster's border, so it crosses nothing inside the frame (its title least of all)."""
    first, last = boxes[chain[0]], boxes[chain[-1]]
    if edge.src in first.ports:
        po, pr = first.ports[edge.src]
        points = [(first.o + po, first.r + pr), (first.o + po, first.r + first.d / 2)]
    else:
        points = [(first.o, first.r + first.d / 2)]
    for k in chain[1:-1]:
        points.append((boxes[k].o, boxes[k].r))
    if edge.dst in last.ports:
        po, pr = last.ports[edge.dst]
        points += [(last.o + po, last.r - last.d / 2), (last.o + po, last.r + pr)]
    else:
        points.append((last.o, last.r - last.d / 2))
    return points


def _spread(
    boxes: dict[str, Box], routes: list[tuple[Edge, list[Point]]], owner: dict[str, str]
) -> None:
    """Fan out the ends of several edges leaving (or entering) the same box."""
    ends: dict[tuple[str, int], list[tuple[float, int]]] = {}
    for n, (edge, points) in enumerate(routes):
        if edge.src not in owner:
            ends.setdefault((edge.src, 0), []).append((points[1][0], n))
        if edge.dst not in owner:
            ends.setdefault((edge.dst, -1), []).append((points[-2][0], n))
    for (key, end), found in ends.items():
        box = boxes[key]
        if len(found) < 2 or box.kind in ("port-in", "port-out", "dummy"):
            continue
        step = min(14.0, (box.b - 16) / len(found))
        found.sort()
        for i, (_, n) in enumerate(found):
            o, r = routes[n][1][end]
            routes[n][1][end] = (o + (i - (len(found) - 1) / 2) * step, r)
