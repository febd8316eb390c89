"""How fast `/crew` is acknowledged: really signed slash commands through the real Bolt app
(HTTP mode) against the local fake Slack, while the workers run the launched workflows.

    python -m bench.ack_latency [--requests 200] [--database-url URL]

Slack and Discord give a bot 3 s; DESIGN.md asks for "well under". Prints p50/p95/p99/max.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp

from bot.app import build_app
from bot.http import web_app
from bot.platforms.slack import SlackPlatform, slack_settings
from bot.settings import Settings
from tests.fakes.local_server import serve_locally
from tests.fakes.slack_api import BOT_TOKEN, fake_slack
from tests.fakes.slack_signing import SIGNING_SECRET, signed_form, slash_command


async def main(requests: int, database_url: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = database_url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        async with fake_slack() as slack:
            settings = Settings(
                _env_file=None,  # type: ignore[call-arg]
                crewchief_database_url=url,
                crewchief_config=Path(tmp) / "absent.yml",
                crewchief_llm="offline",
                slack_bot_token=BOT_TOKEN,
                slack_signing_secret=SIGNING_SECRET,
                slack_api_url=slack.api_url,
                crewchief_approvers="slack:U0EDITH001",
            )
            app = build_app(settings)
            platform = SlackPlatform(app, slack_settings(settings))
            app.add_platform(platform)
            times: list[float] = []
            async with (
                serve_locally(web_app(app, platform)) as base,
                app.running(),
                aiohttp.ClientSession() as http,
            ):
                target = f"{base}/slack/events"
                for i in range(requests):
                    body, headers = signed_form(
                        slash_command(f"run research-brief topic number {i}", channel_id="C1")
                    )
                    start = time.perf_counter()
                    async with http.post(target, data=body, headers=headers) as resp:
                        await resp.read()
                        assert resp.status == 200, resp.status
                    times.append((time.perf_counter() - start) * 1000)
                drain_start = time.perf_counter()
                await app.wait_idle(timeout=600)
                drained = time.perf_counter() - drain_start
            await app.aclose()
    times.sort()
    q = statistics.quantiles(times, n=100)
    print(f"database: {url.split(':')[0]}  requests: {requests}")
    print(f"ack latency ms  p50 {q[49]:.1f}  p95 {q[94]:.1f}  p99 {q[98]:.1f}  max {times[-1]:.1f}")
    print(f"all {requests} runs finished and delivered {drained:.1f} s after the last ack")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.database_url))
