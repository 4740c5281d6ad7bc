"""Dask: a ``concurrent.futures`` executor over a ``distributed.Client``, and the "dask" alias.

``DaskExecutor`` submits with ``pure=False`` (Dask would otherwise merge identical calls
of an impure node into one), cancels the Dask task when its future is cancelled, turns
every way Dask can drop a task into an exception (never a bare cancellation), reports its
cluster's thread count (``hypernodes_width``), keeps the next call waiting on each worker
thread (``hypernodes_backlog``) and sends a map's shipped pipeline with each call when it
is small, else places it on the cluster once (``hypernodes_share``).
``make_dask_executor`` is what the engine calls for ``"dask"``: it connects to a scheduler
address, or starts a local cluster that closes with the engine. ``distributed`` is
imported only here, and only when asked for.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .pools import cpu_count
from .remote import Shipped
from .tracking import TaskLost, TrackedExecutor

__all__ = [
    "ENV_ADDRESS",
    "INLINE_BYTES",
    "LOCAL_CLUSTER_CONFIG",
    "DaskExecutor",
    "make_dask_executor",
]

ENV_ADDRESS = "HYPERNODES_DASK_ADDRESS"
"""Environment variable read for the scheduler address when none is configured."""

INLINE_BYTES = 64 * 1024
"""A shared ``Shipped`` up to this size travels with every call instead of being placed
(see ``DaskExecutor.hypernodes_share``)."""

_INSTALL = "pip install 'hypernodes[dask]'"

LOCAL_CLUSTER_CONFIG: dict[str, object] = {
    "distributed.scheduler.worker-saturation": "inf",
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
}
"""The Dask settings of the local cluster the ``"dask"`` alias starts (no address):

- ``worker-saturation: inf``: the engine already bounds the calls in flight (see
  ``hypernodes_backlog``), so the scheduler need not hold tasks back; queued on the
  workers, the next task starts without a round trip to the scheduler (16 x 0.1 s on 8
  threads: 0.24 s, not 0.32).
- the worker's statistical profiler off, and the event-loop tick every second instead of
  every 20 ms: both wake the worker's event loop (~150 times a second), which takes the
  GIL from the task running; with them, a CPU-bound pure-Python item runs 6-13% slower
  on a Dask worker than in a bare process pool. What they feed is the dashboard's
  "Profile" and "Event Loop" pages (blocked-loop warnings still come, later).

A key whose value differs from Dask's own default (set in the user's Dask config) keeps
the user's value; to have a cluster as Dask makes it, start one and pass its address.
"""

# Dask's own defaults of the keys above: a key still at its default takes ours.
_DASK_DEFAULTS: dict[str, object] = {
    "distributed.scheduler.worker-saturation": 1.1,
    "distributed.worker.profile.enabled": True,
    "distributed.admin.tick.interval": "20ms",
}

# ``client.submit`` options a DaskExecutor passes on (``key``, ``pure`` and actors are its own).
_OPTIONS = frozenset(
    {"workers", "resources", "retries", "priority", "fifo_timeout", "allow_other_workers"}
)

# Why Dask cancels a task nobody here cancelled, in words (``FutureCancelledError.reason``).
_REASONS = {
    "lost dependencies": "data it needed was lost with a worker that died",
    "scheduler-connection-lost": "the client lost its connection to the scheduler",
    "scheduler-restart": "the cluster was restarted",
    "unknown": "Dask gave no reason (a worker holding data it needed died, the client "
    "closed, or another client cancelled it)",
}

# How a cancellation reaches ``_follow``: Dask's ``FutureCancelledError`` (a
# ``concurrent.futures.CancelledError``), or asyncio's when the coroutine itself is cancelled.
_CANCELLED = (asyncio.CancelledError, concurrent.futures.CancelledError)


def _distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:  # pragma: no cover - the dev venv has the extra
        raise ImportError(
            f"the 'dask' executor needs Dask distributed, which is not installed: {_INSTALL}"
        ) from exc
    return distributed


def _dask_config() -> Any:
    import dask.config  # deferred: the optional dask extra

    return dask.config


class _Box:
    """Keeps a shared object opaque to Dask (it would look inside lists and dicts)."""

    __slots__ = ("obj",)

    def __init__(self, obj: object) -> None:
        self.obj = obj


def _unbox(box: _Box) -> Any:
    return box.obj


@dataclass(slots=True)
class _Placed:
    """An object shared with the cluster: the current Dask future for it, and every key
    it was handed out under (a lost one is placed again, and old handles follow)."""

    obj: object
    future: Any
    keys: set[str] = field(default_factory=set)


class DaskExecutor(TrackedExecutor):
    """A ``concurrent.futures.Executor`` that runs calls as tasks of a Dask cluster.

    Any ``distributed.Client`` works; ``client.get_executor()`` works with HyperNodes too,
    but this adapter adds what the engine uses to size and feed a map (the cluster's
    thread count, data placed on the cluster once), the standard library's
    ``shutdown(wait, cancel_futures)``, and futures that always end in a result or an
    exception: a task Dask drops (data lost with a dead worker, a lost scheduler) fails
    with ``TaskLost`` instead of leaving the future cancelled.

    A worker that dies while running a call is Dask's to handle: the call runs again on
    another worker, up to ``distributed.scheduler.allowed-failures`` times, then fails with
    ``distributed.KilledWorker``.

    Args:
        client: A connected ``distributed.Client``. The executor never closes it.
        **options: Passed to every ``client.submit`` (``resources=``, ``workers=``,
            ``retries=``, ``priority=``, ``fifo_timeout=``, ``allow_other_workers=``);
            ``pure`` is always ``False``.

    Raises:
        TypeError: ``client`` is not a ``distributed.Client``, ``pure=True`` was given, or
            an option ``client.submit`` does not take per call.
    """

    hypernodes_chunk_rounds = True
    """A plain map's chunks go in rounds of one per worker, each round half of the items
    left (see ``engines.chunks._Sizer``): a call costs about 6 ms of CPU across the
    client, the scheduler and the worker (one-item calls on a 2-worker local cluster),
    against well under 1 ms in a local process pool, so a map makes few calls (32 items
    of 30 ms on 2 workers: 12, where chunks of at most 0.1 s each made 14 to 18), and its
    last ones are short, so the workers end together."""

    hypernodes_chunk_seconds = 0.05
    """The shortest a chunk of a plain map's items should run in a worker, once items are
    timed: the rounds (``hypernodes_chunk_rounds``) stop halving at chunks of this much
    work (the last round splits what is left), so a call costs at most about an eighth
    of what it runs."""

    def __init__(self, client: Any, **options: Any) -> None:
        distributed = _distributed()
        if not isinstance(client, distributed.Client):
            raise TypeError(
                f"DaskExecutor needs a distributed.Client, got {client!r}; e.g. "
                "DaskExecutor(distributed.Client('tcp://scheduler:8786'))"
            )
        if options.pop("pure", False):
            raise TypeError(
                "DaskExecutor always submits with pure=False: nodes may be impure, and Dask "
                "would run identical calls of an impure node only once"
            )
        unknown = sorted(set(options) - _OPTIONS)
        if unknown:
            raise TypeError(
                f"DaskExecutor got unsupported options {unknown}; valid: {sorted(_OPTIONS)}"
            )
        super().__init__()
        self.client = client
        self._options = options
        self._future_type: type[Any] = distributed.Future

    def submit(
        self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[Any]:
        """Run ``fn(*args, **kwargs)`` as a Dask task (Dask futures in ``args`` are resolved).

        The future holds the call's result or exception. If Dask drops the task (see
        ``TaskLost``) it fails with that; if its worker dies, Dask runs it again, up
        to its allowed failures, then the future fails with ``KilledWorker``. Cancelling
        the future cancels the Dask task (a task already running finishes in its worker;
        its result is dropped).

        Raises:
            RuntimeError: The executor was shut down.
        """
        call = functools.partial(fn, **kwargs) if kwargs else fn  # (no clash with submit's)
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._lock:
            self._check_open()
            task = self.client.submit(call, *self._current(args), pure=False, **self._options)
            self._pending[future] = task
        future.add_done_callback(self._finished)
        self.client.loop.add_callback(self._follow, task, future)
        return future

    async def _follow(self, task: Any, future: concurrent.futures.Future[Any]) -> None:
        # On the client's event loop: settle ``future`` from the Dask task's outcome.
        try:
            value = await self.client.gather(task, asynchronous=True)
        except BaseException as exc:  # the call's exception, the cluster's, or a cancellation
            error: BaseException = exc
            # Dask's FutureCancelledError is a concurrent.futures.CancelledError: whoever
            # awaits the future would take it for a cancellation of their own.
            if isinstance(exc, _CANCELLED) or not isinstance(exc, Exception):
                reason = getattr(exc, "reason", None) or "unknown"
                error = TaskLost("Dask", str(task.key), reason, _REASONS.get(reason, ""))
                error.__cause__ = exc
            if future.set_running_or_notify_cancel():
                future.set_exception(error)
            if not isinstance(exc, Exception) and not task.cancelled():
                raise  # this coroutine itself was cancelled (or interrupted)
            return
        if future.set_running_or_notify_cancel():
            future.set_result(value)

    def _finished(self, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            task = self._pending.pop(future, None)
        if task is not None and future.cancelled():
            # Without blocking the thread that cancelled (often an event loop).
            cancel = functools.partial(
                task.cancel, asynchronous=True, reason="cancelled by its HyperNodes future"
            )
            with contextlib.suppress(RuntimeError):  # the client's loop is closed
                self.client.loop.add_callback(cancel)

    def hypernodes_width(self) -> int:
        """The cluster's total worker threads (how many calls run at once)."""
        threads = self.client.nthreads()
        return max(1, sum(threads.values())) if threads else 1

    def hypernodes_backlog(self) -> int:
        """How many calls may wait on the workers beyond those running: one per thread.

        A waiting task starts the moment its worker's thread frees up, instead of after a
        round trip through the scheduler and the engine (20-40 ms on a local cluster,
        against items of tens of milliseconds); it is still cancelled, if the run ends,
        before it starts (unless its thread frees up first), and a task that starts after
        the end finds its run over and is skipped.
        """
        return self.hypernodes_width()

    def hypernodes_share(self, obj: object) -> Any:
        """What a map's calls pass for ``obj``: a small ``Shipped`` itself, else a Dask
        future for ``obj`` placed on the cluster once.

        A ``Shipped`` of up to ``INLINE_BYTES`` travels with every call: a Dask task runs
        where its inputs are, so calls that all read one placed object would all be sent
        to the worker holding it (Dask's active memory manager drops the copies other
        workers fetched once no task waits for them), and the other workers would stay
        idle until Dask's work stealing moved calls to them, 100 ms or more into every
        map. Unpickled once per worker process either way (``Shipped.load``).

        A bigger object is placed: passed as a ``submit`` argument, the future is resolved
        to ``obj`` on the worker, so a map sends it once instead of with every item. Up to
        half Dask's large-graph warning threshold (``distributed.admin.large-graph-warning-
        threshold``) it is placed as a task that makes it, which Dask makes again if the
        worker holding it dies; a bigger one is scattered to a worker, and is lost with it
        (the calls waiting for it fail with ``TaskLost``). Either way, a lost object is
        placed again at the next ``submit`` that passes its future. The most recent
        object stays shared (a repeated map reuses it); it is released when another one
        replaces it, or at shutdown.
        """
        if isinstance(obj, Shipped) and len(obj.blob) <= INLINE_BYTES:
            return obj
        digest = getattr(obj, "digest", None)
        with self._lock:
            shared = self._shared
            if shared is not None and digest is not None and shared[0] == digest:
                return self._usable(shared[1]).future
            placed = _Placed(obj, None)
            self._usable(placed)
            self._shared = (digest, placed)
            return placed.future

    def _current(self, args: tuple[Any, ...]) -> tuple[Any, ...]:
        # Handles of the shared object stand for its current placement (call with the lock).
        shared = self._shared
        if shared is None:
            return args
        placed: _Placed = shared[1]
        handles = [isinstance(a, self._future_type) and a.key in placed.keys for a in args]
        if not any(handles):
            return args
        current = self._usable(placed).future
        return tuple(current if s else a for a, s in zip(args, handles, strict=True))

    def _usable(self, placed: _Placed) -> _Placed:
        """``placed``, placed again if its data was lost (call with the lock held)."""
        if placed.future is not None and placed.future.status not in ("lost", "cancelled", "error"):
            return placed
        obj = placed.obj
        size = len(obj.blob) if isinstance(obj, Shipped) else _sizeof(obj)
        if size <= _embed_limit():
            placed.future = self.client.submit(_unbox, _Box(obj), pure=False)
        else:
            # Not broadcast: Dask's active memory manager drops the extra replicas anyway.
            [placed.future] = self.client.scatter([obj], hash=False)
        placed.keys.add(placed.future.key)
        return placed

    def __repr__(self) -> str:
        state = "shut down" if self._shutdown else f"{len(self._pending)} pending"
        return f"<DaskExecutor scheduler={self.client.scheduler.address!r} {state}>"


def _sizeof(obj: object) -> int:
    from dask.sizeof import sizeof  # deferred: the optional dask extra

    return int(sizeof(obj))


def _embed_limit() -> int:
    from dask.utils import parse_bytes  # deferred: the optional dask extra

    threshold = _dask_config().get("distributed.admin.large-graph-warning-threshold")
    return int(parse_bytes(threshold)) // 2


def _local_cluster_config() -> dict[str, object]:
    """``LOCAL_CLUSTER_CONFIG``, less the keys the user's Dask config sets otherwise."""
    config = _dask_config()
    return {
        key: value
        for key, value in LOCAL_CLUSTER_CONFIG.items()
        if config.get(key, None) in (_DASK_DEFAULTS[key], value)
    }


def make_dask_executor(
    address: str | None, max_workers: int | None
) -> tuple[DaskExecutor, Callable[[], None]]:
    """The executor behind the ``"dask"`` alias, and the callable that releases it.

    The scheduler address is ``address``, else the ``HYPERNODES_DASK_ADDRESS`` environment
    variable; the closer then only disconnects. Without either, a local cluster of worker
    processes starts, sized to the machine: ``max_workers`` worker threads in all (default:
    one per CPU), in as many processes (at most one per CPU) as share them evenly (8
    threads on 2 CPUs: 2 processes of 4 threads), set up for throughput
    (``LOCAL_CLUSTER_CONFIG``). The closer shuts the cluster down.

    Raises:
        ImportError: Dask distributed is not installed (names the ``pip install`` line).
        OSError: The scheduler at the address cannot be reached (from ``distributed``).
    """
    distributed = _distributed()
    address = address or os.environ.get(ENV_ADDRESS) or None
    cluster = None
    if address is None:
        threads = max_workers or cpu_count()
        # As many processes as CPUs allow while every process gets the same thread count.
        processes = max(d for d in range(1, min(threads, cpu_count()) + 1) if threads % d == 0)
        with _dask_config().set(_local_cluster_config()):
            cluster = distributed.LocalCluster(
                n_workers=processes,
                threads_per_worker=threads // processes,
                processes=True,
                dashboard_address=":0",  # any free port: never clash with another cluster
            )
        try:
            client = distributed.Client(cluster, set_as_default=False)
        except BaseException:
            cluster.close()
            raise
    else:
        client = distributed.Client(address, set_as_default=False)
    executor = DaskExecutor(client)

    def close() -> None:
        executor.shutdown(wait=False, cancel_futures=True)
        client.close()
        if cluster is not None:
            cluster.close()

    return executor, close
