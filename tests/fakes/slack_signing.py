"""Requests as Slack sends them: signed the way Slack signs, shaped the way Slack documents.

Tests feed these to the real Bolt app (HTTP mode) or push them through the fake Socket Mode
server, so the adapter is exercised against the payloads it will really receive rather than
against dicts shaped after our own code. Field names follow Slack's reference pages for slash
commands, the Events API envelope and the `reaction_added`, `reaction_removed`, `message` and
`app_mention` events.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"  # a made-up secret in Slack's format


@dataclass(frozen=True)
class Workspace:
    """The ids one test workspace is made of, shared by the payload builders and the fake API."""

    team_id: str = "T0CREW0001"
    team_domain: str = "crewchief-test"
    team_name: str = "crewchief test"
    app_id: str = "A0CREW0001"
    bot_user_id: str = "U0CREWBOT1"
    bot_id: str = "B0CREW0001"
    verification_token: str = "vErIfIcAtIoNtOkEn0000001"  # deprecated, but Slack still sends it


WORKSPACE = Workspace()

_event_counter = itertools.count(1)
_ts_counter = itertools.count(1)


def new_event_id() -> str:
    """A fresh, unique `event_id` in Slack's format (`Ev` + upper-case alphanumerics)."""
    return f"Ev0CREW{next(_event_counter):06d}"


def new_ts(at: float | None = None) -> str:
    """A message timestamp as Slack writes it: seconds, a dot and six digits, unique per call."""
    seconds = int(time.time() if at is None else at)
    return f"{seconds}.{next(_ts_counter) % 1_000_000:06d}"


# ---------------------------------------------------------------- signing


def sign(secret: str, timestamp: int | str, body: str | bytes) -> dict[str, str]:
    """The two headers Slack adds to every request: `v0=` + HMAC-SHA256 of `v0:{ts}:{body}`."""
    raw = body.encode() if isinstance(body, str) else body
    base = b"v0:" + str(timestamp).encode() + b":" + raw
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(timestamp), "X-Slack-Signature": f"v0={digest}"}


def signed_headers(
    body: str | bytes,
    *,
    content_type: str,
    secret: str = SIGNING_SECRET,
    timestamp: int | None = None,
    retry_num: int | None = None,
    retry_reason: str = "http_timeout",
) -> dict[str, str]:
    """Every header of a Slack request. `retry_num` makes it one of Slack's Events API retries,
    which resend the same body (and event_id) with `X-Slack-Retry-Num` 1, 2 or 3."""
    headers = {"Content-Type": content_type}
    headers.update(sign(secret, int(time.time()) if timestamp is None else timestamp, body))
    if retry_num is not None:
        headers["X-Slack-Retry-Num"] = str(retry_num)
        headers["X-Slack-Retry-Reason"] = retry_reason
    return headers


def signed_form(
    fields: Mapping[str, str],
    *,
    secret: str = SIGNING_SECRET,
    timestamp: int | None = None,
) -> tuple[str, dict[str, str]]:
    """Body and headers of a form post: slash commands, and interactivity (`payload=<json>`)."""
    body = form_body(fields)
    headers = signed_headers(
        body,
        content_type="application/x-www-form-urlencoded",
        secret=secret,
        timestamp=timestamp,
    )
    return body, headers


def signed_json(
    payload: Mapping[str, Any],
    *,
    secret: str = SIGNING_SECRET,
    timestamp: int | None = None,
    retry_num: int | None = None,
    retry_reason: str = "http_timeout",
) -> tuple[str, dict[str, str]]:
    """Body and headers of an Events API delivery (event_callback, url_verification)."""
    body = json.dumps(payload)
    headers = signed_headers(
        body,
        content_type="application/json",
        secret=secret,
        timestamp=timestamp,
        retry_num=retry_num,
        retry_reason=retry_reason,
    )
    return body, headers


def form_body(fields: Mapping[str, str]) -> str:
    return urlencode(fields)


def interactive_form(payload: Mapping[str, Any]) -> dict[str, str]:
    """Interactivity requests are a form with one field holding the JSON payload."""
    return {"payload": json.dumps(payload)}


# ---------------------------------------------------------------- slash commands


def slash_command(
    text: str = "",
    *,
    command: str = "/crew",
    user_id: str = "U0ALICE001",
    user_name: str = "alice",
    channel_id: str = "C0CONTENT1",
    channel_name: str = "content",
    trigger_id: str | None = None,
    response_url: str | None = None,
    workspace: Workspace = WORKSPACE,
) -> dict[str, str]:
    """The fields of a slash command: the form body in HTTP mode, the payload in Socket Mode."""
    n = next(_event_counter)
    return {
        "token": workspace.verification_token,
        "team_id": workspace.team_id,
        "team_domain": workspace.team_domain,
        "channel_id": channel_id,
        "channel_name": channel_name,
        "user_id": user_id,
        "user_name": user_name,
        "command": command,
        "text": text,
        "api_app_id": workspace.app_id,
        "is_enterprise_install": "false",
        "response_url": response_url
        or f"https://hooks.slack.com/commands/{workspace.team_id}/{n}/fakeResponseUrl{n}",
        "trigger_id": trigger_id or f"{n}.{n}.{n:032x}",
    }


# ---------------------------------------------------------------- Events API


def event_callback(
    event: Mapping[str, Any],
    *,
    event_id: str | None = None,
    event_time: int | None = None,
    workspace: Workspace = WORKSPACE,
) -> dict[str, Any]:
    """Wrap an event in the outer envelope Slack delivers (the same in HTTP and Socket Mode)."""
    event_id = event_id or new_event_id()
    return {
        "token": workspace.verification_token,
        "team_id": workspace.team_id,
        "api_app_id": workspace.app_id,
        "event": dict(event),
        "type": "event_callback",
        "event_id": event_id,
        "event_time": int(time.time()) if event_time is None else event_time,
        "authorizations": [
            {
                "enterprise_id": None,
                "team_id": workspace.team_id,
                "user_id": workspace.bot_user_id,
                "is_bot": True,
                "is_enterprise_install": False,
            }
        ],
        "is_ext_shared_channel": False,
        "event_context": f"4-{event_id}",
    }


def _reaction_event(
    kind: str, user: str, reaction: str, channel: str, ts: str, item_user: str | None
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": kind,
        "user": user,
        "reaction": reaction,
        "item": {"type": "message", "channel": channel, "ts": ts},
        "event_ts": new_ts(),
    }
    if item_user is not None:
        event["item_user"] = item_user
    return event


def reaction_added(
    *,
    user: str,
    reaction: str,
    channel: str,
    ts: str,
    item_user: str | None = WORKSPACE.bot_user_id,
    event_id: str | None = None,
    event_time: int | None = None,
    workspace: Workspace = WORKSPACE,
) -> dict[str, Any]:
    """`reaction` is the emoji name without colons, e.g. "white_check_mark" for ✅; `item_user`
    is the author of the message reacted to (the bot, for drafts)."""
    event = _reaction_event("reaction_added", user, reaction, channel, ts, item_user)
    return event_callback(event, event_id=event_id, event_time=event_time, workspace=workspace)


def reaction_removed(
    *,
    user: str,
    reaction: str,
    channel: str,
    ts: str,
    item_user: str | None = WORKSPACE.bot_user_id,
    event_id: str | None = None,
    event_time: int | None = None,
    workspace: Workspace = WORKSPACE,
) -> dict[str, Any]:
    event = _reaction_event("reaction_removed", user, reaction, channel, ts, item_user)
    return event_callback(event, event_id=event_id, event_time=event_time, workspace=workspace)


def thread_message(
    *,
    user: str,
    text: str,
    channel: str,
    thread_ts: str,
    ts: str | None = None,
    parent_user_id: str | None = WORKSPACE.bot_user_id,
    channel_type: str = "channel",
    event_id: str | None = None,
    event_time: int | None = None,
    workspace: Workspace = WORKSPACE,
) -> dict[str, Any]:
    """A person's reply in a thread (`message.channels` / `message.groups` subscription)."""
    ts = ts or new_ts()
    event: dict[str, Any] = {
        "type": "message",
        "client_msg_id": f"00000000-0000-4000-8000-{next(_event_counter):012d}",
        "user": user,
        "text": text,
        "ts": ts,
        "thread_ts": thread_ts,
        "team": workspace.team_id,
        "channel": channel,
        "event_ts": ts,
        "channel_type": channel_type,
    }
    if parent_user_id is not None:
        event["parent_user_id"] = parent_user_id
    return event_callback(event, event_id=event_id, event_time=event_time, workspace=workspace)


def app_mention(
    *,
    user: str,
    text: str,
    channel: str,
    ts: str | None = None,
    thread_ts: str | None = None,
    event_id: str | None = None,
    event_time: int | None = None,
    workspace: Workspace = WORKSPACE,
) -> dict[str, Any]:
    """`text` is raw Slack text; a mention of the bot reads `<@U0CREWBOT1>`."""
    ts = ts or new_ts()
    event: dict[str, Any] = {
        "type": "app_mention",
        "client_msg_id": f"00000000-0000-4000-8000-{next(_event_counter):012d}",
        "user": user,
        "text": text,
        "ts": ts,
        "team": workspace.team_id,
        "channel": channel,
        "event_ts": ts,
    }
    if thread_ts is not None:
        event["thread_ts"] = thread_ts
    return event_callback(event, event_id=event_id, event_time=event_time, workspace=workspace)


def url_verification(
    challenge: str = "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
    *,
    workspace: Workspace = WORKSPACE,
) -> dict[str, str]:
    """The handshake Slack sends when a Request URL is saved; the app echoes `challenge`."""
    return {
        "token": workspace.verification_token,
        "challenge": challenge,
        "type": "url_verification",
    }
