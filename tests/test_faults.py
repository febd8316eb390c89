"""Fault injection: the model server failing three calls in ten, in every way it fails in
practice. Each run ends (succeeded, or failed with the cause recorded and shown), nothing is
left hanging, and the bot goes on serving."""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlmodel import select

from agents.alerts import run_evaluation
from agents.lifecycle import Clock
from agents.llm import LLMProvider
from agents.openai_provider import OpenAIProvider
from bot.app import App
from bot.platforms.slack import SCOPES
from storage import models
from tests.conftest import Bot, all_rows
from tests.fakes.openai_server import DEFAULT_API_KEY, FakeOpenAIServer, running_fake_openai
from tests.fakes.slack_api import CONNECTION_RESET, FakeSlack, fake_slack
from tests.fakes.slack_signing import (
    reaction_added,
    signed_form,
    signed_json,
    slash_command,
)
from tests.test_slack import ALICE, EDITH, MALLORY, build, served, slack_env

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


def model_script() -> list[tuple[Any, ...]]:
    """What the model server does, request after request: 3 in 10 fail (seeded)."""
    rng = random.Random(8)
    return [
        rng.choice(FAULTS) if rng.random() < 0.3 else ("reply", f"notes {i}") for i in range(400)
    ]


def fault_name(behaviour: tuple[Any, ...]) -> str:
    kind = behaviour[0]
    if kind == "status":
        header = " with Retry-After" if len(behaviour) > 2 else " without Retry-After"
        return f"{behaviour[1]}{header if behaviour[1] == 429 else ''}"
    return {"delay": "timeout", "raw": "malformed JSON", "cut": "cut mid-body"}[kind]


@pytest.fixture
async def flaky() -> AsyncIterator[FakeOpenAIServer]:
    async with running_fake_openai() as server:
        server.script(*model_script())
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


# ------------------------------------------------------------------ Slack failing too

CONTENT, OPS = "C0CONTENT1", "C0OPS00001"
STORM_RUNS = 24
SLACK_SEED = 20261203
STORM_CONFIG = {
    "ops": {"channels": [f"slack:{OPS}"]},
    "alerts": {
        "rules": {
            # llm-errors counts calls as the engine sees them, after the client's retries,
            # which absorb most faults (the default 20% would hear of this storm only by
            # luck); a team on a flaky provider asks to hear of one call in 20 failing
            "llm-errors": {"threshold": 0.05},
            # evaluations are run by hand on a clock the test moves, not by the scheduler
            "missed-job": {"enabled": False},
        }
    },
}


class MovableClock:
    """Real time, plus however far the test has moved it: leases and back-offs still pass
    as time passes, and an alert's window can be left behind without waiting for it."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return models.utcnow() + self.offset

    def advance(self, **kwargs: float) -> None:
        self.offset += timedelta(**kwargs)


@dataclass
class People:
    """People in Slack, as Slack delivers what they do: signed requests to the bot, and an
    event the bot did not acknowledge delivered again (same event_id, X-Slack-Retry-Num)."""

    http: aiohttp.ClientSession
    base: str  # where the bot listens

    commands_acknowledged: int = 0
    commands_unanswered: int = 0
    events_acknowledged: int = 0
    redeliveries: int = 0

    @property
    def events(self) -> str:
        return f"{self.base}/slack/events"

    async def run(self, text: str) -> int:
        """Launch a run as Alice; a command that was not acknowledged is typed again."""
        for _ in range(5):
            body, headers = signed_form(slash_command(text, user_id=ALICE, channel_id=CONTENT))
            async with self.http.post(
                f"{self.base}/slack/events", data=body, headers=headers
            ) as resp:
                answer = await resp.text() if resp.status == 200 else ""
            started = re.search(r"run (\d+) \([\w-]+\) started", answer)
            if started:
                self.commands_acknowledged += 1
                return int(started.group(1))
            self.commands_unanswered += 1
        raise AssertionError(f"/crew {text} was never acknowledged")

    async def react(self, user: str, emoji: str, channel: str, ts: str) -> None:
        payload = reaction_added(user=user, reaction=emoji, channel=channel, ts=ts)
        for retry in (None, 1, 2, 3):
            body, headers = signed_json(payload, retry_num=retry)
            async with self.http.post(
                f"{self.base}/slack/events", data=body, headers=headers
            ) as resp:
                if resp.status == 200:
                    self.events_acknowledged += 1
                    return
            self.redeliveries += 1
        raise AssertionError(f"the {emoji} reaction was never acknowledged")


def shown(message: Any) -> str:
    """What a person sees of a Slack message: its text and its blocks, attachments' too."""
    blocks = list(message.blocks or [])
    for attachment in message.attachments or []:
        blocks += attachment.get("blocks", [])
    return " ".join([message.text, *(b.get("text", {}).get("text", "") for b in blocks)])


def outbox_key(message: Any) -> str | None:
    metadata = message.metadata or {}
    return (metadata.get("event_payload") or {}).get("key")


def assert_each_post_reached_slack_once(app: App, slack: FakeSlack) -> int:
    """Every post the bot made is in Slack exactly once (found by the outbox key each post
    carries), and nothing the bot queued is undelivered. Returns how many posts there are."""
    posted = Counter(outbox_key(m) for channel in (CONTENT, OPS) for m in slack.messages[channel])
    assert [k for k, n in posted.items() if n > 1] == [], "posted twice"
    outbox = all_rows(app.db, models.Outbox)
    delivered = {models.OutboxStatus.SENT, models.OutboxStatus.SUPERSEDED}
    assert [r.key for r in outbox if r.status not in delivered] == []
    posts = {r.key for r in outbox if r.kind == models.OutboxKind.POST}
    assert posts == {k for k in posted if k is not None}
    return len(posts)


async def evaluate_alerts(app: App, clock: MovableClock) -> None:
    now = clock()
    assert await app.db.call(run_evaluation, app.db, app.crew.alerts, now, now.isoformat())
    await app.wait_idle(timeout=60)


def drafts_to_approve(app: App) -> list[tuple[int, str]]:
    with app.db.read() as s:
        waiting = s.exec(
            select(models.Run).where(models.Run.status == models.RunStatus.AWAITING_APPROVAL)
        ).all()
    found = []
    for run in waiting:
        assert run.id is not None
        drafts = [
            m
            for m in all_rows(app.db, models.Message)
            if m.run_id == run.id and m.kind == models.MessageKind.DRAFT
        ]
        assert drafts and drafts[-1].platform_id, f"run {run.id}'s draft never reached Slack"
        found.append((run.id, drafts[-1].platform_id))
    return found


@asynccontextmanager
async def serving_slack(
    db_url: str,
    tmp_path: Path,
    slack: FakeSlack,
    *,
    llm: LLMProvider | None = None,
    clock: Clock = models.utcnow,
    config: dict[str, Any] | None = None,
) -> AsyncIterator[tuple[App, People]]:
    """The bot in Slack HTTP mode against `slack`, and the people who use it."""
    settings = slack_env(
        db_url, tmp_path, slack.api_url, crewchief_llm="openai" if llm else "offline"
    )
    app, platform = build(settings, config, approvers=(EDITH,), llm=llm, clock=clock)
    async with served(app, platform) as (base, http):
        yield app, People(http, base)


@pytest.mark.slow
async def test_slack_and_the_model_failing_three_calls_in_ten_in_one_storm(
    db_url: str, tmp_path: Path, flaky: FakeOpenAIServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    clock = MovableClock()
    llm = OpenAIProvider(
        api_key=DEFAULT_API_KEY, base_url=flaky.base_url, timeout=1.0, max_retries=2
    )
    async with (
        fake_slack(channels={CONTENT: "content", OPS: "ops"}, scopes=SCOPES) as slack,
        serving_slack(db_url, tmp_path, slack, llm=llm, clock=clock, config=STORM_CONFIG) as (
            app,
            people,
        ),
    ):
        slack.fail_randomly(0.3, seed=SLACK_SEED)
        launched = [await people.run(f"run blog-post topic {i}") for i in range(STORM_RUNS)]
        await app.wait_idle(timeout=60)
        approved = drafts_to_approve(app)
        for i, (_, ts) in enumerate(approved):
            if i % 4 == 0:  # someone who may not approve tries first, and is told so
                await people.react(MALLORY, "white_check_mark", CONTENT, ts)
            await people.react(EDITH, "white_check_mark", CONTENT, ts)
        await app.wait_idle(timeout=60)
        refused = len(approved[::4])

        # every acknowledged command is one run, and every run has ended
        runs = all_rows(app.db, models.Run)
        assert sorted(launched) == [r.id for r in runs] and len(runs) == STORM_RUNS
        ended = {models.RunStatus.SUCCEEDED, models.RunStatus.FAILED}
        assert {r.status for r in runs} <= ended, [(r.id, r.status) for r in runs]
        succeeded = [r for r in runs if r.status == models.RunStatus.SUCCEEDED]
        failed = [r for r in runs if r.status == models.RunStatus.FAILED]
        assert succeeded, "nobody got anything published"

        # each run card reached the channel once, and shows how its run ended
        cards = slack.top_level(CONTENT)
        assert len(cards) == STORM_RUNS
        card_of = {
            m.run_id: slack.message(CONTENT, m.platform_id)
            for m in all_rows(app.db, models.Message)
            if m.kind == models.MessageKind.RUN_CARD and m.platform_id
        }
        assert sorted(card_of) == sorted(launched)
        for run in runs:
            icon = "large_green_circle" if run.status == "succeeded" else "red_circle"
            assert f":{icon}:" in shown(card_of[run.id])
        # a failed run says why in its thread, with the way out
        for run in failed:
            assert run.error
            step, _, cause = run.error.partition(": ")
            thread = [shown(m) for m in slack.thread(CONTENT, card_of[run.id].ts)]
            assert any(
                f"step {step} failed" in t and cause in t and f"/crew retry {run.id}" in t
                for t in thread
            ), (run.error, thread)
        # every acknowledged approval counted
        votes = all_rows(app.db, models.ApprovalVote)
        assert {v.run_id for v in votes if v.approver == f"slack:{EDITH}"} >= {
            run_id for run_id, _ in approved
        }
        for run_id, _ in approved:
            run = next(r for r in runs if r.id == run_id)
            published = [
                m for m in slack.thread(CONTENT, card_of[run_id].ts) if "published" in m.text
            ]
            if run.status == models.RunStatus.SUCCEEDED:
                assert run.decided_by == f"slack:{EDITH}" and len(published) == 1

        # the outsider was told once per reaction, privately, and changed nothing
        told = [e for e in slack.ephemerals if e.user == MALLORY]
        assert len(told) == refused and slack.dm(MALLORY) == []
        assert all("only the approvers of this step can decide" in e.text for e in told)
        assert not any(v.approver == f"slack:{MALLORY}" for v in votes)

        # nothing reached Slack twice, and nothing the bot queued was lost
        assert_each_post_reached_slack_once(app, slack)
        model_requests = len(flaky.completion_requests)
        model_faults = Counter(
            fault_name(b) for b in model_script()[:model_requests] if b[0] != "reply"
        )
        calls = all_rows(app.db, models.LLMCall)

        # the model's trouble raises an alert in the ops channel while it lasts; the runs
        # failing because of it are told in the same card
        await evaluate_alerts(app, clock)
        clock.advance(minutes=5)  # failure-rate has been true for its `for`
        await evaluate_alerts(app, clock)
        alerts = {a.rule: a for a in all_rows(app.db, models.Alert)}
        assert alerts["llm-errors"].state == "firing"
        failure_rate = app.config.alerts.rules.failure_rate
        runs_failing = len(failed) >= failure_rate.min_runs
        if runs_failing and len(failed) / len(runs) >= failure_rate.threshold:
            assert alerts["failure-rate"].state == "firing"
        [alert_card] = slack.top_level(OPS)
        assert "llm-errors" in shown(alert_card) and "firing" in shown(alert_card)
        if "failure-rate" in alerts:
            assert "blog-post runs failed in the last 1h" in shown(alert_card)

        # the faults stop; the bot is up and answers as before
        slack_calls = len(slack.calls)
        slack.stop_failing()
        flaky.clear_script()
        async with people.http.get(f"{people.base}/healthz") as resp:
            assert resp.status == 200 and (await resp.json())["ok"] is True
        after = await people.run("run blog-post after the storm")
        await app.wait_idle(timeout=30)
        [(run_id, ts)] = drafts_to_approve(app)
        assert run_id == after
        await people.react(EDITH, "white_check_mark", CONTENT, ts)
        await app.wait_idle(timeout=30)
        with app.db.read() as s:
            last = s.get(models.Run, after)
            assert last is not None and last.status == models.RunStatus.SUCCEEDED

        # ... and once the faults are out of the alerts' windows, the alerts resolve
        clock.advance(hours=2)
        await evaluate_alerts(app, clock)
        clock.advance(minutes=10)  # failure-rate's keep_firing_for
        await evaluate_alerts(app, clock)
        assert {a.rule: a.state for a in all_rows(app.db, models.Alert)} == {
            rule: "resolved" for rule in alerts
        }
        alert_card = slack.message(OPS, alert_card.ts)
        assert "resolved" in shown(alert_card)
        assert any("resolved" in shown(m) for m in slack.thread(OPS, alert_card.ts))
        assert len(slack.top_level(OPS)) == 1
        posts = assert_each_post_reached_slack_once(app, slack)

    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]
    storm_calls = slack.calls[:slack_calls]
    causes = Counter(re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:<port>", r.error or "") for r in failed)
    print(
        f"\nstorm: {STORM_RUNS} runs launched and approved; model: {model_requests} requests, "
        f"faults {dict(model_faults)}, {len(calls)} calls recorded, "
        f"{sum(1 for c in calls if c.error)} failed; Slack: {slack_calls} calls "
        f"({dict(Counter(c.method for c in storm_calls))}), faults {dict(slack.faults)}; "
        f"runs: {len(succeeded)} succeeded, {len(failed)} failed ({dict(causes)}); "
        f"commands typed again {people.commands_unanswered}, events delivered again "
        f"{people.redeliveries}; {posts} posts, each once; {refused} refused reactions, each "
        "told once; alerts: " + ", ".join(f"{rule} fired and resolved" for rule in sorted(alerts))
    )


@pytest.mark.slow
async def test_slack_closing_connections_is_waited_out_and_logged_as_such(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Slack (or a proxy before it) closing every connection without an answer for a while:
    the run card waits and goes out once Slack answers again, and the operator's log says
    Slack was unreachable, as a warning, not an error with a traceback."""
    caplog.set_level(logging.WARNING)
    async with (
        fake_slack(channels=[CONTENT], scopes=SCOPES) as slack,
        serving_slack(db_url, tmp_path, slack) as (app, people),
    ):
        slack.fail_randomly(
            1.0, seed=1, kinds=[CONNECTION_RESET], methods=["chat.postMessage"], cut="close"
        )
        await people.run("run research-brief heat pumps")
        async with asyncio.timeout(30):
            while len(slack.calls_to("chat.postMessage")) < 3:  # one delivery, retried twice
                await asyncio.sleep(0.05)
        slack.stop_failing()
        await app.wait_idle(timeout=30)
        [card] = slack.top_level(CONTENT)
        assert "research-brief" in shown(card)
    told = [r.getMessage() for r in caplog.records if r.name == "bot.delivery"]
    assert any("Slack unreachable: ServerDisconnectedError" in m for m in told), told
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]


@pytest.mark.slow
async def test_slack_failing_the_bots_first_auth_test_loses_no_command_or_approval(
    db_url: str, tmp_path: Path
) -> None:
    """Bolt asks Slack who the bot is (auth.test) on its first request after a start. When
    Slack fails that call, the request must not be acknowledged as if it were handled: the
    person is not told to reinstall the app, and Slack delivers the event again."""
    async with fake_slack(channels=[CONTENT], scopes=SCOPES) as slack:
        async with serving_slack(db_url, tmp_path, slack) as (app, people):
            slack.script_error("auth.test", status=500, times=3)  # the SDK retries twice
            body, headers = signed_form(slash_command("run blog-post heat pumps", user_id=ALICE))
            async with people.http.post(people.events, data=body, headers=headers) as resp:
                refused = (resp.status, await resp.text())
            assert refused[0] >= 500 and "reinstall" not in refused[1]
            assert all_rows(app.db, models.Run) == []
            run_id = await people.run("run blog-post heat pumps")  # typed again
            await app.wait_idle(timeout=30)
            [(_, draft_ts)] = drafts_to_approve(app)

        # restarted: the first request is Edith's approval
        async with serving_slack(db_url, tmp_path, slack) as (app, people):
            slack.script_error("auth.test", status=500, times=3)
            await people.react(EDITH, "white_check_mark", CONTENT, draft_ts)
            assert people.redeliveries == 1
            await app.wait_idle(timeout=30)
            with app.db.read() as s:
                run = s.get(models.Run, run_id)
                assert run is not None and run.status == models.RunStatus.SUCCEEDED
                assert run.decided_by == f"slack:{EDITH}"


async def test_a_token_slack_refuses_is_not_retried_and_is_named_in_the_log(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Unlike a Slack that fails, a revoked token will not get better with Slack delivering
    the event again: Bolt answers it (telling the app needs reinstalling) and the log says
    why."""
    async with (
        fake_slack(channels=[CONTENT], scopes=SCOPES) as slack,
        serving_slack(db_url, tmp_path, slack) as (app, people),
    ):
        slack.bot_token = "xoxb-issued-after-the-bots-was-revoked"
        event = reaction_added(user=EDITH, reaction="eyes", channel=CONTENT, ts="1.000100")
        body, headers = signed_json(event)
        async with people.http.post(people.events, data=body, headers=headers) as resp:
            assert resp.status == 200 and "reinstall this app" in await resp.text()
        assert all_rows(app.db, models.InboundEvent) == []
    assert "Slack refused the bot token: invalid_auth" in caplog.text
