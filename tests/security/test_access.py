"""Who may act: forged or stale Slack requests, outsiders, people posing as approvers, and
requesters approving their own runs. Each threat is refused, changes nothing and is audited.

Already proven elsewhere and not repeated here: unsigned, wrongly signed and six-minute-old
slash commands (tests/test_slack.py::test_badly_signed_requests_are_refused_with_no_effect),
an outsider's reaction or `/crew approve` in the shell and on Slack, each answered privately
once and audited (tests/test_approvals.py, tests/test_slack.py::test_every_refusal_is_answered_
exactly_once), and a requester's own ✅ (tests/test_approvals.py).
"""

from __future__ import annotations

import json
import time

from sqlmodel import select

from storage import models
from tests.conftest import Bot
from tests.fakes.slack_signing import (
    SIGNING_SECRET,
    reaction_added,
    sign,
    signed_form,
    signed_json,
    slash_command,
    url_verification,
)
from tests.test_approvals import policy, started
from tests.test_slack import CHANNEL, EDITH, MALLORY, SlackBot


def forge(payload: dict[str, object], how: str) -> tuple[str, dict[str, str]]:
    now = int(time.time())
    if how == "wrong secret":
        return signed_json(payload, secret=SIGNING_SECRET[::-1])
    if how == "stale (six minutes)":
        return signed_json(payload, timestamp=now - 360)
    if how == "from the future (six minutes)":
        return signed_json(payload, timestamp=now + 360)
    if how == "body changed after signing":
        body, headers = signed_json(payload)
        return body.replace(MALLORY, EDITH), headers
    if how == "signature of another body":
        other = json.dumps(url_verification("x"))
        return json.dumps(payload), {
            "Content-Type": "application/json",
            **sign(SIGNING_SECRET, now, other),
        }
    if how == "malformed signature header":
        body, headers = signed_json(payload)
        return body, {**headers, "X-Slack-Signature": "v1=" + headers["X-Slack-Signature"][3:]}
    if how == "timestamp not a number":
        body, headers = signed_json(payload)
        return body, {**headers, "X-Slack-Request-Timestamp": "soon"}
    if how == "non-ASCII signature":
        body, headers = signed_json(payload)
        return body, {**headers, "X-Slack-Signature": "v0=" + "é" * 64}
    if how == "no signature headers":
        return json.dumps(payload), {"Content-Type": "application/json"}
    raise AssertionError(how)


FORGERIES = [
    "wrong secret",
    "stale (six minutes)",
    "from the future (six minutes)",
    "body changed after signing",
    "signature of another body",
    "malformed signature header",
    "timestamp not a number",
    "non-ASCII signature",
    "no signature headers",
]


async def test_forged_and_stale_event_signatures_are_401_and_record_nothing(
    slack_bot: SlackBot,
) -> None:
    """An approving reaction, forged each way: none is a vote, none is even seen as an event."""
    bot = slack_bot
    await bot.command("run blog-post heat pumps")
    await bot.wait()
    draft_ts = bot.ts_of("draft")
    with bot.app.db.read() as s:
        seen_before = len(s.exec(select(models.InboundEvent)).all())
    for how in FORGERIES:
        payload = reaction_added(
            user=MALLORY if how == "body changed after signing" else EDITH,
            reaction="white_check_mark",
            channel=CHANNEL,
            ts=draft_ts,
        )
        body, headers = forge(payload, how)
        async with bot.http.post(bot.url, data=body.encode(), headers=headers) as resp:
            assert resp.status == 401, how
    await bot.wait()
    assert bot.run().status == models.RunStatus.AWAITING_APPROVAL
    with bot.app.db.read() as s:
        assert s.exec(select(models.ApprovalVote)).all() == []
        assert len(s.exec(select(models.InboundEvent)).all()) == seen_before
    assert bot.slack.ephemerals == []
    # the same reaction, really signed, is a vote: the refusals above were the signatures
    assert (
        await bot.event(
            reaction_added(user=EDITH, reaction="white_check_mark", channel=CHANNEL, ts=draft_ts)
        )
        == 200
    )
    await bot.wait()
    assert bot.run().status == models.RunStatus.SUCCEEDED


async def test_an_outsider_posing_as_an_approver_changes_nothing(slack_bot: SlackBot) -> None:
    """Slack's `user_name` is a display name anyone can pick; only `user_id` is identity."""
    bot = slack_bot
    await bot.command("run blog-post heat pumps")
    await bot.wait()
    body, headers = signed_form(
        slash_command("approve 1", user_id=MALLORY, user_name="edith", channel_id=CHANNEL)
    )
    async with bot.http.post(bot.url, data=body, headers=headers) as resp:
        answer = await resp.json()
    assert answer["response_type"] == "ephemeral"  # told privately
    assert "you may not run approve" in answer["text"]
    await bot.wait()
    assert bot.run().status == models.RunStatus.AWAITING_APPROVAL
    with bot.app.db.read() as s:
        assert s.exec(select(models.ApprovalVote)).all() == []
        refused = s.exec(
            select(models.AuditEntry).where(models.AuditEntry.action == "command.refused")
        ).all()
    assert [a.actor for a in refused] == [f"slack:{MALLORY}"]
    assert not [m for m in bot.slack.calls_to("chat.postMessage") if "approved" in str(m.args)]


async def test_a_shell_user_cannot_take_a_slack_approvers_identity(bot_factory) -> None:  # type: ignore[no-untyped-def]
    bot: Bot = bot_factory(approvers=[f"slack:{EDITH}"])
    async with bot.app.running():
        await bot.type("/crew run blog-post heat pumps")
        await bot.wait()
        draft = bot.latest_draft()
        for name in (f"slack:{EDITH}", f"shell:slack:{EDITH}", f"{EDITH} ", "role:editors"):
            out = await bot.type(f"as {name}")
            assert "usage: as <name>" in out or bot.session.actor.qualified.startswith("shell:")
            await bot.type(f"react #{draft.id} ✅", "/crew approve 1")
        await bot.wait()
        assert bot.run().status == models.RunStatus.AWAITING_APPROVAL
        assert bot.rows(models.ApprovalVote) == []
        assert {a.actor.split(":")[0] for a in bot.audit("vote.refused")} == {"shell"}
    await bot.app.aclose()


async def test_a_requester_who_is_an_approver_cannot_fill_the_quorum(bot_factory) -> None:  # type: ignore[no-untyped-def]
    """Quorum 2 of editors ed and eve; ed launches: ed's own vote never counts, so eve's ✅
    alone decides nothing."""
    bot: Bot = bot_factory(policy(quorum=2), user="ed")
    async with bot.app.running():
        draft = await started(bot)
        mine = await bot.type(f"react #{draft.id} ✅")
        mine += await bot.wait()
        assert "does not allow self-approval" in mine
        bot.act_as("eve")
        out = await bot.type(f"react #{draft.id} ✅")
        assert "approval counted: 1 of 2" in out
        await bot.wait()
        assert bot.run().status == models.RunStatus.AWAITING_APPROVAL
        assert [v.approver for v in bot.rows(models.ApprovalVote)] == ["shell:eve"]
        assert [a.actor for a in bot.audit("vote.refused")] == ["shell:ed"]
    await bot.app.aclose()
