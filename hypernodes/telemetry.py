"""TelemetryCallback: OpenTelemetry spans for runs, maps, items, nested pipelines and nodes.

Span tree (names): ``pipeline <name>`` or ``map <name>`` at the top; ``nested <node>``
for a nested pipeline (with ``map <name>`` below it when it maps); ``map item <i>`` per
item; ``node <name>`` per node. Attributes live under the ``hypernodes.`` prefix; a
streaming node's span has ``hypernodes.chunks`` (how many chunks it yielded) and
``hypernodes.time_to_first_chunk_s`` (seconds from its start to its first chunk).

Parents are explicit: each level keeps its span in its callback context and children
are started with ``trace.set_span_in_context(parent)``, never from the ambient current
span, so concurrent nodes and items nest correctly. The top span's parent is whatever
span is current where the run starts (a web request's, say). While a level or node
runs, its span is also made current (``opentelemetry.context.attach`` in the task that
runs it, detached when it ends), so spans your own node code opens, or that
instrumented libraries open inside it, nest under the right node, threads included.

Needs the ``telemetry`` extra: ``pip install 'hypernodes[telemetry]'``.
"""

from __future__ import annotations

from contextvars import Token
from time import perf_counter
from typing import Any

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Status, StatusCode
except ImportError as exc:  # pragma: no cover - exercised with the extra missing
    raise ImportError(
        "hypernodes.telemetry needs OpenTelemetry: pip install 'hypernodes[telemetry]'"
    ) from exc

from . import __version__
from .callbacks import CallbackContext, PipelineCallback
from .config import effective_engine
from .engines.base import Engine
from .node import Node
from .pipeline import Pipeline

__all__ = ["TelemetryCallback"]

_PREFIX = "hypernodes."


class TelemetryCallback(PipelineCallback):
    """Emit OpenTelemetry spans for everything a run does.

    Send them anywhere OpenTelemetry can: Logfire (``logfire.configure()`` sets the
    global provider), Jaeger, Honeycomb or any OTLP collector (see ``docs/telemetry.md``).

    Args:
        tracer_provider: Where spans go; the global provider
            (``opentelemetry.trace.get_tracer_provider()``) when ``None``, looked up at
            each run so a provider configured later is still used.
    """

    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        self.tracer_provider = tracer_provider
        self._key = f"hypernodes.telemetry.{id(self):x}"

    def __repr__(self) -> str:
        return f"TelemetryCallback(tracer_provider={self.tracer_provider!r})"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["tracer_provider"] = None  # providers hold exporters and threads
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._key = f"hypernodes.telemetry.{id(self):x}"

    # -- top level --------------------------------------------------------------------

    def on_pipeline_start(
        self, *, context: CallbackContext, pipeline: Pipeline, inputs: dict[str, Any]
    ) -> None:
        """Start the run's span, a child of the caller's current span."""
        engine = self._engine(context, _effective_engine(pipeline))
        self._open(
            context,
            f"pipeline {pipeline.name}",
            _level_attributes(context, executor=_executor(engine, "node_executor")),
        )

    def on_pipeline_end(
        self, *, context: CallbackContext, duration: float, error: BaseException | None, **_: Any
    ) -> None:
        """End the run's span."""
        self._close(context, duration, error)

    def on_map_start(
        self,
        *,
        context: CallbackContext,
        pipeline: Pipeline,
        n_items: int | None,
        map_over: Any,
    ) -> None:
        """Start a map's span (below the nested span when a nested pipeline maps)."""
        if context.parent is None and context.node is None:
            engine = self._engine(context, _effective_engine(pipeline))
        else:
            engine = self._engine(context, None)
        attributes = _level_attributes(context, executor=_executor(engine, "map_executor"))
        if n_items is not None:
            attributes[_PREFIX + "n_items"] = n_items
        attributes[_PREFIX + "map_over"] = list(map_over)
        self._open(context, f"map {pipeline.name}", attributes)

    def on_map_end(
        self, *, context: CallbackContext, duration: float, error: BaseException | None, **_: Any
    ) -> None:
        """End a map's span."""
        self._close(context, duration, error)

    def on_map_item_start(self, *, context: CallbackContext, index: int) -> None:
        """Start an item's span, a child of its map's."""
        self._open(context, f"map item {index}", _level_attributes(context))

    def on_map_item_end(
        self, *, context: CallbackContext, duration: float, error: BaseException | None, **_: Any
    ) -> None:
        """End an item's span."""
        self._close(context, duration, error)

    def on_nested_pipeline_start(
        self, *, context: CallbackContext, node: Node, pipeline: Pipeline
    ) -> None:
        """Start a nested pipeline's span, a child of the level that runs it."""
        inherited = self._engine(context.parent, None) if context.parent is not None else None
        own = getattr(node, "engine_override", None) or pipeline.engine
        engine = self._engine(context, own or inherited or _effective_engine(pipeline))
        attributes = _level_attributes(context, executor=_executor(engine, "node_executor"))
        attributes[_PREFIX + "node"] = node.name
        map_over = getattr(node, "map_over", None)
        if map_over:
            attributes[_PREFIX + "map_over"] = list(map_over)
        self._open(context, f"nested {node.name}", attributes)

    def on_nested_pipeline_end(
        self, *, context: CallbackContext, duration: float, error: BaseException | None, **_: Any
    ) -> None:
        """End a nested pipeline's span."""
        self._close(context, duration, error)

    # -- nodes ------------------------------------------------------------------------

    def on_node_start(
        self, *, context: CallbackContext, node: Node, inputs: dict[str, Any]
    ) -> None:
        """Start a node's span and make it current while the node runs."""
        span = self._tracer().start_span(
            f"node {node.name}",
            context=self._parent(context),
            attributes=self._node_attributes(context, node, cached=False),
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        nodes: dict[str, tuple[Span, Token[Context]]] = context.data.setdefault(
            self._key + ".nodes", {}
        )
        nodes[node.name] = (span, token)
        if node.is_stream:
            streams: dict[str, _Stream] = context.data.setdefault(self._key + ".streams", {})
            streams[node.name] = _Stream(span)

    def on_node_chunk(self, *, context: CallbackContext, node: Node, chunk: Any) -> None:
        """Count a streaming node's chunks; the first sets its time to first chunk."""
        streams: dict[str, _Stream] | None = context.data.get(self._key + ".streams")
        entry = streams.get(node.name) if streams is not None else None
        if entry is None:
            return  # a cache hit's chunks: its span says how many
        entry.count += 1
        if not entry.first:
            entry.first = True  # (the time to the first chunk of the first attempt)
            elapsed = perf_counter() - entry.started
            entry.span.set_attribute(_PREFIX + "time_to_first_chunk_s", elapsed)

    def on_node_end(
        self, *, context: CallbackContext, node: Node, duration: float, **_: Any
    ) -> None:
        """End a node's span."""
        self._end_node(context, node, duration, None)

    def on_node_error(
        self, *, context: CallbackContext, node: Node, error: BaseException, duration: float
    ) -> None:
        """Record the error on the node's span and end it."""
        self._end_node(context, node, duration, error)

    def on_node_retry(
        self,
        *,
        context: CallbackContext,
        node: Node,
        attempt: int,
        error: BaseException,
        delay: float,
    ) -> None:
        """Record a failed attempt that will be retried as an event on the node's span."""
        nodes: dict[str, tuple[Span, Token[Context]]] = context.data.get(self._key + ".nodes", {})
        entry = nodes.get(node.name)
        if entry is None:
            return
        streams: dict[str, _Stream] | None = context.data.get(self._key + ".streams")
        if streams is not None and node.name in streams:
            streams[node.name].count = 0  # the chunks counted are the last attempt's
        entry[0].add_event(
            "retry",
            {
                _PREFIX + "attempt": attempt,
                _PREFIX + "delay": delay,
                "exception.type": type(error).__qualname__,
                "exception.message": str(error),
            },
        )

    def on_node_cached(
        self, *, context: CallbackContext, node: Node, outputs: dict[str, Any]
    ) -> None:
        """A span for a node served from the cache (``hypernodes.cached`` is true)."""
        attributes = self._node_attributes(context, node, cached=True)
        chunks = next(iter(outputs.values()), None) if node.is_stream else None
        if isinstance(chunks, list):
            attributes[_PREFIX + "chunks"] = len(chunks)
        span = self._tracer().start_span(
            f"node {node.name}", context=self._parent(context), attributes=attributes
        )
        span.end()

    # -- machinery --------------------------------------------------------------------

    def _tracer(self) -> trace.Tracer:
        provider = self.tracer_provider or trace.get_tracer_provider()
        return provider.get_tracer("hypernodes", __version__)

    def _engine(self, context: CallbackContext, engine: Engine | None) -> Engine | None:
        """Record the engine of a level, or find the nearest recorded one above it."""
        key = self._key + ".engine"
        if engine is not None:
            context.data[key] = engine
            return engine
        ctx: CallbackContext | None = context
        while ctx is not None:
            found: Engine | None = ctx.data.get(key)
            if found is not None:
                return found
            ctx = ctx.parent
        return None

    def _parent(self, context: CallbackContext | None) -> Context | None:
        """The OpenTelemetry context holding the nearest level span at or above ``context``.

        ``None`` (the ambient current context) only above the top of the run.
        """
        ctx = context
        while ctx is not None:
            stack: list[tuple[Span, Token[Context]]] | None = ctx.data.get(self._key)
            if stack:
                return trace.set_span_in_context(stack[-1][0])
            ctx = ctx.parent
        return None

    def _open(self, context: CallbackContext, name: str, attributes: dict[str, Any]) -> None:
        # A nested map's context holds two spans: "nested <node>", then "map <name>".
        span = self._tracer().start_span(name, context=self._parent(context), attributes=attributes)
        token = otel_context.attach(trace.set_span_in_context(span))
        context.data.setdefault(self._key, []).append((span, token))

    def _close(
        self, context: CallbackContext, duration: float, error: BaseException | None
    ) -> None:
        stack: list[tuple[Span, Token[Context]]] | None = context.data.get(self._key)
        if not stack:
            return
        span, token = stack.pop()
        _finish(span, duration, error)
        otel_context.detach(token)

    def _end_node(
        self, context: CallbackContext, node: Node, duration: float, error: BaseException | None
    ) -> None:
        nodes: dict[str, tuple[Span, Token[Context]]] = context.data.get(self._key + ".nodes", {})
        entry = nodes.pop(node.name, None)
        if entry is None:
            return
        span, token = entry
        if node.is_stream:
            streams: dict[str, _Stream] = context.data.get(self._key + ".streams", {})
            counted = streams.pop(node.name, None)
            if counted is not None:
                span.set_attribute(_PREFIX + "chunks", counted.count)
        _finish(span, duration, error)
        otel_context.detach(token)

    def _node_attributes(
        self, context: CallbackContext, node: Node, *, cached: bool
    ) -> dict[str, Any]:
        attributes = _level_attributes(
            context, executor=_executor(self._engine(context, None), "node_executor")
        )
        attributes[_PREFIX + "node"] = node.name
        attributes[_PREFIX + "cached"] = cached
        attributes[_PREFIX + "async"] = node.is_async
        return attributes


class _Stream:
    """A streaming node's chunks so far, and when it started (for its span)."""

    __slots__ = ("count", "first", "span", "started")

    def __init__(self, span: Span) -> None:
        self.span = span
        self.count = 0
        self.first = False
        self.started = perf_counter()


def _finish(span: Span, duration: float, error: BaseException | None) -> None:
    span.set_attribute(_PREFIX + "duration_s", duration)
    if error is not None:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
    span.end()


def _level_attributes(context: CallbackContext, executor: str | None = None) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        _PREFIX + "pipeline": context.pipeline,
        _PREFIX + "path": "/".join(context.path),
        _PREFIX + "run_id": context.run_id,
    }
    index = context.item_index
    if index is not None:
        attributes[_PREFIX + "item_index"] = index
    if executor is not None:
        attributes[_PREFIX + "executor"] = executor
    return attributes


def _effective_engine(pipeline: Pipeline) -> Engine:
    return effective_engine(pipeline)


def _executor(engine: Engine | None, role: str) -> str | None:
    """How the engine runs nodes or items: the alias, or the executor's class name."""
    if engine is None:
        return None
    value = getattr(engine, role, None)
    if value is None:
        return type(engine).__name__
    return value if isinstance(value, str) else type(value).__name__
