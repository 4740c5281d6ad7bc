"""ProgressCallback: progress bars per pipeline level and per map (tqdm or rich).

One bar per top-level run (counting its nodes) or map (counting items), and one bar per
nested pipeline or nested map *position* below it: the runs of a nested pipeline in every
item of a map share one bar, whose counts add up, so a map over a thousand items draws a
few bars, not a thousand. Cache hits and failures are shown next to the counts.

Bars live on the event loop thread (where events are emitted), so counts stay right when
items finish concurrently and out of order. The bar library is imported when the first
run starts, never at ``import hypernodes``; this module imports nothing heavy.
"""

from __future__ import annotations

import importlib.util
import io
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, TextIO

from .callbacks import CallbackContext, PipelineCallback
from .node import Node
from .pipeline import Pipeline

__all__ = ["ProgressCallback"]

Backend = Literal["auto", "tqdm", "rich"]

_INSTALL = "pip install 'hypernodes[progress]'"


class ProgressCallback(PipelineCallback):
    """Progress bars for runs, maps and nested pipelines, in a terminal or a notebook.

    In a terminal (or any file) the bars are text on stderr; in Jupyter they are
    notebook widgets when ``ipywidgets`` is installed, and otherwise one line of text
    shown as a cell output updated in place (a saved notebook keeps the final state).

    Args:
        disable: ``True`` turns the bars off (the callback then costs nothing); ``None``
            shows them only when the output is a terminal or a notebook.
        leave: Keep the finished bars on screen.
        file: Where text bars go (default: ``sys.stderr`` at the time of the run).
        backend: ``"tqdm"``, ``"rich"``, or ``"auto"`` (tqdm when installed, else rich).
        min_interval: Seconds between redraws of a bar.

    Raises:
        ValueError: An unknown ``backend``.
        ImportError: The backend's library is not installed (the message has the
            ``pip install`` line).
    """

    def __init__(
        self,
        *,
        disable: bool | None = False,
        leave: bool = True,
        file: TextIO | None = None,
        backend: Backend = "auto",
        min_interval: float = 0.1,
    ) -> None:
        if backend not in ("auto", "tqdm", "rich"):
            raise ValueError(f"backend must be 'auto', 'tqdm' or 'rich', got {backend!r}")
        self.backend: str = _available(backend)
        self.disable = disable
        self.leave = leave
        self.file = file
        self.min_interval = min_interval
        self._key = f"hypernodes.progress.{id(self):x}"

    @property
    def enabled(self) -> bool:
        """Whether this run shows bars (read by the kernel when a run starts)."""
        if self.disable is None:
            return _in_notebook() or _isatty(self.file or sys.stderr)
        return not self.disable

    @enabled.setter
    def enabled(self, value: bool) -> None:
        self.disable = not value

    def __repr__(self) -> str:
        return f"ProgressCallback(backend={self.backend!r}, disable={self.disable!r})"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["file"] = None  # streams do not travel; the other side uses its own stderr
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._key = f"hypernodes.progress.{id(self):x}"

    # -- hooks ----------------------------------------------------------------------------

    def on_pipeline_start(
        self, *, context: CallbackContext, pipeline: Pipeline, inputs: dict[str, Any]
    ) -> None:
        """Open the run's bar: one step per node to run."""
        run = self._run(context, pipeline)
        run.level(context, pipeline.name, "node", _planned(pipeline, None, inputs))

    def on_pipeline_end(
        self, *, context: CallbackContext, error: BaseException | None, **_: Any
    ) -> None:
        """Close every bar of the run."""
        self._finish(context, error)

    def on_map_start(
        self, *, context: CallbackContext, pipeline: Pipeline, n_items: int | None, **_: Any
    ) -> None:
        """Open (or grow) the bar of this map: one step per item."""
        run = self._run(context, pipeline)
        label = pipeline.name if context.node is None else context.node
        level = run.level(context, label, "item", n_items)
        context.data[self._key] = level

    def on_map_end(
        self, *, context: CallbackContext, error: BaseException | None, **_: Any
    ) -> None:
        """Close the bars when this map is the whole run."""
        if context.parent is None and context.node is None:
            self._finish(context, error)

    def on_map_item_end(
        self, *, context: CallbackContext, error: BaseException | None, **_: Any
    ) -> None:
        """Count a finished item on its map's bar."""
        self._level(context).step(failed=error is not None)

    def on_nested_pipeline_start(
        self, *, context: CallbackContext, node: Node, pipeline: Pipeline
    ) -> None:
        """Open (or grow) the bar of a nested pipeline; a nested map opens in on_map_start."""
        if context.kind != "nested":
            return
        run = self._run(context, pipeline)
        outputs = [n for n in pipeline.outputs if _exposed(node, n)]
        provided = (*pipeline.inputs, *pipeline.optional_inputs)
        context.data[self._key] = run.level(
            context, node.name, "node", _planned(pipeline, outputs, provided)
        )

    def on_nested_pipeline_end(
        self, *, context: CallbackContext, error: BaseException | None, **_: Any
    ) -> None:
        """Count the nested pipeline as one step of the level that ran it."""
        if context.parent is None:
            self._finish(context, error)
        else:
            self._level(context.parent).node(failed=error is not None)

    def on_node_end(self, *, context: CallbackContext, **_: Any) -> None:
        """Count a node."""
        self._level(context).node()

    def on_node_cached(self, *, context: CallbackContext, **_: Any) -> None:
        """Count a node that came from the cache."""
        self._level(context).node(cached=True)

    def on_node_error(self, *, context: CallbackContext, **_: Any) -> None:
        """Count a failed node."""
        self._level(context).node(failed=True)

    def on_node_retry(self, *, context: CallbackContext, **_: Any) -> None:
        """Count a retry (shown as ``retries=N`` next to the bar)."""
        self._level(context).retry()

    # -- state ----------------------------------------------------------------------------

    def _run(self, context: CallbackContext, pipeline: Pipeline | None) -> _Run:
        root = context.root
        run: _Run | None = root.data.get(self._key + ".run")
        if run is None:
            display = _display(self.backend, self.file, self.leave, self.min_interval)
            width = 0 if pipeline is None else _label_width(pipeline)
            run = root.data[self._key + ".run"] = _Run(display, width)
        return run

    def _level(self, context: CallbackContext) -> _Level:
        level: _Level | None = context.data.get(self._key)
        if level is None:
            if context.parent is not None and context.kind == "item":
                level = self._level(context.parent)
            else:  # a level whose start was not seen: count it all the same
                run = self._run(context, None)
                level = run.level(context, context.node or context.pipeline, "node", None)
            context.data[self._key] = level
        return level

    def _finish(self, context: CallbackContext, error: BaseException | None) -> None:
        run: _Run | None = context.root.data.pop(self._key + ".run", None)
        if run is not None:
            run.close(failed=error is not None)


def _exposed(node: Node, inner: str) -> bool:
    mapping: dict[str, str] = getattr(node, "output_mapping", {})
    return mapping.get(inner, inner) in node.outputs


def _planned(pipeline: Pipeline, outputs: Sequence[str] | None, provided: Iterable[str]) -> int:
    """How many nodes a run will execute (all of them when the plan cannot be known)."""
    try:
        return len(pipeline.plan(outputs, provided).steps)
    except Exception:  # e.g. a run restricted by output_name that we cannot see
        return len(pipeline.nodes)


def _label_width(pipeline: Pipeline) -> int:
    """The widest label the run can show, so that the bars line up."""
    width = 0
    stack: list[tuple[Any, int]] = [(pipeline, 0)]
    while stack:
        current, depth = stack.pop()
        width = max(width, 2 * depth + len(current.name))
        for n in current.nodes:
            inner = getattr(n, "pipeline", None)
            if inner is not None:
                width = max(width, 2 * (depth + 1) + len(n.name))
                stack.append((inner, depth + 1))
    return width


class _Level:
    """One bar: a pipeline level or a map, with counts aggregated over its runs."""

    __slots__ = ("bar", "cached", "display", "done", "failed", "items", "retried", "total")

    def __init__(self, display: _Display, bar: Any, total: int | None, *, items: bool) -> None:
        self.display = display
        self.bar = bar
        self.total = total
        self.items = items
        self.done = 0
        self.cached = 0
        self.failed = 0
        self.retried = 0

    def retry(self) -> None:
        """A node of this level (or of an item of this map) failed an attempt and will be
        attempted again."""
        self.retried += 1
        self.display.update(self)

    def grow(self, total: int | None) -> None:
        if total is not None:
            self.total = (self.total or 0) + total
            self.display.update(self)

    def node(self, *, cached: bool = False, failed: bool = False) -> None:
        """A node (or nested pipeline) of this level finished.

        A map's bar counts items, so there a node only shows up as a cache hit.
        """
        if not self.items:
            self.step(cached=cached, failed=failed)
        elif cached:
            self.cached += 1
            self.display.update(self)

    def step(self, *, cached: bool = False, failed: bool = False) -> None:
        """One more unit (node or item) of this bar is done."""
        if failed:
            self.failed += 1
        else:
            self.done += 1
            self.cached += cached
        self.display.update(self)

    @property
    def postfix(self) -> str:
        parts = []
        if self.cached:
            parts.append(f"cached={self.cached}")
        if self.retried:
            parts.append(f"retries={self.retried}")
        if self.failed:
            parts.append(f"failed={self.failed}")
        return ", ".join(parts)


class _Run:
    """The bars of one top-level run, by position in the pipeline (item indices removed)."""

    def __init__(self, display: _Display, width: int) -> None:
        self.display = display
        self.width = width
        self.levels: dict[tuple[str, ...], _Level] = {}

    def level(self, context: CallbackContext, label: str, unit: str, total: int | None) -> _Level:
        key = tuple(p for p in context.path if not p.startswith("["))
        level = self.levels.get(key)
        if level is None:
            depth = len(key) - 1
            text = ("  " * depth + label).ljust(self.width)
            bar = self.display.add(text, unit, total, depth)
            level = self.levels[key] = _Level(self.display, bar, total, items=unit == "item")
        else:
            level.grow(total)
        return level

    def close(self, *, failed: bool) -> None:
        for level in self.levels.values():
            if not failed and level.total is not None and level.done < level.total:
                level.total = level.done  # fewer steps ran than planned (e.g. output_name)
                self.display.update(level)
        self.display.close([lv.bar for lv in self.levels.values()])


# -- displays -------------------------------------------------------------------------------


class _Display:
    """Draws bars; one per run. Subclasses wrap a bar library."""

    def add(self, label: str, unit: str, total: int | None, depth: int) -> Any:
        raise NotImplementedError

    def update(self, level: _Level) -> None:
        raise NotImplementedError

    def close(self, bars: list[Any]) -> None:
        raise NotImplementedError


class _TqdmDisplay(_Display):
    """tqdm bars: widgets in a notebook, text elsewhere; ``compact`` keeps to one line."""

    def __init__(self, *, file: TextIO | None, leave: bool, interval: float, mode: str) -> None:
        if mode == "widgets":
            from tqdm.notebook import tqdm  # deferred: the optional tqdm
        else:
            from tqdm.std import tqdm  # deferred: the optional tqdm
        self.tqdm = tqdm
        self.file: TextIO | io.TextIOBase | None = _NotebookLine() if mode == "compact" else file
        self.leave = leave
        self.interval = interval
        self.compact = mode == "compact"
        self.top: Any = None
        self.top_level: _Level | None = None
        self.inner: dict[int, tuple[str, _Level | None]] = {}

    def add(self, label: str, unit: str, total: int | None, depth: int) -> Any:
        if self.compact and self.top is not None:
            handle = len(self.inner)
            self.inner[handle] = (label.strip(), None)
            return handle
        bar = self.tqdm(
            total=total,
            desc=label,
            unit=unit,
            leave=self.leave,
            file=self.file if self.file is not None else sys.stderr,
            mininterval=self.interval,
            dynamic_ncols=True,
            smoothing=0.1,
        )
        if self.top is None:
            self.top = bar
        return bar

    def update(self, level: _Level) -> None:
        bar = level.bar
        postfix = level.postfix
        if isinstance(bar, int):  # compact: a nested level, shown after the top bar
            self.inner[bar] = (self.inner[bar][0], level)
            if self.top_level is None:
                return
            level, bar = self.top_level, self.top
            postfix = level.postfix
        elif bar is self.top:
            self.top_level = level
        if self.compact and self.inner:
            shown = [
                f"{name} {lv.done}/{'?' if lv.total is None else lv.total}"
                for name, lv in self.inner.values()
                if lv is not None
            ]
            postfix = " | ".join(p for p in (postfix, ", ".join(shown)) if p)
        if bar.total != level.total:
            bar.total = level.total
            bar.refresh()
        if postfix != (bar.postfix or ""):
            bar.set_postfix_str(postfix, refresh=False)
        bar.update(level.done - bar.n)

    def close(self, bars: list[Any]) -> None:
        # Top bar first: each leaves its final line where the cursor is, in order.
        for bar in bars:
            if not isinstance(bar, int):
                bar.close()


class _RichDisplay(_Display):
    """One rich ``Progress`` per run, a task per bar."""

    def __init__(self, *, file: TextIO | None, leave: bool, interval: float) -> None:
        from rich.console import Console  # deferred: the optional rich
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        in_notebook = _in_notebook() and _has_widgets()
        console = Console(
            file=file if file is not None else sys.stderr,
            force_jupyter=None if in_notebook else False,
        )
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[unit]}"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[postfix]}"),
            console=console,
            transient=not leave,
            refresh_per_second=max(1.0, 1 / max(interval, 1e-3)),
        )
        self.progress.start()

    def add(self, label: str, unit: str, total: int | None, depth: int) -> Any:
        return self.progress.add_task(label, total=total, unit=f"{unit}s", postfix="")

    def update(self, level: _Level) -> None:
        self.progress.update(
            level.bar, completed=level.done, total=level.total, postfix=level.postfix
        )

    def close(self, bars: list[Any]) -> None:
        self.progress.refresh()
        self.progress.stop()


class _NotebookLine(io.TextIOBase):
    """A stream for a text bar in a notebook: its latest line is one cell output, updated
    in place (a display with an id), never a stream of ``\\r`` redraws.

    A saved notebook keeps every stream write as output, and viewers that do not apply
    ``\\r`` show the first redraw (a finished map read "0%"); an updated display keeps
    only the latest state.
    """

    encoding = "utf-8"  # tqdm then draws its bar with block characters

    def __init__(self) -> None:
        super().__init__()
        self.handle: Any = None
        self.shown = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        line = text.rsplit("\r", 1)[-1].strip("\n").rstrip()
        if line and line != self.shown:
            self.shown = line
            bundle = {"text/plain": line}
            if self.handle is None:
                self.handle = _show(bundle)
            else:
                self.handle.update(bundle, raw=True)
        return len(text)


def _show(bundle: dict[str, str]) -> Any:
    """Show ``bundle`` as a new output of the running cell; the handle updates it."""
    from IPython.display import display  # only called in a notebook: IPython is loaded

    show: Callable[..., Any] = display  # IPython is not annotated
    return show(bundle, raw=True, display_id=True)


def _display(backend: str, file: TextIO | None, leave: bool, interval: float) -> _Display:
    if backend == "rich":
        return _RichDisplay(file=file, leave=leave, interval=interval)
    if file is None and _in_notebook():
        mode = "widgets" if _has_widgets() else "compact"
    else:
        mode = "text"
    return _TqdmDisplay(file=file, leave=leave, interval=interval, mode=mode)


def _available(backend: str) -> str:
    """The backend to use; checks the library is installed without importing it."""
    found = {name: importlib.util.find_spec(name) is not None for name in ("tqdm", "rich")}
    if backend == "auto":
        for name in ("tqdm", "rich"):
            if found[name]:
                return name
        raise ImportError(f"ProgressCallback needs tqdm or rich: {_INSTALL}")
    if not found[backend]:
        raise ImportError(f"ProgressCallback(backend={backend!r}) needs {backend}: {_INSTALL}")
    return backend


def _in_notebook() -> bool:
    """Whether we run in a Jupyter kernel (checked without importing IPython)."""
    ipython = sys.modules.get("IPython")
    get = getattr(ipython, "get_ipython", None)
    shell = get() if callable(get) else None
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def _has_widgets() -> bool:
    return importlib.util.find_spec("ipywidgets") is not None


def _isatty(file: TextIO) -> bool:
    try:
        return file.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False
