"""Issue 13 (streaming nodes): what ``astream`` adds per chunk over iterating the bare async
generator."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from hypernodes import Pipeline, node

from ..harness import Context, Metric, Workload, at_most

__all__ = ["WORKLOADS"]


def _generator(awaits: bool) -> Callable[[int], AsyncIterator[int]]:
    if awaits:

        async def tokens(n: int) -> AsyncIterator[int]:
            for i in range(n):
                await asyncio.sleep(0)  # a client awaiting its socket between tokens
                yield i

    else:

        async def tokens(n: int) -> AsyncIterator[int]:
            for i in range(n):
                yield i

    return tokens


def hn_astream(ctx: Context, *, chunks: int, reps: int) -> dict[str, Any]:
    """``async for event in pipeline.astream(...)`` over a one-node pipeline whose node is
    the generator, and ``async for chunk in generator(...)`` itself, paired rep by rep in
    one loop: the difference, per chunk, is what streaming through a run costs. Two
    generators: one that suspends between chunks (a network client; the reader is then
    woken once per chunk, as it is by the bare generator), one that never does."""
    raw: dict[str, list[float]] = {}
    for key, awaits in (("awaiting", True), ("eager", False)):
        tokens = _generator(awaits)
        pipeline = Pipeline([node(tokens, output_name="tokens")], name="stream")

        async def bare(tokens: Callable[[int], AsyncIterator[int]] = tokens) -> float:
            t0 = time.perf_counter()
            async for _ in tokens(chunks):
                pass
            return time.perf_counter() - t0

        async def streamed(pipeline: Pipeline = pipeline) -> float:
            t0 = time.perf_counter()
            seen = 0
            async with pipeline.astream({"n": chunks}) as events:
                async for _ in events:
                    seen += 1
            assert seen == chunks + 1  # the chunks, then the output
            return time.perf_counter() - t0

        async def main() -> tuple[list[float], list[float]]:
            await bare()
            await streamed()
            plain, through = [], []
            for _ in range(reps):
                plain.append(await bare())
                through.append(await streamed())
            return plain, through

        plain, through = asyncio.run(main())
        raw[key] = [a - b for a, b in zip(through, plain, strict=True)]
        raw[key + "_bare"] = plain
    return {"raw": raw}


def _per_chunk(seconds: float, params: dict[str, Any]) -> float:
    return seconds * 1e6 / params["chunks"]


WORKLOADS: list[Workload] = [
    Workload(
        name="astream_per_chunk",
        issue="streaming",
        metrics=[
            Metric(
                "awaiting",
                "astream, 100,000 chunks of an async generator awaiting between them: "
                "extra per chunk",
                "µs/chunk",
                _per_chunk,
                at_most(5, "µs/chunk"),
                peers=False,
            ),
            Metric(
                "eager",
                "the same, a generator that never suspends: extra per chunk",
                "µs/chunk",
                _per_chunk,
                at_most(5, "µs/chunk"),
                peers=False,
            ),
        ],
        hypernodes=hn_astream,
        params={"chunks": 100_000, "reps": 7},
        quick={"chunks": 20_000, "reps": 2},
    ),
]
