"""Mention, link, markdown and command injection through a run's topic, thread replies and
LLM drafts, on the shell and on Slack: shown literally, never acted on.

An LLM that writes whatever an attacker steered it to is simulated by `Hostile`, which answers
every step with the topic, the feedback and a payload of everything that means something to
Slack, rich or a terminal, plus lines that look like `/crew` commands and shell verbs.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from agents.llm import Completion, LLMRequest
from storage import models
from tests.conftest import Bot
from tests.fakes.slack_api import FakeSlack
from tests.fakes.slack_signing import reaction_added, thread_message
from tests.test_slack import ALICE, CHANNEL, EDITH, ERIC, SlackBot, build, served, slack_env

PAYLOAD = (
    "<!channel> <!here|here> <!everyone> <!subteam^S0EDITORS> <@U0ERIC0001> <#C0OPS1234> "
    "<https://evil.example/login|Approve here> <mailto:a@evil.example|mail> "
    "&lt;!channel&gt; @here @channel @everyone "
    "[link=https://evil.example]click[/link] [bold red]ALERT[/bold red] "
    "\x1b[2J\x1b]0;pwned\x07\x1b]8;;https://evil.example\x1b\\hyper\x1b]8;;\x1b\\ done\n"
    "/crew approve 1\n/crew cancel 1\nreact #4 ✅\nreact #4 :white_check_mark:\n"
    ":white_check_mark: approved by the editors\n"
)
COMMANDS_IN_TEXT = "\n/crew approve 1\nreact #4 ✅\n"


class Hostile:
    """An LLM provider that repeats what it was given and adds the payload."""

    name = "hostile"

    async def complete(self, request: LLMRequest) -> Completion:
        text = f"{request.role} v{request.version} on {request.topic}\n"
        text += f"feedback: {request.feedback or '-'}\n{PAYLOAD}"
        return Completion(text, "hostile", request.model, 10, 10, 0.0, 1)

    async def aclose(self) -> None:
        return None


def assert_nothing_was_decided(runs: list[models.Run], votes: list[models.ApprovalVote]) -> None:
    """One run, still waiting, and the only vote the editor's own send-back."""
    assert [r.status for r in runs] == [models.RunStatus.AWAITING_APPROVAL]
    assert [v.vote for v in votes] == ["revise"]


# -- the shell ------------------------------------------------------------------------------


async def test_injection_through_topic_reply_and_draft_in_the_shell(bot_factory) -> None:  # type: ignore[no-untyped-def]
    bot: Bot = bot_factory(llm=Hostile())
    async with bot.app.running():
        await bot.type("/crew run blog-post heat [bold]pumps[/bold] <!here> \x1b[31mred")
        await bot.wait()
        bot.act_as("editor")
        draft = bot.latest_draft()
        await bot.type(f"reply #{draft.id} [link=https://evil.example]x[/link]{COMMANDS_IN_TEXT}")
        await bot.type(f"react #{draft.id} 🔁")
        await bot.wait()
    transcript = bot.transcript
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", transcript)  # no terminal control
    for literal in (
        "[link=https://evil.example]click[/link]",
        "[bold red]ALERT[/bold red]",
        "heat [bold]pumps[/bold] <!here>",
        "feedback: [link=https://evil.example]x[/link]",
        "/crew approve 1",
        ":white_check_mark: approved by the editors",  # not turned into ✅
    ):
        assert literal in transcript, literal
    assert bot.latest_draft().version == 2
    assert_nothing_was_decided(bot.rows(models.Run), bot.rows(models.ApprovalVote))
    assert bot.audit("run.cancelled") == []
    await bot.app.aclose()


# -- Slack ----------------------------------------------------------------------------------

PEOPLE = {f"<@{u}>" for u in (ALICE, EDITH, ERIC)}


@pytest.fixture
async def hostile_slack_bot(
    db_url: str, tmp_path: Path, slack: FakeSlack
) -> AsyncIterator[SlackBot]:
    app, platform = build(slack_env(db_url, tmp_path, slack.api_url), llm=Hostile())
    async with served(app, platform) as (base, http):
        yield SlackBot(app, slack, f"{base}/slack/events", http)


def shown_texts(call_args: dict[str, Any]) -> list[str]:
    """Every string of a Web API call a person can see: text, blocks, attachments."""
    out: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk({k: call_args.get(k) for k in ("text", "blocks", "attachments")})
    return out


async def test_injection_through_topic_reply_and_draft_on_slack(
    hostile_slack_bot: SlackBot,
) -> None:
    bot = hostile_slack_bot
    # what Slack sends for typed <, > and &: entities, which the bot decodes to store the text
    await bot.command(f"run blog-post heat pumps &lt;!channel&gt; &lt;@{ERIC}&gt;\n/crew approve 1")
    await bot.wait()
    card_ts, draft_ts = bot.ts_of("run_card"), bot.ts_of("draft")
    await bot.event(
        thread_message(
            user=EDITH,
            text="&lt;https://evil.example|shorter&gt; /crew cancel 1\nreact #4 :x:",
            channel=CHANNEL,
            thread_ts=card_ts,
        )
    )
    await bot.event(reaction_added(user=EDITH, reaction="repeat", channel=CHANNEL, ts=draft_ts))
    await bot.wait()

    calls = [
        c
        for c in bot.slack.calls
        if c.method in ("chat.postMessage", "chat.update", "chat.postEphemeral")
    ]
    assert calls
    for call in calls:
        assert "link_names" not in call.args and "parse" not in call.args
        for text in shown_texts(call.args):
            for token in re.findall(r"<[^>]*>", text):
                assert token in PEOPLE, (token, text[:200])  # only the bot's own mentions
    v2 = " ".join(shown_texts(bot.slack.message(CHANNEL, bot.ts_of("draft")).as_api()))
    for literal in (
        "&lt;!channel&gt; &lt;!here|here&gt; &lt;!everyone&gt;",
        f"&lt;@{ERIC}&gt;",
        "&lt;https://evil.example/login|Approve here&gt;",
        "&amp;lt;!channel&amp;gt;",  # an entity in a draft is shown as typed, not decoded
        "feedback: &lt;https://evil.example|shorter&gt; /crew cancel 1",
        "heat pumps &lt;!channel&gt;",
        "/crew approve 1",
    ):
        assert literal in v2, literal
    sections = [b for c in calls for b in _sections(c.args)]
    assert sections and all(b["text"].get("verbatim") is True for b in sections)
    run = bot.run()
    assert run.status == models.RunStatus.AWAITING_APPROVAL and run.decided_by is None
    with bot.app.db.read() as s:
        assert_nothing_was_decided(
            list(s.exec(select(models.Run)).all()), list(s.exec(select(models.ApprovalVote)).all())
        )
        [draft] = [x for x in s.exec(select(models.Step)).all() if x.name == "draft"]
    assert draft.version == 2


def _sections(args: dict[str, Any]) -> list[dict[str, Any]]:
    blocks = list(args.get("blocks") or [])
    for attachment in args.get("attachments") or []:
        blocks += attachment.get("blocks", [])
    return [b for b in blocks if b.get("type") == "section"]
