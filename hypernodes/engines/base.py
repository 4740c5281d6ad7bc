"""Engine: the orchestrator interface. ``arun`` / ``amap`` are the implementations;
the sync ``run`` / ``map`` live here, once, as bridges over them."""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping, Sequence
from time import perf_counter
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, cast

from ..arguments import MapMode, OnError, OutputName
from ..errors import NodeError, PathFrame
from ..lazy import LazyModule

if TYPE_CHECKING:
    from .. import level
else:
    level = LazyModule("hypernodes.level")  # it needs asyncio: only runs load it

__all__ = [
    "Engine",
    "MapMode",
    "OnError",
    "OutputName",
    "item_events",
    "map_events",
    "run_events",
    "user_error",
]


class Engine(ABC):
    """Runs pipelines. Subclasses implement ``arun`` and ``amap``."""

    @abstractmethod
    async def arun(
        self,
        pipeline: Pipeline,
        inputs: Mapping[str, Any] | None = None,
        output_name: OutputName = None,
        *,
        _parent: level.Scope | None = None,
    ) -> dict[str, Any]:
        """Run ``pipeline`` once; return the requested outputs.

        ``_parent`` is set when a nested pipeline node runs this one: the scope of the
        nested level as that node derived it (its cache, callbacks and callback context
        are this level's; the rest is the enclosing level's).
        """

    @abstractmethod
    async def amap(
        self,
        pipeline: Pipeline,
        inputs: Mapping[str, Any],
        map_over: str | Sequence[str],
        map_mode: MapMode = "zip",
        output_name: OutputName = None,
        *,
        on_error: OnError = "raise",
        _parent: level.Scope | None = None,
    ) -> list[dict[str, Any]]:
        """Run ``pipeline`` once per item; return one result dict per item, in order
        (with ``on_error="collect"``, a ``MapResult`` holding an ``ItemFailure`` for each
        failed item)."""

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
        _parent: level.Scope | None = None,
    ) -> AsyncGenerator[tuple[int, Any], None]:
        """``(index, result)`` pairs as items finish.

        This default streams an engine that only has :meth:`amap` (DaftEngine): the items
        go to ``amap`` ``window`` at a time (default 64), each slice's results handed on
        as it completes, in input order; the input is read a slice at a time.
        """
        from ..mapping import expand  # deferred: asyncio
        from ..results import ItemFailure

        exp = expand(inputs, map_over, map_mode, pipeline=pipeline)
        size = window or 64
        numbered = exp.numbered()
        try:
            while True:
                chunk = await _take(numbered, size)
                if not chunk:
                    return
                start = chunk[0][0]
                sliced = {**exp.shared}
                for k, name in enumerate(exp.names):
                    sliced[name] = [item[k] for _, item in chunk]
                try:
                    results = await self.amap(
                        pipeline, sliced, exp.names, "zip", output_name,
                        on_error=on_error, _parent=_parent,
                    )  # fmt: skip
                except NodeError as err:
                    _shift(err, start)
                    raise
                for k, result in enumerate(cast(list[Any], results)):
                    if type(result) is ItemFailure:
                        _shift(result.error, start)
                        result = ItemFailure(start + k, result.inputs, result.error)
                    yield start + k, result
        finally:
            from ..items import close_source  # deferred: asyncio

            await close_source(numbered)

    def run(
        self,
        pipeline: Pipeline,
        inputs: Mapping[str, Any] | None = None,
        output_name: OutputName = None,
    ) -> dict[str, Any]:
        """Sync twin of :meth:`arun`."""
        from ..bridge import run_sync  # deferred: asyncio is not needed to define pipelines

        return run_sync(self.arun(pipeline, inputs, output_name))

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
        """Sync twin of :meth:`amap`."""
        from ..bridge import run_sync  # deferred: asyncio is not needed to define pipelines

        return run_sync(
            self.amap(pipeline, inputs, map_over, map_mode, output_name, on_error=on_error)
        )

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
        """Sync twin of :meth:`amap_iter`: the stream runs on the loop ``run()`` uses
        (this thread's own, or the background loop when a loop runs here), one result
        fetched per step; leaving the loop early closes the stream (cancelling the items
        in flight)."""
        from ..bridge import run_sync  # deferred: asyncio is not needed to define pipelines

        stream = self.amap_iter(
            pipeline, inputs, map_over, map_mode, output_name,
            ordered=ordered, window=window, on_error=on_error,
        )  # fmt: skip
        try:
            while True:
                got = run_sync(_next_or_end(stream))
                if got is _END:
                    return
                yield got
        finally:
            run_sync(stream.aclose())

    def _resolve(
        self, pipeline: Pipeline, parent: level.Scope | None, kind: Literal["run", "map"]
    ) -> tuple[Any, Dispatcher | None, CallbackContext | None]:
        """The cache runtime, dispatcher and callback context of a run or map: inherited
        from the enclosing level, or resolved (precedence) at the top."""
        if parent is not None:
            return parent.cache, parent.callbacks, parent.context
        from ..cache.runtime import CacheRuntime  # deferred: hashing libraries

        cache = CacheRuntime.create(effective_cache(pipeline))
        dispatcher = Dispatcher.create(effective_callbacks(pipeline))
        context = CallbackContext(kind, pipeline.name) if dispatcher is not None else None
        return cache, dispatcher, context

    def close(self) -> None:  # noqa: B027 - optional hook: engines without resources
        """Release what the engine owns (pools, clusters). Idempotent."""

    async def aclose(self) -> None:
        """Async twin of :meth:`close`."""
        self.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def user_error(exc: BaseException) -> BaseException:
    """What callbacks report for a failure: the user's exception behind a ``NodeError``."""
    if isinstance(exc, NodeError) and exc.__cause__ is not None:
        return exc.__cause__
    return exc


@contextlib.contextmanager
def run_events(
    d: Dispatcher | None,
    context: CallbackContext | None,
    pipeline: Pipeline,
    inputs: Mapping[str, Any],
) -> Iterator[dict[str, Any]]:
    """``on_pipeline_start`` / ``on_pipeline_end`` around a top-level run; the body puts
    the result in the yielded dict under ``"outputs"``."""
    done: dict[str, Any] = {"outputs": None}
    if d is None:
        yield done
        return
    if d.on_pipeline_start:
        d.emit(d.on_pipeline_start, context=context, pipeline=pipeline, inputs=dict(inputs))
    started = perf_counter()
    error: BaseException | None = None
    try:
        yield done
    except BaseException as exc:
        error = user_error(exc)
        raise
    finally:
        if d.on_pipeline_end:
            outputs = None if error is not None else done["outputs"]
            d.emit(
                d.on_pipeline_end,
                context=context,
                pipeline=pipeline,
                outputs=outputs,
                duration=perf_counter() - started,
                error=error,
            )


_END: Any = object()


async def _next_or_end(stream: AsyncIterator[tuple[int, Any]]) -> Any:
    try:
        return await stream.__anext__()
    except StopAsyncIteration:
        return _END


async def _take(numbered: Any, size: int) -> list[tuple[int, Any]]:
    """Up to ``size`` ``(index, item)`` pairs from a sync or async iterator."""
    chunk: list[tuple[int, Any]] = []
    if hasattr(numbered, "__anext__"):
        async for pair in numbered:
            chunk.append(pair)
            if len(chunk) == size:
                break
        return chunk
    for pair in numbered:
        chunk.append(pair)
        if len(chunk) == size:
            break
    return chunk


def _shift(error: NodeError, start: int) -> None:
    """An error of a slice's item ``k`` is the map's item ``start + k``."""
    first = error.frames[0] if error.frames else None
    if first is not None and first.item is not None:
        error.frames = (PathFrame(first.pipeline, first.via, first.item + start), *error.frames[1:])


@contextlib.contextmanager
def item_events(
    d: Dispatcher | None, context: CallbackContext | None, index: int
) -> Iterator[dict[str, Any]]:
    """``on_map_item_start`` / ``on_map_item_end`` around one map item run on the
    orchestrator; the body puts the item's result dict in the yielded dict under
    ``"outputs"`` (``on_map_item_end`` carries it, or ``None`` when the item failed)."""
    done: dict[str, Any] = {"outputs": None}
    if d is None:
        yield done
        return
    if d.on_map_item_start:
        d.emit(d.on_map_item_start, context=context, index=index)
    started = perf_counter()
    error: BaseException | None = None
    try:
        yield done
    except BaseException as exc:
        error = user_error(exc)
        raise
    finally:
        if d.on_map_item_end:
            d.emit(
                d.on_map_item_end,
                context=context,
                index=index,
                duration=perf_counter() - started,
                error=error,
                outputs=None if error is not None else done["outputs"],
            )


@contextlib.contextmanager
def map_events(
    d: Dispatcher | None,
    context: CallbackContext | None,
    pipeline: Pipeline,
    n_items: int | None,
    map_over: Sequence[str],
) -> Iterator[None]:
    """``on_map_start`` / ``on_map_end`` around a map."""
    if d is None:
        yield
        return
    if d.on_map_start:
        d.emit(
            d.on_map_start, context=context, pipeline=pipeline, n_items=n_items, map_over=map_over
        )
    started = perf_counter()
    error: BaseException | None = None
    try:
        yield
    except BaseException as exc:
        error = user_error(exc)
        raise
    finally:
        if d.on_map_end:
            d.emit(
                d.on_map_end,
                context=context,
                pipeline=pipeline,
                n_items=n_items,
                duration=perf_counter() - started,
                error=error,
            )


# The kernel modules that name each other (callbacks, config, engines.base, nested, pipeline)
# import each other last, once every name of the module exists: then any of them can be
# imported first (tests/test_type_hints.py checks). Annotations need these names at run
# time (typing.get_type_hints), not only under TYPE_CHECKING.
from ..callbacks import CallbackContext, Dispatcher  # noqa: E402
from ..config import effective_cache, effective_callbacks  # noqa: E402
from ..pipeline import Pipeline  # noqa: E402
