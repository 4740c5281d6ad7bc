"""The README's "Calling rate-limited APIs" example, against a fake LLM server.

The server (a FastAPI app reached through httpx's ASGI transport, no network) answers
429 when more than 8 requests are in flight or its token bucket (40, refilled at 40 per
second, as providers meter) is empty, and fails one request in six with a 503 (seeded). The pipeline's ``Limit`` must keep it from ever
answering 429, and its ``Retry`` must get every prompt through the 503s.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from hypernodes import HyperNodesEngine, Limit, NodeError, Pipeline, PipelineCallback, Retry, node


class FakeLLM:
    """A chat endpoint with its own limits, counting what it saw."""

    def __init__(self, concurrency: int = 8, per_second: int = 40, seed: int = 0) -> None:
        # (Seed 0: never more than 2 failures in a row in the first 400 requests, so 5
        # retries always suffice and the test is deterministic.)
        self.concurrency = concurrency
        self.per_second = per_second
        self.random = random.Random(seed)
        self.in_flight = 0
        self.peak = 0
        self.tokens = float(per_second)
        self.filled = time.monotonic()
        self.answered: dict[int, int] = {}  # status -> count
        self.app = FastAPI()
        self.app.post("/v1/chat")(self.chat)

    def _count(self, status: int) -> None:
        self.answered[status] = self.answered.get(status, 0) + 1

    async def chat(self, request: Request) -> JSONResponse:
        now = time.monotonic()
        self.tokens = min(self.per_second, self.tokens + (now - self.filled) * self.per_second)
        self.filled = now
        if self.in_flight >= self.concurrency or self.tokens < 1:
            self._count(429)
            return JSONResponse({"error": "rate limited"}, status_code=429)
        self.tokens -= 1
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            body = await request.json()
            await asyncio.sleep(0.01)  # the model thinks
            if self.random.random() < 1 / 6:
                self._count(503)
                return JSONResponse({"error": "overloaded"}, status_code=503)
            self._count(200)
            return JSONResponse({"text": body["prompt"].upper()})
        finally:
            self.in_flight -= 1


# -- the README example ------------------------------------------------------------------

# The provider allows 8 requests at once and 40 per second: stay a little under its rate
# (requests reach it a little later than they start here, and not evenly).
llm = Limit("llm", concurrency=8, rate="35/s")


def retryable(error: BaseException) -> bool:
    """Overload (429, 5xx), dropped connections and timeouts are worth another try."""
    if isinstance(error, httpx.HTTPStatusError):
        return error.response.status_code == 429 or error.response.status_code >= 500
    return isinstance(error, httpx.TransportError | TimeoutError)


@node(output_name="prompt")
def build_prompt(question: str) -> str:
    return f"answer briefly: {question}"


@node(
    output_name="answer",
    limit=llm,
    timeout=10,
    retries=Retry(5, backoff=0.05, max_backoff=1.0, on=retryable),
)
async def ask(prompt: str, client: Any) -> str:
    response = await client.post("/v1/chat", json={"prompt": prompt})
    response.raise_for_status()
    return str(response.json()["text"])


@node(output_name="short")
def shorten(answer: str) -> str:
    return answer.removeprefix("ANSWER BRIEFLY: ")


qa = Pipeline([build_prompt, ask, shorten], name="qa")


class Retries(PipelineCallback):
    def __init__(self) -> None:
        self.seen: list[int] = []

    def on_node_retry(self, *, error: BaseException, **_: Any) -> None:
        assert isinstance(error, httpx.HTTPStatusError)
        self.seen.append(error.response.status_code)


@pytest.mark.asyncio
async def test_a_limited_retried_llm_node_never_trips_the_servers_limits() -> None:
    server = FakeLLM()
    retries = Retries()
    engine = HyperNodesEngine(map_executor="async", max_concurrent=64)
    transport = httpx.ASGITransport(app=server.app)
    questions = [f"question {i}" for i in range(120)]
    async with httpx.AsyncClient(transport=transport, base_url="http://llm") as client:
        pipe = Pipeline([build_prompt, ask, shorten], engine=engine, callbacks=[retries])
        results = await pipe.amap(
            inputs={"question": questions, "client": client}, map_over="question"
        )
    assert [r["short"] for r in results] == [q.upper() for q in questions]
    assert server.answered.get(429, 0) == 0  # the Limit kept us inside the server's bounds
    assert server.peak <= 8
    assert server.answered[503] >= 10  # faults were injected...
    assert retries.seen == [503] * server.answered[503]  # ...and each one was retried once
    assert server.answered[200] == 120


@pytest.mark.asyncio
async def test_without_the_limit_the_server_answers_429() -> None:
    # The same node with no Limit: the proof that the test above can fail.
    server = FakeLLM()
    unlimited = ask.copy(limit=None, retries=0)
    pipe = Pipeline(
        [build_prompt, unlimited, shorten],
        engine=HyperNodesEngine(map_executor="async", max_concurrent=64),
    )
    transport = httpx.ASGITransport(app=server.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://llm") as client:
        with pytest.raises(NodeError) as info:
            await pipe.amap(
                inputs={"question": [f"q{i}" for i in range(120)], "client": client},
                map_over="question",
            )
    assert isinstance(info.value.__cause__, httpx.HTTPStatusError)
    assert server.answered.get(429, 0) >= 1
