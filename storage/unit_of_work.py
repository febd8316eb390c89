"""The unit of work: one transaction, one commit, then the wake-ups its writes call for.

Whatever a transaction writes decides who must look again once it has committed: a new or
changed outbox row wakes the outbox senders, a step made runnable wakes the workers. Nobody
arms a wake-up by hand, so no code path can forget to (Cosmic Python's unit of work collecting
events after each handler).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import chain
from typing import Any

from sqlalchemy import event
from sqlmodel import Session

from storage.models import Outbox, Step, StepStatus

Hooks = dict["Topic", list[Callable[[], None]]]

log = logging.getLogger(__name__)

_PENDING = "crewchief.pending"  # the transaction's own wake-ups and after-commit calls
_HOOKS = "crewchief.hooks"
_DEFERRED = "crewchief.deferred"  # a group commit's: wake-ups and calls wait for its commit


class Topic(StrEnum):
    STEPS = "steps"  # a step became runnable (or was handed back)
    OUTBOX = "outbox"  # something to deliver


@dataclass
class Deferred:
    """What waits for a commit: the topics armed (wake-ups) and the after-commit calls, of one
    transaction or of all those of a group commit."""

    armed: set[Topic] = field(default_factory=set)
    calls: list[Callable[[], None]] = field(default_factory=list)

    def take(self, other: Deferred) -> None:
        """Leave `other`'s wake-ups and calls for this one's commit."""
        self.armed |= other.armed
        self.calls += other.calls

    def fire(self, hooks: Hooks) -> None:
        for call in self.calls:
            _safely(call)
        for topic in self.armed:
            for hook in hooks.get(topic, ()):
                _safely(hook)


class UnitOfWork(Session):
    """A session that runs its hooks for the topics its writes armed, after commit only."""

    def __init__(
        self, *args: Any, hooks: Hooks, deferred: Deferred | None = None, **kwargs: Any
    ) -> None:
        """With `deferred`, the session commits into an outer transaction (a group commit):
        what its writes arm, and its `after_commit` calls, are left there instead, to run
        once the outer transaction has committed."""
        super().__init__(*args, **kwargs)
        self.info[_HOOKS] = hooks
        if deferred is not None:
            self.info[_DEFERRED] = deferred


def arm(session: Session, topic: Topic) -> None:
    """For writes the ORM does not see (Core UPDATE statements in storage/)."""
    _pending(session).armed.add(topic)


def after_commit(session: Session, call: Callable[[], None]) -> None:
    """Call `call` once the session's transaction has committed (never if it rolls back):
    for what may only be known of committed rows, such as a cache of them."""
    _pending(session).calls.append(call)


def _pending(session: Session) -> Deferred:
    pending: Deferred = session.info.setdefault(_PENDING, Deferred())
    return pending


def collect(session: Session, obj: object) -> None:
    """Arm what a write of `obj` calls for: an outbox row to deliver, a step made runnable."""
    collect_row(session, type(obj), getattr(obj, "status", None))


def collect_row(session: Session, model: type, status: object) -> None:
    """Arm what writing a row of `model` with `status` calls for (a Core INSERT or UPDATE)."""
    if model is Outbox:
        arm(session, Topic.OUTBOX)
    elif model is Step and status == StepStatus.PENDING:
        arm(session, Topic.STEPS)


@event.listens_for(UnitOfWork, "after_flush")
def _collect(session: Session, _context: Any) -> None:
    for obj in chain(session.new, session.dirty):
        collect(session, obj)


def _safely(call: Callable[[], None]) -> None:
    """After a commit: what fails here must not read as a failed commit (say, a wake-up of
    an event loop that is closing)."""
    try:
        call()
    except Exception:
        log.exception("after a commit: %r failed", call)


@event.listens_for(UnitOfWork, "after_commit")
def committed(session: Session) -> None:
    """What follows a commit of the session: its wake-ups and after-commit calls run, or wait
    for the group's commit. Called by hand for a session that joins a group's transaction
    without a commit of its own (storage.db)."""
    pending: Deferred = session.info.pop(_PENDING, Deferred())
    deferred: Deferred | None = session.info.get(_DEFERRED)
    if deferred is not None:
        deferred.take(pending)
    else:
        pending.fire(session.info.get(_HOOKS, {}))


@event.listens_for(UnitOfWork, "after_rollback")
def _disarm(session: Session) -> None:
    session.info.pop(_PENDING, None)
