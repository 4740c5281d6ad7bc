"""Types at the edges: what one node returns must fit what the node reading it takes.

The check runs once, when a ``Pipeline`` is built, never during a run. It is lenient: it
flags only what cannot fit (``Any``, unions, ``Optional``, ``TypeVar``s, protocols,
unresolvable and unannotated ends all fit). Annotations are read once per function and
resolved only for edges whose two ends are both annotated, so a large pipeline builds fast.
Whether two resolved types fit, and how a type reads in a message, is
:mod:`hypernodes.typing_fit`'s (``fits``, ``type_text`` and ``UNKNOWN`` are re-exported here).
This module must not import pydantic, the scheduler or asyncio.
"""

from __future__ import annotations

import collections.abc as cabc
import contextlib
import functools
import inspect
import sys
import types
import typing
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import TypeMismatchError
from .node import Node
from .resources import Resource
from .typing_fit import UNKNOWN, fits, type_text

__all__ = ["UNKNOWN", "check_edges", "fits", "input_types", "output_types", "type_text"]

_NONE = type(None)
_MISSING: Any = object()
_GENERATOR_FLAGS = inspect.CO_GENERATOR | inspect.CO_ASYNC_GENERATOR
_STREAMS = (
    cabc.Iterator,
    cabc.Iterable,
    cabc.Generator,
    cabc.AsyncIterator,
    cabc.AsyncIterable,
    cabc.AsyncGenerator,
)


def _annotations(func: Callable[..., Any]) -> dict[str, Any]:
    """The annotations of ``func`` as written, ``"return"`` included (not to be changed)."""
    if type(func) is types.FunctionType:
        return func.__annotations__  # the common case, and fast: no signature to build
    try:
        return _SIGNATURES[func]
    except KeyError:
        found = _SIGNATURES[func] = _signature_annotations(func)
        return found
    except TypeError:  # not hashable, or no weak reference to it: read it every time
        return _signature_annotations(func)


def _signature_annotations(func: Callable[..., Any]) -> dict[str, Any]:
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return {}
    empty = inspect.Parameter.empty
    raw = {p.name: p.annotation for p in sig.parameters.values() if p.annotation is not empty}
    if sig.return_annotation is not empty:
        raw["return"] = sig.return_annotation
    elif isinstance(func, type):  # a class used as a node returns an instance of itself
        raw["return"] = func
    return raw


# Partials, callable objects and classes: their signatures are slow to read, so once each.
_SIGNATURES: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def _globals(func: Callable[..., Any]) -> dict[str, Any]:
    """The globals string annotations of ``func`` are evaluated in (as typing does)."""
    target: Any = func
    while isinstance(target, functools.partial):
        target = target.func
    with contextlib.suppress(ValueError):  # a __wrapped__ cycle: read the outer function
        target = inspect.unwrap(target)
    found = getattr(target, "__globals__", None)
    if isinstance(found, dict):
        return found
    module = sys.modules.get(getattr(target, "__module__", None) or "")
    return vars(module) if module is not None else {}


def _is_generator(func: Callable[..., Any]) -> bool:
    if type(func) is types.FunctionType:
        return bool(func.__code__.co_flags & _GENERATOR_FLAGS)
    return inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func)


def _evaluate(text: str, globalns: dict[str, Any]) -> Any:
    try:
        return eval(text, globalns)  # what typing.get_type_hints does with a string
    except Exception:  # an unresolvable annotation fits
        return UNKNOWN


def _has_forward_refs(tp: Any) -> bool:
    args = getattr(tp, "__args__", None)
    if not isinstance(args, tuple):
        return False
    return any(
        isinstance(a, str | typing.ForwardRef) or (a is not tp and _has_forward_refs(a))
        for a in args
    )


def _chunks(tp: Any) -> Any:
    """What a generator node annotated ``Iterator[T]`` (and the like) produces: ``list[T]``."""
    origin = typing.get_origin(tp) or tp
    if origin not in _STREAMS:
        return UNKNOWN
    args = typing.get_args(tp)
    return _listed(args[0]) if args else list


def _provided(tp: Any) -> Any:
    """What a resource annotated ``tp`` hands its nodes: ``T`` for a factory yielding it
    (``Iterator[T]``, ...) or returning a context manager of it; else ``tp`` itself."""
    origin = typing.get_origin(tp) or tp
    if origin in _STREAMS or origin in _MANAGERS:
        args = typing.get_args(tp)
        return args[0] if args else UNKNOWN
    return tp


_MANAGERS = (contextlib.AbstractContextManager, contextlib.AbstractAsyncContextManager)


def _listed(tp: Any) -> Any:
    """``list[tp]``: a generator's chunks, a mapped input or output."""
    return list[tp]


def _unpacked(tp: Any, count: int) -> list[Any]:
    """The element types of a multi-output node's returned tuple (UNKNOWN when unclear)."""
    if typing.get_origin(tp) is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return [args[0]] * count
        if len(args) == count:
            return list(args)
    return [UNKNOWN] * count


# -- what a node takes and returns (through nested pipelines) ---------------------------


class _Reader:
    """Resolves annotations for one check (or one model), remembering what repeats.

    String annotations are evaluated once per text and module, and each pair of types is
    compared once: a large pipeline repeats the same few annotations. The memos live only
    as long as the reader, so they never outlive (or confuse) the modules they name.
    """

    def __init__(self) -> None:
        self.texts: dict[tuple[int, str], Any] = {}
        self.nested: dict[Any, bool] = {}
        self.fitting: dict[tuple[Any, Any], bool] = {}

    def annotation(self, func: Callable[..., Any], name: str) -> Any:
        """The resolved annotation of ``func``'s parameter ``name`` (or ``"return"``).

        Resolved as ``typing.get_type_hints`` would (``from __future__ import
        annotations`` and forward references included); UNKNOWN when there is none or it
        cannot be resolved.
        """
        value = _annotations(func).get(name, UNKNOWN)
        if isinstance(value, str):
            globalns = _globals(func)
            key = (id(globalns), value)  # safe: the function (and its globals) live meanwhile
            found = self.texts.get(key, _MISSING)
            if found is _MISSING:
                found = _evaluate(value, globalns)
                for _ in range(3):  # ``"'User'"`` (quoted under the __future__ import)
                    if not isinstance(found, str):
                        break
                    found = _evaluate(found, globalns)
                self.texts[key] = found
            value = found
        if value is None:
            return _NONE
        if value is UNKNOWN or isinstance(value, type):
            return value
        try:
            nested = self.nested[value]
        except KeyError:
            nested = self.nested[value] = _has_forward_refs(value)
        except TypeError:  # an unhashable annotation
            nested = _has_forward_refs(value)
        if nested:  # ``list["User"]``: typing resolves nested forward references exactly
            try:
                value = typing.get_type_hints(func).get(name, UNKNOWN)
            except Exception:  # one unresolvable hint fails the whole lookup: it fits
                value = UNKNOWN
        return value

    def fits(self, src: Any, dst: Any) -> bool:
        """:func:`fits`, remembered."""
        try:
            return self.fitting[src, dst]
        except KeyError:
            found = self.fitting[src, dst] = fits(src, dst)
            return found
        except TypeError:  # an unhashable annotation
            return fits(src, dst)

    def takes(self, node: Node, name: str) -> list[tuple[Any, Where]]:
        """Each annotated type ``node`` takes input ``name`` as, with where it was read."""
        if not isinstance(node, PipelineNode):
            tp = self.annotation(node.func, name)
            return [] if tp is UNKNOWN else [(tp, Where())]
        inner = node.input_mapping.get(name, name)
        mapped = name in (node.map_over or ())
        found = []
        for child in node.pipeline.nodes:
            if inner in child.inputs:
                for tp, where in self.takes(child, inner):
                    found.append((_listed(tp) if mapped else tp, _via(child, where, mapped)))
        return found

    def returns(self, node: Node, name: str) -> tuple[Any, Where]:
        """The annotated type ``node`` returns output ``name`` as, with where it was read.

        A generator node returns the ``list`` of its chunks; a node with several outputs
        returns its tuple's elements; a nested pipeline what its inner node returns (a
        ``list`` of it when mapped).
        """
        if not isinstance(node, PipelineNode):
            tp = self.annotation(node.func, "return")
            if tp is UNKNOWN:
                return UNKNOWN, Where()
            where = Where()
            if isinstance(node, Resource):
                return _provided(tp), where  # one object, even from a generator
            if _is_generator(node.func):
                tp, where = _chunks(tp), Where(generator=node.name)
            if len(node.outputs) > 1:
                tp = _unpacked(tp, len(node.outputs))[node.outputs.index(name)]
            return tp, where
        inner = next((i for i, o in node.output_mapping.items() if o == name), name)
        mapped = bool(node.map_over)
        for child in node.pipeline.nodes:
            if inner in child.outputs:
                tp, where = self.returns(child, inner)
                if tp is UNKNOWN:
                    return UNKNOWN, Where()
                return (_listed(tp) if mapped else tp), _via(child, where, mapped)
        return UNKNOWN, Where()

    def narrowest(self, tps: Sequence[Any]) -> Any:
        """The narrowest of several types (one that fits all the others), else the first."""
        for tp in tps:
            if all(self.fits(tp, other) for other in tps):
                return tp
        return tps[0] if tps else UNKNOWN


@dataclass(frozen=True, slots=True)
class Where:
    """Where a type was read, when not on the node itself: for the error message.

    Attributes:
        path: The inner nodes it was read on, outermost first (through nested pipelines).
        mapped: Whether some nested pipeline on the way maps over it.
        generator: The name of the generator node whose chunks make the value.
    """

    path: tuple[str, ...] = ()
    mapped: bool = False
    generator: str | None = None

    def says(self, node: str, verb: str) -> str:
        """The note for ``node`` (which ``verb``s the value), or ``""`` when there is none."""
        notes = []
        if self.path:
            inner = " > ".join(map(repr, self.path))
            if verb == "takes":
                text = f"{node!r} passes it to node {inner} inside"
                text += ", one item at a time (map_over)" if self.mapped else ""
            else:
                text = f"{node!r} returns what node {inner} inside returns"
                text += ", as a list (map_over)" if self.mapped else ""
            notes.append(text)
        if self.generator is not None:
            notes.append(
                f"{self.generator!r} is a generator: its value is the list of what it yields"
            )
        return "; ".join(notes)


def _via(child: Node, where: Where, mapped: bool) -> Where:
    return Where((child.name, *where.path), mapped or where.mapped, where.generator)


# -- the check --------------------------------------------------------------------------


def check_edges(nodes: Sequence[Node], producer: dict[str, int]) -> None:
    """Check that every edge's two annotated ends fit, in node order.

    Args:
        nodes: The pipeline's nodes.
        producer: Each output name with the index of the node producing it.

    Raises:
        TypeMismatchError: The first edge whose types cannot fit.
    """
    reader = _Reader()
    function = types.FunctionType
    for consumer in nodes:
        nested = isinstance(consumer, PipelineNode)
        func = consumer.func
        raw = None if nested else _annotations(func)
        if raw is not None and not raw:
            continue  # an unannotated function: nothing to check
        for name in consumer.inputs:
            index = producer.get(name)
            if index is None or (raw is not None and name not in raw):
                continue
            source = nodes[index]
            made = source.func
            if raw is not None and type(made) is function and len(source.outputs) == 1:
                # The fast path: no return annotation, or the very annotation the consumer
                # has (``int`` and ``int``, or ``"int"`` and ``"int"`` in one module) needs
                # no resolving; large pipelines are mostly that.
                returned = made.__annotations__.get("return", _MISSING)
                if returned is _MISSING:
                    continue
                if _same(returned, raw[name], made, func) and not (
                    made.__code__.co_flags & _GENERATOR_FLAGS
                ):
                    continue
            produced, pwhere = reader.returns(source, name)
            if produced is UNKNOWN:
                continue
            pairs = reader.takes(consumer, name)
            for expected, cwhere in pairs:
                if not reader.fits(produced, expected):
                    notes = (
                        pwhere.says(source.name, "returns"),
                        cwhere.says(consumer.name, "takes"),
                    )
                    texts = type_text(produced), type_text(expected)
                    if texts[0] == texts[1]:  # two classes of one name, from two modules
                        texts = (
                            type_text(produced, qualified=True),
                            type_text(expected, qualified=True),
                        )
                    raise TypeMismatchError(
                        nodes[index].name,
                        consumer.name,
                        name,
                        *texts,
                        "; ".join(n for n in notes if n),
                    )


def _same(returned: Any, taken: Any, made: Any, func: Callable[..., Any]) -> bool:
    """Whether two annotations as written are certainly the same type."""
    if isinstance(taken, str):  # the same text means the same type in the same module only
        return (
            returned == taken
            and type(func) is types.FunctionType
            and made.__globals__ is func.__globals__
        )
    try:
        return returned is taken or bool(returned == taken)
    except Exception:  # an annotation whose == does not answer (array metadata)
        return False


def input_types(pipeline: Pipeline) -> dict[str, Any]:
    """The annotated type of each root input (``Any`` where none is annotated).

    Where several nodes take the input, the narrowest of their types (one fitting all the
    others) is used, else the first; a mapped input of a nested pipeline is a ``list``.
    """
    reader = _Reader()
    produced = set(pipeline.outputs)
    found: dict[str, list[Any]] = {}
    for node in pipeline.nodes:
        for name in node.inputs:
            if name not in produced:
                found.setdefault(name, []).extend(tp for tp, _ in reader.takes(node, name))
    return {name: _or_any(reader.narrowest(tps)) for name, tps in found.items()}


def output_types(pipeline: Pipeline) -> dict[str, Any]:
    """The annotated type of each output (``Any`` where its node has no annotation)."""
    reader = _Reader()
    return {
        name: _or_any(reader.returns(node, name)[0])
        for node in pipeline.nodes
        for name in node.outputs
    }


def _or_any(tp: Any) -> Any:
    return Any if tp is UNKNOWN else tp


# The kernel modules that name each other import each other last (see pipeline.py).
from .nested import PipelineNode  # noqa: E402
from .pipeline import Pipeline  # noqa: E402
