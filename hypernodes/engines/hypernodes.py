"""HyperNodesEngine: the native orchestrator (lanes, scopes, runs and maps)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging  # free: asyncio imports it
from collections.abc import AsyncGenerator, Iterator, Mapping, Sequence
from typing import Any

from ..bridge import is_own_loop
from ..callbacks import CallbackContext, Dispatcher
from ..config import (
    ENGINE_KEYS,
    INLINE_BELOW,
    check_inline_below,
    effective_cache,
    effective_callbacks,
    merge_engine_config,
)
from ..errors import ConfigError, NodeError, PathFrame
from ..executors.halting import new_halt
from ..executors.workers import (
    Lane,
    PoolSet,
    cpu_count,
    holds,
    resolve_lane,
    validate_executor,
)
from ..inline import run_plan_sync, run_sync_steps_observed
from ..layers.place import Gauge, starts_run
from ..level import Limiter, Scope
from ..pipeline import Pipeline
from ..resources import Registry, RunResources, handles_in
from ..scheduler import run_plan
from . import maps
from .base import Engine, MapMode, OnError, OutputName, run_events

__all__ = ["HyperNodesEngine"]

logger = logging.getLogger("hypernodes")


class HyperNodesEngine(Engine):
    """The native engine: nodes and map items as coroutines on one event loop.

    Args:
        node_executor: How independent nodes of one run proceed: ``"sequential"``
            (default), ``"async"``, ``"threaded"``, ``"parallel"``, ``"dask"``, ``"ray"``,
            or any ``concurrent.futures.Executor`` instance.
        map_executor: How map items proceed; same choices.
        max_workers: Size of the thread / process pools the engine creates.
        max_concurrent: How many nodes (or items) may be in flight for ``"async"``
            (default 10); an optional cap for the others.
        address: Scheduler address for ``"dask"`` / ``"ray"``.
        inline_below: Seconds (default 20 microseconds, about what handing a body to a
            thread costs the loop): a sync node bound for a worker thread whose body is
            measured to take less runs inline on the loop instead (see ``inlined``). An
            inline run computing for over 50 times this sends the node back to threads
            for good, as do three close together that block or compute over it (see
            ``hypernodes.layers.place``).
            ``0`` turns this off: sync bodies never run on a loop you own.

    Raises:
        InvalidExecutorError: An executor alias is unknown or an object is not an executor.
        ConfigError: ``max_workers`` / ``max_concurrent`` is not a positive int, or
            ``inline_below`` is not a number >= 0.
    """

    def __init__(
        self,
        node_executor: str | concurrent.futures.Executor = "sequential",
        map_executor: str | concurrent.futures.Executor = "sequential",
        max_workers: int | None = None,
        max_concurrent: int | None = None,
        address: str | None = None,
        inline_below: float = INLINE_BELOW,
    ) -> None:
        validate_executor(node_executor, "node_executor")
        validate_executor(map_executor, "map_executor")
        for key, value in (("max_workers", max_workers), ("max_concurrent", max_concurrent)):
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value < 1
            ):
                raise ConfigError(f"{key} must be an int >= 1 or None, got {value!r}")
        if address is not None and not isinstance(address, str):
            raise ConfigError(f"address must be a string or None, got {address!r}")
        check_inline_below(inline_below)
        self.node_executor = node_executor
        self.map_executor = map_executor
        self.max_workers = max_workers
        self.max_concurrent = max_concurrent
        self.address = address
        self.inline_below = float(inline_below)
        self._inlined: dict[str, Gauge] = {}
        threaded = "threaded" in (node_executor, map_executor)
        self._threads_default = cpu_count() if threaded else min(32, cpu_count() + 4)
        self._pools = self._new_pools()
        self._lanes: tuple[Lane, Lane, Lane] | None = None
        self._resources = Registry("engine")  # the objects of its "engine" resources

    def _new_pools(self) -> PoolSet:
        return PoolSet(
            max_workers=self.max_workers,
            threads_default=self._threads_default,
            address=self.address,
        )

    # -- configuration ------------------------------------------------------------------

    @classmethod
    def from_config(cls, *layers: Mapping[str, Any] | None) -> HyperNodesEngine:
        """Build an engine from configuration mappings, later layers winning.

        A key present in a later layer wins even when its value equals the default; a key
        absent from it never clobbers an earlier one; an explicit ``None`` does.

        Raises:
            ConfigError: An unknown key or a bad value.
            InvalidExecutorError: An unknown executor alias.
        """
        merged = merge_engine_config(*layers)
        merged = {k: v for k, v in merged.items() if v is not None}
        return cls(**merged)

    def to_config(self) -> dict[str, Any]:
        """This engine's settings as a serializable mapping (see :meth:`from_config`).

        Raises:
            ConfigError: An executor was given as an instance, which has no serializable form.
        """
        config: dict[str, Any] = {}
        for key in ENGINE_KEYS:
            value = getattr(self, key)
            if not isinstance(value, str | int | float | type(None)):
                raise ConfigError(
                    f"{key}={value!r} is an executor instance and cannot be written as "
                    "configuration; use one of the aliases to make it serializable"
                )
            config[key] = value
        return config

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={getattr(self, k)!r}" for k in ENGINE_KEYS)
        return f"HyperNodesEngine({shown})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Pools do not travel; inside a worker a shipped pipeline runs sequentially.
        return (HyperNodesEngine, ())

    @property
    def inlined(self) -> dict[str, float]:
        """The sync nodes this engine's runs now run inline as cheap (``inline_below``):
        node name -> the longest of the measured runs that promoted it (seconds)."""
        return {name: g.longest for name, g in self._inlined.items() if g.inline}

    # -- resources ----------------------------------------------------------------------

    @property
    def lanes(self) -> tuple[Lane, Lane, Lane]:
        """The (node, map, offload) lanes, resolved on first use."""
        lanes = self._lanes
        if lanes is None:
            node = resolve_lane(
                self.node_executor,
                pools=self._pools,
                max_concurrent=self.max_concurrent,
                role="node_executor",
            )
            item = resolve_lane(
                self.map_executor,
                pools=self._pools,
                max_concurrent=self.max_concurrent,
                role="map_executor",
            )
            body = node.offload()
            if body is None:
                threads = self._pools.get("threads")
                body = Lane("threads", threads, self._pools.size("threads"), "threaded")
            lanes = self._lanes = (node, item, body)
        return lanes

    def close(self) -> None:
        """Shut down the pools this engine created (never executors you passed in), and
        tear down the objects of its ``"engine"`` resources.

        Raises:
            ResourceError: A resource's teardown failed (after every other ran).
        """
        self._pools.close()
        self._pools = self._new_pools()
        self._lanes = None
        self._resources.close()

    async def aclose(self) -> None:
        """Like :meth:`close`, without blocking the event loop.

        Raises:
            ResourceError: A resource's teardown failed (after every other ran).
        """
        pools, self._pools, self._lanes = self._pools, self._new_pools(), None
        await asyncio.to_thread(pools.close)
        await self._resources.aclose()

    async def _start_lanes(self) -> None:
        """Resolve the lanes off the loop when that means starting a cluster (seconds)."""
        if self._lanes is None and {self.node_executor, self.map_executor} & {"dask", "ray"}:
            await asyncio.to_thread(lambda: self.lanes)

    # -- scopes -------------------------------------------------------------------------

    def _scope(
        self,
        pipeline: Pipeline,
        parent: Scope | None,
        cache: Any,
        callbacks: Dispatcher | None,
        context: CallbackContext | None,
        *,
        inline: bool | None = None,
    ) -> Scope:
        if parent is not None and parent.engine is self:
            # Same engine: keep the parent's placement (e.g. a map's thread pool).
            return parent.derive(
                pipeline=pipeline.name, cache=cache, callbacks=callbacks, context=context
            )
        if parent is None:
            starts_run()  # (a body timed for inlining that starts runs is never inlined)
        node = self.lanes[0]
        concurrent, inline, body = self._placement(parent, inline)
        width = node.width if node.kind == "async" else self.max_concurrent
        limiter = Limiter(width) if concurrent and width else None
        scope = Scope(
            engine=self,
            pipeline=pipeline.name,
            concurrent=concurrent,
            limiter=limiter,
            body=body,
            inline=inline,
            # A nested level of another engine is still part of the enclosing run.
            halt=parent.halt if parent is not None else new_halt(),
            budget=self._budget(),
            inline_below=self.inline_below,
            cache=cache,
            callbacks=callbacks,
            context=context,
            # One run, one set of registries: a nested level of another engine shares them.
            resources=(
                parent.resources if parent is not None else RunResources.of(self, self._resources)
            ),
        )
        if limiter is not None:
            limiter.owner = scope  # levels derived from it share the limit, not ownership
        return scope

    def _placement(
        self, parent: Scope | None, inline: bool | None = None, *, items: bool = False
    ) -> tuple[bool, bool, Lane]:
        """Where the sync bodies of a new level run: ``(concurrent, inline, body lane)``.

        The one place this is decided, for every level this engine makes: a run, a map,
        the items of a map (``items``: ``parent`` is then the map's scope), a nested
        level (``parent`` is the enclosing one). ``inline`` is given by a caller that
        knows (the loop-free path runs inline).
        """
        node, lane, body = self.lanes
        if items:
            # Items' bodies never run inline; they go where the node executor puts them
            # when it has a place of its own, else where the map executor does (its pool,
            # an AsyncExecutor's threads).
            assert parent is not None
            own = node.offload() is not None
            return node.concurrent, False, parent.body if own else (lane.offload() or parent.body)
        concurrent = node.concurrent
        if inline is not None:
            pass
        elif parent is not None:
            inline = parent.inline and node.kind == "sequential"
        elif holds(body.executor):
            # A node body of this engine started this run (it called pipeline.run()): it
            # holds a slot of our pool already, so the run goes on in that thread rather
            # than waiting for another slot (which, with the pool saturated, never comes).
            concurrent, inline = False, True
        else:
            inline = node.kind == "sequential" and is_own_loop(asyncio.get_running_loop())
        return concurrent, inline, body

    def _budget(self) -> asyncio.Semaphore | None:
        """A run's bound on its sync bodies across pools: ``max_workers`` holds for all of
        them together when they may go to more than one pool (say, nodes to threads and
        map items to processes); within one pool, the pool's own size bounds them."""
        if self.max_workers is None:
            return None
        _, item, body = self.lanes
        places = {id(body.executor)}
        item_body = item.offload()
        if item_body is not None:
            places.add(id(item_body.executor))
        return asyncio.Semaphore(self.max_workers) if len(places) > 1 else None

    # -- run ----------------------------------------------------------------------------

    def _direct(self, pipeline: Pipeline, map_too: bool) -> bool:
        """Whether a sync call may skip the event loop (the plan decides the rest).

        With no loop running in this thread, a sequential run whose nodes are all plain
        sync calls can never suspend: running it in the calling thread is exactly what the
        loop would do inline (cache and callbacks included; with no loop, store I/O blocks
        nobody), minus the loop's ~100 µs per call. Maps take this path only without cache
        and callbacks.
        """
        starts_run()  # (a body timed for inlining that starts runs is never inlined)
        if self.node_executor != "sequential" or (map_too and self.map_executor != "sequential"):
            return False
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            return False
        if not map_too:
            return True
        return (
            effective_cache(pipeline) is None
            and Dispatcher.create(effective_callbacks(pipeline)) is None
        )

    def run(
        self,
        pipeline: Pipeline,
        inputs: Mapping[str, Any] | None = None,
        output_name: OutputName = None,
    ) -> dict[str, Any]:
        """Run ``pipeline`` once from sync code; see :meth:`Pipeline.run`."""
        if self._direct(pipeline, map_too=False):
            inputs = {} if inputs is None else inputs
            plan = pipeline.plan(output_name, inputs)
            if plan.simple:
                values = {**plan.optional, **pipeline.bound, **inputs}
                cache, dispatcher, context = self._resolve(pipeline, None, "run")
                if cache is None and dispatcher is None:
                    run_plan_sync(plan, values, pipeline.name)
                    return plan.collect(values)
                scope = self._scope(pipeline, None, cache, dispatcher, context, inline=True)
                with run_events(dispatcher, context, pipeline, inputs) as done:
                    try:
                        run_sync_steps_observed(plan.steps, values, scope)
                    except NodeError as err:
                        err._prepend(PathFrame(pipeline.name))
                        raise
                    done["outputs"] = plan.collect(values)
                return done["outputs"]  # type: ignore[no-any-return]
        return super().run(pipeline, inputs, output_name)

    def map(
        self,
        pipeline: Pipeline,
        inputs: Mapping[str, Any],
        map_over: str | Sequence[str],
        map_mode: MapMode = "zip",
        output_name: OutputName = None,
        *,
        on_error: OnError = "raise",
    ) -> list[dict[str, Any]]:
        """Run ``pipeline`` once per item from sync code; see :meth:`Pipeline.map`."""
        return maps.map(self, pipeline, inputs, map_over, map_mode, output_name, on_error=on_error)

    def map_iter(
        self,
        pipeline: Pipeline,
        inputs: Mapping[str, Any],
        map_over: str | Sequence[str],
        map_mode: MapMode = "zip",
        output_name: OutputName = None,
        *,
        ordered: bool = False,
        window: int | None = None,
        on_error: OnError = "raise",
    ) -> Iterator[tuple[int, Any]]:
        """Sync twin of :meth:`amap_iter`; see :meth:`Pipeline.map_iter`."""
        return maps.map_iter(
            self, pipeline, inputs, map_over, map_mode, output_name,
            ordered=ordered, window=window, on_error=on_error,
        )  # fmt: skip

    async def arun(
        self,
        pipeline: Pipeline,
        inputs: Mapping[str, Any] | None = None,
        output_name: OutputName = None,
        *,
        _parent: Scope | None = None,
    ) -> dict[str, Any]:
        """Run ``pipeline`` once; see :meth:`Pipeline.arun`."""
        if self._lanes is None:
            await self._start_lanes()
        inputs = {} if inputs is None else inputs
        # (Nested, its inputs may carry the enclosing run's resource handles.)
        held = handles_in(inputs) if _parent is not None else frozenset()
        plan = pipeline.plan(output_name, inputs, held)
        values = {**plan.optional, **pipeline.bound, **inputs}
        cache, dispatcher, context = self._resolve(pipeline, _parent, "run")
        scope = self._scope(pipeline, _parent, cache, dispatcher, context)
        error: BaseException | None = None
        try:
            if _parent is not None or dispatcher is None:
                await run_plan(plan, values, scope)
                return plan.collect(values)
            with run_events(dispatcher, context, pipeline, inputs) as done:
                await run_plan(plan, values, scope)
                done["outputs"] = plan.collect(values)
        except BaseException as exc:
            error = exc
            maps.ended(scope, _parent, exc)
            raise
        finally:
            if _parent is None:
                await scope.resources.aclose(error)  # the run's resources end with it
        return done["outputs"]  # type: ignore[no-any-return]

    # -- map ----------------------------------------------------------------------------

    async def amap(
        self,
        pipeline: Pipeline,
        inputs: Mapping[str, Any],
        map_over: str | Sequence[str],
        map_mode: MapMode = "zip",
        output_name: OutputName = None,
        *,
        on_error: OnError = "raise",
        _parent: Scope | None = None,
    ) -> list[dict[str, Any]]:
        """Run ``pipeline`` once per item; see :meth:`Pipeline.amap`."""
        return await maps.amap(
            self, pipeline, inputs, map_over, map_mode, output_name,
            on_error=on_error, _parent=_parent,
        )  # fmt: skip

    def amap_iter(  # (returns the async generator: no frame of its own per result)
        self,
        pipeline: Pipeline,
        inputs: Mapping[str, Any],
        map_over: str | Sequence[str],
        map_mode: MapMode = "zip",
        output_name: OutputName = None,
        *,
        ordered: bool = False,
        window: int | None = None,
        on_error: OnError = "raise",
        _parent: Scope | None = None,
    ) -> AsyncGenerator[tuple[int, Any], None]:
        """``(index, result)`` pairs as items finish; see :meth:`Pipeline.amap_iter`."""
        return maps.amap_iter(
            self, pipeline, inputs, map_over, map_mode, output_name,
            ordered=ordered, window=window, on_error=on_error, _parent=_parent,
        )  # fmt: skip
