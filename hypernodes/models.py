"""Pydantic models of a pipeline's inputs and outputs, built from the nodes' annotations.

pydantic is an optional extra (``pip install 'hypernodes[types]'``): it is imported here
only, when a model is asked for, so ``import hypernodes`` never loads it.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .edges import input_types, output_types, type_text
from .errors import InvalidInputError
from .lazy import LazyModule
from .pipeline import Pipeline

if TYPE_CHECKING:
    import pydantic
else:
    pydantic = LazyModule("pydantic")  # an optional extra: imported when a model is built

__all__ = ["input_model", "output_model", "pydantic_module", "validate_inputs"]

INSTALL = "pip install 'hypernodes[types]'"


def pydantic_module() -> Any:
    """The pydantic module (v2).

    Raises:
        ImportError: pydantic 2 is not installed; the message says how to install it.
    """
    try:
        module = importlib.import_module("pydantic")  # deferred: an optional extra
    except ImportError as exc:
        raise ImportError(f"input and output models need pydantic 2: {INSTALL}") from exc
    version = str(getattr(module, "VERSION", "?"))
    if not version.startswith("2"):
        raise ImportError(f"input and output models need pydantic 2, found {version}: {INSTALL}")
    return module


def input_model(pipeline: Pipeline, *, map_over: Iterable[str] = ()) -> type[pydantic.BaseModel]:
    """A pydantic model of the inputs a run of ``pipeline`` takes.

    Required inputs are required fields; optional inputs (a default in the signature) are
    optional fields with that default; bound inputs are left out (a run may still pass
    them). Each field's type is the annotation of the nodes taking the input (``Any`` when
    none has one); an input named in ``map_over`` is a ``list`` of it.

    Raises:
        ImportError: pydantic 2 is not installed.
        InvalidInputError: ``map_over`` names something that is not an input.
    """
    module = pydantic_module()
    types = input_types(pipeline)
    mapped = set(map_over)
    unknown = mapped - set(types)
    if unknown:
        raise InvalidInputError(
            f"map_over names {', '.join(map(repr, sorted(unknown)))}, which is not an input "
            f"of pipeline {pipeline.name!r}"
        )
    fields: dict[str, Any] = {}
    for name in pipeline.inputs:
        fields[name] = (_listed(types[name], name in mapped), ...)
    for name, default in pipeline.optional_inputs.items():
        fields[name] = (_listed(types[name], name in mapped), default)
    return _model(module, f"{_camel(pipeline.name)}Inputs", fields)


def output_model(
    pipeline: Pipeline, output_name: str | Iterable[str] | None = None
) -> type[pydantic.BaseModel]:
    """A pydantic model of what a run of ``pipeline`` returns for ``output_name``.

    Every output asked for (all of them when ``None``) is a required field typed by its
    node's return annotation (``Any`` when it has none).

    Raises:
        ImportError: pydantic 2 is not installed.
        InvalidInputError: ``output_name`` names something that is not an output.
    """
    module = pydantic_module()
    types = output_types(pipeline)
    names = list(types) if output_name is None else _names(output_name)
    unknown = [n for n in names if n not in types]
    if unknown:
        raise InvalidInputError(
            f"pipeline {pipeline.name!r} has no output {', '.join(map(repr, unknown))}; its "
            f"outputs are {', '.join(map(repr, types))}"
        )
    fields = {name: (types[name], ...) for name in names}
    return _model(module, f"{_camel(pipeline.name)}Outputs", fields)


def validate_inputs(
    pipeline: Pipeline, values: Mapping[str, Any], *, map_over: Iterable[str] = ()
) -> dict[str, Any]:
    """``values`` checked against the annotations of the nodes taking them, and coerced
    (``"3"`` for an ``int`` becomes ``3``; a dict for a pydantic model, a model).

    Inputs and overridden outputs are checked (a name in ``map_over`` as a ``list`` of
    its type); names the pipeline does not know, unannotated ones and types pydantic
    cannot validate (any class) are passed through unchanged, for the run to judge.

    Raises:
        ImportError: pydantic 2 is not installed and some value has a type to check.
        InvalidInputError: A value does not fit; one line naming the input, the type
            expected and what was wrong.
    """
    inputs = input_types(pipeline)
    mapped = set(map_over)
    checked = dict(values)
    if not mapped <= set(inputs):
        return checked  # a bad map_over: the run says what is wrong with it, not this
    types = {**output_types(pipeline), **inputs}
    for name, value in values.items():
        tp = types.get(name, Any)
        if tp is Any:
            continue
        module = pydantic_module()
        expected = _listed(tp, name in mapped)
        try:
            adapter = module.TypeAdapter(expected)
        except Exception:  # a type pydantic cannot validate (an arbitrary class): the run judges
            continue
        try:
            checked[name] = adapter.validate_python(value)
        except module.ValidationError as exc:
            raise InvalidInputError(_one_line(name, expected, value, exc)) from None
    return checked


def _one_line(name: str, expected: Any, value: Any, exc: Any) -> str:
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": str(exc).splitlines()[0]}
    where = "".join(f"[{part!r}]" for part in first.get("loc", ()))
    got = repr(value)
    got = got if len(got) <= 60 else got[:57] + "..."
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    at = f" (at {name}{where})" if where else ""
    message = " ".join(str(first["msg"]).split())  # one line, whatever pydantic says
    return f"input {name!r} should be {type_text(expected)}, got {got}{at}: {message}{more}"


def _names(output_name: str | Iterable[str]) -> list[str]:
    if isinstance(output_name, str):
        return [output_name]
    names = list(output_name)
    if not all(isinstance(n, str) for n in names):
        raise TypeError(f"output_name must be a name or a list of names, got {output_name!r}")
    return names


def _listed(tp: Any, mapped: bool) -> Any:
    return list[tp] if mapped else tp


def _camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.replace("-", "_").split("_"))


def _model(
    module: Any, name: str, fields: Mapping[str, tuple[Any, Any]]
) -> type[pydantic.BaseModel]:
    """``pydantic.create_model``, with field names that would clash with BaseModel's own
    attributes (``json``, ``copy``, ``_private``) kept through aliases."""
    base = module.BaseModel
    safe: dict[str, Any] = {}
    for field, (tp, default) in fields.items():
        if field.startswith("_") or hasattr(base, field):
            info = module.Field(default, alias=field)
            safe[f"field_{field.strip('_')}_"] = (tp, info)
        else:
            safe[field] = (tp, default)
    config = module.ConfigDict(
        arbitrary_types_allowed=True,  # a node may take any class; it is checked with isinstance
        protected_namespaces=(),  # inputs like ``model_name`` are common in ML pipelines
        populate_by_name=True,
    )
    model: type[pydantic.BaseModel] = module.create_model(name, __config__=config, **safe)
    return model
