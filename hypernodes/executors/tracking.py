"""TrackedExecutor: the bookkeeping the Dask and Ray adapters share.

Calls not yet finished are tracked (with whatever handle the cluster gave them), so that
``shutdown(wait, cancel_futures)`` behaves like the standard library's executors.
"""

from __future__ import annotations

import concurrent.futures
import threading
from typing import Any

__all__ = ["TrackedExecutor"]


class TrackedExecutor(concurrent.futures.Executor):
    """A ``concurrent.futures.Executor`` that remembers its unfinished calls."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[concurrent.futures.Future[Any], Any] = {}
        self._shutdown = False
        # The last object shared with the workers, by digest: a map repeated with the same
        # pipeline and shared inputs reuses what is already there.
        self._shared: tuple[bytes, Any] | None = None

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
