"""Used by a web service: FastAPI handlers that run a pipeline per request.

An ``async def`` handler awaits ``pipeline.arun(...)``; a plain ``def`` handler calls
``pipeline.run(...)`` (FastAPI runs it in its thread pool). Hundreds of concurrent
requests each get their own, correct answer, and the event loop is never blocked, even
while one request's sync node blocks for a whole second.

Note on the heartbeat bound: with 200+ requests in one process (client and server on
the same loop), the loop is legitimately busy for tens of milliseconds at a time just
parsing and routing requests, so "never blocked" is judged against the blocking node:
had its second of blocking run on the loop, the heartbeat would see a gap of >= 1 s.

The end proves what the README says about cancellation: a client disconnect does not
cancel a FastAPI handler; cancelling a run cancels its async nodes at once and starts
nothing more, while a sync body already in a worker thread finishes and is dropped; the
README's service snippet (run as written) cancels on disconnect; ``bind`` is shared.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from hypernodes import HyperNodesEngine, NodeError, Pipeline, node

fastapi = pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

N_REQUESTS = 240
SLOW_USER = 7  # this request's sync node blocks for SLOW_SECONDS
SLOW_SECONDS = 1.0
MAX_GAP = 0.5  # well under SLOW_SECONDS

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class Arrivals:
    """Holds every request inside the pipeline until ``n`` of them are there at once."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.inside = 0
        self.peak = 0
        self.all_in = asyncio.Event()

    async def wait(self, user_id: int) -> None:
        self.inside += 1
        self.peak = max(self.peak, self.inside)
        if self.inside >= self.n:
            self.all_in.set()
        try:
            await asyncio.wait_for(self.all_in.wait(), 30)
            await asyncio.sleep(0.001 * (user_id % 50))  # spread the replies out
        finally:
            self.inside -= 1


@node
async def fetch_user(user_id: int, arrivals: Arrivals | None = None) -> dict[str, Any]:
    if arrivals is not None:
        await arrivals.wait(user_id)
    await asyncio.sleep(0.001)  # an I/O call (database, HTTP)
    return {"id": user_id, "name": f"user{user_id}", "seen_by": request_id.get()}


@node
async def fetch_orders(user_id: int, limit: int = 3) -> list[int]:
    await asyncio.sleep(0.001 * (user_id % 4))  # responses come back out of order
    return [user_id * 100 + k for k in range(limit)]


@node
def score(fetch_user: dict[str, Any], fetch_orders: list[int]) -> dict[str, Any]:
    # Blocking work in a plain function; one request blocks for a whole second.
    time.sleep(SLOW_SECONDS if fetch_user["id"] == SLOW_USER else 0.002)
    return {
        "user": fetch_user["name"],
        "total": sum(fetch_orders),
        "request": request_id.get(),  # contextvars travel into the worker thread
        "async_request": fetch_user["seen_by"],
    }


@node
def check(user_id: int) -> int:
    if user_id < 0:
        raise ValueError(f"bad user id {user_id}")
    return user_id


def expected(user_id: int, limit: int, rid: str) -> dict[str, Any]:
    return {
        "user": f"user{user_id}",
        "total": sum(user_id * 100 + k for k in range(limit)),
        "request": rid,
        "async_request": rid,
    }


def make_app(pipeline: Pipeline, arrivals: Arrivals | None = None) -> Any:
    app = fastapi.FastAPI()

    async def tag_request(request: fastapi.Request) -> None:
        request_id.set(request.headers.get("x-request-id", "-"))

    tagged = [fastapi.Depends(tag_request)]

    @app.get("/async/{user_id}", dependencies=tagged)
    async def async_handler(user_id: int, limit: int = 3) -> dict[str, Any]:
        inputs = {"user_id": user_id, "limit": limit, "arrivals": arrivals}
        result = await pipeline.arun(inputs, output_name="score")
        return result["score"]  # type: ignore[no-any-return]

    @app.get("/sync/{user_id}", dependencies=tagged)
    def sync_handler(user_id: int, limit: int = 3) -> dict[str, Any]:
        # FastAPI runs plain `def` handlers in its thread pool: run() there is fine.
        result = pipeline.run({"user_id": user_id, "limit": limit}, output_name="score")
        return result["score"]  # type: ignore[no-any-return]

    @app.get("/checked/{user_id}")
    async def checked(user_id: int) -> dict[str, Any]:
        try:
            return await pipeline.arun({"user_id": user_id}, output_name="check")
        except NodeError as err:
            raise fastapi.HTTPException(status_code=422, detail=str(err.__cause__)) from err

    return app


@pytest_asyncio.fixture(params=["sequential", "async", "threaded"])
async def api(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Any, Arrivals]]:
    # Enough workers that 240 blocking bodies of 2 ms finish quickly on every executor.
    engine = HyperNodesEngine(node_executor=request.param, max_workers=8, max_concurrent=50)
    pipeline = Pipeline([fetch_user, fetch_orders, score, check], engine=engine, name="api")
    arrivals = Arrivals(N_REQUESTS)
    transport = httpx.ASGITransport(app=make_app(pipeline, arrivals))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
        yield http, arrivals
    await engine.aclose()


async def fire(calls: list[Callable[[], Any]]) -> list[Any]:
    """Start every call, a few per loop iteration (as requests arrive at a server), and
    gather the responses; the requests are all in flight together."""
    tasks = []
    for k, call in enumerate(calls):
        tasks.append(asyncio.create_task(call()))
        if k % 10 == 9:
            await asyncio.sleep(0)
    return list(await asyncio.gather(*tasks))


@pytest.mark.asyncio
async def test_async_handler_under_hundreds_of_concurrent_requests(
    api: tuple[Any, Arrivals], heartbeat: Callable[..., Any]
) -> None:
    client, arrivals = api

    def call(i: int) -> Callable[[], Any]:
        headers = {"x-request-id": f"req-{i}"}
        return lambda: client.get(f"/async/{i}", params={"limit": 1 + i % 5}, headers=headers)

    started = time.perf_counter()
    async with heartbeat(0.005) as hb:
        responses = await fire([call(i) for i in range(N_REQUESTS)])
    assert arrivals.peak == N_REQUESTS  # all requests were inside the pipeline at once
    for i, response in enumerate(responses):
        assert response.status_code == 200, response.text
        assert response.json() == expected(i, 1 + i % 5, f"req-{i}")  # its own answer
    assert time.perf_counter() - started >= SLOW_SECONDS
    assert hb.ticks >= 20
    assert hb.max_gap < MAX_GAP, f"the event loop stalled for {hb.max_gap * 1000:.0f} ms"


@pytest.mark.asyncio
async def test_sync_handler_calling_run_in_the_threadpool(
    api: tuple[Any, Arrivals], heartbeat: Callable[..., Any]
) -> None:
    client, _ = api

    def call(i: int) -> Callable[[], Any]:
        return lambda: client.get(f"/sync/{i}", headers={"x-request-id": f"sync-{i}"})

    started = time.perf_counter()
    async with heartbeat(0.005) as hb:
        responses = await fire([call(i) for i in range(N_REQUESTS)])
    for i, response in enumerate(responses):
        assert response.status_code == 200, response.text
        assert response.json() == expected(i, 3, f"sync-{i}")
    assert time.perf_counter() - started >= SLOW_SECONDS
    assert hb.max_gap < MAX_GAP, f"the event loop stalled for {hb.max_gap * 1000:.0f} ms"


@pytest.mark.asyncio
async def test_a_failing_request_does_not_disturb_the_others(api: tuple[Any, Arrivals]) -> None:
    client, _ = api
    bad = {i for i in range(100) if i % 10 == 0}
    responses = await fire(
        [(lambda i=i: client.get(f"/checked/{-i - 1 if i in bad else i}")) for i in range(100)]
    )
    for i, response in enumerate(responses):
        if i in bad:
            assert response.status_code == 422
            assert response.json() == {"detail": f"bad user id {-i - 1}"}
        else:
            assert response.status_code == 200
            assert response.json() == {"check": i}


@pytest.mark.asyncio
async def test_handlers_leave_no_tasks_or_pool_threads_behind() -> None:
    before = {t.ident for t in threading.enumerate()}
    engine = HyperNodesEngine(node_executor="threaded", max_workers=4)
    pipeline = Pipeline([fetch_user, fetch_orders, score], engine=engine)
    transport = httpx.ASGITransport(app=make_app(pipeline))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
        responses = await fire([(lambda i=i: http.get(f"/async/{i + 100}")) for i in range(50)])
    assert all(r.status_code == 200 for r in responses)
    await engine.aclose()
    assert asyncio.all_tasks() == {asyncio.current_task()}
    leftover = [
        t.name
        for t in threading.enumerate()
        if t.ident not in before and t.name.startswith("hypernodes")
    ]
    assert leftover == []


# -- cancellation and client disconnects (what the README says) ------------------------

README = Path(__file__).resolve().parent.parent / "README.md"


class Probe:
    """Records what the nodes of one run did; events say when they are running."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.async_running = asyncio.Event()
        self.release_async = asyncio.Event()
        self.sync_running = threading.Event()
        self.release_sync = threading.Event()
        self.sync_finished = threading.Event()

    def pipeline(self) -> Pipeline:
        @node(output_name="page")
        async def fetch(url: str) -> str:
            self.log.append("fetch started")
            self.async_running.set()
            try:
                await self.release_async.wait()
            except asyncio.CancelledError:
                self.log.append("fetch cancelled")
                raise
            return url

        @node(output_name="parsed")
        def parse(url: str) -> str:
            self.log.append("parse started")
            self.sync_running.set()
            self.release_sync.wait(30)  # a blocking body: no way to interrupt it
            self.log.append("parse finished")
            self.sync_finished.set()
            return url

        @node(output_name="summary")
        def summarize(page: str, parsed: str) -> str:
            self.log.append("summarize ran")
            return page + parsed

        return Pipeline([fetch, parse, summarize], name="summary")


async def asgi_get(app: Any, path: str, query: str, client_gone: asyncio.Event) -> list[Any]:
    """A GET through the ASGI interface, as a server drives it: once ``client_gone`` is
    set, ``receive()`` reports ``http.disconnect`` (what uvicorn does when the client has
    closed the connection). Returns what the app sent."""
    sent: list[Any] = []
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await client_gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [],
        "client": ("client", 1),
        "server": ("api", 80),
    }
    await app(scope, receive, send)
    return sent


def readme_service(pipeline: Pipeline) -> dict[str, Any]:
    """The README's web-service snippet, run as written, around ``pipeline``."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### In a web service") :]
    start = section.index("```python\n") + len("```python\n")
    code = section[start : section.index("\n```", start)]
    namespace: dict[str, Any] = {"pipeline": pipeline, "__name__": "readme_service"}
    exec(compile(code, str(README), "exec"), namespace)
    return namespace


@pytest.mark.asyncio
@pytest.mark.parametrize("executor", ["async", "threaded"])
async def test_cancelling_a_request_cancels_async_nodes_and_drops_a_running_sync_body(
    executor: str,
) -> None:
    probe = Probe()
    engine = HyperNodesEngine(node_executor=executor, max_workers=2)
    pipeline = probe.pipeline().with_engine(engine)
    app = fastapi.FastAPI()

    @app.get("/summary")
    async def summary(url: str) -> dict[str, Any]:
        return await pipeline.arun({"url": url}, output_name="summary")

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
        request = asyncio.create_task(http.get("/summary", params={"url": "a.com"}))
        await asyncio.wait_for(probe.async_running.wait(), 10)
        assert await asyncio.to_thread(probe.sync_running.wait, 10)
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
    # Cancelled at once: the async node saw CancelledError; the sync body is still
    # running in its thread (arun did not wait for it), and the run has no task left.
    assert probe.log[-1] == "fetch cancelled"
    assert not probe.sync_finished.is_set()
    assert asyncio.all_tasks() == {asyncio.current_task()}
    probe.release_sync.set()
    assert await asyncio.to_thread(probe.sync_finished.wait, 10)
    await engine.aclose()
    assert asyncio.all_tasks() == {asyncio.current_task()}
    assert "summarize ran" not in probe.log  # nothing downstream started
    assert sorted(probe.log) == [
        "fetch cancelled",
        "fetch started",
        "parse finished",
        "parse started",
    ]


@pytest.mark.asyncio
async def test_a_client_disconnect_does_not_cancel_a_plain_handler() -> None:
    # FastAPI keeps running a handler whose client has gone: the README says so.
    done = asyncio.Event()

    @node(output_name="summary")
    async def slow(url: str) -> str:
        await done.wait()
        return url

    engine = HyperNodesEngine(node_executor="async")
    pipeline = Pipeline([slow], engine=engine)
    app = fastapi.FastAPI()

    @app.get("/summary")
    async def summary(url: str) -> dict[str, Any]:
        return await pipeline.arun({"url": url}, output_name="summary")

    gone = asyncio.Event()
    call = asyncio.create_task(asgi_get(app, "/summary", "url=a.com", gone))
    gone.set()
    for _ in range(20):  # the app had every chance to notice the disconnect
        await asyncio.sleep(0)
    assert not call.done()
    done.set()
    sent = await asyncio.wait_for(call, 10)
    await engine.aclose()
    assert sent[0]["status"] == 200  # the run went on to the end, for nobody


@pytest.mark.asyncio
async def test_the_readme_service_cancels_the_run_when_the_client_disconnects() -> None:
    probe = Probe()
    service = readme_service(probe.pipeline())
    assert service["engine"].to_config()["node_executor"] == "async"
    gone = asyncio.Event()
    call = asyncio.create_task(asgi_get(service["app"], "/summary", "url=a.com", gone))
    await asyncio.wait_for(probe.async_running.wait(), 10)
    assert await asyncio.to_thread(probe.sync_running.wait, 10)
    gone.set()  # the client closes the connection
    sent = await asyncio.wait_for(call, 10)
    assert sent[0]["status"] == 499
    assert "fetch cancelled" in probe.log
    probe.release_sync.set()
    assert await asyncio.to_thread(probe.sync_finished.wait, 10)
    await service["engine"].aclose()
    assert "summarize ran" not in probe.log


@pytest.mark.asyncio
async def test_the_readme_service_answers_a_client_that_stays() -> None:
    probe = Probe()
    probe.release_async.set()
    probe.release_sync.set()
    service = readme_service(probe.pipeline())
    transport = httpx.ASGITransport(app=service["app"])
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
        response = await http.get("/summary", params={"url": "a.com"})
    await service["engine"].aclose()
    assert response.status_code == 200
    assert response.json() == {"summary": "a.coma.com"}


@pytest.mark.asyncio
async def test_bind_is_shared_by_concurrent_requests_inputs_are_not() -> None:
    # What the README warns about: bind() changes the shared pipeline in place.
    @node(output_name="greeting")
    async def greet(user: str) -> str:
        return f"hello {user}"

    engine = HyperNodesEngine(node_executor="async")
    pipeline = Pipeline([greet], engine=engine)
    both_bound = asyncio.Event()
    bound: list[str] = []
    app = fastapi.FastAPI()

    @app.get("/bind/{user}")
    async def with_bind(user: str) -> dict[str, Any]:
        pipeline.bind(user=user)
        bound.append(user)
        if len(bound) == 2:
            both_bound.set()
        await both_bound.wait()  # any await between bind and arun: here, the other request's
        return await pipeline.arun()

    @app.get("/inputs/{user}")
    async def with_inputs(user: str) -> dict[str, Any]:
        bound.append(user)
        if len(bound) == 2:
            both_bound.set()
        await both_bound.wait()
        return await pipeline.arun({"user": user})

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
        wrong = await asyncio.gather(http.get("/bind/ann"), http.get("/bind/bob"))
        pipeline.unbind("user")
        bound.clear()
        both_bound.clear()
        right = await asyncio.gather(http.get("/inputs/ann"), http.get("/inputs/bob"))
    await engine.aclose()
    assert [r.json() for r in wrong] == [{"greeting": "hello bob"}] * 2  # ann got bob's
    assert [r.json() for r in right] == [{"greeting": "hello ann"}, {"greeting": "hello bob"}]
