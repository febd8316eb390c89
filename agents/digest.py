"""The digest: how the crew did over a window, against the window before it.

`build` reads the figures (SQL aggregates in storage.figures) into a platform-neutral,
JSON-ready context that the `digest` templates render; `post` puts it in the outbox for each
ops channel, once per period (the idempotency key names the period and the channel).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlmodel import Session

from agents.config import CrewConfig
from agents.cron import fires_between, period_of
from agents.pricing import is_priced
from storage import figures, outbox
from storage.alert_queries import alerts_between
from storage.db import Database
from storage.figures import Window
from storage.jobs import claim_period, last_runs, latest_period
from storage.models import MessageKind, RunStatus, as_utc

if TYPE_CHECKING:
    from apscheduler.triggers.cron import CronTrigger

JOB = "digest"  # its name in the job_run table
BARS = "▁▂▃▄▅▆▇█"
BUCKETS = 12
CHART_DAYS = (7, 92)  # the chart shows the window's days, at least a week, at most 92 days
OUTCOMES = [
    RunStatus.SUCCEEDED,
    RunStatus.FAILED,
    RunStatus.REJECTED,
    RunStatus.CANCELLED,
    RunStatus.RUNNING,
    RunStatus.AWAITING_APPROVAL,
]


def sparkline(values: list[float]) -> str:
    """One block character per value, scaled to the largest; all zero is a flat line."""
    top = max(values, default=0)
    if top <= 0:
        return BARS[0] * len(values)
    return "".join(BARS[min(len(BARS) - 1, int(v / top * (len(BARS) - 1) + 0.5))] for v in values)


def window_label(window: timedelta) -> str:
    seconds = int(window.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0 and (unit != "d" or seconds >= 2 * size):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _counts(statuses: dict[str, int], stuck: int = 0) -> dict[str, int]:
    out = {status.value: int(statuses.get(status, 0)) for status in OUTCOMES}
    out["started"] = sum(statuses.values())
    out["stuck"] = stuck
    return out


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 3) if whole else None


def build(session: Session, config: CrewConfig, now: datetime, window: timedelta) -> dict[str, Any]:
    """The digest's context for the window ending `now`."""
    current = Window(now - window, now)
    previous = Window(now - 2 * window, now - window)
    runs_now = figures.runs_by_workflow(session, current)
    runs_before = figures.runs_by_workflow(session, previous)
    stuck = figures.stuck_runs(session, now - config.alerts.rules.stuck_run.after)
    names = sorted(set(runs_now) | set(runs_before) | set(stuck))
    workflows = [
        {
            "name": name,
            "now": _counts(runs_now.get(name, {}), stuck.get(name, 0)),
            "before": _counts(runs_before.get(name, {})),
        }
        for name in names
    ]
    total_now = _counts(
        {s: sum(w.get(s, 0) for w in runs_now.values()) for s in OUTCOMES},
        sum(stuck.values()),
    )
    total_before = _counts({s: sum(w.get(s, 0) for w in runs_before.values()) for s in OUTCOMES})

    pending, oldest = figures.approvals_pending(session)
    decided = figures.decisions(session, current)
    decided_total = sum(decided.values())
    waits = figures.decision_times(session, current)

    models = figures.spend_by_model(session, current)
    for model in models:
        model["priced"] = is_priced(model["model"])
    spend = round(sum(m["cost_usd"] for m in models), 6)
    per_day = config.budgets.per_day_usd
    calls, failed_calls = figures.llm_calls(session, current)

    latency = figures.agent_latency(session, current)
    jobs = last_runs(session)
    runs_per_bucket = figures.runs_per_bucket(session, current, BUCKETS)
    causes = figures.errors_by_cause(session, current)
    costliest = figures.costliest_runs(session, current)
    alerts = alerts_between(session, current.since, current.until)
    prompts = compare_prompts(figures.prompt_versions(session, current))
    quiet = total_now["started"] == 0 and pending == 0 and calls == 0
    return {
        "window": window_label(window),
        "since": current.since.isoformat(timespec="minutes"),
        "until": current.until.isoformat(timespec="minutes"),
        "quiet": quiet,
        "totals": {"now": total_now, "before": total_before},
        "workflows": workflows,
        "runs_spark": sparkline([float(n) for n in runs_per_bucket]),
        "approvals": {
            "pending": pending,
            "oldest_wait_s": int((now - oldest).total_seconds()) if oldest else None,
            "decided": decided_total,
            "approved": decided.get("approved", 0),
            "sent_back": decided.get("sent back", 0),
            "rejected": decided.get("rejected", 0),
            "approve_rate": _rate(decided.get("approved", 0), decided_total),
            "revise_rate": _rate(decided.get("sent back", 0), decided_total),
            "reject_rate": _rate(decided.get("rejected", 0), decided_total),
            "median_s": round(waits["p50"]) if "p50" in waits else None,
            "p90_s": round(waits["p90"]) if "p90" in waits else None,
        },
        "spend": {
            "usd": spend,
            "budget_usd": round(per_day * window / timedelta(days=1), 2) if per_day else None,
            "tokens": sum(m["input_tokens"] + m["output_tokens"] for m in models),
            "models": models,
            "unpriced": [m["model"] for m in models if not m["priced"]],
            "spark": sparkline(figures.spend_per_bucket(session, current, BUCKETS)),
        },
        "llm": {"calls": calls, "failed": failed_calls},
        "latency": [
            {"agent": agent, "calls": f["n"], "p50_ms": int(f["p50"]), "p95_ms": int(f["p95"])}
            for agent, f in sorted(latency.items())
        ],
        "errors": [{"cause": cause[:120], "count": n} for cause, n in causes],
        "costliest": [
            {
                "run_id": r.id,
                "workflow": r.workflow,
                "cost_usd": round(r.cost_usd, 4),
                "tokens": r.tokens,
            }
            for r in costliest
        ],
        "alerts": alerts,
        "prompts": prompts,
        "jobs": [
            {"job": job, "ago_s": int((now - as_utc(at)).total_seconds())}
            for job, at in sorted(jobs.items())
        ],
        "chart": chart(session, now, window),
    }


def chart(session: Session, now: datetime, window: timedelta) -> dict[str, Any] | None:
    """Runs started and spend per UTC day, for the PNG chart the platforms attach: the days
    the window touches (at least the last 7, at most 92), today included so far. None when
    none of those days had a run or a model call's cost."""
    low, high = CHART_DAYS
    days = min(high, max(low, math.ceil(window / timedelta(days=1))))
    today = as_utc(now).astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    first = today - timedelta(days=days - 1)
    rows = figures.per_day(session, first, days)
    if not any(runs or spend for runs, spend in rows):
        return None
    return {
        "days": [(first + timedelta(days=i)).date().isoformat() for i in range(days)],
        "runs": [runs for runs, _ in rows],
        "spend_usd": [round(spend, 6) for _, spend in rows],
    }


def compare_prompts(versions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The prompt versions of agents that ran more than one in the window, side by side."""
    per_agent: dict[str, int] = {}
    for version in versions:
        per_agent[version["agent"]] = per_agent.get(version["agent"], 0) + 1
    out = []
    for version in versions:
        if per_agent[version["agent"]] < 2:
            continue
        decisions = version["decisions"]
        decided = sum(decisions.values())
        median = version["median_decision_s"]
        out.append(
            {
                "agent": version["agent"],
                "version": version["version"],
                "calls": version["calls"],
                "cost_usd": round(version["cost_usd"], 4),
                "decided": decided,
                "approve_rate": _rate(decisions.get("approved", 0), decided),
                "revise_rate": _rate(decisions.get("sent back", 0), decided),
                "median_decision_s": round(median) if median is not None else None,
            }
        )
    return out


def post(
    session: Session, config: CrewConfig, context: dict[str, Any], period: str
) -> list[outbox.Posted]:
    """The digest in each ops channel, once per period and channel."""
    return [
        outbox.post(
            session,
            key=f"digest:{period}:{platform}:{channel}",
            kind=MessageKind.DIGEST,
            platform=platform,
            channel=channel,
            template="digest",
            context=context,
        )
        for platform, channel in config.ops.targets()
    ]


def run_scheduled(
    db: Database, config: CrewConfig, now: datetime, period: str, *, ending: datetime | None = None
) -> bool:
    """The scheduled digest of `period` (over the window ending at `ending`, by default
    `now`): claimed, built and queued in one transaction. False when that period's digest
    was already claimed (a double fire, another replica)."""
    with db.transaction() as session:
        row = claim_period(session, JOB, period, now)
        if row is None:
            return False
        window = config.digest.window
        post(session, config, build(session, config, ending or now, window), period)
        row.finished_at = now
        session.add(row)
    return True


def run_due(
    db: Database, config: CrewConfig, trigger: CronTrigger, now: datetime, grace: timedelta
) -> int:
    """The scheduled digests due at `now`, each once: the latest fire within `grace`, and the
    fires since the last period posted (one skipped while the previous fire still ran, or
    whose job started only after the next was due), each over the window ending at its
    fire. A database that has never posted one posts only the latest; a fire older than
    `grace` is left to the missed-job alert."""
    fires = fires_between(trigger, now - grace, now)
    if not fires:
        return 0
    with db.read() as session:
        done = latest_period(session, JOB)
    due = fires[-1:] if done is None else [f for f in fires if period_of(f) > done]
    return sum(run_scheduled(db, config, now, period_of(f), ending=f) for f in due)
