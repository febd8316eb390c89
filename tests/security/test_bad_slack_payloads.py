"""Malformed Slack requests, correctly signed, posted to the real Bolt HTTP endpoint: each is
answered with a 2xx or 4xx, none is a 500 or logs an error, and none records anything."""

from __future__ import annotations

import json
from typing import Any

from sqlmodel import func, select

from storage import models
from tests.fakes.slack_signing import (
    event_callback,
    form_body,
    reaction_added,
    signed_headers,
    slash_command,
    thread_message,
)
from tests.security.conftest import LogCapture
from tests.test_slack import ALICE, CHANNEL, EDITH, SlackBot

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
RECORDED = (
    models.Run,
    models.ApprovalVote,
    models.ThreadReply,
    models.Outbox,
    models.AuditEntry,
    models.InboundEvent,
)


def recorded(bot: SlackBot) -> dict[str, int]:
    with bot.app.db.read() as s:
        return {t.__name__: s.exec(select(func.count()).select_from(t)).one() for t in RECORDED}


def event(**fields: Any) -> str:
    """An event_callback around a hand-made (malformed) event."""
    return json.dumps(event_callback(fields))


def reaction(draft_ts: str, **changes: Any) -> str:
    payload = reaction_added(user=EDITH, reaction="white_check_mark", channel=CHANNEL, ts=draft_ts)
    for key, value in changes.items():
        target = payload["event"]["item"] if key.startswith("item_") else payload["event"]
        name = key.removeprefix("item_")
        if value is None:
            del target[name]
        else:
            target[name] = value
    return json.dumps(payload)


def reply(card_ts: str, **changes: Any) -> str:
    payload = thread_message(user=EDITH, text="shorter", channel=CHANNEL, thread_ts=card_ts)
    for key, value in changes.items():
        if value is None:
            del payload["event"][key]
        else:
            payload["event"][key] = value
    return json.dumps(payload)


def command(**changes: str | None) -> str:
    fields: dict[str, str] = dict(slash_command("run research-brief heat pumps", user_id=ALICE))
    for key, value in changes.items():
        if value is None:
            del fields[key]
        else:
            fields[key] = value
    return form_body(fields)


def cases(card_ts: str, draft_ts: str) -> dict[str, tuple[str, str]]:
    whole = reaction(draft_ts)
    return {
        "empty JSON body": (JSON, ""),
        "invalid JSON": (JSON, "{not json"),
        "truncated JSON": (JSON, whole[: len(whole) // 2]),
        "JSON null": (JSON, "null"),
        "JSON list": (JSON, "[1, 2]"),
        "JSON string": (JSON, '"event_callback"'),
        "event_callback without event": (JSON, json.dumps({"type": "event_callback"})),
        "event is a string": (JSON, json.dumps({"type": "event_callback", "event": "x"})),
        "event of unknown type": (JSON, event(type="no_such_event", user=EDITH)),
        "url_verification without challenge": (JSON, json.dumps({"type": "url_verification"})),
        "reaction without item": (JSON, reaction(draft_ts, item=None)),
        "reaction item is a string": (JSON, reaction(draft_ts, item="message")),
        "reaction item without channel": (JSON, reaction(draft_ts, item_channel=None)),
        "reaction item without ts": (JSON, reaction(draft_ts, item_ts=None)),
        "reaction item ts is a number": (JSON, reaction(draft_ts, item_ts=12.5)),
        "reaction item channel is a list": (JSON, reaction(draft_ts, item_channel=[CHANNEL])),
        "reaction user is a dict": (JSON, reaction(draft_ts, user={"id": EDITH})),
        "reaction name is a number": (JSON, reaction(draft_ts, reaction=5)),
        "reaction name is null": (JSON, reaction(draft_ts, reaction=None)),
        "reply without channel": (JSON, reply(card_ts, channel=None)),
        "reply text is a number": (JSON, reply(card_ts, text=42)),
        "reply text is a list": (JSON, reply(card_ts, text=["shorter"])),
        "reply user is a number": (JSON, reply(card_ts, user=7)),
        "reply thread_ts is a dict": (JSON, reply(card_ts, thread_ts={"ts": card_ts})),
        "mention without channel": (JSON, event(type="app_mention", user=EDITH, text="hi")),
        "mention user is a list": (
            JSON,
            event(type="app_mention", user=[EDITH], text="hi", channel=CHANNEL),
        ),
        "command without user_id": (FORM, command(user_id=None)),
        "command without channel_id": (FORM, command(channel_id=None)),
        "command with an empty user_id": (FORM, command(user_id="")),
        "command form truncated": (FORM, command()[:40]),
        "command form with broken escapes": (FORM, "command=%2Fcrew&text=%zz%&user_id"),
        "oversized command": (FORM, command(text="run research-brief " + "x" * 3_000_000)),
        "oversized event": (JSON, reply(card_ts, text="x" * 3_000_000)),
    }


async def test_malformed_payloads_get_a_4xx_or_2xx_and_record_nothing(
    slack_bot: SlackBot, logs: LogCapture
) -> None:
    bot = slack_bot
    await bot.command("run blog-post heat pumps")
    await bot.wait()
    card_ts, draft_ts = bot.ts_of("run_card"), bot.ts_of("draft")
    problems = []
    for name, (content_type, body) in cases(card_ts, draft_ts).items():
        logs.records.clear()
        before = recorded(bot)
        headers = signed_headers(body, content_type=content_type)
        async with bot.http.post(bot.url, data=body.encode(), headers=headers) as resp:
            status, text = resp.status, await resp.text()
        await bot.wait()
        if not (200 <= status < 300 or 400 <= status < 500):
            problems.append(f"{name}: HTTP {status}")
        if "Traceback" in text:
            problems.append(f"{name}: a traceback in the answer")
        if logs.at_error():
            problems.append(f"{name}: logged {logs.at_error()[0][-1500:]}")
        if recorded(bot) != before:
            problems.append(f"{name}: recorded {recorded(bot)} (was {before})")
    assert problems == [], "\n".join(problems)
    assert bot.run().status == models.RunStatus.AWAITING_APPROVAL
