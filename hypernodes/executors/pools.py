"""Pools: the executor aliases, and the pools an engine makes for them.

The aliases are one table, ``REGISTRY``: adding an alias is one row (plus, for a new kind
of pool, the function that makes it). Pools made for an alias belong to a ``PoolSet`` that
the engine owns and closes. This module knows nothing of lanes (``workers`` turns an alias
into a ``Lane``), so it imports no event-loop code.
"""

from __future__ import annotations

import concurrent.futures
import difflib
import functools
import os
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

from ..errors import InvalidExecutorError
from .processes import ProcessPool, spawn_safe_context

__all__ = [
    "ALIASES",
    "ExecutorAlias",
    "LaneKind",
    "Pool",
    "PoolSet",
    "REGISTRY",
    "cpu_count",
    "distributed_width",
    "executor_alias",
    "validate_executor",
]

LaneKind = Literal["sequential", "async", "threads", "remote"]

# A pool, and what to call when it is shut down (a cluster to stop), if anything.
Made = tuple[concurrent.futures.Executor, Callable[[], None] | None]


@dataclass(frozen=True, slots=True)
class Pool:
    """A kind of pool that a ``PoolSet`` makes on first use.

    Attributes:
        kind: Its key in the ``PoolSet`` (``"threads"``, ``"processes"``, ...).
        make: Makes the pool for a ``PoolSet`` (its ``max_workers`` and ``address``).
        size: How many workers the pool of that ``PoolSet`` has, or will have.
    """

    kind: str
    make: Callable[[PoolSet], Made]
    size: Callable[[PoolSet], int]


@dataclass(frozen=True, slots=True)
class ExecutorAlias:
    """One executor alias: how its lane proceeds, and the pool that serves it.

    Attributes:
        name: The alias users write (``"threaded"``).
        lane: The kind of ``Lane`` it resolves to.
        pool: The pool its sync bodies go to; ``None`` for none of its own.
        width: Without a pool, how many nodes or items may be in flight; a concurrent
            lane takes ``max_concurrent`` instead when it is set. With a pool, the pool's
            size is the width.
    """

    name: str
    lane: LaneKind
    pool: Pool | None = None
    width: int = 1

    def place(
        self, pools: PoolSet, max_concurrent: int | None
    ) -> tuple[concurrent.futures.Executor | None, int]:
        """The executor of this alias's lane (its pool, made if need be; ``None`` for none)
        and the lane's width."""
        if self.pool is not None:
            kind = self.pool.kind
            return pools.get(kind), pools.size(kind)
        width = self.width if self.lane == "sequential" else max_concurrent or self.width
        return None, width


def _make_threads(pools: PoolSet) -> Made:
    size = pools.size("threads")
    return concurrent.futures.ThreadPoolExecutor(size, thread_name_prefix="hypernodes"), None


def _make_processes(pools: PoolSet) -> Made:
    return ProcessPool(pools.size("processes"), context=spawn_safe_context()), None


def _make_dask(pools: PoolSet) -> Made:
    from .dask import make_dask_executor  # deferred: the optional dask extra

    return make_dask_executor(pools.address, pools.max_workers)


def _make_ray(pools: PoolSet) -> Made:
    from .ray import make_ray_executor  # deferred: the optional ray extra

    return make_ray_executor(pools.address, pools.max_workers)


def _thread_count(pools: PoolSet) -> int:
    return pools.max_workers or pools.threads_default


def _machine_width(pools: PoolSet) -> int:
    return pools.max_workers or cpu_count()


def _cluster_width(kind: str, pools: PoolSet) -> int:
    # A cluster is sized by its workers, not by this machine.
    return distributed_width(pools.get(kind)) or pools.max_workers or cpu_count()


REGISTRY: Final[tuple[ExecutorAlias, ...]] = (
    ExecutorAlias("sequential", "sequential", width=1),
    ExecutorAlias("async", "async", width=10),
    ExecutorAlias("threaded", "threads", Pool("threads", _make_threads, _thread_count)),
    ExecutorAlias("parallel", "remote", Pool("processes", _make_processes, _machine_width)),
    ExecutorAlias(
        "dask", "remote", Pool("dask", _make_dask, functools.partial(_cluster_width, "dask"))
    ),
    ExecutorAlias(
        "ray", "remote", Pool("ray", _make_ray, functools.partial(_cluster_width, "ray"))
    ),
)
"""The executor aliases, one row each, in the order error messages list them."""

ALIASES: Final[tuple[str, ...]] = tuple(row.name for row in REGISTRY)

_BY_NAME: Final = {row.name: row for row in REGISTRY}
_POOLS: Final = {row.pool.kind: row.pool for row in REGISTRY if row.pool is not None}


def executor_alias(name: str) -> ExecutorAlias:
    """The ``REGISTRY`` row of the alias ``name``.

    Raises:
        KeyError: ``name`` is no alias (``validate_executor`` says so with the fix).
    """
    return _BY_NAME[name]


def cpu_count() -> int:
    """CPUs this process may use."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def validate_executor(spec: object, role: str) -> None:
    """Check that ``spec`` is an alias or an executor instance.

    Raises:
        InvalidExecutorError: With the valid aliases, and the fix when a class was passed.
    """
    if isinstance(spec, str):
        if spec in ALIASES:
            return
        close = difflib.get_close_matches(spec.lower(), ALIASES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise InvalidExecutorError(
            f"unknown {role} {spec!r}{hint}; valid aliases are "
            f"{', '.join(repr(a) for a in ALIASES)}, or pass a concurrent.futures.Executor"
        )
    if isinstance(spec, type) and issubclass(spec, concurrent.futures.Executor):
        raise InvalidExecutorError(
            f"{role} got the class {spec.__name__}; pass an instance, "
            f"e.g. {spec.__name__}(max_workers=4)"
        )
    if isinstance(spec, concurrent.futures.Executor) or (
        callable(getattr(spec, "submit", None)) and callable(getattr(spec, "shutdown", None))
    ):
        return
    raise InvalidExecutorError(
        f"{role} must be one of {', '.join(repr(a) for a in ALIASES)} or a "
        f"concurrent.futures.Executor instance, got {spec!r}"
    )


class PoolSet:
    """The pools an engine made for its aliases; created on first use, closed with it."""

    def __init__(
        self,
        *,
        max_workers: int | None,
        threads_default: int,
        address: str | None = None,
    ) -> None:
        self.max_workers = max_workers
        self.threads_default = threads_default
        self.address = address
        self._lock = threading.Lock()
        self._pools: dict[str, concurrent.futures.Executor] = {}
        self._closers: dict[str, Callable[[], None]] = {}
        # Never leak the pools of an engine that is dropped without close().
        self._finalizer = weakref.finalize(self, _shutdown_all, self._pools, self._closers)

    def get(self, kind: str) -> concurrent.futures.Executor:
        """The pool for ``kind`` (``"threads"``, ``"processes"``, ``"dask"``, ``"ray"``)."""
        pool = self._pools.get(kind)
        if pool is not None:
            return pool
        with self._lock:
            pool = self._pools.get(kind)
            if pool is None:
                pool, closer = self._make(kind)
                self._pools[kind] = pool
                if closer is not None:
                    self._closers[kind] = closer
            return pool

    def size(self, kind: str) -> int:
        """How many workers the pool of ``kind`` has (or will have)."""
        return _POOLS[kind].size(self)

    def _make(self, kind: str) -> Made:
        return _POOLS[kind].make(self)

    @property
    def created(self) -> dict[str, concurrent.futures.Executor]:
        """The pools created so far."""
        return dict(self._pools)

    def close(self, wait: bool = True) -> None:
        """Shut down every pool created so far."""
        with self._lock:
            _shutdown_all(self._pools, self._closers, wait=wait)


def _shutdown_all(
    pools: dict[str, concurrent.futures.Executor],
    closers: dict[str, Callable[[], None]],
    wait: bool = False,
) -> None:
    for kind, pool in list(pools.items()):
        pool.shutdown(wait=wait, cancel_futures=True)
        closer = closers.pop(kind, None)
        if closer is not None:
            closer()
    pools.clear()


def distributed_width(executor: concurrent.futures.Executor) -> int | None:
    """How many workers a cluster's executor has (its ``hypernodes_width()``, or a plain
    ``Client.get_executor()``'s threads), or ``None`` when it does not say."""
    width = getattr(executor, "hypernodes_width", None)
    if callable(width):
        return width()  # type: ignore[no-any-return]
    if type(executor).__module__ == "distributed.cfexecutor":
        # A plain ``Client.get_executor()``: size it by its cluster, not by this machine.
        client = getattr(executor, "_client", None)
        if client is not None:
            return sum(client.nthreads().values()) or None
    return None
