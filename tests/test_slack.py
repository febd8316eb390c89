"""Slack end to end: the real Bolt app in HTTP mode (and Socket Mode), really signed requests,
a local fake of the Slack Web API reached through SLACK_API_URL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agents.config import Reactions
from agents.lifecycle import Clock
from agents.llm import LLMProvider
from bot.app import App, build_app
from bot.config_file import ConfigError
from bot.http import web_app
from bot.platforms.slack import SCOPES, SlackPlatform, slack_settings
from bot.settings import Settings
from storage import models
from tests.conftest import all_rows, free_port, make_config, post_recorded, seed_failed_runs
from tests.fakes.local_server import serve_locally
from tests.fakes.slack_api import APP_TOKEN, BOT_TOKEN, FakeSlack, fake_slack
from tests.fakes.slack_signing import (
    SIGNING_SECRET,
    WORKSPACE,
    event_callback,
    reaction_added,
    reaction_removed,
    signed_form,
    signed_json,
    slash_command,
    thread_message,
    url_verification,
)

CHANNEL = "C0CONTENT1"


def seen(message: Any) -> str:
    """Everything a person sees of a message: its text, blocks and attachments' blocks."""
    blocks = list(message.blocks or [])
    for attachment in getattr(message, "attachments", None) or []:
        blocks += attachment.get("blocks", [])
    return " ".join([message.text, *(b.get("text", {}).get("text", "") for b in blocks)])


ALICE, EDITH, ERIC, MALLORY = "U0ALICE001", "U0EDITH001", "U0ERIC0001", "U0MALLORY1"


@dataclass
class SlackBot:
    app: App
    slack: FakeSlack
    url: str
    http: aiohttp.ClientSession

    async def command(self, text: str, user: str = ALICE) -> tuple[int, dict[str, Any]]:
        body, headers = signed_form(slash_command(text, user_id=user, channel_id=CHANNEL))
        async with self.http.post(self.url, data=body, headers=headers) as resp:
            return resp.status, (await resp.json() if resp.status == 200 else {})

    async def event(self, payload: dict[str, Any], **kwargs: Any) -> int:
        body, headers = signed_json(payload, **kwargs)
        async with self.http.post(self.url, data=body, headers=headers) as resp:
            return resp.status

    async def wait(self) -> None:
        await self.app.wait_idle(timeout=30)

    def top(self) -> list[Any]:
        return self.slack.top_level(CHANNEL)

    def thread(self) -> list[Any]:
        return self.slack.thread(CHANNEL, self.top()[0].ts)

    def ts_of(self, kind: str, index: int = -1) -> str:
        with self.app.db.read() as s:
            from sqlmodel import select

            rows = s.exec(
                select(models.Message)
                .where(models.Message.kind == kind)
                .order_by(models.Message.id)  # type: ignore[arg-type]
            ).all()
            ts = rows[index].platform_id
            assert ts is not None
            return ts

    def run(self, run_id: int = 1) -> models.Run:
        with self.app.db.read() as s:
            run = s.get(models.Run, run_id)
            assert run is not None
            return run


def slack_env(db_url: str, tmp_path: Path, api_url: str, **extra: Any) -> Settings:
    fields: dict[str, Any] = {
        "crewchief_database_url": db_url,
        "crewchief_config": tmp_path / "absent.yml",
        "crewchief_llm": "offline",
        "slack_bot_token": BOT_TOKEN,
        "slack_signing_secret": SIGNING_SECRET,
        "slack_api_url": api_url,
    }
    return Settings(_env_file=None, **{**fields, **extra})  # type: ignore[call-arg]


def build(
    settings: Settings,
    config: dict[str, Any] | None = None,
    *,
    approvers: tuple[str, ...] = (EDITH, ERIC),
    llm: LLMProvider | None = None,
    clock: Clock = models.utcnow,
) -> tuple[App, SlackPlatform]:
    app = build_app(
        settings,
        config=make_config(config),
        default_approvers=[f"slack:{user}" for user in approvers],
        llm=llm,
        clock=clock,
    )
    platform = SlackPlatform(app, slack_settings(settings))
    app.add_platform(platform)
    return app, platform


@asynccontextmanager
async def served(
    app: App, platform: SlackPlatform
) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    """The bot listening for Slack's HTTP requests and working, and a client to send them with;
    (the events URL's base, the client). The app is closed afterwards."""
    async with (
        serve_locally(web_app(app, platform)) as base,
        app.running(),
        aiohttp.ClientSession() as http,
    ):
        yield base, http
    await app.aclose()


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    # The fake refuses any method whose scope the manifest does not declare (missing_scope).
    async with fake_slack(channels=[CHANNEL], scopes=SCOPES) as fake:
        yield fake


@asynccontextmanager
async def serving(
    request: pytest.FixtureRequest, db_url: str, tmp_path: Path, slack: FakeSlack
) -> AsyncIterator[SlackBot]:
    """The bot serving HTTP; `@pytest.mark.crew_config({...})` extends its crewchief.yml."""
    marker = request.node.get_closest_marker("crew_config")
    app, platform = build(
        slack_env(db_url, tmp_path, slack.api_url), marker.args[0] if marker else None
    )
    async with served(app, platform) as (base, http):
        yield SlackBot(app, slack, f"{base}/slack/events", http)


@pytest.fixture
async def bot(
    request: pytest.FixtureRequest, db_url: str, tmp_path: Path, slack: FakeSlack
) -> AsyncIterator[SlackBot]:
    async with serving(request, db_url, tmp_path, slack) as serving_bot:
        yield serving_bot


async def test_walkthrough_in_slack_http_mode(bot: SlackBot) -> None:
    started = time.monotonic()
    status, answer = await bot.command("run blog-post Why heat pumps beat gas boilers")
    assert status == 200 and time.monotonic() - started < 3
    assert "run 1 (blog-post) started" in answer["text"]
    await bot.wait()
    card = bot.top()[0]
    assert "blog-post" in seen(card)
    thread = bot.thread()
    assert [m.thread_ts for m in thread] == [card.ts] * len(thread)
    draft1 = thread[-1]
    draft_text = " ".join(b["text"]["text"] for b in draft1.blocks or [])
    assert "draft v1" in draft_text and ":repeat: send back" in draft_text

    # an editor replies in the thread, then sends the draft back
    await bot.event(
        thread_message(
            user=EDITH, text="shorter, add a cost table", channel=CHANNEL, thread_ts=card.ts
        )
    )
    await bot.event(reaction_added(user=EDITH, reaction="repeat", channel=CHANNEL, ts=draft1.ts))
    await bot.wait()
    assert bot.run().status == models.RunStatus.AWAITING_APPROVAL
    v2_ts = bot.ts_of("draft")
    assert v2_ts != draft1.ts
    v2 = bot.slack.message(CHANNEL, v2_ts)
    assert "| Cost item" in " ".join(b["text"]["text"] for b in v2.blocks or [])

    # another editor approves v2: the cards are edited in place, publishing happens once
    await bot.event(
        reaction_added(user=ERIC, reaction="white_check_mark", channel=CHANNEL, ts=v2_ts)
    )
    await bot.wait()
    run = bot.run()
    assert run.status == models.RunStatus.SUCCEEDED and run.decided_by == f"slack:{ERIC}"
    assert bot.slack.message(CHANNEL, card.ts).edits, "the run card was never edited"
    locked = " ".join(b["text"]["text"] for b in bot.slack.message(CHANNEL, v2_ts).blocks or [])
    assert "approved" in locked and ":repeat: send back" not in locked
    assert len(bot.slack.calls_to("chat.update")) >= 3
    published = [m for m in bot.thread() if "published" in m.text.lower()]
    assert len(published) == 1
    card = bot.slack.message(CHANNEL, card.ts)
    assert card.attachments and card.attachments[0]["color"] == "#2eb886"  # green
    assert "succeeded" in seen(card) and f"<@{ERIC}>" in seen(card)  # who decided


@pytest.mark.parametrize(
    "headers_change",
    ["unsigned", "wrong-secret", "six-minutes-old"],
)
async def test_badly_signed_requests_are_refused_with_no_effect(
    bot: SlackBot, headers_change: str
) -> None:
    fields = slash_command("run research-brief heat pumps", channel_id=CHANNEL)
    if headers_change == "wrong-secret":
        body, headers = signed_form(fields, secret="not-the-secret")
    elif headers_change == "six-minutes-old":
        body, headers = signed_form(fields, timestamp=int(time.time()) - 360)
    else:
        body, headers = signed_form(fields)
        headers = {"Content-Type": headers["Content-Type"]}
    async with bot.http.post(bot.url, data=body, headers=headers) as resp:
        assert resp.status == 401
    await bot.wait()
    assert bot.slack.calls_to("chat.postMessage") == []
    with bot.app.db.read() as s:
        assert s.get(models.Run, 1) is None


async def test_url_verification_and_health(bot: SlackBot) -> None:
    body, headers = signed_json(url_verification("ch4ll3ng3"))
    async with bot.http.post(bot.url, data=body, headers=headers) as resp:
        assert resp.status == 200 and "ch4ll3ng3" in await resp.text()
    base = bot.url.removesuffix("/slack/events")
    async with bot.http.get(base + "/healthz") as resp:
        assert resp.status == 200
        assert await resp.json() == {
            "ok": True,
            "database": "ok",
            "scheduler": "off",  # this test bot runs without the scheduler
            "platforms": {"slack": "connected"},
        }
    await bot.command("run research-brief heat pumps")
    await bot.wait()
    async with bot.http.get(base + "/metrics") as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=")
        text = await resp.text()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("crewchief_runs", (("status", "succeeded"),))] == 1
    assert samples[("crewchief_outbox_pending", ())] == 0


def votes(bot: SlackBot) -> list[str]:
    with bot.app.db.read() as s:
        from sqlmodel import select

        return [v.approver for v in s.exec(select(models.ApprovalVote)).all()]


QUORUM_2 = {
    "workflows": {
        "blog-post": {
            "steps": [
                {"name": "research", "agent": "researcher"},
                {"name": "draft", "agent": "writer", "approval": {"quorum": 2}},
                {"name": "publish", "agent": "publisher", "publish": {"to": "thread"}},
            ]
        }
    }
}


@pytest.mark.crew_config(QUORUM_2)
async def test_the_same_event_delivered_three_times_has_one_effect(bot: SlackBot) -> None:
    await bot.command("run blog-post heat pumps")
    await bot.wait()
    draft_ts = bot.ts_of("draft")
    payload = reaction_added(user=EDITH, reaction="white_check_mark", channel=CHANNEL, ts=draft_ts)
    for retry in (None, 1, 2):
        assert await bot.event(payload, retry_num=retry) == 200
    await bot.wait()
    # three deliveries of one ✅ are one vote: quorum 2 is not reached
    assert bot.run().status == models.RunStatus.AWAITING_APPROVAL
    assert votes(bot) == [f"slack:{EDITH}"]
    # Edith takes her ✅ back; a late retry of the old delivery must not bring it back
    await bot.event(
        reaction_removed(user=EDITH, reaction="white_check_mark", channel=CHANNEL, ts=draft_ts)
    )
    assert await bot.event(payload, retry_num=3) == 200
    assert votes(bot) == []
    for user in (EDITH, ERIC):
        await bot.event(
            reaction_added(user=user, reaction="white_check_mark", channel=CHANNEL, ts=draft_ts)
        )
    await bot.wait()
    assert bot.run().status == models.RunStatus.SUCCEEDED
    assert len([m for m in bot.thread() if "published" in m.text.lower()]) == 1


async def test_a_reaction_on_a_draft_still_being_recorded_counts_once_it_is(
    bot: SlackBot,
) -> None:
    """A ✅ that arrives while the bot records its draft's post waits a moment for that instead
    of failing at once: Slack's next try would come a minute later. While the post stays
    unrecorded it is answered 500, changing nothing, so Slack delivers it again."""
    await bot.command("run blog-post heat pumps")
    await bot.wait()
    draft_ts = bot.ts_of("draft")
    [draft] = [m for m in all_rows(bot.app.db, models.Message) if m.kind == "draft"]
    payload = reaction_added(user=EDITH, reaction="white_check_mark", channel=CHANNEL, ts=draft_ts)
    post_recorded(bot.app.db, draft.id, None, leased_to="a sender recording it")
    assert await bot.event(payload) == 500
    assert votes(bot) == []
    answered = asyncio.ensure_future(bot.event(payload, retry_num=1))
    await asyncio.sleep(0.3)
    assert not answered.done()  # waiting for the post to be recorded
    post_recorded(bot.app.db, draft.id, draft_ts)
    assert await answered == 200
    await bot.wait()
    assert votes(bot) == [f"slack:{EDITH}"]
    assert bot.run().status == models.RunStatus.SUCCEEDED


async def test_a_reaction_on_a_persons_message_does_not_wait_for_the_bots_posts(
    bot: SlackBot,
) -> None:
    """Slack names the author of the message reacted to (`item_user`): a ✅ on a person's
    message is answered at once and recorded nowhere, even while one of the bot's posts to
    that channel is being recorded (a ✅ on the bot's own message then waits, and is answered
    500)."""
    await bot.command("run blog-post heat pumps")
    await bot.wait()
    [draft] = [m for m in all_rows(bot.app.db, models.Message) if m.kind == "draft"]
    post_recorded(bot.app.db, draft.id, None, leased_to="a sender recording it")
    events = len(all_rows(bot.app.db, models.InboundEvent))
    on_alices = reaction_added(
        user=EDITH, reaction="white_check_mark", channel=CHANNEL, ts="1.000900", item_user=ALICE
    )
    assert await bot.event(on_alices) == 200
    assert len(all_rows(bot.app.db, models.InboundEvent)) == events
    on_the_bots = reaction_added(
        user=EDITH, reaction="white_check_mark", channel=CHANNEL, ts="1.000900"
    )
    assert await bot.event(on_the_bots) == 500
    assert votes(bot) == []


async def test_an_outsiders_reaction_is_answered_ephemerally(bot: SlackBot) -> None:
    await bot.command("run blog-post heat pumps")
    await bot.wait()
    draft_ts = bot.ts_of("draft")
    await bot.event(
        reaction_added(user=MALLORY, reaction="white_check_mark", channel=CHANNEL, ts=draft_ts)
    )
    await bot.wait()
    assert bot.run().status == models.RunStatus.AWAITING_APPROVAL
    notes = [e for e in bot.slack.ephemerals if e.user == MALLORY]
    assert notes and notes[0].thread_ts == bot.ts_of("run_card")  # shown in the run's thread
    assert len(notes) == 1 and "only the approvers" in notes[0].text


async def test_rate_limited_posts_are_delivered_once_and_in_order(bot: SlackBot) -> None:
    bot.slack.script_rate_limit("chat.postMessage", retry_after=1, times=1)
    await bot.command("run research-brief heat pumps")
    await bot.wait()
    posts = [c for c in bot.slack.calls_to("chat.postMessage") if c.ok]
    assert len(posts) == 2  # the run card, then the notes in its thread
    card, notes = bot.slack.top_level(CHANNEL)[0], bot.thread()
    assert len(notes) == 1 and notes[0].thread_ts == card.ts
    assert bot.run().status == models.RunStatus.SUCCEEDED


@pytest.mark.crew_config({"engine": {"lease": "3s"}})
@pytest.mark.slow
async def test_a_delivery_slower_than_its_lease_is_not_sent_twice(bot: SlackBot) -> None:
    """slack_sdk sleeps out a 5 s Retry-After inside one delivery: the sender's heartbeat keeps
    the row's 3 s lease, so none of the other senders takes the row and posts it again. (A
    1 s lease renewed every 0.33 s lapsed when a loaded machine held the database thread.)"""
    bot.slack.script_rate_limit("chat.postMessage", retry_after=5, times=1)
    await bot.command("run research-brief heat pumps")
    await bot.wait()
    with bot.app.db.read() as s:
        from sqlmodel import select

        rows = s.exec(select(models.Outbox)).all()
    # every row was claimed once: the card's slow delivery was never taken by another sender
    assert [r.attempts for r in rows if r.status == models.OutboxStatus.SENT] == [1, 1, 1]
    posts = [c for c in bot.slack.calls_to("chat.postMessage") if c.ok]
    assert len(posts) == 2  # the run card and the notes, each once
    assert len(bot.top()) == 1 and len(bot.thread()) == 1


@pytest.mark.parametrize(
    "typed",
    [
        "<!channel> hello <@U123> <https://evil.example|bank>",
        # what Slack sends when a person types those characters: entities
        "&lt;!channel&gt; hello &lt;@U123&gt; &lt;https://evil.example|bank&gt;",
    ],
)
async def test_text_is_escaped_so_it_cannot_ping_or_link(bot: SlackBot, typed: str) -> None:
    await bot.command(f"run research-brief {typed}")
    await bot.wait()
    assert bot.run().text == "<!channel> hello <@U123> <https://evil.example|bank>"
    # every message body the bot sent, run card attachments included
    sent = " ".join(
        str(call.args)
        for call in bot.slack.calls
        if call.method in ("chat.postMessage", "chat.update", "chat.postEphemeral")
    )
    assert "&lt;!channel&gt;" in sent and "&amp;lt;" not in sent
    for live in ("<!channel>", "<@U123>", "<https://evil"):
        assert live not in sent


async def test_thread_replies_are_stored_as_typed(bot: SlackBot) -> None:
    await bot.command("run blog-post heat pumps")
    await bot.wait()
    await bot.event(
        thread_message(
            user=EDITH,
            text="use &lt;b&gt; tags &amp; a table",
            channel=CHANNEL,
            thread_ts=bot.ts_of("run_card"),
        )
    )
    with bot.app.db.read() as s:
        from sqlmodel import select

        [reply] = s.exec(select(models.ThreadReply)).all()
    assert reply.text == "use <b> tags & a table" and reply.author == f"slack:{EDITH}"


async def test_app_mention_answers_with_help(bot: SlackBot) -> None:
    from tests.fakes.slack_signing import app_mention

    await bot.event(app_mention(user=ALICE, text=f"<@{WORKSPACE.bot_user_id}> hi", channel=CHANNEL))
    await bot.wait()
    shown = [
        " ".join(b["text"]["text"] for b in e.blocks or [])
        for e in bot.slack.ephemerals
        if e.user == ALICE
    ]
    assert len(shown) == 1 and "/crew run &lt;workflow&gt; &lt;text&gt;" in shown[0]


def test_missing_and_malformed_settings_are_named(tmp_path: Path) -> None:
    base = {"_env_file": None}
    with pytest.raises(ConfigError, match="SLACK_BOT_TOKEN is not set"):
        slack_settings(Settings(**base))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="starts with xoxb-"):
        slack_settings(Settings(**base, slack_bot_token="xoxp-user-token"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="SLACK_SIGNING_SECRET is not set"):
        slack_settings(Settings(**base, slack_bot_token=BOT_TOKEN))  # type: ignore[arg-type]
    socket = slack_settings(
        Settings(**base, slack_bot_token=BOT_TOKEN, slack_app_token=APP_TOKEN)  # type: ignore[arg-type]
    )
    assert socket.socket_mode


async def test_socket_mode_command_and_reaction(
    db_url: str, tmp_path: Path, slack: FakeSlack
) -> None:
    from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler

    settings = slack_env(db_url, tmp_path, slack.api_url, slack_app_token=APP_TOKEN)
    app, platform = build(settings)
    handler = AsyncSocketModeHandler(platform.bolt, APP_TOKEN)
    async with app.running():
        await handler.connect_async()
        await slack.wait_for_socket()
        ack = await slack.push_envelope(
            "slash_commands", slash_command("run blog-post heat pumps", channel_id=CHANNEL)
        )
        assert "run 1 (blog-post) started" in str(ack.get("payload"))
        await app.wait_idle(timeout=30)
        with app.db.read() as s:
            from sqlmodel import select

            draft = s.exec(select(models.Message).where(models.Message.kind == "draft")).one()
        await slack.push_envelope(
            "events_api",
            event_callback(
                reaction_added(
                    user=EDITH,
                    reaction="white_check_mark",
                    channel=CHANNEL,
                    ts=draft.platform_id or "",
                )["event"]
            ),
        )
        await app.wait_idle(timeout=30)
        with app.db.read() as s:
            run = s.get(models.Run, 1)
            assert run is not None and run.status == models.RunStatus.SUCCEEDED
        await handler.close_async()
    await app.aclose()


def draft_context(content: str) -> dict[str, Any]:
    return {
        "run_id": 1,
        "step": "draft",
        "agent": "writer",
        "version": 1,
        "content": content,
        "feedback": None,
        "offline": False,
        "approvers": [f"slack:{EDITH}"],
        "quorum": 1,
        "reactions": Reactions().shown(),
        "decision": None,
        "decided_by": None,
    }


async def test_long_drafts_are_split_and_very_long_ones_attached(
    db_url: str, tmp_path: Path, slack: FakeSlack
) -> None:
    from bot.platforms.base import Delivery

    app, platform = build(slack_env(db_url, tmp_path, slack.api_url))
    paragraph = "Heat pumps move heat instead of making it. " * 20
    medium = "\n\n".join([paragraph] * 10)  # about 8,600 characters
    ts = await platform.deliver(
        Delivery(kind="post", channel=CHANNEL, template="draft", context=draft_context(medium))
    )
    blocks = slack.message(CHANNEL, ts or "").blocks or []
    assert 3 <= len(blocks) <= 50
    assert all(len(b["text"]["text"]) <= 3000 for b in blocks)
    assert slack.files == {}

    huge = "\n\n".join([paragraph] * 80)  # about 69,000 characters
    ts = await platform.deliver(
        Delivery(kind="post", channel=CHANNEL, template="draft", context=draft_context(huge), ref=7)
    )
    shown = " ".join(b["text"]["text"] for b in slack.message(CHANNEL, ts or "").blocks or [])
    assert "the full text is attached" in shown
    assert ":white_check_mark: approve" in shown  # the hint people act on survives the cut
    [upload] = slack.files.values()
    assert upload.content is not None and len(upload.content.decode()) >= len(huge)
    assert upload.filename == "draft-7.md"
    await platform.aclose()
    await app.aclose()


@pytest.mark.slow
async def test_crewchief_start_serves_slack_http_until_sigterm(
    db_url: str, tmp_path: Path, slack: FakeSlack
) -> None:
    """The real `crewchief start` process: a signed command in, a run card out, a clean stop."""
    import os
    import signal
    import sys

    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "CREWCHIEF_"))},
        "CREWCHIEF_DATABASE_URL": db_url,
        "CREWCHIEF_LLM": "offline",
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": slack.api_url,
        "CREWCHIEF_APPROVERS": f"slack:{EDITH}",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        "start",
        "--platform",
        "slack",
        "--port",
        str(port),
        cwd=tmp_path,
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(200):
                try:
                    async with http.get(url + "/healthz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.05)
            body, headers = signed_form(
                slash_command("run research-brief heat pumps", channel_id=CHANNEL)
            )
            async with http.post(url + "/slack/events", data=body, headers=headers) as resp:
                assert resp.status == 200
            for _ in range(200):
                if (
                    len(
                        slack.thread(CHANNEL, slack.top_level(CHANNEL)[0].ts)
                        if slack.top_level(CHANNEL)
                        else []
                    )
                    == 1
                ):
                    break
                await asyncio.sleep(0.05)
        assert "research-brief" in seen(slack.top_level(CHANNEL)[0])
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 0, err.decode()
    assert BOT_TOKEN not in err.decode() and SIGNING_SECRET not in err.decode()


async def test_the_bots_own_reactions_and_messages_are_ignored(bot: SlackBot) -> None:
    await bot.command("run blog-post heat pumps")
    await bot.wait()
    card_ts, draft_ts = bot.ts_of("run_card"), bot.ts_of("draft")
    await bot.event(
        reaction_added(
            user=WORKSPACE.bot_user_id, reaction="white_check_mark", channel=CHANNEL, ts=draft_ts
        )
    )
    bot_reply = thread_message(
        user=WORKSPACE.bot_user_id, text="a note", channel=CHANNEL, thread_ts=card_ts
    )
    bot_reply["event"]["bot_id"] = WORKSPACE.bot_id
    await bot.event(bot_reply)
    await bot.wait()
    assert bot.run().status == models.RunStatus.AWAITING_APPROVAL
    with bot.app.db.read() as s:
        from sqlmodel import select

        assert s.exec(select(models.ApprovalVote)).all() == []
        assert s.exec(select(models.ThreadReply)).all() == []
        assert (
            s.exec(
                select(models.AuditEntry).where(models.AuditEntry.action == "vote.refused")
            ).all()
            == []
        )
    assert [e for e in bot.slack.ephemerals if e.user == WORKSPACE.bot_user_id] == []


async def test_a_failed_attachment_does_not_post_the_card_twice(
    db_url: str, tmp_path: Path, slack: FakeSlack
) -> None:
    from bot.platforms.base import Delivery

    app, platform = build(slack_env(db_url, tmp_path, slack.api_url))
    slack.script_error("files.completeUploadExternal", "internal_error", status=500, times=5)
    huge = "\n\n".join(["Heat pumps move heat instead of making it. " * 20] * 80)
    ts = await platform.deliver(
        Delivery(kind="post", channel=CHANNEL, template="draft", context=draft_context(huge))
    )
    assert ts is not None  # delivered: the outbox will not post it again
    assert len([c for c in slack.calls_to("chat.postMessage") if c.ok]) == 1
    await platform.aclose()
    await app.aclose()


@pytest.mark.parametrize(
    ("channel", "error"),
    [("C0ELSEWHERE", "channel_not_found"), (CHANNEL, "restricted_action")],
)
async def test_a_run_in_a_channel_the_bot_cannot_post_in_stops_and_says_so(
    bot: SlackBot, channel: str, error: str
) -> None:
    if error == "restricted_action":
        bot.slack.script_error("chat.postMessage", error, times=1)
    body, headers = signed_form(
        slash_command("run blog-post heat pumps", user_id=ALICE, channel_id=channel)
    )
    async with bot.http.post(bot.url, data=body, headers=headers) as resp:
        assert resp.status == 200
    await bot.wait()
    run = bot.run()
    assert run.status == models.RunStatus.FAILED
    assert f"could not post in this channel (Slack refused it: {error})" in (run.error or "")
    told = [seen(m) for m in bot.slack.dm(ALICE)] + [
        " ".join(b["text"]["text"] for b in e.blocks or [])
        for e in bot.slack.ephemerals
        if e.user == ALICE
    ]
    assert any("Invite me there" in t for t in told), told
    assert bot.slack.calls_to("chat.postMessage")[0].error == error
    assert (
        len([c for c in bot.slack.calls_to("chat.postMessage") if c.args.get("channel") == channel])
        == 1
    )


async def test_a_refused_approve_command_is_answered_once(bot: SlackBot) -> None:
    await bot.command("run blog-post heat pumps", user=EDITH)  # Edith approves, but not herself
    await bot.wait()
    status, answer = await bot.command("approve 1", user=EDITH)
    assert status == 200 and "does not allow self-approval" in str(answer["blocks"])
    await bot.wait()
    assert [e for e in bot.slack.ephemerals if e.user == EDITH] == []
    assert bot.run().status == models.RunStatus.AWAITING_APPROVAL


REFUSALS = [
    # (who, what they do, what they are told, what is audited)
    (MALLORY, "/crew cancel 1", "only the requester, the run's approvers or an admin", "cancel"),
    (MALLORY, "/crew retry 1", "only the requester, the run's approvers or an admin", "retry"),
    (MALLORY, "/crew approve 1", "you may not run approve", "command"),
    (EDITH, "/crew approve 1", "does not allow self-approval", "vote"),
    (MALLORY, ":white_check_mark:", "only the approvers of this step can decide", "vote"),
    (MALLORY, ":octagonal_sign:", "only the requester, the run's approvers or an admin", "cancel"),
    (EDITH, ":white_check_mark:", "does not allow self-approval", "vote"),
]


@pytest.mark.parametrize(("who", "action", "told", "audited"), REFUSALS)
async def test_every_refusal_is_answered_exactly_once(
    bot: SlackBot, who: str, action: str, told: str, audited: str
) -> None:
    """A command is answered in its acknowledgement, a reaction by one ephemeral in the run's
    thread; nothing else reaches the person, nothing changes, and the refusal is audited."""
    await bot.command("run blog-post heat pumps", user=EDITH)  # Edith approves, not herself
    await bot.wait()
    if action.startswith("/crew "):
        status, answer = await bot.command(action.removeprefix("/crew "), user=who)
        assert status == 200 and told in str(answer)
        expected_ephemerals = 0
    else:
        draft_ts = bot.ts_of("draft")
        await bot.event(
            reaction_added(user=who, reaction=action.strip(":"), channel=CHANNEL, ts=draft_ts)
        )
        expected_ephemerals = 1
    await bot.wait()
    private = [e for e in bot.slack.ephemerals if e.user == who]
    direct = [c for c in bot.slack.calls_to("chat.postMessage") if c.args.get("channel") == who]
    assert len(private) == expected_ephemerals and direct == []
    assert all(told in e.text and e.thread_ts == bot.ts_of("run_card") for e in private)
    assert bot.run().status == models.RunStatus.AWAITING_APPROVAL
    with bot.app.db.read() as s:
        from sqlmodel import select

        refused = s.exec(
            select(models.AuditEntry).where(models.AuditEntry.action == f"{audited}.refused")
        ).all()
        assert [a.actor for a in refused] == [f"slack:{who}"]
        assert s.exec(select(models.ApprovalVote)).all() == []


async def test_sections_are_verbatim_so_bare_mentions_stay_text(bot: SlackBot) -> None:
    await bot.command("run research-brief @here look at #general https://example.com")
    await bot.wait()
    sections = [
        b
        for m in bot.slack.messages[CHANNEL]
        for b in (m.blocks or []) + [x for a in m.attachments or [] for x in a.get("blocks", [])]
        if b["type"] == "section"
    ]
    assert sections and all(b["text"]["verbatim"] is True for b in sections)


async def test_replies_in_other_peoples_threads_are_not_feedback(bot: SlackBot) -> None:
    from tests.fakes.slack_signing import app_mention

    await bot.command("run blog-post heat pumps")
    await bot.wait()
    card_ts = bot.ts_of("run_card")
    # someone else's thread in the same channel, and a mention of the bot in the run's thread
    await bot.event(
        thread_message(
            user=EDITH,
            text="lunch?",
            channel=CHANNEL,
            thread_ts="1699999999.000100",
            parent_user_id=ALICE,
        )
    )
    mention = app_mention(
        user=EDITH, text=f"<@{WORKSPACE.bot_user_id}> shorter please", channel=CHANNEL
    )
    mention["event"]["thread_ts"] = card_ts
    await bot.event(mention)
    await bot.event(
        thread_message(
            user=EDITH,
            text=f"<@{WORKSPACE.bot_user_id}> shorter please",
            channel=CHANNEL,
            thread_ts=card_ts,
        )
    )
    await bot.wait()
    with bot.app.db.read() as s:
        from sqlmodel import select

        replies = [r.text for r in s.exec(select(models.ThreadReply)).all()]
        seen_events = len(s.exec(select(models.InboundEvent)).all())
    assert replies == [f"<@{WORKSPACE.bot_user_id}> shorter please"]
    assert seen_events == 2  # the command and the one reply: nothing else touched the database
    assert [e for e in bot.slack.ephemerals if e.user == EDITH] == []  # no help in the thread


SLACK_OPS = {
    "ops": {"channels": [f"slack:{CHANNEL}"]},
    "alerts": {"rules": {"failure-rate": {"for": 0}, "missed-job": {"enabled": False}}},
}


@pytest.mark.crew_config(SLACK_OPS)
async def test_an_alert_in_the_slack_ops_channel_is_acknowledged_and_resolves(
    bot: SlackBot,
) -> None:
    from agents import digest
    from agents.alerts import run_evaluation

    now = models.utcnow()
    seed_failed_runs(
        bot.app.db, platform="slack", channel=CHANNEL, requester=f"slack:{ALICE}", at=now
    )
    app = bot.app
    await app.db.call(run_evaluation, app.db, app.crew.alerts, now, "p1")
    await bot.wait()
    [card] = bot.top()
    assert "alert 1 · failure-rate · workflow=blog-post · firing" in seen(card)
    assert card.attachments and card.attachments[0]["color"] == "#e01e5a"  # red

    await bot.event(reaction_added(user=MALLORY, reaction="eyes", channel=CHANNEL, ts=card.ts))
    await bot.wait()
    card = bot.slack.message(CHANNEL, card.ts)
    assert f"acknowledged by slack:{MALLORY}" in seen(card)

    # the scheduled digest: the failed runs and the alert, with its chart in the thread
    assert await app.db.call(digest.run_scheduled, app.db, app.config, models.utcnow(), "09:00")
    await bot.wait()
    [_, post] = bot.top()
    assert "digest · last 24h" in seen(post) and "*runs started:* 3 (was 0)" in seen(post)
    assert "*alerts:* 1 fired · 1 acknowledged · 0 resolved" in seen(post)
    [upload] = bot.slack.uploads_in(CHANNEL)
    assert upload.content is not None and upload.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert [f["id"] for f in bot.slack.thread(CHANNEL, post.ts)[0].files] == [upload.id]

    await app.db.call(run_evaluation, app.db, app.crew.alerts, now + timedelta(hours=2), "p2")
    await bot.wait()
    card = bot.slack.message(CHANNEL, card.ts)
    assert "· resolved" in seen(card) and card.attachments[0]["color"] == "#2eb886"  # green
    replies = [seen(m) for m in bot.slack.thread(CHANNEL, card.ts)]
    assert len(replies) == 2
    assert f"acknowledged by slack:{MALLORY}" in replies[0]
    assert f"resolved after 2h 00m, acknowledged by slack:{MALLORY}" in replies[1]
    assert len(bot.top()) == 2, "one card per alert, edited in place, and the digest"


@pytest.mark.crew_config(SLACK_OPS)
async def test_alerts_of_one_evaluation_share_a_slack_card_and_the_acknowledger_notes_it(
    bot: SlackBot,
) -> None:
    from agents.alerts import run_evaluation

    now = models.utcnow()
    for workflow in ("blog-post", "research-brief"):
        seed_failed_runs(
            bot.app.db,
            platform="slack",
            channel=CHANNEL,
            requester=f"slack:{ALICE}",
            at=now,
            workflow=workflow,
        )
    app = bot.app
    await app.db.call(run_evaluation, app.db, app.crew.alerts, now, "p1")
    await bot.wait()
    [card] = bot.top()  # one post for both
    assert "alerts 1, 2 · fired together · firing" in seen(card)
    assert "alert 1* · failure-rate · workflow=blog-post · firing" in seen(card)
    assert "alert 2* · failure-rate · workflow=research-brief · firing" in seen(card)
    assert card.attachments and card.attachments[0]["color"] == "#e01e5a"  # red

    await bot.event(
        thread_message(user=MALLORY, text="on it?", channel=CHANNEL, thread_ts=card.ts)
    )  # before the 👀: not a note
    await bot.event(reaction_added(user=MALLORY, reaction="eyes", channel=CHANNEL, ts=card.ts))
    await bot.event(thread_message(user=EDITH, text="+1", channel=CHANNEL, thread_ts=card.ts))
    await bot.event(
        thread_message(
            user=MALLORY,
            text="restarting the provider &lt;!channel&gt;",  # as Slack sends "<!channel>"
            channel=CHANNEL,
            thread_ts=card.ts,
        )
    )
    await bot.wait()
    card = bot.slack.message(CHANNEL, card.ts)
    shown = seen(card)
    assert shown.count(f"acknowledged by slack:{MALLORY}") == 2
    assert shown.count(f"note by slack:{MALLORY}: restarting the provider &lt;!channel&gt;") == 2
    assert "<!channel>" not in shown
    [reply] = [seen(m) for m in bot.slack.thread(CHANNEL, card.ts)]
    assert f"acknowledged by slack:{MALLORY} (alerts 1, 2)" in reply
    notes = [a.note for a in all_rows(bot.app.db, models.Alert)]
    assert notes == ["restarting the provider <!channel>"] * 2
    assert len(bot.top()) == 1
