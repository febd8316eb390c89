"""A local stand-in for Discord: the REST API (v10) and the websocket gateway, for the calls
crewchief's Discord adapter makes.

It speaks real HTTP and a real websocket so the real discord.py client is what gets tested:
its login, IDENTIFY/heartbeat/RESUME handling, rate-limit buckets and 429 retries, multipart
uploads, error parsing (`HTTPException`, `Forbidden`, `NotFound`) and the interaction
webhooks. It answers like Discord: JSON errors with Discord's numeric `code` (and the nested
`errors` object of 50035 "Invalid Form Body"), message ids that are snowflakes, gateway
dispatches numbered by `s`, intents that decide which events a session gets and whether
`content` is filled in, `allowed_mentions` deciding who a message pings, the 3-second window
to acknowledge an interaction and the 15 minutes of follow-ups after it.

    async with running_fake_discord() as fake:          # patches Route.BASE + DEFAULT_GATEWAY
        client = discord.Client(intents=..., guild_ready_timeout=0.05)
        await client.login(fake.token); asyncio.create_task(client.connect())
        await fake.add_reaction(ALICE_ID, CONTENT_CHANNEL_ID, message_id, "✅")
        fake.rate_limit("POST /channels/{channel_id}/messages", retry_after=0.3)
        assert fake.messages[CONTENT_CHANNEL_ID][0].content == "hello"

Routes are named like discord.py's `Route.key`: "METHOD /path/{param}" with discord.py's
parameter names (a concrete path such as "POST /channels/123/messages" works too).

Run stand-alone for manual checks:  python -m tests.fakes.discord_api --port 8767
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import hashlib
import json
import math
import mimetypes
import re
import secrets
import time
import zlib
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

import discord.gateway
import discord.http
import yarl
from aiohttp import WSMsgType, web

from tests.fakes.local_server import serve_until_interrupted

API_PREFIX = "/api/v10"
DISCORD_EPOCH_MS = 1_420_070_400_000

# Gateway intents (https://discord.com/developers/docs/events/gateway#gateway-intents).
GUILDS = 1 << 0
GUILD_MEMBERS = 1 << 1
GUILD_PRESENCES = 1 << 8
GUILD_MESSAGES = 1 << 9
GUILD_MESSAGE_REACTIONS = 1 << 10
DIRECT_MESSAGES = 1 << 12
DIRECT_MESSAGE_REACTIONS = 1 << 13
MESSAGE_CONTENT = 1 << 15
PRIVILEGED_INTENTS = GUILD_MEMBERS | GUILD_PRESENCES | MESSAGE_CONTENT
ALL_INTENTS = (1 << 26) - 1

# Message flags and types.
FLAG_HAS_THREAD = 1 << 5
FLAG_EPHEMERAL = 1 << 6
FLAG_LOADING = 1 << 7
TYPE_DEFAULT = 0
TYPE_REPLY = 19
TYPE_CHAT_INPUT_COMMAND = 20

# Channel types.
GUILD_TEXT = 0
DM = 1
PUBLIC_THREAD = 11

# Limits Discord enforces on messages.
MAX_CONTENT = 2000
MAX_EMBEDS = 10
MAX_EMBED_TOTAL = 6000
MAX_FILES = 10
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_REACTIONS = 20
EMBED_FIELD_LIMITS = {"title": 256, "description": 4096}
INTERACTION_ACK_SECONDS = 3.0
FOLLOWUP_SECONDS = 15 * 60

# A fixed world, with ids shaped like real snowflakes.
BOT_TOKEN = "MTEwMDAwMDAwMDAwMDAwMDkwMA.GfAkE1.crewchief-test-token-not-a-real-one"
APPLICATION_ID = "1100000000000000900"  # for current apps the bot user id is the app id
BOT_USER_ID = APPLICATION_ID
GUILD_ID = "1100000000000000001"
CONTENT_CHANNEL_ID = "1100000000000000010"
OPS_CHANNEL_ID = "1100000000000000011"
EDITORS_ROLE_ID = "1100000000000000100"
ADMINS_ROLE_ID = "1100000000000000101"
BOT_ROLE_ID = "1100000000000000102"
APPROVE_EMOJI_ID = "1100000000000000200"
ALICE_ID = "1100000000000001001"
BOB_ID = "1100000000000001002"
CAROL_ID = "1100000000000001003"

BOT_PERMISSIONS = 1 << 0 | 1 << 6 | 1 << 10 | 1 << 11 | 1 << 14 | 1 << 15 | 1 << 16 | 1 << 18
BOT_PERMISSIONS |= 1 << 17 | 1 << 31 | 1 << 35 | 1 << 38  # mention everyone, threads
ADMINISTRATOR = 1 << 3

COMPRESSIONS = {"zlib-stream", "zstd-stream"}  # transport compression Discord offers
_ZSTD_FLUSH_BLOCK = 1  # zstandard.COMPRESSOBJ_FLUSH_BLOCK: end the frame's data, keep the stream


class DiscordError(Exception):
    """Raised inside a handler to answer with Discord's JSON error body."""

    def __init__(
        self,
        status: int,
        code: int,
        message: str,
        *,
        errors: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.errors is not None:
            body["errors"] = self.errors
        return body


Problem = tuple[tuple[str | int, ...], str, str]  # path in the body, error code, message


def invalid_form(problems: Iterable[Problem]) -> DiscordError:
    """50035 with errors nested by field path, e.g. {"embeds": {"0": {"description":
    {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH", "message": ...}]}}}}."""
    errors: dict[str, Any] = {}
    for path, code, message in problems:
        node = errors
        for part in path:
            node = node.setdefault(str(part), {})
        node.setdefault("_errors", []).append({"code": code, "message": message})
    return DiscordError(400, 50035, "Invalid Form Body", errors=errors)


def unknown_channel() -> DiscordError:
    return DiscordError(404, 10003, "Unknown Channel")


def unknown_message() -> DiscordError:
    return DiscordError(404, 10008, "Unknown Message")


def unknown_interaction() -> DiscordError:
    return DiscordError(404, 10062, "Unknown interaction")


def unknown_webhook() -> DiscordError:
    return DiscordError(404, 10015, "Unknown Webhook")


ACCESS_ERRORS = {
    50001: (403, "Missing Access"),
    50013: (403, "Missing Permissions"),
}


# ---------------------------------------------------------------- the world


@dataclass
class User:
    id: str
    username: str
    global_name: str | None = None
    bot: bool = False
    dms_open: bool = True  # False: "Allow direct messages from server members" is off

    def as_api(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "username": self.username,
            "discriminator": "0",
            "global_name": self.global_name,
            "avatar": None,
            "avatar_decoration_data": None,
            "banner": None,
            "accent_color": None,
            "public_flags": 0,
            "flags": 0,
            "collectibles": None,
            "primary_guild": None,
        }
        if self.bot:
            data["bot"] = True
        return data


@dataclass
class Role:
    id: str
    name: str
    position: int = 1
    permissions: int = 0
    mentionable: bool = False
    managed: bool = False
    color: int = 0

    def as_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "color": self.color,
            "colors": {
                "primary_color": self.color,
                "secondary_color": None,
                "tertiary_color": None,
            },
            "hoist": False,
            "icon": None,
            "unicode_emoji": None,
            "position": self.position,
            "permissions": str(self.permissions),
            "managed": self.managed,
            "mentionable": self.mentionable,
            "flags": 0,
        }


@dataclass
class Emoji:
    """A guild's custom emoji; reactions name it `name:id`."""

    id: str
    name: str
    animated: bool = False

    def as_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "roles": [],
            "require_colons": True,
            "managed": False,
            "animated": self.animated,
            "available": True,
        }


@dataclass
class Member:
    user_id: str
    roles: list[str] = field(default_factory=list)
    nick: str | None = None
    joined_at: str = "2024-01-02T09:00:00.000000+00:00"


@dataclass
class Channel:
    """A guild text channel, a thread (type 11, `parent_id` set) or a DM (type 1)."""

    id: str
    name: str | None
    type: int = GUILD_TEXT
    guild_id: str | None = None
    parent_id: str | None = None
    position: int = 0
    topic: str | None = None
    owner_id: str | None = None
    recipient_id: str | None = None
    access_error: int | None = None  # 50001 / 50013: the bot may not use this channel
    auto_archive_duration: int = 1440
    archived: bool = False
    locked: bool = False
    rate_limit_per_user: int = 0
    message_count: int = 0
    total_message_sent: int = 0
    created_at: str = ""
    last_message_id: str | None = None

    @property
    def is_thread(self) -> bool:
        return self.type in (10, 11, 12)


@dataclass
class Guild:
    id: str
    name: str
    owner_id: str
    roles: list[Role] = field(default_factory=list)
    channels: list[Channel] = field(default_factory=list)
    members: dict[str, Member] = field(default_factory=dict)
    emojis: list[Emoji] = field(default_factory=list)

    def role(self, role_id: str) -> Role | None:
        return next((r for r in self.roles if r.id == role_id), None)


def default_users() -> list[User]:
    return [
        User(ALICE_ID, "alice", "Alice"),
        User(BOB_ID, "bob", "Bob"),
        User(CAROL_ID, "carol", "Carol"),
    ]


def default_guild() -> Guild:
    """One server: #content and #ops, editors (alice, bob) and admins (carol), :approve:."""
    return Guild(
        id=GUILD_ID,
        name="crewchief test",
        owner_id=CAROL_ID,
        roles=[
            Role(GUILD_ID, "@everyone", position=0, permissions=1 << 10 | 1 << 11 | 1 << 6),
            Role(EDITORS_ROLE_ID, "editors", position=1, mentionable=True),
            Role(ADMINS_ROLE_ID, "admins", position=3, permissions=ADMINISTRATOR),
            Role(BOT_ROLE_ID, "crewchief", position=2, permissions=BOT_PERMISSIONS, managed=True),
        ],
        channels=[
            Channel(CONTENT_CHANNEL_ID, "content", guild_id=GUILD_ID, position=0),
            Channel(OPS_CHANNEL_ID, "ops", guild_id=GUILD_ID, position=1),
        ],
        members={
            ALICE_ID: Member(ALICE_ID, [EDITORS_ROLE_ID]),
            BOB_ID: Member(BOB_ID, [EDITORS_ROLE_ID]),
            CAROL_ID: Member(CAROL_ID, [ADMINS_ROLE_ID]),
            BOT_USER_ID: Member(BOT_USER_ID, [BOT_ROLE_ID]),
        },
        emojis=[Emoji(APPROVE_EMOJI_ID, "approve")],
    )


# ---------------------------------------------------------------- what tests read


@dataclass
class Pings:
    """Who a message actually notified, after `allowed_mentions` was applied."""

    users: list[str] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)
    everyone: bool = False

    @property
    def nobody(self) -> bool:
        return not self.users and not self.roles and not self.everyone


@dataclass
class Message:
    """A message as people see it now; `edits` keeps the earlier versions."""

    id: str
    channel_id: str
    guild_id: str | None
    author_id: str
    content: str
    timestamp: str
    type: int = TYPE_DEFAULT
    embeds: list[dict[str, Any]] = field(default_factory=list)
    attachments: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)  # filename -> uploaded bytes
    components: list[dict[str, Any]] = field(default_factory=list)
    flags: int = 0
    tts: bool = False
    nonce: str | None = None
    allowed_mentions: dict[str, Any] | None = None  # as the sender passed it
    pings: Pings = field(default_factory=Pings)
    reference_id: str | None = None  # the message this one replies to
    thread_id: str | None = None  # the thread started from this message
    webhook_id: str | None = None
    interaction_id: str | None = None
    ephemeral_to: str | None = None  # user id, for ephemeral interaction messages
    reactions: dict[str, list[str]] = field(default_factory=dict)  # emoji key -> user ids
    edits: list[dict[str, Any]] = field(default_factory=list)
    edited_timestamp: str | None = None
    deleted: bool = False

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & FLAG_EPHEMERAL)

    @property
    def loading(self) -> bool:
        """A deferred interaction response nobody has filled in yet ("is thinking...")."""
        return bool(self.flags & FLAG_LOADING)


@dataclass
class Interaction:
    """An interaction the fake sent, and how the bot answered it."""

    id: str
    token: str
    type: int  # 2 application command, 4 autocomplete
    payload: dict[str, Any]
    created_at: float  # on the fake's clock
    user_id: str
    channel_id: str
    guild_id: str | None
    callbacks: list[dict[str, Any]] = field(default_factory=list)  # accepted callback bodies
    rejected: list[tuple[int, int]] = field(default_factory=list)  # (status, code) refused
    original: Message | None = None
    followups: list[Message] = field(default_factory=list)
    choices: list[dict[str, Any]] | None = None  # autocomplete answer

    @property
    def acknowledged(self) -> bool:
        return bool(self.callbacks)

    @property
    def response_type(self) -> int | None:
        return self.callbacks[0]["type"] if self.callbacks else None

    @property
    def deferred(self) -> bool:
        return self.response_type in (5, 6)

    @property
    def ephemeral(self) -> bool:
        return self.original is not None and self.original.ephemeral


@dataclass
class RecordedRequest:
    """One REST request as the fake received and answered it (the token is not kept)."""

    method: str
    path: str
    route: str  # "POST /channels/{channel_id}/messages"
    query: dict[str, str]
    body: Any
    files: list[tuple[str, str, bytes]]  # (form field, filename, content)
    authorized: bool
    status: int
    response: Any

    @property
    def code(self) -> int | None:
        return self.response.get("code") if isinstance(self.response, dict) else None


def _ungated(session: GatewaySession, data: dict[str, Any]) -> dict[str, Any] | None:
    return data


Gate = Callable[["GatewaySession", dict[str, Any]], dict[str, Any] | None]


@dataclass
class GatewayEvent:
    """A dispatch (op 0). `sent_to` lists the sessions whose intents let it through (queued
    for resume when the session is disconnected); `redispatch` sends it again."""

    name: str
    data: dict[str, Any]
    sent_to: list[str] = field(default_factory=list)
    gate: Gate = field(default=_ungated, repr=False, compare=False)
    single: bool = False  # only one session gets it (interactions)


@dataclass
class GatewayConnection:
    ws: web.WebSocketResponse = field(repr=False)
    path: str
    query: dict[str, str]
    compress: bool
    session: GatewaySession | None = None
    heartbeats: int = 0
    received: list[dict[str, Any]] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None
    closed_by_server: bool = False
    _zlib: Any = field(default=None, repr=False)
    _zstd: Any = field(default=None, repr=False)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    def __post_init__(self) -> None:
        if not self.compress:
            return
        if self.query.get("compress") == "zstd-stream":
            import zstandard  # discord.py asks for zstd-stream only when it can read it

            self._zstd = zstandard.ZstdCompressor().compressobj()
        else:
            self._zlib = zlib.compressobj()

    @property
    def open(self) -> bool:
        return not self.ws.closed

    async def send(self, payload: dict[str, Any]) -> bool:
        """zlib-stream (one shared context, each frame ending in Z_SYNC_FLUSH) or zstd-stream
        (one shared context, each frame a flushed block) when the client asked for it in the
        URL, as Discord does; plain JSON text frames otherwise."""
        text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
        async with self._lock:
            if self.ws.closed:
                return False
            try:
                if self._zstd is not None:
                    block = self._zstd.compress(text.encode())
                    await self.ws.send_bytes(block + self._zstd.flush(_ZSTD_FLUSH_BLOCK))
                elif self._zlib is not None:
                    data = self._zlib.compress(text.encode()) + self._zlib.flush(zlib.Z_SYNC_FLUSH)
                    await self.ws.send_bytes(data)
                else:
                    await self.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                return False
        self.sent.append(payload)
        return True

    async def close(self, code: int, reason: str = "") -> None:
        self.close_code = code
        self.closed_by_server = True
        with suppress(ConnectionError, RuntimeError):
            await self.ws.close(code=code, message=reason.encode())


@dataclass
class GatewaySession:
    id: str
    intents: int
    identify: dict[str, Any]  # the IDENTIFY `d`, token removed
    connection: GatewayConnection | None = None
    seq: int = 0
    history: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=5000))
    resumes: int = 0

    def has(self, intent: int) -> bool:
        return bool(self.intents & intent)


@dataclass
class _Scripted:
    status: int
    body: Any
    headers: dict[str, str]


@dataclass
class Reply:
    status: int
    body: Any


@dataclass
class _Call:
    params: dict[str, str]
    query: dict[str, str]
    body: Any
    files: list[tuple[str, str, bytes]]


Handler = Callable[[_Call], Any]


# ---------------------------------------------------------------- the fake


class FakeDiscord:
    """The fake's state. Start it with `running_fake_discord()`; read `messages`,
    `interactions`, `requests`, `events` and friends; drive it with `send_interaction`,
    `add_reaction`, `remove_reaction`, `post_user_message`."""

    def __init__(
        self,
        *,
        token: str = BOT_TOKEN,
        application_id: str = APPLICATION_ID,
        bot_name: str = "crewchief",
        guilds: Iterable[Guild] | None = None,
        users: Iterable[User] | None = None,
        privileged_intents: int = PRIVILEGED_INTENTS,
        heartbeat_interval_ms: int = 41_250,
        compress: bool = True,
    ) -> None:
        """`privileged_intents`: those enabled for the app in the developer portal; an
        IDENTIFY asking for others is closed with 4014. `compress=False` ignores
        `compress=zlib-stream` and always sends text frames."""
        self.token = token
        self.application_id = application_id
        self._clock_offset = 0.0
        self._last_snowflake = 0
        self.bot = User(application_id, bot_name, None, bot=True)
        self.users: dict[str, User] = {self.bot.id: self.bot}
        for user in default_users() if users is None else users:
            self.users[user.id] = user
        self.guilds: dict[str, Guild] = {}
        self.channels: dict[str, Channel] = {}
        for guild in [default_guild()] if guilds is None else guilds:
            self.add_guild(guild)
        self.privileged_intents = privileged_intents
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.compress = compress

        self.messages: defaultdict[str, list[Message]] = defaultdict(list)
        self.ephemerals: list[Message] = []
        self.interactions: dict[str, Interaction] = {}
        self.dm_channels: dict[str, str] = {}  # user id -> DM channel id
        self.global_commands: list[dict[str, Any]] = []
        self.guild_commands: dict[str, list[dict[str, Any]]] = {}
        self.requests: list[RecordedRequest] = []
        self.events: list[GatewayEvent] = []
        self.identifies: list[dict[str, Any]] = []
        self.sessions: dict[str, GatewaySession] = {}
        self.connections: list[GatewayConnection] = []

        self._command_ids: dict[tuple[str | None, str, int], str] = {}
        self._scripts: defaultdict[str, deque[_Scripted]] = defaultdict(deque)
        self._dispatch_lock = asyncio.Lock()
        self._gateway_open = asyncio.Event()
        self._gateway_open.set()
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    # ------------------------------------------------------------ addresses

    @property
    def api_base(self) -> str:
        """What `discord.http.Route.BASE` must be: `http://127.0.0.1:PORT/api/v10`."""
        return self.base_url + API_PREFIX

    @property
    def gateway_url(self) -> str:
        return self.base_url.replace("http://", "ws://", 1) + "/"

    @property
    def resume_gateway_url(self) -> str:
        return self.base_url.replace("http://", "ws://", 1) + "/resume"

    # ------------------------------------------------------------ the fake clock

    def now(self) -> float:
        """Monotonic seconds on the fake's clock, which `advance_clock` moves forward."""
        return time.monotonic() + self._clock_offset

    def advance_clock(self, seconds: float) -> None:
        """Pretend time passed, e.g. past an interaction's 3 s, without sleeping."""
        self._clock_offset += seconds

    def _utcnow(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self._clock_offset)

    def _iso_now(self) -> str:
        return self._utcnow().isoformat()

    def snowflake(self) -> str:
        """A new id, increasing, with the creation time in its top bits like Discord's."""
        ms = int(self._utcnow().timestamp() * 1000) - DISCORD_EPOCH_MS
        value = max(ms << 22, self._last_snowflake + 1)
        self._last_snowflake = value
        return str(value)

    # ------------------------------------------------------------ configuring the world

    def add_guild(self, guild: Guild) -> Guild:
        self.guilds[guild.id] = guild
        for channel in guild.channels:
            channel.guild_id = guild.id
            channel.created_at = channel.created_at or self._iso_now()
            self.channels[channel.id] = channel
        return guild

    def add_user(
        self, user: User, *, guild_id: str | None = GUILD_ID, roles: Sequence[str] = ()
    ) -> User:
        """Add a person (and make them a member of `guild_id` with `roles`)."""
        self.users[user.id] = user
        if guild_id is not None:
            self.guilds[guild_id].members[user.id] = Member(user.id, list(roles))
        return user

    def add_channel(self, channel_id: str, name: str, *, guild_id: str = GUILD_ID) -> Channel:
        guild = self.guilds[guild_id]
        channel = Channel(channel_id, name, guild_id=guild_id, position=len(guild.channels))
        channel.created_at = self._iso_now()
        guild.channels.append(channel)
        self.channels[channel_id] = channel
        return channel

    def close_dms(self, user_id: str) -> None:
        """The user does not accept DMs: sending to their DM channel is 403 code 50007."""
        self._user(user_id).dms_open = False

    def deny_access(self, channel_id: str, code: int = 50001) -> None:
        """Make REST calls on this channel answer 403 50001 Missing Access (or 50013
        Missing Permissions); `code=0` gives access back."""
        if code and code not in ACCESS_ERRORS:
            raise ValueError(f"access errors are {sorted(ACCESS_ERRORS)}")
        self.channels[channel_id].access_error = code or None

    # ------------------------------------------------------------ accessors

    def message(self, channel_id: str, message_id: str) -> Message:
        for message in self.messages[channel_id]:
            if message.id == message_id:
                return message
        raise KeyError(f"no message {message_id} in {channel_id}")

    def find_message(self, message_id: str) -> Message | None:
        for messages in self.messages.values():
            for message in messages:
                if message.id == message_id:
                    return message
        return None

    def bot_messages(self, channel_id: str) -> list[Message]:
        """What the bot posted in a channel (or thread, or DM), oldest first."""
        return [
            m for m in self.messages[channel_id] if m.author_id == self.bot.id and not m.deleted
        ]

    @property
    def threads(self) -> dict[str, Channel]:
        return {c.id: c for c in self.channels.values() if c.is_thread}

    def thread_messages(self, thread_id: str) -> list[Message]:
        return list(self.messages[thread_id])

    def dm_messages(self, user_id: str) -> list[Message]:
        """What the bot sent `user_id` directly."""
        channel_id = self.dm_channels.get(user_id)
        return [] if channel_id is None else list(self.messages[channel_id])

    def requests_to(self, route: str) -> list[RecordedRequest]:
        return [r for r in self.requests if route in (r.route, f"{r.method} {r.path}")]

    def events_named(self, name: str) -> list[GatewayEvent]:
        return [e for e in self.events if e.name == name]

    @property
    def live_sessions(self) -> list[GatewaySession]:
        return [s for s in self.sessions.values() if s.connection is not None and s.connection.open]

    async def wait_until(
        self, predicate: Callable[[], object], timeout: float = 5.0, what: str = "condition"
    ) -> None:
        """Poll `predicate` until it is true (the bot works in its own tasks)."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            await asyncio.sleep(0.01)

    async def wait_for_session(self, timeout: float = 5.0) -> GatewaySession:
        """Wait until a client has identified (or resumed) on a live connection."""
        await self.wait_until(lambda: self.live_sessions, timeout, "a gateway session")
        return self.live_sessions[-1]

    async def wait_for_callback(self, interaction: Interaction, timeout: float = 5.0) -> None:
        await self.wait_until(
            lambda: interaction.callbacks, timeout, f"a callback to interaction {interaction.id}"
        )

    async def wait_for_message(
        self,
        channel_id: str,
        predicate: Callable[[Message], bool] | None = None,
        timeout: float = 5.0,
    ) -> Message:
        def found() -> Message | None:
            return next(
                (m for m in self.messages[channel_id] if predicate is None or predicate(m)), None
            )

        await self.wait_until(found, timeout, f"a message in {channel_id}")
        result = found()
        assert result is not None
        return result

    # ------------------------------------------------------------ scripting REST faults

    def script(
        self,
        route: str,
        *,
        status: int,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next `times` requests to `route` with this instead of doing the work.
        `route` is "METHOD /template" (discord.py's Route.key) or "METHOD /concrete/path";
        a str body is sent as an HTML page, as Cloudflare does for a 502."""
        for _ in range(times):
            self._scripts[route].append(_Scripted(status, body, dict(headers or {})))

    def rate_limit(
        self,
        route: str,
        *,
        retry_after: float = 0.3,
        times: int = 1,
        is_global: bool = False,
        scope: str = "user",
    ) -> None:
        """Discord's 429: `retry_after` in the JSON body, `Retry-After` (whole seconds) and
        `X-RateLimit-*` headers, and the `Via` header discord.py needs to trust it (a 429
        without `Via` it treats as a Cloudflare ban and does not retry)."""
        headers = {
            "Retry-After": str(max(1, math.ceil(retry_after))),
            "X-RateLimit-Limit": "5",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": f"{time.time() + retry_after:.3f}",
            "X-RateLimit-Reset-After": f"{retry_after:.3f}",
            "X-RateLimit-Bucket": _bucket(route),
            "X-RateLimit-Scope": "global" if is_global else scope,
        }
        if is_global:
            headers["X-RateLimit-Global"] = "true"
        body = {
            "message": "You are being rate limited.",
            "retry_after": retry_after,
            "global": is_global,
            "code": 0,
        }
        self.script(route, status=429, body=body, headers=headers, times=times)

    def fail(self, route: str, *, status: int = 500, times: int = 1) -> None:
        """Server errors: 500 with Discord's JSON body, 502/504 as the HTML page of the load
        balancer in front of Discord. discord.py retries 500/502/504 after 1 s, 3 s, ..."""
        body: Any
        if status == 500:
            body = {"message": "500: Internal Server Error", "code": 0}
        elif status == 503:
            body = {"message": "503: Service Unavailable", "code": 0}
        else:
            body = f"<html><head><title>{status}</title></head><body>{status}</body></html>"
        self.script(route, status=status, body=body, times=times)

    # ------------------------------------------------------------ driving the bot

    async def send_interaction(
        self,
        subcommand: str | None = None,
        options: Mapping[str, Any] | None = None,
        *,
        command: str = "crew",
        user_id: str = ALICE_ID,
        channel_id: str = CONTENT_CHANNEL_ID,
        member_roles: Sequence[str] | None = None,
        focused: str | None = None,
        locale: str = "en-US",
    ) -> Interaction:
        """A person runs `/command subcommand option:value...` (type 2), or is typing in
        option `focused` (type 4, autocomplete: `options[focused]` is the partial text).
        Option types come from the synced command when there is one. `subcommand` may be
        "group sub". The bot has 3 s on the fake's clock to call back."""
        channel = self.channels[channel_id]
        guild_id = channel.guild_id
        user = self._user(user_id)
        definition = self._synced_command(command, guild_id)
        interaction_type = 2 if focused is None else 4
        data: dict[str, Any] = {
            "id": definition["id"] if definition else self._command_id(None, command, 1),
            "name": command,
            "type": 1,
        }
        if definition and definition.get("guild_id"):
            data["guild_id"] = definition["guild_id"]
        schema: list[dict[str, Any]] = list(definition.get("options", [])) if definition else []
        values, resolved = self._option_values(schema, subcommand, options or {}, focused, guild_id)
        if values:
            data["options"] = values
        if resolved:
            data["resolved"] = resolved

        interaction_id = self.snowflake()
        token = "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(96)
        payload: dict[str, Any] = {
            "id": interaction_id,
            "application_id": self.application_id,
            "type": interaction_type,
            "data": data,
            "channel_id": channel_id,
            "channel": self._channel_payload(channel),
            "token": token,
            "version": 1,
            "locale": locale,
            "entitlements": [],
            "entitlement_sku_ids": [],
            "attachment_size_limit": MAX_UPLOAD_BYTES,
            "app_permissions": str(self._permissions(guild_id, self.bot.id)),
        }
        if guild_id is not None:
            guild = self.guilds[guild_id]
            payload["guild_id"] = guild_id
            payload["guild"] = {"id": guild_id, "locale": "en-US", "features": []}
            payload["guild_locale"] = "en-US"
            member = self._member_payload(guild, user_id, roles=member_roles)
            member["permissions"] = str(self._permissions(guild_id, user_id, roles=member_roles))
            payload["member"] = member
            payload["authorizing_integration_owners"] = {"0": guild_id}
            payload["context"] = 0
        else:
            payload["user"] = user.as_api()
            payload["authorizing_integration_owners"] = {"0": user_id}
            payload["context"] = 1
        interaction = Interaction(
            id=interaction_id,
            token=token,
            type=interaction_type,
            payload=payload,
            created_at=self.now(),
            user_id=user_id,
            channel_id=channel_id,
            guild_id=guild_id,
        )
        self.interactions[interaction_id] = interaction
        await self._dispatch("INTERACTION_CREATE", payload, single=True)
        return interaction

    async def send_autocomplete(
        self,
        subcommand: str | None,
        options: Mapping[str, Any],
        *,
        focused: str,
        **kwargs: Any,
    ) -> Interaction:
        """An autocomplete interaction (type 4); read the answer from `.choices`."""
        return await self.send_interaction(subcommand, options, focused=focused, **kwargs)

    async def add_reaction(
        self,
        user_id: str,
        channel_id: str,
        message_id: str,
        emoji: str | Mapping[str, Any],
        *,
        member_roles: Sequence[str] | None = None,
    ) -> GatewayEvent:
        """A person reacts. `emoji`: "✅", "approve" (a custom emoji of the guild),
        "approve:ID" or {"id": ..., "name": ...}. MESSAGE_REACTION_ADD carries `member` with
        roles (`member_roles` overrides the stored ones) for guild channels. Reacting again
        with an emoji the user already added sends nothing, as on Discord (`sent_to` is
        empty); use `redispatch` to deliver a duplicate."""
        channel = self.channels[channel_id]
        key, emoji_payload = self._resolve_emoji(emoji, channel.guild_id)
        message = next((m for m in self.messages[channel_id] if m.id == message_id), None)
        data: dict[str, Any] = {
            "user_id": user_id,
            "type": 0,
            "message_id": message_id,
            "emoji": emoji_payload,
            "channel_id": channel_id,
            "burst": False,
            "burst_colors": [],
        }
        if message is not None:
            data["message_author_id"] = message.author_id
            users = message.reactions.setdefault(key, [])
            if user_id in users:
                return GatewayEvent("MESSAGE_REACTION_ADD", data)
            users.append(user_id)
        if channel.guild_id is not None:
            data["guild_id"] = channel.guild_id
            guild = self.guilds[channel.guild_id]
            data["member"] = self._member_payload(guild, user_id, roles=member_roles)
        return await self._dispatch("MESSAGE_REACTION_ADD", data, self._reaction_gate)

    async def remove_reaction(
        self, user_id: str, channel_id: str, message_id: str, emoji: str | Mapping[str, Any]
    ) -> GatewayEvent:
        """A person takes their reaction back: MESSAGE_REACTION_REMOVE (no `member`)."""
        channel = self.channels[channel_id]
        key, emoji_payload = self._resolve_emoji(emoji, channel.guild_id)
        message = next((m for m in self.messages[channel_id] if m.id == message_id), None)
        if message is not None and user_id in message.reactions.get(key, []):
            message.reactions[key].remove(user_id)
            if not message.reactions[key]:
                del message.reactions[key]
        data: dict[str, Any] = {
            "user_id": user_id,
            "type": 0,
            "message_id": message_id,
            "emoji": emoji_payload,
            "channel_id": channel_id,
            "burst": False,
        }
        if channel.guild_id is not None:
            data["guild_id"] = channel.guild_id
        return await self._dispatch("MESSAGE_REACTION_REMOVE", data, self._reaction_gate)

    async def post_user_message(
        self,
        user_id: str,
        channel_id: str,
        content: str,
        *,
        reply_to: str | None = None,
        member_roles: Sequence[str] | None = None,
    ) -> GatewayEvent:
        """A person posts (a thread reply: `channel_id` is the thread id). MESSAGE_CREATE's
        content is empty for sessions without MESSAGE_CONTENT unless the bot is mentioned.
        The message id is `event.data["id"]`."""
        channel = self.channels[channel_id]
        self._user(user_id)
        message = self._store_message(
            channel,
            author_id=user_id,
            body={"content": content},
            reference_id=reply_to,
        )
        return await self._dispatch_message("MESSAGE_CREATE", message, member_roles=member_roles)

    async def redispatch(self, event: GatewayEvent) -> GatewayEvent:
        """Deliver the same payload again (with a new sequence number), as Discord may after
        a resume: the bot must not act twice."""
        return await self._dispatch(event.name, event.data, event.gate, single=event.single)

    async def dispatch(self, name: str, data: dict[str, Any]) -> GatewayEvent:
        """Send any dispatch to every session, ungated."""
        return await self._dispatch(name, data)

    # ------------------------------------------------------------ gateway control

    async def send_reconnect(self) -> None:
        """Op 7: Discord asks clients to reconnect and RESUME (it does so on deploys)."""
        for connection in list(self.connections):
            if connection.open and connection.session is not None:
                await connection.send({"op": 7, "d": None, "s": None, "t": None})

    async def invalidate_sessions(self, *, resumable: bool = False) -> None:
        """Op 9. With resumable=False the sessions are gone: clients must IDENTIFY again
        (discord.py waits 5 s before a non-initial IDENTIFY)."""
        for connection in list(self.connections):
            if connection.open:
                await connection.send({"op": 9, "d": resumable, "s": None, "t": None})
        if not resumable:
            self.sessions.clear()

    def pause_gateway(self) -> None:
        """Hold new gateway connections (they wait before HELLO) until `resume_gateway`:
        events dispatched meanwhile queue in the sessions, to be replayed on RESUME."""
        self._gateway_open.clear()

    def resume_gateway(self) -> None:
        self._gateway_open.set()

    async def drop_connections(self, code: int = 4000) -> None:
        """Close every gateway connection (a network blip or Discord restarting a node);
        sessions stay resumable."""
        for connection in list(self.connections):
            if connection.open:
                await connection.close(code, "fake drop")

    # ------------------------------------------------------------ lifecycle

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_UPLOAD_BYTES * 3)
        app.router.add_get("/", self._handle_gateway)
        app.router.add_get("/resume", self._handle_gateway)
        app.router.add_get("/attachments/{channel_id}/{attachment_id}/{filename}", self._cdn)
        for method, template, handler, needs_auth in self._route_table():
            app.router.add_route(
                method, API_PREFIX + template, self._endpoint(method, template, handler, needs_auth)
            )
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", self._not_found)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._runner = web.AppRunner(self.build_app(), access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound_host, bound_port = self._runner.addresses[0][:2]
        self.base_url = f"http://{bound_host}:{bound_port}"

    async def stop(self) -> None:
        self._gateway_open.set()
        for connection in list(self.connections):
            if connection.open:
                await connection.close(1001, "server shutdown")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ------------------------------------------------------------ REST plumbing

    def _route_table(self) -> list[tuple[str, str, Handler, bool]]:
        msg = "/channels/{channel_id}/messages/{message_id}"
        webhook_message = "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}"
        return [
            ("GET", "/gateway", self._get_gateway, False),
            ("GET", "/gateway/bot", self._get_gateway_bot, True),
            ("GET", "/users/@me", self._get_me, True),
            ("POST", "/users/@me/channels", self._open_dm, True),
            ("GET", "/users/{user_id}", self._get_user, True),
            ("GET", "/oauth2/applications/@me", self._get_application, True),
            ("GET", "/applications/{application_id}/commands", self._get_commands, True),
            ("PUT", "/applications/{application_id}/commands", self._put_commands, True),
            (
                "GET",
                "/applications/{application_id}/guilds/{guild_id}/commands",
                self._get_commands,
                True,
            ),
            (
                "PUT",
                "/applications/{application_id}/guilds/{guild_id}/commands",
                self._put_commands,
                True,
            ),
            ("GET", "/channels/{channel_id}", self._get_channel, True),
            ("GET", "/channels/{channel_id}/messages", self._get_history, True),
            ("POST", "/channels/{channel_id}/messages", self._create_message, True),
            ("POST", "/channels/{channel_id}/typing", self._typing, True),
            ("GET", msg, self._get_message, True),
            ("PATCH", msg, self._edit_message, True),
            ("DELETE", msg, self._delete_message, True),
            ("POST", msg + "/threads", self._start_thread, True),
            ("PUT", msg + "/reactions/{emoji}/@me", self._add_own_reaction, True),
            ("DELETE", msg + "/reactions/{emoji}/@me", self._remove_own_reaction, True),
            ("DELETE", msg + "/reactions/{emoji}/{member_id}", self._remove_reaction, True),
            ("GET", msg + "/reactions/{emoji}", self._get_reactions, True),
            (
                "POST",
                "/interactions/{webhook_id}/{webhook_token}/callback",
                self._interaction_callback,
                False,
            ),
            ("POST", "/webhooks/{webhook_id}/{webhook_token}", self._followup, False),
            ("GET", webhook_message, self._get_webhook_message, False),
            ("PATCH", webhook_message, self._edit_webhook_message, False),
            ("DELETE", webhook_message, self._delete_webhook_message, False),
        ]

    def _endpoint(
        self, method: str, template: str, handler: Handler, needs_auth: bool
    ) -> Callable[[web.Request], Any]:
        route = f"{method} {template}"

        async def endpoint(request: web.Request) -> web.StreamResponse:
            params = {k: unquote(v) for k, v in request.match_info.items()}
            concrete = f"{method} {request.path.removeprefix(API_PREFIX)}"
            authorized = request.headers.get("Authorization") == f"Bot {self.token}"
            body: Any = None
            files: list[tuple[str, str, bytes]] = []
            headers: dict[str, str] = {}
            try:
                body, files = await _read_body(request)
                if needs_auth and not authorized:
                    raise DiscordError(401, 0, "401: Unauthorized")
                scripted = self._take_script(concrete, route)
                if scripted is not None:
                    status, answer, headers = scripted.status, scripted.body, scripted.headers
                else:
                    result = await handler(_Call(params, dict(request.query), body, files))
                    if isinstance(result, Reply):
                        status, answer = result.status, result.body
                    elif result is None:
                        status, answer = 204, None
                    else:
                        status, answer = 200, result
                    headers = _bucket_headers(route)
            except DiscordError as e:
                status, answer = e.status, e.body()
            self.requests.append(
                RecordedRequest(
                    method=method,
                    path=request.path.removeprefix(API_PREFIX),
                    route=route,
                    query=dict(request.query),
                    body=body,
                    files=files,
                    authorized=authorized,
                    status=status,
                    response=answer,
                )
            )
            return _response(status, answer, headers)

        return endpoint

    def _take_script(self, *keys: str) -> _Scripted | None:
        for key in keys:
            if self._scripts.get(key):
                return self._scripts[key].popleft()
        return None

    async def _not_found(self, request: web.Request) -> web.StreamResponse:
        return _response(404, {"message": "404: Not Found", "code": 0}, {})

    async def _cdn(self, request: web.Request) -> web.StreamResponse:
        for message in self.messages[request.match_info["channel_id"]]:
            for attachment in message.attachments:
                if attachment["id"] == request.match_info["attachment_id"]:
                    return web.Response(
                        body=message.files.get(attachment["filename"], b""),
                        content_type=attachment.get("content_type") or "application/octet-stream",
                    )
        return web.Response(status=404, text="Not Found")

    # ------------------------------------------------------------ REST: identity

    async def _get_gateway(self, call: _Call) -> Any:
        return {"url": self.gateway_url.rstrip("/")}

    async def _get_gateway_bot(self, call: _Call) -> Any:
        return {
            "url": self.gateway_url.rstrip("/"),
            "shards": 1,
            "session_start_limit": {
                "total": 1000,
                "remaining": 999,
                "reset_after": 14_400_000,
                "max_concurrency": 1,
            },
        }

    async def _get_me(self, call: _Call) -> Any:
        return {
            **self.bot.as_api(),
            "verified": True,
            "mfa_enabled": False,
            "locale": "en-US",
            "email": None,
            "bio": "",
        }

    async def _get_user(self, call: _Call) -> Any:
        user = self.users.get(call.params["user_id"])
        if user is None:
            raise DiscordError(404, 10013, "Unknown User")
        return user.as_api()

    @property
    def application_flags(self) -> int:
        """The GATEWAY_*_LIMITED flags of an unverified app with privileged intents enabled,
        plus APPLICATION_COMMAND_BADGE."""
        flags = 1 << 23
        if self.privileged_intents & GUILD_PRESENCES:
            flags |= 1 << 13
        if self.privileged_intents & GUILD_MEMBERS:
            flags |= 1 << 15
        if self.privileged_intents & MESSAGE_CONTENT:
            flags |= 1 << 19
        return flags

    async def _get_application(self, call: _Call) -> Any:
        owner = self.users.get(CAROL_ID) or self.bot
        return {
            "id": self.application_id,
            "name": self.bot.username,
            "icon": None,
            "description": "",
            "summary": "",
            "type": None,
            "hook": True,
            "bot_public": False,
            "bot_require_code_grant": False,
            "verify_key": hashlib.sha256(self.application_id.encode()).hexdigest(),
            "owner": owner.as_api(),
            "team": None,
            "flags": self.application_flags,
            "bot": self.bot.as_api(),
            "interactions_endpoint_url": None,
            "role_connections_verification_url": None,
            "redirect_uris": [],
            "rpc_origins": [],
            "tags": [],
            "install_params": {
                "scopes": ["bot", "applications.commands"],
                "permissions": str(BOT_PERMISSIONS),
            },
            "integration_types_config": {"0": {}},
            "approximate_guild_count": len(self.guilds),
            "is_monetized": False,
        }

    # ------------------------------------------------------------ REST: commands

    def _command_scope(self, call: _Call) -> str | None:
        if call.params["application_id"] != self.application_id:
            raise DiscordError(
                403, 20012, "You are not authorized to perform this action on this application"
            )
        guild_id = call.params.get("guild_id")
        if guild_id is not None and guild_id not in self.guilds:
            raise DiscordError(403, 50001, "Missing Access")
        return guild_id

    async def _get_commands(self, call: _Call) -> Any:
        guild_id = self._command_scope(call)
        stored = self.global_commands if guild_id is None else self.guild_commands.get(guild_id)
        return copy.deepcopy(stored or [])

    async def _put_commands(self, call: _Call) -> Any:
        """Bulk overwrite: validated like Discord, ids kept for names that already existed."""
        guild_id = self._command_scope(call)
        commands = call.body
        if not isinstance(commands, list):
            raise invalid_form(
                [((), "LIST_TYPE_CONVERT", "Only iterables may be used in a ListType")]
            )
        problems: list[Problem] = []
        if len(commands) > 100:
            problems.append(((), "BASE_TYPE_MAX_LENGTH", "Must be 100 or fewer in length."))
        seen: set[tuple[str, int]] = set()
        for i, command in enumerate(commands):
            if not isinstance(command, dict):
                problems.append(((i,), "DICT_TYPE_CONVERT", "Only dictionaries may be used."))
                continue
            kind = int(command.get("type", 1))
            problems.extend(_command_problems(command, (i,), chat_input=kind == 1))
            name_key = (str(command.get("name")), kind)
            if name_key in seen:
                problems.append(
                    (
                        (i, "name"),
                        "APPLICATION_COMMANDS_DUPLICATE_NAME",
                        "Application command names must be unique",
                    )
                )
            seen.add(name_key)
        if problems:
            raise invalid_form(problems)
        stored: list[dict[str, Any]] = []
        for command in commands:
            kind = int(command.get("type", 1))
            entry: dict[str, Any] = {
                "id": self._command_id(guild_id, str(command["name"]), kind),
                "application_id": self.application_id,
                "version": self.snowflake(),
                "type": kind,
                "name": command["name"],
                "name_localizations": command.get("name_localizations"),
                "description": command.get("description", ""),
                "description_localizations": command.get("description_localizations"),
                "default_member_permissions": command.get("default_member_permissions"),
                "nsfw": bool(command.get("nsfw", False)),
                "contexts": command.get("contexts"),
                "integration_types": command.get("integration_types", [0]),
            }
            if command.get("options"):
                entry["options"] = copy.deepcopy(command["options"])
            if guild_id is not None:
                entry["guild_id"] = guild_id
            else:
                entry["dm_permission"] = command.get("dm_permission", True)
            stored.append(entry)
        if guild_id is None:
            self.global_commands = stored
        else:
            self.guild_commands[guild_id] = stored
        return copy.deepcopy(stored)

    def _command_id(self, guild_id: str | None, name: str, kind: int) -> str:
        key = (guild_id, name, kind)
        if key not in self._command_ids:
            self._command_ids[key] = self.snowflake()
        return self._command_ids[key]

    def _synced_command(self, name: str, guild_id: str | None) -> dict[str, Any] | None:
        """Discord resolves a guild command before a global one of the same name."""
        candidates = (self.guild_commands.get(guild_id, []) if guild_id else []) + list(
            self.global_commands
        )
        return next((c for c in candidates if c["name"] == name and c["type"] == 1), None)

    # ------------------------------------------------------------ REST: channels

    def _channel(self, channel_id: str) -> Channel:
        channel = self.channels.get(channel_id)
        if channel is None:
            raise unknown_channel()
        if channel.access_error is not None:
            status, message = ACCESS_ERRORS[channel.access_error]
            raise DiscordError(status, channel.access_error, message)
        if channel.parent_id is not None:  # a thread inherits its parent's access
            parent = self.channels.get(channel.parent_id)
            if parent is not None and parent.access_error is not None:
                status, message = ACCESS_ERRORS[parent.access_error]
                raise DiscordError(status, parent.access_error, message)
        return channel

    def _stored_message(self, channel: Channel, message_id: str) -> Message:
        for message in self.messages[channel.id]:
            if message.id == message_id and not message.deleted:
                return message
        raise unknown_message()

    async def _get_channel(self, call: _Call) -> Any:
        return self._channel_payload(self._channel(call.params["channel_id"]), full=True)

    async def _open_dm(self, call: _Call) -> Any:
        body = call.body if isinstance(call.body, dict) else {}
        recipient = str(body.get("recipient_id") or "")
        if not recipient:
            raise invalid_form(
                [(("recipient_id",), "BASE_TYPE_REQUIRED", "This field is required")]
            )
        if recipient not in self.users:
            raise DiscordError(404, 10013, "Unknown User")
        return self._channel_payload(self.dm_channel(recipient), full=True)

    def dm_channel(self, user_id: str) -> Channel:
        """The DM channel between the bot and `user_id` (opening it when needed)."""
        channel_id = self.dm_channels.get(user_id)
        if channel_id is None:
            channel_id = self.snowflake()
            self.dm_channels[user_id] = channel_id
            self.channels[channel_id] = Channel(
                channel_id, None, type=DM, recipient_id=user_id, created_at=self._iso_now()
            )
        return self.channels[channel_id]

    async def _typing(self, call: _Call) -> Any:
        self._channel(call.params["channel_id"])
        return None

    async def _get_history(self, call: _Call) -> Any:
        channel = self._channel(call.params["channel_id"])
        limit = min(max(int(call.query.get("limit", 50)), 1), 100)
        messages = [m for m in self.messages[channel.id] if not m.deleted]
        if "before" in call.query:
            messages = [m for m in messages if int(m.id) < int(call.query["before"])]
        if "after" in call.query:
            messages = [m for m in messages if int(m.id) > int(call.query["after"])]
            messages = messages[:limit]
        else:
            messages = messages[-limit:]
        return [self._message_payload(m) for m in reversed(messages)]

    async def _get_message(self, call: _Call) -> Any:
        channel = self._channel(call.params["channel_id"])
        return self._message_payload(self._stored_message(channel, call.params["message_id"]))

    async def _create_message(self, call: _Call) -> Any:
        channel = self._channel(call.params["channel_id"])
        if channel.type == DM:
            recipient = self.users.get(channel.recipient_id or "")
            if recipient is not None and not recipient.dms_open:
                raise DiscordError(403, 50007, "Cannot send messages to this user")
        body = _require_dict(call.body)
        problems = _message_problems(body)
        reference_id = None
        reference = body.get("message_reference")
        if isinstance(reference, dict) and reference.get("message_id"):
            reference_id = str(reference["message_id"])
            target = self.find_message(reference_id)
            if (target is None or target.deleted) and reference.get("fail_if_not_exists", True):
                problems.append(
                    (
                        ("message_reference",),
                        "REPLIES_UNKNOWN_MESSAGE",
                        "Unknown message",
                    )
                )
        if problems:
            raise invalid_form(problems)
        attachments, files = self._attachments(channel, body, call.files)
        _require_not_empty(body, attachments)
        nonce = body.get("nonce")
        if nonce is not None and body.get("enforce_nonce"):
            for earlier in self.messages[channel.id]:
                if earlier.nonce == str(nonce) and earlier.author_id == self.bot.id:
                    return self._message_payload(earlier)  # Discord's duplicate suppression
        message = self._store_message(
            channel,
            author_id=self.bot.id,
            body=body,
            attachments=attachments,
            files=files,
            reference_id=reference_id,
        )
        await self._dispatch_message("MESSAGE_CREATE", message)
        return self._message_payload(message)

    async def _edit_message(self, call: _Call) -> Any:
        channel = self._channel(call.params["channel_id"])
        message = self._stored_message(channel, call.params["message_id"])
        if message.author_id != self.bot.id:
            raise DiscordError(403, 50005, "Cannot edit a message authored by another user")
        body = _require_dict(call.body)
        problems = _message_problems(body)
        if problems:
            raise invalid_form(problems)
        attachments, files = self._attachments(channel, body, call.files, keep=message)
        self._apply_edit(message, body, attachments, files)
        await self._dispatch_message("MESSAGE_UPDATE", message)
        return self._message_payload(message)

    async def _delete_message(self, call: _Call) -> Any:
        channel = self._channel(call.params["channel_id"])
        message = self._stored_message(channel, call.params["message_id"])
        message.deleted = True
        data: dict[str, Any] = {"id": message.id, "channel_id": channel.id}
        if channel.guild_id:
            data["guild_id"] = channel.guild_id
        await self._dispatch("MESSAGE_DELETE", data, self._message_gate)
        return None

    async def _start_thread(self, call: _Call) -> Any:
        channel = self._channel(call.params["channel_id"])
        message = self._stored_message(channel, call.params["message_id"])
        if channel.type != GUILD_TEXT:
            raise DiscordError(400, 50024, "Cannot execute action on this channel type")
        if message.thread_id is not None:
            raise DiscordError(400, 160004, "A thread has already been created for this message")
        body = _require_dict(call.body)
        name = body.get("name")
        problems: list[Problem] = []
        if not isinstance(name, str) or not name.strip():
            problems.append((("name",), "BASE_TYPE_REQUIRED", "This field is required"))
        elif len(name) > 100:
            problems.append(
                (("name",), "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
            )
        duration = body.get("auto_archive_duration") or 1440
        if duration not in (60, 1440, 4320, 10080):
            problems.append(
                (
                    ("auto_archive_duration",),
                    "BASE_TYPE_CHOICES",
                    "Value must be one of (60, 1440, 4320, 10080).",
                )
            )
        if problems:
            raise invalid_form(problems)
        assert isinstance(name, str)
        thread = Channel(
            message.id,  # a thread started from a message has the message's id
            name,
            type=PUBLIC_THREAD,
            guild_id=channel.guild_id,
            parent_id=channel.id,
            owner_id=self.bot.id,
            auto_archive_duration=int(duration),
            rate_limit_per_user=int(body.get("rate_limit_per_user") or 0),
            created_at=self._iso_now(),
        )
        self.channels[thread.id] = thread
        message.thread_id = thread.id
        message.flags |= FLAG_HAS_THREAD
        payload = self._channel_payload(thread, full=True)

        def gate(session: GatewaySession, data: dict[str, Any]) -> dict[str, Any] | None:
            return data if session.has(GUILDS) else None

        await self._dispatch("THREAD_CREATE", {**payload, "newly_created": True}, gate)
        return Reply(201, payload)

    # ------------------------------------------------------------ REST: reactions

    async def _add_own_reaction(self, call: _Call) -> Any:
        channel = self._channel(call.params["channel_id"])
        message = self._stored_message(channel, call.params["message_id"])
        key, emoji = self._route_emoji(call.params["emoji"])
        users = message.reactions.get(key)
        if users is None:
            if len(message.reactions) >= MAX_REACTIONS:
                raise DiscordError(400, 30010, "Maximum number of reactions reached (20)")
            users = message.reactions[key] = []
        if self.bot.id in users:
            return None
        users.append(self.bot.id)
        data: dict[str, Any] = {
            "user_id": self.bot.id,
            "type": 0,
            "message_id": message.id,
            "message_author_id": message.author_id,
            "emoji": emoji,
            "channel_id": channel.id,
            "burst": False,
            "burst_colors": [],
        }
        if channel.guild_id:
            data["guild_id"] = channel.guild_id
            data["member"] = self._member_payload(self.guilds[channel.guild_id], self.bot.id)
        await self._dispatch("MESSAGE_REACTION_ADD", data, self._reaction_gate)
        return None

    async def _remove_own_reaction(self, call: _Call) -> Any:
        return await self._take_back_reaction(call, self.bot.id)

    async def _remove_reaction(self, call: _Call) -> Any:
        return await self._take_back_reaction(call, call.params["member_id"])

    async def _take_back_reaction(self, call: _Call, user_id: str) -> Any:
        channel = self._channel(call.params["channel_id"])
        message = self._stored_message(channel, call.params["message_id"])
        key, emoji = self._route_emoji(call.params["emoji"])
        users = message.reactions.get(key, [])
        if user_id not in users:
            return None
        users.remove(user_id)
        if not users:
            del message.reactions[key]
        data: dict[str, Any] = {
            "user_id": user_id,
            "type": 0,
            "message_id": message.id,
            "emoji": emoji,
            "channel_id": channel.id,
            "burst": False,
        }
        if channel.guild_id:
            data["guild_id"] = channel.guild_id
        await self._dispatch("MESSAGE_REACTION_REMOVE", data, self._reaction_gate)
        return None

    async def _get_reactions(self, call: _Call) -> Any:
        channel = self._channel(call.params["channel_id"])
        message = self._stored_message(channel, call.params["message_id"])
        key, _ = self._route_emoji(call.params["emoji"])
        limit = min(max(int(call.query.get("limit", 25)), 1), 100)
        users = sorted(message.reactions.get(key, []), key=int)
        if "after" in call.query:
            users = [u for u in users if int(u) > int(call.query["after"])]
        return [self._user(u).as_api() for u in users[:limit]]

    def _route_emoji(self, raw: str) -> tuple[str, dict[str, Any]]:
        """The emoji path segment: unicode ("✅") or custom ("name:id", "a:name:id")."""
        parts = [p for p in raw.strip("<>").split(":") if p]
        if len(parts) >= 2 and parts[-1].isdigit():
            emoji = self._custom_emoji(parts[-1])
            if emoji is None:
                raise DiscordError(400, 10014, "Unknown Emoji")
            return f"{emoji.name}:{emoji.id}", {
                "id": emoji.id,
                "name": emoji.name,
                "animated": emoji.animated,
            }
        if not raw or raw.isascii() or ":" in raw:
            raise DiscordError(400, 10014, "Unknown Emoji")
        return raw, {"id": None, "name": raw}

    def _custom_emoji(self, emoji_id: str) -> Emoji | None:
        for guild in self.guilds.values():
            for emoji in guild.emojis:
                if emoji.id == emoji_id:
                    return emoji
        return None

    def _resolve_emoji(
        self, emoji: str | Mapping[str, Any], guild_id: str | None
    ) -> tuple[str, dict[str, Any]]:
        """For the test helpers: accepts what a test naturally writes."""
        if isinstance(emoji, Mapping):
            if emoji.get("id"):
                known = self._custom_emoji(str(emoji["id"]))
                name = known.name if known else str(emoji.get("name"))
                return f"{name}:{emoji['id']}", {
                    "id": str(emoji["id"]),
                    "name": name,
                    "animated": bool(emoji.get("animated")),
                }
            return str(emoji["name"]), {"id": None, "name": str(emoji["name"])}
        if emoji.isascii() and ":" not in emoji and guild_id is not None:
            for custom in self.guilds[guild_id].emojis:
                if custom.name == emoji:
                    return self._route_emoji(f"{custom.name}:{custom.id}")
        return self._route_emoji(emoji)

    # ------------------------------------------------------------ REST: interactions

    def _interaction_by_token(self, webhook_id: str, token: str) -> Interaction:
        if webhook_id != self.application_id:
            raise unknown_webhook()
        for interaction in self.interactions.values():
            if interaction.token == token:
                if self.now() - interaction.created_at > FOLLOWUP_SECONDS:
                    raise DiscordError(401, 50027, "Invalid Webhook Token")
                return interaction
        raise unknown_webhook()

    async def _interaction_callback(self, call: _Call) -> Any:
        interaction = self.interactions.get(call.params["webhook_id"])
        if interaction is None or interaction.token != call.params["webhook_token"]:
            raise unknown_interaction()
        if interaction.callbacks:
            error = DiscordError(400, 40060, "Interaction has already been acknowledged.")
            interaction.rejected.append((error.status, error.code))
            raise error
        if self.now() - interaction.created_at > INTERACTION_ACK_SECONDS:
            interaction.rejected.append((404, 10062))
            raise unknown_interaction()
        body = _require_dict(call.body)
        kind = body.get("type")
        data = body.get("data") if isinstance(body.get("data"), dict) else {}
        assert isinstance(data, dict)
        allowed = {4: {8}, 2: {4, 5, 9}}.get(interaction.type, {4, 5, 6, 7, 9})
        if kind not in allowed:
            raise invalid_form(
                [(("type",), "INTERACTION_CALLBACK_TYPE_INVALID", "Invalid callback type")]
            )
        resource: dict[str, Any] = {"type": kind}
        if kind == 8:
            choices = data.get("choices", [])
            if not isinstance(choices, list) or len(choices) > 25:
                raise invalid_form(
                    [
                        (
                            ("data", "choices"),
                            "BASE_TYPE_MAX_LENGTH",
                            "Must be 25 or fewer in length.",
                        )
                    ]
                )
            interaction.choices = choices
        elif kind in (4, 5):
            problems = _message_problems(data, prefix=("data",))
            if problems:
                raise invalid_form(problems)
            channel = self.channels[interaction.channel_id]
            attachments, files = self._attachments(channel, data, call.files)
            if kind == 4:
                _require_not_empty(data, attachments)
            flags = int(data.get("flags") or 0)
            flags = flags & FLAG_EPHEMERAL | (FLAG_LOADING if kind == 5 else 0)
            content = {**data, "flags": flags} if kind == 4 else {"flags": flags}
            message = self._store_message(
                channel,
                author_id=self.bot.id,
                body=content,
                attachments=attachments if kind == 4 else [],
                files=files if kind == 4 else {},
                interaction=interaction,
                message_type=TYPE_CHAT_INPUT_COMMAND,
            )
            interaction.original = message
            if not message.ephemeral:
                await self._dispatch_message("MESSAGE_CREATE", message)
            if kind == 4:
                resource["message"] = self._message_payload(message)
        interaction.callbacks.append(body)
        if call.query.get("with_response") not in ("1", "true", "True"):
            return None
        original = interaction.original
        answer: dict[str, Any] = {
            "interaction": {"id": interaction.id, "type": interaction.type},
            "resource": resource,
        }
        if original is not None:
            answer["interaction"].update(
                response_message_id=original.id,
                response_message_loading=original.loading,
                response_message_ephemeral=original.ephemeral,
            )
        return answer

    async def _followup(self, call: _Call) -> Any:
        interaction = self._interaction_by_token(
            call.params["webhook_id"], call.params["webhook_token"]
        )
        if not interaction.callbacks:
            raise unknown_webhook()
        body = _require_dict(call.body)
        problems = _message_problems(body)
        if problems:
            raise invalid_form(problems)
        channel = self.channels[interaction.channel_id]
        attachments, files = self._attachments(channel, body, call.files)
        _require_not_empty(body, attachments)
        original = interaction.original
        if original is not None and original.loading and not original.deleted:
            # Discord: the first follow-up after a defer fills in the "thinking" message,
            # keeping the ephemerality chosen at defer time.
            self._apply_edit(original, body, attachments, files)
            original.flags &= ~FLAG_LOADING
            message = original
            if not message.ephemeral:
                await self._dispatch_message("MESSAGE_UPDATE", message)
        else:
            flags = int(body.get("flags") or 0)
            message = self._store_message(
                channel,
                author_id=self.bot.id,
                body={**body, "flags": flags},
                attachments=attachments,
                files=files,
                interaction=interaction,
            )
            if not message.ephemeral:
                await self._dispatch_message("MESSAGE_CREATE", message)
        interaction.followups.append(message)
        if call.query.get("wait") in ("0", "false", "False"):
            return None
        return self._message_payload(message)

    def _webhook_message(self, call: _Call) -> tuple[Interaction, Message]:
        interaction = self._interaction_by_token(
            call.params["webhook_id"], call.params["webhook_token"]
        )
        message_id = call.params["message_id"]
        if message_id == "@original":
            if interaction.original is None or interaction.original.deleted:
                raise unknown_message()
            return interaction, interaction.original
        for message in interaction.followups:
            if message.id == message_id and not message.deleted:
                return interaction, message
        raise unknown_message()

    async def _get_webhook_message(self, call: _Call) -> Any:
        return self._message_payload(self._webhook_message(call)[1])

    async def _edit_webhook_message(self, call: _Call) -> Any:
        _, message = self._webhook_message(call)
        body = _require_dict(call.body)
        problems = _message_problems(body)
        if problems:
            raise invalid_form(problems)
        channel = self.channels[message.channel_id]
        attachments, files = self._attachments(channel, body, call.files, keep=message)
        self._apply_edit(message, body, attachments, files)
        message.flags &= ~FLAG_LOADING
        if not message.ephemeral:
            await self._dispatch_message("MESSAGE_UPDATE", message)
        return self._message_payload(message)

    async def _delete_webhook_message(self, call: _Call) -> Any:
        _, message = self._webhook_message(call)
        message.deleted = True
        return None

    # ------------------------------------------------------------ messages

    def _attachments(
        self,
        channel: Channel,
        body: dict[str, Any],
        uploads: list[tuple[str, str, bytes]],
        *,
        keep: Message | None = None,
    ) -> tuple[list[dict[str, Any]], dict[str, bytes]]:
        """Attachment objects for `files[n]` parts (matched to `attachments[].id == n`), and
        for an edit the existing attachments `attachments` still lists by id."""
        if len(uploads) > MAX_FILES:
            raise invalid_form(
                [(("files",), "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_FILES} or fewer in length.")]
            )
        if sum(len(content) for _, _, content in uploads) > MAX_UPLOAD_BYTES:
            raise DiscordError(413, 40005, "Request entity too large")
        declared = {
            str(a.get("id")): a for a in body.get("attachments") or [] if isinstance(a, dict)
        }
        attachments: list[dict[str, Any]] = []
        files: dict[str, bytes] = {}
        if keep is not None:
            if "attachments" not in body:
                attachments, files = list(keep.attachments), dict(keep.files)
            else:
                for old in keep.attachments:
                    if old["id"] in declared:
                        attachments.append(old)
                        files[old["filename"]] = keep.files.get(old["filename"], b"")
        for index, (field_name, filename, content) in enumerate(uploads):
            number = field_name.removeprefix("files[").removesuffix("]")
            meta = declared.get(number, declared.get(str(index), {}))
            name = str(meta.get("filename") or filename)
            attachment_id = self.snowflake()
            url = f"{self.base_url}/attachments/{channel.id}/{attachment_id}/{name}"
            attachment: dict[str, Any] = {
                "id": attachment_id,
                "filename": name,
                "size": len(content),
                "url": url,
                "proxy_url": url,
                "content_type": mimetypes.guess_type(name)[0] or "application/octet-stream",
            }
            if meta.get("description"):
                attachment["description"] = meta["description"]
            attachments.append(attachment)
            files[name] = content
        return attachments, files

    def _store_message(
        self,
        channel: Channel,
        *,
        author_id: str,
        body: dict[str, Any],
        attachments: list[dict[str, Any]] | None = None,
        files: dict[str, bytes] | None = None,
        reference_id: str | None = None,
        interaction: Interaction | None = None,
        message_type: int | None = None,
    ) -> Message:
        content = str(body.get("content") or "")
        allowed = body.get("allowed_mentions")
        allowed_mentions = allowed if isinstance(allowed, dict) else None
        reply_author = None
        if reference_id is not None:
            target = self.find_message(reference_id)
            reply_author = target.author_id if target is not None else None
        is_bot = author_id == self.bot.id
        message = Message(
            id=self.snowflake(),
            channel_id=channel.id,
            guild_id=channel.guild_id,
            author_id=author_id,
            content=content,
            timestamp=self._iso_now(),
            type=message_type
            if message_type is not None
            else (TYPE_REPLY if reference_id else TYPE_DEFAULT),
            embeds=_linked_embeds(body.get("embeds"), attachments or []),
            attachments=list(attachments or []),
            files=dict(files or {}),
            components=copy.deepcopy(list(body.get("components") or [])),
            flags=int(body.get("flags") or 0),
            tts=bool(body.get("tts", False)),
            nonce=None if body.get("nonce") is None else str(body["nonce"]),
            allowed_mentions=copy.deepcopy(allowed_mentions),
            pings=self._pings(
                content,
                allowed_mentions if is_bot else None,
                channel.guild_id,
                reply_author=reply_author,
            ),
            reference_id=reference_id,
            webhook_id=self.application_id if interaction is not None else None,
            interaction_id=interaction.id if interaction is not None else None,
        )
        if message.ephemeral:
            message.ephemeral_to = interaction.user_id if interaction is not None else None
            self.ephemerals.append(message)
            return message
        self.messages[channel.id].append(message)
        channel.last_message_id = message.id
        if channel.is_thread:
            channel.message_count += 1
            channel.total_message_sent += 1
        return message

    def _apply_edit(
        self,
        message: Message,
        body: dict[str, Any],
        attachments: list[dict[str, Any]],
        files: dict[str, bytes],
    ) -> None:
        message.edits.append(
            {
                "content": message.content,
                "embeds": message.embeds,
                "attachments": message.attachments,
                "edited_timestamp": message.edited_timestamp,
            }
        )
        if "content" in body:
            message.content = str(body.get("content") or "")
        if "embeds" in body:
            message.embeds = copy.deepcopy(list(body.get("embeds") or []))
        if "components" in body:
            message.components = copy.deepcopy(list(body.get("components") or []))
        if "flags" in body and body["flags"] is not None:
            keep = message.flags & (FLAG_EPHEMERAL | FLAG_HAS_THREAD)
            message.flags = keep | (int(body["flags"]) & ~(FLAG_EPHEMERAL | FLAG_LOADING))
        message.attachments, message.files = attachments, files
        allowed = body.get("allowed_mentions")
        if isinstance(allowed, dict):
            message.allowed_mentions = copy.deepcopy(allowed)
        message.pings = self._pings(message.content, message.allowed_mentions, message.guild_id)
        message.edited_timestamp = self._iso_now()

    def _pings(
        self,
        content: str,
        allowed_mentions: dict[str, Any] | None,
        guild_id: str | None,
        *,
        reply_author: str | None = None,
    ) -> Pings:
        """What Discord notifies. Without `allowed_mentions` everything written is parsed
        (users, roles, @everyone/@here); with it, only `parse` types and listed ids."""
        users_written = list(dict.fromkeys(re.findall(r"<@!?(\d+)>", content)))
        roles_written = list(dict.fromkeys(re.findall(r"<@&(\d+)>", content)))
        everyone_written = "@everyone" in content or "@here" in content
        if allowed_mentions is None:
            parse = {"users", "roles", "everyone"}
            allowed_users: list[str] = []
            allowed_roles: list[str] = []
            replied_user = True
        else:
            parse = set(allowed_mentions.get("parse") or [])
            allowed_users = [str(u) for u in allowed_mentions.get("users") or []]
            allowed_roles = [str(r) for r in allowed_mentions.get("roles") or []]
            replied_user = bool(allowed_mentions.get("replied_user", False))
        guild = self.guilds.get(guild_id or "")
        pinged_users = [u for u in users_written if "users" in parse or u in allowed_users]
        pinged_roles = [
            r
            for r in roles_written
            if ("roles" in parse or r in allowed_roles)
            and guild is not None
            and guild.role(r) is not None
        ]
        if reply_author and replied_user and reply_author not in pinged_users:
            pinged_users.append(reply_author)
        return Pings(pinged_users, pinged_roles, everyone_written and "everyone" in parse)

    # ------------------------------------------------------------ payloads

    def _user(self, user_id: str) -> User:
        """A known user; an unknown id becomes a placeholder person (the fake only knows
        the people tests told it about)."""
        if user_id not in self.users:
            self.users[user_id] = User(user_id, f"user{user_id[-4:]}")
        return self.users[user_id]

    def _member_payload(
        self,
        guild: Guild,
        user_id: str,
        *,
        roles: Sequence[str] | None = None,
        with_user: bool = True,
    ) -> dict[str, Any]:
        member = guild.members.get(user_id) or Member(user_id)
        data: dict[str, Any] = {
            "roles": list(member.roles if roles is None else roles),
            "nick": member.nick,
            "avatar": None,
            "banner": None,
            "premium_since": None,
            "joined_at": member.joined_at,
            "pending": False,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "communication_disabled_until": None,
        }
        if with_user:
            data["user"] = self._user(user_id).as_api()
        return data

    def _permissions(
        self, guild_id: str | None, user_id: str, *, roles: Sequence[str] | None = None
    ) -> int:
        if guild_id is None:
            return BOT_PERMISSIONS
        guild = self.guilds[guild_id]
        if guild.owner_id == user_id:
            return (1 << 53) - 1
        member = guild.members.get(user_id) or Member(user_id)
        everyone = guild.role(guild.id)
        value = everyone.permissions if everyone else 0
        for role_id in member.roles if roles is None else roles:
            role = guild.role(role_id)
            value |= role.permissions if role else 0
        return (1 << 53) - 1 if value & ADMINISTRATOR else value

    def _channel_payload(self, channel: Channel, *, full: bool = True) -> dict[str, Any]:
        if channel.type == DM:
            recipient = self._user(channel.recipient_id or "")
            return {
                "id": channel.id,
                "type": DM,
                "last_message_id": channel.last_message_id,
                "flags": 0,
                "recipients": [recipient.as_api()],
            }
        data: dict[str, Any] = {
            "id": channel.id,
            "type": channel.type,
            "name": channel.name,
            "parent_id": channel.parent_id,
            "last_message_id": channel.last_message_id,
            "rate_limit_per_user": channel.rate_limit_per_user,
            "flags": 0,
            "nsfw": False,
        }
        if full:
            data["guild_id"] = channel.guild_id
        if channel.is_thread:
            data.update(
                owner_id=channel.owner_id,
                message_count=channel.message_count,
                member_count=1,
                total_message_sent=channel.total_message_sent,
                thread_metadata={
                    "archived": channel.archived,
                    "auto_archive_duration": channel.auto_archive_duration,
                    "archive_timestamp": channel.created_at,
                    "locked": channel.locked,
                    "create_timestamp": channel.created_at,
                },
                member={
                    "id": channel.id,
                    "user_id": self.bot.id,
                    "join_timestamp": channel.created_at,
                    "flags": 0,
                },
                guild_id=channel.guild_id,
            )
        else:
            data.update(
                position=channel.position,
                permission_overwrites=[],
                topic=channel.topic,
                default_auto_archive_duration=1440,
                default_thread_rate_limit_per_user=0,
            )
        return data

    def _message_payload(self, message: Message, *, gateway: bool = False) -> dict[str, Any]:
        """The message object: REST shape, or with `gateway` the MESSAGE_CREATE shape
        (adds `guild_id`, the author's `member` and each mention's `member`)."""
        guild = self.guilds.get(message.guild_id or "")
        mentions = []
        for user_id in message.pings.users:
            mention = self._user(user_id).as_api()
            if gateway and guild is not None and user_id in guild.members:
                mention["member"] = self._member_payload(guild, user_id, with_user=False)
            mentions.append(mention)
        data: dict[str, Any] = {
            "type": message.type,
            "content": message.content,
            "mentions": mentions,
            "mention_roles": list(message.pings.roles),
            "attachments": copy.deepcopy(message.attachments),
            "embeds": copy.deepcopy(message.embeds),
            "timestamp": message.timestamp,
            "edited_timestamp": message.edited_timestamp,
            "flags": message.flags,
            "components": copy.deepcopy(message.components),
            "id": message.id,
            "channel_id": message.channel_id,
            "author": self._user(message.author_id).as_api(),
            "pinned": False,
            "mention_everyone": message.pings.everyone,
            "tts": message.tts,
        }
        if message.nonce is not None:
            data["nonce"] = message.nonce
        if message.webhook_id is not None:
            data["webhook_id"] = message.webhook_id
            data["application_id"] = self.application_id
        if message.reactions:
            data["reactions"] = [self._reaction_payload(k, u) for k, u in message.reactions.items()]
        if message.reference_id is not None:
            target = self.find_message(message.reference_id)
            data["message_reference"] = {
                "type": 0,
                "message_id": message.reference_id,
                "channel_id": target.channel_id if target else message.channel_id,
            }
            if message.guild_id:
                data["message_reference"]["guild_id"] = message.guild_id
            data["referenced_message"] = (
                self._message_payload(target) if target and not target.deleted else None
            )
        if message.thread_id is not None and message.thread_id in self.channels:
            data["thread"] = self._channel_payload(self.channels[message.thread_id])
        if message.interaction_id is not None:
            interaction = self.interactions[message.interaction_id]
            user = self._user(interaction.user_id).as_api()
            data["interaction_metadata"] = {
                "id": interaction.id,
                "type": interaction.type,
                "user": user,
                "authorizing_integration_owners": interaction.payload.get(
                    "authorizing_integration_owners", {}
                ),
            }
            data["interaction"] = {
                "id": interaction.id,
                "type": interaction.type,
                "name": interaction.payload["data"]["name"],
                "user": user,
            }
        channel = self.channels.get(message.channel_id)
        if channel is not None and channel.is_thread:
            data["position"] = (
                self.messages[channel.id].index(message) if not message.ephemeral else 0
            )
        if gateway and guild is not None:
            data["guild_id"] = guild.id
            if message.webhook_id is None and message.author_id in guild.members:
                data["member"] = self._member_payload(guild, message.author_id, with_user=False)
        return data

    def _reaction_payload(self, key: str, users: list[str]) -> dict[str, Any]:
        name, _, emoji_id = key.partition(":")
        custom = self._custom_emoji(emoji_id) if emoji_id else None
        emoji: dict[str, Any] = {"id": emoji_id or None, "name": name}
        if custom is not None:
            emoji["animated"] = custom.animated
        return {
            "emoji": emoji,
            "count": len(users),
            "count_details": {"burst": 0, "normal": len(users)},
            "burst_colors": [],
            "me": self.bot.id in users,
            "me_burst": False,
            "burst_me": False,
            "burst_count": 0,
        }

    def _option_values(
        self,
        schema: list[dict[str, Any]],
        subcommand: str | None,
        options: Mapping[str, Any],
        focused: str | None,
        guild_id: str | None,
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """`data.options` as Discord nests them: group > subcommand > values."""
        resolved: dict[str, Any] = {}
        path = subcommand.split() if subcommand else []
        level = schema
        kinds: list[int] = []
        for name in path:
            spec = next((o for o in level if o.get("name") == name), None)
            kinds.append(int(spec["type"]) if spec else (2 if len(kinds) + 1 < len(path) else 1))
            level = list(spec.get("options", [])) if spec else []
        values: list[dict[str, Any]] = []
        for name, value in options.items():
            spec = next((o for o in level if o.get("name") == name), None)
            kind = int(spec["type"]) if spec else _option_type(value)
            entry: dict[str, Any] = {"name": name, "type": kind}
            if name == focused:
                entry["value"] = str(value)
                entry["focused"] = True
            else:
                entry["value"] = self._resolve_option(kind, value, resolved, guild_id)
            values.append(entry)
        for name, kind in reversed(list(zip(path, kinds, strict=True))):
            values = [{"name": name, "type": kind, "options": values}]
        return values, resolved

    def _resolve_option(
        self, kind: int, value: Any, resolved: dict[str, Any], guild_id: str | None
    ) -> Any:
        """Users (6), channels (7), roles (8) and mentionables (9) travel as ids, with the
        objects in `data.resolved`."""
        if kind not in (6, 7, 8, 9):
            return value
        snowflake = str(value)
        guild = self.guilds.get(guild_id or "")
        role = guild.role(snowflake) if guild is not None else None
        if kind == 8 or (kind == 9 and role is not None):
            if role is not None:
                resolved.setdefault("roles", {})[snowflake] = role.as_api()
        elif kind == 7:
            channel = self.channels.get(snowflake)
            if channel is not None:
                resolved.setdefault("channels", {})[snowflake] = {
                    **self._channel_payload(channel),
                    "permissions": str(BOT_PERMISSIONS),
                }
        else:
            resolved.setdefault("users", {})[snowflake] = self._user(snowflake).as_api()
            if guild is not None and snowflake in guild.members:
                member = self._member_payload(guild, snowflake, with_user=False)
                resolved.setdefault("members", {})[snowflake] = member
        return snowflake

    # ------------------------------------------------------------ gateway: dispatch

    async def _dispatch(
        self,
        name: str,
        data: dict[str, Any],
        gate: Gate = _ungated,
        *,
        single: bool = False,
    ) -> GatewayEvent:
        event = GatewayEvent(name, data, gate=gate, single=single)
        async with self._dispatch_lock:
            sessions = list(self.sessions.values())
            if single:
                live = [s for s in sessions if s.connection is not None and s.connection.open]
                sessions = live[-1:] or sessions[-1:]
            for session in sessions:
                payload = gate(session, copy.deepcopy(data))
                if payload is None:
                    continue
                await self._send_dispatch(session, name, payload)
                event.sent_to.append(session.id)
        self.events.append(event)
        return event

    async def _send_dispatch(
        self, session: GatewaySession, name: str, payload: dict[str, Any] | None
    ) -> None:
        session.seq += 1
        frame = {"op": 0, "t": name, "s": session.seq, "d": payload}
        session.history.append(frame)
        if session.connection is not None:
            await session.connection.send(frame)

    async def _dispatch_message(
        self, name: str, message: Message, *, member_roles: Sequence[str] | None = None
    ) -> GatewayEvent:
        data = self._message_payload(message, gateway=True)
        if member_roles is not None and "member" in data:
            data["member"]["roles"] = list(member_roles)
        return await self._dispatch(name, data, self._message_gate)

    def _message_gate(self, session: GatewaySession, data: dict[str, Any]) -> dict[str, Any] | None:
        """GUILD_MESSAGES / DIRECT_MESSAGES decide delivery; without MESSAGE_CONTENT the
        content, embeds, attachments and components are blanked, except for the bot's own
        messages, DMs, and messages that mention the bot."""
        in_guild = "guild_id" in data
        if not session.has(GUILD_MESSAGES if in_guild else DIRECT_MESSAGES):
            return None
        if session.has(MESSAGE_CONTENT) or not in_guild or "content" not in data:
            return data
        author = data.get("author", {}).get("id")
        mentioned = any(m.get("id") == self.bot.id for m in data.get("mentions", []))
        if author == self.bot.id or mentioned:
            return data
        data.update(content="", embeds=[], attachments=[], components=[])
        data.pop("poll", None)
        return data

    def _reaction_gate(
        self, session: GatewaySession, data: dict[str, Any]
    ) -> dict[str, Any] | None:
        needed = GUILD_MESSAGE_REACTIONS if "guild_id" in data else DIRECT_MESSAGE_REACTIONS
        return data if session.has(needed) else None

    # ------------------------------------------------------------ gateway: connections

    async def _handle_gateway(self, request: web.Request) -> web.StreamResponse:
        await self._gateway_open.wait()
        ws = web.WebSocketResponse(autoping=True, max_msg_size=16 * 1024 * 1024)
        await ws.prepare(request)
        query = dict(request.query)
        connection = GatewayConnection(
            ws=ws,
            path=request.path,
            query=query,
            compress=self.compress and query.get("compress") in COMPRESSIONS,
        )
        self.connections.append(connection)
        if query.get("v", "10") != "10":
            await connection.close(4012, "Invalid API version")
            return ws
        if query.get("encoding", "json") != "json":
            await connection.close(4002, "Error while decoding payload.")
            return ws
        await connection.send(
            {
                "op": 10,
                "d": {
                    "heartbeat_interval": self.heartbeat_interval_ms,
                    "_trace": ['["gateway-prd-fake-1",{"micros":0.0}]'],
                },
                "s": None,
                "t": None,
            }
        )
        try:
            async for frame in ws:
                if frame.type != WSMsgType.TEXT:
                    if frame.type == WSMsgType.BINARY:
                        await connection.close(4002, "Error while decoding payload.")
                    break
                try:
                    payload = json.loads(frame.data)
                except ValueError:
                    await connection.close(4002, "Error while decoding payload.")
                    break
                connection.received.append(_without_token(payload))
                await self._on_gateway_payload(connection, payload)
        finally:
            if not connection.closed_by_server:
                connection.close_code = ws.close_code
            session = connection.session
            if session is not None and session.connection is connection:
                session.connection = None
                if not connection.closed_by_server and ws.close_code in (1000, 1001):
                    # A client closing with 1000/1001 ends its session (it cannot resume).
                    self.sessions.pop(session.id, None)
        return ws

    async def _on_gateway_payload(
        self, connection: GatewayConnection, payload: dict[str, Any]
    ) -> None:
        op = payload.get("op")
        data = payload.get("d")
        if op == 1:
            connection.heartbeats += 1
            await connection.send({"op": 11, "d": None, "s": None, "t": None})
        elif op == 2:
            await self._identify(connection, data if isinstance(data, dict) else {})
        elif op == 6:
            await self._resume(connection, data if isinstance(data, dict) else {})
        elif connection.session is None:
            await connection.close(4003, "Not authenticated.")
        elif op == 8:
            await self._request_members(connection.session, data if isinstance(data, dict) else {})
        elif op in (3, 4):
            pass  # presence and voice state updates are accepted and recorded
        else:
            await connection.close(4001, "Unknown opcode.")

    async def _identify(self, connection: GatewayConnection, data: dict[str, Any]) -> None:
        if connection.session is not None:
            await connection.close(4005, "Already authenticated.")
            return
        if str(data.get("token", "")).removeprefix("Bot ") != self.token:
            await connection.close(4004, "Authentication failed.")
            return
        intents = data.get("intents")
        if not isinstance(intents, int) or intents < 0 or intents & ~ALL_INTENTS:
            await connection.close(4013, "Invalid intent(s).")
            return
        if intents & PRIVILEGED_INTENTS & ~self.privileged_intents:
            await connection.close(4014, "Disallowed intent(s).")
            return
        session = GatewaySession(
            id=secrets.token_hex(16),
            intents=intents,
            identify=_without_token({"d": data})["d"],
            connection=connection,
        )
        self.identifies.append(session.identify)
        async with self._dispatch_lock:
            self.sessions[session.id] = session
            connection.session = session
            await self._send_dispatch(session, "READY", self._ready_payload(session))
            if session.has(GUILDS):
                for guild in self.guilds.values():
                    await self._send_dispatch(
                        session, "GUILD_CREATE", self._guild_create_payload(guild, session)
                    )

    async def _resume(self, connection: GatewayConnection, data: dict[str, Any]) -> None:
        if str(data.get("token", "")).removeprefix("Bot ") != self.token:
            await connection.close(4004, "Authentication failed.")
            return
        session = self.sessions.get(str(data.get("session_id")))
        seq = data.get("seq")
        if session is None or not isinstance(seq, int) or seq > session.seq:
            await connection.send({"op": 9, "d": False, "s": None, "t": None})
            return
        async with self._dispatch_lock:
            old = session.connection
            session.connection = connection
            connection.session = session
            session.resumes += 1
            if old is not None and old is not connection and old.open:
                await old.close(4000, "session resumed elsewhere")
            for frame in list(session.history):
                if frame["s"] > seq:
                    await connection.send(frame)
            await self._send_dispatch(session, "RESUMED", {"_trace": ["gateway-prd-fake-1"]})

    async def _request_members(self, session: GatewaySession, data: dict[str, Any]) -> None:
        """Op 8 -> one GUILD_MEMBERS_CHUNK (discord.py chunks at start with GUILD_MEMBERS)."""
        guild = self.guilds.get(str(data.get("guild_id")))
        if guild is None:
            return
        query = str(data.get("query") or "").lower()
        wanted = {str(u) for u in data.get("user_ids") or []}
        members = [
            self._member_payload(guild, user_id)
            for user_id in guild.members
            if (not wanted or user_id in wanted)
            and self._user(user_id).username.lower().startswith(query)
        ]
        limit = int(data.get("limit") or 0)
        if limit:
            members = members[:limit]
        chunk: dict[str, Any] = {
            "guild_id": guild.id,
            "members": members,
            "chunk_index": 0,
            "chunk_count": 1,
        }
        if wanted:
            chunk["not_found"] = sorted(wanted - set(guild.members))
        if data.get("nonce"):
            chunk["nonce"] = data["nonce"]
        async with self._dispatch_lock:
            await self._send_dispatch(session, "GUILD_MEMBERS_CHUNK", chunk)

    def _ready_payload(self, session: GatewaySession) -> dict[str, Any]:
        shard = session.identify.get("shard") or [0, 1]
        return {
            "v": 10,
            "user": {**self.bot.as_api(), "verified": True, "mfa_enabled": False},
            "user_settings": {},
            "guilds": [{"id": g, "unavailable": True} for g in self.guilds],
            "guild_join_requests": [],
            "relationships": [],
            "private_channels": [],
            "presences": [],
            "session_id": session.id,
            "session_type": "normal",
            "resume_gateway_url": self.resume_gateway_url,
            "shard": shard,
            "application": {"id": self.application_id, "flags": self.application_flags},
            "auth": {},
            "geo_ordered_rtc_regions": ["fake"],
            "_trace": ['["gateway-prd-fake-1",{"micros":0.0}]'],
        }

    def _guild_create_payload(self, guild: Guild, session: GatewaySession) -> dict[str, Any]:
        """Without GUILD_PRESENCES, `members` holds only the bot (as on Discord)."""
        if session.has(GUILD_PRESENCES):
            member_ids = list(guild.members)
        else:
            member_ids = [self.bot.id] if self.bot.id in guild.members else []
        channels = [c for c in guild.channels if not c.is_thread]
        threads = [c for c in self.channels.values() if c.is_thread and c.guild_id == guild.id]
        return {
            "id": guild.id,
            "name": guild.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": guild.owner_id,
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 1,
            "default_message_notifications": 1,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "premium_progress_bar_enabled": False,
            "preferred_locale": "en-US",
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "safety_alerts_channel_id": None,
            "vanity_url_code": None,
            "application_id": None,
            "max_members": 25_000_000,
            "max_video_channel_users": 25,
            "max_stage_video_channel_users": 50,
            "features": [],
            "roles": [r.as_api() for r in guild.roles],
            "emojis": [e.as_api() for e in guild.emojis],
            "stickers": [],
            "joined_at": guild.members[self.bot.id].joined_at
            if self.bot.id in guild.members
            else "2024-01-02T09:00:00.000000+00:00",
            "large": False,
            "unavailable": False,
            "lazy": True,
            "member_count": len(guild.members),
            "voice_states": [],
            "members": [self._member_payload(guild, user_id) for user_id in member_ids],
            "channels": [self._channel_payload(c, full=False) for c in channels],
            "threads": [self._channel_payload(c) for c in threads],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "embedded_activities": [],
            "activity_instances": [],
            "incidents_data": None,
        }


# ---------------------------------------------------------------- request helpers


async def _read_body(request: web.Request) -> tuple[Any, list[tuple[str, str, bytes]]]:
    """JSON, or multipart with `payload_json` and `files[n]` parts, as discord.py sends."""
    if not request.can_read_body:
        return None, []
    if request.content_type == "application/json":
        text = await request.text()
        if not text:
            return None, []
        try:
            return json.loads(text), []
        except ValueError:
            raise DiscordError(400, 50109, "The request body contains invalid JSON.") from None
    if request.content_type.startswith("multipart/"):
        form = await request.post()
        body: Any = {}
        files: list[tuple[str, str, bytes]] = []
        for name, value in form.items():
            if isinstance(value, web.FileField):
                files.append((name, value.filename, value.file.read()))
            elif name == "payload_json":
                try:
                    body = json.loads(str(value))
                except ValueError:
                    raise DiscordError(
                        400, 50109, "The request body contains invalid JSON."
                    ) from None
        return body, files
    await request.read()
    return None, []


def _linked_embeds(embeds: Any, attachments: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The embeds as Discord stores them: an image or thumbnail `attachment://NAME` points at
    the message's attachment of that name (its CDN URL, as Discord answers)."""
    stored = copy.deepcopy(list(embeds or []))
    urls = {a["filename"]: a["url"] for a in attachments}
    for embed in stored:
        for key in ("image", "thumbnail"):
            media = embed.get(key) if isinstance(embed, dict) else None
            url = str(media.get("url") or "") if isinstance(media, dict) else ""
            if url.startswith("attachment://") and url.removeprefix("attachment://") in urls:
                media["url"] = media["proxy_url"] = urls[url.removeprefix("attachment://")]
    return stored


def _require_dict(body: Any) -> dict[str, Any]:
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise invalid_form(
            [((), "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")]
        )
    return body


def _require_not_empty(body: dict[str, Any], attachments: list[dict[str, Any]]) -> None:
    if not (
        body.get("content")
        or body.get("embeds")
        or attachments
        or body.get("components")
        or body.get("sticker_ids")
        or body.get("poll")
    ):
        raise DiscordError(400, 50006, "Cannot send an empty message")


def _message_problems(body: dict[str, Any], prefix: tuple[str | int, ...] = ()) -> list[Problem]:
    """Discord's limits on a message body: content 2,000; at most 10 embeds, a description
    of 4,096, a title of 256, 25 fields, 6,000 characters of embed text in all;
    allowed_mentions well formed."""
    problems: list[Problem] = []
    content = body.get("content")
    if content is not None and not isinstance(content, str):
        problems.append(((*prefix, "content"), "BASE_TYPE_STRING", "Must be a string."))
    elif isinstance(content, str) and len(content) > MAX_CONTENT:
        problems.append(
            (
                (*prefix, "content"),
                "BASE_TYPE_MAX_LENGTH",
                f"Must be {MAX_CONTENT} or fewer in length.",
            )
        )
    embeds = body.get("embeds")
    if embeds is not None:
        if not isinstance(embeds, list):
            problems.append(
                (
                    (*prefix, "embeds"),
                    "LIST_TYPE_CONVERT",
                    "Only iterables may be used in a ListType",
                )
            )
        elif len(embeds) > MAX_EMBEDS:
            problems.append(
                (
                    (*prefix, "embeds"),
                    "BASE_TYPE_MAX_LENGTH",
                    f"Must be {MAX_EMBEDS} or fewer in length.",
                )
            )
        else:
            total = 0
            for i, embed in enumerate(embeds):
                embed_problems, size = _embed_problems(embed, (*prefix, "embeds", i))
                problems.extend(embed_problems)
                total += size
            if total > MAX_EMBED_TOTAL:
                problems.append(
                    (
                        (*prefix, "embeds"),
                        "MAX_EMBED_SIZE_EXCEEDED",
                        f"Embed size exceeds maximum size of {MAX_EMBED_TOTAL}",
                    )
                )
    problems.extend(_allowed_mentions_problems(body.get("allowed_mentions"), prefix))
    nonce = body.get("nonce")
    if nonce is not None and len(str(nonce)) > 25:
        problems.append(
            ((*prefix, "nonce"), "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
        )
    return problems


def _embed_problems(embed: Any, path: tuple[str | int, ...]) -> tuple[list[Problem], int]:
    if not isinstance(embed, dict):
        return [(path, "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")], 0
    problems: list[Problem] = []
    size = 0

    def text(value: Any, where: tuple[str | int, ...], limit: int) -> None:
        nonlocal size
        if value is None:
            return
        length = len(str(value))
        size += length
        if length > limit:
            problems.append(
                (path + where, "BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length.")
            )

    for key, limit in EMBED_FIELD_LIMITS.items():
        text(embed.get(key), (key,), limit)
    footer = embed.get("footer")
    if isinstance(footer, dict):
        text(footer.get("text"), ("footer", "text"), 2048)
    author = embed.get("author")
    if isinstance(author, dict):
        text(author.get("name"), ("author", "name"), 256)
    fields = embed.get("fields") or []
    if len(fields) > 25:
        problems.append(
            ((*path, "fields"), "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
        )
    for j, item in enumerate(fields):
        if not isinstance(item, dict):
            continue
        for key, limit in (("name", 256), ("value", 1024)):
            if not item.get(key):
                problems.append(
                    ((*path, "fields", j, key), "BASE_TYPE_REQUIRED", "This field is required")
                )
            text(item.get(key), ("fields", j, key), limit)
    return problems, size


def _allowed_mentions_problems(value: Any, prefix: tuple[str | int, ...]) -> list[Problem]:
    if value is None:
        return []
    path = (*prefix, "allowed_mentions")
    if not isinstance(value, dict):
        return [(path, "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")]
    problems: list[Problem] = []
    parse = value.get("parse") or []
    for i, kind in enumerate(parse):
        if kind not in ("users", "roles", "everyone"):
            problems.append(
                (
                    (*path, "parse", i),
                    "BASE_TYPE_CHOICES",
                    "Value must be one of ('roles', 'users', 'everyone').",
                )
            )
    for kind in ("users", "roles"):
        listed = value.get(kind) or []
        if kind in parse and listed:
            problems.append(
                (
                    path,
                    "MESSAGE_ALLOWED_MENTIONS_PARSE_EXCLUSIVE",
                    f'parse:["{kind}"] and {kind}: [ids...] are mutually exclusive.',
                )
            )
        if len(listed) > 100:
            problems.append(
                ((*path, kind), "BASE_TYPE_MAX_LENGTH", "Must be 100 or fewer in length.")
            )
    return problems


_COMMAND_NAME = re.compile(r"^[-_'\w]{1,32}$")


def _command_problems(
    command: dict[str, Any], path: tuple[str | int, ...], *, chat_input: bool
) -> list[Problem]:
    problems: list[Problem] = []
    name = command.get("name")
    if (
        not isinstance(name, str)
        or not _COMMAND_NAME.match(name)
        or (chat_input and name != name.lower())
    ):
        problems.append(
            ((*path, "name"), "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid")
        )
    if chat_input:
        description = command.get("description")
        if not isinstance(description, str) or not 1 <= len(description) <= 100:
            problems.append(
                (
                    (*path, "description"),
                    "BASE_TYPE_BAD_LENGTH",
                    "Must be between 1 and 100 in length.",
                )
            )
    options = command.get("options") or []
    if len(options) > 25:
        problems.append(
            ((*path, "options"), "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
        )
    for i, option in enumerate(options):
        if not isinstance(option, dict):
            continue
        where = (*path, "options", i)
        if not 1 <= int(option.get("type", 0)) <= 11:
            problems.append(((*where, "type"), "BASE_TYPE_CHOICES", "Value must be one of 1-11."))
        problems.extend(_command_problems(option, where, chat_input=True))
        if len(option.get("choices") or []) > 25:
            problems.append(
                ((*where, "choices"), "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
            )
    return problems


def _option_type(value: Any) -> int:
    if isinstance(value, bool):
        return 5
    if isinstance(value, int):
        return 4
    if isinstance(value, float):
        return 10
    return 3


def _without_token(payload: dict[str, Any]) -> dict[str, Any]:
    """Gateway payloads as recorded: the token is dropped, secrets are not kept."""
    data = payload.get("d")
    if isinstance(data, dict) and "token" in data:
        return {**payload, "d": {k: v for k, v in data.items() if k != "token"}}
    return payload


def _bucket(route: str) -> str:
    return hashlib.sha1(route.encode()).hexdigest()[:32]


def _bucket_headers(route: str) -> dict[str, str]:
    """The rate-limit headers of a normal answer. The fake never limits by itself (only
    scripted 429s), so `Remaining` never reaches 0 and discord.py never waits."""
    return {
        "X-RateLimit-Limit": "5",
        "X-RateLimit-Remaining": "4",
        "X-RateLimit-Reset": f"{time.time() + 1:.3f}",
        "X-RateLimit-Reset-After": "1.000",
        "X-RateLimit-Bucket": _bucket(route),
    }


def _response(status: int, body: Any, headers: Mapping[str, str]) -> web.Response:
    """Exactly `Content-Type: application/json` (discord.py compares the header verbatim
    and treats anything else as text), plus the `Via` header Discord's edge adds."""
    all_headers = {"Via": "1.1 google", **headers}
    if status == 204 or body is None:
        return web.Response(status=204 if status < 300 else status, headers=all_headers)
    if isinstance(body, str):
        return web.Response(status=status, text=body, content_type="text/html", headers=all_headers)
    all_headers["Content-Type"] = "application/json"
    return web.Response(status=status, body=json.dumps(body).encode(), headers=all_headers)


# ---------------------------------------------------------------- entry points


@asynccontextmanager
async def running_fake_discord(**options: Any) -> AsyncIterator[FakeDiscord]:
    """Run a FakeDiscord on 127.0.0.1 on a free port and point discord.py at it:
    `discord.http.Route.BASE` and `DiscordWebSocket.DEFAULT_GATEWAY`, restored afterwards.
    `options` go to FakeDiscord()."""
    fake = FakeDiscord(**options)
    await fake.start()
    old_base = discord.http.Route.BASE
    old_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    discord.http.Route.BASE = fake.api_base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)
    try:
        yield fake
    finally:
        discord.http.Route.BASE = old_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gateway
        await fake.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the fake Discord API + gateway locally.")
    parser.add_argument("--port", type=int, default=8767)
    options = parser.parse_args()

    fake = FakeDiscord()
    serve_until_interrupted(
        lambda: fake.start(port=options.port),
        fake.stop,
        lambda: (
            f"fake Discord REST at {fake.api_base}, gateway at {fake.gateway_url}"
            + f"\n  bot token {fake.token}"
        ),
    )


if __name__ == "__main__":
    main()
