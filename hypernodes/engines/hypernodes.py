"""HyperNodesEngine: the native orchestrator (lanes, scopes, runs and maps)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging  # free: asyncio imports it
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Any

from ..bridge import is_own_loop
from ..callbacks import CallbackContext, Dispatcher
from ..config import ENGINE_KEYS, effective_cache, effective_callbacks, merge_engine_config
from ..errors import ConfigError, InvalidInputError, NodeError, PathFrame
from ..executors.halting import item_halt, new_halt
from ..executors.workers import (
    Lane,
    PoolSet,
    cpu_count,
    holds,
    resolve_lane,
    validate_executor,
)
from ..items import stream_items
from ..level import Limiter, Scope
from ..mapping import (
    Expansion,
    Failed,
    expand,
    iter_plain,
    map_plain,
    run_plain_items,
    stream_plain,
)
from ..pipeline import Pipeline
from ..resources import Registry, RunResources, handles_in, prime_handles
from ..results import ItemFailure, MapResult, check_on_error
from ..scheduler import Plan, run_plan, run_plan_sync, run_sync_steps_observed
from .base import Engine, MapMode, OnError, OutputName, item_events, map_events, run_events
from .shipping import map_remote, stream_remote

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

    Raises:
        InvalidExecutorError: An executor alias is unknown or an object is not an executor.
        ConfigError: ``max_workers`` / ``max_concurrent`` is not a positive int.
    """

    def __init__(
        self,
        node_executor: str | concurrent.futures.Executor = "sequential",
        map_executor: str | concurrent.futures.Executor = "sequential",
        max_workers: int | None = None,
        max_concurrent: int | None = None,
        address: str | None = None,
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
        self.node_executor = node_executor
        self.map_executor = map_executor
        self.max_workers = max_workers
        self.max_concurrent = max_concurrent
        self.address = address
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
            if not isinstance(value, str | int | type(None)):
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
        failed = _collector(on_error)
        if self._direct(pipeline, map_too=True):
            exp = expand(inputs, map_over, map_mode, pipeline=pipeline)
            plan = pipeline.plan(output_name, (*exp.shared, *exp.names))
            if plan.simple and not exp.is_async:
                base = {**plan.optional, **pipeline.bound, **exp.shared}
                numbered = exp.numbered()
                assert isinstance(numbered, Iterator)
                try:
                    if exp.count is not None:
                        results: list[Any] = [None] * exp.count
                        run_plain_items(
                            plan, exp.names, base, numbered, results, exp.count,
                            pipeline.name, None, failed and failed(exp),
                        )  # fmt: skip
                    else:
                        results = [r for pairs in iter_plain(
                            plan, exp.names, base, numbered, pipeline.name, None, _BATCH,
                            failed and failed(exp),
                        ) for _, r in pairs]  # fmt: skip
                finally:
                    numbered.close()  # type: ignore[attr-defined]
                return MapResult(results) if failed else results
        return super().map(pipeline, inputs, map_over, map_mode, output_name, on_error=on_error)

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
        failed = _collector(on_error)
        _check_window(window)
        if self._direct(pipeline, map_too=True):
            exp = expand(inputs, map_over, map_mode, pipeline=pipeline)
            plan = pipeline.plan(output_name, (*exp.shared, *exp.names))
            if plan.simple and not exp.is_async:
                return self._iter_direct(pipeline, plan, exp, window, failed)
        return super().map_iter(
            pipeline,
            inputs,
            map_over,
            map_mode,
            output_name,
            ordered=ordered,
            window=window,
            on_error=on_error,
        )

    @staticmethod
    def _iter_direct(
        pipeline: Pipeline,
        plan: Plan,
        exp: Expansion,
        window: int | None,
        failed: Callable[[Expansion], Failed] | None,
    ) -> Iterator[tuple[int, Any]]:
        # The loop-free path: plain sync items in this thread, a batch at a time (items run
        # in order, so ``ordered`` changes nothing).
        base = {**plan.optional, **pipeline.bound, **exp.shared}
        numbered = exp.numbered()
        assert isinstance(numbered, Iterator)
        batch = max(1, min(window or _BATCH, _BATCH))
        try:
            for pairs in iter_plain(
                plan, exp.names, base, numbered, pipeline.name, None, batch,
                failed and failed(exp),
            ):  # fmt: skip
                yield from pairs
        finally:
            numbered.close()  # type: ignore[attr-defined]

    async def arun(
        self,
        pipeline: Pipeline,
        inputs: Mapping[str, Any] | None = None,
        output_name: OutputName = None,
        *,
        _parent: Scope | None = None,
    ) -> dict[str, Any]:
        """Run ``pipeline`` once; see :meth:`Pipeline.arun`."""
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
            _ended(scope, _parent, exc)
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
        failed = _collector(on_error)
        async with self._mapping(pipeline, inputs, map_over, map_mode, output_name, _parent) as (
            plan,
            exp,
            base,
            scope,
        ):
            if exp.count == 0:
                results: list[Any] = []
            else:
                results = await self._collect(pipeline, plan, exp, base, scope, failed)
        return MapResult(results) if failed else results

    async def amap_iter(
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
        failed = _collector(on_error)
        _check_window(window)
        async with self._mapping(pipeline, inputs, map_over, map_mode, output_name, _parent) as (
            plan,
            exp,
            base,
            scope,
        ):
            if exp.count != 0:
                stream = self._stream(
                    pipeline, plan, exp, base, scope, failed, window=window, ordered=ordered
                )
                try:
                    async for pair in stream:
                        yield pair
                finally:
                    await stream.aclose()

    @contextlib.asynccontextmanager
    async def _mapping(
        self,
        pipeline: Pipeline,
        inputs: Mapping[str, Any],
        map_over: str | Sequence[str],
        map_mode: MapMode,
        output_name: OutputName,
        parent: Scope | None,
    ) -> AsyncIterator[tuple[Plan, Expansion, dict[str, Any], Scope]]:
        """A map's plan, items, shared values and scope, inside its map events; a failure
        or cancel ends the run (see ``_ended``)."""
        await self._start_lanes()
        exp = expand(inputs, map_over, map_mode, pipeline=pipeline)
        held = handles_in(exp.shared) if parent is not None else frozenset()
        plan = pipeline.plan(output_name, (*exp.shared, *exp.names), held)
        base = {**plan.optional, **pipeline.bound, **exp.shared}
        cache, dispatcher, context = self._resolve(pipeline, parent, "map")
        scope = self._scope(pipeline, parent, cache, dispatcher, context)
        if plan.resources:
            prime_handles(plan, base, scope.resources)  # (their versions, for remote items)
        if cache is not None:
            cache.prime(base, list(base))  # shared inputs: fingerprinted once, not per item
        error: BaseException | None = None
        try:
            if dispatcher is None:
                yield plan, exp, base, scope
            else:
                with map_events(dispatcher, context, pipeline, exp.count, exp.names):
                    yield plan, exp, base, scope
        except BaseException as exc:
            error = exc
            _ended(scope, parent, exc)
            raise
        finally:
            if parent is None:
                await scope.resources.aclose(error)  # the map's resources end with it

    def _item_scope(self, plan: Plan, scope: Scope) -> tuple[Scope, int]:
        """The scope of a map's items and how many run at once."""
        lane = self.lanes[1]
        if lane.kind == "sequential" or (scope.inline and holds(lane.executor)):
            return scope, 1
        width = lane.width
        _, inline, body = self._placement(scope, items=True)
        changes: dict[str, Any] = {"inline": inline, "body": body}
        if plan.waits:
            # Items waiting for a limit or a backoff hold nothing: more of them may be in
            # flight than the lane is wide, and the lane's width bounds the attempts
            # instead (a slot per attempt, given back while waiting).
            changes["limiter"] = scope.limiter or Limiter(width)
            width = max(4 * width, 32)
        return scope.derive(**changes), width

    def _remote(self, plan: Plan, exp: Expansion) -> Lane | None:
        """The map executor's lane when items are shipped whole to it (never for a plan
        with a Limit: this process grants its attempts, shipping each body instead)."""
        lane = self.lanes[1]
        return lane if lane.kind == "remote" and not plan.limited else None

    async def _collect(
        self,
        pipeline: Pipeline,
        plan: Plan,
        exp: Expansion,
        base: dict[str, Any],
        scope: Scope,
        failed: Callable[[Expansion], Failed] | None,
    ) -> list[Any]:
        """A map's results in item order: the stream collected, or, for sized inputs, the
        batch forms of its plain and shipped strategies."""
        sized = exp.count is not None and not exp.is_async
        lane = self._remote(plan, exp)
        if lane is not None and sized and failed is None:
            return await map_remote(pipeline, plan, exp, base, scope, lane)
        if lane is None and sized:
            item_scope, width = self._item_scope(plan, scope)
            if plan.simple and item_scope.plain and not item_scope.concurrent:
                return await map_plain(plan, exp, base, item_scope, width, failed and failed(exp))
        stream = self._stream(pipeline, plan, exp, base, scope, failed)
        results: list[Any] = [None] * exp.count if exp.count is not None else []
        async for index, result in stream:
            if index >= len(results):
                results.extend([None] * (index + 1 - len(results)))
            results[index] = result
        return results

    def _stream(
        self,
        pipeline: Pipeline,
        plan: Plan,
        exp: Expansion,
        base: dict[str, Any],
        scope: Scope,
        failed: Callable[[Expansion], Failed] | None,
        *,
        window: int | None = None,
        ordered: bool = False,
    ) -> AsyncGenerator[tuple[int, Any], None]:
        """A map's ``(index, result)`` pairs as items finish: the one place a map's items
        are run on the loop (per-item events included)."""
        collect = failed(exp) if failed is not None else None
        lane = self._remote(plan, exp)
        if lane is not None:
            return stream_remote(
                pipeline, plan, exp, base, scope, lane, collect=collect, window=window,
                ordered=ordered,
            )  # fmt: skip
        item_scope, width = self._item_scope(plan, scope)
        window = window or 2 * width
        if plan.simple and item_scope.plain and not item_scope.concurrent and not exp.is_async:
            # (Plain items come back in input order: ``ordered`` changes nothing.)
            return stream_plain(plan, exp, base, item_scope, width, failed=collect, window=window)
        names = exp.names
        d = scope.callbacks
        context = scope.context

        async def run_one(index: int, item: tuple[Any, ...]) -> dict[str, Any]:
            values = base.copy()
            values.update(zip(names, item, strict=True))
            level = item_scope
            if collect is not None:  # a failed item ends itself, not the map
                level = level.derive(halt=item_halt(scope.halt))
            if d is None or context is None:
                await run_plan(plan, values, level)
                return plan.collect(values)
            ctx = context.child("item", context.pipeline, index=index)
            with item_events(d, ctx, index) as done:
                await run_plan(plan, values, level.derive(context=ctx))
                done["outputs"] = plan.collect(values)
            return done["outputs"]  # type: ignore[no-any-return]

        return stream_items(
            exp.numbered(), width, run_one, halt=scope.halt, collect=collect, window=window,
            ordered=ordered,
        )  # fmt: skip


_BATCH = 512
"""Items per batch of the loop-free plain map stream."""


def _collector(on_error: object) -> Callable[[Expansion], Failed] | None:
    """For ``on_error="collect"``: makes, per map, what turns a failed item into its
    ``ItemFailure``; ``None`` for ``"raise"``.

    Raises:
        InvalidInputError: ``on_error`` is neither.
    """
    if not check_on_error(on_error):
        return None

    def per_map(exp: Expansion) -> Failed:
        def failed(index: int, item: tuple[Any, ...], error: NodeError) -> ItemFailure:
            return ItemFailure(index, exp.mapped(item), error)

        return failed

    return per_map


def _check_window(window: object) -> None:
    if window is not None and (
        not isinstance(window, int) or isinstance(window, bool) or window < 1
    ):
        raise InvalidInputError(f"window must be an int >= 1 or None, got {window!r}")


def _ended(scope: Scope, parent: Scope | None, error: BaseException) -> None:
    """A top-level run failed or was cancelled: nothing of it starts any more, and what it
    left running in its workers is reported (a warning, and a note on its ``NodeError``).

    A nested level leaves the halt to the level that failed (``run_plan``, ``run_items``):
    its tasks wait for the cancellation that a failure brings to all of them, which a
    cancellation inside one level (a child task ending as cancelled) does not.
    """
    if parent is not None:
        return
    halt = scope.halt
    halt.set()
    report = halt.report()
    if report is not None:
        logger.warning("run of pipeline %r %s", scope.pipeline, report)
        if isinstance(error, NodeError):
            error.add_note(report[:1].upper() + report[1:])
