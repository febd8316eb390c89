"""What the crash and replica tests share: a webhook that counts keys, the crewchief.yml and
environment they run the bot with, and people launching and approving through Slack while
`crewchief start` processes come and go."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web
from sqlmodel import select

from storage import models
from storage.db import Database
from tests.conftest import free_port
from tests.fakes.local_server import serve_locally
from tests.fakes.openai_server import DEFAULT_API_KEY, FakeOpenAIServer
from tests.fakes.slack_api import BOT_TOKEN, FakeSlack
from tests.fakes.slack_signing import (
    SIGNING_SECRET,
    reaction_added,
    signed_form,
    signed_json,
    slash_command,
)

CHANNEL = "C0CONTENT1"
OPS = "C0OPS00001"
EDITH = "U0EDITH001"


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


def write_config(tmp_path: Path, webhook_url: str, *, ops: str | None = None) -> None:
    """blog-post: research, a draft Edith approves, publication to the webhook; with `ops`, a
    digest posted there every minute."""
    config: dict[str, Any] = {
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
                        "publish": {"to": "webhook", "url": webhook_url},
                    },
                ]
            }
        }
    }
    if ops is not None:
        config["ops"] = {"channels": [f"slack:{ops}"]}
        config["digest"] = {"schedule": "* * * * *", "window": "1h"}
    (tmp_path / "crewchief.yml").write_text(yaml.safe_dump(config))


def bot_env(db_url: str, llm: FakeOpenAIServer, slack: FakeSlack) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "CREWCHIEF_"))},
        "CREWCHIEF_DATABASE_URL": db_url,
        "CREWCHIEF_LLM": "openai",
        "OPENAI_API_KEY": DEFAULT_API_KEY,
        "OPENAI_BASE_URL": llm.base_url,
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": slack.api_url,
    }


class Harness:
    """`runs` blog-post runs launched and approved through Slack, one request at a time, to
    whichever of the bot's processes (replicas) is up, as a load balancer would send them."""

    def __init__(
        self,
        tmp_path: Path,
        slack: FakeSlack,
        env: dict[str, str],
        http: aiohttp.ClientSession,
        *,
        runs: int,
        replicas: int = 1,
    ) -> None:
        self.tmp_path = tmp_path
        self.slack = slack
        self.env = env
        self.http = http
        self.runs = runs
        self.ports = [free_port() for _ in range(replicas)]
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self._turn = 0
        self.acked: set[int] = set()  # commands Slack got a 200 for
        self.sent: set[int] = set()
        self.approved: set[str] = set()  # draft ts whose ✅ was acknowledged
        self.next_run = 0

    async def start(self, replica: int = 0) -> None:
        port = self.ports[replica]
        self.procs[replica] = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot.cli",
            "start",
            "--platform",
            "slack",
            "--port",
            str(port),
            cwd=self.tmp_path,
            env=self.env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        for _ in range(600):
            try:
                async with self.http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
        raise AssertionError("crewchief start did not come up")

    async def kill(self, replica: int = 0) -> None:
        proc = self.procs.pop(replica)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()

    async def stop(self) -> None:
        for proc in self.procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            await asyncio.wait_for(proc.wait(), 30)
        self.procs.clear()

    async def post(self, body: str, headers: dict[str, str]) -> bool:
        """To the next live replica; True when it acknowledged (HTTP 200)."""
        live = sorted(self.procs)
        if not live:
            return False
        self._turn += 1
        port = self.ports[live[self._turn % len(live)]]
        url = f"http://127.0.0.1:{port}/slack/events"
        try:
            async with self.http.post(url, data=body, headers=headers) as r:
                return r.status == 200
        except (TimeoutError, aiohttp.ClientError):
            return False

    async def launch(self) -> None:
        """One `/crew run`, as a person types it: once (Slack never retries a command)."""
        if self.next_run >= self.runs:
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
