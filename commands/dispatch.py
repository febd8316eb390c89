"""From an inbound event to a decision: one transaction per event, de-duplicated by its id.

Adapters call `handle(event)` and show the replies; everything the event changes, including
the messages it causes, is committed before `handle` returns, so an adapter acknowledges an
event to its platform only once nothing about it can be lost.
"""

from __future__ import annotations

import logging

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from agents.approvals import ApprovalService
from agents.engine import Engine
from commands.events import InboundEvent, ReactionAdded, ReactionRemoved, SlashCommand, ThreadReply
from commands.handlers import REGISTRY, Context
from commands.spec import Refused, Reply, UsageError
from storage import models, outbox
from storage.audit import audit

log = logging.getLogger(__name__)


class Dispatcher:
    def __init__(self, engine: Engine, approvals: ApprovalService) -> None:
        self.engine = engine
        self.approvals = approvals

    def handle(self, event: InboundEvent, *, private_replies: bool = False) -> list[Reply]:
        """Record and decide `event`; a delivery seen before returns no replies.

        With `private_replies` (platforms whose events have no response body, such as Slack's
        reactions), the answers are not returned but written to the outbox as private notices,
        in the same transaction as what the event changed.
        """
        try:
            with self.engine.db.transaction() as session:
                if not self._first_delivery(session, event):
                    return []
                replies = self._route(session, event)
                return self._answer(session, event, replies, private_replies)
        except UsageError as exc:
            # Nothing the bad input touched was committed; record only that we saw it.
            return self._after_rollback(event, usage_reply(exc), private_replies)
        except Refused as exc:
            return self._after_rollback(
                event, Reply("notice", {"text": str(exc)}), private_replies, refused=str(exc)
            )

    def _answer(
        self, session: Session, event: InboundEvent, replies: list[Reply], private: bool
    ) -> list[Reply]:
        if not private:
            return replies
        for reply in replies:
            if reply.quiet:
                continue
            outbox.notice(
                session,
                platform=event.actor.platform,
                channel=event.channel,
                recipient=event.actor.qualified,
                template=reply.template,
                context=reply.context,
            )
        self.engine.after_commit(session, engine=False)
        return []

    def _after_rollback(
        self, event: InboundEvent, reply: Reply, private: bool, refused: str | None = None
    ) -> list[Reply]:
        """Remember the event (a retry of it must not be answered twice) and answer it."""
        try:
            with self.engine.db.transaction() as session:
                if not self._first_delivery(session, event):
                    return []
                if refused is not None:
                    audit(session, event.actor.qualified, "command.refused", None, reason=refused)
                return self._answer(session, event, [reply], private)
        except IntegrityError:
            return []  # a concurrent delivery of the same event got there first

    def _first_delivery(self, session: Session, event: InboundEvent) -> bool:
        key = f"{event.actor.platform}:{event.event_id}"
        try:
            with session.begin_nested():
                session.add(models.InboundEvent(key=key))
        except IntegrityError:
            log.info("duplicate delivery %s ignored", key)
            return False
        return True

    def _route(self, session: Session, event: InboundEvent) -> list[Reply]:
        ctx = Context(self.engine, self.approvals, session, event.actor, event.channel)
        if isinstance(event, SlashCommand):
            spec, args = REGISTRY.parse(event.text)
            if not spec.visible(ctx):
                raise Refused(f"you may not run {spec.name}; /crew help lists what you may")
            return [spec.handler(ctx, args)]
        if isinstance(event, ThreadReply):
            return self._thread_reply(ctx, event)
        message = self._message(
            session, event.actor.platform, event.channel, event.message_platform_id
        )
        if message is None:
            return []  # a reaction on someone else's message: not ours to judge
        if isinstance(event, ReactionAdded):
            outcome = self.approvals.reaction_added(session, ctx.who, message, event.emoji)
        else:
            assert isinstance(event, ReactionRemoved)
            outcome = self.approvals.reaction_removed(session, ctx.who, message, event.emoji)
        if outcome.effect == "ignored" and outcome.notice:
            # e.g. a 🎉 on a draft: worth a word in the shell, noise in a busy channel
            return [Reply("notice", {"text": outcome.notice}, quiet=True)]
        if outcome.effect == "counted":
            return [
                Reply(
                    "notice",
                    {"text": "approval counted: {count} of {quorum}".format(**outcome.context)},
                )
            ]
        return []

    def _thread_reply(self, ctx: Context, event: ThreadReply) -> list[Reply]:
        parent = self._message(
            ctx.session, event.actor.platform, event.channel, event.thread_platform_id
        )
        if parent is None or parent.run_id is None:
            return []
        ctx.session.add(models.ThreadReply(run_id=parent.run_id, author=ctx.who, text=event.text))
        return []

    def _message(
        self, session: Session, platform: str, channel: str, platform_id: str
    ) -> models.Message | None:
        """A bot message by the platform's id for it (a Slack ts is unique per channel)."""
        return session.exec(
            select(models.Message).where(
                models.Message.platform == platform,
                models.Message.channel == channel,
                models.Message.platform_id == platform_id,
            )
        ).first()


def usage_reply(exc: UsageError) -> Reply:
    return Reply(
        "usage_error", {"error": str(exc), "usage": exc.usage, "suggestion": exc.suggestion}
    )
