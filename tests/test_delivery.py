"""The outbox sender on a real database, with its loop: in which order it delivers."""

from __future__ import annotations

import asyncio
import itertools

from bot.delivery import OutboxSender
from bot.platforms.base import Delivery
from storage.db import Database
from storage.models import Run
from storage.unit_of_work import Topic
from tests.conftest import queue_posts


class Recording:
    """A platform that takes every delivery at once and remembers its order; `held` keeps
    the delivery of that key waiting until `release` is set."""

    name = "shell"
    state = "connected"

    def __init__(self, held: str | None = None) -> None:
        self.keys: list[str] = []
        self._ids = itertools.count(1)
        self.held = held
        self.release = asyncio.Event()

    async def deliver(self, delivery: Delivery) -> str | None:
        self.keys.append(delivery.key)
        if delivery.key == self.held:
            await self.release.wait()
        return str(next(self._ids)) if delivery.kind == "post" else None


def _add_run(db: Database) -> int:
    with db.transaction() as s:
        run = Run(workflow="w", text="t", requester="shell:a", platform="shell", channel="c")
        s.add(run)
        s.flush()
        assert run.id is not None
        return run.id


async def test_with_more_waiting_than_slots_the_oldest_run_goes_next(db_url: str) -> None:
    db = Database(db_url)
    db.upgrade()
    older, newer = _add_run(db), _add_run(db)
    queue_posts(db, newer, "n0", "n1", "n2")
    platform = Recording(held="post:n0")
    sender = OutboxSender(db, {"shell": platform}, concurrency=1)
    db.on_commit(Topic.OUTBOX, sender.wakeup.wake)
    stop = asyncio.Event()
    serving = asyncio.create_task(sender.serve(stop))
    try:
        for _ in range(200):
            if platform.keys:
                break
            await asyncio.sleep(0.01)
        # the newer run's first post is out; the older run's post is queued behind the rest
        # of the newer run's thread, and still goes before it
        queue_posts(db, older, "o0")
        platform.release.set()
        for _ in range(200):
            if len(platform.keys) == 4:
                break
            await asyncio.sleep(0.01)
        assert platform.keys == ["post:n0", "post:o0", "post:n1", "post:n2"]
    finally:
        stop.set()
        sender.wakeup.wake()
        await serving
        db.dispose()
