"""What the Slack adapter needs from the environment and from Slack, without slack-bolt.

`crewchief start` checks these settings before it loads the Slack SDK, and `crewchief
manifest` declares exactly these scopes and events.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.errors import ConfigError

if TYPE_CHECKING:
    from bot.settings import Settings

# Exactly what the Slack adapter uses; manifest.yml must declare these and nothing else.
SCOPES = frozenset(
    {
        "commands",  # /crew
        "chat:write",  # chat.postMessage, chat.update, chat.postEphemeral
        "reactions:read",  # reaction_added / reaction_removed
        "channels:history",  # message.channels (feedback for 🔁); history: finding an earlier post
        "groups:history",  # message.groups: the same in private channels
        "app_mentions:read",  # app_mention
        "files:write",  # long drafts are attached as a file
    }
)
EVENTS = frozenset(
    {"reaction_added", "reaction_removed", "message.channels", "message.groups", "app_mention"}
)


@dataclass(frozen=True)
class SlackSettings:
    bot_token: str
    signing_secret: str | None
    app_token: str | None
    api_url: str | None

    @property
    def socket_mode(self) -> bool:
        return self.app_token is not None


def slack_settings(settings: Settings) -> SlackSettings:
    """The Slack tokens, checked: a missing or malformed one is named, never printed."""
    token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else ""
    if not token:
        raise ConfigError("SLACK_BOT_TOKEN is not set (the Bot User OAuth Token, xoxb-…)")
    if not token.startswith("xoxb-"):
        raise ConfigError("SLACK_BOT_TOKEN does not look like a bot token (it starts with xoxb-)")
    app_token = settings.slack_app_token.get_secret_value() if settings.slack_app_token else None
    if app_token is not None and not app_token.startswith("xapp-"):
        raise ConfigError("SLACK_APP_TOKEN does not look like an app-level token (xapp-…)")
    secret = (
        settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else None
    )
    if app_token is None and not secret:
        raise ConfigError(
            "SLACK_SIGNING_SECRET is not set: HTTP mode needs it to verify requests "
            "(or set SLACK_APP_TOKEN for Socket Mode)"
        )
    api_url = settings.slack_api_url
    if api_url is not None:
        if not re.match(r"^https?://", api_url):
            raise ConfigError(
                f"SLACK_API_URL must be an http(s) URL ending in /api/, got {api_url!r}"
            )
        api_url = api_url if api_url.endswith("/") else api_url + "/"
    return SlackSettings(token, secret, app_token, api_url)
