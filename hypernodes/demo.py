"""The bundled demo pipeline: async I/O-like fetches, CPU work on threads, a fan-in, timed.

Run it through the command line (this is what ``make demo`` does)::

    hypernodes run hypernodes.demo:pipeline --inputs '{"user_id": 42}' --node-executor async

or on its own with ``python -m hypernodes.demo``. Four async nodes wait on simulated
network latency (one needs another's result); two sync nodes hash data (hashlib releases the GIL, so on a thread they
really run in parallel); a last node gathers everything. A :class:`Timeline` callback
prints, on stderr, when each node ran and the wall time against the sum of the node
times: with ``node_executor="async"`` every node starts the moment its inputs are ready,
so the wall time is far below the sum.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
from time import perf_counter
from typing import IO, TYPE_CHECKING, Any

from .callbacks import CallbackContext, PipelineCallback
from .node import node
from .pipeline import Pipeline

if TYPE_CHECKING:
    from .node import Node

__all__ = ["Timeline", "main", "pipeline"]

_MB = b"\x5a" * (1 << 20)


@node(output_name="profile")
async def fetch_profile(user_id: int, latency: float = 1.0) -> dict[str, Any]:
    """A user profile from a (simulated) service: 0.10 s of latency."""
    await asyncio.sleep(0.10 * latency)
    return {"id": user_id, "name": f"user-{user_id}", "tier": ("gold", "silver")[user_id % 2]}


@node(output_name="orders")
async def fetch_orders(user_id: int, latency: float = 1.0) -> list[dict[str, Any]]:
    """The user's orders from a (simulated) database: 0.35 s of latency."""
    await asyncio.sleep(0.35 * latency)
    return [{"order": user_id * 100 + i, "amount": round(9.5 * (i + 1), 2)} for i in range(5)]


@node(output_name="recommendations")
async def fetch_recommendations(user_id: int, latency: float = 1.0) -> list[str]:
    """Recommendations from a (simulated) model server: 0.30 s of latency."""
    await asyncio.sleep(0.30 * latency)
    return [f"item-{(user_id * 7 + k) % 100}" for k in range(3)]


@node(output_name="prices")
async def fetch_prices(recommendations: list[str], latency: float = 1.0) -> dict[str, float]:
    """Prices of the recommended items (needs the recommendations): 0.15 s of latency."""
    await asyncio.sleep(0.15 * latency)
    return {item: round(1.25 * int(item.rpartition("-")[2]) + 0.99, 2) for item in recommendations}


def _hash_work(seed: str, megabytes: int) -> str:
    """Real CPU work: SHA-256 over ``megabytes`` MB (hashlib releases the GIL)."""
    digest = hashlib.sha256(seed.encode())
    for _ in range(megabytes):
        digest.update(_MB)
    return digest.hexdigest()


@node(output_name="profile_score")
def score_profile(profile: dict[str, Any], work: int = 300) -> float:
    """CPU-bound: hash ``work`` MB to derive a score in [0, 1)."""
    hexdigest = _hash_work(repr(sorted(profile.items())), work)
    return round(int(hexdigest[:8], 16) / 16**8, 4)


@node(output_name="orders_digest")
def digest_orders(orders: list[dict[str, Any]], work: int = 300) -> str:
    """CPU-bound: a checksum over the orders, hashing ``work`` MB."""
    return _hash_work(repr(orders), work)[:16]


@node(output_name="report")
def build_report(
    profile: dict[str, Any],
    orders: list[dict[str, Any]],
    prices: dict[str, float],
    profile_score: float,
    orders_digest: str,
) -> dict[str, Any]:
    """The fan-in: everything above, in one summary."""
    return {
        "user": profile["name"],
        "tier": profile["tier"],
        "score": profile_score,
        "orders": len(orders),
        "total_spent": round(sum(o["amount"] for o in orders), 2),
        "orders_digest": orders_digest,
        "recommendations": prices,
    }


class Timeline(PipelineCallback):
    """Records when each node ran and prints a timeline and the overlap when a run ends.

    Args:
        stream: Where to print (default: ``sys.stderr`` at print time).
        width: Width of the timeline bars in characters.

    Attributes:
        last: ``(label, start, end)`` per node of the last finished run or map, seconds
            from its start, in start order.
        wall: The wall time of the last finished run or map, in seconds.
    """

    def __init__(self, stream: IO[str] | None = None, width: int = 40) -> None:
        self.stream = stream
        self.width = width
        self.last: list[tuple[str, float, float]] = []
        self.wall = 0.0

    def on_pipeline_start(
        self, *, context: CallbackContext, pipeline: Pipeline, inputs: dict[str, Any]
    ) -> None:
        """Start the clock of this run."""
        self._begin(context)

    def on_map_start(self, *, context: CallbackContext, pipeline: Pipeline, **_: Any) -> None:
        """Start the clock of this map."""
        if context.depth == 0:
            self._begin(context)

    def on_node_start(
        self, *, context: CallbackContext, node: Node, inputs: dict[str, Any]
    ) -> None:
        """Remember when the node started."""
        state = context.root.data.get("timeline")
        if state is not None:
            label = (
                node.name if context.item_index is None else f"{node.name}[{context.item_index}]"
            )
            state["open"][(label, id(context))] = perf_counter()

    def on_node_end(
        self, *, context: CallbackContext, node: Node, outputs: dict[str, Any], duration: float
    ) -> None:
        """Record the node's interval."""
        state = context.root.data.get("timeline")
        if state is not None:
            label = (
                node.name if context.item_index is None else f"{node.name}[{context.item_index}]"
            )
            started = state["open"].pop((label, id(context)), None)
            if started is not None:
                state["done"].append((label, started, perf_counter()))

    def on_pipeline_end(self, *, context: CallbackContext, duration: float, **_: Any) -> None:
        """Print the timeline of this run."""
        self._finish(context)

    def on_map_end(self, *, context: CallbackContext, duration: float, **_: Any) -> None:
        """Print the timeline of this map."""
        if context.depth == 0:
            self._finish(context)

    def _begin(self, context: CallbackContext) -> None:
        context.root.data["timeline"] = {"t0": perf_counter(), "open": {}, "done": []}

    def _finish(self, context: CallbackContext) -> None:
        state = context.root.data.pop("timeline", None)
        if state is None:
            return
        t0 = state["t0"]
        self.wall = perf_counter() - t0
        self.last = sorted(
            ((label, start - t0, end - t0) for label, start, end in state["done"]),
            key=lambda row: row[1],
        )
        print(self.format(), file=self.stream or sys.stderr, flush=True)

    def format(self) -> str:
        """The timeline and summary of the last run, as text."""
        wall = max(self.wall, 1e-9)
        busy = sum(end - start for _, start, end in self.last)
        scale = self.width / wall
        name_width = max((len(label) for label, _, _ in self.last), default=4)
        lines = [f"{'node':<{name_width}}  start    end"]
        for label, start, end in self.last:
            left = min(self.width - 1, int(start * scale))
            length = max(1, round((end - start) * scale))
            bar = " " * left + "#" * min(length, self.width - left)
            lines.append(f"{label:<{name_width}}  {start:5.2f}  {end:5.2f}  |{bar:<{self.width}}|")
        overlap = busy / wall
        summary = f"wall {self.wall:.2f} s vs {busy:.2f} s of node time: {overlap:.1f}x overlap"
        if overlap < 1.2 and len(self.last) > 1:
            summary += " (nodes ran one at a time: try --node-executor async)"
        lines.append(summary)
        return "\n".join(lines)


pipeline = Pipeline(
    [
        fetch_profile,
        fetch_orders,
        fetch_recommendations,
        fetch_prices,
        score_profile,
        digest_orders,
        build_report,
    ],
    callbacks=[Timeline()],
    name="demo",
)


def main(argv: list[str] | None = None) -> None:
    """``python -m hypernodes.demo [USER_ID]``: run the demo with the async executor.

    Raises:
        SystemExit: The argument is not an integer.
    """
    # deferred: importing the demo's pipeline (tests, notebooks) loads neither the CLI nor asyncio
    from .cli.encode import dumps
    from .engines.hypernodes import HyperNodesEngine

    args = sys.argv[1:] if argv is None else argv
    try:
        user_id = int(args[0]) if args else 42
    except ValueError:
        raise SystemExit(f"usage: python -m hypernodes.demo [USER_ID]; got {args[0]!r}") from None
    with HyperNodesEngine(node_executor="async") as engine:
        result = engine.run(pipeline, {"user_id": user_id})
    print(dumps(result))


if __name__ == "__main__":
    main()
