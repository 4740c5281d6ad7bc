"""Recording a worker's events for the orchestrator to replay (``Recorder``), and noting
which node a process-pool worker runs (``Marker``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..callbacks import HOOKS, CallbackContext, PipelineCallback
from ..executors.processes import mark_position

if TYPE_CHECKING:
    from ..node import Node
    from ..pipeline import Pipeline

__all__ = ["Level", "Marker", "Record", "Recorder"]

# One context level below the item: (kind, pipeline name, nested node name, item index).
Level = tuple[str, str, str | None, int | None]
Record = tuple[str, tuple[Level, ...], dict[str, Any]]

_NAMED = {"node", "pipeline"}


class Recorder(PipelineCallback):
    """Runs in the worker: records every event of an item's sub-run for replay.

    Objects (nodes, pipelines) are recorded by name and inputs/outputs are dropped, so
    records stay small and picklable; the orchestrator resolves names back to objects.
    """

    def __init__(self) -> None:
        self.records: list[Record] = []


class Marker(PipelineCallback):
    """Runs in a process-pool worker: notes which node of the item is running on the
    pool's board, so that if the worker dies the orchestrator can name that node."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.positions = {n.name: k + 1 for k, n in enumerate(pipeline.nodes)}

    def on_node_start(self, *, context: CallbackContext, node: Node, **_: Any) -> None:
        if context.parent is None:
            mark_position(self.positions.get(node.name, 0))

    def on_node_end(self, *, context: CallbackContext, **_: Any) -> None:
        if context.parent is None:
            mark_position(0)

    def on_nested_pipeline_start(self, *, context: CallbackContext, node: Node, **_: Any) -> None:
        if context.depth == 1:
            mark_position(self.positions.get(node.name, 0))

    def on_nested_pipeline_end(self, *, context: CallbackContext, **_: Any) -> None:
        if context.depth == 1:
            mark_position(0)


def _recording_hook(hook: str) -> Any:
    def record(self: Recorder, **event: Any) -> None:
        context: CallbackContext = event.pop("context")
        levels: list[Level] = []
        ctx: CallbackContext | None = context
        while ctx is not None and ctx.parent is not None:
            levels.append((ctx.kind, ctx.pipeline, ctx.node, ctx.index))
            ctx = ctx.parent
        fields = {k: (v.name if k in _NAMED else v) for k, v in event.items()}
        for drop in ("inputs", "outputs"):
            if drop in fields:
                fields[drop] = {}
        self.records.append((hook, tuple(reversed(levels)), fields))

    record.__name__ = hook
    return record


for _hook in HOOKS:
    if _hook not in ("on_pipeline_start", "on_pipeline_end"):
        setattr(Recorder, _hook, _recording_hook(_hook))
