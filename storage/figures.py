"""The digest's figures: SQL aggregates over a time window, on SQLite and PostgreSQL alike.

Every query filters on an indexed timestamp (run.created_at, llmcall.created_at,
auditentry.at) so the time stays flat as history grows; percentiles are nearest-rank, from
window functions, so no row is brought into Python to be sorted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Integer, and_, case, cast, func, literal, or_
from sqlalchemy import select as sa_select
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col, select

from storage.models import (
    AuditEntry,
    DraftVersion,
    LLMCall,
    Run,
    RunStatus,
    Step,
    StepStatus,
)

DECISION_ACTIONS = {
    "draft.approved": "approved",
    "draft.sent_back": "sent back",
    "draft.rejected": "rejected",
}


@dataclass(frozen=True)
class Window:
    since: datetime
    until: datetime

    @property
    def seconds(self) -> float:
        return (self.until - self.since).total_seconds()


def _in(column: Any, window: Window) -> ColumnElement[bool]:
    return and_(col(column) >= window.since, col(column) < window.until)


def epoch(session: Session, column: Any) -> ColumnElement[Any]:
    """Seconds since 1970 of a timestamp column, in the database's own dialect."""
    if session.get_bind().dialect.name == "postgresql":
        return func.extract("epoch", column)
    return (func.julianday(column) - 2440587.5) * 86400.0


def percentiles(
    session: Session,
    value: Any,
    group: Any | None,
    where: Sequence[ColumnElement[bool]],
    joins: Sequence[tuple[Any, ColumnElement[bool]]] = (),
    from_: Any | None = None,
    ranks: Sequence[int] = (50, 90),
) -> dict[Any, dict[str, Any]]:
    """Nearest-rank percentiles of `value` per `group` (None: one group, key None):
    {group: {"n": count, "p50": value, "p90": value}}."""
    grp = group if group is not None else literal("all")
    partition = [group] if group is not None else []
    inner = select(
        grp.label("grp"),
        value.label("v"),
        func.row_number().over(partition_by=partition, order_by=value).label("rn"),
        func.count().over(partition_by=partition).label("n"),
    )
    if from_ is not None:
        inner = inner.select_from(from_)
    for table, on in joins:
        inner = inner.join(table, on)
    sub = inner.where(*where).subquery()
    wanted = or_(*(sub.c.rn == (sub.c.n * p + 99) // 100 for p in ranks))
    out: dict[Any, dict[str, Any]] = {}
    for grp_value, v, rn, n in session.execute(
        select(sub.c.grp, sub.c.v, sub.c.rn, sub.c.n).where(wanted)
    ):
        key = grp_value if group is not None else None
        entry = out.setdefault(key, {"n": int(n)})
        for p in ranks:
            if rn == (n * p + 99) // 100:
                entry[f"p{p}"] = float(v)
    return out


def runs_by_workflow(session: Session, window: Window) -> dict[str, dict[str, int]]:
    """Runs started in the window, per workflow and current status."""
    rows = session.exec(
        select(Run.workflow, Run.status, func.count())
        .where(_in(Run.created_at, window))
        .group_by(col(Run.workflow), col(Run.status))
    ).all()
    out: dict[str, dict[str, int]] = {}
    for workflow, status, n in rows:
        out.setdefault(workflow, {})[status] = int(n)
    return out


def stuck_runs(session: Session, quiet_since: datetime) -> dict[str, int]:
    """Runs still working (not waiting for people) that have not changed since `quiet_since`."""
    rows = session.exec(
        select(Run.workflow, func.count())
        .where(col(Run.status) == RunStatus.RUNNING, col(Run.updated_at) < quiet_since)
        .group_by(col(Run.workflow))
    ).all()
    return {workflow: int(n) for workflow, n in rows}


def runs_per_bucket(session: Session, window: Window, buckets: int) -> list[int]:
    """How many runs started in each of `buckets` equal slices of the window."""
    width = window.seconds / buckets
    start = window.since.timestamp()
    index = cast((epoch(session, Run.created_at) - start) / width, Integer)
    rows = session.execute(
        select(index, func.count()).where(_in(Run.created_at, window)).group_by(index)
    ).all()
    counts = [0] * buckets
    for i, n in rows:
        counts[min(max(int(i), 0), buckets - 1)] += int(n)
    return counts


def spend_per_bucket(session: Session, window: Window, buckets: int) -> list[float]:
    width = window.seconds / buckets
    start = window.since.timestamp()
    index = cast((epoch(session, LLMCall.created_at) - start) / width, Integer)
    rows = session.execute(
        select(index, func.sum(LLMCall.cost_usd))
        .where(_in(LLMCall.created_at, window))
        .group_by(index)
    ).all()
    spend = [0.0] * buckets
    for i, cost in rows:
        spend[min(max(int(i), 0), buckets - 1)] += float(cost or 0.0)
    return spend


def per_day(session: Session, first_day: datetime, days: int) -> list[tuple[int, float]]:
    """Runs started and model spend (USD) on each of `days` days of 24 hours from
    `first_day` (a midnight): one GROUP BY over each table's indexed timestamp."""
    window = Window(first_day, first_day + timedelta(days=days))
    runs = runs_per_bucket(session, window, days)
    spend = spend_per_bucket(session, window, days)
    return list(zip(runs, spend, strict=True))


def approvals_pending(session: Session) -> tuple[int, datetime | None]:
    """Drafts waiting for people now, and since when the oldest has waited."""
    count, oldest = session.exec(
        select(func.count(), func.min(Step.awaiting_since)).where(
            col(Step.status) == StepStatus.AWAITING_APPROVAL
        )
    ).one()
    return int(count), oldest


def decisions(session: Session, window: Window) -> dict[str, int]:
    """Drafts approved, sent back and rejected in the window."""
    rows = session.exec(
        select(AuditEntry.action, func.count())
        .where(_in(AuditEntry.at, window), col(AuditEntry.action).in_(DECISION_ACTIONS))
        .group_by(col(AuditEntry.action))
    ).all()
    return {DECISION_ACTIONS[action]: int(n) for action, n in rows}


def _decisions_of_drafts(window: Window) -> dict[str, Any]:
    """Decision audit entries in the window, joined to the draft version they decided."""
    audit = AuditEntry.__table__.c  # type: ignore[attr-defined]
    return {
        "where": [
            audit.at >= window.since,
            audit.at < window.until,
            audit.action.in_(DECISION_ACTIONS),
        ],
        "from_": AuditEntry.__table__,  # type: ignore[attr-defined]
        "joins": [
            (
                DraftVersion,
                and_(
                    col(DraftVersion.run_id) == audit.run_id,
                    col(DraftVersion.version) == audit.detail["version"].as_integer(),
                ),
            )
        ],
    }


def _waited(session: Session) -> ColumnElement[Any]:
    audit = AuditEntry.__table__.c  # type: ignore[attr-defined]
    return epoch(session, audit.at) - epoch(session, DraftVersion.created_at)


def decision_times(session: Session, window: Window) -> dict[str, Any]:
    """Seconds from a draft version's posting to its decision: count, median and p90."""
    found = percentiles(session, _waited(session), None, **_decisions_of_drafts(window))
    return found.get(None, {"n": 0})


def prompt_versions(session: Session, window: Window) -> list[dict[str, Any]]:
    """Per agent and prompt version: model calls and their cost, and for drafts the
    decisions people made on them and the median time they took."""
    calls = session.execute(
        sa_select(
            col(LLMCall.agent),
            col(LLMCall.prompt_version),
            func.count(),
            func.sum(LLMCall.cost_usd),
        )
        .where(_in(LLMCall.created_at, window), col(LLMCall.prompt_version).is_not(None))
        .group_by(col(LLMCall.agent), col(LLMCall.prompt_version))
    ).all()
    joined = _decisions_of_drafts(window)
    audit = AuditEntry.__table__.c  # type: ignore[attr-defined]
    query = sa_select(col(DraftVersion.prompt_version), audit.action, func.count()).select_from(
        joined["from_"]
    )
    for table, on in joined["joins"]:
        query = query.join(table, on)
    decided: dict[str, dict[str, int]] = {}
    for version, action, n in session.execute(
        query.where(*joined["where"]).group_by(col(DraftVersion.prompt_version), audit.action)
    ):
        decided.setdefault(str(version), {})[DECISION_ACTIONS[action]] = int(n)
    waits = percentiles(
        session, _waited(session), col(DraftVersion.prompt_version), ranks=(50,), **joined
    )
    return [
        {
            "agent": agent,
            "version": version,
            "calls": int(n),
            "cost_usd": float(cost or 0.0),
            "decisions": decided.get(version, {}),
            "median_decision_s": waits.get(version, {}).get("p50"),
        }
        for agent, version, n, cost in sorted(calls)
    ]


def spend_by_model(session: Session, window: Window) -> list[dict[str, Any]]:
    rows = session.execute(
        sa_select(
            col(LLMCall.model),
            func.count(),
            func.sum(LLMCall.input_tokens),
            func.sum(LLMCall.output_tokens),
            func.sum(LLMCall.cost_usd),
        )
        .where(_in(LLMCall.created_at, window))
        .group_by(col(LLMCall.model))
        .order_by(func.sum(LLMCall.cost_usd).desc(), col(LLMCall.model))
    ).all()
    return [
        {
            "model": model,
            "calls": int(calls),
            "input_tokens": int(tin or 0),
            "output_tokens": int(tout or 0),
            "cost_usd": float(cost or 0.0),
        }
        for model, calls, tin, tout, cost in rows
    ]


def agent_latency(session: Session, window: Window) -> dict[str, dict[str, Any]]:
    """Per agent: p50 and p95 of its successful model calls' latency, in milliseconds."""
    found = percentiles(
        session,
        col(LLMCall.latency_ms),
        col(LLMCall.agent),
        where=[_in(LLMCall.created_at, window), col(LLMCall.error).is_(None)],
        ranks=(50, 95),
    )
    return {str(agent): figures for agent, figures in found.items()}


def llm_calls(session: Session, window: Window) -> tuple[int, int]:
    """Model calls in the window, and how many of them failed."""
    total, failed = session.exec(
        select(func.count(), func.count(col(LLMCall.error))).where(_in(LLMCall.created_at, window))
    ).one()
    return int(total), int(failed)


def errors_by_cause(session: Session, window: Window, limit: int = 5) -> list[tuple[str, int]]:
    """Why steps failed and model calls erred in the window, most frequent first."""
    steps = session.exec(
        select(Step.error, func.count())
        .join(Run, col(Run.id) == Step.run_id)
        .where(
            col(Step.status) == StepStatus.FAILED,
            _in(Run.created_at, window),
            col(Step.error).is_not(None),
        )
        .group_by(col(Step.error))
    ).all()
    calls = session.exec(
        select(LLMCall.error, func.count())
        .where(_in(LLMCall.created_at, window), col(LLMCall.error).is_not(None))
        .group_by(col(LLMCall.error))
    ).all()
    counts: dict[str, int] = {}
    for cause, n in [*steps, *calls]:
        counts[str(cause)] = counts.get(str(cause), 0) + int(n)
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:limit]


def costliest_runs(session: Session, window: Window, limit: int = 3) -> list[Run]:
    return list(
        session.exec(
            select(Run)
            .where(_in(Run.created_at, window), col(Run.cost_usd) > 0)
            .order_by(col(Run.cost_usd).desc(), col(Run.id))
            .limit(limit)
        ).all()
    )


STEP_SECONDS_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)


def step_duration_histogram(
    session: Session, buckets: Sequence[float] = STEP_SECONDS_BUCKETS
) -> dict[str, tuple[list[int], int, float]]:
    """Per agent, over the steps that ran to an end (succeeded or failed): how many took at
    most each bucket's seconds (cumulative, as Prometheus counts), how many in all, and
    their summed seconds. One aggregate query."""
    seconds = epoch(session, Step.finished_at) - epoch(session, Step.started_at)
    ended = and_(
        col(Step.status).in_([StepStatus.SUCCEEDED, StepStatus.FAILED]),
        col(Step.started_at).is_not(None),
        col(Step.finished_at).is_not(None),
    )
    columns = [func.sum(case((seconds <= le, 1), else_=0)) for le in buckets]
    rows = session.execute(
        sa_select(col(Step.agent), func.count(), func.coalesce(func.sum(seconds), 0.0), *columns)
        .where(ended)
        .group_by(col(Step.agent))
    ).all()
    return {
        str(agent): ([int(n or 0) for n in counts], int(total), float(summed))
        for agent, total, summed, *counts in rows
    }
