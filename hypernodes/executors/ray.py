"""Ray: a ``concurrent.futures`` executor over Ray tasks, and the "ray" alias.

Ray ships no ``concurrent.futures.Executor``, so ``RayExecutor`` is one: ``submit`` runs
the call as a Ray task and returns a standard future fed by ``ObjectRef.future()``;
cancelling that future cancels the task; ``shutdown`` behaves like the standard
library's. ``make_ray_executor`` is what the engine calls for ``"ray"``: it connects to a
cluster address or starts a local Ray, and shuts down only a Ray it started. ``ray`` is
imported only here, and only when asked for.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import signal
import threading
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import cloudpickle

from .pools import cpu_count
from .tracking import TrackedExecutor

__all__ = ["ENV_ADDRESS", "RayExecutor", "make_ray_executor"]

ENV_ADDRESS = "HYPERNODES_RAY_ADDRESS"
"""Environment variable read for the cluster address when none is configured."""

_INSTALL = "pip install 'hypernodes[ray]'"


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - the dev venv has the extra
        raise ImportError(
            f"the 'ray' executor needs Ray, which is not installed: {_INSTALL}"
        ) from exc
    return ray


class _Ref:
    """Stands for the ``index``-th ``ObjectRef`` argument inside a pickled call."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Ref, (self.index,))


def _invoke(payload: bytes, /, *refs: Any) -> tuple[bool, bytes, str]:
    """The body of every task, in a Ray worker: ``(ok, pickled result or error, traceback)``.

    The call travels pickled with ``cloudpickle`` (as everything HyperNodes ships does),
    so classes defined in ``__main__`` or a notebook keep one identity on the way out and
    back, and the user's exception comes back as itself. ``ObjectRef`` arguments travel
    as the task's own arguments, which Ray resolves to their values here.
    """
    fn, args, kwargs = cloudpickle.loads(payload)
    if refs:
        args = tuple(refs[a.index] if type(a) is _Ref else a for a in args)
        kwargs = {k: refs[v.index] if type(v) is _Ref else v for k, v in kwargs.items()}
    try:
        with _interruptible():
            result = fn(*args, **kwargs)
    except Exception as exc:
        trace = "".join(traceback.format_exception(exc))
        try:
            return False, cloudpickle.dumps(exc), trace
        except Exception:
            stand_in = RuntimeError(f"{type(exc).__qualname__}: {exc} (could not be pickled)")
            return False, cloudpickle.dumps(stand_in), trace
    return True, cloudpickle.dumps(result), ""


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """Let Ray's cancellation interrupt the call, whatever event loop it runs.

    Ray cancels a running task by interrupting the worker's main thread (SIGINT). An
    ``asyncio.Runner`` started there (HyperNodes runs a shipped item on one) would
    replace the default handler and turn the interrupt into a task cancellation that only
    lands after the current sync node returns; with this handler in place it leaves it
    alone, and the interrupt stops the node where it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, _raise_interrupt)
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _pack(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], ref_type: type
) -> tuple[bytes, list[Any]]:
    refs: list[Any] = []

    def swap(value: Any) -> Any:
        if isinstance(value, ref_type):
            refs.append(value)
            return _Ref(len(refs) - 1)
        return value

    packed_args = tuple(swap(a) for a in args)
    packed_kwargs = {k: swap(v) for k, v in kwargs.items()}
    return cloudpickle.dumps((fn, packed_args, packed_kwargs)), refs


_task_lock = threading.Lock()
_task: Any = None


def _remote_invoke() -> Any:
    # One remote function for the whole process: Ray exports it once per job.
    global _task
    if _task is None:
        with _task_lock:
            if _task is None:
                _task = _ray().remote(_invoke)
    return _task


class RayExecutor(TrackedExecutor):
    """A ``concurrent.futures.Executor`` that runs each call as a Ray task.

    Uses the Ray this process is connected to (``ray.init`` is called with Ray's defaults
    on first use when it is not). Calls and results travel pickled with ``cloudpickle``,
    so closures and classes defined in ``__main__`` or a notebook work, and keep their
    identity on the way back.

    Args:
        **options: Ray task options for every call (``num_cpus=``, ``num_gpus=``,
            ``resources=``, ``max_retries=``, ``runtime_env=``, ...).
    """

    def __init__(self, **options: Any) -> None:
        super().__init__()
        self._ray = _ray()
        self._options = options

    def submit(
        self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[Any]:
        """Run ``fn(*args, **kwargs)`` as a Ray task.

        The future holds the call's result, or the exception it raised (the user's
        exception itself, with the worker's traceback as a note). Cancelling it cancels
        the task, interrupting it if it already runs. ``ObjectRef`` arguments (top-level
        positional or keyword) are resolved to their values in the worker.

        Raises:
            RuntimeError: The executor was shut down.
        """
        task = _remote_invoke()
        if self._options:
            task = task.options(**self._options)
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._lock:
            self._check_open()
            payload, refs = _pack(fn, args, kwargs, self._ray.ObjectRef)
            ref = task.remote(payload, *refs)
            self._pending[future] = ref
        future.add_done_callback(self._finished)
        ref.future().add_done_callback(lambda done: self._settle(future, done))
        return future

    def _settle(
        self, future: concurrent.futures.Future[Any], done: concurrent.futures.Future[Any]
    ) -> None:
        # Runs in a Ray thread when the task is over; our future may be cancelled by then.
        if not future.set_running_or_notify_cancel():
            return
        try:
            ok, blob, trace = done.result()
            outcome = cloudpickle.loads(blob)
        except BaseException as exc:  # Ray's own failures: a lost worker, a cancelled task
            future.set_exception(exc)
            return
        if ok:
            future.set_result(outcome)
        else:
            outcome.add_note(f"Raised in a Ray task:\n{trace.rstrip()}")
            future.set_exception(outcome)

    def _finished(self, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            ref = self._pending.pop(future, None)
        if ref is not None and future.cancelled():
            self._ray.cancel(ref)

    def hypernodes_width(self) -> int:
        """How many calls the cluster runs at once (its CPUs over the CPUs per call)."""
        cpus = float(self._ray.cluster_resources().get("CPU", 1))
        per_task = float(self._options.get("num_cpus", 1) or 1)
        return max(1, int(cpus / per_task))

    def hypernodes_share(self, obj: object) -> Any:
        """Put ``obj`` in Ray's object store once; the returned ``ObjectRef`` stands in for it.

        Passed as a ``submit`` argument, the reference is resolved to ``obj`` in the worker,
        so a map sends its pipeline once instead of with every item. The most recent
        object stays shared (a repeated map reuses it) until another replaces it, or
        shutdown.
        """
        digest = getattr(obj, "digest", None)
        shared = self._shared
        if shared is not None and digest is not None and shared[0] == digest:
            return shared[1]
        ref = self._ray.put(obj)
        self._shared = None if digest is None else (digest, ref)
        return ref

    def __repr__(self) -> str:
        state = "shut down" if self._shutdown else f"{len(self._pending)} pending"
        return f"<RayExecutor {state}>"


_owned_lock = threading.Lock()
_owned = 0  # how many open executors share the Ray this module started


def make_ray_executor(
    address: str | None, max_workers: int | None
) -> tuple[RayExecutor, Callable[[], None]]:
    """The executor behind the ``"ray"`` alias, and the callable that releases it.

    When this process is already connected to Ray, that connection is used and left
    alone. Otherwise Ray is started: connected to ``address`` (else the
    ``HYPERNODES_RAY_ADDRESS`` environment variable), or as a local instance with
    ``max_workers`` CPUs (default: the machine's), without the dashboard. The closer shuts
    down a Ray started here once the last engine using it closes; a remote cluster keeps
    running (only this process disconnects).

    Raises:
        ImportError: Ray is not installed (names the ``pip install`` line).
        ConnectionError: The cluster at the address cannot be reached (from Ray).
    """
    global _owned
    ray = _ray()
    address = address or os.environ.get(ENV_ADDRESS) or None
    with _owned_lock:
        if ray.is_initialized():
            started = _owned > 0
        elif address is not None:
            ray.init(address=address)
            started = True
        else:
            ray.init(num_cpus=max_workers or cpu_count(), include_dashboard=False)
            started = True
        if started:
            _owned += 1
    executor = RayExecutor()
    closed = False

    def close() -> None:
        global _owned
        nonlocal closed
        executor.shutdown(wait=False, cancel_futures=True)
        with _owned_lock:
            if not started or closed:
                return
            closed = True
            _owned -= 1
            if _owned == 0 and ray.is_initialized():
                ray.shutdown()

    return executor, close
