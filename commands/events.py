"""Typed, platform-neutral inbound events: what an adapter turns a chat payload into."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

COMMAND = "/crew"  # the one slash command every platform registers; SlashCommand is its event


@dataclass(frozen=True)
class Actor:
    platform: str  # "shell" | "slack" | "discord"
    user_id: str  # the platform's own id: "bob", "U012AB", "81234..."
    display_name: str = ""
    roles: tuple[str, ...] = ()  # the platform's role ids the person holds (Discord)

    @property
    def qualified(self) -> str:
        """The id used in config and storage: `slack:U012AB`, `shell:bob`."""
        return f"{self.platform}:{self.user_id}"


@dataclass(frozen=True)
class SlashCommand:
    event_id: str  # unique per delivery attempt group; duplicates are dropped
    actor: Actor
    channel: str
    text: str  # everything after `/crew`


@dataclass(frozen=True)
class ReactionAdded:
    event_id: str  # "" when the platform gives none: de-duplicated by what it says
    actor: Actor
    channel: str
    message_platform_id: str  # the platform's id of the message reacted to
    emoji: str  # the unicode character or the platform's name ("white_check_mark")


@dataclass(frozen=True)
class ReactionRemoved:
    event_id: str
    actor: Actor
    channel: str
    message_platform_id: str
    emoji: str


@dataclass(frozen=True)
class ThreadReply:
    event_id: str
    actor: Actor
    channel: str
    thread_platform_id: str  # the platform's id of the thread's parent message
    text: str


InboundEvent = SlashCommand | ReactionAdded | ReactionRemoved | ThreadReply


# NUL (PostgreSQL cannot store it in text) and lone surrogates (no UTF-8 encoding exists for
# them, yet JSON can carry one as `\ud800`).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(text: str) -> str:
    """`text` with each character no database can store replaced by U+FFFD."""
    return _UNSTORABLE.sub("\ufffd", text)


def storable_event(event: InboundEvent) -> InboundEvent:
    """The event with every text field storable, so odd input is answered, not a crash."""
    changes: dict[str, object] = {
        f.name: storable(value)
        for f in dataclasses.fields(event)
        if isinstance(value := getattr(event, f.name), str)
    }
    changes["actor"] = dataclasses.replace(
        event.actor,
        user_id=storable(event.actor.user_id),
        display_name=storable(event.actor.display_name),
    )
    return dataclasses.replace(event, **changes)  # type: ignore[arg-type]
