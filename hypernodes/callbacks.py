"""PipelineCallback and its dispatch: optional hooks, only overridden ones are called.

Every execution unit emits exactly one start/end pair: a top-level ``run`` emits
``on_pipeline_start/end``, a top-level ``map`` emits ``on_map_start/end`` and one
``on_map_item_start/end`` per item (the end with the item's outputs), a nested pipeline
emits ``on_nested_pipeline_start/end`` (and map events when it maps). Nodes emit
``on_node_start`` followed by ``on_node_end`` or ``on_node_error``, or ``on_node_cached``
alone; a streaming node emits ``on_node_chunk`` per chunk in between (before
``on_node_cached`` on a hit). Events are emitted by the orchestrator on the event loop
thread, whatever executor runs the node bodies.

Each hook receives a ``context`` (a :class:`CallbackContext`): where in the run the event
happened, with ``data`` dicts to keep state per run and per level. Contexts are objects
passed down the run (not globals), so concurrent runs and items never mix.
"""

from __future__ import annotations

import inspect
import itertools
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

from .node import Node

__all__ = ["HOOKS", "CallbackContext", "Dispatcher", "PipelineCallback"]

logger = logging.getLogger("hypernodes")

ContextKind = Literal["run", "map", "item", "nested"]


class PipelineCallback:
    """Base class for callbacks: override the hooks you need, all keyword-only.

    A hook that raises is logged once (with the callback's name) and that callback is
    disabled for the rest of the run; the run itself is unaffected. Hooks are plain
    functions called on the event loop thread: keep them quick, and hand slow work to a
    thread or a queue of your own.

    Attributes:
        enabled: Read when a run starts; a callback that is not enabled is left out of that
            run entirely and costs nothing (``ProgressCallback(disable=True)`` uses it).
    """

    enabled: bool = True

    def on_pipeline_start(
        self, *, context: CallbackContext, pipeline: Pipeline, inputs: dict[str, Any]
    ) -> None:
        """A top-level ``run`` / ``arun`` started."""

    def on_pipeline_end(
        self,
        *,
        context: CallbackContext,
        pipeline: Pipeline,
        outputs: dict[str, Any] | None,
        duration: float,
        error: BaseException | None,
    ) -> None:
        """A top-level run finished (``error`` is set when it failed)."""

    def on_node_start(
        self, *, context: CallbackContext, node: Node, inputs: dict[str, Any]
    ) -> None:
        """A node is ready and about to run (its attempts may still wait for a ``Limit``
        or a ``max_concurrent`` slot)."""

    def on_node_chunk(self, *, context: CallbackContext, node: Node, chunk: Any) -> None:
        """A streaming node (a generator) yielded ``chunk``; called as each one is yielded,
        between the node's start and its end, on the event loop thread (whatever thread
        a sync generator runs in). A cache hit emits the cached chunks at once, before
        ``on_node_cached``; a retried attempt's chunks are emitted again."""

    def on_node_end(
        self, *, context: CallbackContext, node: Node, outputs: dict[str, Any], duration: float
    ) -> None:
        """A node finished; ``duration`` is seconds, including retries and waits."""

    def on_node_cached(
        self, *, context: CallbackContext, node: Node, outputs: dict[str, Any]
    ) -> None:
        """A node's outputs came from the cache instead of running it."""

    def on_node_error(
        self, *, context: CallbackContext, node: Node, error: BaseException, duration: float
    ) -> None:
        """A node failed (after its retries); ``error`` is the user's exception."""

    def on_node_retry(
        self,
        *,
        context: CallbackContext,
        node: Node,
        attempt: int,
        error: BaseException,
        delay: float,
    ) -> None:
        """Attempt ``attempt`` (1-based) of a node failed with ``error`` and the node will
        be attempted again after ``delay`` seconds (see ``Retry``)."""

    def on_nested_pipeline_start(
        self, *, context: CallbackContext, node: Node, pipeline: Pipeline
    ) -> None:
        """A nested pipeline started; ``context`` is the nested level's."""

    def on_nested_pipeline_end(
        self,
        *,
        context: CallbackContext,
        node: Node,
        pipeline: Pipeline,
        duration: float,
        error: BaseException | None,
    ) -> None:
        """A nested pipeline finished."""

    def on_map_start(
        self,
        *,
        context: CallbackContext,
        pipeline: Pipeline,
        n_items: int | None,
        map_over: Sequence[str],
    ) -> None:
        """A map over ``n_items`` items started (``None``: its input has no length and is
        read lazily); ``context`` is the map's."""

    def on_map_end(
        self,
        *,
        context: CallbackContext,
        pipeline: Pipeline,
        n_items: int | None,
        duration: float,
        error: BaseException | None,
    ) -> None:
        """A map finished."""

    def on_map_item_start(self, *, context: CallbackContext, index: int) -> None:
        """Map item ``index`` started; ``context`` is the item's."""

    def on_map_item_end(
        self,
        *,
        context: CallbackContext,
        index: int,
        duration: float,
        error: BaseException | None,
        outputs: dict[str, Any] | None = None,
    ) -> None:
        """Map item ``index`` finished: ``outputs`` is its result dict (the outputs the map
        returns for it), or ``None`` when it failed (``error`` is then set)."""


HOOKS = tuple(name for name in vars(PipelineCallback) if name.startswith("on_"))

_run_ids = itertools.count(1)


class CallbackContext:
    """Where an event happened, and room to keep state.

    Attributes:
        kind: ``"run"``, ``"map"``, ``"item"`` or ``"nested"``.
        pipeline: The name of the pipeline at this level.
        parent: The enclosing level's context, ``None`` at the top.
        node: For a nested level, the name of the node that runs it.
        index: For an item, its index in the map.
        depth: 0 at the top, one more per nested pipeline, map or item below it.
        run_id: The same for every level of one top-level run.
        data: Free per-level state for callbacks (e.g. a progress bar).
    """

    __slots__ = ("data", "depth", "index", "kind", "node", "parent", "pipeline", "run_id")

    def __init__(
        self,
        kind: ContextKind,
        pipeline: str,
        parent: CallbackContext | None = None,
        *,
        node: str | None = None,
        index: int | None = None,
    ) -> None:
        self.kind = kind
        self.pipeline = pipeline
        self.parent = parent
        self.node = node
        self.index = index
        self.depth: int = 0 if parent is None else parent.depth + 1
        self.run_id: int = next(_run_ids) if parent is None else parent.run_id
        self.data: dict[str, Any] = {}

    def child(
        self, kind: ContextKind, pipeline: str, *, node: str | None = None, index: int | None = None
    ) -> CallbackContext:
        """A context for a level below this one."""
        return CallbackContext(kind, pipeline, self, node=node, index=index)

    @property
    def root(self) -> CallbackContext:
        """The top-level context of this run (its ``data`` is per-run state)."""
        ctx = self
        while ctx.parent is not None:
            ctx = ctx.parent
        return ctx

    @property
    def item_index(self) -> int | None:
        """The index of the innermost map item this level belongs to."""
        ctx: CallbackContext | None = self
        while ctx is not None:
            if ctx.kind == "item":
                return ctx.index
            ctx = ctx.parent
        return None

    @property
    def path(self) -> tuple[str, ...]:
        """Readable path from the top: pipeline names, nested node names, item indices."""
        parts: list[str] = []
        ctx: CallbackContext | None = self
        while ctx is not None:
            if ctx.kind == "item":
                parts.append(f"[{ctx.index}]")
            elif ctx.kind == "nested" or (ctx.kind == "map" and ctx.node is not None):
                parts.append(f"{ctx.node}:{ctx.pipeline}")
            else:
                parts.append(ctx.pipeline)
            ctx = ctx.parent
        return tuple(reversed(parts))

    def __repr__(self) -> str:
        return f"<CallbackContext {'/'.join(self.path)} kind={self.kind} depth={self.depth}>"


_hooks_by_class: dict[type, tuple[str, ...]] = {}


def _hooks_of(cls: type[PipelineCallback]) -> tuple[str, ...]:
    """The hooks a callback class overrides (computed once per class: every run reads it).

    Raises:
        TypeError: An overridden hook is async.
    """
    found = _hooks_by_class.get(cls)
    if found is not None:
        return found
    hooks = tuple(h for h in HOOKS if getattr(cls, h) is not getattr(PipelineCallback, h))
    for hook in hooks:
        if inspect.iscoroutinefunction(getattr(cls, hook)):
            raise TypeError(
                f"{cls.__name__}.{hook} is async; callback hooks are plain functions called "
                "on the event loop: define it with `def` (and start a task from it if it "
                "must await)"
            )
        names = _keywords_taken(cls, hook)
        if names is not None:
            _narrowed_by_class[cls, hook] = names
    _hooks_by_class[cls] = hooks
    return hooks


def _keywords_taken(cls: type[PipelineCallback], hook: str) -> frozenset[str] | None:
    """The keywords an overridden hook takes, when it does not take all that are passed.

    A hook written before a keyword was added (``on_map_item_end`` before ``outputs``)
    keeps working: it is called with the keywords it names. ``None``: it takes them all.
    """
    try:
        params = inspect.signature(getattr(cls, hook)).parameters
    except (TypeError, ValueError):  # no signature to read (a C callable): trust it
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return None
    passed = list(inspect.signature(getattr(PipelineCallback, hook)).parameters)[1:]
    takes = {n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    if all(n in takes for n in passed):
        return None
    return frozenset(takes)


class _Narrowed:
    """A hook called with only the keywords it takes (see :func:`_keywords_taken`).

    Looks like the bound method to the dispatcher (``__self__``, ``__qualname__``), so a
    raising one is reported and disabled like any other.
    """

    __slots__ = ("__qualname__", "__self__", "_method", "_names")

    def __init__(self, method: Callable[..., None], names: frozenset[str]) -> None:
        self._method = method
        self._names = names
        self.__self__ = getattr(method, "__self__", method)
        self.__qualname__ = getattr(method, "__qualname__", repr(method))

    def __call__(self, **event: Any) -> None:
        names = self._names
        self._method(**{k: v for k, v in event.items() if k in names})


def _listener(cb: PipelineCallback, hook: str) -> Callable[..., None]:
    method: Callable[..., None] = getattr(cb, hook)
    names = _narrowed_by_class.get((type(cb), hook))
    return method if names is None else _Narrowed(method, names)


_narrowed_by_class: dict[tuple[type, str], frozenset[str]] = {}


class Dispatcher:
    """The callbacks of one run, as one listener list per hook (empty lists cost nothing).

    A listener that raises is logged once and disabled for the rest of the run, at every
    level of it. Callbacks whose ``enabled`` is false when the run starts are left out.
    A nested level's dispatcher is composed from its enclosing level's (see
    :meth:`compose`).

    Raises:
        TypeError: A callback is not a ``PipelineCallback`` instance, or a hook is async.
    """

    __slots__ = (*HOOKS, "_composed", "_disabled", "_parent", "callbacks")

    # One listener list per hook (set in __init__), spelled out for type checkers.
    on_pipeline_start: list[Callable[..., None]]
    on_pipeline_end: list[Callable[..., None]]
    on_node_start: list[Callable[..., None]]
    on_node_chunk: list[Callable[..., None]]
    on_node_end: list[Callable[..., None]]
    on_node_cached: list[Callable[..., None]]
    on_node_error: list[Callable[..., None]]
    on_node_retry: list[Callable[..., None]]
    on_nested_pipeline_start: list[Callable[..., None]]
    on_nested_pipeline_end: list[Callable[..., None]]
    on_map_start: list[Callable[..., None]]
    on_map_end: list[Callable[..., None]]
    on_map_item_start: list[Callable[..., None]]
    on_map_item_end: list[Callable[..., None]]

    def __init__(self, callbacks: Iterable[PipelineCallback]) -> None:
        self.callbacks = tuple(callbacks)
        for cb in self.callbacks:
            if not isinstance(cb, PipelineCallback):
                raise TypeError(
                    f"callbacks must be PipelineCallback instances, got {cb!r}"
                    + (" (pass an instance, not the class)" if isinstance(cb, type) else "")
                )
        self._disabled: set[int] = set()
        self._parent: Dispatcher | None = None
        # Composed nested-level dispatchers, by the ids of the callbacks added (kept with
        # them, so an id cannot be reused while its entry lives).
        self._composed: dict[tuple[int, ...], tuple[tuple[PipelineCallback, ...], Dispatcher]] = {}
        listening = [(cb, _hooks_of(type(cb))) for cb in self.callbacks if cb.enabled]
        for hook in HOOKS:
            setattr(self, hook, [_listener(cb, hook) for cb, hooks in listening if hook in hooks])

    @classmethod
    def create(cls, callbacks: Sequence[PipelineCallback] | None) -> Dispatcher | None:
        """A dispatcher, or ``None`` when no enabled callback overrides any hook.

        Raises:
            TypeError: A callback is not a ``PipelineCallback`` instance, or a hook is async.
        """
        if not callbacks:
            return None
        try:  # the common idle case, without building anything (this runs once per run)
            if not any(cb.enabled and _hooks_of(type(cb)) for cb in callbacks):
                return None
        except AttributeError:
            pass  # not a callback: the constructor says what is wrong
        return cls(callbacks)

    @classmethod
    def compose(
        cls, outer: Dispatcher | None, own: Sequence[PipelineCallback]
    ) -> Dispatcher | None:
        """The dispatcher of a nested level: the enclosing level's callbacks (they see
        every event inside), then the level's ``own`` callbacks that are not among them
        (each callback gets each event once).

        Built once per run and set of own callbacks, and shares the run's record of
        callbacks disabled for raising.

        Raises:
            TypeError: A callback is not a ``PipelineCallback`` instance, or a hook is async.
        """
        if outer is None:
            return cls.create(own)
        present = {id(cb) for cb in outer.callbacks}
        extra = tuple(cb for cb in own if id(cb) not in present)
        if not extra:
            return outer
        key = tuple(map(id, extra))
        known = outer._composed.get(key)
        if known is not None:
            return known[1]
        found: Dispatcher
        if cls.create(extra) is None:  # none of them listens: nothing to add
            found = outer
        else:
            disabled = outer._disabled
            kept = tuple(cb for cb in outer.callbacks if id(cb) not in disabled)
            found = cls((*kept, *extra))
            found._disabled = disabled
            found._parent = outer
        outer._composed[key] = (extra, found)
        return found

    @property
    def active(self) -> bool:
        """Whether any hook has a listener."""
        return any(getattr(self, hook) for hook in HOOKS)

    def emit(self, listeners: list[Callable[..., None]], **event: Any) -> None:
        """Call each listener with ``event``; report and disable any that raises."""
        for listener in listeners:
            try:
                listener(**event)
            except Exception:
                self._disable(listener)

    def _disable(self, listener: Callable[..., None]) -> None:
        # Take every hook of that callback out of this run's lists, at every level of the
        # run, so the hot path never checks a "disabled" flag. (Emitting iterates over a
        # copy from here on.)
        owner = getattr(listener, "__self__", listener)
        if id(owner) in self._disabled:  # (one set, shared by every level of the run)
            return
        self._disabled.add(id(owner))
        top = self
        while top._parent is not None:
            top = top._parent
        top._drop(owner)
        name = getattr(listener, "__qualname__", repr(listener))
        logger.exception("callback %s raised; it is disabled for the rest of this run", name)

    def _drop(self, owner: object) -> None:
        for hook in HOOKS:
            kept = [m for m in getattr(self, hook) if getattr(m, "__self__", m) is not owner]
            setattr(self, hook, kept)
        for _, child in self._composed.values():
            if child is not self:
                child._drop(owner)


# The kernel modules that name each other (callbacks, config, engines.base, nested, pipeline)
# import each other last, once every name of the module exists: then any of them can be
# imported first (tests/test_type_hints.py checks). Annotations need these names at run
# time (typing.get_type_hints), not only under TYPE_CHECKING.
from .pipeline import Pipeline  # noqa: E402
