"""What the Dask and Ray adapters share: their bookkeeping, and the error for a lost call.

Calls not yet finished are tracked (with whatever handle the cluster gave them), so that
``shutdown(wait, cancel_futures)`` behaves like the standard library's executors. A call
the cluster drops fails with ``TaskLost``, never with a bare cancellation.
"""

from __future__ import annotations

import concurrent.futures
import threading
from typing import Any

__all__ = ["TaskLost", "TrackedExecutor"]


class TaskLost(RuntimeError):
    """A cluster dropped a call that nothing in this process cancelled.

    Raised instead of leaving the call's future cancelled: a bare ``CancelledError`` is no
    ``Exception`` (``except Exception`` misses it), and asyncio takes it for a
    cancellation of the task awaiting the call. The cluster's own error, when it gave
    one, is the ``__cause__``.

    Attributes:
        cluster: ``"Dask"``, or the type name of the executor that cancelled the call.
        key: The cluster's name for the task (``""`` when unknown).
        reason: The cluster's reason, as it gave it (``"unknown"`` when it gave none).
        explanation: The reason in words.
    """

    def __init__(self, cluster: str, key: str, reason: str, explanation: str = "") -> None:
        task = f"task {key!r}" if key else "a call"
        super().__init__(
            f"{cluster} dropped {task} although nothing in this process cancelled it: "
            f"{explanation or reason}"
        )
        self.cluster = cluster
        self.key = key
        self.reason = reason
        self.explanation = explanation

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.cluster, self.key, self.reason, self.explanation))


class TrackedExecutor(concurrent.futures.Executor):
    """A ``concurrent.futures.Executor`` that remembers its unfinished calls."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[concurrent.futures.Future[Any], Any] = {}
        self._shutdown = False
        # The last object shared with the workers, by digest (None: never reused), and the
        # cluster's handle for it: a map repeated with the same pipeline and shared inputs
        # reuses what is already there.
        self._shared: tuple[bytes | None, Any] | None = None

    def _check_open(self) -> None:
        """Raise if the executor was shut down (call with the lock held).

        Raises:
            RuntimeError: The executor was shut down.
        """
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting work, like the standard library's executors.

        Args:
            wait: Block until the submitted calls are done (or cancelled).
            cancel_futures: Cancel the calls that have not finished.
        """
        with self._lock:
            self._shutdown = True
            pending = list(self._pending)
            self._shared = None
        if cancel_futures:
            for future in pending:
                future.cancel()
        if wait and pending:
            concurrent.futures.wait(pending)
