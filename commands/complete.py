"""Suggestions while someone types an argument (Discord's autocomplete): the workflows they
may launch, and the runs that are still open. Read-only, and quick: at most 25 choices."""

from __future__ import annotations

from sqlmodel import col, select

from commands.context import Context
from storage.models import Run, RunStatus

LIMIT = 25  # Discord shows at most 25 choices


def suggestions(ctx: Context, arg: str, typed: str) -> list[tuple[str, str]]:
    """(label, value) pairs for argument `arg` given what has been typed so far."""
    typed = typed.strip().lower()
    if arg == "workflow":
        permissions = ctx.crew.permissions
        names = [
            name
            for name in sorted(ctx.crew.config.workflows)
            if permissions.may_launch(name, ctx.who, ctx.roles)
        ]
        found = [n for n in names if n.startswith(typed)] or [n for n in names if typed in n]
        return [(n, n) for n in found[:LIMIT]]
    if arg == "run":
        number = typed.lstrip("#")
        runs = ctx.session.exec(
            select(Run)
            .where(col(Run.status).in_([RunStatus.RUNNING, RunStatus.AWAITING_APPROVAL]))
            .order_by(col(Run.id).desc())
            .limit(200)
        ).all()
        return [
            (
                f"{run.id} · {run.workflow} · {run.status.replace('_', ' ')} · {run.text}",
                str(run.id),
            )
            for run in runs
            if str(run.id).startswith(number)
        ][:LIMIT]
    return []
