"""Builders shared by the HyperNodes-side workloads: pipelines from generated code, limits.

The *direct* interpreter is the floor for per-node overhead: a precompiled list of
``(function, input names, output name)`` run over a dict, with nothing else.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from hypernodes import Node, Pipeline

from ..peers.peer_common import load_module

__all__ = [
    "Step",
    "direct_arun",
    "direct_run",
    "direct_steps",
    "hn_pipeline",
    "loop_times",
    "repeat_run",
]

Step = tuple[Callable[..., Any], tuple[str, ...], str]


def hn_pipeline(name: str, source: tuple[str, list[str]], **kwargs: Any) -> Pipeline:
    """A HyperNodes pipeline of the generated functions named ``outputs`` (one node each)."""
    src, outputs = source
    mod = load_module(f"hn_{name}", src)
    return Pipeline([Node(getattr(mod, o), output_name=o) for o in outputs], **kwargs)


def direct_steps(name: str, source: tuple[str, list[str]]) -> list[Step]:
    """The same generated functions as ``(fn, input names, output)`` steps, in order."""
    src, outputs = source
    mod = load_module(f"direct_{name}", src)
    steps: list[Step] = []
    for o in outputs:
        fn = getattr(mod, o)
        steps.append((fn, tuple(inspect.signature(fn).parameters), o))
    return steps


def direct_run(steps: Iterable[Step], inputs: dict[str, Any]) -> dict[str, Any]:
    """The minimal dict-passing interpreter (the per-node-overhead limit)."""
    values = dict(inputs)
    for fn, names, out in steps:
        values[out] = fn(*[values[n] for n in names])
    return values


async def direct_arun(steps: list[Step], inputs: dict[str, Any], *, wide: bool) -> dict[str, Any]:
    """Async twin: await each node in order, or all at once (``wide``) with gather."""
    values = dict(inputs)
    if wide:
        coros = [fn(*[values[n] for n in names]) for fn, names, _ in steps]
        for (_, _, out), value in zip(steps, await asyncio.gather(*coros), strict=True):
            values[out] = value
        return values
    for fn, names, out in steps:
        values[out] = await fn(*[values[n] for n in names])
    return values


def repeat_run(p: Pipeline, inputs: dict[str, Any], inner: int) -> None:
    """``inner`` consecutive ``run()`` calls (one timed repetition)."""
    for _ in range(inner):
        p.run(inputs)


def loop_times(make: Callable[[], Awaitable[Any]], *, reps: int, warmup: int = 1) -> list[float]:
    """Seconds per ``await make()``, timed inside one ``asyncio.run`` (a user's loop)."""

    async def main() -> list[float]:
        for _ in range(warmup):
            await make()
        out = []
        for _ in range(reps):
            t0 = time.perf_counter()
            await make()
            out.append(time.perf_counter() - t0)
        return out

    return asyncio.run(main())
