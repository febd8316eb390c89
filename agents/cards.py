"""The contexts of the messages a run posts, and the edits that keep its cards current.

Templates in bot/templates/<platform>/ render these contexts; nothing here knows a platform.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Session

from storage import outbox
from storage.models import MessageKind, Run, Step
from storage.outbox import Posted
from storage.queries import steps_of


def card_key(run_id: int) -> str:
    return f"run:{run_id}:card"


def run_card_context(
    run: Run, steps: list[Step], now: datetime, *, offline: bool
) -> dict[str, Any]:
    current = next((s for s in steps if s.position == run.current_step), None)
    end = run.finished_at or now
    return {
        "run_id": run.id,
        "workflow": run.workflow,
        "text": run.text,
        "status": run.status,
        "requester": run.requester,
        "step_index": min(run.current_step + 1, len(steps)),
        "step_count": len(steps),
        "current_step": current.name if current else None,
        "current_agent": current.agent if current else None,
        "current_status": current.status if current else None,
        "version": current.version if current else 0,
        "elapsed_s": int((end - run.created_at).total_seconds()),
        "decided_by": run.decided_by,
        "error": run.error,
        "cost_usd": round(run.cost_usd, 4),
        "steps": [{"name": s.name, "agent": s.agent, "status": s.status} for s in steps],
        "offline": offline,
    }


def run_summary(run: Run, steps: list[Step]) -> dict[str, Any]:
    """A run as `/crew status` and `crewchief runs --json` show it."""
    return {
        "id": run.id,
        "workflow": run.workflow,
        "status": run.status,
        "text": run.text,
        "requester": run.requester,
        "decided_by": run.decided_by,
        "error": run.error,
        "cost_usd": round(run.cost_usd, 6),
        "created_at": run.created_at.isoformat(timespec="seconds"),
        "finished_at": run.finished_at.isoformat(timespec="seconds") if run.finished_at else None,
        "steps": [{"name": s.name, "status": s.status, "version": s.version} for s in steps],
    }


def card_message(session: Session, run_id: int) -> Posted | None:
    """The run's card (storage.outbox.find remembers it once it is found)."""
    return outbox.find(session, card_key(run_id))


def post_run_card(session: Session, run: Run, now: datetime, *, offline: bool) -> Posted:
    assert run.id is not None
    return outbox.post(
        session,
        key=card_key(run.id),
        kind=MessageKind.RUN_CARD,
        platform=run.platform,
        channel=run.channel,
        run_id=run.id,
        template="run_card",
        context=run_card_context(run, steps_of(session, run.id), now, offline=offline),
    )


def refresh_run_card(session: Session, run: Run, now: datetime, *, offline: bool) -> None:
    assert run.id is not None
    card = card_message(session, run.id)
    if card is None:
        return
    context = run_card_context(run, steps_of(session, run.id), now, offline=offline)
    outbox.update(session, card, template="run_card", context=context)


def post_in_thread(
    session: Session,
    run: Run,
    *,
    key: str,
    kind: MessageKind,
    context: dict[str, Any],
    step: Step | None = None,
    version: int | None = None,
) -> Posted:
    assert run.id is not None
    card = card_message(session, run.id)
    return outbox.post(
        session,
        key=key,
        kind=kind,
        platform=run.platform,
        channel=run.channel,
        run_id=run.id,
        step_id=step.id if step else None,
        version=version,
        thread_of=card.id if card else None,
        template=kind.value,
        context={"run_id": run.id, **context},
    )


def post_about_draft(
    session: Session, run: Run, step: Step, *, kind: MessageKind, context: dict[str, Any]
) -> Posted:
    """A message about the step's current draft (its decision, a reminder), once per kind."""
    return post_in_thread(
        session,
        run,
        key=f"run:{run.id}:step:{step.position}:v{step.version}:{kind}",
        kind=kind,
        step=step,
        version=step.version,
        context={"version": step.version, **context},
    )


def notice(
    session: Session,
    *,
    run_id: int | None,
    platform: str,
    channel: str,
    recipient: str,
    template: str,
    context: dict[str, Any],
) -> None:
    """A private answer to one person; one about a run (`run_id`) shows in that run's
    thread."""
    card = card_message(session, run_id) if run_id is not None else None
    outbox.notice(
        session,
        platform=platform,
        channel=channel,
        recipient=recipient,
        template=template,
        context=context,
        thread_of=card.id if card else None,
    )


def draft_key(run_id: int, step: Step, version: int) -> str:
    return f"run:{run_id}:step:{step.position}:v{version}"


def draft_message(session: Session, run_id: int, step: Step, version: int) -> Posted | None:
    return outbox.find(session, draft_key(run_id, step, version))
