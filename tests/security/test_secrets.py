"""Secrets never show: not in logs (captured at DEBUG), error messages, chat, /metrics,
`crewchief runs --json` or `/crew digest`.

The bot runs on Slack with a real OpenAI client (against the local fake) and publishes to a
webhook whose URL carries a user, a password, a secret path and a token, as Slack's own
incoming webhooks and many others do. One run's webhook refuses the post (so its error is
recorded and shown), the next one's accepts it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from sqlmodel import select
from typer.testing import CliRunner

from bot.app import build_app
from bot.cli import cli
from bot.http import web_app
from bot.platforms.slack import SlackPlatform, slack_settings
from bot.settings import Settings
from storage import models
from tests.conftest import make_config
from tests.fakes.local_server import serve_locally
from tests.fakes.openai_server import DEFAULT_API_KEY, FakeOpenAIServer, running_fake_openai
from tests.fakes.slack_api import BOT_TOKEN, FakeSlack
from tests.fakes.slack_signing import SIGNING_SECRET, reaction_added
from tests.security.conftest import LogCapture
from tests.test_slack import CHANNEL, EDITH, SlackBot

HOOK_PATH = "/services/T0CREW/B0HOOK/Xq7SeCrEtPaTh9"
HOOK_AUTH = ("hookuser", "h00kPassw0rd")
HOOK_TOKEN = "qs3cr3tT0ken"
SECRETS = [
    BOT_TOKEN,
    SIGNING_SECRET,
    DEFAULT_API_KEY,
    HOOK_AUTH[1],
    HOOK_PATH.rsplit("/", 1)[1],
    HOOK_TOKEN,
]


@pytest.fixture
async def hook() -> AsyncIterator[dict[str, Any]]:
    """A webhook receiver that refuses its first post and accepts the rest."""
    state: dict[str, Any] = {"posts": 0}

    async def receive(request: web.Request) -> web.Response:
        state["posts"] += 1
        if state["posts"] == 1:
            return web.json_response({"error": "invalid_payload"}, status=400)
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post(HOOK_PATH, receive)
    async with serve_locally(app) as base:
        user, password = HOOK_AUTH
        state["url"] = base.replace("://", f"://{user}:{password}@") + (
            f"{HOOK_PATH}?token={HOOK_TOKEN}"
        )
        yield state


@pytest.fixture
async def openai() -> AsyncIterator[FakeOpenAIServer]:
    async with running_fake_openai() as server:
        yield server


@pytest.fixture
async def bot(
    db_url: str,
    tmp_path: Path,
    slack: FakeSlack,
    openai: FakeOpenAIServer,
    hook: dict[str, Any],
    logs: LogCapture,
) -> AsyncIterator[SlackBot]:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        crewchief_database_url=db_url,
        crewchief_config=tmp_path / "absent.yml",
        crewchief_llm="openai",
        openai_api_key=DEFAULT_API_KEY,
        openai_base_url=openai.base_url,
        slack_bot_token=BOT_TOKEN,
        slack_signing_secret=SIGNING_SECRET,
        slack_api_url=slack.api_url,
    )
    steps = [
        {"name": "research", "agent": "researcher"},
        {"name": "draft", "agent": "writer", "approval": {}},
        {"name": "publish", "agent": "publisher", "publish": {"to": "webhook", "url": hook["url"]}},
    ]
    app = build_app(
        settings,
        config=make_config({"workflows": {"blog-post": {"steps": steps}}}),
        default_approvers=[f"slack:{EDITH}"],
    )
    platform = SlackPlatform(app, slack_settings(settings))
    app.add_platform(platform)
    async with (
        serve_locally(web_app(app, platform)) as base,
        app.running(),
        aiohttp.ClientSession() as http,
    ):
        yield SlackBot(app, slack, f"{base}/slack/events", http)
    await app.aclose()


async def test_secrets_appear_nowhere(
    bot: SlackBot, hook: dict[str, Any], logs: LogCapture, monkeypatch: pytest.MonkeyPatch
) -> None:
    for run_id in (1, 2):
        await bot.command(f"run blog-post heat pumps, part {run_id}")
        await bot.wait()
        draft_ts = bot.ts_of("draft")
        await bot.event(
            reaction_added(user=EDITH, reaction="white_check_mark", channel=CHANNEL, ts=draft_ts)
        )
        await bot.wait()
    assert hook["posts"] == 2  # the webhook was really called, with its secrets
    failed, published = bot.run(1), bot.run(2)
    assert failed.status == models.RunStatus.FAILED and failed.error
    assert "refused it: 400" in failed.error
    assert published.status == models.RunStatus.SUCCEEDED

    _, digest = await bot.command("digest")
    base = bot.url.removesuffix("/slack/events")
    async with bot.http.get(f"{base}/metrics") as resp:
        metrics = await resp.text()
    monkeypatch.setenv("CREWCHIEF_DATABASE_URL", str(bot.app.db.url.render_as_string(False)))
    listed = CliRunner().invoke(cli, ["runs", "--json"])
    assert listed.exit_code == 0 and json.loads(listed.stdout)[0]["id"] in (1, 2)
    with bot.app.db.read() as s:
        stored = [
            repr(row)
            for table in (models.Run, models.Step, models.Outbox, models.AuditEntry)
            for row in s.exec(select(table)).all()
        ]
    # The fake servers of this test log the paths they serve (aiohttp.access) in this process
    # too; crewchief's own access log holds only /slack/events, /metrics and the like.
    ours = "\n".join(logs.format(r) for r in logs.records if r.name != "aiohttp.access")
    where = {
        "logs at DEBUG": ours,
        "Slack API calls": json.dumps([c.args for c in bot.slack.calls], default=str),
        "/crew digest": json.dumps(digest),
        "/metrics": metrics,
        "crewchief runs --json": listed.output,
        "errors and messages stored": "\n".join(stored),
    }
    assert "published" in where["Slack API calls"] and "127.0.0.1" in where["Slack API calls"]
    assert "POST" in where["logs at DEBUG"]  # the capture really saw the HTTP traffic
    leaks = [
        f"{secret!r} in {name}: …{text[max(0, text.find(secret) - 150) : text.find(secret) + 40]}"
        for name, text in where.items()
        for secret in SECRETS
        if secret in text
    ]
    assert not leaks, "\n".join(leaks)
