"""The tables: every run, step, draft, vote, inbound event, outgoing message and LLM call is a row.

Status columns hold plain strings (the StrEnum values below) so that a migration never has to
alter a database enum type, and so `crewchief runs --json` prints exactly what is stored.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, overload

from sqlalchemy import JSON, Column, Index, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


@overload
def as_utc(at: datetime) -> datetime: ...
@overload
def as_utc(at: None) -> None: ...
def as_utc(at: datetime | None) -> datetime | None:
    """A time read back from the database, in UTC: SQLite returns it without a zone."""
    return at if at is None or at.tzinfo else at.replace(tzinfo=UTC)


_PARTIAL: list[tuple[Index, str]] = []


def _partial(name: str, *columns: str, where: str) -> Index:
    """A partial index (only the rows in play). Its condition for PostgreSQL is attached by
    `with_postgresql_conditions` when a PostgreSQL database is opened, so that a process on
    SQLite never loads SQLAlchemy's PostgreSQL dialect (2.4 MB, 30 ms of every start)."""
    index = Index(name, *columns, sqlite_where=text(where))
    _PARTIAL.append((index, where))
    return index


def with_postgresql_conditions() -> None:
    for index, where in _PARTIAL:
        index.dialect_kwargs["postgresql_where"] = text(where)


class RunStatus(StrEnum):
    RUNNING = "running"
    AWAITING_APPROVAL = "awaiting_approval"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self not in (RunStatus.RUNNING, RunStatus.AWAITING_APPROVAL)


class StepStatus(StrEnum):
    WAITING = "waiting"  # an earlier step has not finished yet
    PENDING = "pending"  # runnable: a worker may claim it
    RUNNING = "running"  # claimed under a lease
    AWAITING_APPROVAL = "awaiting_approval"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


ACTIVE_STEPS = frozenset(
    {StepStatus.WAITING, StepStatus.PENDING, StepStatus.RUNNING, StepStatus.AWAITING_APPROVAL}
)  # not finished: a cancelled or abandoned run cancels exactly these
WORKING_STEPS = frozenset({StepStatus.PENDING, StepStatus.RUNNING})  # work for the workers


class MessageKind(StrEnum):
    """What a bot message is; a thread post's kind is also the template that renders it."""

    RUN_CARD = "run_card"
    NOTES = "notes"
    DRAFT = "draft"
    DECISION = "decision"
    REMINDER = "reminder"
    PUBLISHED = "published"
    FAILURE = "failure"
    DIGEST = "digest"
    ALERT = "alert"  # an alert's card in an ops channel, edited as the alert changes
    ALERT_UPDATE = "alert_update"  # a change of an alert, in its card's thread


class Decision(StrEnum):
    """What became of a draft (the values are what cards and the audit log show)."""

    APPROVED = "approved"
    REJECTED = "rejected"
    SENT_BACK = "sent back"
    CANCELLED = "cancelled"

    @property
    def action(self) -> str:
        return "draft." + self.value.replace(" ", "_")


class Vote(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"
    REVISE = "revise"
    CANCEL = "cancel"


class OutboxKind(StrEnum):
    POST = "post"  # a new message (Message row), possibly in a thread
    UPDATE = "update"  # edit a message already posted
    NOTICE = "notice"  # a private answer to one person (ephemeral / DM / shell aside)


class OutboxStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    SUPERSEDED = "superseded"  # an edit replaced by a newer edit of the same message
    FAILED = "failed"  # gave up after the retry budget; kept for the audit trail


class Run(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    workflow: str = Field(index=True)
    text: str = Field(sa_column=Column(Text, nullable=False))
    requester: str  # platform-qualified user id, e.g. "shell:bob"
    platform: str
    channel: str
    status: str = Field(default=RunStatus.RUNNING, index=True)
    current_step: int = 0
    error: str | None = Field(default=None, sa_column=Column(Text))
    decided_by: str | None = None
    cost_usd: float = 0.0
    tokens: int = 0
    created_at: datetime = Field(default_factory=utcnow, index=True)
    updated_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None


class Step(SQLModel, table=True):
    __table_args__ = (
        UniqueConstraint("run_id", "position"),
        # The claim's two halves: runnable steps, and leases that may have run out. Partial,
        # so they hold only the few rows in play however long the history grows.
        _partial("ix_step_pending", "run_id", "id", where="status = 'pending'"),
        _partial("ix_step_leased", "lease_until", "id", where="status = 'running'"),
        # Drafts waiting for people, for the approval-timeout check (every second).
        _partial("ix_step_awaiting", "deadline_at", where="status = 'awaiting_approval'"),
    )

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="run.id", index=True)
    position: int
    name: str
    agent: str
    status: str = Field(default=StepStatus.WAITING)
    attempts: int = 0
    version: int = 0  # draft version produced last (0 before the first draft)
    available_at: datetime = Field(default_factory=utcnow)
    lease_owner: str | None = None
    lease_until: datetime | None = None
    awaiting_since: datetime | None = None
    deadline_at: datetime | None = None  # approval timeout
    escalated: bool = False
    output: str | None = Field(default=None, sa_column=Column(Text))
    error: str | None = Field(default=None, sa_column=Column(Text))
    feedback: str | None = Field(default=None, sa_column=Column(Text))
    decided_by: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class DraftVersion(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("step_id", "version"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="run.id", index=True)
    step_id: int = Field(foreign_key="step.id")
    version: int
    content: str = Field(sa_column=Column(Text, nullable=False))
    feedback: str | None = Field(default=None, sa_column=Column(Text))
    prompt_version: str | None = None  # agents.prompts.prompt_version of the writer
    created_at: datetime = Field(default_factory=utcnow)


class ApprovalVote(SQLModel, table=True):
    """One person's standing vote on one draft version; quorum counts unique approvers."""

    __table_args__ = (UniqueConstraint("step_id", "version", "approver", "vote"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="run.id", index=True)
    step_id: int = Field(foreign_key="step.id")
    version: int
    approver: str
    vote: str
    created_at: datetime = Field(default_factory=utcnow)


class InboundEvent(SQLModel, table=True):
    """Ids of platform events already handled: a retried delivery finds its id here."""

    key: str = Field(primary_key=True)
    received_at: datetime = Field(default_factory=utcnow)


class AlertState(StrEnum):
    PENDING = "pending"  # the condition holds, not yet for `for`
    FIRING = "firing"
    RESOLVED = "resolved"


class Alert(SQLModel, table=True):
    """One alert: a rule's condition for one set of labels, from pending to resolved."""

    __table_args__ = (Index("ix_alert_key_state", "key", "state"),)

    id: int | None = Field(default=None, primary_key=True)
    key: str  # rule + labels, e.g. "failure-rate{workflow=blog-post}"
    rule: str
    labels: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    summary: str = Field(sa_column=Column(Text, nullable=False))
    state: str = Field(default=AlertState.PENDING, index=True)
    started_at: datetime  # the condition first held
    last_true_at: datetime  # the last evaluation it held
    fired_at: datetime | None = None
    resolved_at: datetime | None = None
    notified_at: datetime | None = None  # the last post about it (repeats wait for this)
    escalated_at: datetime | None = None
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None
    silenced_by: str | None = None
    silenced_until: datetime | None = None
    silence_reason: str | None = Field(default=None, sa_column=Column(Text))
    # The alert whose cards (Message.alert_id) show this one: itself when it was posted
    # alone, the first of them when several fired in one evaluation and share one card.
    group_id: int | None = Field(default=None, foreign_key="alert.id", index=True)
    note: str | None = Field(default=None, sa_column=Column(Text))  # the acknowledger's
    noted_at: datetime | None = None  # first reply in the card's thread after their 👀


class Message(SQLModel, table=True):
    """A message the bot posts, by its own idempotency key; `id` is the short ref (#4)."""

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(unique=True)
    kind: str  # run_card, notes, draft, published, failure, reminder, ...
    platform: str
    channel: str
    run_id: int | None = Field(default=None, foreign_key="run.id", index=True)
    step_id: int | None = None
    version: int | None = None
    thread_of: int | None = None  # Message.id of the thread's parent (the run card)
    platform_id: str | None = Field(default=None, index=True)  # Slack ts, Discord id, ...
    alert_id: int | None = Field(default=None, foreign_key="alert.id", index=True)
    created_at: datetime = Field(default_factory=utcnow)


class Outbox(SQLModel, table=True):
    __table_args__ = (
        # What is left to deliver, in order, and each thread's earlier rows still pending.
        _partial("ix_outbox_pending", "rank", "id", where="status = 'pending'"),
        _partial("ix_outbox_pending_order", "order_key", "id", where="status = 'pending'"),
        # A message's rows still waiting: what an edit waits for (its post, earlier edits),
        # and the newer edits that supersede one
        _partial("ix_outbox_pending_message", "message_id", "id", where="status = 'pending'"),
    )

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(unique=True)  # idempotency key, e.g. "post:run:3:draft:v2"
    kind: str
    platform: str
    channel: str
    order_key: str  # rows sharing it are delivered strictly in id order (a thread, a message)
    # Which rows go first when many are ready: the run's id (older runs first), 0 for what
    # belongs to no run (alerts, digests, private answers), which goes before them all.
    rank: int = 0
    message_id: int | None = Field(default=None, foreign_key="message.id", index=True)
    thread_of: int | None = None  # Message.id of the thread it shows in (a run's card)
    recipient: str | None = None  # NOTICE: platform-qualified user id
    template: str
    context: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: str = Field(default=OutboxStatus.PENDING)
    attempts: int = 0
    available_at: datetime | None = None  # None: now; set when a retry must wait
    lease_owner: str | None = None
    lease_until: datetime | None = None
    error: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(default_factory=utcnow)
    sent_at: datetime | None = None


class ThreadReply(SQLModel, table=True):
    """A person's reply in a run's thread; the latest one is the feedback of a 🔁."""

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="run.id", index=True)
    author: str
    text: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class LLMCall(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    run_id: int | None = Field(default=None, foreign_key="run.id", index=True)
    step_id: int | None = None
    agent: str
    provider: str
    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: int = 0
    error: str | None = Field(default=None, sa_column=Column(Text))
    prompt_version: str | None = None  # agents.prompts.prompt_version of the calling agent
    created_at: datetime = Field(default_factory=utcnow, index=True)


class AuditEntry(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, index=True)
    actor: str
    action: str  # e.g. "vote.refused", "run.started", "command.refused"
    run_id: int | None = None
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class JobRun(SQLModel, table=True):
    """One scheduled job's run for one period: inserted first, so a second fire of the same
    period finds it and does nothing, and a period without a row is a missed run."""

    __table_args__ = (
        UniqueConstraint("job", "period"),
        Index("ix_jobrun_job_started", "job", "started_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    job: str  # "digest", ...
    period: str  # the scheduled time it stands for, ISO 8601 in UTC
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
    error: str | None = Field(default=None, sa_column=Column(Text))
