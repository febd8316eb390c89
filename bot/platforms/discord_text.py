"""How crewchief writes for Discord: mentions, embed colours and Discord's size limits.

Kept apart from the adapter (which needs the discord.py client) so templates and their tests
use exactly the rules the adapter posts with.
"""

from __future__ import annotations

from bot.escaping import escape_discord

CONTENT_LIMIT = 2000  # characters of message content
EMBED_DESCRIPTION_LIMIT = 4096  # characters per embed description
MESSAGE_EMBEDS_LIMIT = 6000  # characters across all embeds of one message
EMBEDS_PER_MESSAGE = 10

STATUS_COLOURS = {
    "succeeded": 0x2EB886,
    "failed": 0xE01E5A,
    "rejected": 0xE01E5A,
    "cancelled": 0x9E9EA6,
    "awaiting_approval": 0xECB22E,
    "running": 0x1D9BD1,
}


def mention(who: str) -> str:
    """`discord:81234` → `<@81234>`, `discord:role:42` → `<@&42>`; anyone else by name.

    A mention only pings when the adapter allows that id explicitly (allowed_mentions is
    none on every post), so writing one here never pings by itself.
    """
    users, roles = mentioned_ids([who])
    if roles:
        return f"<@&{roles[0]}>"
    if users:
        return f"<@{users[0]}>"
    return escape_discord(who)


def mentioned_ids(ids: list[str]) -> tuple[list[int], list[int]]:
    """The user and role ids among platform-qualified ids: the only ones a post may ping."""
    users: list[int] = []
    roles: list[int] = []
    for who in ids:
        if who.startswith("discord:role:"):
            value = who.removeprefix("discord:role:")
            if value.isascii() and value.isdigit():
                roles.append(int(value))
        elif who.startswith("discord:"):
            value = who.removeprefix("discord:")
            if value.isascii() and value.isdigit():
                users.append(int(value))
    return users, roles
