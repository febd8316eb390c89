"""The composition root: config -> storage -> LLM -> engine -> dispatcher -> platforms.

Everything else receives what it needs as arguments; tests build the same graph with their
own clock, LLM endpoint or console, here and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from agents.alerts import AlertService
from agents.approvals import ApprovalService
from agents.config import CrewConfig
from agents.crew import Crew
from agents.lifecycle import Clock, Lifecycle
from agents.llm import LLMError, LLMProvider
from agents.offline import OfflineProvider
from agents.permissions import Permissions
from agents.publishing import redact_http_logs
from agents.wakeup import Wakeup
from agents.worker import Workers
from bot.config_file import ConfigError, load_config
from bot.delivery import OutboxSender
from bot.platforms.base import Platform
from bot.scheduler import Scheduler, configured_jobs
from bot.settings import Settings
from commands.dispatch import Dispatcher
from commands.events import Actor, InboundEvent
from commands.spec import Reply
from storage.db import Database
from storage.models import Message, utcnow
from storage.problems import describe
from storage.queries import pending_work
from storage.unit_of_work import Topic

log = logging.getLogger(__name__)


@dataclass
class App:
    settings: Settings
    config: CrewConfig
    db: Database
    llm: LLMProvider
    crew: Crew
    workers: Workers
    dispatcher: Dispatcher
    sender: OutboxSender
    scheduler: Scheduler
    platforms: dict[str, Platform] = field(default_factory=dict)

    async def handle(self, event: InboundEvent, *, private_replies: bool = False) -> list[Reply]:
        return await self.dispatcher.handle(event, private_replies=private_replies)

    async def complete(self, actor: Actor, arg: str, typed: str) -> list[tuple[str, str]]:
        return await self.dispatcher.complete(actor, arg, typed)

    def greeting(self) -> dict[str, Any]:
        """What the shell's greeting shows: the model, and who approves each workflow."""
        permissions = self.crew.permissions
        return {
            "provider": self.llm.name,
            "has_key": self.settings.openai_api_key is not None,
            "workflows": [
                {"name": name, "approvers": sorted(permissions.workflow_approvers(name))}
                for name in sorted(self.config.workflows)
            ],
        }

    def message_channel(self, platform: str, ref: int) -> str | None:
        """The channel of the bot's message `ref` on `platform`; None when there is none."""
        with self.db.read() as session:
            message = session.get(Message, ref)
            return message.channel if message is not None and message.platform == platform else None

    def database_problem(self, exc: BaseException) -> str:
        """What is wrong with the database, in one line an operator can act on."""
        return describe(exc, self.db.url)

    def add_platform(self, platform: Platform) -> None:
        self.platforms[platform.name] = platform
        self.sender.platforms[platform.name] = platform

    def pending(self) -> int:
        with self.db.read() as session:
            return pending_work(session, list(self.platforms))

    async def wait_idle(self, timeout: float = 120.0) -> None:
        """Until nothing is runnable or undelivered (a run waiting for people is idle)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while pending := await self.db.call(self.pending):
            if loop.time() > deadline:
                raise TimeoutError(f"work still pending after {timeout:.0f}s")
            # Asking is work for the database thread too: a long backlog is asked about less
            # often (each item takes at least half a millisecond to clear).
            await asyncio.sleep(min(0.25, max(0.02, pending * 0.0005)))

    @contextlib.asynccontextmanager
    async def running(self, *, schedule: bool = False) -> AsyncIterator[None]:
        """The engine's workers and the outbox sender, for as long as the block lasts; with
        `schedule`, the scheduler too (digests), in whichever process holds its lock."""
        stop = asyncio.Event()
        tasks = [
            asyncio.create_task(self.workers.serve(stop), name="crewchief-workers"),
            asyncio.create_task(self.crew.approvals.serve(stop), name="crewchief-deadlines"),
            asyncio.create_task(self.sender.serve(stop), name="crewchief-outbox"),
        ]
        if schedule:
            tasks.append(
                asyncio.create_task(self.scheduler.serve(stop), name="crewchief-scheduler")
            )
        try:
            yield
        finally:
            stop.set()
            self.workers.wakeup.wake()
            self.sender.wakeup.wake()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def aclose(self) -> None:
        await self.llm.aclose()
        await self.workers.publisher.aclose()
        for platform in self.platforms.values():
            close = getattr(platform, "aclose", None)
            if close is not None:
                await close()
        self.db.dispose()


def freeze_startup() -> None:
    """For a process that serves one app from here on (`crewchief start`, the shell, a
    benchmark): what start-up made (modules, tables, templates, the app) lives as long as the
    process, so the garbage collector's full collections stop walking it (gc.freeze). Under
    `python -m bench engine --runs 1000` the longest pause (every thread waits) went from
    54-86 ms to 29-30 ms, and collection from 0.53-0.62 to 0.32-0.45 ms a run."""
    gc.freeze()


def build_llm(settings: Settings) -> LLMProvider:
    if settings.llm_provider == "offline":
        return OfflineProvider()
    from agents.openai_provider import OpenAIProvider  # the openai package takes 0.6 s to import

    try:
        return OpenAIProvider(
            api_key=settings.openai_api_key.get_secret_value() if settings.openai_api_key else None,
            base_url=settings.openai_base_url,
            timeout=settings.crewchief_llm_timeout,
            max_retries=settings.crewchief_llm_retries,
        )
    except LLMError as exc:
        raise ConfigError(
            f"CREWCHIEF_LLM=openai: {exc} (or set OPENAI_BASE_URL for a compatible server)"
        ) from None


def build_app(
    settings: Settings,
    *,
    config: CrewConfig | None = None,
    default_approvers: list[str] | None = None,
    clock: Clock = utcnow,
    llm: LLMProvider | None = None,
    migrate: bool = True,
) -> App:
    """Wire everything. Raises ConfigError for a bad crewchief.yml or CREWCHIEF_APPROVERS."""
    redact_http_logs()  # webhook (and model endpoint) URLs can hold credentials
    approvers = settings.approvers if default_approvers is None else default_approvers
    config = config or load_config(settings.crewchief_config, approvers=approvers)
    db = Database(settings.crewchief_database_url)
    if migrate:
        db.upgrade()
    llm = llm or build_llm(settings)
    steps_wakeup, outbox_wakeup = Wakeup(), Wakeup()
    db.on_commit(Topic.STEPS, steps_wakeup.wake)
    db.on_commit(Topic.OUTBOX, outbox_wakeup.wake)
    lifecycle = Lifecycle(config, clock=clock, offline=llm.name == "offline")
    permissions = Permissions(config, approvers)
    approvals = ApprovalService(db, lifecycle, permissions, config.reactions)
    alerts = AlertService(config, permissions, clock)
    crew = Crew(config, permissions, lifecycle, approvals, llm.name, alerts)
    workers = Workers(db, config, llm, lifecycle, approvals, wakeup=steps_wakeup)
    sender = OutboxSender(
        db,
        {},
        wakeup=outbox_wakeup,
        clock=clock,
        on_lost_card=lifecycle.abandon_run,
        lease=config.engine.lease,
        concurrency=config.engine.senders,
    )
    scheduler = Scheduler(db, configured_jobs(db, config, alerts, clock))
    return App(settings, config, db, llm, crew, workers, Dispatcher(db, crew), sender, scheduler)
