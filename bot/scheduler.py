"""The scheduler: APScheduler 3 in the bot's event loop, its jobs registered from
crewchief.yml at every start (memory job store: nothing is pickled, nothing outlives the
process).

Only the process holding the scheduler lock schedules (storage.leader: on PostgreSQL an
advisory lock on a connection of its own); the others check every `poll` seconds and one
takes over when the holder dies, first posting a digest that fell due in between. Each job
also claims a (job, period) row before it acts, so a double fire, a catch-up of a period
already done, or two leaders for a moment, still acts once per period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.interval import IntervalTrigger

from agents import digest
from agents.alert_rules import EVALUATION_JOB
from agents.alerts import AlertService, run_evaluation
from agents.config import CrewConfig
from agents.cron import cron_trigger
from agents.lifecycle import Clock
from storage.db import Database
from storage.leader import LeaderLock

if TYPE_CHECKING:
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

log = logging.getLogger(__name__)

MISFIRE_GRACE = 300  # seconds: a fire delayed by a busy loop or a pause still runs


@dataclass(frozen=True)
class Job:
    name: str
    trigger: BaseTrigger
    run: Callable[[], Awaitable[object]]
    # run once as soon as this process starts scheduling, for a fire missed while no process
    # scheduled (the leader died near it); the job's (job, period) row makes it act once
    catch_up: bool = False


def evaluation_period(when: datetime, every: timedelta) -> str:
    """The evaluation period a fire stands for: `when` floored to a multiple of `every`."""
    step = max(1, int(every.total_seconds()))
    start = int(when.timestamp()) // step * step
    return datetime.fromtimestamp(start, UTC).isoformat(timespec="seconds")


def configured_jobs(
    db: Database, config: CrewConfig, alerts: AlertService, clock: Clock
) -> list[Job]:
    """The periodic jobs crewchief.yml asks for: the digest, and the alerts' evaluation."""

    schedule = cron_trigger(config.digest.schedule, config.digest.timezone)

    async def post_digest() -> object:
        return await db.call(
            digest.run_due, db, config, schedule, clock(), timedelta(seconds=MISFIRE_GRACE)
        )

    every = config.alerts.evaluate_every

    async def evaluate_alerts() -> object:
        now = clock()
        return await db.call(run_evaluation, db, alerts, now, evaluation_period(now, every))

    return [
        Job(digest.JOB, schedule, post_digest, catch_up=True),
        Job(EVALUATION_JOB, IntervalTrigger(seconds=int(every.total_seconds())), evaluate_alerts),
    ]


class Scheduler:
    def __init__(self, db: Database, jobs: list[Job], *, poll: float = 15.0) -> None:
        self.db = db
        self.jobs = jobs
        self.poll = poll
        self.leader = LeaderLock(db)
        self.aps: AsyncIOScheduler | None = None
        self.serving = False

    @property
    def leading(self) -> bool:
        return self.aps is not None

    @property
    def state(self) -> str:
        """`leading` (it schedules), `standby` (another process does) or `off`."""
        if self.aps is not None:
            return "leading"
        return "standby" if self.serving else "off"

    async def serve(self, stop: asyncio.Event) -> None:
        """Schedule while this process holds the lock; until `stop` is set."""
        self.serving = True
        try:
            while not stop.is_set():
                try:
                    holds = await asyncio.to_thread(self.leader.try_acquire)
                except Exception:
                    log.exception("scheduler: could not check the scheduler lock")
                    holds = False
                if holds and self.aps is None:
                    self._start()
                elif not holds and self.aps is not None:
                    log.warning("scheduler: lost the scheduler lock; another process schedules")
                    self._stop()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.poll)
        finally:
            self.serving = False
            self._stop()
            await asyncio.to_thread(self.leader.release)

    def _start(self) -> None:
        # loaded by the process that schedules, not by every `crewchief shell --script`
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        aps = AsyncIOScheduler(timezone=UTC)
        for job in self.jobs:
            aps.add_job(
                self._guarded(job),
                job.trigger,
                id=job.name,
                name=job.name,
                coalesce=True,
                max_instances=1,
                misfire_grace_time=MISFIRE_GRACE,
            )
        for job in self.jobs:
            if job.catch_up:  # no trigger: runs once, now
                aps.add_job(self._guarded(job), id=f"{job.name}-catch-up", name=job.name)
        aps.start()
        self.aps = aps
        log.info("scheduler: scheduling %s", ", ".join(j.name for j in self.jobs))

    def _stop(self) -> None:
        aps, self.aps = self.aps, None
        if aps is not None and aps.running:
            aps.shutdown(wait=False)

    @staticmethod
    def _guarded(job: Job) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            try:
                await job.run()
            except Exception:
                log.exception("scheduled job %s failed", job.name)

        return run

    def next_run(self, name: str) -> datetime | None:
        if self.aps is None:
            return None
        job = self.aps.get_job(name)
        return job.next_run_time if job else None
