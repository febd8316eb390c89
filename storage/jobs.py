"""Scheduled jobs' runs: one (job, period) row each, claimed before the job does anything."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from storage.models import JobRun


def ran(session: Session, job: str, period: str) -> bool:
    """Whether `job` has claimed `period` (here or in another replica)."""
    found = session.exec(select(JobRun.id).where(JobRun.job == job, JobRun.period == period))
    return found.first() is not None


def latest_period(session: Session, job: str) -> str | None:
    """The latest period `job` has claimed (periods are ISO 8601 in UTC: they sort as text)."""
    return session.exec(select(func.max(JobRun.period)).where(JobRun.job == job)).one()


def claim_period(session: Session, job: str, period: str, now: datetime) -> JobRun | None:
    """The row for `job` in `period`, or None when another fire (here or in another replica)
    has claimed that period already."""
    if ran(session, job, period):
        return None
    row = JobRun(job=job, period=period, started_at=now)
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        return None
    return row


def last_runs(session: Session) -> dict[str, datetime]:
    """When each job last ran."""
    rows = session.exec(
        select(JobRun.job, func.max(JobRun.started_at)).group_by(col(JobRun.job))
    ).all()
    return {job: at for job, at in rows}
