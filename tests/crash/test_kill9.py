"""The Slack bot, as a real `crewchief start` process, SIGKILLed again and again while people
launch runs and approve drafts: nothing acknowledged is lost and nothing happens twice.

Agents take a noticeable time (every model call waits 0.3 s at a local OpenAI-compatible
server), so kills land mid-step, mid-delivery and mid-decision. The kill moments come from a
seeded generator: `CREWCHIEF_CRASH_SEED=<n>` replays a failing sequence, and
`CREWCHIEF_CRASH_RUNS` / `CREWCHIEF_CRASH_KILLS` change its size.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from sqlmodel import select

from bot.platforms.slack import SCOPES
from storage import models
from storage.db import Database
from tests.conftest import free_port
from tests.fakes.local_server import serve_locally
from tests.fakes.openai_server import DEFAULT_API_KEY, running_fake_openai
from tests.fakes.slack_api import BOT_TOKEN, FakeSlack, fake_slack
from tests.fakes.slack_signing import (
    SIGNING_SECRET,
    reaction_added,
    signed_form,
    signed_json,
    slash_command,
)

SEED = int(os.environ.get("CREWCHIEF_CRASH_SEED", "20261203"))
RUNS = int(os.environ.get("CREWCHIEF_CRASH_RUNS", "100"))
KILLS = int(os.environ.get("CREWCHIEF_CRASH_KILLS", "20"))
CHANNEL = "C0CONTENT1"
EDITH = "U0EDITH001"
MODEL_DELAY = 0.3

pytestmark = pytest.mark.crash


@asynccontextmanager
async def webhook() -> AsyncIterator[dict[str, Any]]:
    """A publishing target that processes each Idempotency-Key once and counts every POST."""
    seen: Counter[str] = Counter()

    async def hook(request: web.Request) -> web.Response:
        seen[request.headers.get("Idempotency-Key", "")] += 1
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/hook", hook)
    async with serve_locally(app) as base:
        yield {"url": f"{base}/hook", "seen": seen}


class Harness:
    def __init__(self, tmp_path: Path, db_url: str, slack: FakeSlack, env: dict[str, str]):
        self.tmp_path = tmp_path
        self.db_url = db_url
        self.slack = slack
        self.env = env
        self.port = free_port()
        self.proc: asyncio.subprocess.Process | None = None
        self.http: aiohttp.ClientSession | None = None
        self.acked: set[int] = set()  # commands Slack got a 200 for
        self.sent: set[int] = set()
        self.approved: set[str] = set()  # draft ts whose ✅ was acknowledged
        self.next_run = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot.cli",
            "start",
            "--platform",
            "slack",
            "--port",
            str(self.port),
            cwd=self.tmp_path,
            env=self.env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        assert self.http is not None
        for _ in range(600):
            try:
                async with self.http.get(self.base + "/healthz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
        raise AssertionError("crewchief start did not come up")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)

    async def post(self, body: str, headers: dict[str, str]) -> bool:
        assert self.http is not None
        try:
            async with self.http.post(self.base + "/slack/events", data=body, headers=headers) as r:
                return r.status == 200
        except (TimeoutError, aiohttp.ClientError):
            return False

    async def launch(self) -> None:
        """One `/crew run`, as a person types it: once (Slack never retries a command)."""
        if self.next_run >= RUNS:
            return
        i = self.next_run
        self.next_run += 1
        self.sent.add(i)
        command = slash_command(
            f"run blog-post topic-{i:03d}", user_id="U0ALICE001", channel_id=CHANNEL
        )
        if await self.post(*signed_form(command)):
            self.acked.add(i)

    def drafts(self) -> list[str]:
        found = []
        for card in self.slack.top_level(CHANNEL):
            found += [m.ts for m in self.slack.thread(CHANNEL, card.ts) if "draft v1" in m.text]
        return found

    async def approve(self) -> None:
        """✅ on each draft not yet acknowledged; like Slack, a delivery that was not
        acknowledged is sent again with the same event id."""
        for ts in self.drafts():
            if ts in self.approved:
                continue
            event = reaction_added(
                user=EDITH,
                reaction="white_check_mark",
                channel=CHANNEL,
                ts=ts,
                event_id=f"Ev{ts.replace('.', '')}",
            )
            if await self.post(*signed_json(event)):
                self.approved.add(ts)

    async def drive(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        until = loop.time() + seconds
        while loop.time() < until:
            await self.launch()
            await self.approve()
            await asyncio.sleep(0.02)


def runs_by_text(db: Database) -> dict[str, list[models.Run]]:
    with db.read() as s:
        runs = s.exec(select(models.Run)).all()
    grouped: dict[str, list[models.Run]] = {}
    for run in runs:
        grouped.setdefault(run.text, []).append(run)
    return grouped


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
        (tmp_path / "crewchief.yml").write_text(
            yaml.safe_dump(
                {
                    "workflows": {
                        "blog-post": {
                            "steps": [
                                {"name": "research", "agent": "researcher"},
                                {
                                    "name": "draft",
                                    "agent": "writer",
                                    "approval": {"approvers": [f"slack:{EDITH}"]},
                                },
                                {
                                    "name": "publish",
                                    "agent": "publisher",
                                    "publish": {"to": "webhook", "url": hook["url"]},
                                },
                            ]
                        }
                    }
                }
            )
        )
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "CREWCHIEF_"))},
            "CREWCHIEF_DATABASE_URL": db_url,
            "CREWCHIEF_LLM": "openai",
            "OPENAI_API_KEY": DEFAULT_API_KEY,
            "OPENAI_BASE_URL": llm.base_url,
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": slack.api_url,
        }
        harness = Harness(tmp_path, db_url, slack, env)
        harness.http = http
        for _ in range(KILLS):
            await harness.start()
            await harness.drive(rng.uniform(0.3, 2.5))
            harness.kill()
            assert harness.proc is not None
            await harness.proc.wait()

        # the last start: everything in flight must move again, and finish
        db = Database(db_url)
        with db.read() as s:
            in_flight = {
                step.id: step.lease_owner
                for step in s.exec(
                    select(models.Step).where(models.Step.status == models.StepStatus.RUNNING)
                ).all()
            }
        await harness.start()
        restarted = time.monotonic()
        moving_again: float | None = None
        give_up = restarted + 240
        while time.monotonic() < give_up:
            await harness.drive(0.2)
            with db.read() as s:
                stuck = [
                    step_id
                    for step_id, owner in in_flight.items()
                    if (step := s.get(models.Step, step_id)) is not None
                    and step.status == models.StepStatus.RUNNING
                    and step.lease_owner == owner
                ]
            if moving_again is None and not stuck:
                moving_again = time.monotonic() - restarted
            runs = [r for rs in runs_by_text(db).values() for r in rs]
            if (
                moving_again is not None
                and harness.next_run >= RUNS
                and all(r.status == models.RunStatus.SUCCEEDED for r in runs)
            ):
                break
        assert harness.proc is not None
        harness.proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(harness.proc.wait(), 30)

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
