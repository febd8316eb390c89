"""The Discord platform: a discord.py client behind the platform interface.

Inbound: `/crew` is an app-command group generated from the command specs in `commands/`,
so Slack and Discord offer the same subcommands with the same arguments. Each interaction is
deferred at once (Discord allows 3 s), handed to the dispatcher, and answered by follow-up:
privately unless the answer is for the channel. Reactions arrive as raw gateway events, so a
reaction on a message sent before a restart still counts; they need no privileged intent.
Thread replies are feedback only where the message-content intent is enabled.

Outbound: the outbox sender calls `deliver`, which renders the message kind's template into
embeds (coloured by status), opens a thread under each run card, splits to Discord's limits
and attaches a file past them. Every post sets allowed_mentions to none; only a reminder
pings, and only the approvers it names.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import io
import logging
import re
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp
import discord
import discord.gateway
import discord.http
import yarl
from discord import app_commands

from bot.chart import TITLE as chart_title
from bot.chart import for_post
from bot.errors import ConfigError
from bot.platforms.base import Delivery, DeliveryError, Inbound, handled_once_placed
from bot.platforms.discord_config import DiscordSettings
from bot.platforms.discord_config import discord_settings as discord_settings
from bot.platforms.discord_text import (
    EMBED_DESCRIPTION_LIMIT,
    EMBEDS_PER_MESSAGE,
    MESSAGE_EMBEDS_LIMIT,
    STATUS_COLOURS,
    mention,
    mentioned_ids,
)
from bot.platforms.splitting import preview, split_text
from bot.render import Renderer
from commands.events import Actor, ReactionAdded, ReactionRemoved, SlashCommand, ThreadReply
from commands.handlers import REGISTRY
from commands.spec import COMMAND, CommandSpec, Reply

log = logging.getLogger(__name__)

# What the bot needs, by name; README lists the same. No privileged intent is required.
PERMISSIONS = discord.Permissions(
    view_channel=True,
    send_messages=True,
    send_messages_in_threads=True,
    create_public_threads=True,
    embed_links=True,
    attach_files=True,
    read_message_history=True,
    add_reactions=True,
)
ATTACH_OVER = MESSAGE_EMBEDS_LIMIT  # longer messages show a preview and attach the full text
PREVIEW_HEAD = 3000
PREVIEW_TAIL = 600
THREAD_NAME_LIMIT = 100
DEFAULT_COLOUR = 0x5865F2
KIND_COLOURS = {
    "draft": 0xECB22E,
    "published": 0x2EB886,
    "failure": 0xE01E5A,
    "reminder": 0xECB22E,
}
DECISION_COLOURS = {"approved": 0x2EB886, "rejected": 0xE01E5A, "cancelled": 0x9E9EA6}
# Messages that ping on purpose: sent as content (embeds never ping), allowed to ping only the
# ids in this context key: a reminder its approvers, an alert's escalation the on-call people.
PINGING = {"reminder": "approvers", "alert_update": "on_call"}
ALERT_COLOURS = {"firing": 0xE01E5A, "pending": 0xECB22E, "resolved": 0x2EB886}
UNKNOWN_CHANNEL = 10003
TOKEN_REFUSED = "DISCORD_TOKEN was refused by Discord (reset it in the Developer Portal)"


def intents(message_content: bool) -> discord.Intents:
    chosen = discord.Intents.none()
    chosen.guilds = True  # channels and threads, and the roles a reaction's member holds
    chosen.guild_messages = True  # thread replies (their text needs message_content)
    chosen.guild_reactions = True  # ✅ ❌ 🔁 🛑
    chosen.message_content = message_content
    return chosen


def invite_url(application_id: int | str) -> str:
    """The OAuth2 URL that adds the bot to a server with exactly the permissions it uses."""
    return discord.utils.oauth_url(
        application_id,
        permissions=PERMISSIONS,
        scopes=("bot", "applications.commands"),
    )


async def application_id_of(token: str) -> str:
    """The application a bot token belongs to, asked of Discord."""
    client = discord.Client(intents=discord.Intents.none())
    try:
        await client.login(token)
        info = await client.application_info()
        return str(info.id)
    except discord.LoginFailure:
        raise ConfigError(TOKEN_REFUSED) from None
    except (discord.HTTPException, aiohttp.ClientError, OSError) as exc:
        raise ConfigError(f"cannot reach Discord to look up the application: {exc}") from None
    finally:
        await client.close()


def emoji_text(emoji: discord.PartialEmoji) -> str:
    """A Unicode emoji as its character, a custom one as `<:name:id>`."""
    return str(emoji) if emoji.id else (emoji.name or "")


def command_text(spec: CommandSpec, values: dict[str, Any]) -> str:
    """What `/crew <spec> …` would have been typed as, for the parser every platform shares.
    Words with spaces are quoted; a trailing `rest` argument is wrapped in one pair of quotes,
    which the parser takes off again, so the text arrives exactly as typed."""
    parts = [spec.name]
    for arg in spec.args:
        value = values.get(arg.name)
        if value is None or not str(value).strip():
            continue
        text = str(value)
        if arg.rest:
            parts.append(f'"{text}"')
        elif re.search(r"\s", text) or text[0] in "\"'":
            quote = "'" if '"' in text else '"'
            parts.append(f"{quote}{text}{quote}")
        else:
            parts.append(text)
    return " ".join(parts)


def nonce_for(key: str) -> str:
    """Discord's nonce (at most 25 characters) for an outbox key."""
    return str(int(hashlib.sha256(key.encode()).hexdigest()[:15], 16))


def colour_for(template: str, context: dict[str, Any]) -> int:
    if template == "run_card":
        return STATUS_COLOURS.get(str(context.get("status")), DEFAULT_COLOUR)
    if template == "decision":
        return DECISION_COLOURS.get(str(context.get("decision")), DEFAULT_COLOUR)
    if template in ("alert", "alert_group"):
        return ALERT_COLOURS.get(str(context.get("state")), DEFAULT_COLOUR)
    return KIND_COLOURS.get(template, DEFAULT_COLOUR)


def embeds_for(text: str, colour: int) -> list[discord.Embed]:
    """Embeds of at most 4,096 characters each and 6,000 in all (the caller previews longer
    text)."""
    chunks = split_text(text, EMBED_DESCRIPTION_LIMIT) or ["\u200b"]
    return [discord.Embed(description=c, colour=colour) for c in chunks[:EMBEDS_PER_MESSAGE]]


def thread_name(context: dict[str, Any]) -> str:
    topic = " ".join(str(context.get("text") or "").split())
    name = f"Run {context.get('run_id', '')} · {context.get('workflow', '')}: {topic}"
    return name[:THREAD_NAME_LIMIT]


def delivery_error(exc: Exception) -> DeliveryError:
    """How the outbox treats a failure: retried later unless Discord said it never works."""
    if isinstance(exc, discord.RateLimited):
        return DeliveryError("Discord rate limit", retry_after=exc.retry_after)
    if isinstance(exc, discord.HTTPException):
        if exc.status >= 500 or exc.status == 429:
            return DeliveryError(f"Discord answered {exc.status}")
        return DeliveryError(
            f"Discord refused it: {exc.status} (code {exc.code}) {exc.text}"[:300],
            permanent=True,
        )
    return DeliveryError(f"Discord unreachable: {type(exc).__name__}")


class _Client(discord.Client):
    """discord.py's client, syncing `/crew` as it logs in."""

    def __init__(self, platform: DiscordPlatform, **options: Any) -> None:
        super().__init__(**options)
        self.platform = platform

    async def setup_hook(self) -> None:
        await self.platform.sync_commands()


class DiscordPlatform:
    name = "discord"

    def __init__(
        self, inbound: Inbound, settings: DiscordSettings, *, guild_ready_timeout: float = 2.0
    ) -> None:
        """`guild_ready_timeout`: how long discord.py waits for more servers after the last
        one arrived before it reports ready."""
        self.inbound = inbound
        self.settings = settings
        self.renderer = Renderer("discord", mention)
        self.client = _Client(
            self,
            intents=intents(settings.message_content),
            allowed_mentions=discord.AllowedMentions.none(),
            guild_ready_timeout=guild_ready_timeout,
        )
        self.tree = app_commands.CommandTree(self.client)
        self.tree.add_command(self._command_group(), guild=self._guild())
        self.client.event(self.on_message)
        self.client.event(self.on_raw_reaction_add)
        self.client.event(self.on_raw_reaction_remove)
        self._parents: dict[int, int] = {}  # thread id -> the channel it belongs to
        self._connection: asyncio.Task[None] | None = None

    # -- running ----------------------------------------------------------------------

    async def start(self, ready_timeout: float = 30.0) -> None:
        """Log in (which syncs `/crew`), open the gateway, and wait until Discord says
        ready. Raises ConfigError when Discord refuses the token."""
        if self.settings.api_url:
            discord.http.Route.BASE = self.settings.api_url  # discord.py has one base per process
        try:
            await self.client.login(self.settings.token)
            if self.settings.api_url:  # the gateway the API names, as Discord's own does
                _, gateway, _ = await self.client.http.get_bot_gateway()
                discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway)
        except discord.LoginFailure:
            raise ConfigError(TOKEN_REFUSED) from None
        self._connection = asyncio.create_task(self._connect(), name="crewchief-discord")
        ready = asyncio.create_task(self.client.wait_until_ready())
        done, _ = await asyncio.wait(
            {ready, self._connection}, timeout=ready_timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if ready not in done:
            ready.cancel()
            if self._connection in done:
                self._connection.result()  # raises the ConfigError
            log.warning("Discord: not ready after %.0fs; still trying", ready_timeout)

    async def _connect(self) -> None:
        try:
            await self.client.connect(reconnect=True)
        except discord.PrivilegedIntentsRequired:
            raise ConfigError(
                "DISCORD_MESSAGE_CONTENT is on, but the Message Content intent is not enabled "
                "for the bot in the Developer Portal"
            ) from None

    @property
    def state(self) -> str:
        """For /healthz: connected, connecting or closed."""
        if self.client.is_closed():
            return "closed"
        return (
            "connected" if self.client.is_ready() and self.client.ws is not None else "connecting"
        )

    def _guild(self) -> discord.Object | None:
        return discord.Object(self.settings.guild_id) if self.settings.guild_id else None

    async def sync_commands(self) -> None:
        """To the guild when DISCORD_GUILD_ID is set (at once), else globally (Discord may
        take up to an hour to show global changes)."""
        guild = self._guild()
        synced = await self.tree.sync(guild=guild)
        where = f"guild {guild.id}" if guild else "all servers (global)"
        log.warning("Discord: /crew synced to %s (%d command group)", where, len(synced))

    async def aclose(self) -> None:
        if not self.client.is_closed():
            await self.client.close()
        if self._connection is not None:
            self._connection.cancel()
            await asyncio.gather(self._connection, return_exceptions=True)

    # -- inbound: /crew ---------------------------------------------------------------

    def _command_group(self) -> app_commands.Group:
        group = app_commands.Group(
            name=COMMAND.lstrip("/"), description="Supervise your AI agents: runs, drafts, health"
        )
        for spec in REGISTRY.specs:
            group.add_command(self._subcommand(spec, group))
        return group

    def _subcommand(
        self, spec: CommandSpec, group: app_commands.Group
    ) -> app_commands.Command[Any, ..., None]:
        async def callback(interaction: discord.Interaction, **values: Any) -> None:
            await self.on_command(interaction, spec, values)

        parameters = [
            inspect.Parameter(
                "interaction",
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                annotation=discord.Interaction,
            )
        ]
        for arg in spec.args:
            parameters.append(
                inspect.Parameter(
                    arg.name,
                    inspect.Parameter.KEYWORD_ONLY,
                    annotation=str,
                    default=inspect.Parameter.empty if arg.required else None,
                )
            )
        callback.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        command: app_commands.Command[Any, ..., None] = app_commands.Command(
            name=spec.name, description=spec.summary[:100], callback=callback, parent=group
        )
        for arg in spec.args:
            command._params[arg.name].description = arg.name.replace("_", " ")
            if arg.name in ("workflow", "run"):
                command.autocomplete(arg.name)(self._autocomplete(arg.name))
        return command

    def _autocomplete(
        self, arg: str
    ) -> Callable[[discord.Interaction, str], Coroutine[Any, Any, list[app_commands.Choice[str]]]]:
        async def choices(
            interaction: discord.Interaction, current: str
        ) -> list[app_commands.Choice[str]]:
            found = await self.inbound.complete(actor_of(interaction.user), arg, current)
            return [app_commands.Choice(name=label[:100], value=value) for label, value in found]

        return choices

    async def on_command(
        self, interaction: discord.Interaction, spec: CommandSpec, values: dict[str, Any]
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        event = SlashCommand(
            event_id=f"cmd:{interaction.id}",
            actor=actor_of(interaction.user),
            channel=str(interaction.channel_id or ""),
            text=command_text(spec, values),
        )
        replies = await self.inbound.handle(event)
        await self._answer(interaction, replies)

    async def _answer(self, interaction: discord.Interaction, replies: list[Reply]) -> None:
        public = [r for r in replies if not r.private]
        private = [r for r in replies if r.private]
        if public or not private:
            # The deferred "thinking" message is private; an answer for the channel replaces it.
            await interaction.delete_original_response()
        for group, ephemeral in ((public, False), (private, True)):
            if not group:
                continue
            text = "\n\n".join(self.renderer.render(r.template, r.context) for r in group)
            colour = colour_for(group[0].template, group[0].context)
            embeds = embeds_for(text[: MESSAGE_EMBEDS_LIMIT - 20], colour)
            await interaction.followup.send(embeds=embeds, ephemeral=ephemeral)

    # -- inbound: reactions and thread replies ------------------------------------------

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        await self.on_reaction(payload)

    async def on_raw_reaction_remove(self, payload: discord.RawReactionActionEvent) -> None:
        await self.on_reaction(payload)

    async def on_reaction(self, payload: discord.RawReactionActionEvent) -> None:
        """Gateway events carry no id: the dispatcher recognises a delivery it has seen by
        what it says (who, which emoji, which message, how many times before)."""
        me = self.client.user
        if me is None or payload.user_id == me.id or payload.guild_id is None:
            return  # our own reactions, and DMs, are not decisions
        if payload.message_author_id is not None and payload.message_author_id != me.id:
            return  # only reactions on the bot's own messages mean something
        emoji = emoji_text(payload.emoji)
        added = payload.event_type == "REACTION_ADD"
        kind = ReactionAdded if added else ReactionRemoved
        roles = tuple(str(r.id) for r in payload.member.roles) if payload.member else ()
        try:
            channel = await self._channel_of(payload.channel_id)
            event = kind(
                event_id="",
                actor=Actor("discord", str(payload.user_id), roles=roles),
                channel=str(channel),
                message_platform_id=str(payload.message_id),
                emoji=emoji,
            )
            # the gateway never delivers an event again: it is tried again here
            if await handled_once_placed(self.inbound.handle, event, private_replies=True) is None:
                log.warning(
                    "Discord: a reaction on message %s could not be placed", payload.message_id
                )
        except Exception:
            log.exception("Discord: a reaction could not be handled")

    async def on_message(self, message: discord.Message) -> None:
        me = self.client.user
        if message.author.bot or (me is not None and message.author.id == me.id):
            return
        channel = message.channel
        if not isinstance(channel, discord.Thread) or channel.parent_id is None:
            return  # feedback lives in a run's thread
        if not message.content.strip():
            return  # without the message-content intent, /crew revise carries the notes
        reply = ThreadReply(
            event_id=f"msg:{message.id}",
            actor=Actor("discord", str(message.author.id)),
            channel=str(channel.parent_id),
            thread_platform_id=str(channel.id),
            text=message.content,
        )
        try:
            if await handled_once_placed(self.inbound.handle, reply, private_replies=True) is None:
                log.warning("Discord: a reply in thread %s could not be placed", channel.id)
        except Exception:
            log.exception("Discord: a thread reply could not be handled")

    async def _channel_of(self, channel_id: int) -> int:
        """The channel a message belongs to in crewchief's records: a thread's parent."""
        if channel_id in self._parents:
            return self._parents[channel_id]
        channel = self.client.get_channel(channel_id)
        if channel is None:
            try:
                channel = await self.client.fetch_channel(channel_id)
            except discord.HTTPException:
                return channel_id
        parent = (
            getattr(channel, "parent_id", None) if isinstance(channel, discord.Thread) else None
        )
        self._parents[channel_id] = parent or channel_id
        return parent or channel_id

    # -- outbound ---------------------------------------------------------------------

    async def deliver(self, delivery: Delivery) -> str | None:
        context, chart = await for_post(delivery)
        text = self.renderer.render(delivery.template, context)
        try:
            if delivery.kind == "notice":
                await self._notice(delivery, text)
                return None
            message = self._message(delivery, text)
            if chart is not None and chart.png is not None:
                # in the post itself: a retry with the same nonce gets the first message back,
                # chart and all, so the chart is never posted twice
                if message.get("embeds"):
                    message["embeds"][-1].set_image(url=f"attachment://{chart.filename}")
                message.setdefault("files", []).append(
                    discord.File(
                        io.BytesIO(chart.png), filename=chart.filename, description=chart_title
                    )
                )
            if delivery.kind == "update":
                where = delivery.thread_platform_id or delivery.channel
                target = self.client.get_partial_messageable(int(where))
                partial = target.get_partial_message(int(delivery.platform_id or 0))
                await partial.edit(**message)
                return None
            sent = await self._post(delivery, message)
            if delivery.template == "run_card" and delivery.thread_platform_id is None:
                await self._open_thread(sent, thread_name(delivery.context))
            return str(sent.id)
        except (discord.DiscordException, aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise delivery_error(exc) from None

    def _message(self, delivery: Delivery, text: str) -> dict[str, Any]:
        pinged = delivery.context.get(PINGING.get(delivery.template, ""))
        if pinged:
            ids = [pinged] if isinstance(pinged, str) else [str(p) for p in pinged]
            users, roles = mentioned_ids(ids)
            return {
                "content": text[:2000],
                "embeds": [],
                "allowed_mentions": discord.AllowedMentions(
                    everyone=False,
                    users=[discord.Object(u) for u in users],
                    roles=[discord.Object(r) for r in roles],
                    replied_user=False,
                ),
            }
        long = len(text) > ATTACH_OVER
        shown = (
            preview(
                text,
                head=PREVIEW_HEAD,
                tail=PREVIEW_TAIL,
                notice="*… cut here: the full text is attached*",
            )
            if long
            else text
        )
        message: dict[str, Any] = {
            "embeds": embeds_for(shown, colour_for(delivery.template, delivery.context)),
            "allowed_mentions": discord.AllowedMentions.none(),
        }
        if delivery.kind == "post" and delivery.key:
            # discord.py sends it with enforce_nonce: a retry of a post that went through
            # (the bot died before recording its id) returns the first message, not a copy
            message["nonce"] = nonce_for(delivery.key)
        if long:
            content = str(delivery.context.get("content") or text)
            name = f"{delivery.template}-{delivery.ref or 'message'}.md"
            message["attachments" if delivery.kind == "update" else "files"] = [
                discord.File(io.BytesIO(content.encode()), filename=name)
            ]
        return message

    async def _post(self, delivery: Delivery, message: dict[str, Any]) -> discord.Message:
        thread = delivery.thread_platform_id
        if thread is None:
            return await self.client.get_partial_messageable(int(delivery.channel)).send(**message)
        try:
            return await self.client.get_partial_messageable(int(thread)).send(**message)
        except discord.NotFound as exc:
            if exc.code != UNKNOWN_CHANNEL:
                raise
        # The card is there but its thread is not (not opened yet, or the bot stopped in
        # between): open it.
        context = delivery.context
        if context.get("alert_ids"):
            name = "Alerts " + ", ".join(str(i) for i in context["alert_ids"])
        elif context.get("alert_id") and not context.get("run_id"):
            name = f"Alert {context['alert_id']}"
        else:
            name = f"Run {context.get('run_id') or ''}".strip()
        opened = await self._start_thread(int(delivery.channel), int(thread), name)
        return await self.client.get_partial_messageable(opened).send(**message)

    async def _open_thread(self, card: discord.Message, name: str) -> None:
        try:
            await self._start_thread(card.channel.id, card.id, name or "crewchief run")
        except discord.HTTPException as exc:
            # Posting into the thread opens it later; if that fails too, the row says why.
            log.warning("Discord: could not open the run's thread: %s", exc.text)

    async def _start_thread(self, channel_id: int, message_id: int, name: str) -> int:
        """A public thread under a message (its id is the message's id), kept for a day of
        inactivity before Discord archives it; a post in it unarchives it."""
        data = await self.client.http.start_thread_with_message(
            channel_id, message_id, name=name[:THREAD_NAME_LIMIT], auto_archive_duration=1440
        )
        thread_id = int(data["id"])
        self._parents[thread_id] = channel_id
        return thread_id

    async def _notice(self, delivery: Delivery, text: str) -> None:
        """A private answer: Discord has no ephemeral messages outside interactions, so it is
        a DM (when the person's DMs are open)."""
        user = (delivery.recipient or "").removeprefix("discord:")
        if not user.isdigit():
            raise DeliveryError(f"not a Discord user: {delivery.recipient!r}", permanent=True)
        dm = await self.client.create_dm(discord.Object(int(user)))
        await dm.send(
            embeds=embeds_for(text[:ATTACH_OVER], DEFAULT_COLOUR),
            allowed_mentions=discord.AllowedMentions.none(),
        )


def actor_of(user: discord.User | discord.Member) -> Actor:
    roles = tuple(str(r.id) for r in user.roles) if isinstance(user, discord.Member) else ()
    return Actor("discord", str(user.id), user.display_name, roles=roles)
