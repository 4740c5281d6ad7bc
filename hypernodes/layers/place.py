"""Placement: where one attempt of a node's body runs (the innermost layer).

An async body is awaited on the loop. A sync body runs where its level says, decided
once when the level is made (``Scope.inline`` and ``Scope.body``): inline on a loop
HyperNodes owns, else handed to the level's lane (a worker thread, or shipped, pickled,
to a process pool or cluster). Nothing else in the kernel decides where a body runs.

**Cheap sync bodies run inline** (``HyperNodesEngine(inline_below=...)``, seconds): a
sync node bound for a worker *thread* is timed there (its step's ``Gauge``); once its runs
under the bound outnumber twice those over it by ``PROMOTE`` (8) it runs inline on the
loop instead, timed too. An inline run that computes undisturbed for over 50 times the
bound sends the node back to threads for good at once; a run that blocks (I/O, a sleep)
is a strike, and so are runs computing over the bound two or more in a row (the first of
them counts too, once the second confirms it), and the third strike in a short while
does the same (strikes fade, one per 32 runs under the bound). A lone run over the bound
between runs under it is no strike: a trivial body sometimes takes 20-60 µs that are not
its own (an interrupt or a hypervisor's pause, counted as the thread's CPU time), and in
a long-running service those would add up to sending every cheap node back for good. A
run only preempted by the OS is no strike unless it computed for over 50 times the
bound. So the loop is held past the bound by at most three runs of a node, in a row. A
body that starts a HyperNodes run itself (a nested ``pipeline.run()``) is never inlined.
Process pools and clusters never inline: a body shipped there was sent there on purpose.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

try:
    import resource
except ImportError:  # (Windows)
    resource = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from ..level import Scope
    from ..plan import Step

__all__ = ["Gauge", "offload", "place", "starts_run"]

logger = logging.getLogger("hypernodes")

PROMOTE = 8
"""Runs under the bound, in a thread, before a node runs inline (less two per run over
it)."""
_STRIKES = 3
_FADE = 32
_FAR = 50.0

_THREAD: int | None = getattr(resource, "RUSAGE_THREAD", None) if resource else None


class _Sampling(threading.local):
    gauge: Gauge | None = None  # the Gauge timing the body this thread runs
    # (A class default: reading it in a thread that never set it raises nothing inside;
    # ``getattr(local, name, None)`` did, ~1 us a run started.)


_sampling = _Sampling()


def place(step: Step, args: tuple[Any, ...], scope: Scope, slot: Any = None) -> Awaitable[Any]:
    """The awaitable of one attempt of ``step`` on ``args`` at ``scope``'s level."""
    if step.is_async:
        return step.fn(*args)  # type: ignore[no-any-return]
    if scope.inline:
        return _ready(step.fn(*args))
    bound = scope.inline_below
    if bound and scope.body.kind == "threads":
        gauge = step.gauge
        if gauge.inline and bound >= gauge.bound:
            if not gauge.shown:
                gauge.show(scope.engine)
            return _timed_inline(gauge, step.fn, args)
        if not gauge.done:
            return scope.offload(gauge.sample, (bound, step.fn, *args), None, step.name)
    return offload(step, args, scope)


def offload(step: Step, args: tuple[Any, ...], scope: Scope) -> Awaitable[Any]:
    """Run the sync body in the level's lane (never inline)."""
    return scope.offload(step.fn, args, None, step.name)


async def _ready(value: Any) -> Any:
    return value


async def _timed_inline(gauge: Gauge, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    before = _usage()  # (its system call outside the timed run)
    start = time.perf_counter()
    try:
        return fn(*args)
    finally:
        took = time.perf_counter() - start
        if took > gauge.bound:
            gauge.over(took, *_spent(before, _usage()))
        elif gauge.strikes or gauge.slow:
            gauge.passed()


_Usage = tuple[float, int, int]


def _usage() -> _Usage:
    """This thread's CPU seconds and its voluntary and involuntary context switches
    (where the OS tells them apart)."""
    if _THREAD is None:
        return time.thread_time(), 0, 0  # (switches unknown: see ``_spent``)
    u = resource.getrusage(_THREAD)
    return u.ru_utime + u.ru_stime, u.ru_nvcsw, u.ru_nivcsw


def _spent(before: _Usage, after: _Usage) -> tuple[float, bool, bool]:
    """CPU seconds spent between two readings, whether the thread blocked (a voluntary
    switch: I/O, a sleep, a lock, the GIL), whether the OS preempted it."""
    blocked = _THREAD is None or after[1] > before[1]  # (unknown: as if it blocked)
    return after[0] - before[0], blocked, after[2] > before[2]


def starts_run() -> None:
    """Called when a HyperNodes run starts: a body being timed in this thread that starts
    runs of its own is never inlined (on the loop, its nested run would wait for it)."""
    gauge = _sampling.gauge
    if gauge is not None:
        gauge.inline, gauge.done = False, True


class Gauge:
    """How long one sync node's body takes where it runs, and whether it runs inline.

    Attributes:
        name: The node's name.
        inline: The body runs inline on the loop (promoted).
        done: The body runs in threads for good (no more timing).
        bound: The bound it was promoted under (seconds).
        longest: The longest of the runs that promoted it (seconds).
        shown: Its promotion was logged and shown on the engine.
    """

    __slots__ = (
        "bound",
        "done",
        "inline",
        "longest",
        "name",
        "passes",
        "shown",
        "slow",
        "streak",
        "strikes",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.inline = False
        self.done = False
        self.shown = False
        self.bound = 0.0
        self.longest = 0.0
        self.streak = 0
        self.strikes = 0
        self.passes = 0
        self.slow = 0  # inline runs in a row computing over the bound

    def sample(self, bound: float, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` (in a worker thread), timed; promote once runs under ``bound``
        outnumber twice those over it by ``PROMOTE`` (a body over it one run in three
        never is). (Updates race benignly: a lost count delays a promotion.)"""
        _sampling.gauge = self
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            took = time.perf_counter() - start
            _sampling.gauge = None
            if took > bound:  # (in a busy pool, a cheap body may wait for the GIL)
                self.streak = max(0, self.streak - 2)
            elif not self.done:
                self.longest = max(self.longest, took)
                self.streak += 1
                if self.streak >= PROMOTE:
                    self.bound, self.inline = bound, True

    def over(self, took: float, cpu: float, blocked: bool, preempted: bool) -> None:
        """An inline run took ``took`` seconds, over the bound (``cpu`` of them computing,
        coarsely; whether it ``blocked`` or was ``preempted`` by the OS on the way).

        Computing undisturbed for over 50 times the bound ends inlining at once. Blocking
        (I/O, a sleep, a lock, the GIL) is a strike: three close together end it.
        Computing over the bound is a strike only on the second such run in a row, and
        then the first counts too (``slow``): a lone run over it, between runs under it,
        is the machine's as often as the body's. Preempted by the OS, it is a strike
        only when it computed for over 50 times the bound (the OS's count of CPU time is
        coarse; a body that heavy is preempted every time on a busy machine)."""
        far = _FAR * self.bound
        if preempted and not blocked and cpu <= far:
            return  # the OS's doing, not the body's
        if not blocked and took <= far:  # computing over the bound, not far over
            self.slow += 1
            if self.slow == 1:
                return  # a lone one is the machine's as often as the body's
            if self.slow == 2:
                self.strikes += 1  # the run before was over too: it counts now
        self.strikes += 1
        self.passes = 0
        if (not blocked and not preempted and took > far) or self.strikes >= _STRIKES:
            self.inline, self.done = False, True
            logger.info(
                "node %r, inlined as cheap, took %.3g ms (bound %.3g ms): it runs in worker "
                "threads from now on",
                self.name,
                took * 1e3,
                self.bound * 1e3,
            )

    def passed(self) -> None:
        """An inline run under the bound: strikes fade, one per ``_FADE`` such runs."""
        self.slow = 0
        if not self.strikes:
            return
        self.passes += 1
        if self.passes >= _FADE:
            self.strikes, self.passes = self.strikes - 1, 0

    def show(self, engine: Any) -> None:
        """Log the promotion and list the node in ``engine.inlined``."""
        self.shown = True
        shown = getattr(engine, "_inlined", None)
        if shown is not None:
            shown[self.name] = self
        logger.debug(
            "node %r runs inline: measured under %.3g ms (longest %.3g ms)",
            self.name,
            self.bound * 1e3,
            self.longest * 1e3,
        )
