"""What the alert rules measure, and the alerts themselves: SQL over indexed timestamps."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlmodel import Session, col, func, select

from storage.models import (
    Alert,
    AlertState,
    JobRun,
    LLMCall,
    Message,
    MessageKind,
    Outbox,
    OutboxStatus,
    Run,
    RunStatus,
    Step,
    StepStatus,
)


def finished_runs(session: Session, since: datetime) -> dict[str, tuple[int, int]]:
    """Per workflow: (failed, failed + succeeded) of the runs that finished since `since`."""
    rows = session.exec(
        select(Run.workflow, Run.status, func.count())
        .where(
            col(Run.finished_at) >= since,
            col(Run.status).in_([RunStatus.FAILED, RunStatus.SUCCEEDED]),
        )
        .group_by(col(Run.workflow), col(Run.status))
    ).all()
    out: dict[str, tuple[int, int]] = {}
    for workflow, status, n in rows:
        failed, total = out.get(workflow, (0, 0))
        out[workflow] = (failed + (n if status == RunStatus.FAILED else 0), total + n)
    return out


def drafts_waiting_since(session: Session, before: datetime) -> dict[str, int]:
    """Per workflow: drafts waiting for people since before `before`."""
    rows = session.exec(
        select(Run.workflow, func.count())
        .select_from(Step)
        .join(Run, col(Run.id) == Step.run_id)
        .where(
            col(Step.status) == StepStatus.AWAITING_APPROVAL,
            col(Step.awaiting_since) < before,
        )
        .group_by(col(Run.workflow))
    ).all()
    return {workflow: int(n) for workflow, n in rows}


def llm_calls_by_model(session: Session, since: datetime) -> dict[str, tuple[int, int]]:
    """Per model: (failed, total) model calls since `since`."""
    rows = session.exec(
        select(LLMCall.model, func.count(col(LLMCall.error)), func.count())
        .where(col(LLMCall.created_at) >= since)
        .group_by(col(LLMCall.model))
    ).all()
    return {model: (int(failed), int(total)) for model, failed, total in rows}


def undelivered(
    session: Session, waiting_before: datetime, failed_since: datetime
) -> dict[str, int]:
    """Per platform: messages still waiting since before `waiting_before`, or given up on
    since `failed_since`."""
    waiting = session.exec(
        select(Outbox.platform, func.count())
        .where(
            col(Outbox.status) == OutboxStatus.PENDING,
            col(Outbox.created_at) < waiting_before,
        )
        .group_by(col(Outbox.platform))
    ).all()
    failed = session.exec(
        select(Outbox.platform, func.count())
        .where(
            col(Outbox.status) == OutboxStatus.FAILED,
            col(Outbox.created_at) >= failed_since,
        )
        .group_by(col(Outbox.platform))
    ).all()
    out: dict[str, int] = {}
    for platform, n in [*waiting, *failed]:
        out[platform] = out.get(platform, 0) + int(n)
    return out


def last_run_before(session: Session, job: str, before: datetime) -> datetime | None:
    """When `job` last started before `before` (its run for an earlier period)."""
    return session.exec(
        select(func.max(JobRun.started_at)).where(
            JobRun.job == job, col(JobRun.started_at) < before
        )
    ).one()


def first_run(session: Session, jobs: Collection[str]) -> datetime | None:
    """When any of these jobs first ran: the scheduler was alive from then on."""
    return session.exec(select(func.min(JobRun.started_at)).where(col(JobRun.job).in_(jobs))).one()


def open_alerts(session: Session, *, lock: bool = False) -> list[Alert]:
    """Pending and firing alerts, oldest first (row-locked on PostgreSQL with `lock`)."""
    query = (
        select(Alert)
        .where(col(Alert.state).in_([AlertState.PENDING, AlertState.FIRING]))
        .order_by(col(Alert.id))
    )
    if lock:
        query = query.with_for_update()
    return list(session.exec(query).all())


def cards_of(session: Session, alert_id: int) -> list[Message]:
    """The card in each ops channel that alert `alert_id` posted (for itself and, when
    several fired at once, for the others of its group)."""
    return list(
        session.exec(
            select(Message)
            .where(Message.alert_id == alert_id, Message.kind == MessageKind.ALERT)
            .order_by(col(Message.id))
        ).all()
    )


def group_members(session: Session, group_id: int, *, lock: bool = False) -> list[Alert]:
    """The alerts one card shows (those whose `group_id` is `group_id`), by id; row-locked
    on PostgreSQL with `lock`."""
    query = select(Alert).where(Alert.group_id == group_id).order_by(col(Alert.id))
    if lock:
        query = query.with_for_update()
    return list(session.exec(query).all())


def lock_alert(session: Session, alert_id: int) -> Alert | None:
    return session.exec(select(Alert).where(Alert.id == alert_id).with_for_update()).first()


def alerts_between(session: Session, since: datetime, until: datetime) -> dict[str, int]:
    """Alerts fired, acknowledged and resolved in the window (for the digest)."""
    counts = {}
    for name, column in (
        ("fired", Alert.fired_at),
        ("acknowledged", Alert.acknowledged_at),
        ("resolved", Alert.resolved_at),
    ):
        counts[name] = int(
            session.exec(
                select(func.count())
                .select_from(Alert)
                .where(col(column) >= since, col(column) < until)
            ).one()
        )
    return counts


def times_fired(session: Session, key: str, since: datetime) -> int:
    """How many alerts of `key` fired since `since` (each firing after a resolution is a new
    alert): how an alert that keeps flipping is told apart."""
    return int(
        session.exec(
            select(func.count())
            .select_from(Alert)
            .where(Alert.key == key, col(Alert.fired_at) >= since)
        ).one()
    )
