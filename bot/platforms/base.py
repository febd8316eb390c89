"""What every chat platform adapter provides to the core."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from commands.dispatch import NotYetDelivered
from commands.events import Actor, InboundEvent
from commands.spec import Reply
from storage.models import OutboxKind

# A reaction or reply on a post whose id is not recorded yet (commands.dispatch.NotYetDelivered)
# is tried again after these pauses by a platform that does not deliver it again by itself:
# half a minute, as long as a dead holder's lease on that post lasts.
REDELIVER_AFTER = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0)
# Slack delivers an event again by itself, but a minute later once its quick first retry has
# failed too: a ✅ placed while its draft's post was being recorded is tried again here after
# pauses of 1 s in all, leaving the rest of the 3 s in which Slack wants its answer to the
# attempts themselves.
BEFORE_ANSWERING = (0.1, 0.2, 0.3, 0.4)


async def handled_once_placed(
    handle: Callable[..., Awaitable[list[Reply]]],
    event: InboundEvent,
    *,
    private_replies: bool = False,
    pauses: Sequence[float] = REDELIVER_AFTER,
) -> list[Reply] | None:
    """`handle(event)` (an inbound port's), tried again after each of `pauses` while the
    message it is about is still being posted (its id not recorded yet: the post is under
    way, or the bot died after posting it and before recording that, and the post is retried
    and recorded). None when it still cannot be placed after the last pause."""
    for wait in (*pauses, None):
        try:
            return await handle(event, private_replies=private_replies)
        except NotYetDelivered:
            if wait is None:
                break
            await asyncio.sleep(wait)
    return None


@dataclass(frozen=True)
class Delivery:
    """One outbox row, ready for an adapter to render and send.

    kind is "post" (new message, in `thread_platform_id`'s thread when set), "update" (edit the
    message `platform_id`) or "notice" (a private answer to `recipient`, a platform-qualified
    user id). `template` names the message kind; the adapter renders
    `templates/<platform>/<template>.j2` with `context`.
    """

    kind: OutboxKind
    channel: str
    template: str
    context: dict[str, Any] = field(default_factory=dict)
    ref: int | None = None  # Message.id: the short ref people type (#4)
    thread_platform_id: str | None = None
    platform_id: str | None = None
    recipient: str | None = None
    key: str = ""  # idempotency key of the outbox row
    attempt: int = 1  # past the first, an earlier attempt may have posted it already


class DeliveryError(Exception):
    """Delivery failed. `retry_after` (seconds) when the platform said when to try again;
    `permanent` when retrying cannot help (bad channel, message too old to edit...)."""

    def __init__(self, message: str, *, retry_after: float | None = None, permanent: bool = False):
        super().__init__(message)
        self.retry_after = retry_after
        self.permanent = permanent


class Inbound(Protocol):
    """What an adapter hands its events to (the dispatcher): everything the event changes is
    committed when it returns, so the adapter may then acknowledge it to its platform."""

    async def handle(
        self, event: InboundEvent, *, private_replies: bool = False
    ) -> list[Reply]: ...

    async def complete(self, actor: Actor, arg: str, typed: str) -> list[tuple[str, str]]:
        """Choices for an argument being typed: (label, value) pairs, read-only."""
        ...


class Platform(Protocol):
    name: str

    @property
    def state(self) -> str:
        """For /healthz: "connected" when it can receive and deliver; anything else is down."""
        ...

    async def deliver(self, delivery: Delivery) -> str | None:
        """Send it; return the platform's id of a posted message (None for edits/notices)."""
        ...
