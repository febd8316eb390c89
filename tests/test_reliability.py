"""When things go wrong: LLM errors, budgets, restarts, webhooks. Nothing lost, nothing twice."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from sqlmodel import select

from agents.heartbeat import heartbeat
from agents.openai_provider import OpenAIProvider
from storage import models
from storage.db import Database
from tests.conftest import Bot, FakeClock, post_recorded
from tests.fakes.local_server import serve_locally
from tests.fakes.openai_server import DEFAULT_API_KEY, FakeOpenAIServer, running_fake_openai


@pytest.fixture
async def openai_server() -> AsyncIterator[FakeOpenAIServer]:
    async with running_fake_openai() as server:
        yield server


def provider(server: FakeOpenAIServer, *, timeout: float = 5.0, retries: int = 2) -> OpenAIProvider:
    return OpenAIProvider(
        api_key=DEFAULT_API_KEY, base_url=server.base_url, timeout=timeout, max_retries=retries
    )


async def test_llm_429_then_success_records_usage_and_cost(bot_factory, openai_server) -> None:
    openai_server.script(("status", 429, {"Retry-After": "0"}))
    bot: Bot = bot_factory(llm=provider(openai_server))
    async with bot.app.running():
        await bot.type("/crew run research-brief heat pumps")
        await bot.wait()
        assert bot.run().status == models.RunStatus.SUCCEEDED
    calls = bot.rows(models.LLMCall)
    assert len(calls) == 1 and calls[0].error is None
    assert calls[0].provider == "openai" and calls[0].model == "gpt-4o-mini"
    assert calls[0].input_tokens > 0 and calls[0].output_tokens > 0 and calls[0].cost_usd > 0
    assert bot.run().cost_usd == pytest.approx(calls[0].cost_usd)
    assert len(openai_server.completion_requests) == 2  # the 429 was retried
    assert "(offline model)" not in bot.transcript
    await bot.app.aclose()


async def test_llm_500s_fail_the_step_and_retry_resumes_it(bot_factory, openai_server) -> None:
    openai_server.script(*[("status", 500, {"Retry-After": "0"})] * 3)
    bot: Bot = bot_factory(llm=provider(openai_server, retries=2))
    async with bot.app.running():
        await bot.type("/crew run blog-post heat pumps")
        out = await bot.wait()
        run = bot.run()
        assert run.status == models.RunStatus.FAILED
        assert "step research failed" in out and "/crew retry 1" in out
        assert "500" in (run.error or "")
        assert len(openai_server.completion_requests) == 3
        assert bot.rows(models.LLMCall)[0].error
        # the server recovers; the requester retries the failed step
        out = await bot.type("/crew retry 1")
        assert "retrying step research" in out
        await bot.wait()
        assert bot.run().status == models.RunStatus.AWAITING_APPROVAL
        assert [s.status for s in bot.steps()][:2] == ["succeeded", "awaiting_approval"]
    await bot.app.aclose()


async def test_llm_timeout_fails_the_step_with_a_clear_error(bot_factory, openai_server) -> None:
    openai_server.script(("delay", 2.0), ("delay", 2.0))
    bot: Bot = bot_factory(llm=provider(openai_server, timeout=0.3, retries=1))
    async with bot.app.running():
        await bot.type("/crew run research-brief heat pumps")
        await bot.wait()
        run = bot.run()
        assert run.status == models.RunStatus.FAILED
        assert "timed out" in (run.error or "")
        assert DEFAULT_API_KEY not in bot.transcript
    await bot.app.aclose()


async def test_per_run_budget_stops_work(bot_factory, openai_server) -> None:
    bot: Bot = bot_factory({"budgets": {"per_run_usd": 0.000001}}, llm=provider(openai_server))
    async with bot.app.running():
        await bot.type("/crew run blog-post heat pumps")
        out = await bot.wait()
    run = bot.run()
    assert run.status == models.RunStatus.FAILED
    assert "budget: this run has spent" in (run.error or "")
    assert "step draft failed" in out
    assert len(openai_server.completion_requests) == 1  # the draft was never asked for
    await bot.app.aclose()


async def test_token_budget_works_offline_too(bot_factory) -> None:
    bot: Bot = bot_factory({"budgets": {"per_run_tokens": 10}})
    async with bot.app.running():
        await bot.type("/crew run blog-post heat pumps")
        await bot.wait()
    assert "budget: this run has used" in (bot.run().error or "")
    await bot.app.aclose()


async def test_daily_budget_counts_every_run(bot_factory, openai_server) -> None:
    bot: Bot = bot_factory({"budgets": {"per_day_usd": 0.000001}}, llm=provider(openai_server))
    async with bot.app.running():
        await bot.type("/crew run research-brief one")
        await bot.wait()
        await bot.type("/crew run research-brief two")
        await bot.wait()
    assert bot.run(1).status == models.RunStatus.SUCCEEDED
    assert "daily cap" in (bot.run(2).error or "")
    await bot.app.aclose()


async def draft_left_by_a_stopped_bot(bot_factory: Any) -> models.Message:
    """A blog-post run taken to its draft by a bot that then stopped: the draft's message."""
    first: Bot = bot_factory()
    async with first.app.running():
        await first.type("/crew run blog-post heat pumps")
        await first.wait()
    draft = first.latest_draft()
    await first.app.aclose()
    return draft


async def test_a_restarted_bot_picks_up_a_run_awaiting_approval(bot_factory) -> None:
    draft = await draft_left_by_a_stopped_bot(bot_factory)

    second: Bot = bot_factory(user="editor")
    async with second.app.running():
        await second.type(f"react #{draft.id} ✅")
        await second.wait()
        assert second.run().status == models.RunStatus.SUCCEEDED
        assert len(second.messages("published")) == 1
    await second.app.aclose()


@pytest.fixture
async def webhook_receiver() -> AsyncIterator[dict[str, Any]]:
    """A receiver that processes each Idempotency-Key once, as a careful API would."""
    state: dict[str, Any] = {"requests": [], "processed": {}, "fail_first": 0}

    async def hook(request: web.Request) -> web.Response:
        key = request.headers.get("Idempotency-Key", "")
        state["requests"].append(key)
        if state["fail_first"]:
            state["fail_first"] -= 1
            return web.json_response({"error": "busy"}, status=503, headers={"Retry-After": "0"})
        state["processed"].setdefault(key, await request.json())
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/hook", hook)
    async with serve_locally(app) as base:
        state["url"] = f"{base}/hook"
        yield state


def publish_to(target: dict[str, Any]) -> dict[str, Any]:
    return {
        "workflows": {
            "blog-post": {
                "steps": [
                    {"name": "research", "agent": "researcher"},
                    {"name": "draft", "agent": "writer", "approval": {}},
                    {"name": "publish", "agent": "publisher", "publish": target},
                ]
            }
        }
    }


async def test_webhook_sees_each_idempotency_key_once(bot_factory, webhook_receiver) -> None:
    bot: Bot = bot_factory(publish_to({"to": "webhook", "url": webhook_receiver["url"]}))
    async with bot.app.running():
        for topic in ("heat pumps", "solar"):
            await bot.type(f"/crew run blog-post {topic}")
        await bot.wait()
        bot.act_as("editor")
        for run_id in (1, 2):
            draft = bot.latest_draft(run_id)
            await bot.type(f"react #{draft.id} ✅", f"react #{draft.id} ✅")
        await bot.wait()
    assert sorted(webhook_receiver["requests"]) == ["1:publish:1", "2:publish:1"]
    payload = webhook_receiver["processed"][webhook_receiver["requests"][0]]
    assert payload["approved_by"] == "shell:editor" and "content" in payload
    await bot.app.aclose()


async def test_webhook_retries_with_the_same_key(bot_factory, webhook_receiver) -> None:
    webhook_receiver["fail_first"] = 1
    bot: Bot = bot_factory(publish_to({"to": "webhook", "url": webhook_receiver["url"]}))
    async with bot.app.running():
        await bot.type("/crew run blog-post heat pumps")
        await bot.wait()
        bot.act_as("editor")
        await bot.type(f"react #{bot.latest_draft().id} ✅")
        await bot.wait()
    requests = webhook_receiver["requests"]
    assert len(requests) == 2 and len(set(requests)) == 1
    assert len(webhook_receiver["processed"]) == 1
    await bot.app.aclose()


async def test_folder_publishing_writes_one_file_per_run(bot_factory, tmp_path: Path) -> None:
    folder = tmp_path / "published"
    bot: Bot = bot_factory(publish_to({"to": "folder", "path": str(folder)}))
    async with bot.app.running():
        await bot.type("/crew run blog-post Why heat pumps beat gas boilers")
        await bot.wait()
        bot.act_as("editor")
        await bot.type(f"react #{bot.latest_draft().id} ✅")
        await bot.wait()
    files = list(folder.iterdir())
    assert [f.name for f in files] == ["00001-why-heat-pumps-beat-gas-boilers.md"]
    assert "heat pumps" in files[0].read_text().lower()
    assert str(files[0]) in bot.transcript
    await bot.app.aclose()


async def shell_process(
    cwd: Path, env: dict[str, str], *, stdout: int
) -> asyncio.subprocess.Process:
    """`crewchief shell --script -` as a separate process, reading its lines from stdin."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        "shell",
        "--as",
        "alice",
        "--script",
        "-",
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=stdout,
        stderr=asyncio.subprocess.PIPE,
    )


@pytest.mark.slow
async def test_kill_9_mid_step_then_a_restart_resumes_it_at_once(
    tmp_path: Path, openai_server: FakeOpenAIServer, db_url: str
) -> None:
    """The default configuration, as an operator runs it: a worker killed while its LLM call
    is in flight leaves a lease of at most 30 s, and the bot restarted on the same machine
    sees that its holder has exited and takes the step up at once."""
    openai_server.script(("delay", 120.0))
    env = {
        **os.environ,
        "CREWCHIEF_DATABASE_URL": db_url,
        "CREWCHIEF_LLM": "openai",
        "OPENAI_API_KEY": DEFAULT_API_KEY,
        "OPENAI_BASE_URL": openai_server.base_url,
        "CREWCHIEF_APPROVERS": "shell:editor",
    }
    proc = await shell_process(tmp_path, env, stdout=asyncio.subprocess.DEVNULL)
    assert proc.stdin is not None
    proc.stdin.write(b"/crew run research-brief heat pumps\nwait\n")
    await proc.stdin.drain()
    proc.stdin.close()
    db = Database(db_url)
    for _ in range(600):
        if openai_server.completion_requests:
            break
        await asyncio.sleep(0.05)
    assert openai_server.completion_requests, "the first process never called the model"
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    killed_at = models.utcnow()
    with db.read() as s:
        step = s.exec(select(models.Step)).one()
    assert step.status == models.StepStatus.RUNNING  # left mid-flight
    assert step.lease_until is not None
    assert step.lease_until - killed_at <= timedelta(seconds=30)  # the default lease

    restarted = time.monotonic()
    proc2 = await shell_process(tmp_path, env, stdout=asyncio.subprocess.PIPE)
    out, errs = await asyncio.wait_for(proc2.communicate(b"wait\n"), timeout=90)
    moving_again = time.monotonic() - restarted
    assert proc2.returncode == 0, errs.decode()
    with db.read() as s:
        run = s.exec(select(models.Run)).one()
        step = s.exec(select(models.Step)).one()
    assert run.status == models.RunStatus.SUCCEEDED
    assert step.attempts == 1  # the attempt the kill cut short ran again, none was used up
    assert b"#2 researcher" in out
    print(f"restart after kill -9: the step finished {moving_again:.1f}s after the restart")
    assert moving_again < 15  # start-up and the call itself; no waiting out the 30 s lease
    db.dispose()


async def draft_shown_but_not_recorded(bot_factory: Any) -> tuple[Bot, models.Message]:
    """A bot killed after it printed draft #N but before it recorded that (its lease on the
    post taken up), and the same database opened again by the editor's shell."""
    draft = await draft_left_by_a_stopped_bot(bot_factory)
    second: Bot = bot_factory(user="editor")
    post_recorded(second.app.db, draft.id, None)
    return second, draft


async def test_a_reaction_on_a_draft_shown_just_before_a_crash_counts(bot_factory) -> None:
    """Killed after it printed draft #N but before it recorded that, the shell shows the draft
    again once restarted. A ✅ typed on #N meanwhile waits for that instead of crashing the
    shell (the dispatcher cannot place a message whose post is in flight), then counts once."""
    second, draft = await draft_shown_but_not_recorded(bot_factory)
    react = asyncio.create_task(second.type(f"react #{draft.id} ✅"))
    await asyncio.sleep(0.3)
    assert not react.done()  # the draft is not shown again yet
    async with second.app.running():
        await react
        await second.wait()
    assert second.transcript.count(f"#{draft.id} writer · draft v1") == 1  # shown again
    assert second.run().status == models.RunStatus.SUCCEEDED
    [vote] = second.rows(models.ApprovalVote)
    assert vote.approver == "shell:editor" and vote.step_id == draft.step_id
    await second.app.aclose()


async def test_a_reply_on_a_draft_shown_just_before_a_crash_is_kept(bot_factory) -> None:
    """The same for a reply: it waits until the draft is placed and is kept as feedback for
    the next 🔁, instead of being dropped while the shell says it was made."""
    second, draft = await draft_shown_but_not_recorded(bot_factory)
    reply = asyncio.create_task(second.type(f"reply #{draft.id} shorter, add a cost table"))
    await asyncio.sleep(0.3)
    assert not reply.done()  # the draft is not shown again yet
    async with second.app.running():
        await reply
        await second.wait()
    [kept] = second.rows(models.ThreadReply)
    assert (kept.run_id, kept.author) == (draft.run_id, "shell:editor")
    assert kept.text == "shorter, add a cost table"
    assert f"shell:editor replied in the thread of #{draft.id}" in second.transcript
    await second.app.aclose()


async def test_a_lease_whose_holder_cannot_be_proven_dead_is_waited_out(bot_factory) -> None:
    """A lease held on another machine (another boot id) is never taken early: only its
    expiry frees the step, one lease after the holder's last heartbeat."""
    from agents.owners import process_owner

    clock = FakeClock()
    bot: Bot = bot_factory(clock=clock)
    await bot.type("/crew run research-brief heat pumps")
    mine = process_owner("worker")
    elsewhere = mine.replace("@", "@0000-other-boot-", 1)
    with bot.app.db.transaction() as s:
        step = s.exec(select(models.Step)).one()
        step.status, step.lease_owner = models.StepStatus.RUNNING, elsewhere
        step.lease_until = clock() + timedelta(seconds=30)
        s.add(step)
    assert bot.app.workers.recover() == 0
    assert not await bot.app.workers.work_once()  # its lease still runs
    clock.advance(seconds=31)
    assert await bot.app.workers.work_once()
    [step] = bot.steps()
    assert step.status == models.StepStatus.SUCCEEDED
    await bot.app.aclose()


async def test_a_worker_goes_on_with_its_runs_next_step_before_other_runs(bot_factory) -> None:
    """The worker that finishes a step runs the next one of that run at once, under its own
    lease, instead of leaving it to the queue: earlier runs reach their drafts first."""
    bot: Bot = bot_factory()
    await bot.type("/crew run blog-post first", "/crew run blog-post second")
    assert await bot.app.workers.work_once()
    research, draft, publish = bot.steps(1)
    assert research.status == models.StepStatus.SUCCEEDED
    assert draft.status == models.StepStatus.AWAITING_APPROVAL and draft.attempts == 1
    assert draft.started_at is not None and draft.lease_owner is None
    assert publish.status == models.StepStatus.WAITING
    assert bot.run(1).status == models.RunStatus.AWAITING_APPROVAL
    assert bot.steps(2)[0].status == models.StepStatus.PENDING  # not yet begun
    assert len(bot.messages("draft", run_id=1)) == 1
    await bot.app.aclose()


async def test_a_next_step_over_the_budget_is_left_to_a_claim_that_says_why(
    bot_factory,
) -> None:
    bot: Bot = bot_factory({"budgets": {"per_run_tokens": 10}})
    await bot.type("/crew run blog-post heat pumps")
    assert await bot.app.workers.work_once()  # research: its tokens pass the budget
    research, draft, _ = bot.steps()
    assert research.status == models.StepStatus.SUCCEEDED
    assert draft.status == models.StepStatus.PENDING and draft.attempts == 0
    await bot.app.workers.work_once()  # the claim fails it
    assert bot.steps()[1].status == models.StepStatus.FAILED
    assert "budget: this run has used" in (bot.run().error or "")
    await bot.app.aclose()


async def test_a_worker_stopped_while_its_heartbeat_stops_is_stopped() -> None:
    """A stop that arrives just as a step's heartbeat is being stopped is not lost: the
    worker does not go on to the next step of its run."""

    async def renew() -> bool:
        return True

    async def step() -> None:
        async with heartbeat(renew, 10.0, "step"):
            pass  # done: the heartbeat stops, and waits for its task to end

    worker = asyncio.create_task(step())
    await asyncio.sleep(0)  # the worker now waits for its heartbeat's task
    worker.cancel()
    with pytest.raises(asyncio.CancelledError):
        await worker
    assert worker.cancelled()


@pytest.mark.slow
async def test_a_call_slower_than_the_lease_keeps_its_step(
    bot_factory, openai_server: FakeOpenAIServer
) -> None:
    """A live worker renews its lease: another process on the same database, idle and
    eager, never takes a step whose LLM call outlasts several leases."""
    openai_server.script(("delay", 7.0))  # more than two leases
    config = {"engine": {"lease": "3s"}}  # renewed every second: a loaded machine keeps up
    first: Bot = bot_factory(config, llm=provider(openai_server, timeout=30))
    second: Bot = bot_factory(config, llm=provider(openai_server, timeout=30))
    async with first.app.running(), second.app.running():
        await first.type("/crew run research-brief heat pumps")
        await first.wait()
    [step] = first.steps()
    assert step.status == models.StepStatus.SUCCEEDED and step.attempts == 1
    assert len(openai_server.completion_requests) == 1
    assert len(first.messages("notes")) == 1
    await first.app.aclose()
    await second.app.aclose()


async def test_a_run_whose_workflow_was_removed_fails_and_others_go_on(bot_factory) -> None:
    custom = {"workflows": {"old-flow": {"steps": [{"name": "research", "agent": "researcher"}]}}}
    before: Bot = bot_factory(custom)
    await before.type("/crew run old-flow heat pumps")  # recorded, not yet worked on
    await before.app.aclose()

    after: Bot = bot_factory()  # crewchief.yml no longer has old-flow
    async with after.app.running():
        await after.type("/crew run research-brief solar")
        await after.wait()
    assert after.run(1).status == models.RunStatus.FAILED
    assert "'old-flow'" in (after.run(1).error or "")
    assert "no longer configured" in after.transcript
    assert after.run(2).status == models.RunStatus.SUCCEEDED
    await after.app.aclose()


async def test_a_graceful_stop_hands_a_step_in_flight_back(
    bot_factory, openai_server: FakeOpenAIServer
) -> None:
    openai_server.script(("delay", 30.0))
    bot: Bot = bot_factory(llm=provider(openai_server, timeout=60))
    async with bot.app.running():
        await bot.type("/crew run research-brief heat pumps")
        for _ in range(200):
            if openai_server.completion_requests:
                break
            await asyncio.sleep(0.02)
    [step] = bot.steps()
    assert step.status == models.StepStatus.PENDING and step.lease_owner is None
    assert step.attempts == 0
    await bot.app.aclose()


async def test_a_webhook_that_stays_down_fails_the_step_and_retry_delivers(
    bot_factory, webhook_receiver
) -> None:
    webhook_receiver["fail_first"] = 4  # every try of the first attempt
    url = webhook_receiver["url"].replace("http://", "http://svc:s3cr3t@")
    bot: Bot = bot_factory(publish_to({"to": "webhook", "url": url}))
    async with bot.app.running():
        await bot.type("/crew run blog-post heat pumps")
        await bot.wait()
        bot.act_as("editor")
        await bot.type(f"react #{bot.latest_draft().id} ✅")
        out = await bot.wait()
        run = bot.run()
        assert run.status == models.RunStatus.FAILED
        assert "answered 503 (gave up after 4 tries)" in (run.error or "")
        assert "/crew retry 1" in out
        await bot.type("/crew retry 1")
        await bot.wait()
    assert bot.run().status == models.RunStatus.SUCCEEDED
    assert set(webhook_receiver["requests"]) == {"1:publish:1"}
    assert len(webhook_receiver["requests"]) == 5 and len(webhook_receiver["processed"]) == 1
    assert "s3cr3t" not in bot.transcript
    await bot.app.aclose()


async def test_another_platforms_messages_do_not_keep_the_shell_waiting(bot: Bot) -> None:
    from commands.events import Actor, SlashCommand

    bot.app.dispatcher.handle_now(
        SlashCommand("ev1", Actor("slack", "U1"), "C1", "run research-brief heat pumps")
    )
    await bot.wait()  # returns: the run's Slack messages are for a Slack process to deliver
    assert bot.run().status == models.RunStatus.SUCCEEDED
    assert "research-brief" not in bot.transcript


async def test_each_failure_is_announced_even_after_a_retry(bot_factory, openai_server) -> None:
    openai_server.script(*[("status", 500, {"Retry-After": "0"})] * 2)
    bot: Bot = bot_factory(llm=provider(openai_server, retries=0))
    async with bot.app.running():
        await bot.type("/crew run research-brief heat pumps")
        await bot.wait()
        await bot.type("/crew retry 1")
        await bot.wait()
        assert bot.run().status == models.RunStatus.FAILED
        assert len(bot.messages("failure")) == 2
        assert bot.transcript.count("step research failed") == 2
    await bot.app.aclose()
