"""Composing a step's per-attempt layers, once, when its plan is compiled."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..errors import NodeError, node_failed
from .limit import LimitLayer
from .place import place
from .retry import Attempted, RetryLayer, Streamed
from .stream import StreamLayer
from .timeout import Abandoned, TimedOut, TimeoutLayer

if TYPE_CHECKING:
    from ..level import Scope
    from ..node import Node
    from ..plan import Step

__all__ = ["Attempt", "compose", "failed"]

Attempt = Callable[["Step", tuple[Any, ...], "Scope", Any], Awaitable[Any]]
"""One attempt of a step: ``attempt(step, args, scope, slot)``; ``slot`` is the level's
``max_concurrent`` semaphore for this call, or ``None``."""


def compose(node: Node) -> Attempt | None:
    """The per-attempt layers of ``node``, outermost first: retry, limit (with the
    level's slot), timeout, placement; ``None`` for a plain node, whose attempt is its
    placement alone (the drivers then call it directly, holding the slot themselves).
    A streaming node's placement is ``StreamLayer``, which applies its timeout too."""
    limits = node.limits
    retry = node.retry
    timeout = node.timeout
    attempt: Attempt
    if node.is_stream:
        attempt = StreamLayer(timeout)
    elif not limits and retry is None and timeout is None:
        return None
    else:
        attempt = TimeoutLayer(timeout) if timeout is not None else place
    attempt = LimitLayer(attempt, limits)  # (also holds the slot, per attempt)
    if retry is not None:
        attempt = RetryLayer(attempt, retry)
    return attempt


def failed(name: str, exc: BaseException) -> NodeError:
    """The ``NodeError`` for a step whose attempts ended with ``exc``."""
    attempts = 1
    if type(exc) is Attempted:
        attempts, exc = exc.attempts, exc.failure
    if type(exc) is Streamed:
        exc = exc.failure
    detail: str | None = None
    failure = exc
    if isinstance(exc, TimedOut):
        failure, detail = exc.__cause__ or exc, str(exc)
    error = node_failed(
        name, failure, detail=detail, abandoned=isinstance(exc, Abandoned), attempts=attempts
    )
    if attempts > 1:
        what = error.detail or f"{type(failure).__name__}: {failure}"
        error.detail = f"{what} (after {attempts} attempts)"
    return error
