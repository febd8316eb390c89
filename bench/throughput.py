"""How many runs the engine carries per second: N blog-post runs launched at once, through
research and draft to `awaiting_approval`, then all approved and published. Offline model,
so this measures crewchief (claiming, state changes, outbox), not an LLM.

    python -m bench.throughput [--runs 200] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import tempfile
import time
from pathlib import Path

from sqlmodel import select

from bot.app import build_app
from bot.platforms.base import Delivery
from bot.settings import Settings
from commands.events import Actor, ReactionAdded, SlashCommand
from storage.models import Message, Run, RunStatus

_ids = itertools.count(1)


class NullPlatform:
    """Accepts every delivery at once, so the figures are crewchief's own."""

    name = "shell"  # stands in for a chat platform

    def __init__(self) -> None:
        self.delivered = 0

    async def deliver(self, delivery: Delivery) -> str | None:
        self.delivered += 1
        return str(next(_ids)) if delivery.kind == "post" else None


async def main(runs: int, database_url: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = database_url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            crewchief_database_url=url,
            crewchief_config=Path(tmp) / "absent.yml",
            crewchief_llm="offline",
        )
        app = build_app(settings, default_approvers=["shell:editor"])
        platform = NullPlatform()
        app.add_platform(platform)
        requester, editor = Actor("shell", "alice"), Actor("shell", "editor")
        async with app.running():
            start = time.perf_counter()
            await asyncio.gather(
                *(
                    app.dispatcher.handle(
                        SlashCommand(f"c{i}", requester, "C1", f"run blog-post topic {i}")
                    )
                    for i in range(runs)
                )
            )
            await app.wait_idle(timeout=3600)
            drafted = time.perf_counter() - start
            with app.db.read() as s:
                drafts = s.exec(select(Message).where(Message.kind == "draft")).all()
            start = time.perf_counter()
            await asyncio.gather(
                *(
                    app.dispatcher.handle(
                        ReactionAdded(f"r{m.id}", editor, "C1", m.platform_id or "", "✅")
                    )
                    for m in drafts
                )
            )
            await app.wait_idle(timeout=3600)
            published = time.perf_counter() - start
            with app.db.read() as s:
                done = len(s.exec(select(Run).where(Run.status == RunStatus.SUCCEEDED)).all())
        await app.aclose()
    print(f"database: {url.split(':')[0]}  runs: {runs}  succeeded: {done}")
    print(f"launch -> draft awaiting approval: {drafted:.1f} s ({runs / drafted:.0f} runs/s)")
    print(f"approve -> published:              {published:.1f} s ({runs / published:.0f} runs/s)")
    print(f"messages delivered: {platform.delivered}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.database_url))
