"""A pipeline as a flat list of row-wise operations: what DaftEngine turns into columns.

Translation walks a compiled plan: each node becomes an ``Op`` reading columns (mapped
inputs, other ops' outputs) and constants (shared inputs, defaults, bound values) and
writing one column per output. A nested pipeline that inherits the Daft engine is
inlined (its nodes become ops under its own ``Level``, names renamed by its mappings); one
that maps over a list, has an engine of its own, or must be cached as a whole runs per
row as one op. This module knows nothing about Daft itself (see ``frame.py``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ...callbacks import Dispatcher
from ...errors import UnsupportedNodeError
from ...nested import PipelineNode
from ...resources import Resource, daft_handle

if TYPE_CHECKING:
    from ...node import Node
    from ...pipeline import Pipeline
    from ...plan import Plan, Step

__all__ = [
    "ROW",
    "Column",
    "Const",
    "Level",
    "Op",
    "Program",
    "Source",
    "UnsupportedNodeError",
    "describe",
    "nested_callbacks",
    "translate",
]

ROW = "__hn_row"
"""The column holding each row's item index (also the first argument of every function)."""


@dataclass(frozen=True, slots=True)
class Column:
    """A value read from a column of the frame."""

    name: str


@dataclass(frozen=True, slots=True)
class Const:
    """A value shared by every row (shared input, default, bound value)."""

    value: Any


Source = Column | Const


@dataclass(slots=True)
class Level:
    """One pipeline level of the program: the top pipeline or an inlined nested one.

    Attributes:
        pipeline: The pipeline at this level.
        via: The nested node that runs it (``None`` at the top).
        parent: The enclosing level.
        callbacks: The dispatcher of this level (resolved like a nested run's).
        prefix: Prefix of this level's column names (``""`` at the top).
    """

    pipeline: Pipeline
    via: PipelineNode | None = None
    parent: Level | None = None
    callbacks: Dispatcher | None = None
    prefix: str = ""

    @property
    def path(self) -> tuple[Level, ...]:
        """The levels from the top down to this one."""
        chain: list[Level] = []
        level: Level | None = self
        while level is not None:
            chain.append(level)
            level = level.parent
        return tuple(reversed(chain))


@dataclass(slots=True)
class Op:
    """One node as a row-wise function.

    Attributes:
        node: The node (a ``PipelineNode`` for a nested pipeline run per row).
        fn: The node's callable taking every input positionally (from its plan step).
        level: Where the node sits.
        args: One source per node input, in ``node.inputs`` order.
        outs: The column written for each of ``node.outputs``.
        step: Index of the top-level plan step this op belongs to (for the cache).
        index: Position in the program.
    """

    node: Node
    fn: Callable[..., Any]
    level: Level
    args: tuple[Source, ...]
    outs: tuple[str, ...]
    step: int
    index: int = 0

    @property
    def nested(self) -> bool:
        """Whether this op runs a whole nested pipeline per row."""
        return isinstance(self.node, PipelineNode)


@dataclass(slots=True)
class Program:
    """The ops of a pipeline in topological order, and where each result lives.

    Attributes:
        top: The top level.
        plan: The top-level plan.
        ops: Every op, in an order that respects dependencies.
        inputs: The mapped input names, each a column of the same name.
        outputs: For each requested output name, its source.
    """

    top: Level
    plan: Plan
    ops: list[Op] = field(default_factory=list)
    inputs: tuple[str, ...] = ()
    outputs: dict[str, Source] = field(default_factory=dict)

    def consumed(self) -> set[str]:
        """Columns read by some op."""
        return {a.name for op in self.ops for a in op.args if isinstance(a, Column)}


def translate(
    pipeline: Pipeline,
    plan: Plan,
    columns: tuple[str, ...],
    constants: Mapping[str, Any],
    *,
    callbacks: Dispatcher | None,
    inline: bool,
    is_daft: Any,
) -> Program:
    """Turn ``plan`` into a program.

    Args:
        pipeline: The pipeline.
        plan: Its compiled plan for the requested outputs.
        columns: Input names that are columns (the mapped inputs).
        constants: Every other input value (shared inputs, bound values, defaults).
        callbacks: The top level's dispatcher.
        inline: Whether nested pipelines that inherit the engine may be inlined (not
            when they must be cached as a whole).
        is_daft: ``is_daft(engine)`` tells whether an engine is a DaftEngine.

    Raises:
        UnsupportedNodeError: A nested pipeline's engine cannot run inside Daft.
    """
    top = Level(pipeline, callbacks=callbacks)
    program = Program(top=top, plan=plan, inputs=columns)
    env: dict[str, Source] = {name: Const(value) for name, value in constants.items()}
    env.update({name: Column(name) for name in columns})
    for k, step in enumerate(plan.steps):
        _add(program, step, env, top, k, inline, is_daft)
    for name in plan.outputs:
        program.outputs[name] = env[name]
    for i, op in enumerate(program.ops):
        op.index = i
    return program


def _add(
    program: Program,
    plan_step: Step,
    env: dict[str, Source],
    level: Level,
    step: int,
    inline: bool,
    is_daft: Any,
) -> None:
    node = plan_step.node
    args = tuple(env[name] for name in node.inputs)
    if isinstance(node, PipelineNode):
        engine = node.engine_override or node.pipeline.engine
        if engine is not None and not is_daft(engine) and not _is_native(engine):
            raise UnsupportedNodeError(
                node.name,
                f"its pipeline runs on {type(engine).__name__}, which cannot run inside a "
                "Daft function; give it a HyperNodesEngine or a DaftEngine",
            )
        if inline and node.map_over is None and (engine is None or is_daft(engine)):
            _inline(program, node, args, env, level, step, is_daft)
            return
    outs = tuple(f"{level.prefix}{name}" for name in node.outputs)
    # A resource's op makes its handle: its nodes build the object once per Daft worker.
    body = daft_handle(node) if isinstance(node, Resource) else plan_step.fn
    program.ops.append(Op(node, body, level, args, outs, step))
    env.update({name: Column(col) for name, col in zip(node.outputs, outs, strict=True)})


def _inline(
    program: Program,
    node: PipelineNode,
    args: tuple[Source, ...],
    env: dict[str, Source],
    level: Level,
    step: int,
    is_daft: Any,
) -> None:
    inner = node.pipeline
    to_inner = node.input_mapping
    inner_env: dict[str, Source] = {name: Const(v) for name, v in inner.bound.items()}
    for outer_name, source in zip(node.inputs, args, strict=True):
        inner_env[to_inner.get(outer_name, outer_name)] = source
    to_outer = {inner_name: outer for inner_name, outer in node.output_mapping.items()}
    exposed = list(node.output_mapping) or list(inner.outputs)
    inner_plan = inner.plan(exposed, inner_env)
    inner_env.update({name: Const(v) for name, v in inner_plan.optional.items()})
    child = Level(
        inner,
        via=node,
        parent=level,
        callbacks=nested_callbacks(node, level.callbacks),
        prefix=f"{level.prefix}{node.name}/",
    )
    for inner_step in inner_plan.steps:
        _add(program, inner_step, inner_env, child, step, True, is_daft)
    for inner_name in exposed:
        env[to_outer.get(inner_name, inner_name)] = inner_env[inner_name]


def nested_callbacks(node: PipelineNode, outer: Dispatcher | None) -> Dispatcher | None:
    """The dispatcher of a nested level, composed as for a nested run (see
    :meth:`PipelineNode.callbacks_for`)."""
    return node.callbacks_for(outer)


def _is_native(engine: Any) -> bool:
    from ..hypernodes import HyperNodesEngine  # deferred: asyncio, to recognise the native engine

    return isinstance(engine, HyperNodesEngine)


def describe(program: Program) -> None:
    """Print how each node was translated (``DaftEngine(debug=True)``), to stderr."""
    out = sys.stderr
    print(
        f"DaftEngine: pipeline {program.top.pipeline.name!r} as {len(program.ops)} columns",
        file=out,
    )
    for op in program.ops:
        where = "/".join(level.pipeline.name for level in op.level.path)
        if op.nested:
            how = "nested pipeline, run per row on HyperNodesEngine"
        else:
            how = "async Daft function" if op.node.is_async else "sync, in worker threads"
        ins = ", ".join(
            f"{n}={s.name}" if isinstance(s, Column) else f"{n}=<constant>"
            for n, s in zip(op.node.inputs, op.args, strict=True)
        )
        print(f"  {where}.{op.node.name}({ins}) -> {', '.join(op.outs)}  [{how}]", file=out)
