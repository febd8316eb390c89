"""A local stand-in for the OpenAI chat completions API.

It speaks real HTTP so the real `openai` client (retries, timeouts, error parsing) is what gets
tested, and it can be scripted to misbehave the way the real API does on a bad day.

Behaviours, consumed one per request (the default reply is used once the script runs out):

    ("status", 429)                          error answer in OpenAI's error shape
    ("status", 429, {"Retry-After": "0"})    ... with extra response headers
    ("status", 500, headers, {"error": ...}) ... with a custom JSON body
    ("delay", 2.0)                           wait, then answer normally (forces client timeouts)
    ("reply", "text")                        answer with this text
    ("reply", "text", {"prompt_tokens": 9})  ... with this usage (missing fields are filled in)
    ("no_choices",)                          a 200 completion with an empty `choices` list
    ("raw", 200, "<html>..</html>", "text/html")  any body, e.g. a web page at a wrong URL
    ("cut",)                                 start a 200 answer, then drop the connection

Run stand-alone for demos:  python -m tests.fakes.openai_server --port 8765 --api-key sk-demo
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from aiohttp import web

Behaviour = tuple[Any, ...]

DEFAULT_API_KEY = "sk-fake-test-key-0123456789"

_ERROR_DEFAULTS: dict[int, tuple[str, str, str | None]] = {
    # status: (message, type, code) as the real API words them
    400: ("Invalid request.", "invalid_request_error", None),
    401: ("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
    403: ("You are not allowed to use this model.", "invalid_request_error", None),
    404: (
        "The model does not exist or you do not have access to it.",
        "invalid_request_error",
        "model_not_found",
    ),
    429: (
        "Rate limit reached for requests. Please try again later.",
        "requests",
        "rate_limit_exceeded",
    ),
    500: (
        "The server had an error while processing your request. Sorry about that!",
        "server_error",
        None,
    ),
    502: ("Bad gateway.", "server_error", None),
    503: ("The engine is currently overloaded, please try again later.", "server_error", None),
}


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any  # decoded JSON, or None when the body was not JSON
    at: float  # time.monotonic() when the request arrived


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def default_reply(messages: list[dict[str, Any]]) -> str:
    """Deterministic so tests can assert on it, and varied so different prompts differ."""
    last_user = next(
        (str(m.get("content", "")) for m in reversed(messages) if m.get("role") == "user"), ""
    )
    digest = hashlib.sha256(last_user.encode()).hexdigest()[:8]
    snippet = " ".join(last_user.split()[:12])
    return f"Fake answer {digest} to: {snippet}"


def estimate_tokens(text: str) -> int:
    return max(1, round(len(text.split()) * 4 / 3)) if text.strip() else 0


class FakeOpenAIServer:
    """Scriptable fake; `requests` records every attempt so retry counts can be asserted."""

    def __init__(self, api_key: str = DEFAULT_API_KEY) -> None:
        self.api_key = api_key
        self.requests: list[RecordedRequest] = []
        self._script: deque[Behaviour] = deque()
        self._runner: web.AppRunner | None = None
        self._counter = 0
        self.host = "127.0.0.1"
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def script(self, *behaviours: Behaviour) -> None:
        for behaviour in behaviours:
            if not behaviour or behaviour[0] not in {
                "status",
                "delay",
                "reply",
                "no_choices",
                "raw",
                "cut",
            }:
                raise ValueError(f"unknown behaviour: {behaviour!r}")
        self._script.extend(behaviours)

    def clear_script(self) -> None:
        """Drop the behaviours not yet used: from now on every request gets the default."""
        self._script.clear()

    @property
    def completion_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat_completions)
        app.router.add_get("/v1/models", self._models)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        # Cancel handlers whose client gave up (timeouts) so stopping the server is instant.
        self._runner = web.AppRunner(
            self.make_app(), access_log=None, handler_cancellation=True, shutdown_timeout=0.5
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.host = host
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeOpenAIServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _record(self, request: web.Request) -> Any:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        self.requests.append(
            RecordedRequest(
                request.method, request.path, dict(request.headers), body, time.monotonic()
            )
        )
        return body

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        behaviour = self._script.popleft() if self._script else ("default",)
        kind = behaviour[0]
        if kind == "status":
            return self._status(*behaviour[1:])
        if kind == "raw":
            status, text, content_type = behaviour[1], behaviour[2], behaviour[3]
            return web.Response(status=status, text=text, content_type=content_type)
        if kind == "delay":
            await asyncio.sleep(float(behaviour[1]))
        if kind == "cut":
            response = web.StreamResponse(
                status=200, headers={"Content-Type": "application/json", "Content-Length": "4096"}
            )
            await response.prepare(request)
            await response.write(b'{"id": "chatcmpl-cut", "object": "chat.compl')
            assert request.transport is not None
            request.transport.close()  # mid-body, as a proxy or a dying server does
            return response

        rejected = self._check_auth(request) or self._validate(body)
        if rejected is not None:
            return rejected
        if kind == "no_choices":
            return web.json_response(self._completion(body["model"], None, {}, body["messages"]))
        if kind == "reply":
            usage = behaviour[2] if len(behaviour) > 2 else {}
            return web.json_response(
                self._completion(body["model"], str(behaviour[1]), usage, body["messages"])
            )
        text = default_reply(body["messages"])
        return web.json_response(self._completion(body["model"], text, {}, body["messages"]))

    def _status(
        self, status: int, headers: dict[str, str] | None = None, body: dict | None = None
    ) -> web.Response:
        message, type_, code = _ERROR_DEFAULTS.get(
            status,
            (
                HTTPStatus(status).phrase,
                "server_error" if status >= 500 else "invalid_request_error",
                None,
            ),
        )
        return web.json_response(
            body if body is not None else error_body(message, type_, code),
            status=status,
            headers={"x-request-id": f"req_fake_{len(self.requests)}", **(headers or {})},
        )

    def _check_auth(self, request: web.Request) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        if header == f"Bearer {self.api_key}":
            return None
        presented = header.removeprefix("Bearer ").strip()
        # Echoes the presented key unmasked (worse than the real API, which masks most of it)
        # so tests prove the client side never passes server text through unredacted.
        message = (
            f"Incorrect API key provided: {presented}. You can find your API key at "
            "https://platform.openai.com/account/api-keys."
            if presented
            else "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
        )
        return web.json_response(
            error_body(message, "invalid_request_error", "invalid_api_key" if presented else None),
            status=401,
        )

    def _validate(self, body: Any) -> web.Response | None:
        problem: tuple[str, str] | None = None
        if not isinstance(body, dict):
            problem = ("We could not parse the JSON body of your request.", "body")
        elif not isinstance(body.get("model"), str) or not body["model"]:
            problem = ("you must provide a model parameter", "model")
        elif not isinstance(body.get("messages"), list) or not body["messages"]:
            problem = ("Missing required parameter: 'messages'.", "messages")
        elif not all(isinstance(m, dict) and "role" in m for m in body["messages"]):
            problem = ("Invalid value for 'messages': each message needs a 'role'.", "messages")
        if problem is None:
            return None
        return web.json_response(
            error_body(problem[0], "invalid_request_error", None, problem[1]), status=400
        )

    def _completion(
        self,
        model: str,
        text: str | None,
        usage: dict[str, int],
        prompt: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        self._counter += 1
        prompt_text = " ".join(str(m.get("content", "")) for m in prompt or [])
        prompt_tokens = usage.get("prompt_tokens", estimate_tokens(prompt_text) or 12)
        completion_tokens = usage.get("completion_tokens", estimate_tokens(text or ""))
        choices = (
            []
            if text is None
            else [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ]
        )
        return {
            "id": f"chatcmpl-fake{self._counter:06d}",
            "object": "chat.completion",
            "created": 1_700_000_000 + self._counter,
            "model": model,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": usage.get("total_tokens", prompt_tokens + completion_tokens),
            },
            "system_fingerprint": "fp_fake",
        }

    async def _models(self, request: web.Request) -> web.Response:
        await self._record(request)
        rejected = self._check_auth(request)
        if rejected is not None:
            return rejected
        names = ["gpt-4o-mini", "gpt-4.1-mini", "gpt-5-mini"]
        data = [{"id": n, "object": "model", "created": 0, "owned_by": "fake"} for n in names]
        return web.json_response({"object": "list", "data": data})

    async def _not_found(self, request: web.Request) -> web.Response:
        await self._record(request)
        message = f"Invalid URL ({request.method} {request.path})"
        return web.json_response(error_body(message, "invalid_request_error"), status=404)


@asynccontextmanager
async def running_fake_openai(api_key: str = DEFAULT_API_KEY) -> AsyncIterator[FakeOpenAIServer]:
    """Start on 127.0.0.1 on a free port; use it as the body of a pytest async fixture."""
    server = FakeOpenAIServer(api_key)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="Fake OpenAI-compatible server for demos.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    args = parser.parse_args()
    server = FakeOpenAIServer(args.api_key)
    server.host, server.port = args.host, args.port
    print(f"fake OpenAI server on {server.base_url} (api key: {args.api_key})", flush=True)
    web.run_app(server.make_app(), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
