"""The built-in alert rules: what each one measures, and when it holds.

Each rule turns figures from storage.alert_queries into conditions, one per set of labels
(workflow, model, platform, job); agents.alerts moves the alerts through their states.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlmodel import Session

from agents.config import CrewConfig
from agents.cron import cron_trigger, last_fire, period_of
from storage import alert_queries as q
from storage.figures import stuck_runs
from storage.jobs import ran
from storage.models import as_utc
from storage.queries import spend_since

DIGEST_JOB = "digest"
EVALUATION_JOB = "alerts"


@dataclass(frozen=True)
class Condition:
    rule: str
    summary: str
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        inner = ",".join(f"{k}={v}" for k, v in sorted(self.labels.items()))
        return f"{self.rule}{{{inner}}}"


def _span(window: timedelta) -> str:
    seconds = int(window.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def conditions(session: Session, config: CrewConfig, now: datetime) -> list[Condition]:
    """Every rule's conditions that hold at `now`."""
    rules = config.alerts.rules
    found: list[Condition] = []
    if rules.failure_rate.enabled:
        rate = rules.failure_rate
        finished = q.finished_runs(session, now - rate.window)
        for workflow, (failed, total) in sorted(finished.items()):
            if total >= rate.min_runs and failed / total >= rate.threshold:
                found.append(
                    Condition(
                        "failure-rate",
                        f"{failed} of {total} {workflow} runs failed in the last "
                        f"{_span(rate.window)} ({failed / total:.0%})",
                        {"workflow": workflow},
                    )
                )
    if rules.stuck_run.enabled:
        after = rules.stuck_run.after
        for workflow, n in sorted(stuck_runs(session, now - after).items()):
            found.append(
                Condition(
                    "stuck-run",
                    f"{n} {workflow} run{'s' if n > 1 else ''} unchanged for over {_span(after)}",
                    {"workflow": workflow},
                )
            )
    if rules.approval_sla.enabled:
        after = rules.approval_sla.after
        for workflow, n in sorted(q.drafts_waiting_since(session, now - after).items()):
            found.append(
                Condition(
                    "approval-sla",
                    f"{n} {workflow} draft{'s' if n > 1 else ''} waiting for approval "
                    f"for over {_span(after)}",
                    {"workflow": workflow},
                )
            )
    per_day = config.budgets.per_day_usd
    if rules.budget_burn.enabled and per_day:
        spent = spend_since(session, now.replace(hour=0, minute=0, second=0, microsecond=0))
        if spent >= rules.budget_burn.share * per_day:
            found.append(
                Condition(
                    "budget-burn",
                    f"${spent:.2f} spent today of the ${per_day:.2f} daily budget "
                    f"({spent / per_day:.0%})",
                )
            )
    if rules.llm_errors.enabled:
        errors = rules.llm_errors
        calls = q.llm_calls_by_model(session, now - errors.window)
        for model, (failed, total) in sorted(calls.items()):
            if total >= errors.min_calls and failed / total >= errors.threshold:
                found.append(
                    Condition(
                        "llm-errors",
                        f"{failed} of {total} calls to {model} failed in the last "
                        f"{_span(errors.window)} ({failed / total:.0%})",
                        {"model": model},
                    )
                )
    if rules.undelivered.enabled:
        after = rules.undelivered.after
        for platform, n in sorted(q.undelivered(session, now - after, now - after).items()):
            found.append(
                Condition(
                    "undelivered",
                    f"{n} message{'s' if n > 1 else ''} to {platform} not delivered "
                    f"(waiting over {_span(after)} or given up)",
                    {"platform": platform},
                )
            )
    if rules.missed_job.enabled:
        for missed in (
            missed_digest(session, config, now),
            missed_evaluations(session, config, now),
        ):
            if missed is not None:
                found.append(missed)
    return found


def missed_evaluations(session: Session, config: CrewConfig, now: datetime) -> Condition | None:
    """The evaluation before this one ran longer ago than `evaluate_every` plus the grace:
    for that long nothing watched (the bot was down, say). Said once, by the first
    evaluation after the gap; the alert resolves at the next one."""
    previous = q.last_run_before(session, EVALUATION_JOB, now)
    if previous is None:
        return None
    gap = now - as_utc(previous)
    if gap <= config.alerts.evaluate_every + config.alerts.rules.missed_job.grace:
        return None
    return Condition(
        "missed-job",
        f"alerts were not evaluated for {_span(timedelta(minutes=gap // timedelta(minutes=1)))} "
        f"(from {as_utc(previous).astimezone(UTC):%Y-%m-%d %H:%M} UTC)",
        {"job": EVALUATION_JOB},
    )


def missed_digest(session: Session, config: CrewConfig, now: datetime) -> Condition | None:
    """The digest's latest due time (past the grace) has no run, though the scheduler was
    evaluating alerts before it was due."""
    trigger = cron_trigger(config.digest.schedule, config.digest.timezone)
    due = last_fire(trigger, now - config.alerts.rules.missed_job.grace)
    alive_since = q.first_run(session, [EVALUATION_JOB])
    if due is None or alive_since is None or as_utc(alive_since) > due:
        return None
    if ran(session, DIGEST_JOB, period_of(due)):
        return None
    return Condition(
        "missed-job",
        f"the digest due at {due.astimezone(UTC):%Y-%m-%d %H:%M} UTC did not run",
        {"job": DIGEST_JOB},
    )
