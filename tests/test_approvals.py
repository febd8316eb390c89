"""Who may decide, quorum, duplicates and races, timeouts, cancel: one decision, never two."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from agents.llm import Completion, LLMRequest
from agents.offline import OfflineProvider
from commands.events import Actor, ReactionAdded, ReactionRemoved
from storage import models
from tests.conftest import Bot, FakeClock, blog_post

EDITORS = {"roles": {"editors": ["shell:ed", "shell:eve", "shell:fay"]}}


def policy(**approval: Any) -> dict[str, Any]:
    return {**EDITORS, **blog_post(**{"approvers": ["role:editors"], **approval})}


async def started(bot: Bot) -> models.Message:
    await bot.type("/crew run blog-post Why heat pumps beat gas boilers")
    await bot.wait()
    return bot.latest_draft()


def react(bot: Bot, who: str, message: models.Message, emoji: str, event_id: str) -> None:
    bot.app.dispatcher.handle_now(
        ReactionAdded(event_id, Actor("shell", who), "shell", str(message.id), emoji)
    )


async def test_the_same_reaction_delivered_three_times_counts_once(bot_factory) -> None:
    bot: Bot = bot_factory(policy(quorum=2))
    async with bot.app.running():
        draft = await started(bot)
        for _ in range(3):
            react(bot, "ed", draft, "white_check_mark", event_id="Ev01")
        await bot.wait()
        assert len(bot.rows(models.ApprovalVote)) == 1
        assert len(bot.rows(models.InboundEvent)) == 2  # the command and the reaction
        assert bot.run().status == models.RunStatus.AWAITING_APPROVAL
        # the same person reacting again (a new event) is still one vote toward quorum 2
        react(bot, "ed", draft, "✅", event_id="Ev02")
        await bot.wait()
        assert bot.run().status == models.RunStatus.AWAITING_APPROVAL
    await bot.app.aclose()


async def test_racing_reactions_make_exactly_one_decision(bot_factory) -> None:
    bot: Bot = bot_factory(policy(quorum=1))
    async with bot.app.running():
        draft = await started(bot)
        barrier = threading.Barrier(3)

        def vote(who: str, emoji: str) -> None:
            barrier.wait()
            react(bot, who, draft, emoji, event_id=f"race-{who}")

        await asyncio.gather(
            asyncio.to_thread(vote, "ed", "✅"),
            asyncio.to_thread(vote, "eve", "❌"),
            asyncio.to_thread(vote, "fay", "✅"),
        )
        await bot.wait()
        decisions = bot.messages("decision")
        assert len(decisions) == 1
        run = bot.run()
        assert run.status in (models.RunStatus.SUCCEEDED, models.RunStatus.REJECTED)
        assert len(bot.messages("published")) == (run.status == models.RunStatus.SUCCEEDED)
    await bot.app.aclose()


async def test_an_outsiders_reaction_changes_nothing_and_is_answered_privately(
    bot_factory,
) -> None:
    bot: Bot = bot_factory(policy())
    async with bot.app.running():
        draft = await started(bot)
        bot.act_as("mallory")
        await bot.type(f"react #{draft.id} ✅")
        out = await bot.wait()
        assert out.count("only the approvers of this step can decide") == 1  # answered once
        assert bot.run().status == models.RunStatus.AWAITING_APPROVAL
        assert bot.rows(models.ApprovalVote) == []
        refused = bot.audit("vote.refused")
        assert [a.actor for a in refused] == ["shell:mallory"]
        # and /crew approve is no back door
        out = await bot.type("/crew approve 1")
        assert "may not run approve" in out
        assert bot.run().status == models.RunStatus.AWAITING_APPROVAL
    await bot.app.aclose()


async def test_quorum_of_two_needs_two_different_editors(bot_factory) -> None:
    bot: Bot = bot_factory(policy(quorum=2))
    async with bot.app.running():
        draft = await started(bot)
        bot.act_as("ed")
        out = await bot.type(f"react #{draft.id} ✅")
        assert "approval counted: 1 of 2" in out
        await bot.wait()
        assert bot.run().status == models.RunStatus.AWAITING_APPROVAL
        bot.act_as("eve")
        await bot.type(f"react #{draft.id} ✅")
        await bot.wait()
        assert bot.run().status == models.RunStatus.SUCCEEDED
        assert bot.run().decided_by == "shell:eve"
    await bot.app.aclose()


async def test_removing_a_reaction_before_the_decision_withdraws_the_vote(bot_factory) -> None:
    bot: Bot = bot_factory(policy(quorum=2))
    async with bot.app.running():
        draft = await started(bot)
        react(bot, "ed", draft, "✅", "a1")
        bot.app.dispatcher.handle_now(
            ReactionRemoved("r1", Actor("shell", "ed"), "shell", str(draft.id), "✅")
        )
        react(bot, "eve", draft, "✅", "a2")
        await bot.wait()
        assert bot.run().status == models.RunStatus.AWAITING_APPROVAL  # ed's vote was withdrawn
        assert [v.approver for v in bot.rows(models.ApprovalVote)] == ["shell:eve"]
        assert len(bot.audit("vote.withdrawn")) == 1
    await bot.app.aclose()


async def test_the_requester_cannot_approve_their_own_run(bot_factory) -> None:
    bot: Bot = bot_factory(policy(), user="ed")
    async with bot.app.running():
        draft = await started(bot)
        await bot.type(f"react #{draft.id} ✅")
        out = await bot.wait()
        assert out.count("does not allow self-approval") == 1
        assert bot.run().status == models.RunStatus.AWAITING_APPROVAL
    await bot.app.aclose()


async def test_self_approval_when_the_workflow_allows_it(bot_factory) -> None:
    bot: Bot = bot_factory(policy(allow_self_approval=True), user="ed")
    async with bot.app.running():
        draft = await started(bot)
        await bot.type(f"react #{draft.id} ✅")
        await bot.wait()
        assert bot.run().status == models.RunStatus.SUCCEEDED
    await bot.app.aclose()


async def test_revise_loop_to_v3_uses_each_reactors_latest_reply(bot_factory) -> None:
    bot: Bot = bot_factory(policy())
    async with bot.app.running():
        draft = await started(bot)
        bot.act_as("ed")
        await bot.type(f"reply #{draft.id} too long", f"reply #{draft.id} shorter please")
        await bot.type(f"react #{draft.id} 🔁")
        await bot.wait()
        v2 = bot.latest_draft()
        bot.act_as("eve")
        await bot.type(f"reply #{v2.id} add a table of costs", f"react #{v2.id} :repeat:")
        await bot.wait()
        v3 = bot.latest_draft()
        assert [d.version for d in bot.messages("draft")] == [1, 2, 3]
        with bot.app.db.read() as s:
            drafts = s.exec(models.DraftVersion.__table__.select()).all()  # type: ignore[attr-defined]
        feedback = {d.version: d.feedback for d in drafts}
        assert feedback == {1: None, 2: "shorter please", 3: "add a table of costs"}
        await bot.type(f"react #{v3.id} ✅")
        await bot.wait()
        assert bot.run().status == models.RunStatus.SUCCEEDED
    await bot.app.aclose()


async def test_approval_timeout_escalates_once_with_a_reminder(bot_factory) -> None:
    clock = FakeClock()
    bot: Bot = bot_factory(policy(timeout="2h", on_timeout="escalate"), clock=clock)
    async with bot.app.running():
        await started(bot)
        assert bot.app.crew.approvals.check_deadlines() == 0
        clock.advance(hours=2, seconds=1)
        assert bot.app.crew.approvals.check_deadlines() == 1
        out = await bot.wait()
        assert "has waited 2h 00m for a decision · @ed, @eve, @fay" in out
        assert bot.app.crew.approvals.check_deadlines() == 0  # once
        assert bot.run().status == models.RunStatus.AWAITING_APPROVAL
        assert len(bot.messages("reminder")) == 1
    await bot.app.aclose()


async def test_approval_timeout_can_reject(bot_factory) -> None:
    clock = FakeClock()
    bot: Bot = bot_factory(policy(timeout="30m", on_timeout="reject"), clock=clock)
    async with bot.app.running():
        await started(bot)
        clock.advance(minutes=31)
        assert bot.app.crew.approvals.check_deadlines() == 1
        out = await bot.wait()
        run = bot.run()
        assert run.status == models.RunStatus.REJECTED
        assert run.decided_by == "timeout"
        assert "rejected by timeout: approval timed out" in out
        assert bot.messages("published") == []
    await bot.app.aclose()


async def test_cancel_by_reaction_and_by_command(bot_factory) -> None:
    bot: Bot = bot_factory(policy())
    async with bot.app.running():
        draft = await started(bot)
        bot.act_as("mallory")
        await bot.type(f"react #{draft.id} 🛑")
        await bot.wait()
        assert bot.run().status == models.RunStatus.AWAITING_APPROVAL
        bot.act_as("alice")  # the requester
        await bot.type(f"react #{draft.id} 🛑")
        await bot.wait()
        run = bot.run()
        assert run.status == models.RunStatus.CANCELLED
        assert run.decided_by == "shell:alice"
        assert {s.status for s in bot.steps()} == {"succeeded", "cancelled"}

        out = await bot.type("/crew cancel 1")
        assert "already finished" in out
    await bot.app.aclose()


class GatedModel(OfflineProvider):
    """The offline model, answering only once the test opens the gate."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.called = asyncio.Event()

    async def complete(self, request: LLMRequest) -> Completion:
        self.called.set()
        await self.gate.wait()
        return await super().complete(request)


async def test_cancelling_while_an_agent_works_drops_its_result(bot_factory) -> None:
    model = GatedModel()
    bot: Bot = bot_factory(policy(), llm=model)
    async with bot.app.running():
        await bot.type("/crew run blog-post heat pumps")
        await asyncio.wait_for(model.called.wait(), 10)  # the researcher is at work
        out = await bot.type("/crew cancel 1")
        assert "run 1 cancelled" in out
        model.gate.set()
        await bot.wait()
        assert bot.run().status == models.RunStatus.CANCELLED
        assert {s.status for s in bot.steps()} == {"cancelled"}
        assert bot.messages("notes") == [] and bot.messages("draft") == []
    await bot.app.aclose()


async def test_approve_and_reject_by_command(bot_factory) -> None:
    bot: Bot = bot_factory(policy())
    async with bot.app.running():
        await started(bot)
        bot.act_as("ed")
        out = await bot.type("/crew reject 1 off-brand tone")
        assert "run 1: draft rejected" in out
        await bot.wait()
        run = bot.run()
        assert run.status == models.RunStatus.REJECTED
        assert "rejected by shell:ed: off-brand tone" in bot.transcript
    await bot.app.aclose()


async def test_unknown_emoji_gets_an_answer_and_changes_nothing(bot: Bot) -> None:
    draft = await started(bot)
    bot.act_as("editor")
    out = await bot.type(f"react #{draft.id} 🎉")
    assert "🎉 means nothing to crewchief here" in out
    assert bot.rows(models.ApprovalVote) == []
    assert bot.run().status == models.RunStatus.AWAITING_APPROVAL


async def test_revise_loop_goes_on_past_the_step_retry_limit(bot_factory) -> None:
    bot: Bot = bot_factory(policy())
    async with bot.app.running():
        draft = await started(bot)
        bot.act_as("ed")
        for _ in range(4):  # v1 -> v5: each version is new work, not a retry
            await bot.type(f"reply #{draft.id} again, shorter", f"react #{draft.id} 🔁")
            await bot.wait()
            draft = bot.latest_draft()
        assert draft.version == 5
        assert bot.run().status == models.RunStatus.AWAITING_APPROVAL
    await bot.app.aclose()


async def test_a_vote_on_a_superseded_draft_changes_nothing(bot_factory) -> None:
    bot: Bot = bot_factory(policy())
    async with bot.app.running():
        v1 = await started(bot)
        bot.act_as("ed")
        await bot.type(f"react #{v1.id} 🔁")
        await bot.wait()
        bot.act_as("eve")
        out = await bot.type(f"react #{v1.id} ✅")
        assert "that draft is no longer waiting for a decision (v2 is the current draft)" in out
        await bot.wait()
        assert bot.run().status == models.RunStatus.AWAITING_APPROVAL
        assert [v.version for v in bot.rows(models.ApprovalVote)] == [1]  # only ed's 🔁 on v1
    await bot.app.aclose()


async def test_an_escalated_draft_leaves_nothing_due(bot_factory) -> None:
    """After the reminder, nothing is due until someone acts: the loops sleep, not spin."""
    from storage.queries import next_delivery_due, next_step_due

    clock = FakeClock()
    bot: Bot = bot_factory(policy(timeout="1h"), clock=clock)
    async with bot.app.running():
        await started(bot)
        clock.advance(hours=2)
        assert bot.app.crew.approvals.check_deadlines() == 1
        await bot.wait()
        with bot.app.db.read() as s:
            assert next_step_due(s) is None
            assert next_delivery_due(s, ["shell"]) is None
        assert bot.app.crew.approvals.check_deadlines() == 0
    await bot.app.aclose()


async def test_configured_reactions_are_the_ones_shown_and_counted(bot_factory) -> None:
    bot: Bot = bot_factory({**policy(), "reactions": {"approve": ["👍", "+1"]}})
    async with bot.app.running():
        draft = await started(bot)
        assert "👍 approve · ❌ reject · 🔁 send back" in bot.transcript
        bot.act_as("ed")
        out = await bot.type(f"react #{draft.id} ✅")
        assert "✅ means nothing to crewchief here; use 👍 approve" in out
        await bot.type(f"react #{draft.id} :+1:")
        await bot.wait()
        assert bot.run().status == models.RunStatus.SUCCEEDED
    await bot.app.aclose()


@pytest.mark.parametrize(
    ("who", "line", "told"),
    [
        ("mallory", "/crew cancel 1", "only the requester, the run's approvers or an admin"),
        ("mallory", "/crew retry 1", "only the requester, the run's approvers or an admin"),
        ("mallory", "/crew approve 1", "you may not run approve"),
        ("mallory", "/crew revise 1 shorter", "you may not run revise"),
        ("alice", "/crew approve 1", "does not allow self-approval"),
        ("mallory", "react DRAFT ✅", "only the approvers of this step can decide"),
        ("mallory", "react DRAFT 🛑", "only the requester, the run's approvers or an admin"),
        ("alice", "react DRAFT ✅", "does not allow self-approval"),
    ],
)
async def test_every_refusal_is_answered_exactly_once_in_the_shell(
    bot_factory, who: str, line: str, told: str
) -> None:
    bot: Bot = bot_factory(policy(approvers=["shell:alice", "shell:ed"]))
    async with bot.app.running():
        draft = await started(bot)
        bot.act_as(who)
        await bot.type(line.replace("DRAFT", f"#{draft.id}"))
        out = await bot.wait()
        assert out.count(told) == 1
        assert bot.run().status == models.RunStatus.AWAITING_APPROVAL
        assert len([a for a in bot.rows(models.AuditEntry) if a.action.endswith(".refused")]) == 1
    await bot.app.aclose()


async def test_revise_by_command_sends_the_draft_back_with_the_notes(bot_factory) -> None:
    """/crew revise: the send-back for people whose thread replies the bot cannot read."""
    bot: Bot = bot_factory(policy())
    async with bot.app.running():
        await started(bot)
        bot.act_as("ed")
        out = await bot.type("/crew revise 1 shorter, add a cost table")
        assert "run 1: draft sent back" in out
        await bot.wait()
        assert bot.run().status == models.RunStatus.AWAITING_APPROVAL
        assert bot.latest_draft().version == 2
        drafts = sorted(bot.rows(models.DraftVersion), key=lambda d: d.version)
        assert [d.feedback for d in drafts] == [None, "shorter, add a cost table"]
        assert "sent back by shell:ed" in bot.transcript
    await bot.app.aclose()
