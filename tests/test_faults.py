"""Fault injection: the model server failing three calls in ten, in every way it fails in
practice. Each run ends (succeeded, or failed with the cause recorded and shown), nothing is
left hanging, and the bot goes on serving."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest

from agents.openai_provider import OpenAIProvider
from storage import models
from tests.conftest import Bot
from tests.fakes.openai_server import DEFAULT_API_KEY, FakeOpenAIServer, running_fake_openai

RUNS = 30
FAULTS = [
    ("status", 429, {"Retry-After": "0"}),
    ("status", 429),  # without Retry-After: the client backs off on its own
    ("status", 500, {"Retry-After": "0"}),
    ("status", 503, {"Retry-After": "0"}),
    ("delay", 3.0),  # past the 2 s timeout
    ("raw", 200, '{"id": "chatcmpl-1", "choices": [', "application/json"),  # malformed JSON
    ("cut",),  # the connection dropped mid-body
]


@pytest.fixture
async def flaky() -> AsyncIterator[FakeOpenAIServer]:
    async with running_fake_openai() as server:
        rng = random.Random(8)
        server.script(
            *(
                rng.choice(FAULTS) if rng.random() < 0.3 else ("reply", f"notes {i}")
                for i in range(400)
            )
        )
        yield server


@pytest.mark.slow
async def test_three_calls_in_ten_failing_end_every_run_with_a_reason(
    bot_factory, flaky: FakeOpenAIServer
) -> None:
    llm = OpenAIProvider(
        api_key=DEFAULT_API_KEY, base_url=flaky.base_url, timeout=2.0, max_retries=2
    )
    bot: Bot = bot_factory(llm=llm)
    async with bot.app.running():
        for i in range(RUNS):
            await bot.type(f"/crew run research-brief topic {i}")
        await bot.wait()
        # a run can fail while later commands are still being typed: all that was printed
        out = bot.transcript
        runs = bot.rows(models.Run)
        assert len(runs) == RUNS
        statuses = {r.status for r in runs}
        assert statuses <= {models.RunStatus.SUCCEEDED, models.RunStatus.FAILED}
        failed = [r for r in runs if r.status == models.RunStatus.FAILED]
        for run in failed:  # the cause is recorded and shown, with the way out
            assert run.error and "step research failed" in out
        assert f"/crew retry {failed[0].id}" in out if failed else True
        calls = bot.rows(models.LLMCall)
        assert sum(1 for c in calls if c.error) == len(failed)
        assert len(failed) < RUNS // 3  # the client's own retries absorb most faults
        # the bot is still serving: a failed run retried now succeeds
        flaky.script(*[("reply", "fine")] * 10)
        if failed:
            await bot.type(f"/crew retry {failed[0].id}")
            await bot.wait()
            assert bot.run(failed[0].id).status == models.RunStatus.SUCCEEDED
        print(
            f"\nfaults: {RUNS} runs, {len(flaky.completion_requests)} model requests, "
            f"{len(failed)} runs failed with a recorded cause: "
            + "; ".join(sorted({(r.error or "")[:160] for r in failed}))
        )
    await bot.app.aclose()
