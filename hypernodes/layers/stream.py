"""Streaming placement: where one attempt of a generator node runs, each chunk emitted as
it is yielded (``on_node_chunk``), the attempt's value the ``list`` of its chunks.

It replaces ``place`` (and ``timeout``) for a streaming node (``Node.is_stream``):

- an async generator is iterated on the loop;
- a sync generator runs in a worker thread, and hands each chunk back to the loop as it
  is produced (``call_soon_threadsafe``, one wake-up per burst of chunks); inline on a
  loop HyperNodes owns when no client consumes the chunks (``Pipeline.astream``), since
  nothing there could read them before the generator ends;
- with a remote lane (``"parallel"``, Dask, Ray) a sync generator still runs in a worker
  thread of this process (the loop's default executor), not shipped: a chunk cannot
  travel back from another process while the call runs, and streaming nodes are I/O
  (a model's tokens) rather than CPU work.

The node's ``timeout`` bounds the whole stream of one attempt: an async generator is
cancelled (its ``finally`` runs); a sync generator is told to stop and is closed by its
thread after its next chunk (the attempt waits up to ``STOP_GRACE`` for that). Cancelling
the attempt (a closed ``astream``, a failure elsewhere) stops a generator the same way.

A failure after some chunks reached a client is final: it is raised as ``Streamed``, which
``Retry`` never retries (the client cannot take back what it was sent).
"""

from __future__ import annotations

import contextvars
import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from .retry import Streamed
from .timeout import TimedOut

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from ..callbacks import CallbackContext, Dispatcher
    from ..level import Scope
    from ..node import Node
    from ..plan import Step

__all__ = ["STOP_GRACE", "StreamLayer", "emit_chunks"]

STOP_GRACE = 0.25
"""Seconds a cancelled attempt waits for its sync generator to reach its next chunk and
stop (then it is abandoned: it stops whenever it gets there)."""


def emit_chunks(d: Dispatcher, context: CallbackContext | None, node: Node, chunks: Any) -> None:
    """``on_node_chunk`` for each of ``chunks`` at once (a cache hit, a replayed call)."""
    for chunk in chunks:
        listeners = d.on_node_chunk
        if not listeners:
            return
        d.emit(listeners, context=context, node=node, chunk=chunk)


class StreamLayer:
    """One attempt of a streaming node (the bottom layer, with its timeout if any)."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float | None = None) -> None:
        self.seconds = seconds

    async def __call__(
        self, step: Step, args: tuple[Any, ...], scope: Scope, slot: Any = None
    ) -> list[Any]:
        import asyncio  # deferred: node definitions import the layers, not asyncio

        d = scope.callbacks
        # (A DaftEngine call's level has a stand-in dispatcher without this hook.)
        listeners = getattr(d, "on_node_chunk", None) if d is not None else None
        emit = _emitter(d, scope.context, step.node) if listeners else None
        client = _to_client(listeners) if listeners else False
        chunks: list[Any] = []
        seconds = self.seconds
        timer = asyncio.timeout(seconds) if seconds is not None else None
        try:
            if timer is None:
                await _iterate(step, args, scope, chunks, emit, client)
            else:
                async with timer:
                    await _iterate(step, args, scope, chunks, emit, client)
        except Exception as exc:
            failure: BaseException = exc
            if timer is not None and isinstance(exc, TimeoutError) and timer.expired():
                failure = TimedOut(f"timed out after {seconds:g} s and was stopped")
                failure.__cause__ = exc
            if client and chunks and step.node.retry is not None:
                raise Streamed(failure) from None
            if failure is exc:
                raise
            raise failure from exc
        return chunks


async def _iterate(
    step: Step,
    args: tuple[Any, ...],
    scope: Scope,
    chunks: list[Any],
    emit: Callable[[Any], None] | None,
    client: bool,
) -> None:
    if step.is_async:
        await _iterate_async(step.fn(*args), chunks, emit)
    elif scope.inline and not client:
        _iterate_here(step.fn(*args), chunks, emit)
    else:
        await _iterate_in_thread(step, args, scope, chunks, emit)


async def _iterate_async(
    agen: AsyncIterator[Any], chunks: list[Any], emit: Callable[[Any], None] | None
) -> None:
    import contextlib  # deferred: with asyncio, only a running attempt needs it

    async with contextlib.aclosing(agen):  # type: ignore[type-var]
        if emit is None:
            chunks.extend([chunk async for chunk in agen])
        else:
            async for chunk in agen:
                chunks.append(chunk)
                emit(chunk)


def _iterate_here(
    gen: Iterator[Any], chunks: list[Any], emit: Callable[[Any], None] | None
) -> None:
    try:
        if emit is None:
            chunks.extend(gen)
        else:
            for chunk in gen:
                chunks.append(chunk)
                emit(chunk)
    finally:
        close = getattr(gen, "close", None)
        if close is not None:
            close()


class _Relay:
    """A sync generator running in a worker thread, its chunks handed to the loop.

    The thread appends to ``pending`` and schedules one ``drain`` per burst (only when
    none is scheduled yet), so a fast generator costs one wake-up per burst, not per
    chunk; a slow one delivers each chunk as it comes.
    """

    __slots__ = ("chunks", "emit", "gen", "lock", "loop", "pending", "scheduled", "stop")

    def __init__(
        self, gen: Iterator[Any], chunks: list[Any], emit: Callable[[Any], None] | None
    ) -> None:
        import asyncio  # deferred: node definitions import the layers, not asyncio

        self.gen = gen
        self.loop = asyncio.get_running_loop()
        self.chunks = chunks
        self.emit = emit
        self.pending: deque[Any] = deque()
        self.lock = threading.Lock()
        self.scheduled = False
        self.stop = threading.Event()

    def produce(self) -> None:
        """Run the generator (in the worker thread) until it ends or is told to stop."""
        gen = self.gen
        pending, lock, stop = self.pending, self.lock, self.stop
        try:
            if stop.is_set():
                return
            for chunk in gen:
                with lock:
                    pending.append(chunk)
                    wake = not self.scheduled
                    self.scheduled = True
                if wake:
                    try:
                        self.loop.call_soon_threadsafe(self.drain)
                    except RuntimeError:  # the loop is closed: nobody is listening
                        return
                if stop.is_set():
                    return
        finally:
            close = getattr(gen, "close", None)
            if close is not None:
                close()  # (its ``finally`` runs here, in this thread)

    def drain(self) -> None:
        """Take the chunks produced so far (on the loop) and emit them, in order."""
        with self.lock:
            taken = list(self.pending)
            self.pending.clear()
            self.scheduled = False
        self.chunks.extend(taken)
        emit = self.emit
        if emit is not None:
            for chunk in taken:
                emit(chunk)


async def _iterate_in_thread(
    step: Step,
    args: tuple[Any, ...],
    scope: Scope,
    chunks: list[Any],
    emit: Callable[[Any], None] | None,
) -> None:
    import asyncio  # deferred: node definitions import the layers, not asyncio

    relay = _Relay(step.fn(*args), chunks, emit)
    work: asyncio.Future[Any]
    if scope.body.kind == "threads":
        work = asyncio.ensure_future(scope.offload(relay.produce, (), None, step.name))
    else:
        # A remote lane: a thread of this process (see the module docstring).
        ctx = contextvars.copy_context()
        work = relay.loop.run_in_executor(None, ctx.run, relay.produce)
    try:
        await asyncio.shield(work)
    except asyncio.CancelledError:
        # The thread closes the generator after its next chunk: give it that long (within
        # reason), so that its ``finally`` has run when the cancelled run is over.
        relay.stop.set()
        try:
            await asyncio.wait({work}, timeout=STOP_GRACE)
        finally:
            if not work.done():
                work.cancel()  # stuck inside a chunk: abandoned (the run reports it)
            elif not work.cancelled():
                work.exception()  # (retrieved: nobody wants it any more)
        raise
    except Exception:
        relay.drain()  # the chunks it yielded before failing, before its error
        raise
    relay.drain()


def _emitter(d: Any, context: CallbackContext | None, node: Node) -> Callable[[Any], None]:
    def emit(chunk: Any) -> None:
        # (Read each time: a listener that raised is taken out of the list.)
        listeners = d.on_node_chunk
        if listeners:
            d.emit(listeners, context=context, node=node, chunk=chunk)

    return emit


def _to_client(listeners: list[Callable[..., None]]) -> bool:
    """Whether a listener hands chunks to a client (``Pipeline.astream``'s)."""
    return any(
        getattr(getattr(f, "__self__", None), "streams_to_client", False) is True for f in listeners
    )
