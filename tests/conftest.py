"""Shared fixtures: a clean global configuration per test, and chains of many nodes."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator

import pytest

import hypernodes
from hypernodes import Node, node

ChainFactory = Callable[..., list[Node]]


@pytest.fixture(autouse=True)
def _clean_default_config() -> Iterator[None]:
    """Every test starts and ends with the library defaults (no global engine/cache/callbacks)."""
    hypernodes.reset_default_config()
    yield
    hypernodes.reset_default_config()


def _chain_link(i: int, source: str, output: str) -> Node:
    def link(value: int) -> int:
        return value + 1

    # One parameter named after the previous output, without exec: nodes read their
    # inputs from the signature, and the scheduler passes them positionally.
    link.__name__ = link.__qualname__ = f"step{i}"
    link.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(source, inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    )
    return node(link, output_name=output)


def build_chain(n: int, *, root: str = "x", prefix: str = "v") -> list[Node]:
    """``n`` nodes ``step0 .. step{n-1}``; ``step{i}`` reads ``v{i-1}`` (``root`` for the
    first) and returns it plus one as ``v{i}``. Running it on ``{root: 0}`` gives
    ``{f"{prefix}{n-1}": n}``."""
    return [
        _chain_link(i, root if i == 0 else f"{prefix}{i - 1}", f"{prefix}{i}") for i in range(n)
    ]


@pytest.fixture
def make_chain() -> ChainFactory:
    """``make_chain(n, root="x", prefix="v")``: see :func:`build_chain`."""
    return build_chain


# -- execution probes (appended by the execution-suite helper) -------------------------
# Generic tools to prove concurrency with counters, events and recorded timestamps.


class ConcurrencyProbe:
    """A lock-protected counter of bodies running right now, with the peak it reached.

    ``with probe.body():`` (threads) or ``async with probe.abody():`` (one event loop)
    counts a body in and out. With ``target``, a body waits (up to ``timeout`` seconds)
    until ``target`` bodies were in at once, so reaching the target is proven by events,
    not by sleeping; ``probe.reached`` tells whether it happened.
    """

    def __init__(self, target: int | None = None, timeout: float = 10.0) -> None:
        import threading

        self.target = target
        self.timeout = timeout
        self.current = 0
        self.peak = 0
        self.entered = 0
        self._lock = threading.Lock()
        self._reached = threading.Event()
        self._async_reached: object = None

    @property
    def reached(self) -> bool:
        """Whether ``target`` bodies were in at the same time."""
        return self._reached.is_set()

    def _enter(self) -> None:
        with self._lock:
            self.current += 1
            self.entered += 1
            self.peak = max(self.peak, self.current)
            if self.target is not None and self.current >= self.target:
                self._reached.set()
                if self._async_reached is not None:
                    self._async_reached.set()  # type: ignore[attr-defined]

    def _exit(self) -> None:
        with self._lock:
            self.current -= 1

    def body(self) -> object:
        """Context manager for a sync body (any thread)."""
        import contextlib

        @contextlib.contextmanager
        def counted() -> Iterator[None]:
            self._enter()
            try:
                if self.target is not None:
                    self._reached.wait(self.timeout)
                yield
            finally:
                self._exit()

        return counted()

    def abody(self) -> object:
        """Async context manager for a body on one event loop."""
        import asyncio
        import contextlib

        @contextlib.asynccontextmanager
        async def counted() -> object:
            if self._async_reached is None:
                self._async_reached = asyncio.Event()
                if self._reached.is_set():
                    self._async_reached.set()  # type: ignore[attr-defined]
            self._enter()
            try:
                if self.target is not None:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(
                            self._async_reached.wait(),  # type: ignore[attr-defined]
                            self.timeout,
                        )
                yield
            finally:
                self._exit()

        return counted()


@pytest.fixture
def probe() -> Callable[..., ConcurrencyProbe]:
    """``probe(target=None, timeout=10.0)``: a new :class:`ConcurrencyProbe`."""
    return ConcurrencyProbe


class Heartbeat:
    """Ticks on the running loop every ``interval`` s and records the gaps between ticks.

    A gap much longer than ``interval`` means something blocked the loop. Use as
    ``async with Heartbeat() as hb: ...`` then read ``hb.max_gap`` and ``hb.ticks``.
    """

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.gaps: list[float] = []
        self._task: object = None
        self._stop = False

    async def _beat(self) -> None:
        import asyncio
        import time

        last = time.perf_counter()
        while not self._stop:
            await asyncio.sleep(self.interval)
            now = time.perf_counter()
            self.gaps.append(now - last)
            last = now

    async def __aenter__(self) -> Heartbeat:
        import asyncio

        self._task = asyncio.create_task(self._beat())
        await asyncio.sleep(self.interval * 2)  # let it start ticking
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop = True
        await self._task  # type: ignore[misc]

    @property
    def ticks(self) -> int:
        """How many ticks happened."""
        return len(self.gaps)

    @property
    def max_gap(self) -> float:
        """The longest time between two ticks, in seconds."""
        return max(self.gaps, default=0.0)


@pytest.fixture
def heartbeat() -> Callable[..., Heartbeat]:
    """``heartbeat(interval=0.005)``: a new :class:`Heartbeat` (an async context manager)."""
    return Heartbeat


@pytest.fixture
def run_python() -> Callable[..., object]:
    """``run_python(code, timeout=60)``: run ``code`` in a fresh interpreter (this venv's
    Python, the repository importable) and return the ``CompletedProcess`` (text output).
    Use it for behaviour that must not leak into the test process (patches, hangs)."""
    import os
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    root = str(Path(__file__).resolve().parent.parent)

    def run(code: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        return subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=root,
        )

    return run
