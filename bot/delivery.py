"""The outbox sender: claims rows in order, hands them to their platform, records the result.

Rows sharing an order key (the posts of one run's thread, the edits of one message; an
alert's card, edits and replies) go out strictly one after the other, and an edit only once
its message is posted; a row the platform refuses for a while (429, 5xx, network) waits and is
tried again, never dropped.
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
from bot.batch import Batch
from bot.platforms.base import Delivery, DeliveryError, Platform
from storage.db import Database
from storage.models import Message, Outbox, OutboxKind, OutboxStatus, utcnow
from storage.problems import Outage, report
from storage.queries import (
    Leased,
    Sent,
    claim_outbox,
    give_up,
    mark_sent,
    next_delivery_due,
    renew_lease,
)

log = logging.getLogger(__name__)

Claimed = tuple[int, Delivery, str]  # (outbox row id, what to deliver, platform name)
LostCard = Callable[[Session, int, str], None]  # (session, run id, why) when a run card fails
GIVE_UP_AFTER = timedelta(hours=24)  # a platform down longer than this is an incident
MAX_BACKOFF = 300.0


def backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(MAX_BACKOFF, 0.5 * 2 ** max(0, attempts - 1)))


class OutboxSender:
    """One loop that claims deliverable rows in batches, as many as it has free delivery
    slots (`concurrency`), oldest run first, and delivers them concurrently: rows of one
    order key never share a batch, so each thread's posts and each message's edits still go
    out strictly in order."""

    def __init__(
        self,
        db: Database,
        platforms: Mapping[str, Platform],
        *,
        wakeup: Wakeup | None = None,
        clock: Clock = utcnow,
        on_lost_card: LostCard | None = None,
        lease: timedelta = timedelta(seconds=30),
        concurrency: int = 16,
    ) -> None:
        self.db = db
        self.platforms = dict(platforms)
        self.wakeup = wakeup or Wakeup()
        self.clock = clock
        self.on_lost_card = on_lost_card
        self.lease = lease
        self.concurrency = concurrency
        self.owner = process_owner("sender")
        # deliveries that end while their predecessors are being recorded are recorded together
        self._sent: Batch[int, Sent] = Batch(
            lambda done: self.db.call(self._mark_sent, [sent for _, sent in done])
        )

    async def serve(self, stop: asyncio.Event) -> None:
        in_flight: set[asyncio.Task[None]] = set()

        def finished(task: asyncio.Task[None]) -> None:
            in_flight.discard(task)
            self.wakeup.wake()  # a slot is free

        outage = Outage(log, "outbox", self.db.url)
        try:
            while not stop.is_set():
                free = self.concurrency - len(in_flight)
                try:
                    claimed = await self.db.call(self._claim, free) if free > 0 else []
                except Exception as exc:
                    await outage.failed(exc, stop)
                    continue
                outage.succeeded()
                for row_id, delivery, platform_name in claimed:
                    task = asyncio.create_task(
                        self._deliver(row_id, delivery, platform_name),
                        name=f"crewchief-outbox-{row_id}",
                    )
                    in_flight.add(task)
                    task.add_done_callback(finished)
                if free > 0 and len(claimed) == free:
                    continue  # there may be more
                # Woken by a commit that queues a message, a delivery's end, or when due.
                try:
                    due = None if in_flight else await self.db.call(self._next_due)
                except Exception as exc:
                    await outage.failed(exc, stop)
                    continue
                await self.wakeup.wait(seconds_until(due, self.clock()), stop)
        finally:
            # a graceful stop lets the deliveries under way finish and be recorded
            await asyncio.gather(*in_flight, return_exceptions=True)

    def _next_due(self) -> datetime | None:
        with self.db.read() as session:
            return next_delivery_due(session, list(self.platforms))

    async def _deliver(self, row_id: int, delivery: Delivery, platform_name: str) -> None:
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
            await self._record_failure(row_id, exc)
        except Exception as exc:  # an adapter bug must not lose the message
            log.exception("outbox row %s: %s delivery raised", row_id, platform_name)
            await self._record_failure(row_id, DeliveryError(f"{type(exc).__name__}: {exc}"))
        else:
            try:
                posted = delivery.ref if delivery.kind == OutboxKind.POST else None
                await self._sent.add(row_id, Sent(row_id, posted, platform_id))
            except Exception as exc:  # the lease runs out and the row is delivered again (same key)
                report(log, exc, self.db.url, f"outbox row {row_id}: its delivery was not recorded")

    async def _record_failure(self, row_id: int, failure: DeliveryError) -> None:
        try:
            await self.db.call(self._failed, row_id, failure)
        except Exception as exc:  # the lease runs out and the row is delivered again (same key)
            report(log, exc, self.db.url, f"outbox row {row_id}: its failure was not recorded")

    def _mark_sent(self, sent: list[Sent]) -> None:
        with self.db.transaction() as session:
            mark_sent(session, sent, self.clock())

    def _renew(self, row_id: int) -> bool:
        with self.db.transaction() as session:
            until = self.clock() + self.lease
            return renew_lease(session, Outbox, row_id, self.owner, until)

    def _claim(self, limit: int) -> list[Claimed]:
        with self.db.transaction() as session:
            rows = claim_outbox(
                session,
                owner=self.owner,
                now=self.clock(),
                lease=self.lease,
                skip_locked=self.db.is_postgres,
                platforms=list(self.platforms),
                limit=limit,
            )
            claimed: list[Claimed] = []
            for row in rows:
                delivery = _delivery(row)
                orphan = _orphaned(row, delivery)
                if orphan is not None:
                    # What it depends on failed for good (rows go out in order, so it was tried).
                    give_up(session, row.id, orphan)
                    continue
                claimed.append((row.id, delivery, row.platform))
            return claimed

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


def _delivery(row: Leased) -> Delivery:
    return Delivery(
        kind=row.kind,
        channel=row.channel,
        template=row.template,
        context=dict(row.context),
        ref=row.message_id,
        thread_platform_id=row.thread_platform_id,
        platform_id=row.platform_id,
        recipient=row.recipient,
        key=row.key,
        attempt=row.attempts,
    )


def _orphaned(row: Leased, delivery: Delivery) -> str | None:
    """Why the row can never be delivered, if what it depends on was never posted."""
    if row.kind == OutboxKind.UPDATE and not delivery.platform_id:
        return "the message to edit was never posted"
    if row.kind == OutboxKind.POST and row.thread_of and not delivery.thread_platform_id:
        return "its thread was never posted"
    return None
