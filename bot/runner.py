"""`crewchief start`: the platforms, the HTTP server and the workers in one process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import TYPE_CHECKING

from bot.platforms.discord_config import discord_settings
from bot.platforms.slack_config import slack_settings

if TYPE_CHECKING:
    from bot.platforms.discord import DiscordPlatform
    from bot.platforms.slack import SlackPlatform
    from bot.settings import Settings

log = logging.getLogger("crewchief")


async def serve(settings: Settings, *, platforms: set[str], host: str, port: int) -> None:
    """Until SIGINT/SIGTERM (or `quit` in the shell). Raises ConfigError before anything runs."""
    slack_conf = slack_settings(settings) if "slack" in platforms else None
    discord_conf = discord_settings(settings) if "discord" in platforms else None
    # The engine, the HTTP server and each chat SDK load once the settings are known to be
    # usable, and an SDK only for a platform being served.
    from aiohttp import web

    from bot.app import build_app, freeze_startup
    from bot.http import web_app

    app = build_app(settings)
    if app.llm.name == "offline":
        log.warning("LLM: offline (no OPENAI_API_KEY): agents write deterministic placeholder text")
    slack: SlackPlatform | None = None
    if slack_conf:
        from bot.platforms.slack import SlackPlatform

        slack = SlackPlatform(app, slack_conf)
        app.add_platform(slack)
    discord: DiscordPlatform | None = None
    if discord_conf:
        from bot.platforms.discord import DiscordPlatform

        discord = DiscordPlatform(app, discord_conf)
        app.add_platform(discord)
    freeze_startup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)

    runner = web.AppRunner(
        web_app(app, slack if slack and not slack.settings.socket_mode else None)
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    socket_handler = None
    try:
        async with app.running(schedule=True):
            await site.start()
            log.warning("crewchief listening on http://%s:%s (/healthz, /metrics)", host, port)
            if slack and slack.settings.socket_mode:
                from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler

                socket_handler = AsyncSocketModeHandler(slack.bolt, slack.settings.app_token)
                await socket_handler.connect_async()
                log.warning("Slack: connected in Socket Mode")
            elif slack:
                log.warning("Slack: HTTP mode at POST http://%s:%s/slack/events", host, port)
            if discord:
                await discord.start()
                log.warning("Discord: %s", discord.state)
            if "shell" in platforms:
                from rich.console import Console

                from bot.platforms.shell import ShellPlatform, ShellSession

                shell = ShellPlatform(
                    Console(highlight=False), chart_dir=settings.crewchief_chart_dir
                )
                app.add_platform(shell)
                session = ShellSession(app, shell)
                session.greet(None)
                shell_task = asyncio.create_task(session.interactive())
                shell_task.add_done_callback(lambda _: stop.set())
            await stop.wait()
    finally:
        if socket_handler is not None:
            await socket_handler.close_async()
        await runner.cleanup()
        await app.aclose()
