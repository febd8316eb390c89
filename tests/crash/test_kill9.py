"""The Slack bot, as a real `crewchief start` process, SIGKILLed again and again while people
launch runs and approve drafts: nothing acknowledged is lost and nothing happens twice.

Agents take a noticeable time (every model call waits 0.3 s at a local OpenAI-compatible
server), so kills land mid-step, mid-delivery and mid-decision. The kill moments come from a
seeded generator: `CREWCHIEF_CRASH_SEED=<n>` replays a failing sequence, and
`CREWCHIEF_CRASH_RUNS` / `CREWCHIEF_CRASH_KILLS` change its size.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from pathlib import Path

import aiohttp
import pytest
from sqlmodel import select

from bot.platforms.slack import SCOPES
from storage import models
from storage.db import Database
from tests.crash.harness import (
    CHANNEL,
    Harness,
    bot_env,
    runs_by_text,
    steps_in_flight,
    still_held,
    webhook,
    write_config,
)
from tests.fakes.openai_server import running_fake_openai
from tests.fakes.slack_api import fake_slack

SEED = int(os.environ.get("CREWCHIEF_CRASH_SEED", "20261203"))
RUNS = int(os.environ.get("CREWCHIEF_CRASH_RUNS", "100"))
KILLS = int(os.environ.get("CREWCHIEF_CRASH_KILLS", "20"))
MODEL_DELAY = 0.3

# minutes on a loaded machine: the default 300 s would fail a slow run, not a broken one
pytestmark = [pytest.mark.crash, pytest.mark.timeout(1200)]


async def test_twenty_kill_9s_lose_nothing_and_do_nothing_twice(
    tmp_path: Path, db_url: str
) -> None:
    rng = random.Random(SEED)
    print(f"\ncrash harness: seed {SEED}, {RUNS} runs, {KILLS} kills")
    async with (
        fake_slack(channels=[CHANNEL], scopes=SCOPES) as slack,
        running_fake_openai() as llm,
        webhook() as hook,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
    ):
        llm.script(*[("delay", MODEL_DELAY)] * (RUNS * 4 + 200))
        write_config(tmp_path, hook["url"])
        harness = Harness(tmp_path, slack, bot_env(db_url, llm, slack), http, runs=RUNS)
        for _ in range(KILLS):
            await harness.start()
            await harness.drive(rng.uniform(0.3, 2.5))
            await harness.kill()

        # the last start: everything in flight must move again, and finish
        db = Database(db_url)
        in_flight = steps_in_flight(db)
        await harness.start()
        restarted = time.monotonic()
        moving_again: float | None = None
        give_up = restarted + 240
        while time.monotonic() < give_up:
            await harness.drive(0.2)
            if moving_again is None and not still_held(db, in_flight):
                moving_again = time.monotonic() - restarted
            runs = [r for rs in runs_by_text(db).values() for r in rs]
            if (
                moving_again is not None
                and harness.next_run >= RUNS
                and all(r.status == models.RunStatus.SUCCEEDED for r in runs)
            ):
                break
        await harness.stop()

        grouped = runs_by_text(db)
        runs = [r for rs in grouped.values() for r in rs]
        with db.read() as s:
            votes = s.exec(select(models.ApprovalVote)).all()
            failed_rows = s.exec(
                select(models.Outbox).where(models.Outbox.status == models.OutboxStatus.FAILED)
            ).all()
        db.dispose()

    statuses = Counter(r.status for r in runs)
    published_posts = Counter(
        card.ts
        for card in slack.top_level(CHANNEL)
        for m in slack.thread(CHANNEL, card.ts)
        if "published" in m.text.lower()
    )
    print(
        f"crash harness: {KILLS} kills survived; {len(harness.acked)} of {len(harness.sent)} "
        f"commands acknowledged; runs {dict(statuses)}; "
        f"{len(in_flight)} steps in flight at the last kill, moving again "
        f"{moving_again or -1:.1f}s after the restart; "
        f"webhook POSTs {sum(hook['seen'].values())} for {len(hook['seen'])} keys"
    )
    # every acknowledged command became exactly one run; one not acknowledged, at most one
    for i in harness.sent:
        count = len(grouped.get(f"topic-{i:03d}", []))
        assert count == 1 if i in harness.acked else count <= 1, (i, count)
    # every run finished: each draft approved once, each run published exactly once
    assert statuses == {models.RunStatus.SUCCEEDED: len(runs)}, statuses
    assert len(votes) == len(runs)
    assert sorted(hook["seen"]) == sorted(f"{r.id}:publish:1" for r in runs)
    assert failed_rows == []
    assert moving_again is not None and moving_again < 35  # within about one 30 s lease
    # each run's card and its "published" message reached Slack once
    assert len(slack.top_level(CHANNEL)) == len(runs)
    assert len(published_posts) == len(runs) and max(published_posts.values()) == 1
