"""Streaming nodes and run events: generator nodes, ``astream`` / ``stream``, chunk events.

A generator (or async generator) node's value is the list of its chunks; ``astream``
delivers each chunk as it is yielded (timestamps prove they are spaced, not bunched at
the end) and each requested output as soon as it exists, under every executor, from
nested pipelines and map items, from the cache, with retries, callbacks and telemetry,
and through a real uvicorn server as server-sent events (the README's snippet).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hypernodes import (
    Chunk,
    HyperNodesEngine,
    MemoryCache,
    NodeError,
    Output,
    Pipeline,
    PipelineCallback,
    Retry,
    node,
)
from hypernodes.callbacks import CallbackContext
from hypernodes.node import Node

N_CHUNKS = 20
GAP = 0.01  # seconds between chunks
FIRST_CHUNK = 0.03  # the bound on the first chunk (checked with slack for load)
SLACK = 3.0  # a loaded 2-core CI machine: the bound times this, still far from the end


# -- the 3-node pipeline of the issue ------------------------------------------------------


@node(output_name="prompt")
def build_prompt(question: str) -> str:
    return f"Q: {question}"


@node(output_name="tokens")
async def generate(prompt: str) -> AsyncIterator[str]:
    for i in range(N_CHUNKS):
        await asyncio.sleep(GAP)
        yield f"t{i} "


@node(output_name="tokens")
def generate_sync(prompt: str) -> Iterator[str]:
    for i in range(N_CHUNKS):
        time.sleep(GAP)
        yield f"t{i} "


@node(output_name="answer")
def join(tokens: list[str]) -> str:
    return "".join(tokens).strip()


TOKENS = [f"t{i} " for i in range(N_CHUNKS)]
ANSWER = "".join(TOKENS).strip()


async def timed(events: AsyncIterator[Any]) -> list[tuple[float, Any]]:
    start = time.perf_counter()
    return [(time.perf_counter() - start, event) async for event in events]


def check_streamed(got: list[tuple[float, Any]], *, since_start: bool = True) -> None:
    """The issue's shape: prompt, then the 20 chunks in order and spaced, then tokens and
    answer; the first chunk soon after the start (``since_start``: of the run; else of the
    streaming node, when its input exists: a process pool may take long to start)."""
    events = [e for _, e in got]
    assert events[0] == Output("prompt", "Q: why")
    chunks = [(t, e) for t, e in got if isinstance(e, Chunk)]
    assert [e.value for _, e in chunks] == TOKENS
    assert all(e.node == "generate" or e.node == "generate_sync" for _, e in chunks)
    assert all(e.path == ("qa",) and e.index is None for _, e in chunks)
    assert events[-2:] == [Output("tokens", TOKENS), Output("answer", ANSWER)]
    times = [t for t, _ in chunks]
    began = 0.0 if since_start else got[0][0]
    assert times[0] - began < FIRST_CHUNK * SLACK, f"first chunk after {times[0]:.3f} s"
    # Spaced, not bunched at the end: the last came (N-1) gaps after the first, and most
    # arrived a gap apart.
    assert times[-1] - times[0] >= (N_CHUNKS - 1) * GAP * 0.8
    spaced = sum(b - a >= GAP / 2 for a, b in itertools.pairwise(times))
    assert spaced >= N_CHUNKS // 2, [round(b - a, 4) for a, b in itertools.pairwise(times)]


@pytest.mark.asyncio
@pytest.mark.parametrize("executor", ["sequential", "async"])
async def test_an_async_generator_streams_its_chunks_then_the_outputs(executor: str) -> None:
    engine = HyperNodesEngine(node_executor=executor)
    pipeline = Pipeline([build_prompt, generate, join], engine=engine, name="qa")
    async with engine, pipeline.astream({"question": "why"}) as events:
        got = await timed(events)
    check_streamed(got)
    assert await pipeline.arun({"question": "why"}) == {
        "prompt": "Q: why",
        "tokens": TOKENS,
        "answer": ANSWER,
    }


def test_run_returns_the_list_and_the_downstream_value() -> None:
    pipeline = Pipeline([build_prompt, generate, join], name="qa")
    assert pipeline.run({"question": "why"}) == {
        "prompt": "Q: why",
        "tokens": TOKENS,
        "answer": ANSWER,
    }
    sync = Pipeline([build_prompt, generate_sync, join], name="qa")
    assert sync.run({"question": "why"}, output_name="answer") == {"answer": ANSWER}
    assert generate.is_stream and generate.is_async
    assert generate_sync.is_stream and not generate_sync.is_async
    assert repr(generate) == "<async stream Node generate(prompt) -> 'tokens'>"


@pytest.mark.asyncio
@pytest.mark.parametrize("executor", ["threaded", "parallel"])
async def test_a_sync_generator_streams_from_a_worker_thread(executor: str) -> None:
    # With "parallel" the generator runs in a thread of this process (the documented
    # fallback): its chunks still arrive one by one, not when it ends.
    engine = HyperNodesEngine(node_executor=executor, max_workers=1)
    pipeline = Pipeline([build_prompt, generate_sync, join], engine=engine, name="qa")
    async with engine, pipeline.astream({"question": "why"}) as events:
        got = await timed(events)
    check_streamed(got, since_start=executor != "parallel")


def test_stream_is_the_sync_twin() -> None:
    # From a script: the sync generator runs in a thread (a consumer reads the chunks).
    pipeline = Pipeline([build_prompt, generate_sync, join], name="qa")
    start = time.perf_counter()
    got = [(time.perf_counter() - start, e) for e in pipeline.stream({"question": "why"})]
    check_streamed(got)
    only = list(
        Pipeline([build_prompt, generate, join], name="qa").stream({"question": "why"}, "answer")
    )
    assert [e.value for e in only if isinstance(e, Chunk)] == TOKENS
    assert only[-1] == Output("answer", ANSWER)
    assert not any(isinstance(e, Output) and e.name != "answer" for e in only)


@pytest.mark.asyncio
async def test_stream_works_while_a_loop_runs_in_the_thread() -> None:
    # (A Jupyter cell: the run goes to the background loop thread.)
    pipeline = Pipeline([build_prompt, generate, join], name="qa")
    events = list(pipeline.stream({"question": "why"}, output_name="answer"))
    assert [e.value for e in events if isinstance(e, Chunk)] == TOKENS
    assert events[-1] == Output("answer", ANSWER)


@pytest.mark.asyncio
async def test_a_requested_output_given_as_input_is_an_output_event_at_once() -> None:
    pipeline = Pipeline([build_prompt, generate, join], name="qa")
    async with pipeline.astream({"prompt": "given"}, ["prompt", "answer"]) as events:
        got = [e async for e in events]
    assert got[0] == Output("prompt", "given")
    assert got[-1] == Output("answer", ANSWER)


# -- nested pipelines and maps --------------------------------------------------------------


@node(output_name="words")
async def words_of(doc: str) -> AsyncIterator[str]:
    for word in doc.split():
        await asyncio.sleep(0)
        yield word


@node(output_name="count")
def count(words: list[str]) -> int:
    return len(words)


@pytest.mark.asyncio
@pytest.mark.parametrize("map_executor", ["sequential", "async"])
async def test_chunks_of_a_mapped_nested_pipeline_carry_its_path_and_item_index(
    map_executor: str,
) -> None:
    inner = Pipeline([words_of, count], name="inner")
    per_doc = inner.as_node(
        input_mapping={"docs": "doc"},
        output_mapping={"count": "counts"},
        map_over="docs",
        name="per_doc",
    )
    engine = HyperNodesEngine(map_executor=map_executor)
    outer = Pipeline([per_doc], engine=engine, name="outer")
    docs = ["a b", "c d e", "f"]
    async with engine, outer.astream({"docs": docs}) as events:
        got = [e async for e in events]
    chunks = [e for e in got if isinstance(e, Chunk)]
    assert {(c.node, c.path) for c in chunks} == {("words_of", ("outer", "per_doc"))}
    by_item = {i: [c.value for c in chunks if c.index == i] for i in range(3)}
    assert by_item == {0: ["a", "b"], 1: ["c", "d", "e"], 2: ["f"]}
    assert got[-1] == Output("counts", [2, 3, 1])


@pytest.mark.asyncio
async def test_chunks_of_a_nested_pipeline_have_no_index() -> None:
    inner = Pipeline([words_of, count], name="inner").as_node(name="inside")
    outer = Pipeline([inner], name="outer")
    async with outer.astream({"doc": "x y"}) as events:
        got = [e async for e in events]
    assert [e for e in got if isinstance(e, Chunk)] == [
        Chunk("words_of", ("outer", "inside"), None, "x"),
        Chunk("words_of", ("outer", "inside"), None, "y"),
    ]
    # A nested pipeline's outputs come when it returns (no node event carries them).
    assert got[-2:] == [Output("words", ["x", "y"]), Output("count", 2)]


# -- leaving early ---------------------------------------------------------------------------


class Probe:
    """A streaming pipeline whose generator says when it ended, and whose downstream node
    says whether it ran."""

    def __init__(self, n: int = 100, gap: float = GAP) -> None:
        self.n = n
        self.gap = gap
        self.finished = threading.Event()
        self.downstream = False
        self.thread: int | None = None

    def pipeline(self, *, sync: bool = False, engine: Any = None) -> Pipeline:
        probe = self

        @node(output_name="tokens")
        async def tokens(prompt: str) -> AsyncIterator[int]:
            try:
                for i in range(probe.n):
                    await asyncio.sleep(probe.gap)
                    yield i
            finally:
                probe.finished.set()

        @node(output_name="tokens", name="tokens")
        def tokens_sync(prompt: str) -> Iterator[int]:
            probe.thread = threading.get_ident()
            try:
                for i in range(probe.n):
                    time.sleep(probe.gap)
                    yield i
            finally:
                probe.finished.set()

        @node(output_name="answer")
        def after(tokens: list[int]) -> int:
            probe.downstream = True
            return len(tokens)

        return Pipeline(
            [build_prompt, tokens_sync if sync else tokens, after], engine=engine, name="qa"
        )

    async def ended(self, within: float = 10.0) -> bool:
        deadline = time.monotonic() + within
        while not self.finished.is_set():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.005)
        return True


def others() -> set[asyncio.Task[Any]]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


@pytest.mark.asyncio
async def test_leaving_after_3_chunks_cancels_the_run_and_the_generator() -> None:
    probe = Probe()
    seen = []
    async with probe.pipeline().astream({"question": "q"}) as events:
        async for event in events:
            if isinstance(event, Chunk):
                seen.append(event.value)
                if len(seen) == 3:
                    break
    # An async generator is cancelled before aclose() returns: its finally has run.
    assert probe.finished.is_set()
    assert seen == [0, 1, 2]
    assert not probe.downstream
    assert not others()


@pytest.mark.asyncio
async def test_a_dropped_iterator_cancels_the_run() -> None:
    probe = Probe()
    events = probe.pipeline().astream({"question": "q"})
    async for event in events:
        if isinstance(event, Chunk) and event.value == 2:
            break
    del events  # nothing can read its events any more
    assert await probe.ended()
    await asyncio.sleep(0.01)
    assert not probe.downstream
    assert not others()


@pytest.mark.asyncio
async def test_cancelling_the_consumer_cancels_the_run() -> None:
    probe = Probe()

    async def consume() -> None:
        async for _ in probe.pipeline().astream({"question": "q"}):
            pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(5 * GAP)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await probe.ended()
    assert not probe.downstream


@pytest.mark.asyncio
@pytest.mark.parametrize("executor", ["sequential", "threaded"])
async def test_leaving_stops_a_sync_generator_in_its_thread(executor: str) -> None:
    probe = Probe()
    engine = HyperNodesEngine(node_executor=executor)
    async with engine, probe.pipeline(sync=True, engine=engine).astream({"question": "q"}) as ev:
        async for event in ev:
            if isinstance(event, Chunk) and event.value == 2:
                break
    # The thread stops the generator after its next chunk (aclose waited for it): its
    # finally ran there, and no thread still runs it.
    assert probe.finished.is_set()
    assert probe.thread is not None and probe.thread != threading.get_ident()
    assert not probe.downstream
    assert not others()


@pytest.mark.asyncio
async def test_a_sync_generator_stuck_in_a_chunk_is_left_to_stop_later() -> None:
    probe = Probe(n=3, gap=1.5)  # each chunk takes 1.5 s: more than the grace
    pipeline = probe.pipeline(sync=True)
    start = time.perf_counter()
    async with pipeline.astream({"question": "q"}) as events:
        async for event in events:
            if isinstance(event, Output):  # the prompt: the generator starts now
                while probe.thread is None:  # (in its thread, inside its first chunk)
                    await asyncio.sleep(0.001)
                break
    assert time.perf_counter() - start < 1.0  # not held up until its chunk is done
    assert not probe.finished.is_set()
    assert await probe.ended()  # it stopped at its next chunk
    assert not probe.downstream


def test_leaving_stream_early_cancels_the_run() -> None:
    probe = Probe()
    for event in probe.pipeline().stream({"question": "q"}):
        if isinstance(event, Chunk) and event.value == 2:
            break
    assert probe.finished.wait(10)
    assert not probe.downstream


# -- failures, retries, timeouts ----------------------------------------------------------


@node(output_name="total")
def total(tokens: list[int]) -> int:
    return sum(tokens)


class Flaky:
    """A streaming node that fails on its first attempt after ``after`` chunks."""

    def __init__(self, after: int, retries: int = 2) -> None:
        self.attempts = 0
        self.after = after
        flaky = self

        @node(output_name="tokens", retries=Retry(retries))
        async def tokens(prompt: str) -> AsyncIterator[int]:
            flaky.attempts += 1
            for i in range(4):
                if flaky.attempts == 1 and i == flaky.after:
                    raise ConnectionError("dropped")
                await asyncio.sleep(0)
                yield i

        self.node: Node = tokens


@pytest.mark.asyncio
async def test_a_stream_that_failed_after_reaching_a_client_is_not_retried() -> None:
    flaky = Flaky(after=2)
    pipeline = Pipeline([build_prompt, flaky.node, total], name="qa")
    seen: list[Any] = []
    with pytest.raises(NodeError) as info:
        async with pipeline.astream({"question": "q"}) as events:
            async for event in events:
                seen.append(event)
    assert flaky.attempts == 1
    assert [e.value for e in seen if isinstance(e, Chunk)] == [0, 1]
    assert info.value.node == "tokens" and info.value.attempts == 1
    assert type(info.value.__cause__) is ConnectionError


@pytest.mark.asyncio
async def test_a_stream_that_failed_before_its_first_chunk_is_retried() -> None:
    flaky = Flaky(after=0)
    pipeline = Pipeline([build_prompt, flaky.node], name="qa")
    async with pipeline.astream({"question": "q"}, "tokens") as events:
        got = [e async for e in events]
    assert flaky.attempts == 2
    assert got == [
        *(Chunk("tokens", ("qa",), None, i) for i in range(4)),
        Output("tokens", [0, 1, 2, 3]),
    ]


def test_without_a_client_a_failed_stream_is_retried() -> None:
    flaky = Flaky(after=2)
    result = Pipeline([build_prompt, flaky.node], name="qa").run({"question": "q"}, "tokens")
    assert result == {"tokens": [0, 1, 2, 3]}  # the successful attempt's chunks only
    assert flaky.attempts == 2


@pytest.mark.asyncio
@pytest.mark.parametrize("sync", [False, True])
async def test_a_failure_is_raised_after_the_chunks_before_it(sync: bool) -> None:
    @node(output_name="tokens")
    async def broken(prompt: str) -> AsyncIterator[int]:
        yield 1
        raise ValueError("bad token")

    @node(output_name="tokens", name="broken")
    def broken_sync(prompt: str) -> Iterator[int]:
        yield 1
        raise ValueError("bad token")

    engine = HyperNodesEngine(node_executor="threaded")
    pipeline = Pipeline([build_prompt, broken_sync if sync else broken, total], engine=engine)
    seen: list[Any] = []
    async with engine:
        with pytest.raises(NodeError) as info:
            async for event in pipeline.astream({"question": "q"}):
                seen.append(event)
    assert seen[-1] == Chunk("broken", ("pipeline",), None, 1)
    assert info.value.node == "broken"
    assert type(info.value.__cause__) is ValueError


@pytest.mark.asyncio
async def test_a_timeout_bounds_the_whole_stream() -> None:
    stopped = threading.Event()

    @node(output_name="tokens", timeout=0.1)
    async def stalls(prompt: str) -> AsyncIterator[int]:
        try:
            yield 1
            await asyncio.sleep(30)
            yield 2
        finally:
            stopped.set()

    with pytest.raises(NodeError) as info:
        await Pipeline([build_prompt, stalls]).arun({"question": "q"})
    assert "timed out after 0.1 s" in str(info.value)
    assert stopped.is_set()


def test_a_generator_node_has_one_output() -> None:
    def pair() -> Iterator[int]:
        yield 1

    with pytest.raises(ValueError, match=r"streaming node.*one output name"):
        node(pair, output_name=("a", "b"))


def test_many_fast_chunks_from_a_thread_arrive_all_and_in_order() -> None:
    @node(output_name="numbers")
    def numbers(n: int) -> Iterator[int]:
        yield from range(n)

    engine = HyperNodesEngine(node_executor="threaded")
    with engine:
        events = list(Pipeline([numbers], engine=engine).stream({"n": 20_000}))
    assert [e.value for e in events[:-1]] == list(range(20_000))
    assert events[-1] == Output("numbers", list(range(20_000)))


# -- cache, callbacks, telemetry, DaftEngine ------------------------------------------------


@pytest.mark.asyncio
async def test_a_cache_hit_emits_the_cached_chunks_at_once() -> None:
    calls = []

    @node(output_name="tokens")
    async def cached_tokens(prompt: str) -> AsyncIterator[str]:
        calls.append(prompt)
        for word in ["a", "b", "c"]:
            await asyncio.sleep(GAP)
            yield word

    pipeline = Pipeline([build_prompt, cached_tokens, join], cache=MemoryCache(), name="qa")
    async with pipeline.astream({"question": "q"}) as events:
        first = [e async for e in events]
    async with pipeline.astream({"question": "q"}) as events:
        second = await timed(events)
    assert [e for _, e in second] == first  # the same events...
    assert len(calls) == 1  # ...without running the generator again
    assert second[-1][0] < 2 * GAP * SLACK
    assert [e.value for e in first if isinstance(e, Chunk)] == ["a", "b", "c"]


class Recorder(PipelineCallback):
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.threads: set[int] = set()

    def on_node_start(self, *, context: CallbackContext, node: Node, inputs: Any) -> None:
        self.events.append(("start", node.name))

    def on_node_chunk(self, *, context: CallbackContext, node: Node, chunk: Any) -> None:
        self.threads.add(threading.get_ident())
        self.events.append(("chunk", node.name, chunk, "/".join(context.path)))

    def on_node_end(self, *, context: CallbackContext, node: Node, **_: Any) -> None:
        self.events.append(("end", node.name))

    def on_node_cached(self, *, context: CallbackContext, node: Node, **_: Any) -> None:
        self.events.append(("cached", node.name))


@pytest.mark.parametrize("executor", ["sequential", "threaded"])
def test_on_node_chunk_is_called_per_chunk_between_start_and_end(executor: str) -> None:
    rec = Recorder()
    engine = HyperNodesEngine(node_executor=executor)
    with engine:
        pipeline = Pipeline([build_prompt, generate_sync, join], engine=engine, callbacks=[rec])
        pipeline.run({"question": "q"})
    assert rec.events == [
        ("start", "build_prompt"),
        ("end", "build_prompt"),
        ("start", "generate_sync"),
        *(("chunk", "generate_sync", t, "pipeline") for t in TOKENS),
        ("end", "generate_sync"),
        ("start", "join"),
        ("end", "join"),
    ]
    assert rec.threads == {threading.get_ident()}  # on the loop's thread, whatever ran it


def test_a_cache_hit_calls_on_node_chunk_before_on_node_cached() -> None:
    rec = Recorder()
    pipeline = Pipeline([generate_sync], cache=MemoryCache(), callbacks=[rec])
    pipeline.run({"prompt": "p"})
    rec.events.clear()
    pipeline.run({"prompt": "p"})
    assert rec.events == [
        *(("chunk", "generate_sync", t, "pipeline") for t in TOKENS),
        ("cached", "generate_sync"),
    ]


def test_a_hook_written_without_context_still_gets_chunks() -> None:
    class Narrow(PipelineCallback):
        def __init__(self) -> None:
            self.chunks: list[Any] = []

        def on_node_chunk(self, *, chunk: Any) -> None:  # type: ignore[override]
            self.chunks.append(chunk)

    narrow = Narrow()
    Pipeline([generate_sync], callbacks=[narrow]).run({"prompt": "p"})
    assert narrow.chunks == TOKENS


def test_telemetry_records_chunks_and_time_to_first_chunk() -> None:
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from hypernodes.telemetry import TelemetryCallback

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry = TelemetryCallback(tracer_provider=provider)
    pipeline = Pipeline([build_prompt, generate, join], callbacks=[telemetry], cache=MemoryCache())
    pipeline.run({"question": "q"})
    pipeline.run({"question": "q"})  # a hit
    spans = [s for s in exporter.get_finished_spans() if s.name == "node generate"]
    ran, hit = spans
    assert ran.attributes is not None and hit.attributes is not None
    assert ran.attributes["hypernodes.chunks"] == N_CHUNKS
    first = ran.attributes["hypernodes.time_to_first_chunk_s"]
    assert isinstance(first, float)
    assert GAP / 2 <= first < ran.attributes["hypernodes.duration_s"]  # type: ignore[operator]
    assert hit.attributes["hypernodes.cached"] is True
    assert hit.attributes["hypernodes.chunks"] == N_CHUNKS


def test_daft_engine_runs_streaming_nodes() -> None:
    pytest.importorskip("daft")
    from hypernodes.engines import DaftEngine

    pipeline = Pipeline([build_prompt, generate, join], engine=DaftEngine(), name="qa")
    assert pipeline.run({"question": "why"}) == {
        "prompt": "Q: why",
        "tokens": TOKENS,
        "answer": ANSWER,
    }
    # Daft hands rows back when its plan has run: the chunks come then, in order.
    events = list(pipeline.stream({"question": "why"}, output_name="answer"))
    assert [e.value for e in events if isinstance(e, Chunk)] == TOKENS
    assert events[-1] == Output("answer", ANSWER)
    sync = Pipeline([generate_sync], engine=DaftEngine())
    assert sync.map({"prompt": ["a", "b"]}, "prompt") == [{"tokens": TOKENS}] * 2


# -- the README's server-sent events endpoint, served by uvicorn ----------------------------

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_sse_app(pipeline: Pipeline) -> Any:
    """The README's FastAPI server-sent-events snippet, run as written."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Streaming to clients") :]
    block = section[: section.index("StreamingResponse(events()")]
    start = block.rindex("```python\n") + len("```python\n")
    code = section[start : section.index("\n```", start)]
    namespace: dict[str, Any] = {"pipeline": pipeline, "__name__": "readme_sse"}
    exec(compile(code, str(README), "exec"), namespace)
    return namespace["app"]


class Served:
    """A uvicorn server on 127.0.0.1 (a free port), in a thread."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(20)
        self.sock.close()


@pytest.fixture
def served() -> Callable[[Pipeline], Served]:
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    return lambda pipeline: Served(readme_sse_app(pipeline))


def sse(lines: Iterator[str]) -> Iterator[tuple[float, str, Any]]:
    """``(arrival time, event name, data)`` per server-sent event."""
    name = "message"
    for line in lines:
        if line.startswith("event: "):
            name = line[len("event: ") :]
        elif line.startswith("data: "):
            yield time.perf_counter(), name, json.loads(line[len("data: ") :])
            name = "message"


def test_the_readme_sse_endpoint_streams_chunks_one_by_one(
    served: Callable[[Pipeline], Served],
) -> None:
    import httpx

    probe = Probe(n=N_CHUNKS, gap=0.02)
    with served(probe.pipeline()) as url, httpx.Client(base_url=url, timeout=20) as client:
        start = time.perf_counter()
        with client.stream("GET", "/ask", params={"question": "why"}) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            got = list(sse(response.iter_lines()))
    assert [(n, d) for _, n, d in got] == [
        *(("message", i) for i in range(N_CHUNKS)),
        ("answer", N_CHUNKS),
    ]
    times = [t - start for t, n, _ in got if n == "message"]
    assert times[-1] - times[0] >= (N_CHUNKS - 1) * 0.02 * 0.8  # one by one, not at the end
    spaced = sum(b - a >= 0.01 for a, b in itertools.pairwise(times))
    assert spaced >= N_CHUNKS // 2
    assert probe.finished.is_set() and probe.downstream


def test_closing_the_sse_connection_stops_the_generator(
    served: Callable[[Pipeline], Served],
) -> None:
    import httpx

    probe = Probe(n=1000, gap=0.02)  # 20 s if nothing stopped it
    with served(probe.pipeline()) as url, httpx.Client(base_url=url, timeout=20) as client:
        with client.stream("GET", "/ask", params={"question": "why"}) as response:
            seen = []
            for _, _, data in sse(response.iter_lines()):
                seen.append(data)
                if len(seen) == 3:
                    break
        # (Leaving the block closed the connection mid-stream.)
        assert probe.finished.wait(10), "the generator kept running after the disconnect"
    assert seen == [0, 1, 2]
    assert not probe.downstream
