"""Placement: where one attempt of a node's body runs (the innermost layer).

An async body is awaited on the loop. A sync body runs where its level says, decided
once when the level is made (``Scope.inline`` and ``Scope.body``): inline on a loop
HyperNodes owns, else handed to the level's lane (a worker thread, or shipped, pickled,
to a process pool or cluster). Nothing else in the kernel decides where a body runs.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..level import Scope
    from ..plan import Step

__all__ = ["offload", "place"]


def place(step: Step, args: tuple[Any, ...], scope: Scope, slot: Any = None) -> Awaitable[Any]:
    """The awaitable of one attempt of ``step`` on ``args`` at ``scope``'s level."""
    if step.is_async:
        return step.fn(*args)  # type: ignore[no-any-return]
    if scope.inline:
        return _ready(step.fn(*args))
    return offload(step, args, scope)


def offload(step: Step, args: tuple[Any, ...], scope: Scope) -> Awaitable[Any]:
    """Run the sync body in the level's lane (never inline)."""
    return scope.offload(step.fn, args, None, step.name)


async def _ready(value: Any) -> Any:
    return value
