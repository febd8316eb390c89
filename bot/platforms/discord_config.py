"""The Discord settings from the environment, checked without loading discord.py.

`crewchief start` checks them before it loads the Discord client.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.errors import ConfigError

if TYPE_CHECKING:
    from bot.settings import Settings

_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{16,}$")


@dataclass(frozen=True)
class DiscordSettings:
    token: str
    guild_id: int | None
    message_content: bool
    api_url: str | None = None


def discord_settings(settings: Settings) -> DiscordSettings:
    """The Discord token and options, checked: a missing or malformed one is named, never
    printed."""
    token = settings.discord_token.get_secret_value().strip() if settings.discord_token else ""
    token = token.removeprefix("Bot ").strip()
    if not token:
        raise ConfigError(
            "DISCORD_TOKEN is not set (Developer Portal → your application → Bot → Reset Token)"
        )
    if not _TOKEN.match(token):
        raise ConfigError(
            "DISCORD_TOKEN does not look like a bot token (three dot-separated parts, "
            "as the Developer Portal shows it)"
        )
    guild = (settings.discord_guild_id or "").strip()
    if guild and not guild.isdigit():
        raise ConfigError(f"DISCORD_GUILD_ID must be a server id (digits), got {guild!r}")
    api_url = settings.discord_api_url
    if api_url is not None and not re.match(r"^https?://", api_url):
        raise ConfigError(
            f"DISCORD_API_URL must be an http(s) URL ending in /api/v10, got {api_url!r}"
        )
    return DiscordSettings(
        token,
        int(guild) if guild else None,
        settings.discord_message_content,
        api_url.rstrip("/") if api_url else None,
    )
