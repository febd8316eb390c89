"""The Discord platform end to end: the real discord.py client, logged in to a local fake
Discord (REST and gateway), driving the real bot on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from bot.app import App, build_app
from bot.config_file import ConfigError
from bot.platforms.discord import (
    DiscordPlatform,
    command_text,
    discord_settings,
)
from bot.settings import Settings
from commands.handlers import REGISTRY
from storage import models
from tests.conftest import all_rows, blog_post, free_port, make_config, seed_failed_runs
from tests.fakes.discord_api import (
    ALICE_ID,
    APPROVE_EMOJI_ID,
    BOB_ID,
    BOT_TOKEN,
    CAROL_ID,
    CONTENT_CHANNEL_ID,
    EDITORS_ROLE_ID,
    GUILD_ID,
    OPS_CHANNEL_ID,
    FakeDiscord,
    Interaction,
    Message,
    running_fake_discord,
)

ZWSP = "\u200b"
LIVE = re.compile(r"<@!?\d+>|<@&\d+>|<#\d+>|@everyone|@here")


def seen(message: Message) -> str:
    """What a person reads of a message: its content and its embeds' text."""
    parts = [message.content, *(e.get("description", "") for e in message.embeds)]
    return "\n".join(p for p in parts if p)


def discord_env(db_url: str, tmp_path: Path, **extra: Any) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        crewchief_database_url=db_url,
        crewchief_config=tmp_path / "absent.yml",
        crewchief_llm="offline",
        discord_token=BOT_TOKEN,
        discord_guild_id=GUILD_ID,
        **extra,
    )


@dataclass
class DiscordBot:
    app: App
    platform: DiscordPlatform
    fake: FakeDiscord

    async def command(self, sub: str, user: str = ALICE_ID, **options: str) -> Interaction:
        interaction = await self.fake.send_interaction(sub, options, user_id=user)
        await self.fake.wait_until(lambda: interaction.followups, what=f"an answer to /crew {sub}")
        return interaction

    async def wait(self) -> None:
        await self.app.wait_idle(timeout=30)

    def card(self) -> Message:
        return self.fake.bot_messages(CONTENT_CHANNEL_ID)[0]

    def thread(self) -> list[Message]:
        card = self.card()
        assert card.thread_id is not None, "the run card has no thread"
        return self.fake.bot_messages(card.thread_id)

    def platform_id(self, kind: str, index: int = -1) -> str:
        """Discord's id of the bot's `index`-th message of `kind`, in the order it was made."""
        with self.app.db.read() as s:
            rows = s.exec(
                select(models.Message)
                .where(models.Message.kind == kind, models.Message.platform == "discord")
                .order_by(models.Message.id)  # type: ignore[arg-type]
            ).all()
            value = rows[index].platform_id
            assert value is not None
            return value

    async def react(self, user: str, kind: str, emoji: str = "✅", **kwargs: Any) -> Any:
        card = self.card()
        assert card.thread_id is not None
        before = self.events_seen()
        event = await self.fake.add_reaction(
            user, card.thread_id, self.platform_id(kind), emoji, **kwargs
        )
        await self.fake.wait_until(lambda: self.events_seen() > before, what="the reaction")
        await self.wait()
        return event

    def events_seen(self) -> int:
        """Inbound events the bot has recorded (each exactly once)."""
        return len(self.rows(models.InboundEvent))

    def run(self, run_id: int = 1) -> models.Run:
        with self.app.db.read() as s:
            run = s.get(models.Run, run_id)
            assert run is not None
            return run

    def rows(self, model: Any) -> list[Any]:
        return all_rows(self.app.db, model)


def build(
    settings: Settings, config: dict[str, Any] | None = None, **options: Any
) -> tuple[App, DiscordPlatform]:
    app = build_app(
        settings,
        config=make_config(config),
        default_approvers=[f"discord:{BOB_ID}", f"discord:{CAROL_ID}"],
        **options,
    )
    platform = DiscordPlatform(app, discord_settings(settings), guild_ready_timeout=0.05)
    app.add_platform(platform)
    return app, platform


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with running_fake_discord() as server:
        yield server


@pytest.fixture
async def bot(
    request: pytest.FixtureRequest, db_url: str, tmp_path: Path, fake: FakeDiscord
) -> AsyncIterator[DiscordBot]:
    """`@pytest.mark.crew_config({...})` extends its crewchief.yml."""
    marker = request.node.get_closest_marker("crew_config")
    app, platform = build(discord_env(db_url, tmp_path), marker.args[0] if marker else None)
    async with app.running():
        await platform.start(ready_timeout=5)
        yield DiscordBot(app, platform, fake)
    await app.aclose()


async def test_walkthrough_in_discord(bot: DiscordBot) -> None:
    fake = bot.fake
    started = await bot.command("run", workflow="blog-post", text="Why heat pumps beat gas boilers")
    # deferred at once, privately; the answer fills in the "thinking" message
    assert started.deferred and started.ephemeral
    assert "Run 1" in seen(started.followups[0]) or "run 1" in seen(started.followups[0]).lower()
    await bot.wait()

    card = bot.card()
    assert "Run 1" in seen(card) and "blog-post" in seen(card)
    assert card.thread_id is not None and fake.threads[card.thread_id].name.startswith("Run 1")
    notes, draft = bot.thread()
    assert "researcher" in seen(notes)
    assert "v1" in seen(draft) and "✅" in seen(draft) and "approve" in seen(draft)
    assert card.embeds[0]["color"] == 0xECB22E  # awaiting approval

    # send it back with notes by command (no message-content intent needed)
    revised = await bot.command("revise", user=BOB_ID, run="1", notes="shorter, add a cost table")
    assert revised.ephemeral
    await bot.wait()
    drafts = [m for m in bot.thread() if "draft v" in seen(m)]
    assert any("v2" in seen(m) for m in drafts)

    await bot.react(CAROL_ID, "draft")
    run = bot.run()
    assert run.status == models.RunStatus.SUCCEEDED and run.decided_by == f"discord:{CAROL_ID}"
    card = bot.card()
    assert card.embeds[0]["color"] == 0x2EB886  # green
    assert "succeeded" in seen(card)
    published = [m for m in bot.thread() if "publish" in seen(m).lower()]
    assert len(published) >= 1
    # the first draft is locked, the second names who decided
    assert "closed" in seen(fake.message(card.thread_id or "", bot.platform_id("draft")))
    # every message the bot sent pinged nobody
    for channel in (CONTENT_CHANNEL_ID, card.thread_id or ""):
        assert all(m.pings.nobody for m in fake.bot_messages(channel))


async def test_slash_command_tree_is_generated_from_the_command_specs(bot: DiscordBot) -> None:
    [crew] = bot.fake.guild_commands[GUILD_ID]
    assert crew["name"] == "crew"
    subcommands = {o["name"]: o for o in crew["options"]}
    assert list(subcommands) == REGISTRY.names()
    for spec in REGISTRY.specs:
        options = subcommands[spec.name].get("options", [])
        assert [(o["name"], o.get("required", False)) for o in options] == [
            (a.name, a.required) for a in spec.args
        ]


def test_command_text_round_trips_through_the_shared_parser() -> None:
    spec, _ = REGISTRY.parse("run x y")
    for text in ['"quoted"', "it's", "two  spaces ", "'single'", 'say "hi"']:
        parsed_spec, args = REGISTRY.parse(
            command_text(spec, {"workflow": "blog-post", "text": text})
        )
        assert parsed_spec is spec and args == {"workflow": "blog-post", "text": text}
    approve, _ = REGISTRY.parse("approve 1")
    _, args = REGISTRY.parse(command_text(approve, {"run": "#12", "reason": None}))
    assert args == {"run": "#12"}


async def test_autocomplete_offers_workflows_and_open_runs(bot: DiscordBot) -> None:
    fake = bot.fake
    typing = await fake.send_autocomplete("run", {"workflow": "bl", "text": ""}, focused="workflow")
    await fake.wait_for_callback(typing)
    assert typing.choices == [{"name": "blog-post", "value": "blog-post"}]

    await bot.command("run", workflow="blog-post", text="heat pumps")
    await bot.command("run", workflow="research-brief", text="solar")
    await bot.wait()
    typing = await fake.send_autocomplete("status", {"run": ""}, focused="run")
    await fake.wait_for_callback(typing)
    # run 2 (a research brief) has finished; run 1 waits for approval
    assert [c["value"] for c in typing.choices or []] == ["1"]
    assert "awaiting approval" in (typing.choices or [{}])[0]["name"]


@pytest.mark.crew_config(blog_post([f"discord:role:{EDITORS_ROLE_ID}"]))
async def test_a_role_approves_and_an_outsider_is_told_by_dm(bot: DiscordBot) -> None:
    await bot.command("run", workflow="blog-post", text="heat pumps")
    await bot.wait()
    # carol holds no editors role: nothing changes, she is told why in a DM, it is audited
    await bot.react(CAROL_ID, "draft")
    assert bot.run().status == models.RunStatus.AWAITING_APPROVAL
    [dm] = bot.fake.dm_messages(CAROL_ID)
    assert "only the approvers" in seen(dm)
    refused = [a for a in bot.rows(models.AuditEntry) if a.action == "vote.refused"]
    assert [a.actor for a in refused] == [f"discord:{CAROL_ID}"]
    # alice is an editor but asked for the run: self-approval is refused
    await bot.react(ALICE_ID, "draft")
    assert bot.run().status == models.RunStatus.AWAITING_APPROVAL
    assert "self-approval" in seen(bot.fake.dm_messages(ALICE_ID)[-1])
    # bob holds the role (carried by the reaction event): his ✅ decides
    await bot.react(BOB_ID, "draft")
    assert bot.run().status == models.RunStatus.SUCCEEDED
    assert bot.run().decided_by == f"discord:{BOB_ID}"


@pytest.mark.crew_config({"reactions": {"approve": [f"<:approve:{APPROVE_EMOJI_ID}>", "✅"]}})
async def test_a_custom_emoji_approves_and_a_duplicate_delivery_counts_once(
    bot: DiscordBot,
) -> None:
    await bot.command("run", workflow="blog-post", text="heat pumps")
    await bot.wait()
    event = await bot.react(CAROL_ID, "draft", "approve")  # the server's :approve: emoji
    assert bot.run().status == models.RunStatus.SUCCEEDED
    await bot.fake.redispatch(event)  # Discord may deliver it again
    await bot.wait()
    assert len(bot.rows(models.ApprovalVote)) == 1
    assert len([m for m in bot.rows(models.Message) if m.kind == "published"]) == 1
    assert bot.fake.dm_messages(CAROL_ID) == []


async def test_mentions_in_topics_and_drafts_ping_nobody(bot: DiscordBot) -> None:
    evil = f"@everyone @here <@&{EDITORS_ROLE_ID}> <@{BOB_ID}> [login](https://evil.example)"
    await bot.command("run", workflow="blog-post", text=evil)
    await bot.wait()
    card = bot.card()
    messages = [card, *bot.thread()]
    assert all(m.pings.nobody for m in messages)
    assert all(m.allowed_mentions == {"parse": []} for m in messages)
    for message in messages:
        text = seen(message).replace(f"requested by <@{ALICE_ID}>", "")  # a name chip, no ping
        assert not LIVE.search(text) and "](" not in text
    assert evil in seen(card).replace(ZWSP, "")  # what was typed is what people read


async def test_a_rate_limited_post_is_retried_by_discord_py_and_posted_once(
    bot: DiscordBot,
) -> None:
    bot.fake.rate_limit("POST /channels/{channel_id}/messages", retry_after=0.3, times=2)
    await bot.command("run", workflow="blog-post", text="heat pumps")
    await bot.wait()
    assert len(bot.fake.bot_messages(CONTENT_CHANNEL_ID)) == 1
    assert len(bot.thread()) == 2
    assert [r.status for r in bot.fake.requests_to("POST /channels/{channel_id}/messages")][:2] == [
        429,
        429,
    ]


async def test_a_channel_the_bot_cannot_use_stops_the_run_and_is_counted(
    bot: DiscordBot,
) -> None:
    bot.fake.deny_access(CONTENT_CHANNEL_ID)
    await bot.command("run", workflow="blog-post", text="heat pumps")
    await bot.wait()
    assert bot.run().status == models.RunStatus.FAILED
    card = next(o for o in bot.rows(models.Outbox) if o.key == "post:run:1:card")
    assert card.status == models.OutboxStatus.FAILED and "50001" in (card.error or "")


async def test_a_reaction_after_a_restart_still_counts(
    db_url: str, tmp_path: Path, fake: FakeDiscord
) -> None:
    settings = discord_env(db_url, tmp_path)
    app, platform = build(settings)
    async with app.running():
        await platform.start(ready_timeout=5)
        first = DiscordBot(app, platform, fake)
        await first.command("run", workflow="blog-post", text="heat pumps")
        await first.wait()
        draft_id = first.platform_id("draft")
    await app.aclose()

    app, platform = build(settings)
    async with app.running():
        await platform.start(ready_timeout=5)
        again = DiscordBot(app, platform, fake)
        await fake.add_reaction(BOB_ID, again.card().thread_id or "", draft_id, "✅")
        await fake.wait_until(lambda: again.events_seen() == 2, what="the reaction")
        await again.wait()
        assert again.run().status == models.RunStatus.SUCCEEDED
    await app.aclose()


def test_missing_and_malformed_tokens_are_named(tmp_path: Path) -> None:
    for token, problem in ((None, "DISCORD_TOKEN is not set"), ("xoxb-123", "does not look")):
        settings = Settings(_env_file=None, discord_token=token)  # type: ignore[call-arg]
        with pytest.raises(ConfigError, match=problem) as caught:
            discord_settings(settings)
        assert "xoxb-123" not in str(caught.value)
    bad_guild = Settings(_env_file=None, discord_token=BOT_TOKEN, discord_guild_id="general")  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match="DISCORD_GUILD_ID"):
        discord_settings(bad_guild)


async def test_one_process_serves_slack_and_discord(
    db_url: str, tmp_path: Path, fake: FakeDiscord
) -> None:
    """A run started on each platform is approved on its own platform, and `/crew status`
    typed in Discord lists both."""
    from bot.http import web_app
    from bot.platforms.slack import SCOPES, SlackPlatform, slack_settings
    from tests.fakes.local_server import serve_locally
    from tests.fakes.slack_api import BOT_TOKEN as SLACK_TOKEN
    from tests.fakes.slack_api import fake_slack
    from tests.fakes.slack_signing import (
        SIGNING_SECRET,
        reaction_added,
        signed_form,
        signed_json,
        slash_command,
    )

    CHANNEL = "C0CONTENT1"
    async with fake_slack(channels=[CHANNEL], scopes=SCOPES) as slack_api:
        settings = discord_env(
            db_url,
            tmp_path,
            slack_bot_token=SLACK_TOKEN,
            slack_signing_secret=SIGNING_SECRET,
            slack_api_url=slack_api.api_url,
        )
        app = build_app(
            settings,
            config=make_config(),
            default_approvers=[f"discord:{BOB_ID}", "slack:U0EDITH001"],
        )
        slack = SlackPlatform(app, slack_settings(settings))
        app.add_platform(slack)
        platform = DiscordPlatform(app, discord_settings(settings), guild_ready_timeout=0.05)
        app.add_platform(platform)
        async with serve_locally(web_app(app, slack)) as base, app.running():
            await platform.start(ready_timeout=5)
            bot = DiscordBot(app, platform, fake)
            import aiohttp

            async with aiohttp.ClientSession() as http:
                body, headers = signed_form(
                    slash_command("run blog-post from slack", channel_id=CHANNEL)
                )
                async with http.post(f"{base}/slack/events", data=body, headers=headers) as r:
                    assert r.status == 200
                await bot.command("run", workflow="blog-post", text="from discord")
                await bot.wait()
                with app.db.read() as s:
                    runs = {r.platform: r for r in s.exec(select(models.Run)).all()}
                assert set(runs) == {"slack", "discord"}

                status = await bot.command("status")
                listing = seen(status.followups[0])
                assert "from slack" in listing and "from discord" in listing

                # each run is approved where it lives
                slack_draft = next(
                    m
                    for m in bot.rows(models.Message)
                    if m.kind == "draft" and m.platform == "slack"
                )
                payload = reaction_added(
                    user="U0EDITH001",
                    reaction="white_check_mark",
                    channel=CHANNEL,
                    ts=slack_draft.platform_id or "",
                )
                body, headers = signed_json(payload)
                async with http.post(f"{base}/slack/events", data=body, headers=headers) as r:
                    assert r.status == 200
            await bot.react(BOB_ID, "draft")
            await bot.wait()
            with app.db.read() as s:
                statuses = {r.platform: r.status for r in s.exec(select(models.Run)).all()}
            assert statuses == {"slack": "succeeded", "discord": "succeeded"}
            assert any(
                "published" in m.text.lower()
                for m in slack_api.thread(CHANNEL, slack_api.top_level(CHANNEL)[0].ts)
            )
            async with aiohttp.ClientSession() as http, http.get(f"{base}/healthz") as r:
                health = await r.json()
            assert health["platforms"] == {"discord": "connected", "slack": "connected"}
        await app.aclose()


@pytest.mark.slow
async def test_crewchief_start_serves_discord_until_sigterm(
    db_url: str, tmp_path: Path, fake: FakeDiscord
) -> None:
    import asyncio
    import os
    import signal
    import sys

    import aiohttp

    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "CREWCHIEF_"))},
        "CREWCHIEF_DATABASE_URL": db_url,
        "CREWCHIEF_LLM": "offline",
        "DISCORD_TOKEN": BOT_TOKEN,
        "DISCORD_API_URL": fake.api_base,
        "DISCORD_GUILD_ID": GUILD_ID,
        "CREWCHIEF_APPROVERS": f"discord:{BOB_ID}",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        "start",
        "--platform",
        "discord",
        "--port",
        str(port),
        cwd=tmp_path,
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with aiohttp.ClientSession() as http:
            health: dict[str, Any] = {}
            for _ in range(300):
                try:
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                        health = await resp.json()
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
            assert health.get("platforms") == {"discord": "connected"}
        started = await fake.send_interaction("run", {"workflow": "blog-post", "text": "x"})
        await fake.wait_until(lambda: started.followups, what="the answer")
        assert started.deferred and started.ephemeral
        await fake.wait_for_message(CONTENT_CHANNEL_ID, timeout=15)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    assert BOT_TOKEN not in err.decode()


async def test_cancel_is_confirmed_in_the_channel_and_a_refusal_privately(
    bot: DiscordBot,
) -> None:
    await bot.command("run", workflow="blog-post", text="heat pumps")
    await bot.wait()
    outsider = "1100000000000001009"
    refused = await bot.command("cancel", user=outsider, run="1")
    [answer] = refused.followups
    assert answer.ephemeral and "only the requester" in seen(answer)
    assert bot.run().status == models.RunStatus.AWAITING_APPROVAL

    cancelled = await bot.command("cancel", run="1")
    [confirmation] = cancelled.followups
    assert not confirmation.ephemeral and "cancelled" in seen(confirmation)
    assert cancelled.original is not None and cancelled.original.deleted
    await bot.wait()
    assert bot.run().status == models.RunStatus.CANCELLED


async def test_thread_replies_are_feedback_with_the_message_content_intent(
    db_url: str, tmp_path: Path, fake: FakeDiscord
) -> None:
    app, platform = build(discord_env(db_url, tmp_path, discord_message_content=True))
    async with app.running():
        await platform.start(ready_timeout=5)
        bot = DiscordBot(app, platform, fake)
        await bot.command("run", workflow="blog-post", text="heat pumps")
        await bot.wait()
        thread = bot.card().thread_id or ""
        await fake.post_user_message(BOB_ID, thread, "shorter, add a cost table")
        await fake.wait_until(lambda: bot.rows(models.ThreadReply), what="the reply stored")
        await bot.react(BOB_ID, "draft", "🔁")
        assert [r.text for r in bot.rows(models.ThreadReply)] == ["shorter, add a cost table"]
        v2 = fake.message(thread, bot.platform_id("draft"))
        assert "v2" in seen(v2) and "shorter, add a cost table" in seen(v2)
    await app.aclose()


@pytest.mark.crew_config(
    blog_post(
        [f"discord:{BOB_ID}", f"discord:role:{EDITORS_ROLE_ID}"],
        timeout="1h",
        on_timeout="escalate",
    )
)
async def test_a_reminder_pings_exactly_the_approvers_it_names(
    db_url: str, tmp_path: Path, fake: FakeDiscord, request: pytest.FixtureRequest
) -> None:
    from tests.conftest import FakeClock

    clock = FakeClock()
    config = request.node.get_closest_marker("crew_config").args[0]
    app, platform = build(discord_env(db_url, tmp_path), config, clock=clock)
    async with app.running():
        await platform.start(ready_timeout=5)
        bot = DiscordBot(app, platform, fake)
        evil = "@everyone <@1100000000000001003>"
        await bot.command("run", workflow="blog-post", text=evil)
        await bot.wait()
        clock.advance(hours=2)
        assert await app.db.call(app.crew.approvals.check_deadlines) == 1
        await bot.wait()
        reminder = bot.thread()[-1]
        assert reminder.pings.users == [BOB_ID] and reminder.pings.roles == [EDITORS_ROLE_ID]
        assert not reminder.pings.everyone
        others = [m for m in [bot.card(), *bot.thread()] if m is not reminder]
        assert all(m.pings.nobody for m in others)
    await app.aclose()


async def test_long_drafts_are_split_into_embeds_and_very_long_ones_attached(
    bot: DiscordBot,
) -> None:
    from agents.config import Reactions
    from bot.platforms.base import Delivery

    def draft(content: str) -> dict[str, Any]:
        return {
            "run_id": 1,
            "step": "draft",
            "agent": "writer",
            "version": 1,
            "content": content,
            "feedback": None,
            "offline": False,
            "approvers": [f"discord:{BOB_ID}"],
            "quorum": 1,
            "reactions": Reactions().shown(),
            "decision": None,
            "decided_by": None,
        }

    paragraph = "Heat pumps move heat instead of making it. " * 20
    medium = "\n\n".join([paragraph] * 6)  # about 5,200 characters: two embeds
    posted = await bot.platform.deliver(
        Delivery(kind="post", channel=CONTENT_CHANNEL_ID, template="draft", context=draft(medium))
    )
    message = bot.fake.message(CONTENT_CHANNEL_ID, posted or "")
    assert len(message.embeds) == 2 and not message.attachments
    assert all(len(e["description"]) <= 4096 for e in message.embeds)
    assert sum(len(e["description"]) for e in message.embeds) <= 6000

    huge = "\n\n".join([paragraph] * 80)  # about 69,000 characters
    posted = await bot.platform.deliver(
        Delivery(
            kind="post", channel=CONTENT_CHANNEL_ID, template="draft", context=draft(huge), ref=7
        )
    )
    message = bot.fake.message(CONTENT_CHANNEL_ID, posted or "")
    shown = seen(message)
    assert "the full text is attached" in shown and "✅ approve" in shown
    assert message.files["draft-7.md"].decode() == huge


async def test_a_server_error_is_retried_by_the_outbox_and_posts_once(bot: DiscordBot) -> None:
    bot.fake.fail("POST /channels/{channel_id}/messages", status=503, times=1)
    await bot.command("run", workflow="blog-post", text="heat pumps")
    await bot.wait()
    assert len(bot.fake.bot_messages(CONTENT_CHANNEL_ID)) == 1
    assert bot.run().status == models.RunStatus.AWAITING_APPROVAL
    done = {models.OutboxStatus.SENT, models.OutboxStatus.SUPERSEDED}
    assert {o.status for o in bot.rows(models.Outbox)} <= done  # nothing failed or left over


async def test_the_bots_own_reactions_are_ignored(bot: DiscordBot) -> None:
    from tests.fakes.discord_api import BOT_USER_ID

    await bot.command("run", workflow="blog-post", text="heat pumps")
    await bot.wait()
    before = bot.events_seen()
    thread = bot.card().thread_id or ""
    await bot.fake.add_reaction(BOT_USER_ID, thread, bot.platform_id("draft"), "✅")
    await bot.react(ALICE_ID, "draft", "🎉")  # handled after the bot's own, on one connection
    assert bot.events_seen() == before + 1
    assert bot.run().status == models.RunStatus.AWAITING_APPROVAL
    assert [v.approver for v in bot.rows(models.ApprovalVote)] == []


async def failure_rate_alert(bot: DiscordBot, now: datetime) -> Any:
    """Three failed runs, an evaluation: the failure-rate alert's card in the ops channel."""
    from agents.alerts import run_evaluation

    seed_failed_runs(
        bot.app.db,
        platform="discord",
        channel=CONTENT_CHANNEL_ID,
        requester=f"discord:{ALICE_ID}",
        at=now,
    )
    await bot.app.db.call(run_evaluation, bot.app.db, bot.app.crew.alerts, now, "p1")
    await bot.wait()
    [card] = bot.fake.bot_messages(OPS_CHANNEL_ID)
    return card


@pytest.mark.crew_config(
    {
        "ops": {"channels": [f"discord:{OPS_CHANNEL_ID}"]},
        "alerts": {"rules": {"failure-rate": {"for": 0}, "missed-job": {"enabled": False}}},
    }
)
async def test_an_alert_in_the_discord_ops_channel_is_acknowledged_and_resolves(
    bot: DiscordBot,
) -> None:
    from datetime import timedelta

    from agents.alerts import run_evaluation

    app, now = bot.app, models.utcnow()
    card = await failure_rate_alert(bot, now)
    assert "alert 1 · failure-rate · workflow=blog-post · firing" in seen(card)
    assert card.embeds[0]["color"] == 0xE01E5A  # red

    before = bot.events_seen()
    await bot.fake.add_reaction(CAROL_ID, OPS_CHANNEL_ID, card.id, "👀")
    await bot.fake.wait_until(lambda: bot.events_seen() > before, what="the 👀")
    await bot.wait()
    assert f"acknowledged by discord:{CAROL_ID}" in seen(bot.fake.message(OPS_CHANNEL_ID, card.id))
    await app.db.call(run_evaluation, app.db, app.crew.alerts, now + timedelta(hours=2), "p2")
    await bot.wait()
    card = bot.fake.message(OPS_CHANNEL_ID, card.id)
    assert "· resolved" in seen(card) and card.embeds[0]["color"] == 0x2EB886  # green
    assert card.thread_id is not None
    replies = [seen(m) for m in bot.fake.bot_messages(card.thread_id)]
    assert len(replies) == 2
    assert f"acknowledged by discord:{CAROL_ID}" in replies[0]
    assert "resolved after 2h 00m" in replies[1]
    assert len(bot.fake.bot_messages(OPS_CHANNEL_ID)) == 1, "one card per alert, edited in place"


@pytest.mark.crew_config(
    {
        "ops": {"channels": [f"discord:{OPS_CHANNEL_ID}"]},
        "roles": {"ops": [f"discord:role:{EDITORS_ROLE_ID}"]},
        "alerts": {"rules": {"failure-rate": {"for": 0}, "missed-job": {"enabled": False}}},
    }
)
async def test_a_holder_of_the_ops_role_silences_an_alert_with_the_command(
    bot: DiscordBot,
) -> None:
    card = await failure_rate_alert(bot, models.utcnow())

    # bob without the editors role (which crewchief.yml makes the ops role) may not
    options = {"alert": "1", "duration": "2h", "reason": "deploying a fix"}
    refused = await bot.fake.send_interaction(
        "silence", options, user_id=BOB_ID, channel_id=OPS_CHANNEL_ID, member_roles=[]
    )
    await bot.fake.wait_until(lambda: refused.followups, what="an answer to /crew silence")
    [answer] = refused.followups
    assert answer.ephemeral and "you may not run silence" in seen(answer)

    # with it (the interaction carries his roles), he may
    silenced = await bot.fake.send_interaction(
        "silence", options, user_id=BOB_ID, channel_id=OPS_CHANNEL_ID
    )
    await bot.fake.wait_until(lambda: silenced.followups, what="an answer to /crew silence")
    assert "alert 1 silenced until" in seen(silenced.followups[0])
    await bot.wait()
    card = bot.fake.message(OPS_CHANNEL_ID, card.id)
    assert f"silenced by discord:{BOB_ID} until" in seen(card)
    assert "deploying a fix" in seen(card)
    [alert] = bot.rows(models.Alert)
    assert (alert.silenced_by, alert.silence_reason) == (f"discord:{BOB_ID}", "deploying a fix")


async def test_the_acknowledgers_reply_in_an_alert_thread_is_kept_as_its_note(
    db_url: str, tmp_path: Path, fake: FakeDiscord
) -> None:
    from agents.alerts import run_evaluation

    config = {
        "ops": {"channels": [f"discord:{OPS_CHANNEL_ID}"]},
        "alerts": {"rules": {"failure-rate": {"for": 0}, "missed-job": {"enabled": False}}},
    }
    app, platform = build(discord_env(db_url, tmp_path, discord_message_content=True), config)
    async with app.running():
        await platform.start(ready_timeout=5)
        bot = DiscordBot(app, platform, fake)
        now = models.utcnow()
        for workflow in ("blog-post", "research-brief"):
            seed_failed_runs(
                app.db,
                platform="discord",
                channel=CONTENT_CHANNEL_ID,
                requester=f"discord:{ALICE_ID}",
                at=now,
                workflow=workflow,
            )
        await app.db.call(run_evaluation, app.db, app.crew.alerts, now, "p1")
        await bot.wait()
        [card] = fake.bot_messages(OPS_CHANNEL_ID)  # one card for both alerts
        assert "alerts 1, 2 · fired together · firing" in seen(card)

        before = bot.events_seen()
        await fake.add_reaction(CAROL_ID, OPS_CHANNEL_ID, card.id, "👀")
        await fake.wait_until(lambda: bot.events_seen() > before, what="the 👀")
        await bot.wait()
        card = fake.message(OPS_CHANNEL_ID, card.id)
        assert card.thread_id is not None  # opened by the 👀's reply
        await fake.post_user_message(BOB_ID, card.thread_id, "not me")
        await fake.post_user_message(CAROL_ID, card.thread_id, "restarting @everyone <@&42>")
        await fake.wait_until(
            lambda: all(a.note for a in bot.rows(models.Alert)), what="the note stored"
        )
        await bot.wait()
    await app.aclose()
    shown = seen(fake.message(OPS_CHANNEL_ID, card.id))
    assert shown.count(f"note by discord:{CAROL_ID}: restarting") == 2
    assert LIVE.findall(shown) == [], "the note pings nobody"
    assert [a.note for a in bot.rows(models.Alert)] == ["restarting @everyone <@&42>"] * 2
