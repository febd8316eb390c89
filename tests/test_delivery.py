"""The outbox sender on a real database: what it claims when, and in which order."""

from __future__ import annotations

import asyncio
import itertools

from bot.delivery import OutboxSender
from bot.platforms.base import Delivery
from storage import outbox
from storage.db import Database
from storage.models import Outbox, OutboxStatus, Run
from tests.conftest import all_rows


class Recording:
    """A platform that takes every delivery at once and remembers its order."""

    name = "shell"
    state = "connected"

    def __init__(self) -> None:
        self.keys: list[str] = []
        self._ids = itertools.count(1)

    async def deliver(self, delivery: Delivery) -> str | None:
        self.keys.append(delivery.key)
        return str(next(self._ids)) if delivery.kind == "post" else None


def _thread_of_three(db: Database) -> None:
    with db.transaction() as s:
        run = Run(workflow="w", text="t", requester="shell:a", platform="shell", channel="c")
        s.add(run)
        s.flush()
        for i in range(3):
            outbox.post(
                s,
                key=f"m{i}",
                kind="notes",
                platform="shell",
                channel="c",
                run_id=run.id,
                template="notice",
                context={"text": str(i)},
            )


async def test_recording_a_delivery_claims_its_threads_next_row(db_url: str) -> None:
    db = Database(db_url)
    db.upgrade()
    _thread_of_three(db)
    platform = Recording()
    sender = OutboxSender(db, {"shell": platform}, concurrency=4)
    try:
        # One claim, as the sender's loop makes it: only the thread's first row may go.
        claimed = await db.call(sender._claim, 4)
        assert [row_id for row_id, *_ in claimed] == [1]
        # The loop is not running: each recording claims the row behind the one it records.
        sender._start(claimed)
        for _ in range(200):
            if len(platform.keys) == 3 and not sender._in_flight:
                break
            await asyncio.sleep(0.01)
        assert platform.keys == ["post:m0", "post:m1", "post:m2"]
        assert {row.status for row in all_rows(db, Outbox)} == {OutboxStatus.SENT}
    finally:
        db.dispose()


async def test_a_stopping_sender_records_its_deliveries_and_claims_nothing_more(
    db_url: str,
) -> None:
    db = Database(db_url)
    db.upgrade()
    _thread_of_three(db)
    platform = Recording()
    sender = OutboxSender(db, {"shell": platform}, concurrency=4)
    stop = asyncio.Event()
    stop.set()  # the loop ends at once: only the delivery already under way goes out
    try:
        sender._start(await db.call(sender._claim, 4))
        await sender.serve(stop)
        assert platform.keys == ["post:m0"]
        statuses = {row.key: (row.status, row.lease_owner) for row in all_rows(db, Outbox)}
        assert statuses == {
            "post:m0": (OutboxStatus.SENT, None),
            "post:m1": (OutboxStatus.PENDING, None),
            "post:m2": (OutboxStatus.PENDING, None),
        }
    finally:
        db.dispose()
