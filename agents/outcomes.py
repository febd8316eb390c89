"""What a decision did, as types: services return one, and the dispatcher alone turns it into
an answer (a reply to a command, or a private notice for an event that has no reply)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from storage.models import Decision, Step


@dataclass(frozen=True)
class Started:
    run_id: int
    workflow: str
    cut: bool = False  # the text was longer than max_text_chars
    limit: int = 0


@dataclass(frozen=True)
class Decided:
    run_id: int
    decision: Decision


@dataclass(frozen=True)
class Counted:
    """An approval that does not reach the quorum yet."""

    run_id: int
    count: int
    quorum: int


@dataclass(frozen=True)
class Withdrawn:
    run_id: int


@dataclass(frozen=True)
class AlreadyVoted:
    run_id: int


@dataclass(frozen=True)
class Cancelled:
    run_id: int


@dataclass(frozen=True)
class Retrying:
    run_id: int
    step: Step


@dataclass(frozen=True)
class Acknowledged:
    alert_id: int
    by: str


@dataclass(frozen=True)
class Silenced:
    alert_id: int
    until: str  # e.g. "2026-12-03 10:15 UTC"


@dataclass(frozen=True)
class Noted:
    """The acknowledger's reply in an alert card's thread, kept as the alerts' note."""

    alert_id: int
    by: str


@dataclass(frozen=True)
class Refused:
    """The asker may not do this. The dispatcher audits it as `action` and answers once."""

    reason: str
    action: str = "command.refused"
    run_id: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Ignored:
    """Nothing to do. With a `reason`, the asker is told why (quietly where that is noise)."""

    reason: str | None = None
    run_id: int | None = None
    quiet: bool = False


Outcome = (
    Started
    | Decided
    | Counted
    | Withdrawn
    | AlreadyVoted
    | Cancelled
    | Retrying
    | Refused
    | Ignored
    | Acknowledged
    | Silenced
    | Noted
)
