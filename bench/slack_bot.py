"""The bot in Slack HTTP mode for `bench.ack` and `bench.reaction`: the real Bolt app serving
`POST /slack/events` on 127.0.0.1, really signed requests, and the local fake Slack Web API
(tests/fakes/slack_api.py) receiving what the bot posts, in this process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench import common
from bot.app import App, build_app
from bot.http import web_app
from bot.platforms.slack import SlackPlatform, slack_settings
from tests.fakes.local_server import serve_locally
from tests.fakes.slack_api import BOT_TOKEN, FakeSlack
from tests.fakes.slack_signing import SIGNING_SECRET, signed_form, signed_json, slash_command

CHANNEL = "C0CONTENT1"
REQUESTER = "U0ALICE001"
EDITOR = "U0EDITH001"


@dataclass
class SlackBot:
    app: App
    slack: FakeSlack
    url: str  # the bot's Events API endpoint
    http: aiohttp.ClientSession

    async def command(self, text: str, user: str = REQUESTER) -> int:
        """A really signed `/crew <text>`; returns the HTTP status of the acknowledgement."""
        return await self._post(*signed_form(slash_command(text, user_id=user, channel_id=CHANNEL)))

    async def event(self, payload: dict[str, Any]) -> int:
        """A really signed Events API delivery; returns its HTTP status."""
        return await self._post(*signed_json(payload))

    async def _post(self, body: str, headers: dict[str, str]) -> int:
        """The HTTP status, or 0 when the connection failed."""
        try:
            async with self.http.post(self.url, data=body, headers=headers) as response:
                await response.read()
                return response.status
        except aiohttp.ClientError:
            return 0


@asynccontextmanager
async def serving(
    database_url: str, folder: Path, slack: FakeSlack, *, approvers: Iterable[str] = (EDITOR,)
) -> AsyncIterator[SlackBot]:
    """The bot with its workers and outbox running, `slack` started and stopped around it."""
    await slack.start()
    settings = common.settings(
        database_url,
        folder,
        slack_bot_token=BOT_TOKEN,
        slack_signing_secret=SIGNING_SECRET,
        slack_api_url=slack.api_url,
    )
    app = build_app(settings, default_approvers=[f"slack:{user}" for user in approvers])
    platform = SlackPlatform(app, slack_settings(settings))
    app.add_platform(platform)
    try:
        async with (
            serve_locally(web_app(app, platform)) as base,
            app.running(),
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http,
        ):
            yield SlackBot(app, slack, f"{base}/slack/events", http)
    finally:
        await app.aclose()
        await slack.stop()


async def in_turns(senders: int, items: int, send: Callable[[int], Awaitable[None]]) -> None:
    """`items` calls of `send(i)` by `senders` concurrent tasks, each sending one after the
    other: sender k sends items k, k + senders, k + 2 * senders, ..."""

    async def sender(k: int) -> None:
        for i in range(k, items, senders):
            await send(i)

    await asyncio.gather(*(sender(k) for k in range(senders)))
