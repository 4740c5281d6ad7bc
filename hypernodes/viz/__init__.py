"""Pictures of pipelines: ``visualize()`` and the ``GraphPicture`` it returns.

Works on a machine without Graphviz (a built-in layered layout drawn as SVG) and uses
Graphviz's ``dot`` when it is installed. The kernel never imports this package;
``Pipeline.visualize`` imports it on first use.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal
from xml.sax.saxutils import escape

from ..errors import HyperNodesError
from .dot import dot_available, pipe, to_dot
from .model import Diagram, build
from .svg import render_svg

if TYPE_CHECKING:
    from ..pipeline import Pipeline

__all__ = ["GraphPicture", "visualize"]

Renderer = Literal["auto", "builtin", "graphviz"]

_ORIENTS = ("TB", "LR", "BT", "RL")
_NEEDS_DOT = (
    "Graphviz's `dot` program: install it (apt-get install graphviz, brew install graphviz "
    "or conda install graphviz) and pip install 'hypernodes[viz]'"
)


class GraphPicture:
    """A picture of a pipeline: shows itself in Jupyter, saves to a file.

    Attributes:
        renderer: ``"builtin"`` or ``"graphviz"``.
        orient: ``"TB"``, ``"LR"``, ``"BT"`` or ``"RL"``.
        diagram: What is drawn (items and edges), for inspection.
    """

    def __init__(self, diagram: Diagram, *, orient: str, renderer: str, caption: str) -> None:
        self.diagram = diagram
        self.orient = orient
        self.renderer = renderer
        self.caption = caption
        self._svg: str | None = None

    @property
    def svg(self) -> str:
        """The picture as an SVG document."""
        if self._svg is None:
            if self.renderer == "graphviz":
                self._svg = pipe(self.dot, "svg").decode("utf-8")
            else:
                self._svg = render_svg(self.diagram, orient=self.orient, caption=self.caption)
        return self._svg

    @property
    def dot(self) -> str:
        """The picture as Graphviz DOT source (available without Graphviz)."""
        return to_dot(self.diagram, orient=self.orient)

    def save(self, filename: str | Path) -> Path:
        """Write the picture; the format follows the suffix.

        ``.svg`` and ``.html`` always work; ``.dot`` / ``.gv`` write the DOT source;
        ``.png``, ``.pdf`` and the other Graphviz formats need Graphviz's ``dot``.

        Raises:
            ValueError: The file name has no suffix.
            FileNotFoundError: The directory to save into does not exist (or is a file).
            OSError: The file cannot be written (permissions, disk full, ...).
            HyperNodesError: The format needs Graphviz and it is not installed.
        """
        path = Path(filename)
        fmt = path.suffix.lower().lstrip(".")
        if not fmt:
            raise ValueError(
                f"cannot tell the format of {str(path)!r}: give it a suffix such as .svg, "
                ".html or .png"
            )
        folder = path.parent
        if not folder.is_dir():
            problem = "is not a directory" if folder.exists() else "does not exist; create it first"
            raise FileNotFoundError(
                f"cannot save {str(path)!r}: directory {str(folder)!r} {problem}"
            )
        if fmt == "svg":
            path.write_text(self.svg, encoding="utf-8")
        elif fmt in ("html", "htm"):
            path.write_text(self._html_document(), encoding="utf-8")
        elif fmt in ("dot", "gv"):
            path.write_text(self.dot, encoding="utf-8")
        elif not dot_available():
            raise HyperNodesError(
                f"saving a .{fmt} picture needs {_NEEDS_DOT}; or save it as .svg or .html, "
                "which need nothing"
            )
        else:
            path.write_bytes(pipe(self.dot, fmt))
        return path

    def _repr_svg_(self) -> str:
        return self.svg

    def _repr_html_(self) -> str:
        return f'<div style="max-width:100%;overflow:auto">{_inline(self.svg)}</div>'

    def _html_document(self) -> str:
        title = escape(self.caption)
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{title}</title></head>\n"
            '<body style="margin:0;padding:16px;background:#fff">\n'
            f"{_inline(self.svg)}\n</body></html>\n"
        )

    def __repr__(self) -> str:
        items = [i for i in self.diagram.walk() if i.kind not in ("port", "cluster")]
        return (
            f"<GraphPicture {self.diagram.name!r} items={len(items)} "
            f"renderer={self.renderer!r} orient={self.orient!r}>"
        )


def _inline(svg: str) -> str:
    """An SVG document without its XML prologue, to embed in HTML."""
    start = svg.find("<svg")
    return svg[start:] if start >= 0 else svg


def visualize(
    pipeline: Pipeline,
    filename: str | Path | None = None,
    *,
    depth: int | None = 1,
    orient: str = "TB",
    show_types: bool = False,
    renderer: Renderer = "auto",
) -> GraphPicture:
    """Draw ``pipeline``'s graph.

    Args:
        pipeline: The pipeline.
        filename: Also save the picture there (format from the suffix, see
            :meth:`GraphPicture.save`).
        depth: How many levels to show: 1 draws nested pipelines as single boxes, 2 opens
            them one level, ``None`` opens every level.
        orient: ``"TB"`` (top to bottom), ``"LR"``, ``"BT"`` or ``"RL"``.
        show_types: Show the type annotations of inputs and outputs.
        renderer: ``"builtin"`` (pure Python, always available), ``"graphviz"`` (needs
            the ``dot`` program), or ``"auto"``: Graphviz when installed, else built-in.

    Returns:
        A ``GraphPicture`` (shown inline in Jupyter).

    Raises:
        ValueError: A bad ``depth``, ``orient`` or ``renderer``, or a file name without
            a suffix.
        HyperNodesError: ``renderer="graphviz"`` (or a ``.png`` file) without Graphviz.
    """
    if depth is not None and (not isinstance(depth, int) or isinstance(depth, bool) or depth < 1):
        raise ValueError(f"depth must be an int >= 1 or None (every level), got {depth!r}")
    orient = orient.upper() if isinstance(orient, str) else orient
    if orient not in _ORIENTS:
        raise ValueError(f"orient must be one of {', '.join(map(repr, _ORIENTS))}, got {orient!r}")
    if renderer not in ("auto", "builtin", "graphviz"):
        raise ValueError(f"renderer must be 'auto', 'builtin' or 'graphviz', got {renderer!r}")
    if renderer == "auto":
        renderer = "graphviz" if dot_available() else "builtin"
    elif renderer == "graphviz" and not dot_available():
        raise HyperNodesError(f"renderer='graphviz' needs {_NEEDS_DOT}; or use renderer='builtin'")
    diagram = build(pipeline, depth=depth, show_types=show_types)
    picture = GraphPicture(diagram, orient=orient, renderer=renderer, caption=pipeline.name)
    if filename is not None:
        picture.save(filename)
    return picture
