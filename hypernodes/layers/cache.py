"""Cache: a hit stores the value and skips the step's other layers; a miss runs them and
saves the result. A nested pipeline is cached as a whole the same way.

A miss of a key another run is computing waits for it (single flight, see
``hypernodes.cache.flights``); the run that computes a key always lets it go, whether it
saved the result, failed or was cancelled, so a waiter never waits for ever.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .events import emit_cached, observed

if TYPE_CHECKING:
    from ..level import Scope
    from ..plan import NestedRunner, Step

__all__ = ["cached", "nested"]


async def cached(
    step: Step, args: tuple[Any, ...], values: dict[str, Any], scope: Scope, slot: Any
) -> None:
    """Run ``step`` through ``scope``'s cache (which the caller checked exists).

    Raises:
        NodeError: The node failed.
    """
    cache = scope.cache
    token, hit = await cache.lookup(step, args, values, scope)
    if hit is not None:
        step.store(hit[0], values)
        emit_cached(scope, step, values)
        return
    try:
        result = await observed(step, args, values, scope, slot)
    except BaseException:
        cache.release(token)  # a run waiting for this key computes it instead
        raise
    if token is not None:
        await cache.save(step, token, result, values, scope)


async def nested(
    step: Step, runner: NestedRunner, args: tuple[Any, ...], values: dict[str, Any], scope: Scope
) -> None:
    """Run a nested pipeline's step: cached as a whole (unless some node inside may not
    be), its inner nodes one by one by the cache their level uses.

    Nested pipelines are coroutines on this loop and never hold a slot: only the nodes
    inside them do, so nesting cannot exhaust a limit and deadlock.

    Raises:
        NodeError: A node inside failed.
    """
    cache = runner.cache_for(scope) if step.node.cache else None
    token = None
    if cache is not None:
        token, hit = await cache.lookup(step, args, values, scope)
        if hit is not None:
            step.put(hit[0], values)
            emit_cached(scope, step, values)
            return
    try:
        results = await runner.run_nested(args, scope)
        step.put(results, values)
    except BaseException:
        if cache is not None:
            cache.release(token)
        raise
    if token is not None and cache is not None:
        await cache.save(step, token, results, values, scope)
