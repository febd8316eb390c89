"""The LLM gateway against a real HTTP server, with the real `openai` client doing the retries."""

from __future__ import annotations

import logging
import re
import socket
import time
import traceback
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.llm import Completion, LLMError, LLMRequest
from agents.offline import OFFLINE_MARKER, OfflineProvider
from agents.openai_provider import OpenAIProvider
from agents.pricing import LIST_PRICES, Price, base_model_name, cost_usd, is_priced, price_for
from tests.fakes.openai_server import DEFAULT_API_KEY, FakeOpenAIServer, running_fake_openai

# The client ignores "Retry-After: 0" (it falls back to 0.5 s+ backoff); a 1 ms hint keeps
# retry tests fast while still exercising the client's own retry loop.
FAST_RETRY = {"retry-after-ms": "1"}
TOPIC = "Open-source LLM inference costs for small teams"

ProviderFactory = Callable[..., OpenAIProvider]


@pytest.fixture
async def server() -> AsyncIterator[FakeOpenAIServer]:
    async with running_fake_openai() as fake:
        yield fake


@pytest.fixture
async def make_provider(server: FakeOpenAIServer) -> AsyncIterator[ProviderFactory]:
    made: list[OpenAIProvider] = []

    def factory(**overrides: Any) -> OpenAIProvider:
        options: dict[str, Any] = {
            "api_key": DEFAULT_API_KEY,
            "base_url": server.base_url,
            "timeout": 5.0,
            "max_retries": 3,
        }
        options.update(overrides)
        provider = OpenAIProvider(**options)
        made.append(provider)
        return provider

    yield factory
    for provider in made:
        await provider.aclose()


def request(**overrides: Any) -> LLMRequest:
    fields: dict[str, Any] = {
        "agent": "writer",
        "role": "writer",
        "model": "gpt-4o-mini",
        "system": "You are the writer agent.",
        "prompt": "Write a short post about tide pools.",
        "topic": "tide pools",
    }
    fields.update(overrides)
    return LLMRequest(**fields)


# --- OpenAI provider ------------------------------------------------------------------------


async def test_normal_call_records_text_tokens_cost_and_latency(
    server: FakeOpenAIServer, make_provider: ProviderFactory
) -> None:
    usage = {"prompt_tokens": 1200, "completion_tokens": 300}
    server.script(("reply", "Tide pools are tiny oceans.", usage))
    provider = make_provider()

    result = await provider.complete(request(max_output_tokens=256))

    assert (result.text, result.provider, result.model) == (
        "Tide pools are tiny oceans.",
        "openai",
        "gpt-4o-mini",
    )
    assert (result.input_tokens, result.output_tokens) == (1200, 300)
    assert result.cost_usd == pytest.approx((1200 * 0.15 + 300 * 0.60) / 1_000_000)
    assert isinstance(result.latency_ms, int) and result.latency_ms >= 0
    assert result.cost_usd > 0
    (sent,) = server.requests
    assert sent.headers["Authorization"] == f"Bearer {DEFAULT_API_KEY}"
    assert sent.body["model"] == "gpt-4o-mini"
    assert sent.body["messages"] == [
        {"role": "system", "content": "You are the writer agent."},
        {"role": "user", "content": "Write a short post about tide pools."},
    ]
    # A compatible server gets the widely supported `max_tokens`.
    assert sent.body["max_tokens"] == 256
    assert "max_completion_tokens" not in sent.body


async def test_latency_is_measured(
    server: FakeOpenAIServer, make_provider: ProviderFactory
) -> None:
    server.script(("delay", 0.1))
    result = await make_provider().complete(request())
    assert 100 <= result.latency_ms < 2000
    assert result.text.startswith("Fake answer")


async def test_429_then_success_is_retried_by_the_client(
    server: FakeOpenAIServer, make_provider: ProviderFactory
) -> None:
    server.script(("status", 429, FAST_RETRY))
    result = await make_provider().complete(request())
    assert result.text.startswith("Fake answer")
    assert len(server.requests) == 2
    assert [r.headers["x-stainless-retry-count"] for r in server.requests] == ["0", "1"]


async def test_two_500s_then_success(
    server: FakeOpenAIServer, make_provider: ProviderFactory
) -> None:
    server.script(("status", 500, FAST_RETRY), ("status", 502, FAST_RETRY))
    result = await make_provider().complete(request())
    assert result.output_tokens > 0
    assert len(server.requests) == 3


async def test_persistent_500_gives_up_after_max_retries(
    server: FakeOpenAIServer, make_provider: ProviderFactory
) -> None:
    server.script(*[("status", 500, FAST_RETRY)] * 10)
    with pytest.raises(LLMError) as caught:
        await make_provider(max_retries=3).complete(request())
    assert len(server.requests) == 4
    assert caught.value.status == 500
    assert caught.value.retryable is True
    assert "answered 500" in str(caught.value)
    assert "after 3 retries" in str(caught.value)


async def test_server_asking_for_a_long_wait_is_not_retried(
    server: FakeOpenAIServer, make_provider: ProviderFactory
) -> None:
    server.script(("status", 429, {"Retry-After": "600"}))
    with pytest.raises(LLMError) as caught:
        await make_provider().complete(request())
    assert len(server.requests) == 1
    assert caught.value.status == 429
    assert "600s" in str(caught.value)


async def test_slow_server_times_out(
    server: FakeOpenAIServer, make_provider: ProviderFactory
) -> None:
    server.script(("delay", 3.0), ("delay", 3.0))
    started = time.monotonic()
    with pytest.raises(LLMError) as caught:
        await make_provider(timeout=0.3, max_retries=1).complete(request())
    assert time.monotonic() - started < 2.5
    assert "timed out after 0.3s" in str(caught.value)
    assert caught.value.retryable is True
    assert caught.value.status is None
    assert len(server.requests) == 2  # the client retried the timeout once


async def test_bad_key_is_not_retried_and_never_leaks(
    server: FakeOpenAIServer, make_provider: ProviderFactory, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "sk-live-SECRET-do-not-print-9f8e7d6c5b4a"
    # The fake echoes a wrong key back verbatim, so redaction is really exercised.
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{server.base_url}/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": f"Bearer {secret}"},
        ) as raw,
    ):
        assert raw.status == 401
        assert secret in await raw.text()
    server.requests.clear()

    caplog.set_level(logging.DEBUG)
    with pytest.raises(LLMError) as caught:
        await make_provider(api_key=secret).complete(request())
    error = caught.value
    logging.getLogger("crewchief.test").exception("reporting the failure", exc_info=error)

    assert len(server.requests) == 1
    assert error.status == 401
    assert error.retryable is False
    assert "401" in str(error)
    everything = "\n".join(
        [
            str(error),
            repr(error),
            repr(error.args),
            "".join(traceback.format_exception(error)),
            caplog.text,
            *(repr(record.args) for record in caplog.records),
        ]
    )
    assert caplog.records, "the client and provider should have logged at DEBUG"
    assert secret not in everything
    assert "SECRET-do-not-print" not in everything
    assert error.__cause__ is None and error.__context__ is None


@pytest.mark.parametrize("status", [400, 403, 404])
async def test_client_errors_are_final(
    server: FakeOpenAIServer, make_provider: ProviderFactory, status: int
) -> None:
    server.script(("status", status, FAST_RETRY))
    with pytest.raises(LLMError) as caught:
        await make_provider().complete(request())
    assert len(server.requests) == 1
    assert caught.value.status == status
    assert caught.value.retryable is False
    assert str(status) in str(caught.value)


async def test_connection_refused(make_provider: ProviderFactory) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago and has no listener
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(LLMError) as caught:
        await make_provider(base_url=f"http://127.0.0.1:{port}/v1", max_retries=0).complete(
            request()
        )
    assert str(caught.value) == f"could not connect to http://127.0.0.1:{port}/v1"
    assert caught.value.retryable is True


@pytest.mark.parametrize("behaviour", [("reply", "", {}), ("reply", "  \n", {}), ("no_choices",)])
async def test_empty_completion_is_an_error(
    server: FakeOpenAIServer, make_provider: ProviderFactory, behaviour: tuple[Any, ...]
) -> None:
    server.script(behaviour)
    with pytest.raises(LLMError, match=r"empty completion|no choices"):
        await make_provider().complete(request())


async def test_web_page_instead_of_api_is_an_error(
    server: FakeOpenAIServer, make_provider: ProviderFactory
) -> None:
    server.script(("raw", 200, "<html><body>LM Studio</body></html>", "text/html"))
    with pytest.raises(LLMError, match="base_url") as caught:
        await make_provider().complete(request())
    assert caught.value.retryable is False


async def test_unpriced_model_costs_nothing_and_overrides_apply(
    server: FakeOpenAIServer, make_provider: ProviderFactory
) -> None:
    usage = {"prompt_tokens": 1_000_000, "completion_tokens": 1_000_000}
    server.script(("reply", "ok", usage), ("reply", "ok", usage))
    local = await make_provider().complete(request(model="llama3.1:8b"))
    assert local.cost_usd == 0.0
    priced = make_provider(price_overrides={"llama3.1:8b": Price(1.0, 2.0)})
    assert (await priced.complete(request(model="llama3.1:8b"))).cost_usd == pytest.approx(3.0)


async def test_dated_model_in_response_is_priced_like_its_alias(
    server: FakeOpenAIServer, make_provider: ProviderFactory
) -> None:
    server.script(("reply", "ok", {"prompt_tokens": 1_000_000, "completion_tokens": 0}))
    result = await make_provider().complete(request(model="gpt-4.1-mini-2025-04-14"))
    assert result.model == "gpt-4.1-mini-2025-04-14"
    assert result.cost_usd == pytest.approx(0.40)


def test_missing_key_is_an_error_only_for_openai_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(LLMError, match="OPENAI_API_KEY") as caught:
        OpenAIProvider()
    assert caught.value.retryable is False
    local = OpenAIProvider(base_url="http://127.0.0.1:11434/v1")  # Ollama needs no key
    assert local.endpoint == "http://127.0.0.1:11434/v1"


def test_endpoint_shown_to_people_drops_credentials() -> None:
    provider = OpenAIProvider(api_key="k", base_url="http://user:pw@127.0.0.1:9/v1/?token=abc")
    assert provider.endpoint == "http://127.0.0.1:9/v1"


# --- offline provider -----------------------------------------------------------------------


async def offline(**overrides: Any) -> Completion:
    return await OfflineProvider().complete(request(**{"topic": TOPIC, **overrides}))


async def test_offline_is_deterministic_and_marked() -> None:
    first, second = await offline(), await offline()
    assert first == second
    assert first.text != (await offline(topic="Urban beekeeping")).text
    assert first.provider == "offline"
    assert first.cost_usd == 0.0
    assert first.input_tokens > 0 and first.output_tokens > 0


@pytest.mark.parametrize("role", ["researcher", "writer", "publisher", "critic"])
async def test_every_offline_text_says_it_is_offline(role: str) -> None:
    result = await offline(role=role, agent=role, inputs={"draft": "# T\n\nBody."})
    assert result.text.rstrip().endswith(OFFLINE_MARKER)
    assert result.text.count(OFFLINE_MARKER) == 1


async def test_offline_research_notes_follow_the_topic() -> None:
    text = (await offline(role="researcher")).text
    assert text.startswith(f"# Research notes: {TOPIC}")
    for heading in ("## Key questions", "## Findings", "## Sources to check", "## Open questions"):
        assert heading in text
    findings = text.split("## Findings", 1)[1].split("\n## ", 1)[0]
    bullets = [line for line in findings.splitlines() if line.startswith("- ")]
    assert 4 <= len(bullets) <= 6
    assert any("inference" in bullet for bullet in bullets)


async def test_offline_draft_builds_on_research_and_revises_on_feedback() -> None:
    research = (await offline(role="researcher")).text
    v1 = (await offline(inputs={"research": research})).text
    assert v1.startswith("# ")
    assert [h for h in v1.splitlines() if h.startswith("## ")][-1] == "## Conclusion"
    assert len([h for h in v1.splitlines() if h.startswith("## ")]) == 4
    first_angle = re.search(r"^- \*\*(.+?)\*\*", research.split("## Findings", 1)[1], re.M)
    assert first_angle is not None and first_angle.group(1) in v1
    assert "|---" not in v1

    feedback = "shorter, add a cost table"
    v2 = (await offline(inputs={"research": research}, version=2, feedback=feedback)).text
    assert f'"{feedback}"' in v2 and "Revision notes" in v2
    assert re.search(r"^\|.*\|$", v2, re.M) and "|---" in v2
    assert "Cost" in v2
    assert len(v2) < len(v1)


async def test_offline_feedback_words_match_whole_words_only() -> None:
    v2 = (await offline(version=2, feedback="make it more suitable for execution teams")).text
    v1 = (await offline()).text
    assert "|---" not in v2
    assert len(v2) > len(v1)  # not shortened: only the revision note was added


async def test_offline_publisher_keeps_the_approved_draft() -> None:
    draft = (await offline(version=2, feedback="add a table")).text
    final = (await offline(role="publisher", inputs={"draft": draft})).text
    assert final.splitlines()[0] == draft.splitlines()[0]
    assert "## Conclusion" in final and "|---" in final
    assert "Revision notes" not in final
    assert re.search(r"^\*\*Summary:\*\* .+$", final, re.M)


# --- pricing --------------------------------------------------------------------------------


def test_list_prices_cover_the_common_models() -> None:
    for model in (
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4.1",
        "gpt-4.1-mini",
        "gpt-4.1-nano",
        "o4-mini",
        "gpt-5",
        "gpt-5-mini",
        "gpt-5-nano",
    ):
        assert is_priced(model)
        assert LIST_PRICES[model].output_per_million >= LIST_PRICES[model].input_per_million


def test_dated_names_match_their_alias_not_a_longer_prefix() -> None:
    assert base_model_name("gpt-4o-mini-2024-07-18") == "gpt-4o-mini"
    assert price_for("gpt-4o-mini-2024-07-18") == LIST_PRICES["gpt-4o-mini"]
    assert price_for("GPT-4o-2024-08-06") == LIST_PRICES["gpt-4o"]
    assert cost_usd("gpt-4o-mini", 1_000_000, 1_000_000) == pytest.approx(0.75)
    assert not is_priced("gpt-4o-mini-preview")
    assert cost_usd("llama3.1:8b", 10_000, 10_000) == 0.0


def test_overrides_win_over_list_prices() -> None:
    overrides = {"GPT-4o": Price(1.0, 1.0), "my-model": Price(0.5, 0.5)}
    assert cost_usd("gpt-4o-2024-08-06", 1_000_000, 0, overrides) == pytest.approx(1.0)
    assert cost_usd("my-model", 1_000_000, 1_000_000, overrides) == pytest.approx(1.0)
    assert is_priced("my-model", overrides) and not is_priced("my-model")
    with pytest.raises(ValueError):
        Price(-1.0, 0.0)


@given(
    model=st.sampled_from(sorted(LIST_PRICES)),
    tokens_in=st.integers(0, 10_000_000),
    tokens_out=st.integers(0, 10_000_000),
)
def test_cost_is_non_negative_and_additive(model: str, tokens_in: int, tokens_out: int) -> None:
    total = cost_usd(model, tokens_in, tokens_out)
    assert total >= 0
    assert total == pytest.approx(cost_usd(model, tokens_in, 0) + cost_usd(model, 0, tokens_out))


# --- the fake server itself -----------------------------------------------------------------


async def test_fake_server_validates_like_the_api(server: FakeOpenAIServer) -> None:
    auth = {"Authorization": f"Bearer {DEFAULT_API_KEY}"}
    async with aiohttp.ClientSession(headers=auth) as session:
        async with session.post(f"{server.base_url}/chat/completions", json={"messages": []}) as r:
            assert r.status == 400
            assert (await r.json())["error"]["param"] == "model"
        async with session.post(f"{server.base_url}/nope", json={}) as r:
            assert r.status == 404
            assert "Invalid URL" in (await r.json())["error"]["message"]
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}
        async with session.post(f"{server.base_url}/chat/completions", json=body) as r:
            answer = await r.json()
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["finish_reason"] == "stop"
    usage = answer["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert len(server.completion_requests) == 2
    with pytest.raises(ValueError):
        server.script(("explode",))
