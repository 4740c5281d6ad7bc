"""What crosses a process boundary: cloudpickled callables and whole map-item sub-runs.

The functions here are importable top-level functions, so any executor that pickles its
tasks (process pools, loky, Dask, Ray) can ship them. Callables are cloudpickled once and
unpickled once per worker process (cached by digest), so closures, lambdas and functions
defined in ``__main__`` or a notebook work under the spawn start method.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from typing import Any

import cloudpickle

__all__ = ["Shipped", "call_shipped", "run_shipped_item"]

_CACHE_LIMIT = 256
_loaded: dict[bytes, Any] = {}
_loaded_lock = threading.Lock()


class Shipped:
    """A cloudpickled object with a digest, unpickled at most once per worker process."""

    __slots__ = ("blob", "digest")

    def __init__(self, obj: object) -> None:
        self.blob = cloudpickle.dumps(obj)
        self.digest = hashlib.blake2b(self.blob, digest_size=16).digest()

    def load(self) -> Any:
        """The original object (cached in this process by digest)."""
        with _loaded_lock:
            obj = _loaded.get(self.digest)
        if obj is None:
            obj = cloudpickle.loads(self.blob)
            with _loaded_lock:
                if len(_loaded) >= _CACHE_LIMIT:
                    _loaded.pop(next(iter(_loaded)))
                _loaded[self.digest] = obj
        return obj

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_shipped, (self.blob, self.digest))


def _rebuild_shipped(blob: bytes, digest: bytes) -> Shipped:
    shipped = Shipped.__new__(Shipped)
    shipped.blob = blob
    shipped.digest = digest
    return shipped


def call_shipped(fn: Shipped, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Run a shipped sync callable in a worker."""
    func: Callable[..., Any] = fn.load()
    return func(*args, **kwargs)


def run_shipped_item(
    pipeline: Shipped, inputs: dict[str, Any], output_name: tuple[str, ...] | None
) -> dict[str, Any]:
    """Run one map item's whole sub-run of a shipped pipeline in a worker.

    The sub-run is sequential inside the worker (nested maps too), so a worker never
    waits on another worker: the pool's size bounds the work, at any nesting depth.
    """
    from ..bridge import run_sync

    pipe = pipeline.load()
    engine = _worker_engine()
    return run_sync(engine.arun(pipe, inputs, list(output_name) if output_name else None))


_engine: Any = None


def _worker_engine() -> Any:
    global _engine
    if _engine is None:
        from ..engines.hypernodes import HyperNodesEngine

        _engine = HyperNodesEngine()
    return _engine
