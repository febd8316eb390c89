"""A local stand-in for the Slack Web API and Socket Mode, for the methods crewchief uses.

It speaks real HTTP and a real WebSocket, so the real `slack_sdk` clients (argument encoding,
retry handlers, error parsing, the Socket Mode handshake and acks) are what gets tested. It
answers like Slack does: errors are HTTP 200 with `{"ok": false, "error": ...}`, rate limits
are HTTP 429 with `Retry-After`, message timestamps increase, and replies, edits, reactions
and uploads change what a person looking at the channel would see.

    async with fake_slack(channels=["C0CONTENT1"]) as slack:
        client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
        slack.script_rate_limit("chat.postMessage", retry_after=1)
        ...
        assert slack.messages["C0CONTENT1"][0].text == "hello"
        ack = await slack.push_envelope("slash_commands", slash_command("help"))

Methods: auth.test, chat.postMessage (also to a user id: a DM), chat.update,
chat.postEphemeral, conversations.open, reactions.add, reactions.remove,
files.getUploadURLExternal + the upload URL + files.completeUploadExternal (the flow of
`files_upload_v2`) and apps.connections.open. Anything else answers `unknown_method`.

Uploads: the upload URL takes the bytes (a raw body or a multipart form; each file keeps the
`length` it was announced with, for tests to compare); completing shares the files into
`channel_id` (in `thread_ts`'s thread when given) as one message carrying them.
`uploads_in(channel)` lists what arrived.
`outside=` names channels the bot is not a member of: posts and file shares there answer
`not_in_channel`.

Scripting: `script_rate_limit`, `script_error` and `script_response` queue answers for the
next calls of one method, ahead of the normal behaviour. `scopes=` makes methods answer
`missing_scope` like Slack when the bot token lacks the scope they need.

Faults: `fail_randomly(share, seed=...)` makes a seeded share of Web API calls fail the ways
Slack fails on a bad day, in equal measure: HTTP 429 with `Retry-After` and
`{"ok": false, "error": "ratelimited"}`, HTTP 500 with `{"ok": false, "error":
"internal_error"}`, and a connection reset (the TCP connection closed without a response:
half of them by a TCP reset, half by a plain close). A failed call has no effect: it is
answered (or cut) before the method runs. `faults` counts what was injected;
`stop_failing()` ends it.

Socket Mode: apps.connections.open (with the app-level `xapp-` token) hands out a one-time
`ws://` URL served by the same server. A connecting client gets Slack's `hello`; then
`push_envelope` sends an envelope and waits for its ack, `send_disconnect` asks the client
to reconnect, `drop_sockets` cuts connections abruptly.

Run stand-alone for manual checks:  python -m tests.fakes.slack_api --port 8766
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import socket
import struct
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import WSMsgType, web

from tests.fakes.local_server import serve_until_interrupted
from tests.fakes.slack_signing import WORKSPACE, Workspace

BOT_TOKEN = "xoxb-0000000001-0000000002-crewchieftestbottoken"
APP_TOKEN = "xapp-1-A0CREW0001-0000000003-crewchieftestapptoken"

# The bot scope each method needs (Slack's method reference pages).
METHOD_SCOPES: dict[str, str] = {
    "chat.postMessage": "chat:write",
    "chat.update": "chat:write",
    "chat.postEphemeral": "chat:write",
    "conversations.open": "im:write",
    "conversations.history": "channels:history",
    "conversations.replies": "channels:history",
    "reactions.add": "reactions:write",
    "reactions.remove": "reactions:write",
    "files.getUploadURLExternal": "files:write",
    "files.completeUploadExternal": "files:write",
}
APP_TOKEN_METHODS = frozenset({"apps.connections.open"})
NO_AUTH_METHODS = frozenset({"api.test"})

MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_TEXT = 40_000  # Slack refuses longer text with msg_too_long
FIRST_TS_MICROS = 1_700_000_000_000_100
# The ways `fail_randomly` makes a call fail.
RATE_LIMITED, SERVER_ERROR, CONNECTION_RESET = "rate_limited", "server_error", "connection_reset"
FAULT_KINDS = (RATE_LIMITED, SERVER_ERROR, CONNECTION_RESET)


class AckTimeout(AssertionError):
    """The client did not acknowledge an envelope in time (Slack would redeliver it)."""


class SlackError(Exception):
    """Raised inside a method handler to answer `{"ok": false, "error": ...}`."""

    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra


@dataclass
class Call:
    """One Web API request as the fake received and answered it."""

    method: str
    args: dict[str, Any]
    headers: dict[str, str]
    token: str | None
    status: int  # 0: the connection was reset, no answer at all
    response: dict[str, Any]
    fault: str | None = None  # one of FAULT_KINDS when `fail_randomly` made it fail

    @property
    def ok(self) -> bool:
        return self.status == 200 and bool(self.response.get("ok"))

    @property
    def error(self) -> str | None:
        if self.fault == CONNECTION_RESET:
            return "connection reset"
        return None if self.ok else str(self.response.get("error"))


@dataclass
class Message:
    """A message as people in the channel see it now; `edits` keeps earlier versions."""

    channel: str
    ts: str
    text: str
    user: str
    blocks: list[dict[str, Any]] | None = None
    attachments: list[dict[str, Any]] | None = None
    thread_ts: str | None = None
    bot_id: str | None = None
    metadata: dict[str, Any] | None = None
    files: list[dict[str, Any]] = field(default_factory=list)
    reactions: dict[str, list[str]] = field(default_factory=dict)
    edits: list[dict[str, Any]] = field(default_factory=list)
    reply_count: int = 0

    @property
    def is_reply(self) -> bool:
        return self.thread_ts is not None and self.thread_ts != self.ts

    def as_api(self) -> dict[str, Any]:
        """The message object Slack puts in method responses."""
        data: dict[str, Any] = {"type": "message", "text": self.text, "user": self.user}
        data["ts"] = self.ts
        if self.bot_id is not None:
            data["bot_id"] = self.bot_id
        if self.blocks is not None:
            data["blocks"] = self.blocks
        if self.thread_ts is not None:
            data["thread_ts"] = self.thread_ts
        if self.metadata is not None:
            data["metadata"] = self.metadata
        if self.files:
            data["files"] = self.files
        if self.edits:
            data["edited"] = {"user": self.user, "ts": self.edits[-1]["edited_ts"]}
        return data


@dataclass
class Ephemeral:
    """A message only `user` sees (chat.postEphemeral); it never joins the channel history."""

    channel: str
    user: str
    message_ts: str
    text: str
    blocks: list[dict[str, Any]] | None = None
    thread_ts: str | None = None


@dataclass
class UploadedFile:
    id: str
    filename: str
    length: int
    content: bytes | None = None
    title: str | None = None
    shared_to: list[str] = field(default_factory=list)


@dataclass
class _Scripted:
    status: int
    body: dict[str, Any] | str
    headers: dict[str, str]


@dataclass
class _Faults:
    share: float
    rng: random.Random
    kinds: tuple[str, ...]
    retry_after: int
    methods: frozenset[str] | None
    cut: str  # how a connection is dropped: "reset", "close", or "either" (drawn)

    def aborts(self) -> bool:
        """Whether this drop is a TCP reset rather than a plain close."""
        if self.cut == "either":
            return self.rng.random() < 0.5
        return self.cut == "reset"

    def draw(self, method: str) -> str | None:
        """The fault this call meets, or None. One draw per call of the methods concerned,
        so a seed gives the same sequence of faults."""
        if self.methods is not None and method not in self.methods:
            return None
        failed = self.rng.random() < self.share
        kind = self.rng.choice(self.kinds)
        return kind if failed else None


class FakeSlack:
    """The fake's state. Start it with `fake_slack()`; read `calls`, `messages` and friends."""

    def __init__(
        self,
        *,
        workspace: Workspace = WORKSPACE,
        bot_token: str = BOT_TOKEN,
        app_token: str = APP_TOKEN,
        channels: Iterable[str] | Mapping[str, str] | None = None,
        scopes: Iterable[str] | None = None,
        outside: Iterable[str] = (),
    ) -> None:
        """`channels`: known channel ids (or id -> name); when given, any other channel is
        `channel_not_found`. `scopes`: the bot token's scopes; when given, methods needing
        another scope answer `missing_scope`. `outside`: channels the bot is not a member
        of (posts and file shares there answer `not_in_channel`)."""
        self.workspace = workspace
        self.bot_token = bot_token
        self.app_token = app_token
        if channels is None:
            self.channel_names: dict[str, str] | None = None
        elif isinstance(channels, Mapping):
            self.channel_names = dict(channels)
        else:
            self.channel_names = {c: c for c in channels}
        self.scopes = None if scopes is None else list(scopes)
        self.outside = set(outside)

        self.calls: list[Call] = []
        self.messages: defaultdict[str, list[Message]] = defaultdict(list)
        self.ephemerals: list[Ephemeral] = []
        self.files: dict[str, UploadedFile] = {}
        self.dm_channels: dict[str, str] = {}  # user id -> D... channel id
        self.socket_received: list[dict[str, Any]] = []  # everything clients sent on a socket
        self.socket_connections = 0  # connections accepted so far (reconnects included)

        self._micros = itertools.count(FIRST_TS_MICROS, 100)
        self._file_ids = itertools.count(1)
        self._scripts: defaultdict[str, deque[_Scripted]] = defaultdict(deque)
        self._faults: _Faults | None = None
        self._tickets: set[str] = set()
        self._sockets: list[web.WebSocketResponse] = []
        self._socket_opened = asyncio.Event()
        self._acks: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._runner: web.AppRunner | None = None
        self.base_url = ""
        self._handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "api.test": lambda args: {"args": args},
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "conversations.open": self._conversations_open,
            "conversations.history": self._conversations_history,
            "conversations.replies": self._conversations_replies,
            "reactions.add": self._reactions_add,
            "reactions.remove": self._reactions_remove,
            "files.getUploadURLExternal": self._files_get_upload_url,
            "files.completeUploadExternal": self._files_complete_upload,
            "apps.connections.open": self._apps_connections_open,
        }

    # ------------------------------------------------------------ what tests read

    @property
    def api_url(self) -> str:
        """Base URL for `AsyncWebClient(base_url=...)` / `SLACK_API_URL` (ends with `/api/`)."""
        return f"{self.base_url}/api/"

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def message(self, channel: str, ts: str) -> Message:
        for message in self.messages[self._resolve_channel(channel)]:
            if message.ts == ts:
                return message
        raise KeyError(f"no message {ts} in {channel}")

    def top_level(self, channel: str) -> list[Message]:
        """The channel as people scroll it: messages that are not thread replies."""
        return [m for m in self.messages[self._resolve_channel(channel)] if not m.is_reply]

    def thread(self, channel: str, thread_ts: str) -> list[Message]:
        """The replies under `thread_ts`, oldest first (the parent is not included)."""
        messages = self.messages[self._resolve_channel(channel)]
        return [m for m in messages if m.is_reply and m.thread_ts == thread_ts]

    def uploads_in(self, channel: str) -> list[UploadedFile]:
        """The files shared into `channel`, in the order they were uploaded."""
        resolved = self._resolve_channel(channel)
        return [f for f in self.files.values() if resolved in f.shared_to]

    def dm(self, user: str) -> list[Message]:
        """What the bot sent `user` directly."""
        channel = self.dm_channels.get(user)
        return [] if channel is None else list(self.messages[channel])

    def add_user_message(
        self, channel: str, user: str, text: str, *, thread_ts: str | None = None
    ) -> Message:
        """Put a person's message in the channel, e.g. the reply an event will announce."""
        return self._store(channel, text=text, user=user, bot_id=None, thread_ts=thread_ts)

    # ------------------------------------------------------------ scripting

    def script_response(
        self,
        method: str,
        *,
        status: int = 200,
        body: dict[str, Any] | str | None = None,
        headers: Mapping[str, str] | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next `times` calls of `method` with this instead of doing the work; a
        str body is sent as an HTML page, as proxies in front of Slack sometimes do."""
        for _ in range(times):
            self._scripts[method].append(
                _Scripted(status, body if body is not None else {"ok": True}, dict(headers or {}))
            )

    def script_rate_limit(self, method: str, *, retry_after: int = 1, times: int = 1) -> None:
        """Slack's rate limit: HTTP 429, `Retry-After` seconds, `{"ok": false, "error":
        "ratelimited"}`. slack_sdk only retries it with a RateLimitErrorRetryHandler."""
        self.script_response(
            method,
            status=429,
            body={"ok": False, "error": "ratelimited"},
            headers={"Retry-After": str(retry_after)},
            times=times,
        )

    def script_error(
        self, method: str, error: str = "internal_error", *, status: int = 200, times: int = 1
    ) -> None:
        """An error answer: Slack's own errors come with HTTP 200 (`channel_not_found`,
        `message_not_found`...); use status=500/503 for a server failure."""
        self.script_response(method, status=status, body={"ok": False, "error": error}, times=times)

    def fail_randomly(
        self,
        share: float,
        *,
        seed: int,
        kinds: Iterable[str] = FAULT_KINDS,
        retry_after: int = 1,
        methods: Iterable[str] | None = None,
        cut: Literal["reset", "close", "either"] = "either",
    ) -> None:
        """From now on fail `share` of the Web API calls (of `methods`, or all), each with one
        of `kinds` drawn at random: Slack's 429 (`Retry-After: retry_after`), a 500, or a
        connection reset (`cut`: by a TCP reset, a plain close, or either at random).
        Scripted answers still come first. A failed call changes nothing."""
        if not 0 <= share <= 1:
            raise ValueError(f"share must be between 0 and 1, not {share}")
        chosen = tuple(kinds)
        unknown = set(chosen) - set(FAULT_KINDS)
        if unknown or not chosen:
            raise ValueError(f"kinds must be some of {FAULT_KINDS}, not {chosen}")
        self._faults = _Faults(
            share,
            random.Random(seed),
            chosen,
            retry_after,
            None if methods is None else frozenset(methods),
            cut,
        )

    def stop_failing(self) -> None:
        self._faults = None

    @property
    def faults(self) -> Counter[str]:
        """How many calls `fail_randomly` failed, per kind."""
        return Counter(c.fault for c in self.calls if c.fault is not None)

    # ------------------------------------------------------------ Socket Mode

    @property
    def socket_connected(self) -> bool:
        return any(not ws.closed for ws in self._sockets)

    async def wait_for_socket(self, timeout: float = 5.0) -> None:
        """Wait until a Socket Mode client has connected and been greeted."""
        try:
            async with asyncio.timeout(timeout):
                while not self.socket_connected:
                    self._socket_opened.clear()
                    await self._socket_opened.wait()
        except TimeoutError:
            raise AckTimeout(f"no Socket Mode client connected within {timeout}s") from None

    async def send_envelope(
        self,
        type: str,
        payload: Mapping[str, Any],
        *,
        envelope_id: str | None = None,
        accepts_response_payload: bool | None = None,
        retry_attempt: int = 0,
        retry_reason: str = "",
        connect_timeout: float = 5.0,
    ) -> str:
        """Send an envelope ("slash_commands", "events_api" or "interactive") on the newest
        connection and return its envelope_id; await `wait_for_ack` for the answer."""
        await self.wait_for_socket(connect_timeout)
        envelope_id = envelope_id or str(uuid.uuid4())
        if accepts_response_payload is None:
            accepts_response_payload = type == "slash_commands"
        envelope: dict[str, Any] = {
            "envelope_id": envelope_id,
            "type": type,
            "payload": dict(payload),
            "accepts_response_payload": accepts_response_payload,
        }
        if type == "events_api":
            envelope["retry_attempt"] = retry_attempt
            envelope["retry_reason"] = retry_reason
        self._acks[envelope_id] = asyncio.get_running_loop().create_future()
        ws = next(ws for ws in reversed(self._sockets) if not ws.closed)
        await ws.send_str(json.dumps(envelope))
        return envelope_id

    async def wait_for_ack(self, envelope_id: str, timeout: float = 5.0) -> dict[str, Any]:
        """The client's ack (`{"envelope_id": ...}`, plus `payload` when it answered)."""
        try:
            return await asyncio.wait_for(asyncio.shield(self._acks[envelope_id]), timeout)
        except TimeoutError:
            raise AckTimeout(f"no ack for envelope {envelope_id} within {timeout}s") from None

    async def push_envelope(
        self,
        type: str,
        payload: Mapping[str, Any],
        *,
        timeout: float = 5.0,
        **options: Any,
    ) -> dict[str, Any]:
        """Send an envelope and wait for its ack; raise AckTimeout like a missed 3 s deadline
        (pass timeout=3 to hold the bot to Slack's limit)."""
        envelope_id = await self.send_envelope(type, payload, connect_timeout=timeout, **options)
        return await self.wait_for_ack(envelope_id, timeout)

    async def send_disconnect(self, reason: str = "refresh_requested") -> None:
        """What Slack sends before it recycles a connection; clients should reconnect."""
        message = {"type": "disconnect", "reason": reason, "debug_info": {"host": "applink-fake"}}
        for ws in list(self._sockets):
            if not ws.closed:
                await ws.send_str(json.dumps(message))

    async def drop_sockets(self) -> None:
        """Close every Socket Mode connection without warning (a network failure)."""
        for ws in list(self._sockets):
            await ws.close(code=1011, message=b"fake drop")

    # ------------------------------------------------------------ lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        app = web.Application(client_max_size=50 * 1024 * 1024)
        app.router.add_route("*", "/api/{method}", self._handle_api)
        app.router.add_post("/upload/v1/{file_id}", self._handle_upload)
        app.router.add_get("/link/", self._handle_socket)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound_host, bound_port = self._runner.addresses[0][:2]
        self.base_url = f"http://{bound_host}:{bound_port}"

    async def stop(self) -> None:
        for ws in list(self._sockets):
            with suppress(Exception):
                await ws.close(code=1001, message=b"server shutdown")
        for future in self._acks.values():
            future.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ------------------------------------------------------------ HTTP plumbing

    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        args = await _read_args(request)
        token = _token(request, args)
        headers = dict(request.headers)

        fault = None if self._scripts[method] or self._faults is None else self._faults.draw(method)
        if fault == CONNECTION_RESET:
            self.calls.append(Call(method, args, headers, token, 0, {}, fault))
            assert self._faults is not None
            _cut(request, abort=self._faults.aborts())
            return web.Response(status=500)  # never sent: the connection is gone
        if fault is not None:
            status, body, extra_headers = self._fault_answer(fault)
        else:
            status, body, extra_headers = self._answer(method, args, token)
        recorded = body if isinstance(body, dict) else {"ok": False, "raw": body}
        self.calls.append(Call(method, args, headers, token, status, recorded, fault))
        if self.scopes is not None and token == self.bot_token:
            extra_headers.setdefault("x-oauth-scopes", ",".join(self.scopes))
        if isinstance(body, str):  # e.g. the HTML page of a load balancer's 503
            return web.Response(
                text=body, status=status, headers=extra_headers, content_type="text/html"
            )
        return web.json_response(body, status=status, headers=extra_headers)

    def _answer(
        self, method: str, args: dict[str, Any], token: str | None
    ) -> tuple[int, dict[str, Any] | str, dict[str, str]]:
        if self._scripts[method]:
            scripted = self._scripts[method].popleft()
            return scripted.status, scripted.body, dict(scripted.headers)
        handler = self._handlers.get(method)
        if handler is None:
            return 200, {"ok": False, "error": "unknown_method"}, {}
        try:
            self._authorize(method, token)
            result = handler(args)
        except SlackError as e:
            return 200, {"ok": False, "error": e.error, **e.extra}, {}
        return 200, {"ok": True, **result}, {}

    def _fault_answer(self, fault: str) -> tuple[int, dict[str, Any] | str, dict[str, str]]:
        assert self._faults is not None
        if fault == RATE_LIMITED:
            headers = {"Retry-After": str(self._faults.retry_after)}
            return 429, {"ok": False, "error": "ratelimited"}, headers
        return 500, {"ok": False, "error": "internal_error"}, {}

    def _authorize(self, method: str, token: str | None) -> None:
        if method in NO_AUTH_METHODS:
            return
        if not token:
            raise SlackError("not_authed")
        if token not in (self.bot_token, self.app_token):
            raise SlackError("invalid_auth")
        if (token == self.app_token) != (method in APP_TOKEN_METHODS):
            raise SlackError("not_allowed_token_type")
        needed = METHOD_SCOPES.get(method)
        if self.scopes is not None and needed is not None and needed not in self.scopes:
            raise SlackError("missing_scope", needed=needed, provided=",".join(self.scopes))

    # ------------------------------------------------------------ methods

    def _auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        ws = self.workspace
        return {
            "url": f"https://{ws.team_domain}.slack.com/",
            "team": ws.team_name,
            "user": "crewchief",
            "team_id": ws.team_id,
            "user_id": ws.bot_user_id,
            "bot_id": ws.bot_id,
            "is_enterprise_install": False,
        }

    def _chat_post_message(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._member_channel(args.get("channel"))
        text, blocks = _content(args)
        message = self._store(
            channel,
            text=text,
            blocks=blocks,
            attachments=_attachments(args),
            user=self.workspace.bot_user_id,
            bot_id=self.workspace.bot_id,
            thread_ts=_str_or_none(args.get("thread_ts")),
            metadata=_json_arg(args, "metadata"),
        )
        return {"channel": channel, "ts": message.ts, "message": message.as_api()}

    def _chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._postable_channel(args.get("channel"))
        message = self._find(channel, args.get("ts"))
        if message.bot_id != self.workspace.bot_id:
            raise SlackError("cant_update_message")
        text, blocks = _content(args)
        message.edits.append(
            {
                "text": message.text,
                "blocks": message.blocks,
                "attachments": message.attachments,
                "edited_ts": self._next_ts(),
            }
        )
        if "text" in args:
            message.text = text
        if "blocks" in args:
            message.blocks = blocks
        if "attachments" in args:  # like Slack: left out, the old attachments stay
            message.attachments = _attachments(args)
        return {
            "channel": channel,
            "ts": message.ts,
            "text": message.text,
            "message": message.as_api(),
        }

    def _chat_post_ephemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._postable_channel(args.get("channel"))
        user = _str_or_none(args.get("user"))
        if not user:
            raise SlackError("user_not_in_channel")
        text, blocks = _content(args)
        ts = self._next_ts()
        thread_ts = _str_or_none(args.get("thread_ts"))
        self.ephemerals.append(Ephemeral(channel, user, ts, text, blocks, thread_ts))
        return {"message_ts": ts}

    def _conversations_open(self, args: dict[str, Any]) -> dict[str, Any]:
        if args.get("channel"):
            return {"channel": {"id": str(args["channel"])}, "no_op": True, "already_open": True}
        users = [u for u in str(args.get("users") or "").split(",") if u]
        if not users:
            raise SlackError("users_list_not_supplied")
        if len(users) > 1:
            return {"channel": {"id": "G" + "".join(u[1:4] for u in users).upper()}}
        already = users[0] in self.dm_channels
        return {"channel": {"id": self._dm_channel(users[0])}, "already_open": already}

    def _listed(self, messages: list[Message], args: dict[str, Any]) -> dict[str, Any]:
        """A page of messages as Slack lists them: metadata only on request."""
        try:
            limit = max(1, min(int(args.get("limit") or 100), 999))
        except ValueError:
            raise SlackError("invalid_limit") from None
        metadata = str(args.get("include_all_metadata", "")).lower() in ("1", "true")
        page = []
        for message in messages[:limit]:
            data = message.as_api()
            if not metadata:
                data.pop("metadata", None)
            page.append(data)
        return {"messages": page, "has_more": len(messages) > limit}

    def _conversations_history(self, args: dict[str, Any]) -> dict[str, Any]:
        """A channel's top-level messages, newest first."""
        channel = self._postable_channel(args.get("channel"))
        top = [m for m in self.messages[channel] if not m.is_reply]
        return self._listed(list(reversed(top)), args)

    def _conversations_replies(self, args: dict[str, Any]) -> dict[str, Any]:
        """A thread: its parent, then the replies oldest first."""
        channel = self._postable_channel(args.get("channel"))
        ts = _str_or_none(args.get("ts"))
        if ts is None:
            raise SlackError("invalid_arguments")
        thread = [m for m in self.messages[channel] if m.ts == ts or m.thread_ts == ts]
        if not thread:
            raise SlackError("thread_not_found")
        return self._listed(thread, args)

    def _reactions_add(self, args: dict[str, Any]) -> dict[str, Any]:
        message, name = self._reaction_target(args)
        users = message.reactions.setdefault(name, [])
        if self.workspace.bot_user_id in users:
            raise SlackError("already_reacted")
        users.append(self.workspace.bot_user_id)
        return {}

    def _reactions_remove(self, args: dict[str, Any]) -> dict[str, Any]:
        message, name = self._reaction_target(args)
        users = message.reactions.get(name, [])
        if self.workspace.bot_user_id not in users:
            raise SlackError("no_reaction")
        users.remove(self.workspace.bot_user_id)
        if not users:
            del message.reactions[name]
        return {}

    def _files_get_upload_url(self, args: dict[str, Any]) -> dict[str, Any]:
        filename = _str_or_none(args.get("filename"))
        try:
            length = int(args.get("length", ""))
        except ValueError:
            raise SlackError("invalid_arguments") from None
        if not filename or length < 1:
            raise SlackError("invalid_arguments")
        file_id = f"F0CREW{next(self._file_ids):05d}"
        self.files[file_id] = UploadedFile(file_id, filename, length)
        return {"upload_url": f"{self.base_url}/upload/v1/{file_id}", "file_id": file_id}

    def _files_complete_upload(self, args: dict[str, Any]) -> dict[str, Any]:
        entries = _json_arg(args, "files")
        if not isinstance(entries, list) or not entries:
            raise SlackError("invalid_arguments")
        uploaded: list[UploadedFile] = []
        for entry in entries:
            if not isinstance(entry, dict):
                raise SlackError("invalid_arguments")
            upload = self.files.get(str(entry.get("id")))
            if upload is None or upload.content is None:
                raise SlackError("file_not_found")
            uploaded.append(upload)
        channels = [c for c in str(args.get("channels") or "").split(",") if c]
        if args.get("channel_id"):
            channels.append(str(args["channel_id"]))
        targets = [self._member_channel(channel) for channel in channels]
        for upload, entry in zip(uploaded, entries, strict=True):
            upload.title = entry.get("title") or upload.filename
        summaries = [_file_summary(f) for f in uploaded]
        for channel in targets:
            self._store(
                channel,
                text=str(args.get("initial_comment") or ""),
                user=self.workspace.bot_user_id,
                bot_id=self.workspace.bot_id,
                thread_ts=_str_or_none(args.get("thread_ts")),
                files=summaries,
            )
            for upload in uploaded:
                upload.shared_to.append(channel)
        return {"files": summaries}

    def _apps_connections_open(self, args: dict[str, Any]) -> dict[str, Any]:
        ticket = str(uuid.uuid4())
        self._tickets.add(ticket)
        ws_base = self.base_url.replace("http://", "ws://", 1)
        return {"url": f"{ws_base}/link/?ticket={ticket}&app_id={self.workspace.app_id}"}

    # ------------------------------------------------------------ uploads and sockets

    async def _handle_upload(self, request: web.Request) -> web.StreamResponse:
        upload = self.files.get(request.match_info["file_id"])
        if upload is None:
            return web.Response(status=404, text="file not found", content_type="text/plain")
        if request.content_type.startswith("multipart/"):
            form = await request.post()
            part = next((v for v in form.values() if isinstance(v, web.FileField)), None)
            content = part.file.read() if part is not None else b""
        else:
            content = await request.read()
        upload.content = content
        return web.Response(text=f"OK - {len(content)}", content_type="text/plain")

    async def _handle_socket(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        if ticket not in self._tickets:
            return web.Response(status=401, text="invalid or used ticket")
        self._tickets.discard(ticket)
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._sockets.append(ws)
        self.socket_connections += 1
        await ws.send_str(
            json.dumps(
                {
                    "type": "hello",
                    "num_connections": sum(1 for s in self._sockets if not s.closed),
                    "debug_info": {
                        "host": "applink-fake",
                        "build_number": 1,
                        "approximate_connection_time": 18060,
                    },
                    "connection_info": {"app_id": self.workspace.app_id},
                }
            )
        )
        self._socket_opened.set()
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(msg.data)
                except ValueError:
                    continue
                self.socket_received.append(data)
                future = self._acks.get(str(data.get("envelope_id")))
                if future is not None and not future.done():
                    future.set_result(data)
        finally:
            self._sockets.remove(ws)
        return ws

    # ------------------------------------------------------------ state helpers

    def _next_ts(self) -> str:
        micros = next(self._micros)
        return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"

    def _dm_channel(self, user: str) -> str:
        return self.dm_channels.setdefault(user, "D" + user[1:])

    def _resolve_channel(self, channel: str) -> str:
        if channel[:1] in ("U", "W") and channel in self.dm_channels:
            return self.dm_channels[channel]
        if self.channel_names is not None and channel not in self.channel_names:
            name = channel.removeprefix("#")
            for channel_id, known in self.channel_names.items():
                if known == name:
                    return channel_id
        return channel

    def _postable_channel(self, channel: Any) -> str:
        """The channel id a post lands in; a user id means the DM with that user."""
        if not channel:
            raise SlackError("channel_not_found")
        channel = str(channel)
        if channel[:1] in ("U", "W"):
            return self._dm_channel(channel)
        resolved = self._resolve_channel(channel)
        known = self.channel_names is None or resolved in self.channel_names
        if not known and resolved not in self.dm_channels.values():
            raise SlackError("channel_not_found")
        return resolved

    def _member_channel(self, channel: Any) -> str:
        """A channel the bot can post in: known, and one it is a member of."""
        resolved = self._postable_channel(channel)
        if resolved in self.outside:
            raise SlackError("not_in_channel")
        return resolved

    def _find(self, channel: str, ts: Any) -> Message:
        for message in self.messages[channel]:
            if message.ts == ts:
                return message
        raise SlackError("message_not_found")

    def _reaction_target(self, args: dict[str, Any]) -> tuple[Message, str]:
        channel = self._postable_channel(args.get("channel"))
        name = str(args.get("name") or "").strip(":")
        if not name:
            raise SlackError("invalid_name")
        return self._find(channel, args.get("timestamp")), name

    def _store(
        self,
        channel: str,
        *,
        text: str,
        user: str,
        bot_id: str | None,
        blocks: list[dict[str, Any]] | None = None,
        attachments: list[dict[str, Any]] | None = None,
        thread_ts: str | None = None,
        metadata: Any = None,
        files: list[dict[str, Any]] | None = None,
    ) -> Message:
        channel = self._resolve_channel(channel)
        if thread_ts is not None:
            # An unknown parent is accepted: the fake only knows the messages it has seen.
            parent = next((m for m in self.messages[channel] if m.ts == thread_ts), None)
            if parent is not None and parent.is_reply:  # a reply to a reply joins the thread
                thread_ts = parent.thread_ts
                parent = next((m for m in self.messages[channel] if m.ts == thread_ts), None)
            if parent is not None:
                parent.thread_ts = parent.ts
                parent.reply_count += 1
        message = Message(
            channel=channel,
            ts=self._next_ts(),
            text=text,
            user=user,
            blocks=blocks,
            attachments=attachments,
            thread_ts=thread_ts,
            bot_id=bot_id,
            metadata=metadata if isinstance(metadata, dict) else None,
            files=list(files or []),
        )
        self.messages[channel].append(message)
        return message


def _cut(request: web.Request, *, abort: bool) -> None:
    """Drop the connection before any byte of an answer: with a TCP reset (`abort`: SO_LINGER
    0, the client reads ECONNRESET), or closed as a load balancer closes an idle connection
    (the client finds the server disconnected)."""
    transport = request.transport
    assert transport is not None
    if not abort:
        transport.close()
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


# ---------------------------------------------------------------- request parsing


async def _read_args(request: web.Request) -> dict[str, Any]:
    """Slack takes arguments in the query string, a form body or a JSON body."""
    args: dict[str, Any] = dict(request.query)
    if request.content_type == "application/json":
        body = await request.json()
        if isinstance(body, dict):
            args.update(body)
    elif request.can_read_body:
        form = await request.post()
        for key, value in form.items():
            args[key] = value if isinstance(value, str) else "(file)"
    return args


def _token(request: web.Request, args: dict[str, Any]) -> str | None:
    in_body = args.pop("token", None)  # Slack also accepts the token as a POST argument
    authorization = request.headers.get("Authorization", "")
    if authorization.startswith("Bearer "):
        return authorization.removeprefix("Bearer ").strip()
    return str(in_body) if in_body else None


def _json_arg(args: dict[str, Any], name: str) -> Any:
    value = args.get(name)
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise SlackError(f"invalid_{name}") from None
    return value


def _str_or_none(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


def _content(args: dict[str, Any]) -> tuple[str, Any]:
    """Text and blocks of a post, validated the way Slack refuses them."""
    text = str(args.get("text") or "")
    blocks = _json_arg(args, "blocks")
    attachments = _attachments(args)
    if not text and not blocks and not attachments:
        raise SlackError("no_text")
    if len(text) > MAX_TEXT:
        raise SlackError("msg_too_long")
    if blocks is not None:
        errors = _block_errors(blocks)
        if errors:
            raise SlackError("invalid_blocks", errors=errors)
    return text, blocks


def _attachments(args: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Legacy attachments (a coloured bar around blocks), validated like top-level blocks."""
    attachments = _json_arg(args, "attachments")
    if attachments is None:
        return None
    if not isinstance(attachments, list) or not all(isinstance(a, dict) for a in attachments):
        raise SlackError("invalid_attachments")
    for attachment in attachments:
        errors = _block_errors(attachment.get("blocks", []))
        if errors:
            raise SlackError("invalid_attachments", errors=errors)
    return attachments


def _block_errors(blocks: Any) -> list[str]:
    if not isinstance(blocks, list):
        return ["blocks must be an array"]
    errors: list[str] = []
    if len(blocks) > MAX_BLOCKS:
        errors.append(f"no more than {MAX_BLOCKS} items allowed [json-pointer:/blocks]")
    for i, block in enumerate(blocks):
        if not isinstance(block, dict) or "type" not in block:
            errors.append(f"missing required field: type [json-pointer:/blocks/{i}]")
            continue
        text = block.get("text")
        too_long = isinstance(text, dict) and len(str(text.get("text", ""))) > MAX_SECTION_TEXT
        if block["type"] == "section" and too_long:
            errors.append(
                f"must be less than {MAX_SECTION_TEXT + 1} characters "
                f"[json-pointer:/blocks/{i}/text/text]"
            )
    return errors


def _file_summary(upload: UploadedFile) -> dict[str, Any]:
    return {
        "id": upload.id,
        "name": upload.filename,
        "title": upload.title or upload.filename,
        "size": len(upload.content or b""),
    }


# ---------------------------------------------------------------- entry points


@asynccontextmanager
async def fake_slack(
    *,
    workspace: Workspace = WORKSPACE,
    bot_token: str = BOT_TOKEN,
    app_token: str = APP_TOKEN,
    channels: Iterable[str] | Mapping[str, str] | None = None,
    scopes: Iterable[str] | None = None,
    outside: Iterable[str] = (),
) -> AsyncIterator[FakeSlack]:
    """Run a FakeSlack on 127.0.0.1 on a free port for the duration of the block."""
    slack = FakeSlack(
        workspace=workspace,
        bot_token=bot_token,
        app_token=app_token,
        channels=channels,
        scopes=scopes,
        outside=outside,
    )
    await slack.start()
    try:
        yield slack
    finally:
        await slack.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the fake Slack Web API locally.")
    parser.add_argument("--port", type=int, default=8766)
    options = parser.parse_args()

    slack = FakeSlack()
    serve_until_interrupted(
        lambda: slack.start(port=options.port),
        slack.stop,
        lambda: (
            f"fake Slack API at {slack.api_url}\n  bot token {slack.bot_token}"
            + f"\n  app token {slack.app_token}"
        ),
    )


if __name__ == "__main__":
    main()
