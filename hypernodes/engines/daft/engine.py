"""DaftEngine: a pipeline as a Daft plan (a row per item, a function column per node)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from ...cache.runtime import CacheRuntime
from ...callbacks import CallbackContext, Dispatcher
from ...errors import ConfigError
from ...level import Scope
from ...mapping import expand
from ...pipeline import Pipeline
from ...plan import Plan
from ...results import ItemFailure, MapResult, check_on_error
from ..base import Engine, MapMode, OnError, OutputName, map_events, run_events
from .cached import ItemCache, look_up, save
from .calls import Hit
from .frame import Frame, build_frame, ensure_runner, import_daft, stream
from .program import ROW, Column, Program, describe, translate
from .rows import failure_of, node_error, replay_row, result_of, user_error

__all__ = ["DaftEngine"]

RUNNERS = ("native", "ray")


class DaftEngine(Engine):
    """Runs a pipeline as one Daft plan: Daft schedules and parallelises every node.

    ``map`` builds a DataFrame with one row per item and turns each node into a row-wise
    Daft function column (``daft.func``): async nodes are async Daft functions, sync ones
    run in worker threads from async Daft functions, tuple outputs become several
    columns. ``run`` is a one-row map. Columns hold Python objects, so values and results
    are exactly those of ``HyperNodesEngine``. Nested pipelines that inherit this engine
    are inlined into the plan; nested maps and nested pipelines with an engine of their
    own run per row on a sequential ``HyperNodesEngine``.

    HyperNodes caches and callbacks work as with the native engine, with two
    differences: node events are replayed as results arrive (Daft runs the plan as one
    job), and with a cache, nested pipelines run per row and are cached as a whole.

    Args:
        collect: Collect results into dicts. With ``False``, ``map`` returns the lazy
            ``daft.DataFrame`` (one column per output; see :meth:`to_dataframe`).
        show_plan: Print Daft's plans (logical, optimized, physical) before running.
        debug: Print how each node was translated (to stderr).
        runner: ``"native"`` (this machine) or ``"ray"`` (Daft's Ray runner).
        ray_address: The Ray cluster for ``runner="ray"`` (default: local / ``RAY_ADDRESS``).

    Raises:
        ConfigError: An unknown runner, or ``ray_address`` without ``runner="ray"``.
    """

    def __init__(
        self,
        collect: bool = True,
        show_plan: bool = False,
        debug: bool = False,
        runner: str = "native",
        ray_address: str | None = None,
    ) -> None:
        if runner not in RUNNERS:
            raise ConfigError(f"DaftEngine runner must be 'native' or 'ray', got {runner!r}")
        if ray_address is not None and runner != "ray":
            raise ConfigError(
                f"ray_address={ray_address!r} needs runner='ray': "
                f"DaftEngine(runner='ray', ray_address={ray_address!r})"
            )
        self.collect = bool(collect)
        self.show_plan = bool(show_plan)
        self.debug = bool(debug)
        self.runner = runner
        self.ray_address = ray_address

    def __repr__(self) -> str:
        address = f", ray_address={self.ray_address!r}" if self.ray_address else ""
        return (
            f"DaftEngine(collect={self.collect}, show_plan={self.show_plan}, "
            f"debug={self.debug}, runner={self.runner!r}{address})"
        )

    # -- run / map ----------------------------------------------------------------------

    async def arun(
        self,
        pipeline: Pipeline,
        inputs: Mapping[str, Any] | None = None,
        output_name: OutputName = None,
        *,
        _parent: Scope | None = None,
    ) -> dict[str, Any]:
        """Run ``pipeline`` once, as a one-row Daft plan; see :meth:`Pipeline.arun`."""
        inputs = {} if inputs is None else inputs
        plan = pipeline.plan(output_name, inputs)
        constants = {**plan.optional, **pipeline.bound, **inputs}
        cache, d, context = self._resolve(pipeline, _parent, "run")
        events = run_events(d if _parent is None else None, context, pipeline, inputs)
        with events as done:
            [result] = await self._execute(
                pipeline, plan, constants, (), [()], cache, d, context, mapped=False
            )
            done["outputs"] = result
        return result

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
        """Run ``pipeline`` once per item, as one Daft plan; see :meth:`Pipeline.amap`.

        With ``collect=False`` (and not nested in another pipeline) this returns the lazy
        ``daft.DataFrame`` of :meth:`to_dataframe` instead of a list.
        """
        keep_going = check_on_error(on_error)
        if not self.collect and _parent is None:
            return self.to_dataframe(pipeline, inputs, map_over, map_mode, output_name)  # type: ignore[no-any-return]
        exp = expand(inputs, map_over, map_mode, pipeline=pipeline)
        plan = pipeline.plan(output_name, (*exp.shared, *exp.names))
        constants = {**plan.optional, **pipeline.bound, **exp.shared}
        cache, d, context = self._resolve(pipeline, _parent, "map")
        items = await _all_items(exp)
        with map_events(d, context, pipeline, len(items), exp.names):
            results = await self._execute(
                pipeline, plan, constants, exp.names, items, cache, d, context,
                keep_going=keep_going,
            )  # fmt: skip
        return MapResult(results) if keep_going else results

    def to_dataframe(
        self,
        pipeline: Pipeline,
        inputs: Mapping[str, Any],
        map_over: str | Sequence[str],
        map_mode: MapMode = "zip",
        output_name: OutputName = None,
    ) -> Any:
        """The lazy ``daft.DataFrame`` of a map: one row per item, one column per output.

        Nothing runs until you collect it (write it, ``.collect()``, ...). A failing node
        then fails Daft's job with a message naming the node; HyperNodes caches and
        callbacks do not apply to a frame you run yourself.

        Raises:
            InvalidInputError: Bad ``map_over`` / ``map_mode`` / list lengths.
            MissingInputError: Required inputs are missing.
        """
        exp = expand(inputs, map_over, map_mode, pipeline=pipeline)
        plan = pipeline.plan(output_name, (*exp.shared, *exp.names))
        constants = {**plan.optional, **pipeline.bound, **exp.shared}
        program = self._program(pipeline, plan, constants, exp.names, None, inline=True)
        items = list(exp.items())
        columns = {n: [item[i] for item in items] for i, n in enumerate(exp.names)}
        ensure_runner(self.runner, self.ray_address)
        frame = build_frame(
            program, range(len(items)), columns, None, observe=False, raise_errors=True
        )
        daft = import_daft()
        outputs = [
            (daft.col(s.name) if isinstance(s, Column) else daft.lit(s.value)).alias(name)
            for name, s in program.outputs.items()
        ]
        return frame.df.select(*outputs)

    # -- internals ----------------------------------------------------------------------

    def _program(
        self,
        pipeline: Pipeline,
        plan: Plan,
        constants: dict[str, Any],
        names: tuple[str, ...],
        d: Dispatcher | None,
        *,
        inline: bool,
    ) -> Program:
        program = translate(
            pipeline,
            plan,
            names,
            constants,
            callbacks=d,
            inline=inline,
            is_daft=lambda engine: isinstance(engine, DaftEngine),
        )
        if self.debug:
            describe(program)
        return program

    async def _execute(
        self,
        pipeline: Pipeline,
        plan: Plan,
        constants: dict[str, Any],
        names: tuple[str, ...],
        items: list[tuple[Any, ...]],
        cache: CacheRuntime | None,
        d: Dispatcher | None,
        context: CallbackContext | None,
        *,
        mapped: bool = True,
        keep_going: bool = False,
    ) -> list[dict[str, Any]]:
        if not items:
            return []
        program = self._program(pipeline, plan, constants, names, d, inline=cache is None)
        results: list[Any] = [None] * len(items)
        states: list[ItemCache] | None = None
        if cache is not None:
            cache.prime(constants, constants)
            states = []
            for item in items:
                values = dict(constants)
                values.update(zip(names, item, strict=True))
                states.append(await look_up(plan, values, cache))
        todo = [i for i in range(len(items)) if states is None or not states[i].complete]
        for i in range(len(items)):
            if states is not None and states[i].complete:
                results[i] = plan.collect(states[i].values)
                self._item_events(
                    program, d, context, i, mapped, {}, {}, states[i].status, results[i]
                )
        if not todo:
            return results
        columns = {n: [items[i][k] for i in todo] for k, n in enumerate(names)}
        hits = _hit_columns(plan, states, todo) if states is not None else None
        observe = d is not None or cache is not None
        frame = await asyncio.to_thread(self._frame, program, todo, columns, hits, observe)
        async for part in stream(frame):
            for j in range(len(part[ROW])):
                row = {c: part[c][j] for c in frame.columns}
                index: int = row[ROW]
                state = states[index] if states is not None else None
                status = state.status if state is not None else {}
                failure = self._item_events(
                    program, d, context, index, mapped, row, frame.timings, status
                )
                if failure is None and d is None:
                    found = failure_of(program, row)
                    failure = found[1] if found is not None else None
                if failure is not None:
                    error = node_error(program.ops[failure.op], failure, index if mapped else None)
                    if not keep_going:
                        raise error
                    results[index] = ItemFailure(
                        index, dict(zip(names, items[index], strict=True)), error
                    )
                    continue
                results[index] = result_of(program, row)
                if state is not None:
                    outputs = {
                        op.step: dict(zip(op.node.outputs, (row[c] for c in op.outs), strict=True))
                        for op in program.ops
                    }
                    await save(plan, state, outputs)
        return results

    def _frame(
        self,
        program: Program,
        rows: list[int],
        columns: dict[str, list[Any]],
        hits: dict[int, list[Any]] | None,
        observe: bool,
    ) -> Frame:
        ensure_runner(self.runner, self.ray_address)
        frame = build_frame(program, rows, columns, hits, observe=observe, raise_errors=False)
        if self.show_plan:
            frame.df.explain(show_all=True)
        return frame

    def _item_events(
        self,
        program: Program,
        d: Dispatcher | None,
        context: CallbackContext | None,
        index: int,
        mapped: bool,
        row: dict[str, Any],
        timings: dict[int, str],
        status: dict[int, Any],
        cached: dict[str, Any] | None = None,
    ) -> Any:
        # ``cached``: the result of an item served whole from the cache (``row`` is empty).
        if d is None or context is None:
            return None
        ctx = context.child("item", context.pipeline, index=index) if mapped else context
        if mapped and d.on_map_item_start:
            d.emit(d.on_map_item_start, context=ctx, index=index)
        if not row:  # served from the cache: the cached events only
            for k, state in status.items():
                op = next(op for op in program.ops if op.step == k)
                if type(state) is Hit and d.on_node_cached:
                    outputs = _hit_outputs(op.node, state.value, op.nested)
                    d.emit(d.on_node_cached, context=ctx, node=op.node, outputs=outputs)
            failure = None
            duration = 0.0
        else:
            failure = replay_row(program, row, ctx, timings, status)
            spent = (row.get(t) for t in timings.values())
            duration = sum(t for t in spent if type(t) is float)
        if mapped and d.on_map_item_end:
            error = None
            result = None
            if failure is not None:
                err = node_error(program.ops[failure.op], failure, index)
                error = user_error(failure.error, err)
            else:
                result = result_of(program, row) if row else cached
            d.emit(
                d.on_map_item_end,
                context=ctx,
                index=index,
                duration=duration,
                error=error,
                outputs=result,
            )
        return failure


def _hit_outputs(node: Any, value: Any, nested: bool) -> dict[str, Any]:
    if not nested and isinstance(node.output_name, str):
        return {node.outputs[0]: value}
    return dict(zip(node.outputs, value, strict=True))


def _hit_columns(plan: Plan, states: list[ItemCache], rows: list[int]) -> dict[int, list[Any]]:
    columns: dict[int, list[Any]] = {}
    for k, step in enumerate(plan.steps):
        column: list[Any] = []
        for i in rows:
            state = states[i].status.get(k)
            if type(state) is Hit and step.nested is not None and len(step.outputs) == 1:
                state = Hit(state.value[0])  # a nested op returns a lone output bare
            column.append(state)
        if any(s is not None for s in column) or any(k in states[i].keys for i in rows):
            columns[k] = column
    return columns


async def _all_items(exp: Any) -> list[tuple[Any, ...]]:
    """Every item of a map (Daft plans all rows at once; a lazy input is read whole)."""
    if not exp.is_async:
        return list(exp.items())
    items = []
    async for _, item in exp.numbered():
        items.append(item)
    return items
