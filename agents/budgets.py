"""Budget caps: checked before every LLM call, from the costs recorded for earlier calls."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

from agents.config import Budgets
from storage.models import Run
from storage.queries import spend_since


class BudgetExceeded(Exception):
    """The message says which cap was reached; it is shown in the run's thread."""


def check_budget(session: Session, budgets: Budgets, run: Run, now: datetime) -> None:
    if budgets.per_run_usd is not None and run.cost_usd >= budgets.per_run_usd:
        raise BudgetExceeded(
            f"budget: this run has spent ${run.cost_usd:.4f} of its ${budgets.per_run_usd:.4f} cap"
        )
    if budgets.per_run_tokens is not None and run.tokens >= budgets.per_run_tokens:
        raise BudgetExceeded(
            f"budget: this run has used {run.tokens} of its {budgets.per_run_tokens} tokens"
        )
    if budgets.per_day_usd is not None:
        spent = spend_since(session, now.replace(hour=0, minute=0, second=0, microsecond=0))
        if spent >= budgets.per_day_usd:
            raise BudgetExceeded(
                f"budget: ${spent:.4f} spent today of the ${budgets.per_day_usd:.4f} daily cap"
            )
