"""The outbox sender: claims rows in order, hands them to their platform, records the result.

Rows sharing an order key (one run's thread) go out strictly one after the other; a row the
platform refuses for a while (429, 5xx, network) waits and is tried again, never dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from sqlmodel import Session

from agents.heartbeat import heartbeat, interval
from agents.lifecycle import Clock
from agents.owners import process_owner
from agents.wakeup import Wakeup, seconds_until
from bot.platforms.base import Delivery, DeliveryError, Platform
from storage.db import Database
from storage.models import Message, Outbox, OutboxKind, OutboxStatus, utcnow
from storage.queries import claim_outbox, next_delivery_due, renew_lease

log = logging.getLogger(__name__)

SKIPPED = "skipped"  # a claimed row that could never be delivered, now marked failed
LostCard = Callable[[Session, int, str], None]  # (session, run id, why) when a run card fails
GIVE_UP_AFTER = timedelta(hours=24)  # a platform down longer than this is an incident
MAX_BACKOFF = 300.0


def backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(MAX_BACKOFF, 0.5 * 2 ** max(0, attempts - 1)))


class OutboxSender:
    def __init__(
        self,
        db: Database,
        platforms: Mapping[str, Platform],
        *,
        wakeup: Wakeup | None = None,
        clock: Clock = utcnow,
        on_lost_card: LostCard | None = None,
        lease: timedelta = timedelta(seconds=30),
    ) -> None:
        self.db = db
        self.platforms = dict(platforms)
        self.wakeup = wakeup or Wakeup()
        self.clock = clock
        self.on_lost_card = on_lost_card
        self.lease = lease
        self.owner = process_owner("sender")

    async def serve(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                sent = await self.send_once()
            except Exception:
                log.exception("outbox: a delivery could not be processed; retrying shortly")
                sent = False
            if not sent:
                due = await self.db.call(self._next_due)
                await self.wakeup.wait(seconds_until(due, self.clock()), stop)

    def _next_due(self) -> datetime | None:
        with self.db.read() as session:
            return next_delivery_due(session, list(self.platforms))

    async def send_once(self) -> bool:
        """Deliver one row. False when nothing is deliverable right now."""
        claimed = await self.db.call(self._claim)
        if claimed is None:
            return False
        if claimed == SKIPPED:
            return True
        assert not isinstance(claimed, str)
        row_id, delivery, platform_name = claimed
        platform = self.platforms[platform_name]
        try:
            # a 429's Retry-After can keep a delivery busy for longer than one lease
            async with heartbeat(
                lambda: self.db.call(self._renew, row_id),
                interval(self.lease),
                f"outbox row {row_id}",
            ):
                platform_id = await platform.deliver(delivery)
        except DeliveryError as exc:
            await self.db.call(self._failed, row_id, exc)
        except Exception as exc:  # an adapter bug must not lose the message
            log.exception("outbox row %s: %s delivery raised", row_id, platform_name)
            error = DeliveryError(f"{type(exc).__name__}: {exc}")
            await self.db.call(self._failed, row_id, error)
        else:
            await self.db.call(self._sent, row_id, platform_id)
        return True

    def _renew(self, row_id: int) -> bool:
        with self.db.transaction() as session:
            until = self.clock() + self.lease
            return renew_lease(session, Outbox, row_id, self.owner, until)

    def _claim(self) -> tuple[int, Delivery, str] | str | None:
        with self.db.transaction() as session:
            row = claim_outbox(
                session,
                owner=self.owner,
                now=self.clock(),
                lease=self.lease,
                skip_locked=self.db.is_postgres,
                platforms=list(self.platforms),
            )
            if row is None:
                return None
            message = session.get(Message, row.message_id) if row.message_id else None
            parent = session.get(Message, row.thread_of) if row.thread_of else None
            assert row.id is not None
            delivery = Delivery(
                kind=OutboxKind(row.kind),
                channel=row.channel,
                template=row.template,
                context=dict(row.context),
                ref=message.id if message else None,
                thread_platform_id=parent.platform_id if parent else None,
                platform_id=message.platform_id if message else None,
                recipient=row.recipient,
                key=row.key,
                attempt=row.attempts,
            )
            orphan = None
            if row.kind == OutboxKind.UPDATE and not delivery.platform_id:
                orphan = "the message to edit was never posted"
            elif row.kind == OutboxKind.POST and parent is not None and not parent.platform_id:
                orphan = "its thread was never posted"
            if orphan is not None:
                # What it depends on failed for good (rows go out in order, so it was tried).
                row.status = OutboxStatus.FAILED
                row.error = orphan
                row.lease_owner = None
                session.add(row)
                return SKIPPED
            return row.id, delivery, row.platform

    def _sent(self, row_id: int, platform_id: str | None) -> None:
        with self.db.transaction() as session:
            row = session.get(Outbox, row_id)
            assert row is not None
            row.status = OutboxStatus.SENT
            row.sent_at = self.clock()
            row.lease_owner = None
            row.error = None
            session.add(row)
            if row.kind == OutboxKind.POST and row.message_id and platform_id:
                message = session.get(Message, row.message_id)
                assert message is not None
                message.platform_id = platform_id
                session.add(message)

    def _failed(self, row_id: int, exc: DeliveryError) -> None:
        with self.db.transaction() as session:
            row = session.get(Outbox, row_id)
            assert row is not None
            row.lease_owner = None
            row.lease_until = None
            row.error = str(exc)
            if exc.permanent or self.clock() - row.created_at > GIVE_UP_AFTER:
                row.status = OutboxStatus.FAILED
                log.error("outbox row %s (%s) given up: %s", row_id, row.key, exc)
                message = session.get(Message, row.message_id) if row.message_id else None
                lost_card = row.kind == OutboxKind.POST and message and message.kind == "run_card"
                if lost_card and message and message.run_id and self.on_lost_card:
                    self.on_lost_card(session, message.run_id, str(exc))
            else:
                wait = (
                    timedelta(seconds=exc.retry_after)
                    if exc.retry_after is not None
                    else backoff(row.attempts)
                )
                row.available_at = self.clock() + wait
                log.warning("outbox row %s: %s; next try in %s", row_id, exc, wait)
            session.add(row)
