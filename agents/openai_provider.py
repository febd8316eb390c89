"""Real model calls through the official `openai` client, for OpenAI and compatible servers.

Retries are left to the client on purpose: it already backs off with jitter on 408/409/429/5xx,
timeouts and dropped connections, honours Retry-After, and reuses one idempotency key across
attempts. This module only turns the outcome into a `Completion` or an `LLMError` whose message
is short enough for a chat post and can never leak the API key.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Mapping
from http import HTTPStatus
from urllib.parse import urlsplit

import openai
from openai import AsyncOpenAI, omit
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionMessageParam,
    ChatCompletionSystemMessageParam,
    ChatCompletionUserMessageParam,
)

from agents.llm import Completion, LLMError, LLMRequest
from agents.pricing import Price, cost_usd, is_priced

__all__ = ["OpenAIProvider"]

log = logging.getLogger(__name__)

# Retrying these cannot succeed: the request itself, the key or the model name is wrong.
_FINAL_STATUSES = frozenset({400, 401, 403, 404, 422})
_OPENAI_HOST = "api.openai.com"
# Local servers ignore the key, but the client refuses to start without one.
_PLACEHOLDER_KEY = "not-needed"
_DETAIL_CHARS = 160
_KEY_SHAPES = (
    re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}"),
    re.compile(r"(?i)\bbearer\s+[^\s\"',]+"),
)


class OpenAIProvider:
    """`LLMProvider` backed by `openai.AsyncOpenAI` (OpenAI, Azure, Ollama, vLLM, LM Studio...)."""

    name = "openai"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 3,
        price_overrides: Mapping[str, Price] | None = None,
    ) -> None:
        """`base_url=None` means OPENAI_BASE_URL if set, else api.openai.com.

        A missing key is only an error for OpenAI itself; compatible servers get a placeholder.
        """
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if max_retries < 0:
            raise ValueError("max_retries cannot be negative")
        key = api_key or os.environ.get("OPENAI_API_KEY") or ""
        custom_endpoint = base_url is not None or bool(os.environ.get("OPENAI_BASE_URL"))
        if not key and not custom_endpoint:
            raise LLMError("no OpenAI API key: set OPENAI_API_KEY or pass api_key", retryable=False)
        self._key = key
        self._timeout = timeout
        self._max_retries = max_retries
        self._prices = dict(price_overrides or {})
        failure: LLMError | None = None
        try:
            client = AsyncOpenAI(
                api_key=key or _PLACEHOLDER_KEY,
                base_url=base_url,
                timeout=timeout,
                max_retries=max_retries,
            )
        except openai.OpenAIError as exc:
            detail = self._redact(str(exc))
            failure = LLMError(f"could not set up the OpenAI client: {detail}", retryable=False)
        if failure is not None:
            raise failure  # raised outside the except block so no traceback chains to the key
        self._client: AsyncOpenAI = client
        self.endpoint: str = _display_url(str(client.base_url))
        self._is_openai: bool = client.base_url.host == _OPENAI_HOST
        self._label: str = (
            "OpenAI" if self._is_openai else f"OpenAI-compatible server at {self.endpoint}"
        )

    async def complete(self, request: LLMRequest) -> Completion:
        messages: list[ChatCompletionMessageParam] = []
        if request.system:
            messages.append(ChatCompletionSystemMessageParam(role="system", content=request.system))
        messages.append(ChatCompletionUserMessageParam(role="user", content=request.prompt))
        limit = request.max_output_tokens
        started = time.monotonic()
        failure: LLMError | None = None
        try:
            response = await self._client.chat.completions.create(
                model=request.model,
                messages=messages,
                # OpenAI's reasoning models reject `max_tokens`; many compatible servers only
                # understand `max_tokens`.
                max_completion_tokens=limit if limit is not None and self._is_openai else omit,
                max_tokens=limit if limit is not None and not self._is_openai else omit,
            )
        except openai.OpenAIError as exc:
            failure = self._translate(exc)
        except ValueError:  # a 200 whose body claims to be JSON but is not
            failure = LLMError(f"{self._label} answered with invalid JSON")
        latency_ms = int((time.monotonic() - started) * 1000)
        if failure is None:
            try:
                return self._to_completion(request, response, latency_ms)
            except LLMError as exc:
                failure = exc
        log.warning(
            "model call failed (agent=%s model=%s): %s", request.agent, request.model, failure
        )
        raise failure

    async def aclose(self) -> None:
        await self._client.close()

    async def __aenter__(self) -> OpenAIProvider:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _to_completion(self, request: LLMRequest, response: object, latency_ms: int) -> Completion:
        if not isinstance(response, ChatCompletion):
            # The client hands back plain text when the body is not JSON, e.g. a web page served
            # because base_url lacks "/v1".
            raise LLMError(
                f"{self._label} did not answer like a chat completions API (is base_url right?)",
                retryable=False,
            )
        if not response.choices:
            raise LLMError(f"{self._label} returned no choices for model {request.model}")
        choice = response.choices[0]
        text = choice.message.content or ""
        if not text.strip():
            raise self._empty_completion(request, choice.message.refusal, choice.finish_reason)

        model = response.model or request.model
        usage = response.usage
        if usage is not None:
            input_tokens, output_tokens = usage.prompt_tokens, usage.completion_tokens
        else:  # some compatible servers omit usage; estimates keep token budgets meaningful
            input_tokens = _estimate_tokens(f"{request.system} {request.prompt}")
            output_tokens = _estimate_tokens(text)
        priced_as = request.model if is_priced(request.model, self._prices) else model
        cost = cost_usd(priced_as, input_tokens, output_tokens, self._prices)
        log.debug(
            "model call ok (agent=%s model=%s): %d in, %d out, $%.6f, %d ms",
            request.agent,
            model,
            input_tokens,
            output_tokens,
            cost,
            latency_ms,
        )
        return Completion(
            text=text,
            provider=self.name,
            model=model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_usd=cost,
            latency_ms=latency_ms,
        )

    def _empty_completion(
        self, request: LLMRequest, refusal: str | None, finish_reason: str | None
    ) -> LLMError:
        if refusal:
            return LLMError(f"the model refused: {self._detail(refusal)}", retryable=False)
        if finish_reason == "length":
            return LLMError(
                f"{request.model} used its whole output budget ({request.max_output_tokens} "
                "tokens) before writing any text; raise max_output_tokens",
                retryable=False,
            )
        if finish_reason == "content_filter":
            return LLMError(f"{self._label} withheld the answer (content filter)", retryable=False)
        return LLMError(f"{self._label} returned an empty completion for {request.model}")

    def _translate(self, exc: openai.OpenAIError) -> LLMError:
        """Turn the client's final exception into a message fit for a chat post."""
        if isinstance(exc, openai.APITimeoutError):
            return LLMError(
                f"{self._label} timed out after {self._timeout:g}s{self._attempts_note()}"
            )
        if isinstance(exc, openai.APIConnectionError):
            return LLMError(f"could not connect to {self.endpoint}{self._attempts_note()}")
        if isinstance(exc, openai.APIStatusError):
            return self._status_error(exc)
        if isinstance(exc, openai.APIResponseValidationError):
            return LLMError(f"{self._label} answered in an unexpected shape", retryable=False)
        return LLMError(f"OpenAI client error: {self._detail(str(exc))}")

    def _status_error(self, exc: openai.APIStatusError) -> LLMError:
        status = exc.status_code
        phrase = _phrase(status)
        detail = _first_sentence(self._detail(_server_message(exc.body)))
        if status in _FINAL_STATUSES:
            hint = " (check the API key)" if status in (401, 403) else ""
            message = f"{self._label} rejected the request: {status} {phrase}{hint}"
            return LLMError(
                f"{message}: {detail}" if detail else message, retryable=False, status=status
            )
        if status == 429 and exc.code == "insufficient_quota":
            return LLMError(
                f"{self._label} answered 429: the account is out of quota",
                retryable=False,
                status=status,
            )
        not_retried = _server_refused_retry(exc)
        if not_retried:
            return LLMError(
                f"{self._label} answered {status} {phrase} ({not_retried})", status=status
            )
        retries = self._max_retries
        suffix = f" after {retries} {'retry' if retries == 1 else 'retries'}" if retries else ""
        return LLMError(f"{self._label} answered {status} {phrase}{suffix}", status=status)

    def _attempts_note(self) -> str:
        attempts = self._max_retries + 1
        return f" ({attempts} attempts)" if attempts > 1 else ""

    def _detail(self, text: str) -> str:
        text = " ".join(self._redact(text).split())
        return text if len(text) <= _DETAIL_CHARS else text[: _DETAIL_CHARS - 1] + "…"

    def _redact(self, text: str) -> str:
        """Servers and proxies may echo the key back; strip it and anything shaped like one."""
        if self._key:
            text = text.replace(self._key, "***")
        for shape in _KEY_SHAPES:
            text = shape.sub("***", text)
        return text


def _server_message(body: object) -> str:
    if isinstance(body, Mapping):
        message = body.get("message")
        if isinstance(message, str):
            return message
    return body if isinstance(body, str) else ""


def _first_sentence(text: str) -> str:
    """Servers pad errors with advice and links; the first sentence carries the cause."""
    head, dot, _ = text.partition(". ")
    return head + dot.strip()


def _server_refused_retry(exc: openai.APIStatusError) -> str:
    """The client skips retries when the server says so; the message should not claim otherwise."""
    headers = exc.response.headers
    if headers.get("x-should-retry") == "false":
        return "server asked not to retry"
    # Same precedence as the client: milliseconds first, then seconds; longer than 2 min is
    # not retried.
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            wait = float(value) / divisor
        except ValueError:
            continue
        return f"server asked to wait {wait:g}s; not retried" if wait > 120 else ""
    return ""


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "error"


def _display_url(url: str) -> str:
    """Drop credentials and query strings, which some gateways use to carry keys."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}".rstrip("/")


def _estimate_tokens(text: str) -> int:
    return round(len(text.split()) * 4 / 3)
