"""HyperNodes caches under DaftEngine: keys and lookups before the frame, writes after.

Keys need versions, not values (see ``hypernodes.cache.runtime``), so every top-level
node's key is computed for every item before Daft runs. Per item and node the frame then
gets ``Hit(value)`` (use the cached result), ``SKIP`` (nothing downstream needs it) or
``None`` (run it); an item whose outputs are all cached never enters the frame. Nested
pipelines are cached as a whole, by the cache their level uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ...cache.runtime import CacheRuntime
from ...config import UNSET
from .calls import SKIP, Hit

if TYPE_CHECKING:
    from ...plan import Plan, Step

__all__ = ["ItemCache", "look_up", "packed", "save"]


@dataclass(slots=True)
class ItemCache:
    """The cache state of one item.

    Attributes:
        status: Per top-level step: ``Hit`` or ``SKIP`` (absent: run it).
        run: The steps to run.
        keys: Per step to run that can be cached: ``(runtime, key)`` to write it under.
        values: The item's values (inputs and versions; hits stored in).
    """

    status: dict[int, Any] = field(default_factory=dict)
    run: set[int] = field(default_factory=set)
    keys: dict[int, tuple[CacheRuntime, str]] = field(default_factory=dict)
    values: dict[Any, Any] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """Whether every output comes from the cache (the item needs no computing)."""
        return not self.run


def _runtime_for(step: Step, outer: CacheRuntime) -> CacheRuntime | None:
    node: Any = step.node
    if not node.cache:  # (a nested pipeline with an uncacheable node inside included)
        return None
    if step.nested is None:
        return outer
    # The precedence of a nested run: as_node(cache=...) > the pipeline's own > enclosing.
    if node.cache_override is not ...:
        return CacheRuntime.create(node.cache_override)
    own = node.pipeline.own_cache
    if own is not UNSET:
        return CacheRuntime.create(own)
    return outer


async def look_up(plan: Plan, values: dict[Any, Any], cache: CacheRuntime) -> ItemCache:
    """Keys and hits of one item's top-level steps (``values`` holds its inputs)."""
    state = ItemCache(values=values)
    hits: dict[int, Any] = {}
    keys: dict[int, tuple[CacheRuntime, str]] = {}
    for k, step in enumerate(plan.steps):
        runtime = _runtime_for(step, cache)
        if runtime is None:
            continue
        key = runtime.key(step, values, missing_ok=True)
        if key is None:
            continue
        keys[k] = (runtime, key)
        hit = await runtime.lookup_key(key)
        if hit is not None:
            hits[k] = hit[0]
    needed = set(plan.outputs)
    run: set[int] = set()
    for k in range(len(plan.steps) - 1, -1, -1):
        step = plan.steps[k]
        if not needed.intersection(step.outputs) or k in hits:
            continue
        run.add(k)
        needed.update(step.node.inputs)
    state.run = run
    for k, step in enumerate(plan.steps):
        if k in hits:
            state.status[k] = Hit(hits[k])
            _store(step, hits[k], values)
        elif k not in run:
            state.status[k] = SKIP
        elif k in keys:
            state.keys[k] = keys[k]
    return state


def _store(step: Step, value: Any, values: dict[Any, Any]) -> None:
    if step.nested is not None:
        values.update(zip(step.outputs, value, strict=True))
    else:
        step.store(value, values)


def packed(step: Step, outputs: dict[str, Any]) -> Any:
    """A step's result as the cache holds it (a tuple for tuple outputs and nested
    pipelines, as the native engine stores them)."""
    if step.nested is None and step.out is not None:
        return outputs[step.out]
    return tuple(outputs[name] for name in step.outputs)


async def save(plan: Plan, state: ItemCache, outputs: dict[int, dict[str, Any]]) -> None:
    """Write the results of the steps that ran (``outputs``: per step, name -> value)."""
    for k, (runtime, key) in state.keys.items():
        if k in outputs:
            step = plan.steps[k]
            # The runtime only reads the step (for its warnings) and the result.
            await runtime.save(step, key, packed(step, outputs[k]), state.values)
