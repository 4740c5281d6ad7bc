"""Resources: built once per scope, never pickled, torn down, cacheable (issue 15)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from hypernodes import (
    HyperNodesEngine,
    MemoryCache,
    NodeError,
    Pipeline,
    PipelineCallback,
    ResourceError,
    node,
    resource,
)
from hypernodes.resources import Held, Resource


class Model:
    """A heavy object that must never travel between processes."""

    def __init__(self, name: str = "small") -> None:
        self.name = name
        self.closed = False

    def __reduce__(self) -> Any:
        raise TypeError("a Model is never pickled")


class Hits(PipelineCallback):
    def __init__(self) -> None:
        self.cached: list[str] = []

    def on_node_cached(self, *, node: Any, **_: Any) -> None:
        self.cached.append(node.name)


@node(output_name="y")
def embed(x: int, model: Model) -> str:
    assert isinstance(model, Model)
    return f"{model.name}:{x}"


# -- the decorator ---------------------------------------------------------------------


def test_a_resource_joins_a_pipeline_like_a_node() -> None:
    @resource(scope="process")
    def model(model_name: str = "small") -> Model:
        return Model(model_name)

    assert isinstance(model, Resource)
    assert (model.name, model.outputs, model.inputs, model.scope) == (
        "model",
        ("model",),
        ("model_name",),
        "process",
    )
    assert repr(model) == "<Resource model(model_name) scope='process' kind='function'>"
    pipeline = Pipeline([model, embed])
    assert pipeline.inputs == ("x",)
    assert pipeline.optional_inputs == {"model_name": "small"}
    assert pipeline.outputs == ("y",)  # a resource is not a result
    assert pipeline.run({"x": 1, "model_name": "big"}) == {"y": "big:1"}


def test_name_and_bad_scope() -> None:
    @resource(name="clf")
    def make() -> Model:
        return Model("m")

    assert make.scope == "run"
    assert Pipeline([make, node(lambda clf: clf.name, name="f", output_name="n")]).run() == {
        "n": "m"
    }
    with pytest.raises(ValueError, match="resource scope must be one of 'run', 'engine'"):
        resource(scope="thread")(make.func)  # type: ignore[call-overload]


def test_a_resource_missing_its_input_is_a_missing_input() -> None:
    @resource
    def model(model_name: str) -> Model:
        return Model(model_name)

    pipeline = Pipeline([model, embed])
    assert pipeline.inputs == ("model_name", "x")
    with pytest.raises(Exception, match="model_name"):
        pipeline.run({"x": 1})


# -- every kind of factory -------------------------------------------------------------


def _factories(log: list[str]) -> dict[str, Any]:
    def function() -> Model:
        log.append("build")
        return Model("function")

    def generator() -> Iterator[Model]:
        log.append("build")
        m = Model("generator")
        yield m
        log.append("teardown")

    async def async_function() -> Model:
        log.append("build")
        return Model("async function")

    async def async_generator() -> AsyncIterator[Model]:
        log.append("build")
        yield Model("async generator")
        log.append("teardown")

    @contextlib.contextmanager
    def context_manager() -> Iterator[Model]:
        log.append("build")
        yield Model("context manager")
        log.append("teardown")

    @contextlib.asynccontextmanager
    async def async_context_manager() -> AsyncIterator[Model]:
        log.append("build")
        yield Model("async context manager")
        log.append("teardown")

    return {
        "function": (function, False),
        "generator": (generator, True),
        "async function": (async_function, False),
        "async generator": (async_generator, True),
        "context manager": (context_manager, True),
        "async context manager": (async_context_manager, True),
    }


KINDS = [
    "function",
    "generator",
    "async function",
    "async generator",
    "context manager",
    "async context manager",
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("consumer", ["sync", "async"])
def test_every_kind_of_factory_builds_once_per_run_and_tears_down(kind: str, consumer: str) -> None:
    log: list[str] = []
    factory, tears_down = _factories(log)[kind]
    model = resource(factory, name="model")

    if consumer == "sync":

        @node(output_name="y")
        def use(x: int, model: Model) -> str:
            return f"{model.name}:{x}"
    else:

        @node(output_name="y")
        async def use(x: int, model: Model) -> str:
            return f"{model.name}:{x}"

    pipeline = Pipeline([model, use])
    assert pipeline.run({"x": 1}) == {"y": f"{kind}:1"}
    assert log == (["build", "teardown"] if tears_down else ["build"])
    log.clear()
    results = pipeline.map({"x": [1, 2, 3]}, map_over="x")
    assert [r["y"] for r in results] == [f"{kind}:{i}" for i in (1, 2, 3)]
    assert log == (["build", "teardown"] if tears_down else ["build"])


# -- "run" scope -----------------------------------------------------------------------


@pytest.mark.parametrize("node_executor", ["sequential", "async", "threaded"])
def test_run_scope_built_once_per_run_and_map_torn_down_even_when_a_node_fails(
    node_executor: str,
) -> None:
    log: list[str] = []

    @resource(scope="run")
    def model() -> Iterator[Model]:
        m = Model()
        log.append("build")
        yield m
        m.closed = True
        log.append("teardown")

    @node(output_name="z")
    def fail(y: str, x: int) -> str:
        if x == 3:
            raise ValueError("boom")
        return y

    engine = HyperNodesEngine(node_executor=node_executor, map_executor="threaded")
    with engine:
        pipeline = Pipeline([model, embed], engine=engine)
        for _ in range(2):
            assert pipeline.run({"x": 1}) == {"y": "small:1"}
        assert log == ["build", "teardown"] * 2
        log.clear()
        assert len(pipeline.map({"x": list(range(20))}, map_over="x")) == 20
        assert log == ["build", "teardown"]
        log.clear()
        failing = Pipeline([model, embed, fail], engine=engine)
        with pytest.raises(NodeError) as info:
            failing.map({"x": list(range(8))}, map_over="x")
        assert info.value.node == "fail"
        assert log == ["build", "teardown"]
        log.clear()
        with pytest.raises(NodeError):
            failing.run({"x": 3})
        assert log == ["build", "teardown"]


def test_nested_pipelines_share_the_run_resource() -> None:
    builds: list[int] = []

    @resource
    def model() -> Model:
        builds.append(1)
        return Model("outer")

    inner = Pipeline([embed], name="inner")
    outer = Pipeline([model, inner.as_node(map_over="x", name="per_item")])
    assert outer.run({"x": [1, 2]}) == {"y": ["outer:1", "outer:2"]}
    assert builds == [1]


def test_a_resource_is_lazy_it_is_not_built_when_no_node_needs_it() -> None:
    builds: list[int] = []

    @resource
    def model() -> Model:
        builds.append(1)
        return Model()

    @node(output_name="other")
    def other(x: int) -> int:
        return x

    pipeline = Pipeline([model, embed, other])
    assert pipeline.run({"x": 2}, output_name="other") == {"other": 2}
    assert builds == []


# -- "engine" scope --------------------------------------------------------------------


@pytest.mark.asyncio
async def test_engine_scope_built_once_across_50_concurrent_aruns_torn_down_on_aclose() -> None:
    log: list[str] = []
    gate = asyncio.Event()

    @resource(scope="engine")
    async def client() -> AsyncIterator[Model]:
        log.append("build")
        await gate.wait()  # every run asks while it is being built
        yield Model("client")
        log.append("teardown")

    @node(output_name="y")
    async def call(x: int, client: Model) -> str:
        return f"{client.name}:{x}"

    engine = HyperNodesEngine(node_executor="async")
    pipeline = Pipeline([client, call], engine=engine)
    async with engine:
        runs = [asyncio.create_task(pipeline.arun({"x": i})) for i in range(50)]
        await asyncio.sleep(0.05)
        gate.set()
        results = await asyncio.gather(*runs)
        assert [r["y"] for r in results] == [f"client:{i}" for i in range(50)]
        assert log == ["build"]
        await pipeline.arun({"x": 0})
        assert log == ["build"]
    assert log == ["build", "teardown"]


def test_engine_scope_close_and_reuse() -> None:
    log: list[str] = []

    @resource(scope="engine")
    def model() -> Iterator[Model]:
        log.append("build")
        yield Model()
        log.append("teardown")

    engine = HyperNodesEngine()
    pipeline = Pipeline([model, embed], engine=engine)
    pipeline.run({"x": 1})
    pipeline.map({"x": [1, 2]}, map_over="x")
    assert log == ["build"]
    engine.close()
    assert log == ["build", "teardown"]
    pipeline.run({"x": 1})
    engine.close()
    assert log == ["build", "teardown"] * 2


# -- concurrency -----------------------------------------------------------------------


def test_concurrent_first_uses_from_threads_build_once() -> None:
    builds: list[int] = []
    started = threading.Barrier(8)

    @resource(scope="engine")
    def model() -> Model:
        builds.append(1)
        return Model()

    @node(output_name="y")
    def use(x: int, model: Model) -> int:
        return x

    engine = HyperNodesEngine(map_executor="threaded", max_workers=8)
    with engine:
        pipeline = Pipeline([model, use], engine=engine)

        def run(i: int) -> None:
            started.wait()
            pipeline.run({"x": i})

        threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert pipeline.map({"x": list(range(50))}, map_over="x")[-1] == {"y": 49}
    assert builds == [1]


# -- failures --------------------------------------------------------------------------


@pytest.mark.parametrize("node_executor", ["sequential", "async", "threaded"])
def test_a_resource_that_fails_raises_resource_error_and_built_ones_are_torn_down(
    node_executor: str,
) -> None:
    log: list[str] = []

    @resource
    def first() -> Iterator[str]:
        log.append("first built")
        yield "first"
        log.append("first torn down")

    @resource
    def second(first: str) -> Model:
        raise OSError("no such model")

    @node(output_name="a")
    def use_first(first: str) -> str:
        return first

    @node(output_name="b")
    def use_second(a: str, second: Model) -> str:
        return a

    engine = HyperNodesEngine(node_executor=node_executor)
    pipeline = Pipeline([first, second, use_first, use_second], engine=engine, name="p")
    with pytest.raises(ResourceError) as info:
        pipeline.run()
    err = info.value
    assert isinstance(err, NodeError)
    assert (err.resource, err.node, err.pipeline_path) == ("second", "use_second", ("p",))
    assert isinstance(err.__cause__, OSError)
    assert str(err) == (
        "resource 'second' failed to build for node 'use_second' in p: OSError: no such model"
    )
    assert log == ["first built", "first torn down"]
    engine.close()


def test_a_failed_build_is_tried_again_by_the_next_run() -> None:
    calls: list[int] = []

    @resource(scope="engine")
    def model() -> Model:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("flaky")
        return Model()

    with HyperNodesEngine() as engine:
        pipeline = Pipeline([model, embed], engine=engine)
        with pytest.raises(ResourceError, match="flaky"):
            pipeline.run({"x": 1})
        assert pipeline.run({"x": 1}) == {"y": "small:1"}


def test_a_teardown_that_fails_is_a_resource_error_after_a_run_that_succeeded() -> None:
    @resource
    def model() -> Iterator[Model]:
        yield Model()
        raise RuntimeError("cannot close")

    with pytest.raises(ResourceError, match="resource 'model' failed to tear down"):
        Pipeline([model, embed]).run({"x": 1})


def test_resource_error_pickles() -> None:
    err = ResourceError("model", node="embed")
    err.__cause__ = ValueError("x")
    back = pickle.loads(pickle.dumps(err))
    assert (back.resource, back.node, type(back.__cause__)) == ("model", "embed", ValueError)


# -- cache -----------------------------------------------------------------------------


def test_nodes_taking_a_resource_are_cacheable_by_its_code_and_inputs(
    recwarn: pytest.WarningsRecorder,
) -> None:
    builds: list[str] = []

    @resource(scope="process")
    def model(model_name: str = "small") -> Model:
        builds.append(model_name)
        return Model(model_name)

    hits = Hits()
    pipeline = Pipeline([model, embed], cache=MemoryCache(), callbacks=[hits])
    pipeline.run({"x": 1})
    pipeline.run({"x": 1})
    assert hits.cached == ["embed"]
    pipeline.run({"x": 1, "model_name": "big"})  # another input: another version
    assert hits.cached == ["embed"]
    assert not recwarn.list  # no CacheWarning
    assert builds == ["small", "big"]  # the second run was all hits: nothing built


# -- processes -------------------------------------------------------------------------


def _process_pipeline(log: Path) -> Pipeline:
    @resource(scope="process")
    def model(log: str) -> Model:
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        return Model("worker")

    return Pipeline([model, embed], cache=MemoryCache())


@pytest.mark.parametrize("role", ["map_executor", "node_executor"])
def test_process_scope_in_a_parallel_map_is_built_once_per_worker_and_never_pickled(
    tmp_path: Path, role: str
) -> None:
    log = tmp_path / "pids"
    log.touch()
    hits = Hits()
    with HyperNodesEngine(**{role: "parallel"}, max_workers=2) as engine:  # type: ignore[arg-type]
        pipeline = _process_pipeline(log).with_engine(engine)
        results = pipeline.map({"x": list(range(100)), "log": str(log)}, map_over="x")
        assert [r["y"] for r in results] == [f"worker:{i}" for i in range(100)]
        pids = log.read_text().split()
        assert 1 <= len(pids) <= 2
        assert len(set(pids)) == len(pids)  # once per worker process
        assert str(os.getpid()) not in pids  # never in this process
        pipeline.with_callbacks([hits])
        pipeline.map({"x": list(range(100)), "log": str(log)}, map_over="x")
        assert hits.cached == ["embed"] * 100
        assert log.read_text().split() == pids


def test_a_parallel_map_on_two_workers_builds_it_exactly_twice(tmp_path: Path) -> None:
    log = tmp_path / "pids"
    log.touch()
    barrier_dir = tmp_path

    @node(output_name="y")
    def slow_embed(x: int, model: Model) -> str:
        # Each worker holds an item until the other one has one too: both build.
        (barrier_dir / f"{os.getpid()}").touch()
        while len([p for p in barrier_dir.iterdir() if p.name.isdigit()]) < 2:
            pass
        return f"{model.name}:{x}"

    @resource(scope="process")
    def model(log: str) -> Model:
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        return Model("worker")

    with HyperNodesEngine(map_executor="parallel", max_workers=2) as engine:
        pipeline = Pipeline([model, slow_embed], engine=engine)
        results = pipeline.map({"x": list(range(100)), "log": str(log)}, map_over="x")
    assert len(results) == 100
    pids = log.read_text().split()
    assert len(pids) == 2 and len(set(pids)) == 2
    assert str(os.getpid()) not in pids


def test_run_scope_in_a_worker_is_built_once_per_worker(tmp_path: Path) -> None:
    # The rule: in a worker process, every scope is the worker's process.
    log = tmp_path / "pids"
    log.touch()

    @resource(scope="run")
    def model(log: str) -> Model:
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        return Model("worker")

    with HyperNodesEngine(map_executor="parallel", max_workers=1) as engine:
        pipeline = Pipeline([model, embed], engine=engine)
        pipeline.map({"x": list(range(20)), "log": str(log)}, map_over="x")
    assert len(log.read_text().split()) == 1


def test_a_handle_pickles_without_its_object() -> None:
    @resource(scope="process")
    def model() -> Model:
        return Model()

    held = Held(model, (), None)
    back = pickle.loads(pickle.dumps(held))
    assert back.resource is model  # the copy this process knows
    assert isinstance(back.get(), Model)
    assert back.get() is held.get()  # one object per process


# -- FastAPI ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_fastapi_engine_scoped_client_opened_in_the_lifespan() -> None:
    fastapi = pytest.importorskip("fastapi")
    httpx = pytest.importorskip("httpx")

    opened: list[str] = []

    upstream = fastapi.FastAPI()

    @upstream.get("/double/{x}")
    async def double(x: int) -> dict[str, int]:
        return {"y": 2 * x}

    # -- the README's example (an upstream service over ASGI instead of the network) --
    @resource(scope="engine")
    async def http() -> AsyncIterator[Any]:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=upstream), base_url="http://upstream"
        ) as client:
            opened.append("open")
            yield client
        opened.append("closed")

    @node(output_name="y")
    async def fetch(x: int, http: Any) -> int:
        response = await http.get(f"/double/{x}")
        return int(response.json()["y"])

    engine = HyperNodesEngine(node_executor="async")
    pipeline = Pipeline([http, fetch], engine=engine)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        async with engine:  # the client is closed when the app shuts down
            yield

    app = fastapi.FastAPI(lifespan=lifespan)

    @app.get("/compute/{x}")
    async def compute(x: int) -> dict[str, int]:
        return await pipeline.arun({"x": x})

    # -- serving it: the lifespan around concurrent requests --
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            responses = await asyncio.gather(*(client.get(f"/compute/{i}") for i in range(20)))
        assert [r.json() for r in responses] == [{"y": 2 * i} for i in range(20)]
        assert opened == ["open"]
    assert opened == ["open", "closed"]


# -- DaftEngine ------------------------------------------------------------------------


def test_daft_engine_builds_a_process_resource_once_per_worker() -> None:
    pytest.importorskip("daft")
    from hypernodes.engines import DaftEngine

    builds: list[int] = []

    @resource(scope="process")
    def model() -> Model:
        builds.append(os.getpid())
        return Model("daft")

    pipeline = Pipeline([model, embed], engine=DaftEngine())
    assert pipeline.run({"x": 1}) == {"y": "daft:1"}
    results = pipeline.map({"x": [1, 2, 3]}, map_over="x")
    assert [r["y"] for r in results] == ["daft:1", "daft:2", "daft:3"]
    assert builds == [os.getpid()]  # the native runner's workers are threads of this process
