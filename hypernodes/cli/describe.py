"""What ``hypernodes inspect`` shows: inputs with types and defaults, outputs, nodes, nesting.

Types are the annotations as written on the node functions (strings stay strings, so
nothing is evaluated or imported); an input or output seen through a mapped nested
pipeline is shown as ``list[...]``. With ``--json``, the JSON Schema of the pipeline's input
and output models (pydantic) comes too.
"""

from __future__ import annotations

import inspect
import json
import typing
from typing import Any

from ..nested import PipelineNode
from ..node import Node
from ..pipeline import Pipeline
from .encode import to_jsonable

__all__ = ["describe", "render", "schemas"]


def describe(pipeline: Pipeline) -> dict[str, Any]:
    """A JSON-ready description of ``pipeline``, nested pipelines included."""
    in_types = input_types(pipeline)
    out_types = output_types(pipeline)
    producer = {out: n.name for n in pipeline.nodes for out in n.outputs}
    nested = [n for n in pipeline.nodes if isinstance(n, PipelineNode)]
    return {
        "name": pipeline.name,
        "inputs": [{"name": n, "type": in_types.get(n)} for n in pipeline.inputs],
        "optional_inputs": [
            {"name": n, "type": in_types.get(n), "default": to_jsonable(v)}
            for n, v in pipeline.optional_inputs.items()
        ],
        "bound_inputs": [{"name": n, "type": in_types.get(n)} for n in pipeline.bound],
        "outputs": [
            {"name": o, "type": out_types.get(o), "node": producer[o]} for o in pipeline.outputs
        ],
        "nodes": [_node(n) for n in pipeline.nodes],
        "pipelines": [_nested(n) for n in nested],
        "engine": None if pipeline.engine is None else repr(pipeline.engine),
    }


def schemas(pipeline: Pipeline) -> dict[str, Any]:
    """The JSON Schema of the pipeline's input and output models (``input_schema``,
    ``output_schema``); a field whose type JSON Schema cannot describe (any class) is
    left open (``{}``).

    Raises:
        ImportError: pydantic 2 is not installed.
    """
    from pydantic.json_schema import GenerateJsonSchema  # deferred: an optional extra

    class Lenient(GenerateJsonSchema):
        def handle_invalid_for_json_schema(self, schema: Any, error_info: str) -> Any:
            return {}

    return {
        "input_schema": pipeline.input_model().model_json_schema(schema_generator=Lenient),
        "output_schema": pipeline.output_model().model_json_schema(schema_generator=Lenient),
    }


def _node(node: Node) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": node.name,
        "kind": "pipeline" if isinstance(node, PipelineNode) else "node",
        "inputs": list(node.inputs),
        "outputs": list(node.outputs),
        "async": bool(node.is_async),
    }
    if not isinstance(node, PipelineNode):
        entry.update(cache=node.cache, retries=node.retries, timeout=node.timeout)
    return entry


def _nested(node: PipelineNode) -> dict[str, Any]:
    return {
        "node": node.name,
        "map_over": None if node.map_over is None else list(node.map_over),
        "map_mode": node.map_mode if node.map_over else None,
        "input_mapping": dict(node.input_mapping),
        "output_mapping": dict(node.output_mapping),
        "pipeline": describe(node.pipeline),
    }


def input_types(pipeline: Pipeline) -> dict[str, str]:
    """The annotated type of each input name, from the nodes that consume it."""
    found: dict[str, list[str]] = {}
    for node in pipeline.nodes:
        for name, text in _node_input_types(node).items():
            if text is not None and text not in found.setdefault(name, []):
                found[name].append(text)
    return {name: " or ".join(texts) for name, texts in found.items() if texts}


def output_types(pipeline: Pipeline) -> dict[str, str]:
    """The annotated type of each output, from the return annotations."""
    return {
        name: text
        for node in pipeline.nodes
        for name, text in _node_output_types(node).items()
        if text is not None
    }


def _node_input_types(node: Node) -> dict[str, str | None]:
    if isinstance(node, PipelineNode):
        inner = input_types(node.pipeline)
        to_inner = node.input_mapping
        mapped = set(node.map_over or ())
        result: dict[str, str | None] = {}
        for outer in node.inputs:
            text = inner.get(to_inner.get(outer, outer))
            result[outer] = _listed(text) if outer in mapped else text
        return result
    params = _signature(node.func)
    if params is None:
        return {}
    return {name: _format(params[name].annotation) for name in node.inputs if name in params}


def _node_output_types(node: Node) -> dict[str, str | None]:
    if isinstance(node, PipelineNode):
        inner = output_types(node.pipeline)
        to_outer = node.output_mapping
        listed = bool(node.map_over)
        result: dict[str, str | None] = {}
        for inner_name, text in inner.items():
            outer = to_outer.get(inner_name, inner_name)
            if outer in node.outputs:
                result[outer] = _listed(text) if listed else text
        return result
    try:
        annotation = inspect.signature(node.func).return_annotation
    except (TypeError, ValueError):
        return {}
    if len(node.outputs) == 1:
        return {node.outputs[0]: _format(annotation)}
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is tuple and len(args) == len(node.outputs):
        return {name: _format(arg) for name, arg in zip(node.outputs, args, strict=True)}
    return {}


def _signature(func: Any) -> dict[str, inspect.Parameter] | None:
    try:
        return dict(inspect.signature(func).parameters)
    except (TypeError, ValueError):
        return None


def _format(annotation: Any) -> str | None:
    if annotation is inspect.Parameter.empty or annotation is inspect.Signature.empty:
        return None
    if isinstance(annotation, str):
        return annotation
    return inspect.formatannotation(annotation)


def _listed(text: str | None) -> str | None:
    return None if text is None else f"list[{text}]"


def render(info: dict[str, Any], indent: str = "") -> str:
    """Human-readable text for a :func:`describe` result."""
    lines = [f"{indent}Pipeline {info['name']!r}"]
    pad = indent + "  "
    if info["engine"] is not None:
        lines.append(f"{pad}engine: {info['engine']}")
    lines.append(f"{pad}required inputs:")
    lines += [f"{pad}  {_typed(i)}" for i in info["inputs"]] or [f"{pad}  (none)"]
    if info["optional_inputs"]:
        lines.append(f"{pad}optional inputs:")
        lines += [
            f"{pad}  {_typed(i)} = {json.dumps(i['default'])}" for i in info["optional_inputs"]
        ]
    if info["bound_inputs"]:
        lines.append(f"{pad}bound inputs:")
        lines += [f"{pad}  {_typed(i)}" for i in info["bound_inputs"]]
    lines.append(f"{pad}outputs:")
    lines += [f"{pad}  {_typed(o)}  (from {o['node']})" for o in info["outputs"]]
    lines.append(f"{pad}nodes:")
    for n in info["nodes"]:
        kind = "pipeline" if n["kind"] == "pipeline" else ("async" if n["async"] else "sync")
        lines.append(
            f"{pad}  {n['name']}({', '.join(n['inputs'])}) -> {', '.join(n['outputs'])}  [{kind}]"
        )
    for p in info["pipelines"]:
        mapped = ""
        if p["map_over"]:
            mapped = f", maps over {', '.join(p['map_over'])} ({p['map_mode']})"
        lines.append(f"{pad}nested pipeline via node {p['node']!r}{mapped}:")
        for label in ("input_mapping", "output_mapping"):
            if p[label]:
                pairs = ", ".join(f"{a} -> {b}" for a, b in p[label].items())
                lines.append(f"{pad}  {label.replace('_', ' ')}: {pairs}")
        lines.append(render(p["pipeline"], pad + "  "))
    return "\n".join(lines)


def _typed(entry: dict[str, Any]) -> str:
    return entry["name"] if entry["type"] is None else f"{entry['name']}: {entry['type']}"
