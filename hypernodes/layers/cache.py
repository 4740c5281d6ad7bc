"""Cache: a hit stores the value and skips the step's other layers; a miss runs them and
saves the result. A nested pipeline is cached as a whole the same way."""

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
    key, hit = await cache.lookup(step, args, values, scope)
    if hit is not None:
        step.store(hit[0], values)
        emit_cached(scope, step, values)
        return
    result = await observed(step, args, values, scope, slot)
    if key is not None:
        await cache.save(step, key, result, values, scope)


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
    key = None
    if cache is not None:
        key, hit = await cache.lookup(step, args, values, scope)
        if hit is not None:
            step.put(hit[0], values)
            emit_cached(scope, step, values)
            return
    results = await runner.run_nested(args, scope)
    step.put(results, values)
    if key is not None and cache is not None:
        await cache.save(step, key, results, values, scope)
