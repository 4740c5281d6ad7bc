"""Pipeline: the user's object: nodes, configuration, run/arun/map/amap, as_node."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from types import EllipsisType, MappingProxyType
from typing import TYPE_CHECKING, Any

from .errors import InvalidInputError, MissingInputError
from .graph import UNNAMED, Graph
from .lazy import LazyModule
from .node import Node
from .resources import Resource
from .running import Running, _inputs

if TYPE_CHECKING:
    import networkx as nx
    import pydantic

    from . import plan as plans
    from . import streaming
    from .cache import explain as explaining
else:
    nx = LazyModule("networkx")  # heavy, and only Pipeline.graph needs it
    pydantic = LazyModule("pydantic")  # an optional extra: input_model / output_model
    plans = LazyModule("hypernodes.plan")  # about 2 ms: paid on the first run, not on import
    streaming = LazyModule("hypernodes.streaming")  # asyncio: only streamed runs load it
    explaining = LazyModule("hypernodes.cache.explain")  # only explain() needs it

__all__ = ["Pipeline"]


class Pipeline(Running):
    """A validated graph of nodes, and how to run it.

    The graph is built and validated once, here; runs never rebuild it.

    Args:
        nodes: The nodes: ``@node`` functions, nested ``PipelineNode``s, and pipelines
            (nested as they are, as ``pipeline.as_node()`` would).
        engine: How to run it; inherits (or uses the global default) when ``None``.
        cache: A cache store; inherits (or uses the global default) when ``None``.
        callbacks: Callbacks; inherit (or use the global default) when ``None``.
        name: A name for paths, errors and pictures (default ``"pipeline"``).
        check_types: Check that what each node returns fits what the nodes reading it
            take, by their annotations (``False`` skips the check; unannotated ends are
            never checked). See :mod:`hypernodes.edges`.

    Raises:
        TypeError: An element of ``nodes`` is not a node, ``engine`` is not an Engine,
            ``cache`` is not a Cache, or ``callbacks`` is not a list of callbacks.
        DuplicateOutputError: Two nodes produce the same output.
        CycleError: The nodes form a cycle.
        TypeMismatchError: A node returns a value as a type the node reading it cannot
            take (both annotated); the message names both nodes, the value and both types.
        PipelineDefinitionError: Two nodes share a name or disagree on a default.
    """

    def __init__(
        self,
        nodes: Sequence[Node | Pipeline],
        engine: Engine | None = None,
        cache: Any = None,
        callbacks: Sequence[PipelineCallback] | None = None,
        name: str | None = None,
        *,
        check_types: bool = True,
    ) -> None:
        if isinstance(nodes, Node | Pipeline) or not isinstance(nodes, Iterable):
            hint = "; wrap it in a list: [...]" if isinstance(nodes, Node | Pipeline) else ""
            raise TypeError(f"nodes must be a list of nodes, got {nodes!r}{hint}")
        self._graph = Graph([n.as_node() if isinstance(n, Pipeline) else n for n in nodes])
        self.check_types = bool(check_types)
        if self.check_types:
            check_edges(self._graph.nodes, self._graph.producer)
        self.name = name or UNNAMED
        self.engine: Engine | None = None
        self.with_engine(engine)
        check_cache(cache)
        self.own_cache: Any = UNSET if cache is None else cache
        self.own_callbacks: tuple[PipelineCallback, ...] | Any = (
            UNSET if callbacks is None else check_callbacks(callbacks)
        )
        self._bound: dict[str, Any] = {}
        self._plans: dict[tuple[Any, ...], plans.Plan] = {}
        self._nx: nx.DiGraph | None = None

    # -- introspection ------------------------------------------------------------------

    @property
    def nodes(self) -> tuple[Node, ...]:
        """The nodes, in the order given."""
        return self._graph.nodes

    @property
    def graph(self) -> nx.DiGraph:
        """A networkx view of the graph: ``Node``s and root-input names (``str``)."""
        if self._nx is None:
            self._nx = self._graph.to_networkx()
        return self._nx

    @property
    def inputs(self) -> tuple[str, ...]:
        """Required root inputs (no default, not bound), in first-use order."""
        g = self._graph
        return tuple(n for n in g.root_inputs if n not in g.defaults and n not in self._bound)

    @property
    def optional_inputs(self) -> dict[str, Any]:
        """Root inputs with a default (not bound), with that default."""
        return {k: v for k, v in self._graph.defaults.items() if k not in self._bound}

    @property
    def outputs(self) -> tuple[str, ...]:
        """Every output name, in node order (resources are not outputs: nodes take them,
        runs do not return them)."""
        g = self._graph
        return tuple(n for n, i in g.producer.items() if not isinstance(g.nodes[i], Resource))

    @property
    def known_names(self) -> frozenset[str]:
        """Every name a run accepts as input: root inputs and (as overrides) outputs."""
        return frozenset(self._graph.consumers) | frozenset(self._graph.producer)

    @property
    def bound(self) -> Mapping[str, Any]:
        """Inputs fixed with :meth:`bind` (read-only view)."""
        return MappingProxyType(self._bound)

    @property
    def cache(self) -> Any:
        """The pipeline's own cache store, or ``None`` when it has none of its own."""
        return None if self.own_cache is UNSET else self.own_cache

    @property
    def callbacks(self) -> tuple[PipelineCallback, ...]:
        """The pipeline's own callbacks (empty when it has none of its own)."""
        own = self.own_callbacks
        return () if own is UNSET else own

    def input_model(self) -> type[pydantic.BaseModel]:
        """A pydantic model of this pipeline's inputs, from the nodes' annotations.

        Required inputs are required fields, optional inputs optional with their default;
        bound inputs are left out. Use it as a FastAPI request model, or to validate
        inputs before a run: ``pipeline.run(dict(Model.model_validate(data)))``.

        Raises:
            ImportError: pydantic 2 is not installed (``pip install 'hypernodes[types]'``).
        """
        from .models import input_model  # deferred: pydantic is an optional extra

        return input_model(self)

    def output_model(self, output_name: OutputName = None) -> type[pydantic.BaseModel]:
        """A pydantic model of what ``run(..., output_name=output_name)`` returns.

        Each output asked for (every output when ``None``) is a required field typed by its
        node's return annotation (``Any`` when it has none).

        Raises:
            ImportError: pydantic 2 is not installed (``pip install 'hypernodes[types]'``).
            InvalidInputError: ``output_name`` names something that is not an output.
        """
        from .models import output_model  # deferred: pydantic is an optional extra

        return output_model(self, output_name)

    def __repr__(self) -> str:
        nodes = ", ".join(n.name for n in self.nodes)
        return (
            f"<Pipeline {self.name!r} nodes=[{nodes}] inputs={list(self.inputs)} "
            f"outputs={list(self.outputs)}>"
        )

    # -- configuration (fluent: mutate and return self) ---------------------------------

    def with_engine(self, engine: Engine | None) -> Pipeline:
        """Use ``engine`` for this pipeline (``None``: inherit).

        Like every ``with_*`` method and :meth:`bind`, this changes this pipeline in place
        (and returns it): everything holding the object sees the change, runs already
        started included. Configure a shared pipeline once, up front.

        Raises:
            TypeError: ``engine`` is not an Engine instance.
        """
        check_engine(engine)
        self.engine = engine
        return self

    def with_cache(self, cache: Any) -> Pipeline:
        """Use ``cache`` for this pipeline; ``None`` turns caching off for it.

        Changes this pipeline in place, for everything holding it (see :meth:`with_engine`).

        Raises:
            TypeError: ``cache`` is not a ``Cache`` instance or ``None``.
        """
        check_cache(cache)
        self.own_cache = cache
        return self

    def with_callbacks(self, callbacks: Sequence[PipelineCallback] | None) -> Pipeline:
        """Use these callbacks for this pipeline; ``None`` or ``[]`` turns them off.

        Changes this pipeline in place, for everything holding it (see :meth:`with_engine`).

        Raises:
            TypeError: ``callbacks`` is not a list of ``PipelineCallback`` instances.
        """
        self.own_callbacks = () if callbacks is None else check_callbacks(callbacks)
        return self

    def with_name(self, name: str) -> Pipeline:
        """Rename the pipeline (in place, for everything holding it)."""
        self.name = name
        return self

    def bind(self, **values: Any) -> Pipeline:
        """Fix input values, so runs need not supply them (run inputs still win).

        This changes the pipeline in place (and returns it), so every caller holding the
        object sees the values: bind what is fixed for all of them (a model name, a
        client). Never bind per-request values on a shared pipeline: two concurrent
        requests doing ``pipeline.bind(user=...)`` would see each other's user. Pass them
        to the run instead, which is per call::

            result = await pipeline.arun({"user": user})

        Raises:
            InvalidInputError: A name is not an input of the pipeline.
        """
        for name in values:
            if name not in self._graph.consumers or name in self._graph.producer:
                raise InvalidInputError(
                    f"cannot bind {name!r}: it is not an input of pipeline {self.name!r}"
                    + _suggest(name, self._graph.root_inputs)
                )
        self._bound.update(values)
        self._plans.clear()
        return self

    def unbind(self, *names: str) -> Pipeline:
        """Remove bound values: those named, or every one when no name is given.

        Raises:
            InvalidInputError: A name is not bound.
        """
        if not names:
            names = tuple(self._bound)
        for name in names:
            if name not in self._bound:
                raise InvalidInputError(
                    f"cannot unbind {name!r}: it is not bound; bound inputs are "
                    f"{', '.join(map(repr, self._bound)) or 'none'}"
                )
        for name in names:
            del self._bound[name]
        self._plans.clear()
        return self

    # -- plans --------------------------------------------------------------------------

    def plan(
        self,
        output_name: OutputName,
        provided: Iterable[str],
        held: frozenset[str] = frozenset(),
    ) -> plans.Plan:
        """The compiled plan for ``output_name`` given ``provided`` input names (cached);
        ``held``: those of them an enclosing pipeline fills with resource handles.

        Raises:
            TypeError: ``output_name`` is not a str, a list of str or ``None``.
            InvalidInputError: Unknown input or output names.
            MissingInputError: Required inputs are neither provided nor bound.
        """
        names = frozenset(provided)
        out_key = output_name
        if not (output_name is None or isinstance(output_name, str)):
            out_key = tuple(output_name) if isinstance(output_name, Iterable) else (None,)
            if not all(isinstance(o, str) for o in out_key):
                raise TypeError(
                    "output_name must be an output name, a list of output names, or None "
                    f"(all outputs); got {output_name!r}"
                )
        key = (out_key, names) if not held else (out_key, names, held)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = self._compile(out_key, names, held)
        return plan

    def _compile(
        self, out_key: Any, names: frozenset[str], held: frozenset[str] = frozenset()
    ) -> plans.Plan:
        from .plan import compile_plan  # deferred: see ``plans`` above

        g = self._graph
        unknown = [n for n in names if n not in g.consumers and n not in g.producer]
        if unknown:
            listed = ", ".join(repr(n) + _suggest(n, self.known_names) for n in sorted(unknown))
            raise InvalidInputError(
                f"pipeline {self.name!r} got inputs it does not use: {listed}; its inputs are "
                f"{', '.join(map(repr, g.root_inputs)) or 'none'}"
            )
        if out_key is None:
            outputs = self.outputs
        else:
            outputs = (out_key,) if isinstance(out_key, str) else out_key
            if not outputs:
                raise InvalidInputError(
                    "output_name is an empty list; name one or more outputs, or pass None "
                    f"for all of them: {', '.join(map(repr, g.producer))}"
                )
            bad = [o for o in outputs if o not in g.producer and o not in g.consumers]
            if bad:
                raise InvalidInputError(
                    f"pipeline {self.name!r} has no output {', '.join(map(repr, bad))}"
                    f"{_suggest(bad[0], g.producer)}; its outputs are "
                    f"{', '.join(map(repr, g.producer))}"
                )
        provided = names | frozenset(self._bound)
        selection = g.select(outputs, provided)
        missing = {k: v for k, v in selection.required.items()}
        for o in outputs:  # an output asked for by name that is only a root input
            if o not in g.producer and o not in provided:
                missing.setdefault(o, ())
        if missing:
            raise MissingInputError(
                {
                    k: [g.nodes[i].name for i in v] or ["the output list"]
                    for k, v in missing.items()
                },
                pipeline=self.name,
            )
        return compile_plan(g, selection, outputs, provided, held)

    # -- composition --------------------------------------------------------------------

    def as_node(
        self,
        input_mapping: Mapping[str, str] | None = None,
        output_mapping: Mapping[str, str] | None = None,
        map_over: str | Sequence[str] | None = None,
        map_mode: MapMode = "zip",
        name: str | None = None,
        engine: Engine | None = None,
        cache: Any = ...,
        callbacks: Sequence[PipelineCallback] | EllipsisType | None = ...,
        on_error: OnError = "raise",
    ) -> PipelineNode:
        """Wrap this pipeline as a node of another pipeline.

        Args:
            input_mapping: ``{outer_name: inner_name}`` renames inputs.
            output_mapping: ``{inner_name: outer_name}``; only these outputs are exposed
                when given (all outputs otherwise).
            map_over: Outer input names that carry lists: the inner pipeline runs once per
                item and each exposed output becomes a list.
            map_mode: ``"zip"`` or ``"product"``.
            name: The node's name (default: the pipeline's name when it was given one,
                else its exposed outputs joined by ``_``, e.g. ``"clean_n_words"``).
            engine: Overrides the engine for this node.
            cache: Overrides the cache (``None`` turns it off); inherited when omitted.
                Whatever the store, a pipeline with a ``@node(cache=False)`` inside (at any
                depth) is never cached as a whole; its other nodes still are.
            callbacks: Replaces the pipeline's own callbacks for this node. The enclosing
                level's callbacks see every event inside whatever this says; these (or
                the pipeline's own) see the nested level's events too.
            on_error: With ``map_over``: ``"collect"`` runs every item and hands the outer
                pipeline lists holding an ``ItemFailure`` in each failed item's place
                (``"raise"``, the default: the first failure fails the node).

        Raises:
            PipelineDefinitionError: A mapping or ``map_over`` names something unknown.
            InvalidInputError: ``on_error`` is not ``"raise"`` or ``"collect"``.
        """
        return PipelineNode(
            self,
            input_mapping=input_mapping,
            output_mapping=output_mapping,
            map_over=map_over,
            map_mode=map_mode,
            name=name,
            engine=engine,
            cache=cache,
            callbacks=callbacks,
            on_error=on_error,
        )

    def stripped(self) -> Pipeline:
        """A copy without engine, cache and callbacks (what ships to remote workers)."""
        clone = Pipeline.__new__(Pipeline)
        clone.__setstate__(self.__getstate__())
        clone._bound = dict(self._bound)
        clone.engine = None
        clone.own_cache = None
        clone.own_callbacks = ()
        return clone

    def explain(
        self, inputs: Mapping[str, Any] | None = None, output_name: OutputName = None
    ) -> explaining.Explanation:
        """What :meth:`run` would take from the cache, and why each other node would run,
        without running a node: per node (in the order they would run) ``hit``, or
        ``miss`` with the reason (its code changed and which function, an input or an
        upstream node changed, never computed, not cacheable and which value, its
        ``cache=False``). ``str()`` of the result is a table; ``.rows`` the same as data.

        Args:
            inputs: Input values by name, as for :meth:`run`.
            output_name: The outputs :meth:`run` would compute; all when ``None``.

        Raises:
            MissingInputError: Required inputs are missing (all are listed).
            InvalidInputError: Unknown input or output names.
        """
        # Deferred: the cache's hashing libraries load when a cache is first used (and
        # config imports this module last, see the end of the module).
        from .cache.explain import explain
        from .config import effective_cache

        given = _inputs(inputs)
        plan = self.plan(output_name, given)
        values = {**plan.optional, **self._bound, **given}
        return explain(plan, values, effective_cache(self), self.name)

    def visualize(self, filename: str | None = None, **options: Any) -> Any:
        """A picture of the graph; see :func:`hypernodes.viz.visualize`."""
        from .viz import visualize  # deferred: the optional diagrams load on call

        return visualize(self, filename=filename, **options)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_plans"] = {}
        state["_nx"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


def _suggest(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# The kernel modules that name each other (callbacks, config, engines.base, nested, pipeline)
# import each other last, once every name of the module exists: then any of them can be
# imported first (tests/test_type_hints.py checks). Annotations need these names at run
# time (typing.get_type_hints), not only under TYPE_CHECKING.
from .callbacks import PipelineCallback  # noqa: E402
from .config import (  # noqa: E402
    UNSET,
    check_cache,
    check_callbacks,
    check_engine,
)
from .edges import check_edges  # noqa: E402
from .engines.base import Engine, MapMode, OnError, OutputName  # noqa: E402
from .nested import PipelineNode  # noqa: E402
