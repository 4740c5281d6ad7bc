"""``Retry``: attempt a failed node again, after an exponential backoff, for matching errors.

The backoff waits on the event loop between attempts: the failed attempt has given back
its worker, its ``max_concurrent`` slot and its limits (those are taken per attempt, in
the layers below this one), so other nodes and map items run meanwhile.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..level import Scope
    from ..plan import Step
    from .chain import Attempt

__all__ = ["Attempted", "Retry", "RetryLayer", "Streamed", "as_retry"]

logger = logging.getLogger("hypernodes")

ErrorFilter = (
    type[BaseException] | tuple[type[BaseException], ...] | Callable[[BaseException], bool]
)


@dataclass(frozen=True, slots=True)
class Retry:
    """How a node is retried: ``@node(retries=Retry(5, backoff=0.5, on=TimeoutError))``.

    Args:
        max_retries: Attempts after the first (``Retry(3)``: up to 4 attempts).
        backoff: Seconds before the first retry (0: retry at once).
        factor: Each further retry waits ``factor`` times longer.
        max_backoff: The longest wait.
        jitter: Scale each wait by a uniform random factor in [0, 1] ("full jitter"), so
            many callers failing together do not retry together.
        on: What to retry: an exception type, a tuple of types, or a predicate
            ``exc -> bool``. Anything else fails at once. A node's ``timeout`` expiring
            is a ``TimeoutError``.

    The wait before retry ``k`` (1-based) is ``min(max_backoff, backoff * factor**(k-1))``.

    Raises:
        ConfigError: A value out of range, or ``on`` is not a type, tuple or callable.
    """

    max_retries: int
    backoff: float = 0.0
    factor: float = 2.0
    max_backoff: float = 60.0
    jitter: bool = True
    on: ErrorFilter = field(default=Exception)

    def __post_init__(self) -> None:
        n = self.max_retries
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ConfigError(f"Retry: max_retries must be an int >= 0, got {n!r}")
        for key in ("backoff", "factor", "max_backoff"):
            value = getattr(self, key)
            if (
                not isinstance(value, int | float)
                or isinstance(value, bool)
                or not math.isfinite(value)
                or value < 0
            ):
                raise ConfigError(f"Retry: {key} must be a number >= 0, got {value!r}")
        if self.factor < 1:
            raise ConfigError(f"Retry: factor must be >= 1, got {self.factor!r}")
        on = self.on
        types = on if isinstance(on, tuple) else (on,)
        if not (
            all(isinstance(t, type) and issubclass(t, BaseException) for t in types)
            or (callable(on) and not isinstance(on, type | tuple))
        ):
            raise ConfigError(
                f"Retry: on= takes an exception type, a tuple of them or a predicate "
                f"exc -> bool, got {on!r}"
            )

    def __repr__(self) -> str:
        shown = [repr(self.max_retries)]
        for f in ("backoff", "factor", "max_backoff", "jitter", "on"):
            value = getattr(self, f)
            if value != getattr(_DEFAULT, f):
                shown.append(f"{f}={getattr(value, '__qualname__', None) or value!r}")
        return f"Retry({', '.join(shown)})"

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1-based), jitter applied."""
        wait = min(self.max_backoff, self.backoff * self.factor ** (retry - 1))
        return wait * random.random() if self.jitter else wait

    def matches(self, error: BaseException) -> bool:
        """Whether ``error`` is worth another attempt."""
        on = self.on
        if isinstance(on, type | tuple):
            return isinstance(error, on)
        return bool(on(error))


_DEFAULT = Retry(0)


def as_retry(retries: object, node: str) -> Retry | None:
    """``@node(retries=...)``: an int ``N`` is shorthand for ``Retry(N)``; 0 is none.

    Raises:
        ValueError: Neither an int >= 0 nor a ``Retry``.
    """
    if isinstance(retries, Retry):
        return retries if retries.max_retries else None
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise ValueError(
            f"retries must be an int >= 0 or a Retry(...), got {retries!r} for node {node!r}"
        )
    return Retry(retries) if retries else None


class Attempted(Exception):
    """The last failure of a retried step, with how many attempts ran (the driver turns it
    into the ``NodeError``; never seen outside the kernel)."""

    def __init__(self, failure: BaseException, attempts: int) -> None:
        super().__init__(failure)
        self.failure = failure
        self.attempts = attempts


class Streamed(Exception):
    """A streaming attempt failed after some of its chunks reached a client (see
    ``stream.py``): never retried, whatever ``on`` says, since the client cannot take back
    what it was sent (the driver raises ``failure`` as the node's error; never seen
    outside the kernel)."""

    def __init__(self, failure: BaseException) -> None:
        super().__init__(failure)
        self.failure = failure


class RetryLayer:
    """Attempts the layers below again after a matching failure, waiting on the loop."""

    __slots__ = ("inner", "policy")

    def __init__(self, inner: Attempt, policy: Retry) -> None:
        self.inner = inner
        self.policy = policy

    async def __call__(self, step: Step, args: tuple[Any, ...], scope: Scope, slot: Any) -> Any:
        import asyncio  # deferred: node definitions import this module, not asyncio

        policy = self.policy
        attempt = 1
        while True:
            try:
                return await self.inner(step, args, scope, slot)
            except Exception as exc:
                if (
                    attempt > policy.max_retries
                    or type(exc) is Streamed  # chunks reached a client: final
                    or not policy.matches(exc)
                    or scope.halt.over
                ):
                    if attempt == 1:
                        raise
                    raise Attempted(exc, attempt) from None
                delay = policy.delay(attempt)
                logger.info(
                    "node %r failed (attempt %d of %d), retrying in %.3g s: %r",
                    step.name,
                    attempt,
                    policy.max_retries + 1,
                    delay,
                    exc,
                )
                d = scope.callbacks
                if d is not None and d.on_node_retry:
                    d.emit(
                        d.on_node_retry,
                        context=scope.context,
                        node=step.node,
                        attempt=attempt,
                        error=exc,
                        delay=delay,
                    )
            # (Also where a cancel of an inline run is delivered: sleep(0) suspends.)
            await asyncio.sleep(delay)
            if scope.halt.over:
                await scope.halt.halted()
            attempt += 1
