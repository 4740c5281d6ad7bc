"""Node and ``@node``: a function with named inputs and outputs, classified once.

Everything the scheduler needs to know about a node (its inputs, defaults, outputs,
whether it is async) is computed here, when the node is built; the scheduler only reads
these attributes. This module must not import the pipeline, the scheduler or asyncio.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, overload

from .layers.limit import Limit, as_limits
from .layers.retry import Retry, as_retry

__all__ = ["Node", "node"]

F = TypeVar("F", bound=Callable[..., Any])

_NO_DEFAULT: Any = inspect.Parameter.empty


def is_async_callable(fn: object) -> bool:
    """Whether calling ``fn`` returns an awaitable coroutine (functions, partials, objects)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(type(fn), "__call__", None)  # noqa: B004 - we want the class attribute
    return call is not None and not inspect.isfunction(fn) and inspect.iscoroutinefunction(call)


def stream_kind(fn: object) -> str | None:
    """``"async"`` for an async generator function, ``"sync"`` for a generator function
    (functions, partials, objects whose ``__call__`` is one), else ``None``."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    for candidate in (fn, getattr(type(fn), "__call__", None)):  # noqa: B004 - the class's
        if inspect.isasyncgenfunction(candidate):
            return "async"
        if inspect.isgeneratorfunction(candidate):
            return "sync"
    return None


class Node:
    """A function in a pipeline: its inputs are its parameter names, its outputs are named.

    Build nodes with the :func:`node` decorator. A ``Node`` is still callable like the
    function it wraps, so it stays easy to unit-test.

    Attributes:
        func: The wrapped callable.
        name: The node's name (unique within a pipeline).
        output_name: The output name, or a tuple of names for a node whose returned tuple
            is unpacked.
        outputs: The output names as a tuple (one element for a single output).
        inputs: Every parameter name, in signature order.
        defaults: Parameter defaults; a parameter with a default is an optional input.
        is_async: Whether the node runs on the event loop: an ``async def`` function, or an
            async generator (decided once, here).
        is_stream: Whether the node is a streaming node: its function is a generator or an
            async generator, and its output is the ``list`` of the chunks it yields (each
            chunk is emitted as it comes: ``on_node_chunk``, ``Pipeline.astream``).
        cache: Whether the node may be cached.
        retries: How many times a failed call is retried (``retry.max_retries``, or 0).
        retry: How it is retried (backoff, which errors), or ``None``.
        limits: The ``Limit`` objects every attempt holds.
        limited: Whether the node (or, for a nested pipeline, a node inside it) holds a
            ``Limit``.
        waits: Whether an attempt may wait on the loop (for a ``Limit`` or a retry's
            backoff), here or in a node inside.
        timeout: Seconds allowed per attempt, or ``None``.
    """

    __slots__ = (
        "__dict__",
        "cache",
        "call_keyword",
        "call_positional",
        "defaults",
        "func",
        "inputs",
        "is_async",
        "limited",
        "limits",
        "name",
        "output_name",
        "outputs",
        "retries",
        "retry",
        "timeout",
        "waits",
    )

    func: Callable[..., Any]
    name: str
    output_name: str | tuple[str, ...]
    outputs: tuple[str, ...]
    inputs: tuple[str, ...]
    defaults: dict[str, Any]
    is_async: bool
    cache: bool
    retries: int
    retry: Retry | None
    limits: tuple[Limit, ...]
    limited: bool
    waits: bool
    timeout: float | None
    # Not a slot: a nested PipelineNode (which sets its own attributes) reads this default.
    is_stream: bool = False
    call_positional: tuple[str, ...]
    call_keyword: tuple[str, ...]

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        output_name: str | tuple[str, ...] | list[str] | None = None,
        name: str | None = None,
        cache: bool = True,
        retries: int | Retry = 0,
        timeout: float | None = None,
        limit: Limit | Sequence[Limit] | None = None,
    ) -> None:
        if isinstance(func, Node):
            func = func.func
        if not callable(func):
            if inspect.iscoroutine(func):
                # node(fetch()) made a coroutine that will never run: close it, so the
                # user sees this error rather than a "never awaited" warning too.
                func.close()
            if isinstance(func, str | tuple | list):
                fix = f"to name the output, write @node(output_name={func!r})"
            else:
                fix = "if you wrote node(f()), pass the function itself: node(f)"
            raise TypeError(f"node() needs a function, got {type(func).__name__} {func!r}; {fix}")
        fname = _callable_name(func)
        self.func = func
        self.name = name if name is not None else fname
        if not self.name.isidentifier() and name is None:
            raise ValueError(f"cannot name a node after {func!r}; pass node(..., name='...')")
        # A lambda (or other unnamed callable) given name= is named, and outputs, by it.
        default_output = fname if fname.isidentifier() else self.name
        self.output_name, self.outputs = _normalize_outputs(output_name, default_output)
        self.cache = bool(cache)
        self.retry = as_retry(retries, self.name)
        self.retries = self.retry.max_retries if self.retry is not None else 0
        self.limits = as_limits(limit, self.name)
        self.limited = bool(self.limits)
        self.waits = self.limited or (self.retry is not None and self.retry.backoff > 0)
        # `not timeout > 0` (rather than `timeout <= 0`) also rejects NaN.
        if timeout is not None and (
            not isinstance(timeout, int | float) or isinstance(timeout, bool) or not timeout > 0
        ):
            raise ValueError(
                f"timeout must be a number of seconds > 0 or None, got {timeout!r} "
                f"for node {self.name!r}"
            )
        self.timeout = None if timeout is None else float(timeout)
        stream = stream_kind(func)
        self.is_stream = stream is not None
        self.is_async = stream == "async" or is_async_callable(func)
        if self.is_stream and len(self.outputs) > 1:
            raise ValueError(
                f"node {self.name!r} is a generator (a streaming node): its output is the list "
                f"of the chunks it yields, one value; give it one output name, not "
                f"{self.output_name!r}"
            )
        self._read_signature(func)

    def _read_signature(self, func: Callable[..., Any]) -> None:
        try:
            sig = inspect.signature(func)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"cannot read the parameters of {func!r}: {exc}") from exc
        positional: list[str] = []
        keyword: list[str] = []
        defaults: dict[str, Any] = {}
        for p in sig.parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                stars = "*" if p.kind is p.VAR_POSITIONAL else "**"
                raise TypeError(
                    f"node {self.name!r} takes {stars}{p.name}; a node's inputs are its "
                    "named parameters, so list them explicitly (or wrap the function in one "
                    "that names them)"
                )
            if p.kind is p.KEYWORD_ONLY:
                keyword.append(p.name)
            else:
                positional.append(p.name)
            if p.default is not _NO_DEFAULT:
                defaults[p.name] = p.default
        self.call_positional = tuple(positional)
        self.call_keyword = tuple(keyword)
        self.inputs = (*positional, *keyword)
        self.defaults = defaults

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the wrapped function directly."""
        return self.func(*args, **kwargs)

    def __repr__(self) -> str:
        kind = ("async " if self.is_async else "") + ("stream " if self.is_stream else "")
        ins = ", ".join(self.inputs)
        options = "".join(
            f" {key}={value!r}"
            for key, value, default in (
                ("cache", self.cache, True),
                ("retries", _shown_retry(self.retry), 0),
                ("timeout", self.timeout, None),
                ("limit", _shown_limits(self.limits), None),
            )
            if value != default
        )
        return f"<{kind}Node {self.name}({ins}) -> {self.output_name!r}{options}>"

    def narrowed(self, outputs: Sequence[str]) -> Node:
        """This node as run when only ``outputs`` of it are needed.

        A function computes all its outputs whichever are needed, so this is the node
        itself; a nested pipeline (``PipelineNode``) narrows to the inner nodes needed.
        """
        return self

    def copy(self, **changes: Any) -> Node:
        """Return a copy of this node with some options changed (``name``, ``cache``, ...)."""
        options: dict[str, Any] = {
            "output_name": self.output_name,
            "name": self.name,
            "cache": self.cache,
            "retries": self.retry or 0,
            "timeout": self.timeout,
            "limit": self.limits or None,
        }
        options.update(changes)
        return Node(self.func, **options)


def _shown_retry(retry: Retry | None) -> int | Retry:
    if retry is None:
        return 0
    return retry.max_retries if retry == Retry(retry.max_retries) else retry


def _shown_limits(limits: tuple[Limit, ...]) -> Limit | tuple[Limit, ...] | None:
    if not limits:
        return None
    return limits[0] if len(limits) == 1 else limits


def _callable_name(func: Callable[..., Any]) -> str:
    while isinstance(func, functools.partial):
        func = func.func
    name = getattr(func, "__name__", None)
    return name if isinstance(name, str) else type(func).__name__


def _normalize_outputs(
    output_name: str | tuple[str, ...] | list[str] | None, default: str
) -> tuple[str | tuple[str, ...], tuple[str, ...]]:
    if output_name is None:
        output_name = default
    if isinstance(output_name, str):
        if not output_name:
            raise ValueError("output_name must be a non-empty string")
        return output_name, (output_name,)
    if isinstance(output_name, tuple | list) and output_name:
        names = tuple(output_name)
        bad = [n for n in names if not isinstance(n, str) or not n]
        if bad:
            raise ValueError(f"output names must be non-empty strings, got {bad!r}")
        if len(set(names)) != len(names):
            raise ValueError(f"output names repeat in {names!r}")
        return names, names
    raise TypeError(f"output_name must be a str or a tuple of str, got {output_name!r}")


@overload
def node(func: F, /) -> Node: ...


@overload
def node(
    func: None = None,
    /,
    *,
    output_name: str | tuple[str, ...] | list[str] | None = None,
    name: str | None = None,
    cache: bool = True,
    retries: int | Retry = 0,
    timeout: float | None = None,
    limit: Limit | Sequence[Limit] | None = None,
) -> Callable[[F], Node]: ...


def node(
    func: Callable[..., Any] | None = None,
    /,
    *,
    output_name: str | tuple[str, ...] | list[str] | None = None,
    name: str | None = None,
    cache: bool = True,
    retries: int | Retry = 0,
    timeout: float | None = None,
    limit: Limit | Sequence[Limit] | None = None,
) -> Node | Callable[[Callable[..., Any]], Node]:
    """Turn a function into a pipeline :class:`Node`.

    Use it bare (``@node``; the output is named after the function) or with options
    (``@node(output_name="y")``, ``@node(output_name=("a", "b"))`` to unpack a returned
    tuple). Parameters with defaults are optional inputs.

    Args:
        func: The function (when used bare or called directly).
        output_name: The output name, or a tuple of names to unpack a returned tuple.
        name: The node's name; defaults to the function's name.
        cache: ``False`` keeps this node out of any cache.
        retries: Retry a failed call: ``N`` times at once, or as a :class:`Retry` says
            (backoff, jitter, which errors).
        timeout: Seconds allowed per attempt.
        limit: A :class:`Limit` (or a list of them) every attempt holds: a concurrency
            cap and/or a start rate shared process-wide by every node carrying it.

    Returns:
        A ``Node``, or a decorator that makes one.

    Raises:
        TypeError: ``func`` is not callable, or takes ``*args`` / ``**kwargs``.
        ValueError: An option is out of range.
        ConfigError: A bad ``Limit`` or ``Retry`` (a ``ValueError`` too).
    """
    options: dict[str, Any] = {
        "output_name": output_name,
        "name": name,
        "cache": cache,
        "retries": retries,
        "timeout": timeout,
        "limit": limit,
    }
    if func is None:
        return lambda f: Node(f, **options)
    return Node(func, **options)
