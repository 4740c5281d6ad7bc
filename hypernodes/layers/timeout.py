"""Timeout: seconds per attempt. An async body is cancelled; a sync body, which cannot be
interrupted, runs in a worker (even on a loop that would run it inline) and is abandoned
there when its time is up."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .place import offload

if TYPE_CHECKING:
    from ..level import Scope
    from ..plan import Step

__all__ = ["Abandoned", "TimedOut", "TimeoutLayer"]

logger = logging.getLogger("hypernodes")


class TimedOut(TimeoutError):
    """An attempt ran out of time; the message says what became of it (``Retry(on=
    TimeoutError)`` matches it). Its ``__cause__`` is the timer's ``TimeoutError``."""


class Abandoned(TimedOut):
    """A sync body timed out in a worker: it cannot be interrupted, so it was abandoned."""


class TimeoutLayer:
    """Bounds one attempt to ``seconds`` (the bottom layer above placement)."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def __call__(self, step: Step, args: tuple[Any, ...], scope: Scope, slot: Any) -> Any:
        import asyncio  # deferred: plans import the layers, defining them needs no asyncio

        seconds = self.seconds
        if step.is_async:
            timer = asyncio.timeout(seconds)
            try:
                async with timer:
                    return await step.fn(*args)
            except TimeoutError as exc:
                if not timer.expired():
                    raise  # the node's own TimeoutError, not ours
                raise TimedOut(f"timed out after {seconds:g} s and was cancelled") from exc
        try:
            return await asyncio.wait_for(offload(step, args, scope), seconds)
        except TimeoutError as exc:
            message = (
                f"timed out after {seconds:g} s; its sync body cannot be interrupted, so it "
                f"was abandoned and keeps running in its {scope.body.name} worker until it "
                "returns"
            )
            logger.warning("node %r %s", step.name, message)
            raise Abandoned(message) from exc
