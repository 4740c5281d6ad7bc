"""Resources: heavy objects (a model, a client, a pool) built once per scope, handed to nodes.

A ``@resource`` joins a pipeline like a node: its output is its name, its parameters are
pipeline inputs. What a run carries under that name is a :class:`Held`, a small handle
(the resource and its input values) and never the object itself: a node taking the
resource gets the object, built from the handle where the node's body runs, at its first
use in that scope, and reused (see :class:`Registry`, in :mod:`hypernodes.resource_scopes`
with the other per-scope machinery). So:

- a body shipped to another process (``"parallel"``, Dask, Ray, a whole map item) carries
  the handle, and that process builds its own object, once: a resource is never pickled;
- cache keys version the handle (the resource's code identity and its inputs), never the
  object, so nodes taking a resource stay cacheable;
- scopes: ``"run"`` (one top-level run or map), ``"engine"`` (until the engine closes),
  ``"process"`` (until the process exits). In a worker process every scope is the
  worker's process: a handle that crossed a process boundary, or a whole item a worker
  runs, builds its object once per worker, torn down when the worker exits.

This module must not import the plan, the scheduler or the engines.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, TypeVar, overload

from .node import Node
from .resource_scopes import (
    Registry,
    RunResources,
    for_workers,
    on_keeper,
    process_registry,
    to_thread,
)

__all__ = [
    "Held",
    "Registry",
    "Resource",
    "RunResources",
    "Scope",
    "for_workers",
    "process_registry",
    "resource",
]

Scope = Literal["run", "engine", "process"]
SCOPES: tuple[str, ...] = ("run", "engine", "process")

F = TypeVar("F", bound=Callable[..., Any])

# Every resource this process knows, by token (see ``_arrived``).
_by_token: weakref.WeakValueDictionary[str, Resource] = weakref.WeakValueDictionary()
_arrivals: dict[str, Resource] = {}  # those that came as handles from another process

_FUNCTION, _GENERATOR, _ASYNC_FUNCTION, _ASYNC_GENERATOR = range(4)
_KINDS = ("function", "generator", "async function", "async generator")


def _factory_kind(func: Callable[..., Any]) -> int:
    target: Any = func
    while isinstance(target, functools.partial):
        target = target.func
    if inspect.isasyncgenfunction(target):
        return _ASYNC_GENERATOR
    if inspect.isgeneratorfunction(target):
        return _GENERATOR
    if inspect.iscoroutinefunction(target):
        return _ASYNC_FUNCTION
    call = getattr(type(target), "__call__", None)  # noqa: B004 - the class attribute
    if not inspect.isfunction(target) and call is not None:
        return _factory_kind(call)
    return _FUNCTION


class Resource(Node):
    """A resource in a pipeline: a node whose output is the object its factory builds.

    Build it with :func:`resource`. It is still callable like its factory.

    Attributes:
        scope: ``"run"``, ``"engine"`` or ``"process"``: how long one built object lives.
        kind: The factory's kind: ``"function"``, ``"generator"``, ``"async function"``
            or ``"async generator"`` (a function may return a context manager, which is
            entered).
        token: Identifies this resource across processes (pickled along with it): the
            objects built in one scope are kept per token and input values.
    """

    def __init__(
        self, func: Callable[..., Any], *, scope: Scope = "run", name: str | None = None
    ) -> None:
        if isinstance(func, Resource):
            func = func.func
        if scope not in SCOPES:
            raise ValueError(
                f"resource scope must be one of {', '.join(map(repr, SCOPES))}, got {scope!r}"
            )
        super().__init__(func, output_name=name, name=name, cache=False)
        self.scope: Scope = scope
        self._kind = _factory_kind(func)
        self.kind = _KINDS[self._kind]
        self.token = os.urandom(16).hex()
        _by_token[self.token] = self
        # Run on the loop by the scheduler (making a handle), never offloaded anywhere; a
        # generator factory yields one object, it is not a streaming node.
        self.is_async = True
        self.is_stream = False

    def __repr__(self) -> str:
        return (
            f"<Resource {self.name}({', '.join(self.inputs)}) scope={self.scope!r} "
            f"kind={self.kind!r}>"
        )

    def copy(self, **changes: Any) -> Resource:
        """A copy with ``name`` or ``scope`` changed (the same token: the same objects).

        Raises:
            TypeError: An option resources do not have.
        """
        bad = set(changes) - {"name", "scope"}
        if bad:
            raise TypeError(f"a resource has no option {', '.join(sorted(bad))}")
        clone = Resource(
            self.func, scope=changes.get("scope", self.scope), name=changes.get("name", self.name)
        )
        clone.token = self.token
        return clone

    def blob(self) -> bytes:
        """This resource cloudpickled (once per process), for its handles to travel."""
        blob: bytes | None = self.__dict__.get("_blob")
        if blob is None:
            import cloudpickle  # deferred: only handles crossing processes need it

            blob = self.__dict__["_blob"] = cloudpickle.dumps(self)
        return blob

    def __getstate__(self) -> Any:
        attributes = {k: v for k, v in self.__dict__.items() if k != "_blob"}
        slots = {
            k: getattr(self, k) for k in Node.__slots__ if k != "__dict__" and hasattr(self, k)
        }
        return attributes, slots

    def __setstate__(self, state: Any) -> None:
        # (pickle's default state of an object with slots and a __dict__: a pair of dicts)
        attributes, slots = state if isinstance(state, tuple) else (state, None)
        self.__dict__.update(attributes or {})
        for key, value in (slots or {}).items():
            object.__setattr__(self, key, value)
        _by_token.setdefault(self.token, self)

    # -- building ------------------------------------------------------------------------

    def open(self, inputs: tuple[Any, ...]) -> tuple[Any, Callable[[], Any] | None, bool]:
        """Build the object in this thread: ``(object, teardown, teardown is async)``.

        Raises:
            Exception: Whatever the factory raises.
        """
        kind = self._kind
        if kind == _GENERATOR:
            gen = self.func(*inputs)
            value = _first(self.name, gen.__next__)
            return value, functools.partial(_finish, self.name, gen), False
        if kind != _FUNCTION:
            opened: tuple[Any, Callable[[], Any] | None, bool] = on_keeper(self.aopen(inputs))
            return opened
        made = self.func(*inputs)
        if hasattr(made, "__enter__") and hasattr(made, "__exit__"):
            return made.__enter__(), functools.partial(made.__exit__, None, None, None), False
        if hasattr(made, "__aenter__") and hasattr(made, "__aexit__"):
            entered: tuple[Any, Callable[[], Any], bool] = on_keeper(_entered(made))
            return entered
        return made, None, False

    async def aopen(self, inputs: tuple[Any, ...]) -> tuple[Any, Callable[[], Any] | None, bool]:
        """Build the object on the running loop (a sync factory runs in a worker thread).

        Raises:
            Exception: Whatever the factory raises.
        """
        kind = self._kind
        if kind == _ASYNC_GENERATOR:
            agen = self.func(*inputs)
            try:
                value = await agen.__anext__()
            except StopAsyncIteration:
                raise RuntimeError(f"resource {self.name!r} did not yield") from None
            return value, functools.partial(_afinish, self.name, agen), True
        if kind == _ASYNC_FUNCTION:
            made = await self.func(*inputs)
            if hasattr(made, "__aenter__") and hasattr(made, "__aexit__"):
                return await _entered(made)
            if hasattr(made, "__enter__") and hasattr(made, "__exit__"):
                return made.__enter__(), functools.partial(made.__exit__, None, None, None), False
            return made, None, False
        made_sync = await to_thread(self.open, inputs)
        return made_sync  # type: ignore[no-any-return]


def _first(name: str, step: Callable[[], Any]) -> Any:
    try:
        return step()
    except StopIteration:
        raise RuntimeError(f"resource {name!r} did not yield") from None


def _finish(name: str, gen: Any) -> None:
    try:
        next(gen)
    except StopIteration:
        return
    gen.close()
    raise RuntimeError(f"resource {name!r} yielded twice; a resource yields its object once")


async def _afinish(name: str, agen: Any) -> None:
    try:
        await agen.__anext__()
    except StopAsyncIteration:
        return
    await agen.aclose()
    raise RuntimeError(f"resource {name!r} yielded twice; a resource yields its object once")


async def _entered(made: Any) -> tuple[Any, Callable[[], Any], bool]:
    value = await made.__aenter__()
    return value, functools.partial(made.__aexit__, None, None, None), True


@overload
def resource(func: F, /) -> Resource: ...


@overload
def resource(
    func: None = None, /, *, scope: Scope = "run", name: str | None = None
) -> Callable[[F], Resource]: ...


def resource(
    func: Callable[..., Any] | None = None, /, *, scope: Scope = "run", name: str | None = None
) -> Resource | Callable[[Callable[..., Any]], Resource]:
    """Turn a factory into a pipeline :class:`Resource`.

    The factory is a function, a generator (the code after its ``yield`` is the teardown),
    an async function or async generator, or a function returning a context manager (sync
    or async: nodes get the entered value, and leaving it is the teardown). Its parameters
    are pipeline inputs; nodes receive the object through a parameter of the resource's
    name. It is built lazily, the first time a node needs it in its scope, once however
    many nodes ask at once, and torn down when the scope ends:

    - ``"run"`` (default): at the end of the top-level run or map (shared by its items and
      nested pipelines), whether it succeeded or not;
    - ``"engine"``: when the engine closes (``close()``, ``aclose()``, ``async with``);
    - ``"process"``: when the process exits. Each worker process of ``"parallel"``, Dask
      or Ray builds its own; the object is never pickled.

    In a worker process every scope lasts as long as the worker: a node body (or a whole
    map item) shipped to a worker builds the resource there, once per worker process, and
    the worker tears it down when it exits.

    Args:
        func: The factory (when used bare or called directly).
        scope: ``"run"``, ``"engine"`` or ``"process"``.
        name: The resource's name (default: the factory's name): the parameter name
            nodes receive it through.

    Returns:
        A ``Resource``, or a decorator that makes one.

    Raises:
        TypeError: ``func`` is not callable, or takes ``*args`` / ``**kwargs``.
        ValueError: ``scope`` is not one of the three.
    """
    if func is None:
        return lambda f: Resource(f, scope=scope, name=name)
    return Resource(func, scope=scope, name=name)


# -- handles ------------------------------------------------------------------------------


class Held:
    """What a run carries under a resource's name: the resource, its inputs and the registry
    of its scope in this process. Nodes never see it: they get the built object.

    Pickled (to another process), it leaves the registry behind: there it resolves in
    that process's registry, building the object once per process.
    """

    __slots__ = ("inputs", "key", "registry", "resource")

    def __init__(
        self, resource: Resource, inputs: tuple[Any, ...], registry: Registry | None
    ) -> None:
        self.resource = resource
        self.inputs = inputs
        self.registry = registry
        self.key = (resource.token, _inputs_key(inputs))
        if not _versioned:
            _version_handles()

    def get(self) -> Any:
        """The object, built in this thread if nobody has built it yet in its scope.

        Raises:
            ResourceError: The resource failed to build (its error is the ``__cause__``).
        """
        return (self.registry or process_registry()).get(self)

    async def aget(self) -> Any:
        """The object, built on this loop (a sync factory in a thread) if needed.

        Raises:
            ResourceError: The resource failed to build (its error is the ``__cause__``).
        """
        return await (self.registry or process_registry()).aget(self)

    def __reduce__(self) -> tuple[Any, ...]:
        # The resource travels as its token and its pickle, unpickled only where its token
        # is unknown: a handle coming back from a worker never unpickles a copy here (whose
        # classes cloudpickle would write over the originals).
        resource = self.resource
        return (_arrived, (resource.token, resource.blob(), self.inputs))

    def __repr__(self) -> str:
        where = self.registry.name if self.registry is not None else "process"
        return f"<Held resource {self.resource.name!r} ({where})>"


def _arrived(token: str, blob: bytes, inputs: tuple[Any, ...]) -> Held:
    """A handle unpickled in this process, with the copy of its resource this process
    knows (unpickled from ``blob`` the first time only)."""
    resource = _by_token.get(token)
    if resource is None:
        import cloudpickle  # deferred: only handles crossing processes need it

        resource = cloudpickle.loads(blob)
        assert isinstance(resource, Resource)
        _by_token[token] = _arrivals[token] = resource  # (kept: the next handle needs it)
    return Held(resource, inputs, None)


def _inputs_key(inputs: tuple[Any, ...]) -> Any:
    """A dict key for a resource's input values: the values, else their fingerprint."""
    try:
        hash(inputs)
    except TypeError:
        from .cache.fingerprint import fingerprint  # deferred: hashing libraries

        try:
            return ("fingerprint", fingerprint(inputs))
        except Exception:  # neither hashable nor fingerprintable: this object only
            return ("id", id(inputs))
    return inputs


_versioned = False


def _version_handles() -> None:
    """Teach cache keys the version of a handle: the resource's name, code identity and
    input values, never the object (registered the first time a handle is made)."""
    global _versioned
    from .cache.fingerprint import register_fingerprint  # deferred: hashing libraries

    @register_fingerprint(Held)
    def _version(held: Held) -> object:
        func = held.resource.func
        with contextlib.suppress(ValueError):
            func = inspect.unwrap(func)
        return (held.resource.name, func, held.inputs)

    _versioned = True


def resolve(args: tuple[Any, ...], positions: tuple[int, ...]) -> tuple[Any, ...]:
    """``args`` with the handles at ``positions`` replaced by their objects (this thread).

    Raises:
        ResourceError: A resource failed to build.
    """
    if not any(type(args[k]) is Held for k in positions):
        return args
    out = list(args)
    for k in positions:
        if type(out[k]) is Held:
            out[k] = out[k].get()
    return tuple(out)


async def aresolve(args: tuple[Any, ...], positions: tuple[int, ...]) -> tuple[Any, ...]:
    """``resolve`` on the running loop.

    Raises:
        ResourceError: A resource failed to build.
    """
    if not any(type(args[k]) is Held for k in positions):
        return args
    out = list(args)
    for k in positions:
        if type(out[k]) is Held:
            out[k] = await out[k].aget()
    return tuple(out)


class Resolving:
    """A sync node body that takes resources: resolves their handles where it runs (in a
    worker thread, or in the process it was shipped to), then calls the body."""

    __slots__ = ("__wrapped__", "fn", "positions")

    def __init__(self, fn: Callable[..., Any], positions: tuple[int, ...]) -> None:
        self.fn = fn
        self.positions = positions
        self.__wrapped__ = fn

    def __call__(self, *args: Any) -> Any:
        return self.fn(*resolve(args, self.positions))

    @property
    def __name__(self) -> str:  # (labels, tracebacks)
        return getattr(self.fn, "__name__", "node")

    def __reduce__(self) -> tuple[Any, ...]:
        return (Resolving, (self.fn, self.positions))


def async_resolving(fn: Callable[..., Any], positions: tuple[int, ...]) -> Callable[..., Any]:
    """An async node body that takes resources: resolves their handles on the loop."""

    async def call(*args: Any) -> Any:
        return await fn(*(await aresolve(args, positions)))

    call.__name__ = getattr(fn, "__name__", "node")
    call.__wrapped__ = fn  # type: ignore[attr-defined]
    return call


# -- per run --------------------------------------------------------------------------------


def make_held(resource: Resource, args: tuple[Any, ...], resources: RunResources | None) -> Held:
    """The handle a run carries for ``resource`` built from ``args``."""
    if resources is None:
        return Held(resource, args, process_registry() if resource.scope == "process" else None)
    return Held(resource, args, resources.registry(resource.scope))


def positions(names: Iterable[str], held: frozenset[str] | set[str]) -> tuple[int, ...]:
    """Where, among a node's inputs, the names carrying resource handles sit."""
    return tuple(k for k, name in enumerate(names) if name in held)


# -- in plans ---------------------------------------------------------------------------------


async def _make_handle(step: Any, args: tuple[Any, ...], scope: Any, slot: Any) -> Held:
    """A resource step's attempt: the handle of its object in the run's registries (cheap:
    nothing is built until a node needs it, where that node runs)."""
    return make_held(step.node, args, scope.resources)


def wire_resources(
    steps: Iterable[Any],
    nodes: Iterable[Node],
    producer: dict[str, int],
    held: frozenset[str] = frozenset(),
) -> tuple[Any, ...]:
    """Wire a plan's steps for resources, once, when it is compiled.

    A resource's step makes a handle (on the loop: it never runs a body). A step reading
    names that carry handles (the outputs of resources in ``nodes``, or ``held``: inputs
    an enclosing pipeline fills with handles) gets a body that resolves them where it
    runs. Neither is a plain sync step any more (their errors go through ``node_failed``,
    which lets a ``ResourceError`` through). Returns the resources' steps.
    """
    names = set(held)
    for node in nodes:
        if isinstance(node, Resource):
            names.update(node.outputs)
    if not names:
        return ()
    made = []
    for step in steps:
        node = step.node
        if isinstance(node, Resource):
            step.attempt = _make_handle
            step.once = step.simple = False
            made.append(step)
            continue
        if step.nested is not None:
            continue  # its inner run resolves them (``held`` of the inner plan)
        where = positions(node.inputs, names)
        if not where:
            continue
        if getattr(node, "is_stream", False) and step.is_async:
            step.fn = _async_gen_resolving(step.fn, where)
        elif step.is_async:
            step.fn = async_resolving(step.fn, where)
        else:
            step.fn = Resolving(step.fn, where)
        step.call = _calling(step.fn, step.gather)
        step.simple = False
    return tuple(made)


def _calling(fn: Callable[..., Any], gather: Callable[[Any], tuple[Any, ...]]) -> Any:
    return lambda values: fn(*gather(values))


def _async_gen_resolving(fn: Callable[..., Any], where: tuple[int, ...]) -> Callable[..., Any]:
    async def stream(*args: Any) -> Any:
        async for chunk in fn(*(await aresolve(args, where))):
            yield chunk

    stream.__name__ = getattr(fn, "__name__", "node")
    stream.__wrapped__ = fn  # type: ignore[attr-defined]
    return stream


def handles_in(values: Mapping[str, Any]) -> frozenset[str]:
    """The names in ``values`` that carry resource handles (inputs of a nested run)."""
    return frozenset(k for k, v in values.items() if type(v) is Held)


def prime_handles(plan: Any, values: dict[str, Any], resources: RunResources | None) -> None:
    """Put the handles of a plan's resources into ``values`` before it runs, where their
    inputs are there already (a map's shared inputs): cache keys resolved before the
    items run (remote items) then see the resources' versions."""
    for step in plan.resources:
        node = step.node
        if all(name in values for name in node.inputs) and node.outputs[0] not in values:
            args = tuple(values[name] for name in node.inputs)
            values[node.outputs[0]] = make_held(node, args, resources)


def daft_handle(resource: Resource) -> Callable[..., Any]:
    """A resource's op body under ``DaftEngine``: its handle, resolved where the nodes
    taking it run, in the Daft worker's process registry (once per Daft worker, whatever
    the scope)."""

    async def handle(*args: Any) -> Held:
        return Held(resource, args, None)

    handle.__name__ = resource.name
    return handle
