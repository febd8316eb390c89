"""The queries the rest of crewchief needs: claiming work under a lease, and a few figures."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from functools import cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Exists,
    Select,
    Table,
    and_,
    bindparam,
    func,
    literal_column,
    or_,
    union_all,
    update,
)
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from storage.models import (
    WORKING_STEPS,
    ApprovalVote,
    LLMCall,
    Message,
    Outbox,
    OutboxKind,
    OutboxStatus,
    Run,
    Step,
    StepStatus,
    Vote,
)
from storage.rows import change, change_by_id, connection, execute, load, load_joined, send, table
from storage.unit_of_work import Topic, arm


@dataclass(frozen=True, slots=True)
class Leased:
    """An outbox row claimed for delivery (`attempts` counts this one)."""

    id: int
    key: str
    kind: OutboxKind
    platform: str
    channel: str
    message_id: int | None
    thread_of: int | None
    recipient: str | None
    template: str
    context: dict[str, Any]
    attempts: int
    platform_id: str | None  # of the message it edits, once posted
    thread_platform_id: str | None  # of its thread's first post, once posted


@dataclass(frozen=True, slots=True)
class Sent:
    """A delivery done: its outbox row and, for a post, its message and the platform's id."""

    row_id: int
    message_id: int | None = None
    posted_as: str | None = None


def _is(column: Any, status: StrEnum) -> ColumnElement[bool]:
    """`column = 'status'` with the status written out, not bound: only then may the database
    use a partial index whose condition names it (SQLite cannot see into a parameter)."""
    result: ColumnElement[bool] = column == literal_column(f"'{status.value}'")
    return result


@cache
def _claim_step_query(skip_locked: bool) -> Select[Any]:
    """claim_step's SELECT, built once: parameter `now`."""
    t = table(Step)
    now = bindparam("now", type_=t.c.available_at.type)
    runnable = and_(_is(t.c.status, StepStatus.PENDING), t.c.available_at <= now)
    lease_ran_out = and_(_is(t.c.status, StepStatus.RUNNING), t.c.lease_until < now)
    # The first of each kind, each read in order from its own partial index (a lease that
    # ran out first is taken over first), then the one of the older run: one condition with
    # OR would read and sort every runnable step on every claim (2.7 ms a claim with 1,000
    # waiting on PostgreSQL, against 0.2 ms).
    first, r = [], _RUN
    for condition, order in (
        (runnable, (t.c.run_id, t.c.id)),
        (lease_ran_out, (t.c.lease_until, t.c.id)),
    ):
        candidate = sa_select(t.c.id, t.c.run_id).where(condition).order_by(*order).limit(1)
        if skip_locked:
            # Lock the step and its run together, skipping any whose run is busy with a
            # decision: the next runnable step of another run is taken instead of waiting.
            # The candidate of the other kind, if any, stays locked until the transaction
            # commits (a group's, perhaps): a claim elsewhere skips it meanwhile, and a
            # decision on its run waits. Only a lease that ran out makes two candidates.
            candidate = candidate.join(r, r.c.id == t.c.run_id).with_for_update(
                skip_locked=True, of=[t, r], key_share=True
            )
        first.append(candidate.subquery())
    both = union_all(*(sa_select(*sub.c) for sub in first)).subquery()
    return sa_select(both.c.id, both.c.run_id).order_by(both.c.run_id, both.c.id).limit(1)


def claim_step(
    session: Session, *, owner: str, now: datetime, lease: timedelta, skip_locked: bool
) -> Step | None:
    """Take the runnable step of the oldest run (or one whose worker's lease ran out) for
    `owner`.
    With skip_locked (PostgreSQL) its run is row-locked too, in the same statement."""
    found = execute(session, _claim_step_query(skip_locked), [{"now": now}], fetch=True).rows
    if not found:
        return None
    lock_run(session, found[0].run_id)  # and its steps, in one statement
    step = lock_step(session, found[0].run_id, found[0].id)
    assert step is not None  # the claim found it a moment ago, in this transaction
    lease_step(session, step, owner=owner, now=now, lease=lease)
    return step


def lease_step(
    session: Session, step: Step, *, owner: str, now: datetime, lease: timedelta
) -> None:
    """`step` (locked) runs now, for `owner`, until `lease` has passed unrenewed."""
    # A step taken from a worker that died re-runs the attempt the crash cut short: a bot
    # killed three times mid-call must not fail a run that never failed. Only a fresh claim
    # of a pending step (after a recorded failure, or the first) counts as a new attempt.
    change(
        session,
        step,
        attempts=step.attempts if step.status == StepStatus.RUNNING else step.attempts + 1,
        status=StepStatus.RUNNING,
        lease_owner=owner,
        lease_until=now + lease,
        started_at=step.started_at or now,
    )


_STEPS = "crewchief.steps"  # session.info keys: the steps this transaction has read (locked)
_LOCKED = "crewchief.steps.locked"


def steps_of(session: Session, run_id: int, *, lock: bool = False) -> list[Step]:
    """The run's steps in order; with `lock`, row-locked (PostgreSQL) for the rest of the
    transaction, after the caller has locked the run. A run's steps are all made when it
    starts, so once read they are remembered for the rest of the transaction (the objects
    themselves stay current)."""
    known: dict[int, list[Step]] = session.info.setdefault(_STEPS, {})
    locked: set[int] = session.info.setdefault(_LOCKED, set())
    if run_id not in known or (lock and run_id not in locked):
        _remember_steps(
            session, run_id, load(session, Step, _STEPS_OF[lock], {"run_id": run_id}), locked=lock
        )
    return list(known[run_id])


def _remember_steps(session: Session, run_id: int, steps: list[Step], *, locked: bool) -> None:
    """The run's steps, as read (and locked) in this transaction, for steps_of."""
    session.info.setdefault(_STEPS, {})[run_id] = steps
    if locked:
        session.info.setdefault(_LOCKED, set()).add(run_id)


_STEP = table(Step)
_STEPS_OF = {
    False: sa_select(_STEP).where(_STEP.c.run_id == bindparam("run_id")).order_by(_STEP.c.position)
}
_STEPS_OF[True] = _STEPS_OF[False].with_for_update(key_share=True)


def lock_step(session: Session, run_id: int, step_id: int) -> Step | None:
    """Step `step_id` of run `run_id` (which the caller has locked), row-locked."""
    return next((s for s in steps_of(session, run_id, lock=True) if s.id == step_id), None)


def _earlier_pending(t: Table, column: str) -> Exists:
    """Whether a row of outbox `t` sharing this row's `column` and queued before it is still
    pending."""
    earlier = t.alias(f"earlier_by_{column}")
    return (
        sa_select(earlier.c.id)
        .where(
            earlier.c[column] == t.c[column],
            earlier.c.id < t.c.id,
            _is(earlier.c.status, OutboxStatus.PENDING),
        )
        .exists()
    )


@cache
def _claim_outbox_query(skip_locked: bool, platforms: int | None) -> Select[Any]:
    """claim_outbox's SELECT, built once: parameters `now`, `limit` and, with `platforms`,
    `platform_0` .. one per platform served. Each row comes with the platform's ids of the
    message it edits and of its thread's first post, when those are posted."""
    t, m = table(Outbox), table(Message)
    now = bindparam("now", type_=t.c.created_at.type)
    # A row waits for the earlier rows of its order key still pending, and an edit for its
    # message's post and earlier edits (edits have an order key of their own; only an edit
    # is looked up by its message, the other rows have none before them).
    blocked = or_(
        _earlier_pending(t, "order_key"),
        and_(_is(t.c.kind, OutboxKind.UPDATE), _earlier_pending(t, "message_id")),
    )
    ready = and_(
        _is(t.c.status, OutboxStatus.PENDING),
        or_(t.c.available_at.is_(None), t.c.available_at <= now),
        or_(t.c.lease_until.is_(None), t.c.lease_until < now),
        ~blocked,
    )
    if platforms is not None:
        served = [bindparam(f"platform_{i}", type_=t.c.platform.type) for i in range(platforms)]
        ready = and_(ready, t.c.platform.in_(served))
    later = t.alias("later")
    newer_edit = (
        sa_select(later.c.id)
        .where(
            later.c.message_id == t.c.message_id,
            _is(later.c.kind, OutboxKind.UPDATE),
            later.c.id > t.c.id,
            _is(later.c.status, OutboxStatus.PENDING),
        )
        .exists()
    )
    superseded = and_(_is(t.c.kind, OutboxKind.UPDATE), newer_edit).label("superseded")
    posted_as = [
        sa_select(m.c.platform_id).where(m.c.id == of).scalar_subquery().label(label)
        for of, label in ((t.c.message_id, "platform_id"), (t.c.thread_of, "thread_platform_id"))
    ]
    limit = bindparam("limit", type_=t.c.attempts.type)
    query = (
        sa_select(t, superseded, *posted_as).where(ready).order_by(t.c.rank, t.c.id).limit(limit)
    )
    if skip_locked:
        query = query.with_for_update(skip_locked=True, of=t, key_share=True)
    return query


def _in_index_order(session: Session, query: Select[Any], params: dict[str, Any]) -> list[Any]:
    """`query`'s rows, read on PostgreSQL in the order of the index its ORDER BY follows rather
    than sorted. The planner chooses to sort when its statistics say few rows wait: on a table
    autovacuum has not analyzed yet, or since a backlog built up. Then each claim read and
    sorted every waiting row (9 ms a claim at 6,000 waiting, 6 s of a 25 s benchmark); walking
    the index stops once it has `limit` deliverable rows. The setting is undone after the
    statement: the transaction may be a group's, whose other jobs plan as usual (a statement
    that fails aborts the transaction, or the savepoint that undoes the setting with it)."""
    conn = connection(session)
    if conn.dialect.name != "postgresql":
        return execute(session, query, [params], fetch=True).rows
    send(conn, "SET LOCAL enable_sort = off")
    found = execute(session, query, [params], fetch=True).rows
    send(conn, "SET LOCAL enable_sort TO DEFAULT")
    return found


def claim_outbox(
    session: Session,
    *,
    owner: str,
    now: datetime,
    lease: timedelta,
    skip_locked: bool,
    platforms: Sequence[str] | None = None,
    limit: int = 1,
) -> list[Leased]:
    """Up to `limit` deliverable rows, oldest run first (what belongs to no run before them
    all), among the platforms this process serves, leased to `owner`. A row is deliverable
    when its earlier siblings (same order_key) are all done, and an edit when its message's
    post is, so a batch holds at most one row per thread or message. An edit with a newer
    edit of the same message waiting behind it is superseded instead: only the latest goes
    out (each platform call counts against a rate limit)."""
    query = _claim_outbox_query(skip_locked, None if platforms is None else len(platforms))
    params: dict[str, Any] = {"now": now, "limit": limit}
    params.update({f"platform_{i}": name for i, name in enumerate(platforms or ())})
    found = _in_index_order(session, query, params)
    stale = [
        {"row_id": row.id, "status": OutboxStatus.SUPERSEDED} for row in found if row.superseded
    ]
    if stale:
        change_by_id(session, Outbox, stale)
        arm(session, Topic.OUTBOX)  # the newer edits behind them are deliverable now
    leased = [row for row in found if not row.superseded]
    until = now + lease
    # attempts counted from the row as read: it is locked (SQLite's write lock, a row lock)
    leases = [
        {"row_id": row.id, "lease_owner": owner, "lease_until": until, "attempts": row.attempts + 1}
        for row in leased
    ]
    change_by_id(session, Outbox, leases)
    return [
        Leased(
            id=row.id,
            key=row.key,
            kind=OutboxKind(row.kind),
            platform=row.platform,
            channel=row.channel,
            message_id=row.message_id,
            thread_of=row.thread_of,
            recipient=row.recipient,
            template=row.template,
            context=row.context,
            attempts=row.attempts + 1,
            platform_id=row.platform_id,
            thread_platform_id=row.thread_platform_id,
        )
        for row in leased
    ]


def mark_sent(session: Session, sent: Collection[Sent], now: datetime) -> None:
    """Deliveries done: the rows are sent, and each post's message learns its platform id.
    Their threads' next rows become deliverable."""
    if not sent:
        return
    done = {"status": OutboxStatus.SENT, "sent_at": now, "lease_owner": None, "error": None}
    change_by_id(session, Outbox, [{"row_id": s.row_id, **done} for s in sent])
    posted = [
        {"row_id": s.message_id, "platform_id": s.posted_as}
        for s in sent
        if s.message_id is not None and s.posted_as
    ]
    change_by_id(session, Message, posted)
    arm(session, Topic.OUTBOX)


def give_up(session: Session, row_id: int, error: str) -> None:
    """A row that can never be delivered: failed for good, with why."""
    failed = {"row_id": row_id, "status": OutboxStatus.FAILED, "error": error, "lease_owner": None}
    change_by_id(session, Outbox, [failed])
    arm(session, Topic.OUTBOX)


def release_step(session: Session, step_id: int, owner: str) -> None:
    """Hand a step in flight back (a graceful stop): another worker may take it at once, and
    the attempt does not count."""
    session.execute(
        update(Step)
        .where(
            col(Step.id) == step_id,
            col(Step.status) == StepStatus.RUNNING,
            col(Step.lease_owner) == owner,
        )
        .values(
            status=StepStatus.PENDING,
            lease_owner=None,
            lease_until=None,
            attempts=Step.attempts - 1,
        )
    )
    arm(session, Topic.STEPS)


def lease_holders(session: Session) -> set[str]:
    """Everyone holding a lease on a step or a delivery right now."""
    steps = session.exec(
        select(Step.lease_owner)
        .where(_is(Step.status, StepStatus.RUNNING), col(Step.lease_owner).is_not(None))
        .distinct()
    ).all()
    rows = session.exec(
        select(Outbox.lease_owner)
        .where(_is(Outbox.status, OutboxStatus.PENDING), col(Outbox.lease_owner).is_not(None))
        .distinct()
    ).all()
    return {owner for owner in [*steps, *rows] if owner}


def expire_leases(session: Session, owners: Collection[str], now: datetime) -> int:
    """End the leases of holders known to be dead: their work is claimable at once."""
    if not owners:
        return 0
    now -= timedelta(seconds=1)  # claims take leases that ended before their `now`
    steps = session.execute(
        update(Step)
        .where(_is(Step.status, StepStatus.RUNNING), col(Step.lease_owner).in_(owners))
        .values(lease_until=now)
    )
    rows = session.execute(
        update(Outbox)
        .where(_is(Outbox.status, OutboxStatus.PENDING), col(Outbox.lease_owner).in_(owners))
        .values(lease_until=now)
    )
    arm(session, Topic.STEPS)
    arm(session, Topic.OUTBOX)
    return int(getattr(steps, "rowcount", 0)) + int(getattr(rows, "rowcount", 0))


_LEASED = {Step: StepStatus.RUNNING, Outbox: OutboxStatus.PENDING}  # status while leased


def renew_lease(
    session: Session, table: type[Step] | type[Outbox], row_id: int, owner: str, until: datetime
) -> bool:
    """Extend the lease on a step or a delivery; False when `owner` no longer holds it."""
    result = session.execute(
        update(table)
        .where(
            col(table.id) == row_id,
            col(table.status) == _LEASED[table],
            col(table.lease_owner) == owner,
        )
        .values(lease_until=until)
    )
    return bool(getattr(result, "rowcount", 0))


def message_posted_as(
    session: Session, platform: str, channel: str, platform_id: str
) -> Message | None:
    """The bot's message that the platform knows by `platform_id` in `channel`."""
    params = {"platform": platform, "channel": channel, "platform_id": platform_id}
    found = load(session, Message, _POSTED_AS, params)
    return found[0] if found else None


_MESSAGE = table(Message)
_POSTED_AS = (
    sa_select(_MESSAGE)
    .where(*(_MESSAGE.c[key] == bindparam(key) for key in ("platform", "channel", "platform_id")))
    .limit(1)
)


def lock_run(session: Session, run_id: int) -> Run | None:
    """The run, row-locked on PostgreSQL. Every transaction that changes a run locks it
    first (then its steps), so decisions on one run are serialized and two of them never
    deadlock (two groups of them can: storage.threads). Its steps are read and locked in the
    same statement, for steps_of and lock_step; locked once, the run is not read again in
    this transaction (the object itself stays current)."""
    runs: dict[int, Run] = session.info.setdefault(_RUNS, {})
    if run_id in runs:
        return runs[run_id]
    found, steps = load_joined(session, (Run, Step), _LOCK_RUN_AND_STEPS, {"run_id": run_id})
    if not found:  # no such run, or (never, as runs are made) one without steps
        found = load(session, Run, _LOCK_RUN, {"run_id": run_id})
    else:
        _remember_steps(session, run_id, steps, locked=True)
    if not found:
        return None
    runs[run_id] = found[0]
    return found[0]


_RUNS = "crewchief.runs.locked"  # session.info: the runs this transaction has locked
_RUN = table(Run)
# Row locks here are PostgreSQL's FOR NO KEY UPDATE (key_share): they keep out another
# transaction's lock or change of the row, but not the key-share lock with which a row that
# refers to it is inserted (an LLM call, a message, a draft version or a vote of the run or
# step): that insert would otherwise wait until whoever holds the run commits. These rows
# are never deleted, and no key of theirs is changed.
_LOCK_RUN = sa_select(_RUN).where(_RUN.c.id == bindparam("run_id")).with_for_update(key_share=True)
_LOCK_RUN_AND_STEPS = (
    sa_select(*_RUN.c, *_STEP.c)
    .join_from(_RUN, _STEP, _STEP.c.run_id == _RUN.c.id)
    .where(_RUN.c.id == bindparam("run_id"))
    .order_by(_STEP.c.position)
    .with_for_update(key_share=True)
)


def approvals_of(session: Session, step_id: int, version: int) -> int:
    """How many distinct approvers have approved this draft version."""
    params = {"step_id": step_id, "version": version}
    return int(connection(session).execute(_APPROVALS_OF, params).scalar_one())


_VOTES = table(ApprovalVote)
_APPROVALS_OF = sa_select(func.count(func.distinct(_VOTES.c.approver))).where(
    _VOTES.c.step_id == bindparam("step_id"),
    _VOTES.c.version == bindparam("version"),
    _is(_VOTES.c.vote, Vote.APPROVE),
)


def drafts_past_deadline(session: Session, now: datetime) -> list[tuple[int, int]]:
    """(step id, run id) of the drafts still waiting for people past their approval timeout,
    not escalated yet, the longest overdue first."""
    t = table(Step)
    query = (
        sa_select(t.c.id, t.c.run_id)
        .where(
            _is(t.c.status, StepStatus.AWAITING_APPROVAL),
            t.c.deadline_at <= now,
            t.c.escalated.is_(False),
        )
        .order_by(t.c.deadline_at)
    )
    return [(row.id, row.run_id) for row in connection(session).execute(query)]


def next_step_due(session: Session) -> datetime | None:
    """When the earliest delayed step becomes runnable, or a worker's lease runs out."""
    pending = session.exec(
        select(func.min(Step.available_at)).where(_is(Step.status, StepStatus.PENDING))
    ).one()
    leased = session.exec(
        select(func.min(Step.lease_until)).where(_is(Step.status, StepStatus.RUNNING))
    ).one()
    found = [t for t in (pending, leased) if t is not None]
    return min(found) if found else None


def next_delivery_due(session: Session, platforms: Collection[str]) -> datetime | None:
    """When the earliest delayed (or leased) delivery for these platforms becomes due."""
    waiting = session.exec(
        select(func.min(func.coalesce(Outbox.lease_until, Outbox.available_at))).where(
            _is(Outbox.status, OutboxStatus.PENDING), col(Outbox.platform).in_(platforms)
        )
    ).one()
    return waiting


def pending_work(session: Session, platforms: Collection[str] | None = None) -> int:
    """Runnable or running steps plus undelivered messages (for `platforms`, when given: a
    process cannot deliver another platform's messages). Waiting for people is not work."""
    steps = sum(  # one count per status: each reads its partial index alone
        session.exec(select(func.count()).select_from(Step).where(_is(Step.status, status))).one()
        for status in WORKING_STEPS
    )
    undelivered = (
        select(func.count()).select_from(Outbox).where(_is(Outbox.status, OutboxStatus.PENDING))
    )
    if platforms is not None:
        undelivered = undelivered.where(col(Outbox.platform).in_(platforms))
    return int(steps) + int(session.exec(undelivered).one())


def spend_since(session: Session, since: datetime) -> float:
    total = session.exec(
        select(func.coalesce(func.sum(LLMCall.cost_usd), 0.0)).where(
            col(LLMCall.created_at) >= since
        )
    ).one()
    return float(total)


def runs_with_steps(session: Session, limit: int = 200) -> list[tuple[Run, list[Step]]]:
    runs = session.exec(select(Run).order_by(col(Run.id).desc()).limit(limit)).all()
    if not runs:
        return []
    steps = session.exec(
        select(Step)
        .where(col(Step.run_id).in_([r.id for r in runs]))
        .order_by(col(Step.run_id), col(Step.position))
    ).all()
    by_run: dict[int, list[Step]] = {}
    for step in steps:
        by_run.setdefault(step.run_id, []).append(step)
    return [(run, by_run.get(run.id or 0, [])) for run in runs]


def health_figures(session: Session) -> dict[str, Any]:
    """Gauges for /metrics: runs by status, runnable steps, undelivered and failed messages."""
    runs = session.exec(select(Run.status, func.count()).group_by(Run.status)).all()
    outbox = session.exec(
        select(Outbox.status, func.count())
        .where(col(Outbox.status).in_([OutboxStatus.PENDING, OutboxStatus.FAILED]))
        .group_by(Outbox.status)
    ).all()
    steps = session.exec(
        select(func.count()).select_from(Step).where(_is(Step.status, StepStatus.PENDING))
    ).one()
    by_outbox = dict(outbox)
    return {
        "runs": dict(runs),
        "steps_runnable": int(steps),
        "outbox_pending": int(by_outbox.get(OutboxStatus.PENDING, 0)),
        "outbox_failed": int(by_outbox.get(OutboxStatus.FAILED, 0)),
    }


def post_in_flight(session: Session, platform: str, channel: str) -> bool:
    """Whether a message to `channel` may be on the platform already without its id recorded
    here: a post that has been tried (perhaps by a process that died) and not marked sent."""
    row = session.exec(
        select(Outbox.id).where(
            Outbox.platform == platform,
            Outbox.channel == channel,
            Outbox.kind == OutboxKind.POST,
            _is(Outbox.status, OutboxStatus.PENDING),
            Outbox.attempts > 0,
        )
    ).first()
    return row is not None


def model_usage(session: Session) -> list[tuple[str, int, int, float, int, int]]:
    """Per model, over all time: (model, input tokens, output tokens, cost, calls, errors)."""
    rows = session.execute(
        sa_select(
            col(LLMCall.model),
            func.coalesce(func.sum(LLMCall.input_tokens), 0),
            func.coalesce(func.sum(LLMCall.output_tokens), 0),
            func.coalesce(func.sum(LLMCall.cost_usd), 0.0),
            func.count(),
            func.count(col(LLMCall.error)),
        ).group_by(col(LLMCall.model))
    ).all()
    return [
        (str(m), int(tin), int(tout), float(cost), int(n), int(err))
        for m, tin, tout, cost, n, err in rows
    ]
