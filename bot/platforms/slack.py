"""The Slack platform: a slack-bolt AsyncApp (HTTP or Socket Mode) behind the platform interface.

Inbound: each listener turns the payload into a platform-neutral event, lets the dispatcher
commit it, and only then lets Bolt acknowledge (process_before_response), so what Slack was
told arrived is never lost. Outbound: the outbox sender calls `deliver`, which renders the
message kind's mrkdwn template into Block Kit and posts or edits it.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import aiohttp
from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy.exc import OperationalError

from bot.chart import TITLE as chart_title
from bot.chart import Chart, for_post
from bot.escaping import escape_slack
from bot.platforms.base import (
    BEFORE_ANSWERING,
    Delivery,
    DeliveryError,
    Inbound,
    handled_once_placed,
)
from bot.platforms.slack_config import EVENTS as EVENTS
from bot.platforms.slack_config import SCOPES as SCOPES
from bot.platforms.slack_config import SlackSettings
from bot.platforms.slack_config import slack_settings as slack_settings
from bot.platforms.splitting import headline as first_line
from bot.platforms.splitting import preview as cut_preview
from bot.platforms.splitting import split_text
from bot.render import Renderer
from commands.dispatch import NotYetDelivered
from commands.events import (
    Actor,
    InboundEvent,
    ReactionAdded,
    ReactionRemoved,
    SlashCommand,
    ThreadReply,
)
from commands.spec import COMMAND

log = logging.getLogger(__name__)

SECTION_LIMIT = 3000  # characters of mrkdwn per section block
BLOCK_LIMIT = 50  # blocks per message
TEXT_LIMIT = 3900  # the notification `text`, under Slack's 4,000 guidance
ATTACH_OVER = 12_000  # longer messages post a preview and attach the whole text as a file
PREVIEW_HEAD = 2_500
PREVIEW_TAIL = 600

STATUS_COLOURS = {
    "succeeded": "#2eb886",
    "failed": "#e01e5a",
    "rejected": "#e01e5a",
    "cancelled": "#9e9ea6",
    "awaiting_approval": "#ecb22e",
    "running": "#1d9bd1",
    "firing": "#e01e5a",  # an alert
    "resolved": "#2eb886",
    "pending": "#ecb22e",
}
# Slack answers most refusals with HTTP 200 and `ok: false`. Only these are worth retrying;
# any other error (not_in_channel, restricted_action, invalid_blocks, ...) will not change.
TEMPORARY_ERRORS = frozenset(
    {"internal_error", "fatal_error", "service_unavailable", "request_timeout", "ratelimited"}
)
# A private answer that cannot be ephemeral here goes to the person's DM with the app.
NOT_HERE = frozenset({"not_in_channel", "channel_not_found", "user_not_in_channel"})
# auth.test errors that mean the token itself is refused: reinstalling the app is the cure.
TOKEN_REFUSED = frozenset(
    {"invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired"}
)
# Every post carries its outbox key, so a retry can find a post an earlier attempt made.
METADATA_TYPE = "crewchief_outbox"


# Fields of the events crewchief handles that Slack documents as strings.
_STRING_FIELDS = (
    "type", "subtype", "user", "channel", "ts", "thread_ts", "event_ts", "text", "reaction",
    "bot_id", "parent_user_id", "item_user",
)  # fmt: skip


def malformed(body: Any) -> str | None:
    """What makes a request body unusable, or None.

    Bolt's own middleware reads the envelope with `.get` and string methods before any
    listener runs, so a body of another shape would be a 500 with a traceback (and Slack
    retries a 500). Refusing it up front turns that into a 400.
    """
    if not isinstance(body, dict):
        return "the body is not a JSON object"
    if "event" not in body:
        return None
    event = body["event"]
    if not isinstance(event, dict):
        return "event is not an object"
    for key in _STRING_FIELDS:
        if event.get(key) is not None and not isinstance(event[key], str):
            return f"event.{key} is not a string"
    return None


class SlackUnavailable(Exception):
    """Slack failed a call the handling of a request needs; Slack is answered with a 500."""


def _retry_handlers() -> list[AsyncRetryHandler]:
    return [
        AsyncConnectionErrorRetryHandler(max_retry_count=2),
        AsyncRateLimitErrorRetryHandler(max_retry_count=2),
        AsyncServerErrorRetryHandler(max_retry_count=2),
    ]


def field(data: Any, key: str) -> str:
    """A string field of a payload, or "" when it is missing or of another type."""
    value = data.get(key) if isinstance(data, dict) else None
    return value if isinstance(value, str) else ""


def event_id(body: dict[str, Any]) -> str:
    """Slack's id for the delivery (the same on its retries); a fresh one if it has none,
    so a malformed event can never be mistaken for an earlier one."""
    return str(body.get("event_id") or f"noid:{uuid.uuid4().hex}")


def unescape_slack(text: str) -> str:
    """Slack sends `&`, `<`, `>` in people's text as entities; store what they typed."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def mention(who: str) -> str:
    if who.startswith("slack:"):
        return f"<@{who.removeprefix('slack:')}>"
    return escape_slack(who)


def to_blocks(text: str) -> list[dict[str, Any]]:
    """Section blocks of at most 3,000 characters, cut at paragraph or line boundaries."""
    chunks = split_text(text, SECTION_LIMIT) or ["\u200b"]
    if len(chunks) > BLOCK_LIMIT:
        chunks = [*chunks[: BLOCK_LIMIT - 1], "_… cut here: the full text is attached_"]
    # verbatim: Slack must not turn bare URLs, #channels or @here in the text into live links
    # or mentions; explicit <@U…> mentions from our own templates still work.
    return [
        {"type": "section", "text": {"type": "mrkdwn", "text": c, "verbatim": True}} for c in chunks
    ]


def preview(text: str) -> str:
    return cut_preview(
        text,
        head=PREVIEW_HEAD,
        tail=PREVIEW_TAIL,
        notice="_… cut here: the full text is attached in this thread_",
    )


def headline(text: str) -> str:
    return first_line(text, TEXT_LIMIT)


def by_someone_else(author: str | None, context: dict[str, Any]) -> bool:
    """Whether Slack names the author of a message (a reaction's `item_user`, a reply's
    `parent_user_id`) and it is not this bot; when either is unknown, the message may be the
    bot's."""
    me = context.get("bot_user_id")
    return author is not None and me is not None and author != me


class SlackPlatform:
    name = "slack"
    state = "connected"  # /healthz: HTTP mode holds no connection (Socket Mode is not tracked)

    def __init__(self, inbound: Inbound, settings: SlackSettings) -> None:
        self.inbound = inbound
        self.settings = settings
        self.renderer = Renderer("slack", mention, emoji_names=True)
        self.client = AsyncWebClient(
            token=settings.bot_token, base_url=self._api_url(), retry_handlers=_retry_handlers()
        )
        self._identity: AuthorizeResult | None = None

        async def authorize() -> AuthorizeResult:
            return await self._authorize()

        self.bolt = AsyncApp(
            signing_secret=settings.signing_secret or "socket-mode-needs-no-signing-secret",
            # Without a token of its own Bolt asks `authorize` who the bot is, instead of its
            # single-workspace check (see _authorize); each request's client gets the token.
            client=AsyncWebClient(base_url=self._api_url(), retry_handlers=_retry_handlers()),
            authorize=authorize,
            process_before_response=True,
            logger=logging.getLogger("crewchief.slack.bolt"),
        )
        self._register()

    def _api_url(self) -> str:
        return self.settings.api_url or AsyncWebClient.BASE_URL

    async def _authorize(self) -> AuthorizeResult:
        """Who the bot is (auth.test, asked once). Bolt's own check answers a failed auth.test
        with a 200 telling the person to reinstall the app: Slack takes the request as handled
        and a command or a reaction is lost for a blip. A Slack that fails the call raises
        instead, so the request is answered with a 500 and Slack delivers an event again; only
        a token Slack refuses gets the reinstall message."""
        if self._identity is None:
            try:
                found = await self.client.auth_test()
            except SlackApiError as exc:
                error = exc.response.get("error")
                if exc.response.status_code == 200 and error in TOKEN_REFUSED:
                    log.error("Slack refused the bot token: %s", error)
                    raise  # Bolt answers that the app needs reinstalling
                raise SlackUnavailable(f"auth.test: {error or exc.response.status_code}") from None
            except (SlackClientError, aiohttp.ClientError, OSError, TimeoutError) as exc:
                raise SlackUnavailable(f"auth.test: {type(exc).__name__}") from None
            self._identity = AuthorizeResult.from_auth_test_response(
                bot_token=self.settings.bot_token, auth_test_response=found
            )
        return self._identity

    # -- inbound ----------------------------------------------------------------------

    def _register(self) -> None:
        bolt = self.bolt

        @bolt.error
        async def on_error(error: Exception) -> None:
            # Bolt answers Slack with a 500, so Slack delivers the event again.
            if isinstance(error, NotYetDelivered):
                log.info("reaction or reply on a post not yet recorded; Slack delivers it again")
            elif isinstance(error, OperationalError):  # the dispatcher said what is wrong
                log.info("event not recorded; Slack will deliver it again")
            elif isinstance(error, SlackUnavailable):
                log.warning("Slack could not say who the bot is (%s); answered 500", error)
            else:
                log.error("Slack event failed: %s", type(error).__name__, exc_info=error)

        @bolt.command(COMMAND)
        async def on_command(ack: Any, command: dict[str, Any]) -> None:
            user, channel = field(command, "user_id"), field(command, "channel_id")
            if not user or not channel:
                log.warning("a %s command without user_id or channel_id was ignored", COMMAND)
                await ack(text=f"crewchief could not read this {COMMAND} command")
                return
            event = SlashCommand(
                event_id=f"cmd:{field(command, 'trigger_id') or uuid.uuid4().hex}",
                actor=Actor("slack", user, field(command, "user_name")),
                channel=channel,
                text=unescape_slack(field(command, "text")),
            )
            replies = await self.inbound.handle(event)
            public = [r for r in replies if not r.private]
            if replies:
                text = "\n\n".join(self.renderer.render(r.template, r.context) for r in replies)
                await ack(
                    text=headline(text),
                    blocks=to_blocks(text),
                    response_type="in_channel" if public else "ephemeral",
                )
            else:
                await ack()

        @bolt.event("reaction_added")
        async def on_reaction_added(
            body: dict[str, Any], event: dict[str, Any], context: dict[str, Any]
        ) -> None:
            await self._reaction(body, event, context, ReactionAdded)

        @bolt.event("reaction_removed")
        async def on_reaction_removed(
            body: dict[str, Any], event: dict[str, Any], context: dict[str, Any]
        ) -> None:
            await self._reaction(body, event, context, ReactionRemoved)

        @bolt.event("message")
        async def on_message(
            body: dict[str, Any], event: dict[str, Any], context: dict[str, Any]
        ) -> None:
            thread_ts, user, channel = (field(event, k) for k in ("thread_ts", "user", "channel"))
            parent = event.get("parent_user_id")
            if (
                event.get("subtype") not in (None, "thread_broadcast")
                or event.get("bot_id")
                or not thread_ts
                or thread_ts == event.get("ts")
                or not user
                or not channel
                or by_someone_else(parent, context)
            ):
                return  # only people's replies in the bot's threads are feedback
            await self._once_placed(
                ThreadReply(
                    event_id=event_id(body),
                    actor=Actor("slack", user),
                    channel=channel,
                    thread_platform_id=thread_ts,
                    text=unescape_slack(field(event, "text")),
                ),
                about=thread_ts,
            )

        @bolt.event("app_mention")
        async def on_mention(body: dict[str, Any], event: dict[str, Any]) -> None:
            if event.get("thread_ts"):
                return  # "@crewchief shorter please" in a run's thread is feedback, not a question
            user, channel = field(event, "user"), field(event, "channel")
            if not user or not channel:
                return
            await self.inbound.handle(
                SlashCommand(
                    event_id=event_id(body),
                    actor=Actor("slack", user),
                    channel=channel,
                    text="help",
                ),
                private_replies=True,
            )

    async def _reaction(
        self, body: dict[str, Any], event: dict[str, Any], context: dict[str, Any], kind: type
    ) -> None:
        item = event.get("item")
        user, emoji = field(event, "user"), field(event, "reaction")
        channel, ts = field(item, "channel"), field(item, "ts")
        if field(item, "type") != "message" or not (user and emoji and channel and ts):
            return  # a reaction on a file, or one Slack's documented fields do not describe
        if by_someone_else(field(event, "item_user") or None, context):
            return  # on a person's message: never a decision, whatever the bot has in flight
        await self._once_placed(
            kind(
                event_id=event_id(body),
                actor=Actor("slack", user),
                channel=channel,
                message_platform_id=ts,
                emoji=emoji,
            ),
            about=ts,
        )

    async def _once_placed(self, event: InboundEvent, about: str) -> None:
        """`event` handled, waiting a moment if the post `about` (its ts) is still being
        recorded; NotYetDelivered if it still is, so Bolt answers 500 and Slack delivers the
        event again."""
        handled = await handled_once_placed(
            self.inbound.handle, event, private_replies=True, pauses=BEFORE_ANSWERING
        )
        if handled is None:
            raise NotYetDelivered(about)

    # -- outbound ---------------------------------------------------------------------

    async def deliver(self, delivery: Delivery) -> str | None:
        context, chart = await for_post(delivery)
        text = self.renderer.render(delivery.template, context)
        try:
            if delivery.kind == "notice":
                await self._notice(delivery, text)
                return None
            long = len(text) > ATTACH_OVER
            shown = preview(text) if long else text
            message = self._message(delivery.template, delivery.context, shown)
            if delivery.kind == "update":
                await self.client.chat_update(
                    channel=delivery.channel, ts=delivery.platform_id or "", **message
                )
                return None
            if delivery.attempt > 1:
                earlier = await self._find_posted(delivery)
                if earlier is not None:
                    # an attempt cut short (the bot was killed) had posted it
                    if chart is not None:
                        await self._upload_chart(delivery, chart, earlier, look_first=True)
                    return earlier
            response = await self.client.chat_postMessage(
                channel=delivery.channel,
                thread_ts=delivery.thread_platform_id,
                unfurl_links=False,
                unfurl_media=False,
                metadata={"event_type": METADATA_TYPE, "event_payload": {"key": delivery.key}},
                **message,
            )
            ts = str(response["ts"])
            if long:
                await self._attach(delivery, text, thread_ts=delivery.thread_platform_id or ts)
            if chart is not None:
                await self._upload_chart(delivery, chart, ts, look_first=False)
            return ts
        except SlackApiError as exc:
            raise self._delivery_error(exc) from None
        except (SlackClientError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            # aiohttp's ServerDisconnectedError (a connection closed without an answer) is
            # neither an OSError nor the SDK's own: slack_sdk re-raises it once its retries
            # are spent.
            raise DeliveryError(f"Slack unreachable: {type(exc).__name__}") from None

    async def _find_posted(self, delivery: Delivery) -> str | None:
        """The ts of a message an earlier attempt of this delivery posted, found by the key in
        its metadata among the thread's (or channel's) latest messages."""
        try:
            if delivery.thread_platform_id:
                found = await self.client.conversations_replies(
                    channel=delivery.channel,
                    ts=delivery.thread_platform_id,
                    include_all_metadata=True,
                    limit=200,
                )
            else:
                found = await self.client.conversations_history(
                    channel=delivery.channel, include_all_metadata=True, limit=100
                )
        except SlackApiError as exc:
            log.info("cannot look for an earlier post: %s", exc.response.get("error"))
            return None  # post it: a second copy is better than a lost message
        for message in found.get("messages") or []:
            metadata = message.get("metadata") or {}
            payload = metadata.get("event_payload") or {}
            if metadata.get("event_type") == METADATA_TYPE and payload.get("key") == delivery.key:
                return str(message["ts"])
        return None

    async def _notice(self, delivery: Delivery, text: str) -> None:
        user = (delivery.recipient or "").removeprefix("slack:")
        try:
            await self.client.chat_postEphemeral(
                channel=delivery.channel,
                user=user,
                text=headline(text),
                blocks=to_blocks(text),
                thread_ts=delivery.thread_platform_id,
            )
        except SlackApiError as exc:
            if exc.response.get("error") not in NOT_HERE:
                raise
            # Not a member of that channel: the app's DM with the person always works.
            await self.client.chat_postMessage(
                channel=user, text=headline(text), blocks=to_blocks(text)
            )

    def _message(self, template: str, context: dict[str, Any], text: str) -> dict[str, Any]:
        blocks = to_blocks(text)
        if template in ("run_card", "alert", "alert_group"):
            colour = STATUS_COLOURS.get(
                str(context.get("status") or context.get("state")), "#1d9bd1"
            )
            # A coloured bar (green when it succeeds) needs a legacy attachment around the
            # blocks; its `fallback` is the notification text, so no title line repeats above.
            attachment = {"color": colour, "blocks": blocks, "fallback": headline(text)}
            return {"attachments": [attachment]}
        return {"text": headline(text), "blocks": blocks}

    async def _attach(self, delivery: Delivery, text: str, *, thread_ts: str) -> None:
        """The whole text as a file in the thread: what people wrote, not Slack markup."""
        name = f"{delivery.template}-{delivery.ref or 'message'}.md"
        content = str(delivery.context.get("content") or text)
        try:
            await self.client.files_upload_v2(
                channel=delivery.channel,
                thread_ts=thread_ts,
                content=content,
                filename=name,
                title=name,
            )
        except Exception as exc:
            # The message itself is posted, and the full text stays in the database: posting
            # again would duplicate the card, so a failed attachment is logged, not retried.
            log.error("could not attach %s to %s: %s", name, thread_ts, type(exc).__name__)

    async def _upload_chart(
        self, delivery: Delivery, chart: Chart, ts: str, *, look_first: bool
    ) -> None:
        """The digest's chart, uploaded into the digest's thread (files_upload_v2). An upload
        is not idempotent: a retry looks for it in the thread first. A failure is logged, not
        retried: the digest is posted, and posting it again would duplicate it."""
        try:
            if look_first and await self._in_thread(delivery.channel, ts, chart.filename):
                return
            await self.client.files_upload_v2(
                channel=delivery.channel,
                thread_ts=ts,
                file=chart.png,
                filename=chart.filename,
                title=chart_title,
                alt_txt=chart_title,
            )
        except SlackApiError as exc:
            log.warning(
                "the digest's chart could not be uploaded to %s: %s",
                delivery.channel,
                exc.response.get("error") or exc.response.status_code,
            )
        except Exception as exc:
            log.warning(
                "the digest's chart could not be uploaded to %s: %s",
                delivery.channel,
                type(exc).__name__,
            )

    async def _in_thread(self, channel: str, ts: str, filename: str) -> bool:
        found = await self.client.conversations_replies(channel=channel, ts=ts, limit=200)
        return any(
            f.get("name") == filename
            for message in found.get("messages") or []
            for f in message.get("files") or []
        )

    @staticmethod
    def _delivery_error(exc: SlackApiError) -> DeliveryError:
        status = exc.response.status_code
        error = str(exc.response.get("error") or f"HTTP {status}")
        if status == 429:
            after = exc.response.headers.get("Retry-After") or exc.response.headers.get(
                "retry-after"
            )
            return DeliveryError("Slack rate limit", retry_after=float(after) if after else 1.0)
        if status >= 500:
            return DeliveryError(f"Slack answered {status}")
        return DeliveryError(f"Slack refused it: {error}", permanent=error not in TEMPORARY_ERRORS)

    async def aclose(self) -> None:
        session = getattr(self.client, "session", None)
        if session is not None and not session.closed:
            await session.close()
