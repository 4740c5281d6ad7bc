"""Callback overhead on the chain benchmark: ``python -m benchmarks.bench_callbacks``.

Runs a chain of trivial sync nodes with ``run()`` (sequential) under several callback
sets and prints the median time per run and its ratio to running with no callbacks:

- ``none``: no callbacks;
- ``idle``: callbacks that override no hook (the kernel treats them as absent);
- ``progress off``: ``ProgressCallback(disable=True)`` (``enabled`` is false, so it is
  left out of the run);
- ``noop hooks``: a callback overriding every hook with ``pass``: what dispatch itself
  costs once any hook is listened to (for information);
- ``progress on``: real bars, written to ``os.devnull`` (for information).

The target: idle callback sets within 10% of ``none``. ``--check`` exits 1 when missed.
"""

from __future__ import annotations

import argparse
import inspect
import os
import statistics
import sys
from collections.abc import Callable
from time import perf_counter
from typing import Any

from hypernodes import Node, Pipeline, PipelineCallback, ProgressCallback, node
from hypernodes.callbacks import HOOKS


def chain(n: int) -> list[Node]:
    """``n`` nodes, each adding one to the previous output."""
    nodes = []
    for i in range(n):
        source = "x" if i == 0 else f"v{i - 1}"

        def link(value: int) -> int:
            return value + 1

        link.__name__ = f"step{i}"
        link.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [inspect.Parameter(source, inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        )
        nodes.append(node(link, output_name=f"v{i}"))
    return nodes


class Idle(PipelineCallback):
    """Overrides nothing."""


class NoopHooks(PipelineCallback):
    """Listens to every hook and does nothing."""


for _hook in HOOKS:
    setattr(NoopHooks, _hook, lambda self, **event: None)


def time_runs(pipeline: Pipeline, repeat: int) -> list[float]:
    run: Callable[..., Any] = pipeline.run
    times = []
    for _ in range(repeat):
        started = perf_counter()
        run({"x": 0})
        times.append(perf_counter() - started)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=200, help="timed runs per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--check", action="store_true", help="exit 1 if idle is over 10%%")
    args = parser.parse_args(argv)

    devnull = open(os.devnull, "w")  # noqa: SIM115 - lives for the whole benchmark
    configs: dict[str, list[PipelineCallback]] = {
        "none": [],
        "idle": [Idle(), PipelineCallback()],
        "progress off": [ProgressCallback(disable=True)],
        "noop hooks": [NoopHooks()],
        "progress on": [ProgressCallback(file=devnull, backend="tqdm")],
    }
    nodes = chain(args.nodes)
    pipelines = {
        name: Pipeline(nodes, callbacks=cbs, name="chain") for name, cbs in configs.items()
    }
    for pipeline in pipelines.values():
        assert pipeline.run({"x": 0})[f"v{args.nodes - 1}"] == args.nodes
        time_runs(pipeline, 20)  # warm up: plans compiled, loop created
    samples: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(args.rounds):  # interleaved, so drift hits every config alike
        for name, pipeline in pipelines.items():
            samples[name].extend(time_runs(pipeline, args.repeat))
    base = statistics.median(samples["none"])
    print(f"{args.nodes}-node chain, run() sequential, median of {args.rounds * args.repeat} runs")
    print(f"{'callbacks':<14}{'median µs':>11}{'ratio':>8}")
    for name, times in samples.items():
        median = statistics.median(times)
        print(f"{name:<14}{median * 1e6:>11.1f}{median / base:>8.2f}")
    worst = max(statistics.median(samples[n]) for n in ("idle", "progress off")) / base
    verdict = "ok" if worst <= 1.10 else "over"
    print(f"idle overhead: {100 * (worst - 1):+.1f}% (target <= +10%: {verdict})")
    devnull.close()
    return 1 if args.check and worst > 1.10 else 0


if __name__ == "__main__":
    sys.exit(main())
