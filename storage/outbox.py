"""Writing to the outbox: called inside the transaction of the state change that causes it.

Messages and outbox rows are written once and never changed through an object, so they go in
as Core statements (storage.rows): this is the engine's hot path.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from typing import Any, NamedTuple
from weakref import WeakKeyDictionary

from sqlalchemy import Engine, bindparam, select
from sqlmodel import Session

from storage import rows
from storage.models import Message, MessageKind, Outbox, OutboxKind, OutboxStatus, utcnow
from storage.unit_of_work import Topic, after_commit, arm


class Posted(NamedTuple):
    """A message as edits and replies need it (the row, read once; it does not change)."""

    id: int
    key: str
    kind: str
    platform: str
    channel: str
    run_id: int | None
    step_id: int | None
    version: int | None
    thread_of: int | None
    alert_id: int | None


_MESSAGE = rows.table(Message)
_FIND = select(*(_MESSAGE.c[name] for name in Posted._fields)).where(
    _MESSAGE.c.key == bindparam("key")
)


def find(session: Session, key: str) -> Posted | None:
    """The message posted under `key`, if any. A message row never changes once committed,
    so what a committed transaction found or posted is remembered (per database) and not
    read again; within a transaction, from the first time it is seen."""
    mine: dict[str, Posted] = session.info.setdefault(_SEEN, {})
    posted = mine.get(key)
    if posted is not None:
        return posted
    conn = rows.connection(session)
    known = _KNOWN.get(conn.engine)
    posted = known.get(key) if known is not None else None
    if posted is not None:
        mine[key] = posted
        return posted
    row = conn.execute(_FIND, {"key": key}).first()
    if row is None:
        return None
    posted = Posted(*row)
    _remember(session, posted)
    return posted


_SEEN = "crewchief.messages"  # session.info: the messages this transaction has seen


class _Known:
    """The latest messages committed transactions saw, up to `size` (the database threads
    share it)."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self.rows: OrderedDict[str, Posted] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: str) -> Posted | None:
        with self.lock:
            posted = self.rows.get(key)
            if posted is not None:
                self.rows.move_to_end(key)
            return posted

    def add(self, posted: Posted) -> None:
        with self.lock:
            self.rows[posted.key] = posted
            self.rows.move_to_end(posted.key)
            if len(self.rows) > self.size:
                self.rows.popitem(last=False)


_KNOWN: WeakKeyDictionary[Engine, _Known] = WeakKeyDictionary()


def _remember(session: Session, posted: Posted) -> None:
    """For the rest of the transaction, and past it once (and only if) it commits: a row it
    inserted may yet be rolled back."""
    session.info.setdefault(_SEEN, {})[posted.key] = posted
    known = _KNOWN.setdefault(rows.connection(session).engine, _Known())
    after_commit(session, lambda: known.add(posted))


def post(
    session: Session,
    *,
    key: str,
    kind: MessageKind,
    platform: str,
    channel: str,
    template: str,
    context: dict[str, Any],
    run_id: int | None = None,
    step_id: int | None = None,
    version: int | None = None,
    thread_of: int | None = None,
    alert_id: int | None = None,
    order_key: str | None = None,
) -> Posted:
    """A new message, once per key: posting the same key again returns the first one.
    Rows sharing `order_key` (default: the run's) are delivered in order."""
    fields: dict[str, Any] = {
        "key": key,
        "kind": kind,
        "platform": platform,
        "channel": channel,
        "run_id": run_id,
        "step_id": step_id,
        "version": version,
        "thread_of": thread_of,
        "alert_id": alert_id,
    }
    new_id = rows.add_once(session, Message, **fields)
    if new_id is None:
        existing = find(session, key)
        assert existing is not None
        return existing
    message = Posted(id=new_id, **fields)
    _remember(session, message)
    _queue(
        session,
        key=f"post:{key}",
        kind=OutboxKind.POST,
        platform=platform,
        channel=channel,
        order_key=order_key or _order_key(run_id),
        rank=run_id or 0,
        message_id=message.id,
        thread_of=thread_of,
        template=template,
        context=context,
    )
    return message


def update(
    session: Session,
    message: Message | Posted,
    *,
    template: str,
    context: dict[str, Any],
    order_key: str | None = None,
) -> None:
    """Edit a posted message, once its post has gone out; a message's edits go out in order,
    apart from the posts of its thread (`order_key`, default: the message's own). An older
    edit still waiting when this one is queued is superseded when it is claimed
    (storage.queries.claim_outbox): only the latest goes out."""
    _queue(
        session,
        key=f"update:{message.key}:{uuid.uuid4().hex}",
        kind=OutboxKind.UPDATE,
        platform=message.platform,
        channel=message.channel,
        order_key=order_key or f"edit:{message.id}",
        rank=message.run_id or 0,
        message_id=message.id,
        thread_of=message.thread_of,  # where the message lives, for platforms that need it
        template=template,
        context=context,
    )


def notice(
    session: Session,
    *,
    platform: str,
    channel: str,
    recipient: str,
    template: str,
    context: dict[str, Any],
    key: str | None = None,
    thread_of: int | None = None,
) -> None:
    """A private answer to one person (ephemeral in Slack, a DM in Discord), shown in the
    thread of message `thread_of` where the platform can."""
    key = key or f"notice:{uuid.uuid4().hex}"
    _queue(
        session,
        key=key,
        kind=OutboxKind.NOTICE,
        platform=platform,
        channel=channel,
        order_key=key,
        recipient=recipient,
        thread_of=thread_of,
        template=template,
        context=context,
    )


def _queue(session: Session, **row: Any) -> None:
    """One outbox row, once per idempotency key (a key queued already is left as it is)."""
    queued = rows.add_once(
        session, Outbox, status=OutboxStatus.PENDING, attempts=0, created_at=utcnow(), **row
    )
    if queued is not None:
        arm(session, Topic.OUTBOX)


def _order_key(run_id: int | None) -> str:
    return f"run:{run_id}" if run_id is not None else f"solo:{uuid.uuid4().hex}"
