"""The workloads, grouped by issue; ``all_workloads()`` lists them in table order."""

from __future__ import annotations

from ..harness import Workload

__all__ = ["all_workloads"]


def all_workloads() -> list[Workload]:
    """Every workload, in the order the tables show them."""
    from . import cache, callbacks, kernel, mapping, policies, real, streaming, streams

    return [
        *kernel.WORKLOADS,
        *mapping.WORKLOADS,
        *cache.WORKLOADS,
        *callbacks.WORKLOADS,
        *policies.WORKLOADS,
        *streams.WORKLOADS,
        *streaming.WORKLOADS,
        *real.WORKLOADS,
    ]
