"""The one place where a service's outcome becomes what the asker reads.

A command is answered with a reply; an event without a response body (a reaction) is
answered privately, and only when there is something to say: a decision by reaction shows on
the cards themselves.
"""

from __future__ import annotations

from agents.outcomes import (
    Acknowledged,
    AlreadyVoted,
    Cancelled,
    Counted,
    Decided,
    Ignored,
    Noted,
    Outcome,
    Refused,
    Retrying,
    Silenced,
    Started,
    Withdrawn,
)
from commands.spec import Reply


def notice(text: str, run_id: int | None = None, **kwargs: bool) -> Reply:
    return Reply("notice", {"text": text}, run_id=run_id, **kwargs)


def reply_for(outcome: Outcome, *, command: bool) -> Reply | None:
    """What to tell the asker about `outcome`; None when nothing needs saying."""
    match outcome:
        case Started(run_id, workflow, cut, limit):
            return Reply(
                "run_started",
                {"run_id": run_id, "workflow": workflow, "cut": cut, "limit": limit},
                run_id=run_id,
            )
        case Refused(reason, _, run_id, _):
            return notice(reason, run_id)
        case Ignored(reason, run_id, quiet):
            return notice(reason, run_id, quiet=quiet and not command) if reason else None
        case Counted(run_id, count, quorum):
            return notice(f"approval counted: {count} of {quorum}", run_id)
        case Decided(run_id, decision):
            return notice(f"run {run_id}: draft {decision.value}", run_id) if command else None
        case AlreadyVoted(run_id):
            return notice("you already voted on this draft", run_id) if command else None
        case Cancelled(run_id):
            return notice(f"run {run_id} cancelled", run_id, private=False) if command else None
        case Retrying(run_id, step):
            return notice(f"run {run_id}: retrying step {step.name}", run_id, private=False)
        case Withdrawn():
            return None
        case Acknowledged(alert_id, _):
            return notice(f"alert {alert_id} acknowledged") if command else None
        case Silenced(alert_id, until):
            return notice(f"alert {alert_id} silenced until {until}") if command else None
        case Noted():
            return None  # the card shows it
    raise TypeError(f"no answer for {outcome!r}")  # pragma: no cover - a new Outcome type
