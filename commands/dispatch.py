"""From an inbound event to a decision: one transaction per event, de-duplicated by its id.

Adapters await `handle(event)` and show the replies; it runs the database work in a thread,
so a busy database never stalls the adapter's event loop. Everything the event changes,
including the messages it causes and the answer it gets, is committed before `handle`
returns, so an adapter acknowledges an event to its platform only once nothing about it can
be lost. Services return outcomes; this module alone turns them into answers, so every event
is answered exactly once.
"""

from __future__ import annotations

import logging

from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session, col, func, select

from agents import cards
from agents.crew import Crew
from agents.outcomes import Outcome, Refused
from commands.answers import reply_for
from commands.complete import suggestions
from commands.context import Context
from commands.events import (
    Actor,
    InboundEvent,
    ReactionAdded,
    ReactionRemoved,
    SlashCommand,
    ThreadReply,
    storable_event,
)
from commands.handlers import REGISTRY
from commands.spec import Reply, UsageError
from storage import models, rows
from storage.audit import audit
from storage.db import Database
from storage.problems import describe
from storage.queries import message_posted_as, post_in_flight
from storage.threads import Priority

log = logging.getLogger(__name__)


class NotYetDelivered(Exception):
    """A reaction or reply on a message the bot cannot place yet: one of its own posts to that
    channel is in flight (or was, when the process died) and its id is not recorded. Nothing of
    the event was recorded; the adapter has it delivered again shortly (Slack redelivers an
    event that was not acknowledged), by when the post's id is known."""


class Dispatcher:
    def __init__(self, db: Database, crew: Crew) -> None:
        self.db = db
        self.crew = crew

    async def handle(self, event: InboundEvent, *, private_replies: bool = False) -> list[Reply]:
        """Record and decide `event`; a delivery seen before returns no replies.

        With `private_replies` (platforms whose events have no response body, such as Slack's
        reactions), the answers are not returned but written to the outbox as private notices,
        in the same transaction as what the event changed.
        """
        try:
            return await self.db.call(
                self.handle_now, event, priority=Priority.INBOUND, private_replies=private_replies
            )
        except OperationalError as exc:
            # The database cannot take the event (disk full, locked, server gone): nothing of it
            # was committed. An event with no answer of its own (a reaction) is left
            # unacknowledged so that its platform delivers it again; a command is told why.
            problem = describe(exc, self.db.url)
            log.warning(
                "%s not recorded: the database cannot be used (%s)", type(event).__name__, problem
            )
            if private_replies:
                raise
            return [Reply("database_error", {"problem": problem})]

    async def complete(self, actor: Actor, arg: str, typed: str) -> list[tuple[str, str]]:
        """Choices for an argument being typed (autocomplete), as (label, value) pairs."""
        return await self.db.call(self._complete_now, actor, arg, typed, priority=Priority.INBOUND)

    def _complete_now(self, actor: Actor, arg: str, typed: str) -> list[tuple[str, str]]:
        with self.db.read() as session:
            return suggestions(Context(self.crew, session, actor, ""), arg, typed)

    def handle_now(self, event: InboundEvent, *, private_replies: bool = False) -> list[Reply]:
        """`handle`, on the calling thread."""
        event = storable_event(event)
        try:
            with self.db.transaction() as session:
                if not self._first_delivery(session, event):
                    return []
                result = self._route(session, event)
                return self._answer(session, event, result, private_replies)
        except UsageError as exc:
            # Nothing the bad input touched was committed; record only that we saw it.
            return self._after_rollback(event, usage_reply(exc), private_replies)

    def _answer(
        self,
        session: Session,
        event: InboundEvent,
        result: Reply | Outcome | None,
        private: bool,
    ) -> list[Reply]:
        if isinstance(result, Refused):
            audit(
                session,
                event.actor.qualified,
                result.action,
                result.run_id,
                reason=result.reason,
                **result.detail,
            )
        if result is None or isinstance(result, Reply):
            reply = result
        else:
            reply = reply_for(result, command=isinstance(event, SlashCommand))
        if reply is None:
            return []
        if not private:
            return [reply]
        if not reply.quiet:
            cards.notice(
                session,
                run_id=reply.run_id,
                platform=event.actor.platform,
                channel=event.channel,
                recipient=event.actor.qualified,
                template=reply.template,
                context={**reply.context, "run_id": reply.run_id},
            )
        return []

    def _after_rollback(self, event: InboundEvent, reply: Reply, private: bool) -> list[Reply]:
        """Remember the event (a retry of it must not be answered twice) and answer it."""
        try:
            with self.db.transaction() as session:
                if not self._first_delivery(session, event):
                    return []
                return self._answer(session, event, reply, private)
        except IntegrityError:
            return []  # a concurrent delivery of the same event got there first

    def _first_delivery(self, session: Session, event: InboundEvent) -> bool:
        key = self._delivery_key(session, event)
        if rows.add_once(session, models.InboundEvent, key=key) is None:
            log.info("duplicate delivery %s ignored", key)
            return False
        return True

    def _delivery_key(self, session: Session, event: InboundEvent) -> str:
        platform = event.actor.platform
        if event.event_id or not isinstance(event, ReactionAdded | ReactionRemoved):
            return f"{platform}:{event.event_id}"
        # A platform that gives reactions no id (Discord's gateway): the n-th time this person
        # adds this emoji to this message is one event however often it is delivered, and so
        # is the n-th removal; a removal and a later re-add are new events.
        added = isinstance(event, ReactionAdded)
        base = ":".join(
            (platform, "reaction", event.channel, event.message_platform_id, event.actor.user_id)
        )
        base = f"{base}:{event.emoji}"
        opposite = f"{base}:{'remove' if added else 'add'}:"
        seen = session.exec(
            select(func.count())
            .select_from(models.InboundEvent)
            .where(col(models.InboundEvent.key).startswith(opposite, autoescape=True))
        ).one()
        return f"{base}:{'add' if added else 'remove'}:{seen}"

    def _route(self, session: Session, event: InboundEvent) -> Reply | Outcome | None:
        ctx = Context(self.crew, session, event.actor, event.channel)
        if isinstance(event, SlashCommand):
            spec, args = REGISTRY.parse(event.text)
            if not spec.visible(ctx):
                return Refused(f"you may not run {spec.name}; /crew help lists what you may")
            return spec.handler(ctx, args)
        if isinstance(event, ThreadReply):
            return self._thread_reply(ctx, event)
        message = self._placed(
            session, event.actor.platform, event.channel, event.message_platform_id
        )
        if message is None:
            return None  # a reaction on someone else's message: not ours to judge
        if message.kind == models.MessageKind.ALERT:
            if isinstance(event, ReactionAdded):
                return self.crew.alerts.reaction_added(
                    session, ctx.who, message, event.emoji, ctx.roles
                )
            return None  # taking back 👀 or 🔕 undoes nothing
        approvals = self.crew.approvals
        if isinstance(event, ReactionAdded):
            return approvals.reaction_added(session, ctx.who, message, event.emoji, ctx.roles)
        assert isinstance(event, ReactionRemoved)
        return approvals.reaction_removed(session, ctx.who, message, event.emoji)

    def _thread_reply(self, ctx: Context, event: ThreadReply) -> Outcome | None:
        """A reply in a run's thread is feedback for its next 🔁; one in an alert card's
        thread may be the acknowledger's note."""
        parent = self._placed(
            ctx.session, event.actor.platform, event.channel, event.thread_platform_id
        )
        if parent is None:
            return None
        if parent.alert_id is not None:
            card = ctx.session.get(models.Message, parent.thread_of) if parent.thread_of else parent
            if card is None:
                return None
            return self.crew.alerts.thread_reply(ctx.session, ctx.who, card, event.text)
        if parent.run_id is not None:
            ctx.session.add(
                models.ThreadReply(run_id=parent.run_id, author=ctx.who, text=event.text)
            )
        return None

    def _placed(
        self, session: Session, platform: str, channel: str, platform_id: str
    ) -> models.Message | None:
        """The bot message a reaction or reply is about; None when it is not the bot's.
        Raises NotYetDelivered while one of the bot's posts to that channel is in flight: it
        may be that message, its id not recorded yet."""
        # a Slack ts is unique per channel
        message = message_posted_as(session, platform, channel, platform_id)
        if message is None:
            if post_in_flight(session, platform, channel):
                raise NotYetDelivered(platform_id)
            # Each statement sees what was committed before it (PostgreSQL's read committed):
            # a post recorded between the two reads above is there now.
            message = message_posted_as(session, platform, channel, platform_id)
        return message


def usage_reply(exc: UsageError) -> Reply:
    return Reply(
        "usage_error", {"error": str(exc), "usage": exc.usage, "suggestion": exc.suggestion}
    )
