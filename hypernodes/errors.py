"""The exception tree of HyperNodes: every error the library raises on purpose.

HyperNodesError
├── PipelineDefinitionError      (ValueError) a pipeline that cannot be built
│   ├── DuplicateOutputError     two nodes produce the same output name
│   ├── CycleError               the nodes form a cycle (spelled out)
│   └── TypeMismatchError        an edge's annotations clash: what one node returns
│                                cannot be what the next one takes
├── MissingInputError            (ValueError) run-time inputs that nobody supplied
├── InvalidInputError            (ValueError) unknown inputs, bad map_over values, ...
├── InvalidExecutorError         (ValueError) an executor alias or object we cannot use
├── ConfigError                  (ValueError) bad engine configuration (keys, values, files)
├── NodeError                    a node failed while running; the user's exception is
│   │                            its ``__cause__`` (never replaced)
│   ├── WorkerLostError          the worker process running the node died (or its pool
│   │                            broke); names the node and item, and the likely fix
│   └── ResourceError            a ``@resource`` failed to build (or to tear down); names
│                                the resource and the node that needed it
├── UnfingerprintableError       (TypeError) a value no cache key can be made from
│                                (``hypernodes.cache``; the node runs uncached, with a warning)
├── CacheWriteError              a value a cache store cannot hold (``hypernodes.cache``)
├── UnsupportedNodeError         (TypeError) a node DaftEngine cannot translate
│                                (``hypernodes.engines.daft``)
└── TargetError                  (ValueError) a CLI TARGET that cannot be found or
                                 imported, or names no pipeline (``hypernodes.cli``)

Warnings: ``CacheWarning`` (``hypernodes.cache``) for entries that are corrupt, tampered
with or unreadable, and for nodes left uncached in a run.

A failing node always surfaces as exactly one ``NodeError`` that names the node, the
pipeline path (outer pipeline, nested node, item index, inner pipeline) and, inside a
map, the item index. The path is filled in as the error travels up through nested
pipelines and maps, so the happy path pays nothing for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CacheWarning",
    "CacheWriteError",
    "ConfigError",
    "CycleError",
    "DuplicateOutputError",
    "HyperNodesError",
    "InvalidExecutorError",
    "InvalidInputError",
    "MissingInputError",
    "NodeError",
    "PathFrame",
    "PipelineDefinitionError",
    "ResourceError",
    "TargetError",
    "TypeMismatchError",
    "UnfingerprintableError",
    "UnsupportedNodeError",
    "WorkerLostError",
    "node_failed",
]


class HyperNodesError(Exception):
    """Base class of every error HyperNodes raises on purpose."""


class PipelineDefinitionError(HyperNodesError, ValueError):
    """The nodes given to a ``Pipeline`` do not form a valid pipeline."""


class DuplicateOutputError(PipelineDefinitionError):
    """Two nodes produce the same output name.

    Attributes:
        output: The output name that is produced twice.
        nodes: The names of the nodes that produce it.
    """

    def __init__(self, output: str, nodes: Sequence[str]) -> None:
        self.output = output
        self.nodes = tuple(nodes)
        names = " and ".join(repr(n) for n in self.nodes)
        super().__init__(
            f"output {output!r} is produced by both {names}; each output needs exactly one "
            f"producer: rename one of them, e.g. @node(output_name={output + '_2'!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Errors cross process boundaries (remote workers); rebuild from our arguments.
        return (type(self), (self.output, self.nodes), self.__dict__)


class CycleError(PipelineDefinitionError):
    """The nodes depend on each other in a cycle.

    Attributes:
        cycle: The node names along the cycle, first node repeated at the end.
        via: The value names passed along each hop of the cycle.
    """

    def __init__(self, cycle: Sequence[str], via: Sequence[str]) -> None:
        self.cycle = tuple(cycle)
        self.via = tuple(via)
        arrows = "".join(f"{a!r} --{v}--> " for a, v in zip(cycle, via, strict=False))
        spelled = arrows + repr(cycle[-1])
        super().__init__(
            f"the pipeline has a cycle: {spelled}; a node cannot depend on its own output, "
            "directly or through other nodes"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.cycle, self.via), self.__dict__)


class TypeMismatchError(PipelineDefinitionError):
    """What one node returns cannot be what the node reading it takes (their annotations).

    Raised when a ``Pipeline`` is built (``Pipeline(..., check_types=False)`` skips the
    check).

    Attributes:
        producer: The name of the node that returns the value.
        consumer: The name of the node that takes it.
        value: The value's name (as the outer pipeline sees it).
        produced: The type the producer returns it as, as text.
        expected: The type the consumer takes it as, as text.
        detail: Where the types were read when they are not plain (a nested pipeline's
            inner node, a generator, ``map_over``), or ``""``.
    """

    def __init__(
        self,
        producer: str,
        consumer: str,
        value: str,
        produced: str,
        expected: str,
        detail: str = "",
    ) -> None:
        self.producer = producer
        self.consumer = consumer
        self.value = value
        self.produced = produced
        self.expected = expected
        self.detail = detail
        where = f" ({detail})" if detail else ""
        super().__init__(
            f"node {producer!r} returns {value!r} as {produced} but node {consumer!r} takes "
            f"it as {expected}{where}; make the annotations agree, or build the pipeline with "
            "Pipeline(..., check_types=False) to skip the check"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        args = (self.producer, self.consumer, self.value, self.produced, self.expected)
        return (type(self), (*args, self.detail), self.__dict__)


class MissingInputError(HyperNodesError, ValueError):
    """Inputs that the requested outputs need were not supplied.

    Attributes:
        missing: Mapping of each missing input name to the nodes that need it.
        pipeline: The name of the pipeline that was run, if known.
    """

    def __init__(self, missing: Mapping[str, Sequence[str]], pipeline: str | None = None) -> None:
        self.missing = {k: tuple(v) for k, v in missing.items()}
        self.pipeline = pipeline
        parts = ", ".join(
            f"{name!r} (needed by {', '.join(repr(n) for n in needers)})"
            for name, needers in self.missing.items()
        )
        where = f" of pipeline {pipeline!r}" if pipeline else ""
        super().__init__(
            f"missing inputs{where}: {parts}; pass them in inputs= or fix them with "
            "pipeline.bind(...)"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.missing, self.pipeline), self.__dict__)


class InvalidInputError(HyperNodesError, ValueError):
    """Inputs were supplied that the pipeline cannot use (unknown names, bad map values)."""


class InvalidExecutorError(HyperNodesError, ValueError):
    """An executor alias is unknown, or an object is not a usable executor."""


class ConfigError(HyperNodesError, ValueError):
    """An engine configuration (mapping, file or flag) is invalid."""


@dataclass(frozen=True, slots=True)
class PathFrame:
    """One level of the location of a failure: a pipeline, entered through a node.

    Attributes:
        pipeline: The name of the pipeline at this level.
        via: The name of the node in the enclosing pipeline that ran this one (``None`` at
            the top level).
        item: The map item index at this level, if this level ran as a map item.
    """

    pipeline: str
    via: str | None = None
    item: int | None = None

    def __str__(self) -> str:
        text = self.pipeline if self.via is None else f"{self.via} -> {self.pipeline}"
        return text if self.item is None else f"{text}[item {self.item}]"


class NodeError(HyperNodesError):
    """A node raised an exception (or timed out) while running.

    The user's exception is ``__cause__``. The location is filled in as the error
    propagates out of nested pipelines and maps.

    Attributes:
        node: The name of the node that failed.
        frames: The path from the outermost pipeline to the failing node's pipeline.
        abandoned: ``True`` when the node timed out while running synchronously in a
            worker: it could not be interrupted and keeps running until it returns.
        attempts: How many attempts of the node ran (1 without retries).
    """

    def __init__(
        self,
        node: str,
        frames: Iterable[PathFrame] = (),
        *,
        detail: str | None = None,
        abandoned: bool = False,
        attempts: int = 1,
    ) -> None:
        super().__init__(node)
        self.node = node
        self.frames: tuple[PathFrame, ...] = tuple(frames)
        self.detail = detail
        self.abandoned = abandoned
        self.attempts = attempts

    @property
    def pipeline_path(self) -> tuple[str, ...]:
        """The pipeline names from the outermost to the failing node's pipeline."""
        return tuple(f.pipeline for f in self.frames)

    @property
    def item_index(self) -> int | None:
        """The innermost map item index on the path, or ``None`` outside maps."""
        for frame in reversed(self.frames):
            if frame.item is not None:
                return frame.item
        return None

    @property
    def item_indices(self) -> tuple[int, ...]:
        """Every map item index on the path, outermost first."""
        return tuple(f.item for f in self.frames if f.item is not None)

    def _prepend(self, frame: PathFrame) -> NodeError:
        self.frames = (frame, *self.frames)
        return self

    def _mark_item(self, index: int) -> NodeError:
        """Record that the outermost known frame ran as map item ``index``."""
        if self.frames and self.frames[0].item is None:
            first = self.frames[0]
            self.frames = (PathFrame(first.pipeline, first.via, index), *self.frames[1:])
        return self

    def __str__(self) -> str:
        where = " > ".join(str(f) for f in self.frames) or "<pipeline>"
        cause = self.__cause__
        what = self.detail or (f"{type(cause).__name__}: {cause}" if cause else "failed")
        return f"node {self.node!r} failed in {where}: {what}"

    def __reduce__(self) -> tuple[object, ...]:
        return (
            _rebuild_node_error,
            (self.node, self.frames, self.detail, self.abandoned, self.__cause__, self.attempts),
        )


def _rebuild_node_error(
    node: str,
    frames: tuple[PathFrame, ...],
    detail: str | None,
    abandoned: bool,
    cause: BaseException | None,
    attempts: int = 1,
) -> NodeError:
    err = NodeError(node, frames, detail=detail, abandoned=abandoned, attempts=attempts)
    err.__cause__ = cause
    return err


_GUARD = (
    'a script using a process pool without an `if __name__ == "__main__":` guard '
    "(spawn-safe pools import the main module in every worker)"
)

_LOSSES = {
    "running": "a worker process of {executor} died abruptly while running it (a crash in "
    "native code, os._exit(), running out of memory or a signal)",
    "lost": "a worker process of {executor} died abruptly while running another call, and "
    "this one was lost with the pool",
    "startup": "a worker process of {executor} died abruptly while starting up. The usual "
    f"cause: {_GUARD}",
    "idle": "a worker process of {executor} died abruptly between calls (running out of "
    "memory or a signal), and the pool broke",
    "unknown": "a worker process of {executor} died abruptly and the pool is broken (a crash "
    "in native code, os._exit(), running out of memory or a signal; if it died while "
    f"starting up, {_GUARD})",
}


class WorkerLostError(NodeError):
    """The worker process running a node died, or another worker's death broke its pool.

    The executor's own error (e.g. ``BrokenProcessPool``) is the ``__cause__``. A pool the
    engine made is replaced, so the next run works; an executor you passed in stays broken.

    Attributes:
        executor: The type name of the executor whose worker died.
        reason: What is known of the death: ``"running"`` (the worker died running this
            node), ``"lost"`` (another worker died and broke the pool), ``"startup"`` (a
            worker died starting up: the missing ``__main__`` guard), ``"idle"`` (a worker
            died between calls) or ``"unknown"``.
    """

    def __init__(
        self,
        node: str = "",
        frames: Iterable[PathFrame] = (),
        *,
        executor: str,
        reason: str = "unknown",
    ) -> None:
        detail = _LOSSES.get(reason, _LOSSES["unknown"]).format(executor=executor)
        super().__init__(node, frames, detail=detail)
        self.executor = executor
        self.reason = reason

    def __reduce__(self) -> tuple[object, ...]:
        return (
            _rebuild_worker_lost,
            (self.node, self.frames, self.executor, self.reason, self.__cause__),
        )


def _rebuild_worker_lost(
    node: str,
    frames: tuple[PathFrame, ...],
    executor: str,
    reason: str,
    cause: BaseException | None,
) -> WorkerLostError:
    err = WorkerLostError(node, frames, executor=executor, reason=reason)
    err.__cause__ = cause
    return err


class ResourceError(NodeError):
    """A resource failed to build (or to tear down).

    The factory's exception is the ``__cause__``. Raised where a node needed the resource,
    it names that node too (``node``) and its place in the pipeline; a failed teardown
    names the resource only.

    Attributes:
        resource: The name of the resource.
        during: ``"build"`` or ``"teardown"``.
    """

    def __init__(
        self,
        resource: str,
        frames: Iterable[PathFrame] = (),
        *,
        node: str = "",
        during: str = "build",
    ) -> None:
        super().__init__(node, frames)
        self.resource = resource
        self.during = during

    def __str__(self) -> str:
        cause = self.__cause__
        what = f"{type(cause).__name__}: {cause}" if cause is not None else "failed"
        doing = "tear down" if self.during == "teardown" else "build"
        text = f"resource {self.resource!r} failed to {doing}"
        if self.node:
            where = " > ".join(str(f) for f in self.frames) or "<pipeline>"
            text += f" for node {self.node!r} in {where}"
        return f"{text}: {what}"

    def __reduce__(self) -> tuple[object, ...]:
        return (
            _rebuild_resource_error,
            (self.resource, self.frames, self.node, self.during, self.__cause__),
        )


def _rebuild_resource_error(
    resource: str,
    frames: tuple[PathFrame, ...],
    node: str,
    during: str,
    cause: BaseException | None,
) -> ResourceError:
    err = ResourceError(resource, frames, node=node, during=during)
    err.__cause__ = cause
    return err


def node_failed(
    node: str,
    failure: BaseException,
    *,
    detail: str | None = None,
    abandoned: bool = False,
    attempts: int = 1,
) -> NodeError:
    """The ``NodeError`` to raise when node ``node`` failed with ``failure``.

    A ``WorkerLostError`` raised by an executor (which knows no node) becomes the error
    itself, now naming the node, and so does a ``ResourceError`` (the resource the node
    needed failed to build); any other failure is the ``__cause__`` of a new
    ``NodeError``.
    """
    if isinstance(failure, WorkerLostError) and not failure.node:
        failure.node = node
        failure.attempts = attempts
        return failure
    if isinstance(failure, ResourceError) and not failure.frames:
        failure.node = failure.node or node  # the resource's error, naming the node too
        return failure
    error = NodeError(node, detail=detail, abandoned=abandoned, attempts=attempts)
    error.__cause__ = failure
    return error


# -- raised by the cache, DaftEngine and the CLI (re-exported there) -----------------


class CacheWarning(UserWarning):
    """Something in a cache was wrong but the run goes on: a corrupt, truncated or tampered
    entry (read as a miss), an unsafe cache directory, a value that is not cached."""


class CacheWriteError(HyperNodesError):
    """A value could not be stored: it cannot be pickled, or the store could not write it.

    The store is unchanged (no partial entry is ever left behind). The caller decides what
    to do; the cache runtime runs the node uncached and warns.

    Attributes:
        key: The key that was being written.
        value_type: The qualified name of the value's type.
        reason: What went wrong, in words.
    """

    def __init__(self, key: str, value_type: str, reason: str) -> None:
        self.key = key
        self.value_type = value_type
        self.reason = reason
        super().__init__(key, value_type, reason)

    def __str__(self) -> str:
        return (
            f"cannot cache a value of type {self.value_type} under key {self.key!r}: {self.reason}"
        )


class UnfingerprintableError(HyperNodesError, TypeError):
    """A value cannot be fingerprinted reliably, so results depending on it are not cached.

    Attributes:
        type_name: The qualified name of the offending type, e.g. ``_thread.lock``.
        location: Where the offending value sits inside the value that was fingerprinted,
            e.g. ``value['db'][0]`` (``value`` when it is the value itself).
        reason: Why it cannot be fingerprinted.
    """

    def __init__(self, type_name: str, reason: str, location: str = "value") -> None:
        super().__init__(type_name, reason, location)
        self.type_name = type_name
        self.reason = reason
        self.location = location
        self.child: object = None  # the innermost container walked so far (while raising)

    def __str__(self) -> str:
        where = "" if self.location == "value" else f" at {self.location}"
        short = self.type_name.rpartition(".")[2]
        return (
            f"cannot fingerprint a value of type {self.type_name}{where}: {self.reason}; "
            f"teach HyperNodes how with @register_fingerprint({short}), or opt the node "
            "out of caching with @node(cache=False)"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.type_name, self.reason, self.location))

    def inside(self, segment: str, parent: object) -> None:
        """Record, while propagating, that the failing part sat at ``segment`` of ``parent``."""
        self.location = "value" + segment + self.location[len("value") :]
        self.child = parent


class TargetError(HyperNodesError, ValueError):
    """A CLI TARGET that cannot be found, imported, or does not name a pipeline."""


class UnsupportedNodeError(HyperNodesError, TypeError):
    """A node DaftEngine cannot translate into a Daft function.

    Attributes:
        node: The name of the node.
    """

    def __init__(self, node: str, why: str) -> None:
        super().__init__(f"DaftEngine cannot run node {node!r}: {why}")
        self.node = node
