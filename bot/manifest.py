"""The Slack app manifest, built from what the Slack adapter actually uses.

`manifest.yml` at the repository root is this manifest for Socket Mode; a test keeps the two
equal and validates them against Slack's manifest schema.
"""

from __future__ import annotations

from typing import Any

import yaml

from bot.platforms.slack_config import EVENTS, SCOPES
from commands.events import COMMAND

USAGE_HINT = "run <workflow> <text> · status · approve|reject <run> · help"


def build_manifest(url: str | None = None) -> dict[str, Any]:
    """Socket Mode by default; with a public base URL, HTTP mode at `<url>/slack/events`."""
    command: dict[str, Any] = {
        "command": COMMAND,
        "description": "Launch and supervise AI agent workflows",
        "usage_hint": USAGE_HINT,
        "should_escape": False,
    }
    settings: dict[str, Any] = {
        "event_subscriptions": {"bot_events": sorted(EVENTS)},
        "interactivity": {"is_enabled": True},
        "org_deploy_enabled": False,
        "socket_mode_enabled": url is None,
        "token_rotation_enabled": False,
    }
    if url is not None:
        if not url.startswith("https://"):
            raise ValueError(f"--url must be a public https:// base URL, got {url!r}")
        endpoint = url.rstrip("/") + "/slack/events"
        command["url"] = endpoint
        settings["event_subscriptions"]["request_url"] = endpoint
        settings["interactivity"]["request_url"] = endpoint
    return {
        "_metadata": {"major_version": 1, "minor_version": 1},
        "display_information": {
            "name": "crewchief",
            "description": "Supervise AI agent workflows; approve drafts with a reaction.",
            "background_color": "#1f3a5f",
        },
        "features": {
            "bot_user": {"display_name": "crewchief", "always_online": True},
            "slash_commands": [command],
        },
        "oauth_config": {"scopes": {"bot": sorted(SCOPES)}},
        "settings": settings,
    }


def render_manifest(url: str | None = None) -> str:
    return yaml.safe_dump(build_manifest(url), sort_keys=False, allow_unicode=True)
