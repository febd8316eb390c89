"""Drafts and decisions: a draft waiting for people, who may decide, votes as rows, and the
decision once the policy is met, by reaction, by command or by timeout.

✅ needs `quorum` distinct approvers; one ❌ from an approver rejects and one 🔁 sends the
draft back; 🛑 cancels the run (requester, approvers, admins). The run, then the step, is
locked for the whole vote, so racing reactions are counted one after the other and decide
once. Every entry point returns an Outcome and writes no answer itself: the dispatcher
answers each event exactly once.

Adding a decision path means a method here (and a template for what it posts).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import unicodedata
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from agents import cards
from agents.config import ApprovalPolicy, Reactions
from agents.lifecycle import Clock, Lifecycle
from agents.outcomes import (
    AlreadyVoted,
    Cancelled,
    Counted,
    Decided,
    Ignored,
    Outcome,
    Refused,
    Withdrawn,
)
from agents.permissions import Permissions
from storage import outbox, rows
from storage.audit import audit
from storage.db import Database
from storage.models import (
    ApprovalVote,
    Decision,
    DraftVersion,
    Message,
    MessageKind,
    Run,
    RunStatus,
    Step,
    StepStatus,
    ThreadReply,
    Vote,
)
from storage.queries import approvals_of, drafts_past_deadline, lock_run, lock_step, steps_of

log = logging.getLogger(__name__)

DEADLINE_POLL = 1.0  # seconds between checks of approval timeouts

DECISIONS = {Vote.APPROVE: Decision.APPROVED, Vote.REJECT: Decision.REJECTED}
SETTLED = {
    Decision.APPROVED: StepStatus.SUCCEEDED,
    Decision.REJECTED: StepStatus.REJECTED,
    Decision.SENT_BACK: StepStatus.PENDING,
}


CUSTOM_EMOJI = re.compile(r"<a?:(?P<name>\w+):\d+>")


def normalize_emoji(emoji: str) -> str:
    """`:white_check_mark:`, `✅` and `✅︎` (with a variation selector) compare equal."""
    text = emoji.strip().strip(":").lower()
    text = "".join(
        ch for ch in text if unicodedata.category(ch) != "Mn" and ch not in "\ufe0e\ufe0f"
    )
    # Slack sends skin tones as "thumbsup::skin-tone-2".
    return text.split("::")[0]


class ApprovalService:
    def __init__(
        self,
        db: Database,
        lifecycle: Lifecycle,
        permissions: Permissions,
        reactions: Reactions,
    ) -> None:
        self.db = db
        self.lifecycle = lifecycle
        self.permissions = permissions
        self.reactions = reactions
        self.emoji: dict[str, Vote] = {}
        for vote, names in (
            (Vote.APPROVE, reactions.approve),
            (Vote.REJECT, reactions.reject),
            (Vote.REVISE, reactions.revise),
            (Vote.CANCEL, reactions.cancel),
        ):
            for name in names:
                self.emoji[normalize_emoji(name)] = vote

    @property
    def clock(self) -> Clock:
        return self.lifecycle.clock

    def vote_for(self, emoji: str) -> Vote | None:
        """A custom emoji (`<:approve:123>` on Discord) matches its full form or its name."""
        vote = self.emoji.get(normalize_emoji(emoji))
        custom = CUSTOM_EMOJI.fullmatch(emoji.strip())
        if vote is None and custom is not None:
            vote = self.emoji.get(normalize_emoji(custom["name"]))
        return vote

    def hint(self) -> str:
        r = self.reactions
        return f"{r.approve[0]} approve · {r.reject[0]} reject · {r.revise[0]} send back"

    # -- a draft waiting for people --------------------------------------------------------

    def await_approval(
        self,
        session: Session,
        run: Run,
        step: Step,
        policy: ApprovalPolicy,
        text: str,
        *,
        prompt_version: str | None = None,
    ) -> None:
        """The writer's new version: stored, waiting for people, its card posted."""
        assert run.id is not None and step.id is not None
        now = self.clock()
        deadline = now + policy.timeout if policy.timeout else None
        self.lifecycle.await_approval(session, run, step, text, deadline)
        rows.add(
            session,
            DraftVersion,
            run_id=run.id,
            step_id=step.id,
            version=step.version,
            content=text,
            feedback=step.feedback,
            prompt_version=prompt_version,
            created_at=now,
        )
        cards.post_in_thread(
            session,
            run,
            key=cards.draft_key(run.id, step, step.version),
            kind=MessageKind.DRAFT,
            step=step,
            version=step.version,
            context=self.draft_context(run, step, policy, text),
        )

    def draft_context(
        self,
        run: Run,
        step: Step,
        policy: ApprovalPolicy,
        text: str,
        decision: Decision | None = None,
        decided_by: str | None = None,
    ) -> dict[str, Any]:
        return {
            "step": step.name,
            "agent": step.agent,
            "version": step.version,
            "content": text,
            "feedback": step.feedback,
            "offline": self.lifecycle.offline,
            "approvers": sorted(self.permissions.approvers(policy)),
            "quorum": policy.quorum,
            "reactions": self.reactions.shown(),
            "decision": decision.value if decision else None,
            "decided_by": decided_by,
        }

    def lock_draft(
        self, session: Session, run: Run, step: Step, decision: Decision, who: str
    ) -> None:
        """Edit the current draft card to show the decision; it takes no more votes."""
        assert run.id is not None
        message = cards.draft_message(session, run.id, step, step.version)
        spec = self.lifecycle.spec_for(run, step)
        if message is None or spec is None or spec.approval is None:
            return
        outbox.update(
            session,
            message,
            template=MessageKind.DRAFT.value,
            context={
                "run_id": run.id,
                **self.draft_context(run, step, spec.approval, step.output or "", decision, who),
            },
        )

    # -- reactions -------------------------------------------------------------------------

    def reaction_added(
        self,
        session: Session,
        who: str,
        message: Message,
        emoji: str,
        roles: tuple[str, ...] = (),
    ) -> Outcome:
        vote = self.vote_for(emoji)
        if vote is None:
            return Ignored(
                f"{emoji} means nothing to crewchief here; use {self.hint()} · "
                f"{self.reactions.cancel[0]} cancel",
                run_id=message.run_id,
                quiet=True,  # a 🎉 on a draft: worth a word in the shell, noise in a channel
            )
        run = lock_run(session, message.run_id) if message.run_id else None
        if run is None:
            return Ignored("that message does not belong to a run", quiet=True)
        if vote == Vote.CANCEL:
            return self.cancel(session, run, who, roles)
        if message.kind != MessageKind.DRAFT or message.step_id is None:
            return Ignored("react on a draft to decide on it", run_id=run.id, quiet=True)
        step = lock_step(session, run.id or 0, message.step_id)
        if step is None:
            return Ignored("that draft is gone", run_id=run.id, quiet=True)
        return self.cast(session, run, step, who, vote, version=message.version, roles=roles)

    def reaction_removed(self, session: Session, who: str, message: Message, emoji: str) -> Outcome:
        """Removing a reaction before the decision withdraws that vote; after it, nothing."""
        vote = self.vote_for(emoji)
        if vote is None or vote == Vote.CANCEL or message.step_id is None or not message.run_id:
            return Ignored()
        lock_run(session, message.run_id)
        step = lock_step(session, message.run_id, message.step_id)
        if (
            step is None
            or step.status != StepStatus.AWAITING_APPROVAL
            or step.version != message.version
        ):
            return Ignored()
        row = session.exec(
            select(ApprovalVote).where(
                ApprovalVote.step_id == step.id,
                ApprovalVote.version == step.version,
                ApprovalVote.approver == who,
                ApprovalVote.vote == vote,
            )
        ).first()
        if row is None:
            return Ignored()
        session.delete(row)
        audit(session, who, "vote.withdrawn", step.run_id, vote=vote, version=step.version)
        return Withdrawn(step.run_id)

    # -- commands (`/crew approve 3`, `/crew reject 3 too long`, `/crew revise 3 shorter`) --

    def decide_by_command(
        self,
        session: Session,
        run: Run,
        who: str,
        vote: Vote,
        reason: str | None,
        roles: tuple[str, ...] = (),
    ) -> Outcome:
        step = next(
            (
                s
                for s in steps_of(session, run.id or 0, lock=True)
                if s.status == StepStatus.AWAITING_APPROVAL
            ),
            None,
        )
        if step is None:
            return Ignored(f"run {run.id} has no draft waiting for a decision", run_id=run.id)
        return self.cast(
            session, run, step, who, vote, version=step.version, reason=reason, roles=roles
        )

    def revise_by_command(
        self, session: Session, run: Run, who: str, notes: str, roles: tuple[str, ...] = ()
    ) -> Outcome:
        """Send the waiting draft back with `notes` as the feedback: 🔁 for people (or
        platforms) whose thread replies the bot cannot read."""
        return self.decide_by_command(session, run, who, Vote.REVISE, notes, roles)

    # -- the vote itself -------------------------------------------------------------------

    def cast(
        self,
        session: Session,
        run: Run,
        step: Step,
        who: str,
        vote: Vote,
        *,
        version: int | None,
        reason: str | None = None,
        roles: tuple[str, ...] = (),
    ) -> Outcome:
        """Record one vote and decide when the policy is met. For a revise, `reason` is the
        feedback (else the voter's latest reply in the thread)."""
        assert run.id is not None
        if step.status != StepStatus.AWAITING_APPROVAL or version != step.version:
            # too late (decided, sent back, superseded): kept in the audit log all the same
            audit(session, who, "vote.too_late", run.id, vote=vote, version=version)
            current = f" (v{step.version} is the current draft)" if step.version else ""
            return Ignored(
                f"that draft is no longer waiting for a decision{current}", run_id=run.id
            )
        spec = self.lifecycle.spec_for(run, step)
        if spec is None or spec.approval is None:
            return Ignored(f"workflow {run.workflow!r} is no longer configured", run_id=run.id)
        policy = spec.approval
        refusal = self.permissions.vote_refusal(run, policy, who, roles)
        if refusal is not None:
            return Refused(
                refusal,
                action="vote.refused",
                run_id=run.id,
                detail={"vote": vote.value, "version": step.version},
            )
        ballot = {"step_id": step.id, "version": step.version, "approver": who, "vote": vote}
        if rows.add_once(session, ApprovalVote, run_id=run.id, **ballot) is None:
            return AlreadyVoted(run.id)
        audit(session, who, "vote.cast", run.id, vote=vote, version=step.version)

        if vote == Vote.APPROVE:
            count = approvals_of(session, step.id or 0, step.version)
            if count < policy.quorum:
                return Counted(run.id, count, policy.quorum)
        if vote == Vote.REVISE:
            feedback = reason or self.latest_reply(session, run, who)
            decided = self.decide(session, run, step, Decision.SENT_BACK, who, feedback=feedback)
            decision = Decision.SENT_BACK
        else:
            decision = DECISIONS[vote]
            decided = self.decide(session, run, step, decision, who, reason=reason)
        return Decided(run.id, decision) if decided else AlreadyVoted(run.id)

    def decide(
        self,
        session: Session,
        run: Run,
        step: Step,
        decision: Decision,
        who: str,
        reason: str | None = None,
        feedback: str | None = None,
    ) -> bool:
        """Apply a decision on the current draft; False when another one got there first."""
        if not self.lifecycle.settle(session, step, SETTLED[decision], who):
            return False
        self.lock_draft(session, run, step, decision, who)
        cards.post_about_draft(
            session,
            run,
            step,
            kind=MessageKind.DECISION,
            context={
                "decision": decision.value,
                "decided_by": who,
                "reason": reason,
                "feedback": feedback,
            },
        )
        audit(session, who, decision.action, run.id, version=step.version, reason=reason)
        if decision == Decision.APPROVED:
            self.lifecycle.advance(session, run, step, decided_by=who)
        elif decision == Decision.REJECTED:
            self.lifecycle.reject(session, run, step, reason, who)
        else:  # the run card names who settled the draft, not who asked for another version
            self.lifecycle.send_back(session, run, step, feedback)
        return True

    def latest_reply(self, session: Session, run: Run, who: str) -> str | None:
        reply = session.exec(
            select(ThreadReply)
            .where(ThreadReply.run_id == run.id, ThreadReply.author == who)
            .order_by(col(ThreadReply.id).desc())
        ).first()
        return reply.text if reply else None

    def cancel(self, session: Session, run: Run, who: str, roles: tuple[str, ...] = ()) -> Outcome:
        assert run.id is not None
        if RunStatus(run.status).finished:
            return Ignored(f"run {run.id} has already finished ({run.status})", run_id=run.id)
        if not self.permissions.may_manage(run, who, roles):
            return Refused(
                "only the requester, the run's approvers or an admin can cancel it",
                action="cancel.refused",
                run_id=run.id,
            )
        for step in self.lifecycle.cancel_run(session, run, who):
            self.lock_draft(session, run, step, Decision.CANCELLED, who)
        return Cancelled(run.id)

    # -- timeouts --------------------------------------------------------------------------

    async def serve(self, stop: asyncio.Event) -> None:
        """Watch approval deadlines until `stop` is set."""
        while not stop.is_set():
            try:
                await self.db.call(self.check_deadlines)
            except Exception:
                log.exception("approval deadlines could not be checked; retrying shortly")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), DEADLINE_POLL)

    def check_deadlines(self) -> int:
        """Escalate or reject drafts whose approval waited past its timeout.

        Each draft is handled in a transaction of its own that locks the run, then the step,
        and looks again: a decision that landed meanwhile wins.
        """
        now = self.clock()
        with self.db.read() as session:
            due = drafts_past_deadline(session, now)
        handled = 0
        for step_id, run_id in due:
            with self.db.transaction() as session:
                handled += self._timeout(session, run_id, step_id, now)
        return handled

    def _timeout(self, session: Session, run_id: int, step_id: int, now: datetime) -> int:
        run = lock_run(session, run_id)
        step = lock_step(session, run_id, step_id) if run is not None else None
        if (
            run is None
            or step is None
            or step.status != StepStatus.AWAITING_APPROVAL
            or step.escalated
        ):
            return 0
        spec = self.lifecycle.spec_for(run, step)
        if spec is None or spec.approval is None:
            rows.change(session, step, escalated=True)  # its workflow is gone: nothing to do
            return 0
        policy = spec.approval
        if policy.on_timeout == "reject":
            self.decide(session, run, step, Decision.REJECTED, "timeout", "approval timed out")
            return 1
        rows.change(session, step, escalated=True)
        waited = int((now - (step.awaiting_since or now)).total_seconds())
        cards.post_about_draft(
            session,
            run,
            step,
            kind=MessageKind.REMINDER,
            context={"waited_s": waited, "approvers": sorted(self.permissions.approvers(policy))},
        )
        audit(session, "crewchief", "approval.escalated", run.id, version=step.version)
        return 1
