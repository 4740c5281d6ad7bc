"""Run events: ``Pipeline.astream`` / ``stream`` deliver ``Chunk`` and ``Output`` events
while a run proceeds.

The run is a task on the consumer's loop, observed by one more callback (a ``_Sink``) that
turns ``on_node_chunk`` into ``Chunk`` events and the top level's ``on_node_end`` /
``on_node_cached`` into ``Output`` events, appended to a buffer the iterator reads. The
buffer is unbounded: a streaming node keeps all its chunks anyway (its value is their
list), so a slow client costs no more memory than the run itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .callbacks import CallbackContext, PipelineCallback

if TYPE_CHECKING:
    from .node import Node

__all__ = ["Chunk", "Event", "Output", "RunStream", "iterate_sync"]


@dataclass(slots=True)
class Chunk:
    """A chunk a streaming node yielded.

    Attributes:
        node: The streaming node's name.
        path: Where it runs: the top pipeline's name, then the name of each nested
            pipeline node entered on the way down (``("rag", "per_doc")``).
        index: The index of the innermost map item it runs in, ``None`` outside maps.
        value: The chunk itself.
    """

    node: str
    path: tuple[str, ...]
    index: int | None
    value: Any


@dataclass(slots=True)
class Output:
    """A requested output of the run, as soon as it exists.

    Attributes:
        name: The output's name.
        value: Its value (for a streaming node, the list of its chunks).
    """

    name: str
    value: Any


Event = Chunk | Output
"""What ``astream`` yields."""

_END: Any = object()


class _Sink(PipelineCallback):
    """Turns a run's events into ``Chunk`` / ``Output`` events for one ``RunStream``."""

    streams_to_client = True  # read by the streaming layer: chunks reach a client
    _key = "hypernodes.astream.where"

    def __init__(self, put: Callable[[Any], None], wanted: Sequence[str]) -> None:
        self.put = put
        self.wanted = frozenset(wanted)
        self.sent: set[str] = set()

    def on_node_chunk(self, *, context: CallbackContext, node: Node, chunk: Any) -> None:
        data = context.data
        where = data.get(self._key)
        if where is None:
            where = data[self._key] = _where(context)
        self.put(Chunk(node.name, where[0], where[1], chunk))

    def on_node_end(
        self, *, context: CallbackContext, node: Node, outputs: dict[str, Any], duration: float
    ) -> None:
        if context.parent is None:
            self.outputs(outputs)

    def on_node_cached(
        self, *, context: CallbackContext, node: Node, outputs: dict[str, Any]
    ) -> None:
        if context.parent is None:
            self.outputs(outputs)

    def outputs(self, values: Mapping[str, Any]) -> None:
        """``Output`` events for the wanted names in ``values`` not sent yet."""
        for name, value in values.items():
            if name in self.wanted and name not in self.sent:
                self.sent.add(name)
                self.put(Output(name, value))


def _where(context: CallbackContext) -> tuple[tuple[str, ...], int | None]:
    """A chunk's ``(path, index)`` from its level's callback context."""
    names: list[str] = []
    ctx: CallbackContext | None = context
    top = context
    while ctx is not None:
        if ctx.kind in ("nested", "map") and ctx.node is not None:
            names.append(ctx.node)
        top = ctx
        ctx = ctx.parent
    names.append(top.pipeline)
    return tuple(reversed(names)), context.item_index


class _Channel:
    """The events a run produced and the reader has not taken yet."""

    __slots__ = ("events", "waiter")

    def __init__(self) -> None:
        self.events: deque[Any] = deque()
        self.waiter: asyncio.Future[None] | None = None

    def put(self, event: Any) -> None:
        self.events.append(event)
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def end(self, _: object) -> None:
        self.put(_END)


async def _run(
    start: Callable[[PipelineCallback], Coroutine[Any, Any, dict[str, Any]]], sink: _Sink
) -> dict[str, Any]:
    result = await start(sink)
    sink.outputs(result)  # what no node event carried (a nested pipeline's outputs)
    return result


class RunStream:
    """The events of one run, as an async iterator (what :meth:`Pipeline.astream` returns).

    The run starts at the first ``__anext__`` and proceeds whether or not the consumer
    keeps up. Leaving early (``aclose()``, leaving ``async with``, a cancelled
    ``__anext__``) cancels the run: async generators are cancelled at once (their
    ``finally`` runs before ``aclose()`` returns), sync generators in worker threads stop
    after their next chunk.

    Raises:
        NodeError: From ``__anext__``, when the run failed (after the events before it).
    """

    def __init__(
        self,
        start: Callable[[PipelineCallback], Coroutine[Any, Any, dict[str, Any]]],
        wanted: Sequence[str],
        provided: Mapping[str, Any],
    ) -> None:
        self._start = start
        # The run reaches only the channel, never this object: dropping this object
        # (its reader gone) can then cancel the run (``__del__``).
        self._channel = _Channel()
        self._sink = _Sink(self._channel.put, wanted)
        self._provided = provided
        self._task: asyncio.Task[dict[str, Any]] | None = None
        self._over = False

    def _begin(self) -> asyncio.Task[dict[str, Any]]:
        sink = self._sink
        sink.outputs(self._provided)  # requested outputs given as inputs exist now
        task = asyncio.get_running_loop().create_task(_run(self._start, sink))
        task.add_done_callback(self._channel.end)
        self._task = task
        return task

    def __aiter__(self) -> RunStream:
        return self

    async def __anext__(self) -> Event:
        channel = self._channel
        events = channel.events
        if not events:
            if self._over:
                raise StopAsyncIteration
            task = self._task
            if task is None:
                task = self._begin()
            while not events:
                waiter = channel.waiter = asyncio.get_running_loop().create_future()
                try:
                    await waiter
                except asyncio.CancelledError:
                    task.cancel()  # the consumer was cancelled: so is the run
                    self._over = True
                    raise
                finally:
                    channel.waiter = None
        event = events.popleft()
        if event is _END:
            return self._end()
        return event  # type: ignore[no-any-return]

    def _end(self) -> Event:
        self._over = True
        task = self._task
        assert task is not None and task.done()
        if task.cancelled():
            raise asyncio.CancelledError("the run was cancelled")
        error = task.exception()
        if error is not None:
            raise error
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """Cancel the run (if it is still going) and wait until it has stopped."""
        self._over = True
        task = self._task
        if task is None:
            return
        if not task.done():
            task.cancel()
            await asyncio.wait({task})
        if not task.cancelled():
            task.exception()  # retrieved: a failure after leaving is not "never retrieved"

    async def __aenter__(self) -> RunStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __del__(self) -> None:
        # Dropped while its run goes on (``break`` out of ``async for`` without
        # ``aclose``): nothing can read the events any more, so the run stops.
        task = self._task
        if task is not None and not task.done():
            with contextlib.suppress(RuntimeError):  # its loop is closed
                task.get_loop().call_soon_threadsafe(task.cancel)


def iterate_sync(stream: RunStream) -> Iterator[Event]:
    """The events of ``stream`` from sync code, one fetched per step on the loop ``run()``
    uses (this thread's own, or the background loop when a loop runs here); leaving early
    closes the stream, cancelling the run."""
    from .bridge import run_sync  # deferred: only the sync twin needs the loops' bridge

    try:
        while True:
            event = run_sync(_next_or_end(stream))
            if event is _END:
                return
            yield event
    finally:
        run_sync(stream.aclose())


async def _next_or_end(stream: AsyncIterator[Event]) -> Any:
    try:
        return await stream.__anext__()
    except StopAsyncIteration:
        return _END
