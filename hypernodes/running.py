"""Running a pipeline: ``run``/``arun``, ``map``/``amap``, ``map_iter``/``amap_iter``,
``stream``/``astream``. ``Pipeline`` inherits these; each hands the pipeline to its
effective engine and trims HyperNodes' own frames from the errors it raises."""

from __future__ import annotations

import copy
from collections.abc import AsyncGenerator, Iterator, Mapping, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

from .arguments import MapMode, OnError, OutputName
from .errors import HyperNodesError, InvalidInputError
from .lazy import LazyModule
from .tracebacks import hide_kernel_frames

if TYPE_CHECKING:
    from . import streaming
    from .callbacks import PipelineCallback
    from .engines.base import Engine
    from .pipeline import Pipeline
else:
    streaming = LazyModule("hypernodes.streaming")  # asyncio: only streamed runs load it

__all__ = ["Running"]


def _engine_of(pipe: Pipeline) -> Engine:
    engine: Engine = _config().effective_engine(pipe)
    return engine


def _callbacks_of(pipe: Pipeline) -> tuple[PipelineCallback, ...]:
    return tuple(_config().effective_callbacks(pipe))


def _config() -> ModuleType:
    """``hypernodes.config``, imported on the first run and kept (not per call)."""
    global _config_module
    if _config_module is None:
        from . import config  # deferred: cycle (config names Pipeline, which imports this)

        _config_module = config
    return _config_module


_config_module: ModuleType | None = None


def _pipeline(obj: Running) -> Pipeline:
    """The pipeline a ``Running`` method was called on (its only subclass)."""
    return cast("Pipeline", obj)


class Running:
    """The run methods of :class:`~hypernodes.Pipeline` (a mixin: ``self`` is one)."""

    def run(
        self, inputs: Mapping[str, Any] | None = None, output_name: OutputName = None
    ) -> dict[str, Any]:
        """Run the pipeline once and return ``{output name: value}``.

        Works with or without a running event loop (see ``hypernodes.bridge``).

        Args:
            inputs: Input values by name; a value for an intermediate output overrides it.
            output_name: An output name or a list of them; all outputs when ``None``. Only
                the nodes these need run.

        Raises:
            MissingInputError: Required inputs are missing (all are listed).
            InvalidInputError: Unknown input or output names.
            NodeError: A node failed; the user's exception is its ``__cause__``.
        """
        pipe = _pipeline(self)
        try:
            return _engine_of(pipe).run(pipe, _inputs(inputs), output_name)
        except HyperNodesError as exc:
            hide_kernel_frames(exc)
            raise  # bare: re-raising adds no frame of ours

    async def arun(
        self, inputs: Mapping[str, Any] | None = None, output_name: OutputName = None
    ) -> dict[str, Any]:
        """Async twin of :meth:`run`; never blocks the caller's event loop.

        Raises:
            MissingInputError: Required inputs are missing (all are listed).
            InvalidInputError: Unknown input or output names.
            NodeError: A node failed; the user's exception is its ``__cause__``.
        """
        pipe = _pipeline(self)
        try:
            return await _engine_of(pipe).arun(pipe, _inputs(inputs), output_name)
        except HyperNodesError as exc:
            hide_kernel_frames(exc)
            raise

    def astream(
        self, inputs: Mapping[str, Any] | None = None, output_name: OutputName = None
    ) -> streaming.RunStream:
        """Run the pipeline, delivering its events as they happen (``async for``).

        Yields ``Chunk(node, path, index, value)`` for each chunk a streaming node (a
        generator) yields, as it is yielded, at any depth of nesting and in map items;
        and ``Output(name, value)`` as soon as each requested output exists. Iteration
        ends with the run. Leaving early (``break`` then ``aclose()``, ``async with``,
        cancelling the consumer) cancels the run, the generators included::

            async with pipeline.astream({"question": q}, output_name="answer") as events:
                async for event in events:
                    if isinstance(event, Chunk):
                        print(event.value, end="")

        Args:
            inputs: As for :meth:`run`.
            output_name: As for :meth:`run`: the outputs that get an ``Output`` event.

        Raises:
            MissingInputError: Required inputs are missing (here, before anything runs).
            InvalidInputError: Unknown input or output names.
            NodeError: From the iteration, when a node failed (after the events before).
        """
        pipe = _pipeline(self)
        given = _inputs(inputs)
        wanted = pipe.plan(output_name, given).outputs

        async def start(listener: PipelineCallback) -> dict[str, Any]:
            # This pipeline, observed by one more callback (the events' sink) for one run.
            observed = copy.copy(pipe)
            observed._plans = pipe._plans
            observed.own_callbacks = (*_callbacks_of(pipe), listener)
            return await observed.arun(given, output_name)

        return streaming.RunStream(start, wanted, given)

    def stream(
        self, inputs: Mapping[str, Any] | None = None, output_name: OutputName = None
    ) -> Iterator[streaming.Event]:
        """Sync twin of :meth:`astream` (scripts, Jupyter cells): a generator of the
        same events; closing it (``break`` and dropping it, ``.close()``) cancels the run.

        Raises:
            MissingInputError: Required inputs are missing.
            InvalidInputError: Unknown input or output names.
            NodeError: From the iteration, when a node failed.
        """
        pipe = _pipeline(self)
        events: Iterator[streaming.Event] = streaming.iterate_sync(
            pipe.astream(inputs, output_name)
        )
        return events

    def map(
        self,
        inputs: Mapping[str, Any] | None = None,
        map_over: str | Sequence[str] | None = None,
        map_mode: MapMode = "zip",
        output_name: OutputName = None,
        *,
        on_error: OnError = "raise",
    ) -> list[dict[str, Any]]:
        """Run the pipeline once per item; one result dict per item, in input order.

        Args:
            inputs: Input values; the ``map_over`` ones are lists, or in zip mode any
                iterable or async iterable (a generator, file lines, a cursor), read
                lazily. A mapped input not given here maps over its bound value.
            map_over: The input name(s) to map over.
            map_mode: ``"zip"`` pairs the lists; ``"product"`` takes every combination
                (sized inputs only).
            output_name: As for :meth:`run`.
            on_error: ``"raise"``: the first failure cancels the rest and is raised.
                ``"collect"``: every item runs; a failed one comes back in its place as
                an ``ItemFailure`` and the result is a ``MapResult`` (``.failures``,
                ``.ok``).

        Raises:
            TypeError: ``map_over`` is missing.
            InvalidInputError: Bad ``map_over`` / ``map_mode`` / ``on_error`` / lengths.
            MissingInputError: Required inputs are missing.
            NodeError: A node failed in some item (the item index is on the error).
        """
        pipe = _pipeline(self)
        names = pipe._map_over(map_over, "map")
        engine = _engine_of(pipe)
        try:
            return engine.map(
                pipe, _inputs(inputs), names, map_mode, output_name, on_error=on_error
            )
        except HyperNodesError as exc:
            hide_kernel_frames(exc)
            raise

    async def amap(
        self,
        inputs: Mapping[str, Any] | None = None,
        map_over: str | Sequence[str] | None = None,
        map_mode: MapMode = "zip",
        output_name: OutputName = None,
        *,
        on_error: OnError = "raise",
    ) -> list[dict[str, Any]]:
        """Async twin of :meth:`map`.

        Raises:
            TypeError: ``map_over`` is missing.
            InvalidInputError: Bad ``map_over`` / ``map_mode`` / ``on_error`` / lengths.
            MissingInputError: Required inputs are missing.
            NodeError: A node failed in some item (the item index is on the error).
        """
        pipe = _pipeline(self)
        names = pipe._map_over(map_over, "amap")
        engine = _engine_of(pipe)
        try:
            return await engine.amap(
                pipe, _inputs(inputs), names, map_mode, output_name, on_error=on_error
            )
        except HyperNodesError as exc:
            hide_kernel_frames(exc)
            raise

    async def amap_iter(
        self,
        inputs: Mapping[str, Any] | None = None,
        map_over: str | Sequence[str] | None = None,
        map_mode: MapMode = "zip",
        output_name: OutputName = None,
        *,
        ordered: bool = False,
        window: int | None = None,
        on_error: OnError = "raise",
    ) -> AsyncGenerator[tuple[int, Any], None]:
        """``(index, result)`` pairs as items finish (``async for``).

        Args:
            inputs, map_over, map_mode, output_name, on_error: As for :meth:`map`.
            ordered: Hand results on in input order (still as soon as the next one is
                done).
            window: At most this many items are read but not yet consumed (default:
                twice the map's concurrency), so memory stays bounded however long the
                input.

        Leaving the loop early (``break``, an exception, cancelling the consumer) cancels
        the items in flight and stops reading the input (a generator input is closed).

        Raises:
            TypeError: ``map_over`` is missing.
            InvalidInputError: Bad ``map_over`` / ``map_mode`` / ``on_error`` / ``window``.
            MissingInputError: Required inputs are missing.
            NodeError: A node failed in some item (``on_error="raise"``).
        """
        pipe = _pipeline(self)
        names = pipe._map_over(map_over, "amap_iter")
        engine = _engine_of(pipe)
        stream = engine.amap_iter(
            pipe, _inputs(inputs), names, map_mode, output_name,
            ordered=ordered, window=window, on_error=on_error,
        )  # fmt: skip
        try:
            async for pair in stream:
                yield pair
        except HyperNodesError as exc:
            hide_kernel_frames(exc)
            raise
        finally:
            await stream.aclose()

    def map_iter(
        self,
        inputs: Mapping[str, Any] | None = None,
        map_over: str | Sequence[str] | None = None,
        map_mode: MapMode = "zip",
        output_name: OutputName = None,
        *,
        ordered: bool = False,
        window: int | None = None,
        on_error: OnError = "raise",
    ) -> Iterator[tuple[int, Any]]:
        """Sync twin of :meth:`amap_iter` (scripts, threads, Jupyter cells).

        Raises:
            TypeError: ``map_over`` is missing.
            InvalidInputError: Bad ``map_over`` / ``map_mode`` / ``on_error`` / ``window``.
            MissingInputError: Required inputs are missing.
            NodeError: A node failed in some item (``on_error="raise"``).
        """
        pipe = _pipeline(self)
        names = pipe._map_over(map_over, "map_iter")
        engine = _engine_of(pipe)
        stream = engine.map_iter(
            pipe, _inputs(inputs), names, map_mode, output_name,
            ordered=ordered, window=window, on_error=on_error,
        )  # fmt: skip
        try:
            yield from stream
        except HyperNodesError as exc:
            hide_kernel_frames(exc)
            raise
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()

    def _map_over(self, map_over: str | Sequence[str] | None, method: str) -> str | Sequence[str]:
        """``map_over``, checked to be given (it has a default only so ``inputs`` can).

        Raises:
            TypeError: It is ``None``, with an example naming an input of this pipeline.
        """
        if map_over is not None:
            return map_over
        pipe = _pipeline(self)
        example = next(iter((*pipe._bound, *pipe.inputs)), "x")
        raise TypeError(
            f"{method}() needs map_over: the input name(s) to map over, e.g. "
            f"pipeline.{method}(inputs, map_over={example!r})"
        )


def _inputs(inputs: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if inputs is None:
        return {}
    if not isinstance(inputs, Mapping):
        raise TypeError(
            f"inputs must be a dict of input name -> value, got {type(inputs).__name__}"
        )
    bad = [k for k in inputs if not isinstance(k, str)]
    if bad:
        raise InvalidInputError(
            f"input names must be strings, got {bad[0]!r} ({type(bad[0]).__name__}); pass "
            "inputs as {'name': value}"
        )
    return inputs
