"""The engine's workload for `bench.engine` and `bench.concurrency`: N blog-post runs launched
at once through the dispatcher and taken to their drafts, then every draft approved and every
run taken to publication, each phase timed with the process's CPU time spent in it."""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass

from sqlmodel import col, func, select

from bot.app import App
from bot.platforms.base import Delivery
from commands.events import Actor, ReactionAdded, SlashCommand
from storage.models import Message, MessageKind, Run, RunStatus

REQUESTER = Actor("shell", "alice")
EDITOR = Actor("shell", "editor")
CHANNEL = "C1"
TIMEOUT_S = 3600.0


class NullPlatform:
    """Accepts every delivery at once, so the figures are crewchief's own."""

    name = "shell"  # stands in for a chat platform
    state = "connected"

    def __init__(self) -> None:
        self.delivered = 0
        self._ids = itertools.count(1)

    async def deliver(self, delivery: Delivery) -> str | None:
        self.delivered += 1
        return str(next(self._ids)) if delivery.kind == "post" else None


@dataclass(frozen=True)
class Phases:
    runs: int
    drafts: int
    succeeded: int
    launch_to_draft_s: float
    approve_to_published_s: float
    cpu_s: float  # process CPU time (all threads) over both phases

    @property
    def total_s(self) -> float:
        return self.launch_to_draft_s + self.approve_to_published_s

    @property
    def runs_per_s(self) -> float:
        return self.runs / self.total_s if self.total_s > 0 else 0.0


async def launch_and_publish(app: App, runs: int) -> Phases:
    """Both phases on a running app whose blog-post drafts `EDITOR` may approve."""
    cpu, began = time.process_time(), time.perf_counter()
    await asyncio.gather(
        *(
            app.dispatcher.handle(
                SlashCommand(f"bench-run-{i}", REQUESTER, CHANNEL, f"run blog-post topic {i}")
            )
            for i in range(runs)
        )
    )
    await app.wait_idle(timeout=TIMEOUT_S)
    drafted = time.perf_counter() - began
    cpu_drafting = time.process_time() - cpu

    drafts = await app.db.call(_draft_ids, app)
    cpu, began = time.process_time(), time.perf_counter()
    await asyncio.gather(
        *(
            app.dispatcher.handle(ReactionAdded(f"bench-ok-{ref}", EDITOR, CHANNEL, ref, "✅"))
            for ref in drafts
        )
    )
    await app.wait_idle(timeout=TIMEOUT_S)
    published = time.perf_counter() - began
    cpu_publishing = time.process_time() - cpu

    return Phases(
        runs=runs,
        drafts=len(drafts),
        succeeded=await app.db.call(_succeeded, app),
        launch_to_draft_s=drafted,
        approve_to_published_s=published,
        cpu_s=cpu_drafting + cpu_publishing,
    )


def _draft_ids(app: App) -> list[str]:
    with app.db.read() as session:
        query = select(Message.platform_id).where(Message.kind == MessageKind.DRAFT)
        return [ref for ref in session.exec(query).all() if ref]


def _succeeded(app: App) -> int:
    with app.db.read() as session:
        query = select(func.count(col(Run.id))).where(Run.status == RunStatus.SUCCEEDED)
        return int(session.exec(query).one())
