"""Pictures: real pipelines rendered to SVG, parsed back and checked (names, kinds, layout)."""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from conftest import build_chain

import hypernodes.viz.dot as viz_dot
from hypernodes import HyperNodesError, Pipeline, node
from hypernodes.viz import GraphPicture, visualize
from hypernodes.viz.layout import layout
from hypernodes.viz.model import build, type_name
from hypernodes.viz.svg import size_of, text_width

SVG = "{http://www.w3.org/2000/svg}"


class Shape:
    def __init__(self, kind: str, label: str, x: float, y: float, w: float, h: float) -> None:
        self.kind, self.label = kind, label
        self.x, self.y, self.w, self.h = x, y, w, h

    @property
    def cx(self) -> float:
        return self.x + self.w / 2

    @property
    def cy(self) -> float:
        return self.y + self.h / 2

    def overlaps(self, other: Shape) -> bool:
        return not (
            self.x + self.w <= other.x
            or other.x + other.w <= self.x
            or self.y + self.h <= other.y
            or other.y + other.h <= self.y
        )


def parse(svg: str) -> tuple[ET.Element, dict[tuple[str, str], Shape]]:
    """The SVG (must be well-formed XML) and its shapes by (kind, first label)."""
    root = ET.fromstring(svg)
    assert root.tag == SVG + "svg"
    shapes: dict[tuple[str, str], Shape] = {}
    for group in root.iter(SVG + "g"):
        kind = (group.get("class") or "").removeprefix("hn-")
        if kind == "cluster":
            continue
        texts = [t.text or "" for t in group.iter(SVG + "text")]
        first = next(iter(group.iter(SVG + "rect")), None)
        if first is not None:
            box = [float(first.get(k, 0)) for k in ("x", "y", "width", "height")]
        else:
            poly = next(group.iter(SVG + "polygon"))
            pts = [tuple(map(float, p.split(","))) for p in (poly.get("points") or "").split()]
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            box = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
        shapes[(kind, texts[0])] = Shape(kind, texts[0], *box)
    return root, shapes


def texts(root: ET.Element) -> list[str]:
    return [t.text or "" for t in root.iter(SVG + "text")]


# -- the pipelines drawn -----------------------------------------------------------------


@node
def load(path: str, limit: int = 10) -> list[str]:
    return [path] * limit


@node
def clean(load: list[str]) -> list[str]:
    return load


@node(output_name=("train", "test"))
def split(clean: list[str], ratio: float = 0.8) -> tuple[list[str], list[str]]:
    return clean, clean


@node
def fit(train: list[str]) -> dict[str, float]:
    return {}


@node
def score(fit: dict[str, float], test: list[str]) -> float:
    return 1.0


@node
def report(score: float, fit: dict[str, float]) -> str:
    return ""


def diamond() -> Pipeline:
    return Pipeline([load, clean, split, fit, score, report], name="diamond")


@node
def double(x: int) -> int:
    return 2 * x


@node
def inc(double: int) -> int:
    return double + 1


@node
def total(inc: list[int]) -> int:
    return sum(inc)


@node
def summary(totals: list[int], title: str) -> str:
    return title


def nested3() -> Pipeline:
    inner = Pipeline([double, inc], name="inner")
    middle = Pipeline([inner.as_node(map_over="x", name="each"), total], name="middle")
    batches = middle.as_node(map_over="x", name="batches", output_mapping={"total": "totals"})
    return Pipeline([batches, summary], name="top")


# -- what is drawn -----------------------------------------------------------------------


def test_a_chain_draws_every_node_in_order_top_to_bottom() -> None:
    pipeline = Pipeline(build_chain(12), name="chain")
    root, shapes = parse(visualize(pipeline, renderer="builtin").svg)
    nodes = [shapes[("node", f"step{i}")] for i in range(12)]
    assert [n.cy for n in nodes] == sorted(n.cy for n in nodes)
    assert len({round(n.cx) for n in nodes}) == 1  # a straight column
    assert ("input", "x") in shapes and ("output", "v11") in shapes
    assert len(root.findall(f".//{SVG}path[@marker-end]")) == 13  # x->step0, 11 links, ->v11


def test_a_diamond_is_layered_with_inputs_optional_inputs_and_outputs_distinct() -> None:
    root, shapes = parse(visualize(diamond(), renderer="builtin").svg)
    order = ["load", "clean", "split", "fit", "score", "report"]
    ys = [shapes[("node", n)].cy for n in order]
    assert ys == sorted(ys) and len(set(ys)) == len(ys)
    assert shapes[("input", "path")].cy < shapes[("node", "load")].cy
    assert ("optional", "limit = 10") in shapes and ("optional", "ratio = 0.8") in shapes
    assert ("output", "report") in shapes
    kinds = {s.kind for s in shapes.values()}
    assert kinds == {"input", "optional", "node", "output"}
    # the two outputs of split are named on their edges; fit and score sit side by side
    assert {"train", "test"} <= set(texts(root))
    assert shapes[("node", "split")].cy < shapes[("node", "fit")].cy < shapes[("node", "score")].cy


def test_no_two_shapes_overlap() -> None:
    @node
    def many(a: int, b: int, c: int, d: int, e: int, f: int) -> int:
        return a

    @node
    def also(a: int, f: int, many: int) -> int:
        return a

    for pipeline in (diamond(), nested3(), Pipeline([many, also], name="fan")):
        for depth in (1, None):
            _, shapes = parse(visualize(pipeline, depth=depth, renderer="builtin").svg)
            found = list(shapes.values())
            for i, a in enumerate(found):
                for b in found[i + 1 :]:
                    assert not a.overlaps(b), (a.label, b.label)


def test_a_three_level_nested_map_collapsed_and_expanded() -> None:
    collapsed = visualize(nested3(), depth=1, renderer="builtin")
    root, shapes = parse(collapsed.svg)
    batches = root.find(f".//{SVG}g[@class='hn-pipeline']")
    assert batches is not None
    # the map mark: two cards stacked behind the box, plus its double border
    assert len(batches.findall(f"{SVG}rect")) == 4
    assert "map over x" in texts(root) and "pipeline middle" in texts(root)
    assert {"double", "inc", "each"}.isdisjoint(texts(root))

    expanded = visualize(nested3(), depth=None, renderer="builtin")
    root, shapes = parse(expanded.svg)
    names = set(texts(root))
    assert {"double", "inc", "total", "summary", "x", "title"} <= names
    assert "batches · pipeline middle  ·  map over x" in names
    assert "each · pipeline inner  ·  map over x" in names
    frames = root.findall(f".//{SVG}g[@class='hn-cluster']")
    assert len(frames) == 2
    assert shapes[("node", "double")].cy < shapes[("node", "inc")].cy < shapes[("node", "total")].cy
    assert shapes[("node", "total")].cy < shapes[("node", "summary")].cy

    middle = visualize(nested3(), depth=2, renderer="builtin")
    root, _ = parse(middle.svg)
    assert "each" in texts(root) and "double" not in texts(root)


def test_nested_clusters_contain_their_nodes() -> None:
    root, shapes = parse(visualize(nested3(), depth=None, renderer="builtin").svg)
    frames = {}
    for group in root.iter(SVG + "g"):
        if group.get("class") == "hn-cluster":
            title = group.find(f"{SVG}title")
            rects = group.findall(f"{SVG}rect")
            x, y, w, h = (float(rects[-1].get(k, 0)) for k in ("x", "y", "width", "height"))
            frames[(title.text or "").split(" ")[0]] = (x, y, w, h)
    for name, inside in (("double", "each"), ("inc", "each"), ("total", "batches")):
        s = shapes[("node", name)]
        x, y, w, h = frames[inside]
        assert x < s.x and s.x + s.w < x + w and y < s.y and s.y + s.h < y + h, name
    x, y, w, h = frames["batches"]
    s = shapes[("node", "summary")]
    assert s.y > y + h  # outside, below


def test_left_to_right_and_bottom_to_top() -> None:
    _, lr = parse(visualize(diamond(), orient="LR", renderer="builtin").svg)
    xs = [lr[("node", n)].cx for n in ("load", "clean", "split", "report")]
    assert xs == sorted(xs)
    _, bt = parse(visualize(diamond(), orient="BT", renderer="builtin").svg)
    ys = [bt[("node", n)].cy for n in ("load", "clean", "split", "report")]
    assert ys == sorted(ys, reverse=True)
    parse(visualize(nested3(), depth=None, orient="RL", renderer="builtin").svg)


def cluster_titles(root: ET.Element) -> list[tuple[str, tuple[float, float, float, float]]]:
    """Each expanded pipeline's title and its text box (x0, y0, x1, y1) as drawn."""
    frames = [
        (group.find(f"{SVG}title").text or "")  # type: ignore[union-attr]
        for group in root.iter(SVG + "g")
        if group.get("class") == "hn-cluster"
    ]
    found = []
    for text in root.iter(SVG + "text"):
        if text.text in frames:
            x, y, size = (float(text.get(k, 0)) for k in ("x", "y", "font-size"))
            width = text_width(text.text, size)
            found.append((text.text, (x, y - 0.8 * size, x + width, y + 0.25 * size)))
    assert len(found) == len(frames)
    return found


def edge_points(root: ET.Element, steps: int = 40) -> list[list[tuple[float, float]]]:
    """Every edge path, sampled along its cubic segments."""
    paths = []
    for path in root.iter(SVG + "path"):
        if path.get("fill") != "none":
            continue  # the arrowhead marker
        numbers = [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", path.get("d", ""))]
        start, rest = (numbers[0], numbers[1]), numbers[2:]
        sampled = [start]
        for k in range(0, len(rest), 6):
            c1, c2, end = rest[k : k + 2], rest[k + 2 : k + 4], rest[k + 4 : k + 6]
            p0 = sampled[-1]
            for i in range(1, steps + 1):
                t = i / steps
                u = 1 - t
                sampled.append(
                    tuple(  # type: ignore[arg-type]
                        u**3 * p0[j] + 3 * u * u * t * c1[j] + 3 * u * t * t * c2[j] + t**3 * end[j]
                        for j in (0, 1)
                    )
                )
        paths.append(sampled)
    return paths


@node(output_name="review")
def fetch_review(review_id: int) -> str:
    return str(review_id)


@node(output_name="stars")
def rate(review: str, scale: int) -> float:
    return 1.0


@node
def mean(stars: list[float], weight: float = 1.0) -> float:
    return sum(stars) * weight


def reviews() -> Pipeline:
    """A mapped nested pipeline whose in-ports sit under the start of its title."""
    inner = Pipeline([fetch_review, rate], name="per_review")
    each = inner.as_node(
        input_mapping={"review_ids": "review_id", "scales": "scale"},
        output_mapping={"stars": "stars"},
        map_over="review_ids",
        name="reviews",
    )
    return Pipeline([each, mean], name="shop")


@pytest.mark.parametrize("orient", ["TB", "BT", "LR", "RL"])
@pytest.mark.parametrize("make", [reviews, nested3], ids=["reviews", "nested3"])
def test_no_edge_crosses_a_nested_pipelines_title(orient: str, make: Any) -> None:
    svg = visualize(make(), depth=None, orient=orient, show_types=True, renderer="builtin").svg
    root, _ = parse(svg)
    titles = cluster_titles(root)
    assert titles
    for label, (x0, y0, x1, y1) in titles:
        for path in edge_points(root):
            inside = [(x, y) for x, y in path if x0 - 1 < x < x1 + 1 and y0 - 1 < y < y1 + 1]
            assert not inside, (label, inside[:3])


def test_text_needs_no_paint_order_to_be_seen() -> None:
    # Renderers without paint-order draw a halo stroke over the glyphs, hiding them.
    for orient in ("TB", "LR"):
        svg = visualize(reviews(), depth=None, orient=orient, renderer="builtin").svg
        assert "paint-order" not in svg
        root, _ = parse(svg)
        for text in root.iter(SVG + "text"):
            assert text.get("stroke") is None, text.text


def test_show_types_and_escaping() -> None:
    class Weird:
        pass

    Weird.__qualname__ = "Weird<&>"

    def make(spec, n=3):  # type: ignore[no-untyped-def]
        return Weird()

    # An annotation that does not even parse, and a class whose name has < and &.
    make.__annotations__ = {"spec": "Tag<a&b>", "n": int, "return": Weird}
    pipeline = Pipeline([node(make)], name="a < b & c")
    svg = visualize(pipeline, show_types=True, renderer="builtin").svg
    root, _ = parse(svg)  # well-formed despite <, & in names and types
    shown = texts(root)
    assert "spec: Tag<a&b>" in shown and "n: int = 3" in shown
    assert "make: Weird<&>" in shown and "a < b & c" in shown
    assert "&lt;" in svg and "&amp;" in svg
    _, shapes = parse(visualize(diamond(), show_types=True, renderer="builtin").svg)
    assert ("input", "path: str") in shapes and ("output", "report: str") in shapes
    root, _ = parse(visualize(diamond(), show_types=True, renderer="builtin").svg)
    assert "→ train: list[str], test: list[str]" in texts(root)


@pytest.mark.parametrize("depth", [1, None])
def test_an_input_mapped_over_is_drawn_as_a_list(depth: int | None) -> None:
    # `x` of `inner` is an int; `batches` maps over lists of lists of it.
    items = {i.title for i in build(nested3(), depth=depth, show_types=True).walk()}
    assert "x: list[list[int]]" in items
    assert "x: int" not in items and "x: list[int]" not in items
    # Renamed on the way in, and a plain (unmapped) nested pipeline keeps the type.
    inner = Pipeline([double, inc], name="inner")
    renamed = inner.as_node(input_mapping={"ids": "x"}, map_over="ids", name="each")
    plain = inner.as_node(input_mapping={"y": "x"}, output_mapping={"inc": "one"}, name="one")
    items = {i.title for i in build(Pipeline([renamed, plain]), depth=1, show_types=True).walk()}
    assert {"ids: list[int]", "y: int"} <= items


def test_type_names_are_short() -> None:
    from collections.abc import Callable
    from typing import Optional

    assert type_name(dict[str, list[int]]) == "dict[str, list[int]]"
    assert type_name(int | None) == "int | None"
    assert type_name(Optional[int]) == "Optional[int]"  # noqa: UP045
    assert type_name(Callable[[int], str]) == "Callable[[int], str]"
    assert type_name(Path) == "Path"


def test_bound_and_async_nodes_are_marked() -> None:
    @node
    async def fetch(url: str, retries: int) -> bytes:
        return b""

    pipeline = Pipeline([fetch], name="p").bind(retries=2)
    root, shapes = parse(visualize(pipeline, renderer="builtin").svg)
    assert ("bound", "retries = 2") in shapes
    assert "async" in texts(root)


# -- outputs: files, notebooks, Graphviz -------------------------------------------------


def test_save_svg_html_and_dot(tmp_path: Path) -> None:
    picture = diamond().visualize(tmp_path / "d.svg", renderer="builtin")
    assert isinstance(picture, GraphPicture)
    parse((tmp_path / "d.svg").read_text(encoding="utf-8"))
    picture.save(tmp_path / "d.html")
    html = (tmp_path / "d.html").read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and "<svg" in html and "split" in html
    picture.save(tmp_path / "d.dot")
    dot = (tmp_path / "d.dot").read_text(encoding="utf-8")
    assert dot.startswith("digraph") and "split" in dot and "->" in dot
    with pytest.raises(ValueError, match="give it a suffix"):
        picture.save(tmp_path / "noext")


def test_saving_into_a_missing_directory_names_it_and_the_fix(tmp_path: Path) -> None:
    picture = visualize(diamond(), renderer="builtin")
    missing = tmp_path / "nonexistent" / "dir"
    with pytest.raises(FileNotFoundError) as info:
        picture.save(missing / "g.svg")
    assert str(info.value) == (
        f"cannot save {str(missing / 'g.svg')!r}: directory {str(missing)!r} does not exist; "
        "create it first"
    )
    (tmp_path / "file").write_text("")
    with pytest.raises(FileNotFoundError, match=r"'.*file' is not a directory"):
        picture.save(tmp_path / "file" / "g.png")  # checked before Graphviz is needed
    assert not missing.exists()


def test_png_without_graphviz_names_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(viz_dot.shutil, "which", lambda name: None)
    picture = visualize(diamond())
    assert picture.renderer == "builtin"
    with pytest.raises(HyperNodesError, match=r"apt-get install graphviz.*hypernodes\[viz\]"):
        picture.save(tmp_path / "d.png")
    with pytest.raises(HyperNodesError, match="renderer='builtin'"):
        visualize(diamond(), renderer="graphviz")


def test_jupyter_reprs() -> None:
    picture = visualize(nested3(), renderer="builtin")
    assert picture._repr_svg_().startswith("<svg")
    html = picture._repr_html_()
    assert html.startswith("<div") and "<svg" in html
    assert repr(picture) == "<GraphPicture 'top' items=5 renderer='builtin' orient='TB'>"


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="depth must be an int >= 1 or None"):
        visualize(diamond(), depth=0)
    with pytest.raises(ValueError, match="orient must be one of"):
        visualize(diamond(), orient="diagonal")
    with pytest.raises(ValueError, match="renderer must be"):
        visualize(diamond(), renderer="ascii")  # type: ignore[arg-type]


def test_dot_source_dissolves_ports_into_direct_edges() -> None:
    dot = visualize(nested3(), depth=None, renderer="builtin").dot
    assert dot.count("subgraph cluster_") == 2
    assert "@in:" not in dot and "@out:" not in dot
    ids = {}
    for line in dot.splitlines():
        for name in ("inc", "total"):
            if f"<b>{name}</b>" in line:
                ids[name] = line.split(" [")[0].strip()
    assert f"{ids['inc']} -> {ids['total']}" in dot  # through the port of each


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_graphviz_renders_when_installed(tmp_path: Path) -> None:
    picture = visualize(nested3(), depth=None)
    assert picture.renderer == "graphviz"
    root = ET.fromstring(picture.svg.encode())
    shown = {t.text for t in root.iter(SVG + "text")}
    assert {"double", "inc", "total", "summary"} <= shown
    picture.save(tmp_path / "g.png")
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- the layout itself -------------------------------------------------------------------


def crossings(routes: list[Any]) -> int:
    segments = []
    for _, points in routes:
        segments.extend(itertools.pairwise(points))

    def cross(s: Any, t: Any) -> bool:
        (a, b), (c, d) = s, t
        if {a, b} & {c, d}:
            return False

        def orient(p: Any, q: Any, r: Any) -> float:
            return (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])

        return orient(a, b, c) * orient(a, b, d) < 0 and orient(c, d, a) * orient(c, d, b) < 0

    return sum(cross(s, t) for i, s in enumerate(segments) for t in segments[i + 1 :])


def test_ordering_removes_avoidable_crossings() -> None:
    # Declared so that the naive order crosses: a feeds the second node, b the first.
    @node
    def first(b: int) -> int:
        return b

    @node
    def second(a: int) -> int:
        return a

    @node
    def third(first: int, a: int) -> int:
        return first

    pipeline = Pipeline([first, second, third], name="p")
    placed = layout(build(pipeline, depth=1, show_types=False), size_of)
    assert crossings(placed.routes) == 0


def test_importing_hypernodes_or_running_does_not_import_viz() -> None:
    code = (
        "import sys, hypernodes\n"
        "p = hypernodes.Pipeline([hypernodes.node(lambda x: x, name='f', output_name='y')])\n"
        "p.run({'x': 1})\n"
        "print([m for m in ('hypernodes.viz', 'graphviz') if m in sys.modules])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
