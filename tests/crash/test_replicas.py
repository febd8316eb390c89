"""Several `crewchief start --platform slack` processes on one PostgreSQL behind one load
balancer (requests go round-robin to the live ones): each step runs once, each message
reaches Slack once, when one replica is SIGKILLed mid-run the others finish its work, and
the digest scheduled every minute reaches the ops channel once per minute."""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from sqlmodel import select

from bot.platforms.slack import SCOPES
from storage import models
from storage.db import Database
from tests.crash.harness import (
    CHANNEL,
    OPS,
    Harness,
    bot_env,
    runs_by_text,
    webhook,
    write_config,
)
from tests.fakes.openai_server import running_fake_openai
from tests.fakes.slack_api import fake_slack

RUNS = int(os.environ.get("CREWCHIEF_REPLICA_RUNS", "500"))

# minutes on a loaded machine: the default 300 s would fail a slow run, not a broken one
pytestmark = [pytest.mark.crash, pytest.mark.timeout(1200)]


@pytest.mark.parametrize("replicas", [2, 4])
async def test_replicas_share_the_work_and_take_over_a_killed_ones(
    tmp_path: Path, db_url: str, replicas: int
) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("replicas share a PostgreSQL database; SQLite serves one process")
    async with (
        fake_slack(channels=[CHANNEL, OPS], scopes=SCOPES) as slack,
        running_fake_openai() as llm,
        webhook() as hook,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
    ):
        llm.script(*[("delay", 0.05)] * (RUNS * 4 + 200))
        write_config(tmp_path, hook["url"], ops=OPS)
        harness = Harness(
            tmp_path, slack, bot_env(db_url, llm, slack), http, runs=RUNS, replicas=replicas
        )
        # a replica that starts scheduling posts the latest fire at once: the minute it began
        began = datetime.now(UTC)
        for replica in range(replicas):
            await harness.start(replica)
        db = Database(db_url)
        while harness.next_run < RUNS // 2:
            await harness.drive(0.2)
        # one replica dies mid-run; the others must finish what it held
        with db.read() as s:
            held = {
                step.id
                for step in s.exec(
                    select(models.Step).where(models.Step.status == models.StepStatus.RUNNING)
                ).all()
            }
        await harness.kill(0)
        killed = time.monotonic()
        taken_over: float | None = None
        give_up = killed + 300
        while time.monotonic() < give_up:
            await harness.drive(0.2)
            with db.read() as s:
                left = [
                    i
                    for i in held
                    if (step := s.get(models.Step, i)) is not None
                    and step.status == models.StepStatus.RUNNING
                ]
            if taken_over is None and not left:
                taken_over = time.monotonic() - killed
            runs = [r for rs in runs_by_text(db).values() for r in rs]
            if (
                taken_over is not None
                and harness.next_run >= RUNS
                and len(runs) == RUNS
                and all(r.status == models.RunStatus.SUCCEEDED for r in runs)
            ):
                break
        finished = time.monotonic() - killed
        ended = datetime.now(UTC)
        await harness.stop()
        logs = harness.log_tails()
        with db.read() as s:
            runs = s.exec(select(models.Run)).all()
            calls = Counter(c.step_id for c in s.exec(select(models.LLMCall)).all())
            steps = s.exec(select(models.Step)).all()
        db.dispose()

    posted_keys = Counter(
        (m.metadata or {}).get("event_payload", {}).get("key")
        for messages in slack.messages.values()
        for m in messages
    )
    twice = {key: n for key, n in posted_keys.items() if key and n > 1}
    digests = sorted(
        datetime.fromisoformat(found[1])
        for key in posted_keys
        if key and (found := re.fullmatch(rf"post:digest:(.+):slack:{OPS}", key))
    )
    agent_steps = [s for s in steps if s.name != "publish" or calls.get(s.id)]
    print(
        f"\nreplicas: {replicas} processes, {RUNS} runs, {len(held)} steps held by the killed "
        f"one, taken over {taken_over or -1:.1f}s after the kill; all done {finished:.0f}s "
        f"after it; {sum(calls.values())} model calls for {len(calls)} steps; "
        f"{len(digests)} digests, one per minute"
    )
    assert len(runs) == RUNS and all(r.status == models.RunStatus.SUCCEEDED for r in runs)
    # each step ran once, except one the killed replica was running (that attempt ran again)
    assert all(n == 1 for step_id, n in calls.items() if step_id not in held), calls
    assert len(agent_steps) >= RUNS * 3
    assert twice == {}, twice  # no message reached Slack twice
    assert sorted(hook["seen"]) == sorted(f"{r.id}:publish:1" for r in runs)
    assert taken_over is not None and taken_over < 35  # within one 30 s lease
    # each minute's digest posted once (twice == {}) by whichever replica scheduled then, none
    # missing while the replicas ran: a takeover posts the one it missed
    first, last = _minute(began), _minute(ended)
    minutes = [first + timedelta(minutes=i) for i in range(1, 1 + int((last - first) / MINUTE))]
    due = {m for m in minutes if m + timedelta(seconds=30) < ended}  # time to post it
    assert due <= set(digests) <= {first, *minutes}, (sorted(due), digests, logs)


MINUTE = timedelta(minutes=1)


def _minute(when: datetime) -> datetime:
    return when.replace(second=0, microsecond=0)
