"""PipelineNode: a pipeline used as a node (mappings, map_over, inherited settings).

A nested pipeline runs as a coroutine on its parent's loop. It inherits the parent's
engine, cache and callbacks unless it has its own, or ``as_node(...)`` overrides them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from time import perf_counter
from types import EllipsisType
from typing import TYPE_CHECKING, Any, Literal

from .errors import NodeError, PathFrame, PipelineDefinitionError
from .graph import UNNAMED
from .lazy import LazyModule
from .node import Node
from .results import ItemFailure, check_on_error

if TYPE_CHECKING:
    from . import scheduler
else:
    scheduler = LazyModule("hypernodes.scheduler")  # it needs asyncio: only runs load it

__all__ = ["PipelineNode"]


class PipelineNode(Node):
    """A pipeline wrapped as a node; build it with :meth:`Pipeline.as_node`.

    Attributes:
        pipeline: The inner pipeline.
        input_mapping: ``{outer_name: inner_name}``.
        output_mapping: ``{inner_name: outer_name}``.
        map_over: Outer input names that carry lists (the inner pipeline maps over them).
        map_mode: ``"zip"`` or ``"product"``.
        on_error: ``"collect"``: a mapped node keeps going past failed items (see
            :meth:`Pipeline.as_node`).
        cache: Whether the nested run may be cached as a whole: ``False`` when some node
            inside, at any depth, is ``@node(cache=False)``.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        input_mapping: Mapping[str, str] | None = None,
        output_mapping: Mapping[str, str] | None = None,
        map_over: str | Sequence[str] | None = None,
        map_mode: MapMode = "zip",
        name: str | None = None,
        engine: Engine | None = None,
        cache: Any = ...,
        callbacks: Sequence[PipelineCallback] | EllipsisType | None = ...,
        on_error: OnError = "raise",
    ) -> None:
        self.pipeline = pipeline
        check_on_error(on_error)
        self.on_error: OnError = on_error
        self.input_mapping = dict(input_mapping or {})
        self.output_mapping = dict(output_mapping or {})
        if engine is not None and not isinstance(engine, Engine):
            raise TypeError(f"as_node(engine=...) must be an Engine, got {engine!r}")
        self.engine_override = engine
        self.cache_override = cache
        self.callbacks_override: tuple[PipelineCallback, ...] | EllipsisType = (
            ... if isinstance(callbacks, EllipsisType) else tuple(callbacks or ())
        )
        if map_mode not in ("zip", "product"):
            raise ValueError(f"map_mode must be 'zip' or 'product', got {map_mode!r}")
        self.map_mode: MapMode = map_mode
        inner_inputs = (*pipeline.inputs, *pipeline.optional_inputs)
        self._to_inner = self._check_inputs(inner_inputs)
        exposed = self._check_outputs()
        self._inner_outputs = tuple(exposed)
        self.outputs = tuple(self.output_mapping.get(n, n) for n in exposed)
        # Like a Node: the name itself for one output, a tuple of names for several.
        self.output_name = self.outputs[0] if len(self.outputs) == 1 else self.outputs
        self.name = name or _default_name(pipeline, self.outputs)
        to_outer = {inner: outer for outer, inner in self.input_mapping.items()}
        self._inner_inputs = inner_inputs
        self.inputs = tuple(to_outer.get(n, n) for n in inner_inputs)
        self.defaults = {to_outer.get(n, n): v for n, v in pipeline.optional_inputs.items()}
        self.map_over = self._check_map_over(map_over, to_outer)
        # The inner names mapped over, once (a tuple of str: taken as it is).
        self._mapped = tuple(self._to_inner.get(n, n) for n in self.map_over or ())
        self.call_positional = self.inputs
        self.call_keyword = ()
        self.func = self._call
        self.is_async = True
        # Cached as a whole only when every node inside (at any depth: an inner
        # PipelineNode decided the same when it was built) may be cached; its cacheable
        # inner nodes are still cached one by one.
        self.cache = all(n.cache for n in pipeline.nodes)
        self.retries = 0
        self.retry = None
        self.timeout = None
        self.limits = ()
        # Whether a node inside, at any depth, holds a Limit: a map executor that ships
        # whole items then runs them from the orchestrator, which grants the attempts.
        self.limited = any(n.limited for n in pipeline.nodes)
        self.waits = any(n.waits for n in pipeline.nodes)
        self._narrowed: dict[tuple[str, ...], PipelineNode] = {}

    def _check_inputs(self, inner_inputs: Sequence[str]) -> dict[str, str]:
        known = set(inner_inputs)
        for outer, inner in self.input_mapping.items():
            if inner not in known:
                raise PipelineDefinitionError(
                    f"input_mapping maps {outer!r} to {inner!r}, which is not an input of "
                    f"pipeline {self.pipeline.name!r}; its inputs are "
                    f"{', '.join(map(repr, sorted(known))) or 'none'}"
                )
        return dict(self.input_mapping)

    def _check_outputs(self) -> list[str]:
        outputs = self.pipeline.outputs
        for inner in self.output_mapping:
            if inner not in outputs:
                raise PipelineDefinitionError(
                    f"output_mapping names {inner!r}, which is not an output of pipeline "
                    f"{self.pipeline.name!r}; its outputs are {', '.join(map(repr, outputs))}"
                )
        return list(self.output_mapping) if self.output_mapping else list(outputs)

    def _check_map_over(
        self, map_over: str | Sequence[str] | None, to_outer: dict[str, str]
    ) -> tuple[str, ...] | None:
        if map_over is None:
            return None
        from .mapping import normalize_map_over  # deferred: mapping needs asyncio

        names = []
        for name in normalize_map_over(map_over):
            # Outer names are the contract; an inner name that is mapped is accepted too.
            outer = name if name in self.inputs else to_outer.get(name)
            if outer is None or outer not in self.inputs:
                raise PipelineDefinitionError(
                    f"map_over names {name!r}, which is not an input of nested pipeline "
                    f"{self.name!r}; its inputs are {', '.join(map(repr, self.inputs))}"
                )
            names.append(outer)
        return tuple(names)

    def __repr__(self) -> str:
        mapped = f" map_over={list(self.map_over)}" if self.map_over else ""
        return (
            f"<PipelineNode {self.name}({', '.join(self.inputs)}) -> {self.outputs!r}"
            f"{mapped} pipeline={self.pipeline.name!r}>"
        )

    def _call(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Call the nested pipeline directly, with outer names; returns outer outputs."""
        from .bridge import run_sync  # deferred: asyncio is not needed to define pipelines
        from .config import effective_engine

        values = dict(zip(self.inputs, args, strict=False))
        values.update(kwargs)
        inputs = {self._to_inner.get(k, k): v for k, v in values.items()}
        engine = self.engine_override or effective_engine(self.pipeline)
        result = run_sync(self._dispatch(engine, inputs, None))
        return dict(zip(self.outputs, result, strict=True))

    def narrowed(self, outputs: Sequence[str]) -> PipelineNode:
        """This node as run when only ``outputs`` (outer names) of it are needed.

        The narrowed node asks the inner pipeline for those outputs only, so only the
        inner nodes they need run (at any depth: the inner plan narrows in turn), and it
        reads only the inputs those nodes read (mapped inputs always). Its identity names
        its outputs, so a narrowed run and a full one never share a whole-node cache entry.
        Built once per set of outputs.
        """
        wanted = set(outputs)
        kept = tuple(o for o in self.outputs if o in wanted)
        if kept == self.outputs:
            return self
        found = self._narrowed.get(kept)
        if found is None:
            found = self._narrowed[kept] = self._narrow(kept)
        return found

    def _narrow(self, outputs: tuple[str, ...]) -> PipelineNode:
        to_inner = dict(zip(self.outputs, self._inner_outputs, strict=True))
        narrow = PipelineNode(
            self.pipeline,
            input_mapping=self.input_mapping,
            output_mapping={to_inner[o]: o for o in outputs},
            map_over=self.map_over,
            map_mode=self.map_mode,
            name=self.name,
            engine=self.engine_override,
            cache=self.cache_override,
            callbacks=self.callbacks_override,
            on_error=self.on_error,
        )
        plan = self.pipeline.plan(list(narrow._inner_outputs), narrow._inner_inputs)
        read = {name for step in plan.steps for name in step.node.inputs}
        mapped = set(self.map_over or ())
        # (Never an input this node does not have: the outer graph was built from it.)
        inputs = tuple(
            outer
            for outer, inner in zip(narrow.inputs, narrow._inner_inputs, strict=True)
            if (inner in read or outer in mapped) and outer in self.inputs
        )
        narrow.inputs = narrow.call_positional = inputs
        narrow._inner_inputs = tuple(self._to_inner.get(n, n) for n in inputs)
        narrow.defaults = {k: v for k, v in narrow.defaults.items() if k in inputs}
        narrow.cache = self.cache  # decided once, for the whole node
        return narrow

    def copy(self, **changes: Any) -> Node:
        """A copy with a different ``name`` (other node options do not apply)."""
        unsupported = set(changes) - {"name"}
        if unsupported:
            raise TypeError(f"a PipelineNode can only be renamed, not given {sorted(unsupported)}")
        return self.pipeline.as_node(
            input_mapping=self.input_mapping,
            output_mapping=self.output_mapping,
            map_over=self.map_over,
            map_mode=self.map_mode,
            name=changes.get("name", self.name),
            engine=self.engine_override,
            cache=self.cache_override,
            callbacks=self.callbacks_override,
            on_error=self.on_error,
        )

    # -- running ------------------------------------------------------------------------

    async def run_nested(self, args: tuple[Any, ...], scope: scheduler.Scope) -> tuple[Any, ...]:
        """Run the inner pipeline for one call from the outer scheduler.

        Raises:
            NodeError: A node inside failed; its path names this node.
        """
        values = dict(zip(self.inputs, args, strict=True))
        inner = self.pipeline
        engine = self.engine_override or inner.engine or scope.engine
        return await self._execute(values, engine, scope)

    async def _execute(
        self, values: dict[str, Any], engine: Engine, scope: scheduler.Scope
    ) -> tuple[Any, ...]:
        inner = self.pipeline
        to_inner = self._to_inner
        inputs = {to_inner.get(k, k): v for k, v in values.items()}
        cache = self.cache_for(scope)
        dispatcher = self.callbacks_for(scope.callbacks)
        parent_ctx = scope.context
        context = None
        if dispatcher is not None:
            kind: Literal["map", "nested"] = "map" if self.map_over else "nested"
            context = (
                parent_ctx.child(kind, inner.name, node=self.name)
                if parent_ctx is not None
                else CallbackContext(kind, inner.name, node=self.name)
            )
        # (Named for the inner pipeline here: the engine's own level, derived from it,
        # then changes nothing and is this same scope, not a second copy.)
        parent = scope.derive(
            pipeline=inner.name, cache=cache, callbacks=dispatcher, context=context
        )
        d = dispatcher
        if d is not None and d.on_nested_pipeline_start:
            d.emit(d.on_nested_pipeline_start, context=context, node=self, pipeline=inner)
        started = perf_counter()
        error: BaseException | None = None
        try:
            return await self._dispatch(engine, inputs, parent)
        except NodeError as err:
            error = err.__cause__ or err
            if err.frames:
                first = err.frames[0]
                err.frames = (PathFrame(first.pipeline, self.name, first.item), *err.frames[1:])
            raise
        except BaseException as exc:
            error = exc
            raise
        finally:
            if d is not None and d.on_nested_pipeline_end:
                d.emit(
                    d.on_nested_pipeline_end,
                    context=context,
                    node=self,
                    pipeline=inner,
                    duration=perf_counter() - started,
                    error=error,
                )

    async def _dispatch(
        self, engine: Engine, inputs: dict[str, Any], parent: scheduler.Scope | None
    ) -> tuple[Any, ...]:
        inner_outputs = self._inner_outputs
        if self.map_over is None:
            result = await engine.arun(self.pipeline, inputs, list(inner_outputs), _parent=parent)
            return tuple(result[n] for n in inner_outputs)
        results = await engine.amap(
            self.pipeline,
            inputs,
            self._mapped,
            self.map_mode,
            list(inner_outputs),
            on_error=self.on_error,
            _parent=parent,
        )
        # (A failed item, with on_error="collect", is its ItemFailure in every list.)
        rows: list[Any] = results
        return tuple([r if type(r) is ItemFailure else r[n] for r in rows] for n in inner_outputs)

    def cache_for(self, scope: scheduler.Scope) -> Any:
        """The cache runtime of the nested level (the ``as_node`` override, the inner
        pipeline's own cache, or the enclosing level's)."""
        store = self.cache_override
        if store is ...:
            store = self.pipeline.own_cache
            if store is UNSET:
                return scope.cache
        if store is None:
            return None  # (``cache=None``: no cache here, and no import per call)
        from .cache.runtime import CacheRuntime  # deferred: hashing libraries

        return CacheRuntime.create(store)

    def callbacks_for(self, outer: Dispatcher | None) -> Dispatcher | None:
        """The dispatcher of the nested level: the enclosing level's callbacks (``outer``)
        composed with the level's own, which are the ``as_node(callbacks=...)`` override
        when given, else the inner pipeline's own callbacks.

        Raises:
            TypeError: A callback is not a ``PipelineCallback`` instance, or a hook is async.
        """
        own = self.callbacks_override
        if isinstance(own, EllipsisType):
            inner = self.pipeline.own_callbacks
            own = () if inner is UNSET else inner
        return Dispatcher.compose(outer, own)


# The kernel modules that name each other (callbacks, config, engines.base, nested, pipeline)
# import each other last, once every name of the module exists: then any of them can be
# imported first (tests/test_type_hints.py checks). Annotations need these names at run
# time (typing.get_type_hints), not only under TYPE_CHECKING.
from .callbacks import CallbackContext, Dispatcher, PipelineCallback  # noqa: E402
from .config import UNSET  # noqa: E402
from .engines.base import Engine, MapMode, OnError  # noqa: E402
from .pipeline import Pipeline  # noqa: E402


def _default_name(pipeline: Pipeline, outputs: tuple[str, ...]) -> str:
    """A nested node's name when ``as_node`` is given none: the inner pipeline's name when
    it has one of its own, else its exposed outputs joined by ``_`` (outputs are unique in
    a pipeline, so two unnamed nested pipelines never share this name)."""
    if pipeline.name != UNNAMED:
        return pipeline.name
    return "_".join(outputs)
