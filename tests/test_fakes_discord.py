"""The fake Discord answers the real discord.py client the way Discord does.

The Discord adapter's tests lean on this fake; if it drifted from Discord they would pass
against a Discord that does not exist. So these tests drive it only through discord.py
(`discord.Client`, `app_commands.CommandTree`, its HTTP client) and read what the fake saw.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import discord
import pytest
from discord import app_commands
from discord.http import Route

from tests.fakes.discord_api import (
    ADMINS_ROLE_ID,
    ALICE_ID,
    APPLICATION_ID,
    APPROVE_EMOJI_ID,
    BOB_ID,
    BOT_USER_ID,
    CONTENT_CHANNEL_ID,
    EDITORS_ROLE_ID,
    GUILD_ID,
    OPS_CHANNEL_ID,
    FakeDiscord,
    running_fake_discord,
)

MESSAGES = "POST /channels/{channel_id}/messages"
CONTENT = int(CONTENT_CHANNEL_ID)


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with running_fake_discord() as server:
        yield server


def make_intents(*, reactions: bool = True, content: bool = False) -> discord.Intents:
    intents = discord.Intents.none()
    intents.guilds = True
    intents.guild_messages = True
    intents.guild_reactions = reactions
    intents.message_content = content
    return intents


def make_client(**intents: bool) -> discord.Client:
    # guild_ready_timeout: discord.py waits this long after the last GUILD_CREATE before
    # on_ready (2 s by default); the fake sends them all at once.
    return discord.Client(intents=make_intents(**intents), guild_ready_timeout=0.05)


@asynccontextmanager
async def connected(client: discord.Client, fake: FakeDiscord) -> AsyncIterator[discord.Client]:
    """Log in, connect the gateway, wait for on_ready; close on the way out."""
    await client.login(fake.token)
    task = asyncio.create_task(client.connect())
    try:
        await asyncio.wait_for(client.wait_until_ready(), 5)
        yield client
    finally:
        await client.close()
        with suppress(Exception):
            await asyncio.wait_for(task, 5)


def recorder(client: discord.Client, event: str) -> list[Any]:
    """Collect what a client event handler receives."""
    seen: list[Any] = []

    async def handler(*args: Any) -> None:
        seen.append(args[0] if len(args) == 1 else args)

    setattr(client, f"on_{event}", handler)  # discord.Client dispatches to on_<event>
    return seen


def content_channel(client: discord.Client) -> discord.TextChannel:
    channel = client.get_channel(CONTENT)
    assert isinstance(channel, discord.TextChannel)
    return channel


# ---------------------------------------------------------------- login and gateway


async def test_login_gets_ready_and_the_guild(fake: FakeDiscord) -> None:
    client = make_client()
    async with connected(client, fake):
        assert client.user is not None and str(client.user.id) == BOT_USER_ID
        assert client.user.bot
        assert str(client.application_id) == APPLICATION_ID
        [guild] = client.guilds
        assert str(guild.id) == GUILD_ID
        assert {c.name for c in guild.text_channels} == {"content", "ops"}
        assert guild.get_role(int(EDITORS_ROLE_ID)) is not None
        await fake.wait_until(lambda: client.latency != float("inf"), what="heartbeat ACK")

    [identify] = fake.identifies
    assert identify["intents"] == make_intents().value
    assert "token" not in identify  # recorded without the secret
    connection = fake.connections[0]
    # zstd-stream when the zstandard module is there to read it, zlib-stream otherwise
    assert {**connection.query, "compress": "?"} == {"v": "10", "encoding": "json", "compress": "?"}
    assert connection.query["compress"] in {"zlib-stream", "zstd-stream"}
    assert connection.compress  # frames were compressed that way, as Discord sends them
    names = [frame["t"] for frame in connection.sent if frame["op"] == 0]
    assert names[:2] == ["READY", "GUILD_CREATE"]
    assert [frame["s"] for frame in connection.sent if frame["op"] == 0] == [1, 2]


async def test_a_wrong_token_is_refused_on_rest_and_gateway(fake: FakeDiscord) -> None:
    client = make_client()
    with pytest.raises(discord.LoginFailure):
        await client.login("not-the-token")
    [refused] = fake.requests_to("GET /users/@me")
    assert (refused.status, refused.response) == (401, {"message": "401: Unauthorized", "code": 0})

    await client.login(fake.token)
    client.http.token = "revoked"  # the token is rotated between login and IDENTIFY
    with pytest.raises(discord.ConnectionClosed) as closed:
        await client.connect(reconnect=False)
    assert closed.value.code == 4004
    await client.close()


async def test_privileged_intents_not_enabled_are_refused() -> None:
    async with running_fake_discord(privileged_intents=0) as fake:
        client = make_client(content=True)
        await client.login(fake.token)
        with pytest.raises(discord.PrivilegedIntentsRequired):  # close code 4014
            await client.connect()
        await client.close()


async def test_reconnect_resumes_and_replays_missed_events(fake: FakeDiscord) -> None:
    client = make_client()
    reactions = recorder(client, "raw_reaction_add")
    resumed = recorder(client, "resumed")
    async with connected(client, fake):
        message = await content_channel(client).send("draft v1")
        session = await fake.wait_for_session()

        await fake.send_reconnect()  # op 7, as on a Discord deploy
        await fake.wait_until(lambda: resumed, what="RESUMED")
        assert fake.connections[-1].path == "/resume"  # READY's resume_gateway_url

        fake.pause_gateway()
        await fake.drop_connections()
        missed = await fake.add_reaction(ALICE_ID, CONTENT_CHANNEL_ID, str(message.id), "✅")
        assert missed.sent_to == [session.id]  # queued: the session may still resume
        fake.resume_gateway()
        await fake.wait_until(lambda: reactions and len(resumed) == 2, what="replay + RESUMED")

    replayed = [frame["t"] for frame in fake.connections[-1].sent if frame["op"] == 0]
    assert replayed == ["MESSAGE_REACTION_ADD", "RESUMED"]
    assert session.resumes == 2
    assert len(fake.identifies) == 1  # never had to IDENTIFY again
    assert len(reactions) == 1


# ---------------------------------------------------------------- reactions and intents


async def test_reactions_arrive_with_member_roles(fake: FakeDiscord) -> None:
    client = make_client()
    added = recorder(client, "raw_reaction_add")
    removed = recorder(client, "raw_reaction_remove")
    async with connected(client, fake):
        draft = await content_channel(client).send("draft v1")
        mid = str(draft.id)
        custom = await fake.add_reaction(ALICE_ID, CONTENT_CHANNEL_ID, mid, "approve")
        await fake.add_reaction(BOB_ID, CONTENT_CHANNEL_ID, mid, {"id": None, "name": "✅"})
        await fake.add_reaction(
            BOB_ID, CONTENT_CHANNEL_ID, mid, "🔁", member_roles=[ADMINS_ROLE_ID]
        )
        await fake.wait_until(lambda: len(added) == 3, what="three reactions")
        again = await fake.add_reaction(ALICE_ID, CONTENT_CHANNEL_ID, mid, "approve")
        await fake.redispatch(custom)  # the same payload once more, as after a resume
        await fake.remove_reaction(BOB_ID, CONTENT_CHANNEL_ID, mid, "✅")
        await fake.wait_until(lambda: len(added) == 4 and removed, what="duplicate + removal")

    first: discord.RawReactionActionEvent = added[0]
    assert (str(first.user_id), str(first.message_id), str(first.guild_id)) == (
        ALICE_ID,
        mid,
        GUILD_ID,
    )
    assert (str(first.emoji.id), first.emoji.name) == (APPROVE_EMOJI_ID, "approve")
    assert custom.data["emoji"] == {"id": APPROVE_EMOJI_ID, "name": "approve", "animated": False}
    assert first.member is not None
    assert int(EDITORS_ROLE_ID) in [r.id for r in first.member.roles]
    assert added[1].emoji.id is None and added[1].emoji.name == "✅"
    assert [r.id for r in added[2].member.roles] == [int(GUILD_ID), int(ADMINS_ROLE_ID)]
    assert again.sent_to == []  # Discord sends nothing for a reaction the user already has
    assert (added[3].message_id, added[3].user_id) == (first.message_id, first.user_id)
    assert str(removed[0].user_id) == BOB_ID and removed[0].member is None
    assert fake.message(CONTENT_CHANNEL_ID, mid).reactions == {
        f"approve:{APPROVE_EMOJI_ID}": [ALICE_ID],
        "🔁": [BOB_ID],
    }


async def test_no_reaction_events_without_the_reactions_intent(fake: FakeDiscord) -> None:
    client = make_client(reactions=False)
    reactions = recorder(client, "raw_reaction_add")
    messages = recorder(client, "message")
    async with connected(client, fake):
        draft = await content_channel(client).send("draft v1")
        event = await fake.add_reaction(ALICE_ID, CONTENT_CHANNEL_ID, str(draft.id), "✅")
        # The gateway is ordered: once a later message arrives, the reaction would have too.
        await fake.post_user_message(ALICE_ID, CONTENT_CHANNEL_ID, "marker")
        await fake.wait_until(lambda: len(messages) == 2, what="the marker message")
    assert event.sent_to == []
    assert reactions == []


async def test_message_content_needs_the_message_content_intent(fake: FakeDiscord) -> None:
    without, with_content = make_client(), make_client(content=True)
    seen_without, seen_with = recorder(without, "message"), recorder(with_content, "message")
    async with connected(without, fake), connected(with_content, fake):
        await fake.post_user_message(ALICE_ID, CONTENT_CHANNEL_ID, "shorter, add a cost table")
        await fake.post_user_message(BOB_ID, CONTENT_CHANNEL_ID, f"<@{BOT_USER_ID}> status")
        await fake.wait_until(lambda: len(seen_without) == len(seen_with) == 2)
    assert [m.content for m in seen_without] == ["", f"<@{BOT_USER_ID}> status"]
    assert [m.content for m in seen_with] == [
        "shorter, add a cost table",
        f"<@{BOT_USER_ID}> status",
    ]
    assert str(seen_without[0].author.id) == ALICE_ID
    assert int(EDITORS_ROLE_ID) in [r.id for r in seen_without[0].author.roles]


# ---------------------------------------------------------------- posting and limits


async def test_content_over_2000_chars_is_a_400(fake: FakeDiscord) -> None:
    client = make_client()
    async with connected(client, fake):
        with pytest.raises(discord.HTTPException) as refused:
            await content_channel(client).send("x" * 2001)
        await content_channel(client).send("x" * 2000)
    assert (refused.value.status, refused.value.code) == (400, 50035)
    assert "In content: Must be 2000 or fewer in length." in refused.value.text
    assert [len(m.content) for m in fake.bot_messages(CONTENT_CHANNEL_ID)] == [2000]


async def test_embed_limits_are_enforced(fake: FakeDiscord) -> None:
    client = make_client()
    async with connected(client, fake):
        channel = content_channel(client)
        with pytest.raises(discord.HTTPException) as description:
            await channel.send(embed=discord.Embed(description="x" * 4097))
        with pytest.raises(discord.HTTPException) as total:
            await channel.send(
                embeds=[discord.Embed(description="x" * 4000), discord.Embed(title="y" * 200)]
                + [discord.Embed(description="z" * 1000)] * 2
            )
        route = Route("POST", "/channels/{channel_id}/messages", channel_id=CONTENT)
        with pytest.raises(discord.HTTPException) as count:  # discord.py itself stops at 10
            await client.http.request(route, json={"embeds": [{"description": "e"}] * 11})
        with pytest.raises(discord.HTTPException) as empty:
            await client.http.request(route, json={"content": ""})
    assert "In embeds.0.description: Must be 4096 or fewer in length." in description.value.text
    assert "Embed size exceeds maximum size of 6000" in total.value.text
    assert "In embeds: Must be 10 or fewer in length." in count.value.text
    assert {description.value.code, total.value.code, count.value.code} == {50035}
    assert (empty.value.code, empty.value.text) == (50006, "Cannot send an empty message")
    assert fake.messages[CONTENT_CHANNEL_ID] == []


async def test_allowed_mentions_decide_who_is_pinged(fake: FakeDiscord) -> None:
    text = f"@everyone <@&{EDITORS_ROLE_ID}> <@{ALICE_ID}> <@{BOB_ID}>"
    client = make_client()
    async with connected(client, fake):
        channel = content_channel(client)
        silent = await channel.send(text, allowed_mentions=discord.AllowedMentions.none())
        only_alice = await channel.send(
            text,
            allowed_mentions=discord.AllowedMentions(
                everyone=False, roles=False, users=[discord.Object(int(ALICE_ID))]
            ),
        )
        loud = await channel.send(text)  # no allowed_mentions: Discord parses everything

    assert (silent.mentions, silent.role_mentions, silent.mention_everyone) == ([], [], False)
    assert fake.message(CONTENT_CHANNEL_ID, str(silent.id)).pings.nobody
    assert fake.requests_to(MESSAGES)[0].body["allowed_mentions"]["parse"] == []
    assert [u.id for u in only_alice.mentions] == [int(ALICE_ID)]
    pings = fake.message(CONTENT_CHANNEL_ID, str(only_alice.id)).pings
    assert (pings.users, pings.roles, pings.everyone) == ([ALICE_ID], [], False)
    pings = fake.message(CONTENT_CHANNEL_ID, str(loud.id)).pings
    assert (pings.users, pings.roles, pings.everyone) == (
        [ALICE_ID, BOB_ID],
        [EDITORS_ROLE_ID],
        True,
    )


async def test_a_429_is_retried_by_discord_py_and_posts_once(fake: FakeDiscord) -> None:
    client = make_client()
    async with connected(client, fake):
        fake.rate_limit(MESSAGES, retry_after=0.3)
        started = time.monotonic()
        await content_channel(client).send("digest")
        waited = time.monotonic() - started
    assert [r.status for r in fake.requests_to(MESSAGES)] == [429, 200]
    assert fake.requests_to(MESSAGES)[0].response["retry_after"] == 0.3
    assert waited >= 0.3
    assert [m.content for m in fake.bot_messages(CONTENT_CHANNEL_ID)] == ["digest"]


async def test_a_502_is_retried_and_posts_once(fake: FakeDiscord) -> None:
    client = make_client()
    async with connected(client, fake):
        fake.fail(f"POST /channels/{CONTENT_CHANNEL_ID}/messages", status=502)
        await content_channel(client).send("alert")
    assert [r.status for r in fake.requests_to(MESSAGES)] == [502, 200]
    assert len(fake.bot_messages(CONTENT_CHANNEL_ID)) == 1


async def test_unknown_channel_and_missing_access(fake: FakeDiscord) -> None:
    fake.deny_access(OPS_CHANNEL_ID)
    client = make_client()
    async with connected(client, fake):
        with pytest.raises(discord.NotFound) as unknown:
            await client.get_partial_messageable(1234).send("hello?")
        with pytest.raises(discord.Forbidden) as forbidden:
            await client.get_partial_messageable(int(OPS_CHANNEL_ID)).send("alert")
        with pytest.raises(discord.NotFound):
            await content_channel(client).fetch_message(42)
    assert (unknown.value.status, unknown.value.code) == (404, 10003)
    assert (forbidden.value.status, forbidden.value.code) == (403, 50001)


async def test_files_edits_bot_reactions_and_nonces(fake: FakeDiscord) -> None:
    client = make_client()
    edits = recorder(client, "raw_message_edit")
    async with connected(client, fake):
        channel = content_channel(client)
        chart = b"\x89PNG\r\n\x1a\nfake chart"
        card = await channel.send("digest", file=discord.File(io.BytesIO(chart), "chart.png"))
        downloaded = await card.attachments[0].read()
        await card.edit(content="digest (edited)")
        await card.add_reaction("👀")
        first = await channel.send("once", nonce=4242)
        second = await channel.send("once", nonce=4242)
        fetched = await channel.fetch_message(card.id)
        await fake.wait_until(lambda: edits, what="MESSAGE_UPDATE")

    [upload] = fake.requests_to(MESSAGES)[0].files
    assert upload[:2] == ("files[0]", "chart.png")
    stored = fake.message(CONTENT_CHANNEL_ID, str(card.id))
    assert stored.files == {"chart.png": chart} and downloaded == chart
    assert card.attachments[0].size == len(chart)
    assert stored.content == "digest (edited)"
    assert [e["content"] for e in stored.edits] == ["digest"]
    assert fetched.content == "digest (edited)" and fetched.edited_at is not None
    assert stored.reactions == {"👀": [BOT_USER_ID]}
    assert fetched.reactions[0].me
    assert first.id == second.id  # enforce_nonce: Discord returns the first message
    assert [m.content for m in fake.bot_messages(CONTENT_CHANNEL_ID)] == ["digest (edited)", "once"]


# ---------------------------------------------------------------- threads and DMs


async def test_thread_from_a_message_and_replies_in_it(fake: FakeDiscord) -> None:
    client = make_client(content=True)
    messages = recorder(client, "message")
    async with connected(client, fake):
        card = await content_channel(client).send("Run #1 started")
        thread = await card.create_thread(name="Run #1 · blog-post")
        await thread.send("research notes")
        reply = await fake.post_user_message(ALICE_ID, str(thread.id), "shorter, add a cost table")
        await fake.wait_until(lambda: any(m.id == int(reply.data["id"]) for m in messages))
        with pytest.raises(discord.HTTPException) as twice:
            await card.create_thread(name="again")

    assert thread.type is discord.ChannelType.public_thread
    assert thread.id == card.id  # Discord gives the thread its starter message's id
    assert thread.parent_id == CONTENT
    assert fake.threads[str(thread.id)].name == "Run #1 · blog-post"
    assert fake.message(CONTENT_CHANNEL_ID, str(card.id)).thread_id == str(thread.id)
    assert [m.content for m in fake.thread_messages(str(thread.id))] == [
        "research notes",
        "shorter, add a cost table",
    ]
    from_alice = next(m for m in messages if m.id == int(reply.data["id"]))
    assert from_alice.channel.id == thread.id and isinstance(from_alice.channel, discord.Thread)
    assert fake.events_named("THREAD_CREATE")[0].data["newly_created"] is True
    assert twice.value.code == 160004


async def test_dm_to_a_user_with_dms_closed_is_forbidden(fake: FakeDiscord) -> None:
    fake.close_dms(BOB_ID)
    client = make_client()
    async with connected(client, fake):
        to_alice = await client.create_dm(discord.Object(int(ALICE_ID)))
        await to_alice.send("You were asked to approve run #1")
        to_bob = await client.create_dm(discord.Object(int(BOB_ID)))
        with pytest.raises(discord.Forbidden) as closed:
            await to_bob.send("You cannot approve run #1")
    assert (closed.value.status, closed.value.code) == (403, 50007)
    assert closed.value.text == "Cannot send messages to this user"
    assert [m.content for m in fake.dm_messages(ALICE_ID)] == ["You were asked to approve run #1"]
    assert fake.dm_messages(BOB_ID) == []


# ---------------------------------------------------------------- interactions


def crew_tree(client: discord.Client, on_run: Callable[..., Any]) -> app_commands.CommandTree:
    """A `/crew` group like the adapter's: `run <workflow> <text>` with autocomplete."""
    tree = app_commands.CommandTree(client)
    crew = app_commands.Group(name="crew", description="Supervise your AI agents")

    @crew.command(name="run", description="Start a workflow")
    async def run(interaction: discord.Interaction, workflow: str, text: str) -> None:
        await on_run(interaction, workflow, text)

    @run.autocomplete("workflow")
    async def workflows(
        interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        names = ["blog-post", "research-brief"]
        return [app_commands.Choice(name=n, value=n) for n in names if n.startswith(current)]

    tree.add_command(crew, guild=discord.Object(int(GUILD_ID)))
    return tree


async def test_command_sync_defer_follow_ups_and_autocomplete(fake: FakeDiscord) -> None:
    done = asyncio.Event()

    async def on_run(interaction: discord.Interaction, workflow: str, text: str) -> None:
        await interaction.response.defer(thinking=True)
        await interaction.followup.send(f"Run #1 · {workflow}: {text}")
        await interaction.followup.send("Only you can see this", ephemeral=True)
        done.set()

    client = make_client()
    tree = crew_tree(client, on_run)
    async with connected(client, fake):
        synced = await tree.sync(guild=discord.Object(int(GUILD_ID)))
        run = await fake.send_interaction(
            "run", {"workflow": "blog-post", "text": "Why heat pumps beat gas boilers"}
        )
        await asyncio.wait_for(done.wait(), 5)
        typing = await fake.send_autocomplete(
            "run", {"workflow": "bl", "text": ""}, focused="workflow"
        )
        await fake.wait_for_callback(typing)

    [crew] = fake.guild_commands[GUILD_ID]
    assert [c.id for c in synced] == [int(crew["id"])]
    assert crew["guild_id"] == GUILD_ID and crew["application_id"] == APPLICATION_ID
    assert [o["name"] for o in crew["options"]] == ["run"]
    assert [o["name"] for o in crew["options"][0]["options"]] == ["workflow", "text"]
    assert run.payload["data"]["id"] == crew["id"]

    assert [c["type"] for c in run.callbacks] == [5]
    assert run.deferred and not run.ephemeral
    assert run.original is not None and not run.original.loading
    # The first follow-up fills in the "thinking" message; the second is a new one.
    assert run.original.content == "Run #1 · blog-post: Why heat pumps beat gas boilers"
    assert run.followups[0] is run.original
    assert fake.bot_messages(CONTENT_CHANNEL_ID) == [run.original]
    [secret] = fake.ephemerals
    assert secret is run.followups[1]
    assert (secret.content, secret.ephemeral_to) == ("Only you can see this", ALICE_ID)

    assert typing.type == 4 and [c["type"] for c in typing.callbacks] == [8]
    assert typing.choices == [{"name": "blog-post", "value": "blog-post"}]


async def test_an_interaction_not_acknowledged_in_3s_is_unknown(fake: FakeDiscord) -> None:
    go = asyncio.Event()
    outcome: list[BaseException] = []

    async def on_run(interaction: discord.Interaction, workflow: str, text: str) -> None:
        await go.wait()  # e.g. an LLM call in the handler: the deadline passes
        try:
            await interaction.response.send_message("Run #1 started")
        except discord.HTTPException as e:
            outcome.append(e)

    client = make_client()
    tree = crew_tree(client, on_run)
    async with connected(client, fake):
        await tree.sync(guild=discord.Object(int(GUILD_ID)))
        late = await fake.send_interaction("run", {"workflow": "blog-post", "text": "x"})
        fake.advance_clock(3.1)  # the fake's clock, so the test does not sleep 3 s
        go.set()
        await fake.wait_until(lambda: outcome, what="the late callback's failure")

    [error] = outcome
    assert isinstance(error, discord.NotFound)
    assert (error.status, error.code, error.text) == (404, 10062, "Unknown interaction")
    assert not late.acknowledged and late.rejected == [(404, 10062)]
    assert fake.messages[CONTENT_CHANNEL_ID] == []
