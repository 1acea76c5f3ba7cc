"""A small OpenAI-compatible chat-completions server for tests: real HTTP on 127.0.0.1, scripted.

    async with FakeLlm(behaviour) as llm:        # behaviour: request JSON -> Reply, or a fixed Reply
        config.analysis.llm.base_url = llm.base_url
        ...
        llm.requests                             # every request body received, in order

`POST /v1/chat/completions` (non-streaming) answers what the behaviour returns for the request:
an assistant message with `content` (any text: good JSON, garbage, a schema violation, a malicious
policy), an error status with its body and headers (500, 429 with Retry-After), and optionally
after holding the answer for `delay` seconds (to outlast the client's timeout; released at once
when the server stops, so no test waits on it).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Reply:
    content: str | None = None
    status: int = 200
    error_body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    prompt_tokens: int = 1200
    completion_tokens: int = 300


Behaviour = Callable[[dict[str, Any]], Reply]


def user_document(request: dict[str, Any]) -> dict[str, Any]:
    """The JSON document the proxy sends as the user message."""
    user = next(m for m in request["messages"] if m["role"] == "user")
    document: dict[str, Any] = orjson.loads(user["content"])
    return document


def answer(
    rates: dict[str, float], severity_rates: dict[str, float] | None = None, reasoning: str = "tuned"
) -> str:
    """An answer in the shape the proxy's schema asks for."""
    return orjson.dumps(
        {
            "severity_rates": severity_rates or {"TRACE": 0.01, "DEBUG": 0.05, "INFO": 0.2, "WARN": 0.5},
            "rates": [{"id": key, "rate": rate, "reason": f"set to {rate}"} for key, rate in rates.items()],
            "reasoning": reasoning,
        }
    ).decode()


class FakeLlm:
    def __init__(self, behaviour: Behaviour | Reply) -> None:
        self.behaviour = behaviour
        self.requests: list[dict[str, Any]] = []
        self._released = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._ids = itertools.count(1)
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}/v1"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._complete)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, HOST, 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        self._released.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeLlm:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _complete(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        reply = self.behaviour if isinstance(self.behaviour, Reply) else self.behaviour(body)
        if reply.delay:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._released.wait(), timeout=reply.delay)
        if reply.status != 200:
            error = reply.error_body or {
                "error": {"message": f"scripted {reply.status}", "type": "server_error"}
            }
            return web.json_response(error, status=reply.status, headers=reply.headers)
        completion = {
            "id": f"chatcmpl-{next(self._ids)}",
            "object": "chat.completion",
            "created": 1_732_000_000,
            "model": body.get("model", "fake"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply.content},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": reply.prompt_tokens,
                "completion_tokens": reply.completion_tokens,
                "total_tokens": reply.prompt_tokens + reply.completion_tokens,
            },
        }
        return web.json_response(completion, headers=reply.headers)
