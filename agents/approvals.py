"""Approvals: who may decide, votes as rows, and the decision once the policy is met.

✅ needs `quorum` distinct approvers; one ❌ from an approver rejects and one 🔁 sends the
draft back; 🛑 cancels the run (requester, approvers, admins). The step row is locked for the
whole vote, so racing reactions are counted one after the other and decide once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, func, select

from agents import cards
from agents.engine import Engine
from storage import outbox
from storage.audit import audit
from storage.models import (
    ApprovalVote,
    Message,
    Run,
    RunStatus,
    Step,
    StepStatus,
    ThreadReply,
    Vote,
)
from storage.queries import lock_run

log = logging.getLogger(__name__)

DEADLINE_POLL = 1.0  # seconds between checks of approval timeouts

DECISIONS = {Vote.APPROVE: "approved", Vote.REJECT: "rejected", Vote.REVISE: "sent back"}


@dataclass(frozen=True)
class Outcome:
    """What a vote did; `notice` is the private answer for the voter, if any."""

    effect: str  # decided | counted | withdrawn | duplicate | refused | ignored | cancelled
    notice: str | None = None
    context: dict[str, Any] = field(default_factory=dict)


def normalize_emoji(emoji: str) -> str:
    """`:white_check_mark:`, `✅` and `✅︎` (with a variation selector) compare equal."""
    text = emoji.strip().strip(":").lower()
    text = "".join(
        ch for ch in text if unicodedata.category(ch) != "Mn" and ch not in "\ufe0e\ufe0f"
    )
    # Slack sends skin tones as "thumbsup::skin-tone-2".
    return text.split("::")[0]


class ApprovalService:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        reactions = engine.config.reactions
        self.emoji: dict[str, Vote] = {}
        for vote, names in (
            (Vote.APPROVE, reactions.approve),
            (Vote.REJECT, reactions.reject),
            (Vote.REVISE, reactions.revise),
            (Vote.CANCEL, reactions.cancel),
        ):
            for name in names:
                self.emoji[normalize_emoji(name)] = vote

    def vote_for(self, emoji: str) -> Vote | None:
        return self.emoji.get(normalize_emoji(emoji))

    def hint(self) -> str:
        r = self.engine.config.reactions
        return f"{r.approve[0]} approve · {r.reject[0]} reject · {r.revise[0]} send back"

    # -- reactions ------------------------------------------------------------------------

    def reaction_added(self, session: Session, who: str, message: Message, emoji: str) -> Outcome:
        vote = self.vote_for(emoji)
        if vote is None:
            return Outcome(
                "ignored",
                f"{emoji} means nothing to crewchief here; use {self.hint()} · "
                f"{self.engine.config.reactions.cancel[0]} cancel",
            )
        run = lock_run(session, message.run_id) if message.run_id else None
        if run is None:
            return Outcome("ignored", "that message does not belong to a run")
        if vote == Vote.CANCEL:
            return self.cancel(session, run, who)
        if message.kind != "draft" or message.step_id is None:
            return Outcome("ignored", "react on a draft to decide on it")
        step = self._lock_step(session, message.step_id)
        return self.cast(session, run, step, who, vote, version=message.version)

    def reaction_removed(self, session: Session, who: str, message: Message, emoji: str) -> Outcome:
        """Removing a reaction before the decision withdraws that vote; after it, nothing."""
        vote = self.vote_for(emoji)
        if vote is None or vote == Vote.CANCEL or message.step_id is None or not message.run_id:
            return Outcome("ignored")
        lock_run(session, message.run_id)
        step = self._lock_step(session, message.step_id)
        if step.status != StepStatus.AWAITING_APPROVAL or step.version != message.version:
            return Outcome("ignored")
        row = session.exec(
            select(ApprovalVote).where(
                ApprovalVote.step_id == step.id,
                ApprovalVote.version == step.version,
                ApprovalVote.approver == who,
                ApprovalVote.vote == vote,
            )
        ).first()
        if row is None:
            return Outcome("ignored")
        session.delete(row)
        audit(session, who, "vote.withdrawn", step.run_id, vote=vote, version=step.version)
        return Outcome("withdrawn")

    # -- commands (`/crew approve 3`, `/crew reject 3 too long`) --------------------------

    def decide_by_command(
        self, session: Session, run: Run, who: str, vote: Vote, reason: str | None
    ) -> Outcome:
        step = session.exec(
            select(Step)
            .where(Step.run_id == run.id, Step.status == StepStatus.AWAITING_APPROVAL)
            .with_for_update()
        ).first()
        if step is None:
            return Outcome("ignored", f"run {run.id} has no draft waiting for a decision")
        return self.cast(
            session, run, step, who, vote, version=step.version, reason=reason, notify=False
        )

    # -- the vote itself ------------------------------------------------------------------

    def _lock_step(self, session: Session, step_id: int) -> Step:
        step = session.exec(select(Step).where(Step.id == step_id).with_for_update()).one()
        return step

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
        notify: bool = True,
    ) -> Outcome:
        """Record one vote and decide when the policy is met. A refusal is audited, and
        (`notify`) answered privately through the outbox: a command answers it itself."""
        if step.status != StepStatus.AWAITING_APPROVAL or version != step.version:
            current = f" (v{step.version} is the current draft)" if step.version else ""
            return Outcome("ignored", f"that draft is no longer waiting for a decision{current}")
        spec = self.engine.spec_for(run, step)
        if spec is None or spec.approval is None:
            return Outcome("ignored", f"workflow {run.workflow!r} is no longer configured")
        policy = spec.approval
        approvers = self.engine.approvers(policy)
        refusal = None
        if who not in approvers:
            refusal = "only the approvers of this step can decide: " + (
                ", ".join(sorted(approvers))
                if approvers
                else "none are configured (set approvers in crewchief.yml or CREWCHIEF_APPROVERS)"
            )
        elif who == run.requester and not policy.allow_self_approval:
            refusal = "you requested this run, and this workflow does not allow self-approval"
        if refusal is not None:
            audit(
                session,
                who,
                "vote.refused",
                run.id,
                vote=vote,
                version=step.version,
                reason=refusal,
            )
            if notify:
                self._notify(session, run, who, refusal)
            return Outcome("refused", refusal)

        try:
            with session.begin_nested():
                session.add(
                    ApprovalVote(
                        run_id=run.id or 0,
                        step_id=step.id or 0,
                        version=step.version,
                        approver=who,
                        vote=vote,
                    )
                )
        except IntegrityError:
            return Outcome("duplicate")
        audit(session, who, "vote.cast", run.id, vote=vote, version=step.version)

        if vote == Vote.APPROVE:
            count = session.exec(
                select(func.count(func.distinct(ApprovalVote.approver))).where(
                    ApprovalVote.step_id == step.id,
                    ApprovalVote.version == step.version,
                    ApprovalVote.vote == Vote.APPROVE,
                    col(ApprovalVote.approver).in_(approvers),
                )
            ).one()
            if count < policy.quorum:
                return Outcome("counted", context={"count": count, "quorum": policy.quorum})
        feedback = self.latest_reply(session, run, who) if vote == Vote.REVISE else None
        decided = self.decide(
            session, run, step, DECISIONS[vote], who, reason=reason, feedback=feedback
        )
        return Outcome("decided" if decided else "duplicate")

    # -- timeouts and decisions -----------------------------------------------------------

    async def serve(self, stop: asyncio.Event) -> None:
        """Watch approval deadlines until `stop` is set."""
        while not stop.is_set():
            try:
                self.check_deadlines()
            except Exception:
                log.exception("approval deadlines could not be checked; retrying shortly")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), DEADLINE_POLL)

    def check_deadlines(self) -> int:
        """Escalate or reject drafts whose approval waited past its timeout.

        Each draft is handled in a transaction of its own that locks the run, then the step,
        and looks again: a decision that landed meanwhile wins.
        """
        now = self.engine.clock()
        with self.engine.db.read() as session:
            due = session.exec(
                select(Step.id, Step.run_id)
                .where(
                    Step.status == StepStatus.AWAITING_APPROVAL,
                    col(Step.deadline_at).is_not(None),
                    col(Step.deadline_at) <= now,
                    col(Step.escalated).is_(False),
                )
                .order_by(col(Step.id))
            ).all()
        handled = 0
        for step_id, run_id in due:
            assert step_id is not None
            with self.engine.db.transaction() as session:
                handled += self._timeout(session, run_id, step_id, now)
        return handled

    def _timeout(self, session: Session, run_id: int, step_id: int, now: datetime) -> int:
        run = lock_run(session, run_id)
        step = self._lock_step(session, step_id)
        if run is None or step.status != StepStatus.AWAITING_APPROVAL or step.escalated:
            return 0
        spec = self.engine.spec_for(run, step)
        if spec is None or spec.approval is None:
            step.escalated = True  # its workflow is gone: nothing to escalate to
            session.add(step)
            return 0
        policy = spec.approval
        if policy.on_timeout == "reject":
            self.decide(session, run, step, "rejected", "timeout", reason="approval timed out")
            return 1
        step.escalated = True
        session.add(step)
        waited = int((now - (step.awaiting_since or now)).total_seconds())
        cards.post_about_draft(
            session,
            run,
            step,
            kind="reminder",
            context={"waited_s": waited, "approvers": sorted(self.engine.approvers(policy))},
        )
        audit(session, "crewchief", "approval.escalated", run.id, version=step.version)
        self.engine.after_commit(session)
        return 1

    def decide(
        self,
        session: Session,
        run: Run,
        step: Step,
        decision: str,
        who: str,
        reason: str | None = None,
        feedback: str | None = None,
    ) -> bool:
        """Apply a decision on the current draft: one conditional update, first one wins."""
        now = self.engine.clock()
        target = {
            "approved": StepStatus.SUCCEEDED,
            "rejected": StepStatus.REJECTED,
            "sent back": StepStatus.PENDING,
        }[decision]
        result = session.execute(
            update(Step)
            .where(
                col(Step.id) == step.id,
                col(Step.status) == StepStatus.AWAITING_APPROVAL,
                col(Step.version) == step.version,
            )
            .values(status=target, decided_by=who)
            .execution_options(synchronize_session=False)
        )
        if getattr(result, "rowcount", 0) != 1:
            return False
        session.refresh(step)
        self.engine.lock_draft(session, run, step, decision, who)
        cards.post_about_draft(
            session,
            run,
            step,
            kind="decision",
            context={
                "decision": decision,
                "decided_by": who,
                "reason": reason,
                "feedback": feedback,
            },
        )
        audit(
            session,
            who,
            f"draft.{decision.replace(' ', '_')}",
            run.id,
            version=step.version,
            reason=reason,
        )
        if decision != "sent back":  # the run card names who settled the draft, not who
            run.decided_by = who  # asked for another version
        if decision == "approved":
            self.engine.advance(session, run, step, now)
        elif decision == "rejected":
            step.finished_at = now
            session.add(step)
            run.status = RunStatus.REJECTED
            run.error = reason
            run.finished_at = run.updated_at = now
            session.add(run)
            cards.refresh_run_card(session, run, now, offline=self.engine.offline)
        else:
            step.feedback = feedback
            step.attempts = 0  # a new version is new work, not a retry of the old one
            step.available_at = now
            step.deadline_at = None
            session.add(step)
            run.status = RunStatus.RUNNING
            run.updated_at = now
            session.add(run)
            cards.refresh_run_card(session, run, now, offline=self.engine.offline)
        self.engine.after_commit(session)
        return True

    def latest_reply(self, session: Session, run: Run, who: str) -> str | None:
        reply = session.exec(
            select(ThreadReply)
            .where(ThreadReply.run_id == run.id, ThreadReply.author == who)
            .order_by(col(ThreadReply.id).desc())
        ).first()
        return reply.text if reply else None

    def cancel(self, session: Session, run: Run, who: str) -> Outcome:
        if RunStatus(run.status).finished:
            return Outcome("ignored", f"run {run.id} has already finished ({run.status})")
        if not self.engine.may_manage(run, who):
            message = "only the requester, the run's approvers or an admin can cancel it"
            audit(session, who, "cancel.refused", run.id)
            self._notify(session, run, who, message)
            return Outcome("refused", message)
        self.engine.cancel(session, run, who)
        return Outcome("cancelled")

    def _notify(self, session: Session, run: Run, who: str, text: str) -> None:
        outbox.notice(
            session,
            platform=run.platform,
            channel=run.channel,
            recipient=who,
            template="notice",
            context={"text": text, "run_id": run.id},
        )
