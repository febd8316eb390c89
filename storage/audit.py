"""The audit log: who did (or was refused) what, written in the transaction of the decision."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from storage import rows
from storage.models import AuditEntry, utcnow


def audit(session: Session, actor: str, action: str, run_id: int | None, **detail: Any) -> None:
    """One entry (a Core INSERT: the run it names must be flushed already)."""
    rows.add(
        session, AuditEntry, actor=actor, action=action, run_id=run_id, detail=detail, at=utcnow()
    )
