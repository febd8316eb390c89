"""The `/crew` commands. Each handler runs inside the transaction that recorded the event,
validates, changes state through the engine, and returns a reply: no waiting, no LLM calls."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session, col, func, select

from agents.approvals import ApprovalService
from agents.cards import run_summary, steps_of
from agents.engine import Engine
from commands.events import Actor
from commands.refs import run_ref
from commands.spec import Arg, CommandSpec, Refused, Registry, Reply, UsageError, did_you_mean
from storage.models import ApprovalVote, Message, Run, RunStatus, Step, StepStatus, Vote
from storage.queries import lock_run, runs_with_steps, spend_since


@dataclass
class Context:
    engine: Engine
    approvals: ApprovalService
    session: Session
    actor: Actor
    channel: str

    @property
    def who(self) -> str:
        return self.actor.qualified


# -- who sees what in help ---------------------------------------------------------------


def _may_launch_any(ctx: Context) -> bool:
    return any(ctx.engine.may_launch(name, ctx.who) for name in ctx.engine.config.workflows)


def _is_any_approver(ctx: Context) -> bool:
    wfs = ctx.engine.config.workflows.values()
    approvers = [ctx.engine.approvers(s.approval) for wf in wfs for s in wf.steps if s.approval]
    return ctx.engine.is_admin(ctx.who) or any(ctx.who in a for a in approvers)


def _may_manage_any(ctx: Context) -> bool:
    return _may_launch_any(ctx) or _is_any_approver(ctx)


# -- helpers ------------------------------------------------------------------------------


def find_run(ctx: Context, ref: str, *, lock: bool = True) -> Run:
    """`3` is run 3; `#12` is the run that message #12 belongs to. The run comes back locked
    (unless only read): what the command decides about it is serialized with other decisions."""
    parsed = run_ref(ref)
    if parsed is None:
        raise UsageError(
            f"{ref[:40]!r} is not a run: give its number, e.g. 3, or a message ref, e.g. #12"
        )
    kind, number = parsed
    run_id: int | None = number
    if kind == "message":
        message = ctx.session.get(Message, number)
        run_id = message.run_id if message else None
    if run_id is None:
        run = None
    else:
        run = lock_run(ctx.session, run_id) if lock else ctx.session.get(Run, run_id)
    if run is None:
        raise UsageError(f"there is no run {ref}; /crew status lists recent runs")
    return run


# -- handlers -----------------------------------------------------------------------------


def cmd_help(ctx: Context, _: dict[str, str]) -> Reply:
    specs = [s for s in REGISTRY.specs if s.visible(ctx)]
    return Reply(
        "help",
        {
            "commands": [{"usage": s.usage, "summary": s.summary} for s in specs],
            "who": ctx.who,
            "reactions": ctx.engine.config.reactions.shown(),
        },
    )


def cmd_run(ctx: Context, args: dict[str, str]) -> Reply:
    name = args["workflow"].lower()
    workflows = ctx.engine.config.workflows
    if name not in workflows:
        suggestion = did_you_mean(name, list(workflows))
        raise UsageError(
            f"unknown workflow {name!r}; available: {', '.join(sorted(workflows))}",
            usage=REGISTRY.parse("run x y")[0].usage,
            suggestion=f"/crew run {suggestion} …" if suggestion else None,
        )
    if not ctx.engine.may_launch(name, ctx.who):
        raise Refused(f"you may not launch {name}")
    text = args.get("text", "").strip()
    if not text:
        raise UsageError("run needs a text", usage=REGISTRY.parse("run x y")[0].usage)
    limit = ctx.engine.config.max_text_chars
    cut = len(text) > limit
    if cut:
        text = text[:limit]
    run = ctx.engine.start_run(
        ctx.session,
        workflow=name,
        text=text,
        requester=ctx.who,
        platform=ctx.actor.platform,
        channel=ctx.channel,
    )
    return Reply("run_started", {"run_id": run.id, "workflow": name, "cut": cut, "limit": limit})


def cmd_status(ctx: Context, args: dict[str, str]) -> Reply:
    if args.get("run"):
        run = find_run(ctx, args["run"], lock=False)
        steps = steps_of(ctx.session, run.id or 0)
        return Reply("status", {"run": run_summary(run, steps)})
    rows = runs_with_steps(ctx.session, limit=10)
    return Reply("runs", {"runs": [run_summary(run, steps) for run, steps in rows]})


def cmd_cancel(ctx: Context, args: dict[str, str]) -> Reply:
    run = find_run(ctx, args["run"])
    outcome = ctx.approvals.cancel(ctx.session, run, ctx.who)
    if outcome.effect != "cancelled":
        return Reply("notice", {"text": outcome.notice or "nothing to cancel"})
    return Reply("notice", {"text": f"run {run.id} cancelled"}, private=False)


def cmd_retry(ctx: Context, args: dict[str, str]) -> Reply:
    run = find_run(ctx, args["run"])
    if not ctx.engine.may_manage(run, ctx.who):
        raise Refused("only the requester, the run's approvers or an admin can retry it")
    if run.status != RunStatus.FAILED:
        return Reply("notice", {"text": f"run {run.id} is {run.status}; only failed runs retry"})
    step = ctx.engine.retry(ctx.session, run, ctx.who)
    assert step is not None
    return Reply("notice", {"text": f"run {run.id}: retrying step {step.name}"}, private=False)


def _decide(ctx: Context, args: dict[str, str], vote: Vote) -> Reply:
    run = find_run(ctx, args["run"])
    outcome = ctx.approvals.decide_by_command(
        ctx.session, run, ctx.who, vote, args.get("reason") or None
    )
    texts = {
        "decided": f"run {run.id}: {vote.value} recorded",
        "counted": "your approval is counted; "
        f"{outcome.context.get('count')} of {outcome.context.get('quorum')} so far",
        "duplicate": "you already voted on this draft",
    }
    return Reply("notice", {"text": outcome.notice or texts.get(outcome.effect, outcome.effect)})


def cmd_approve(ctx: Context, args: dict[str, str]) -> Reply:
    return _decide(ctx, args, Vote.APPROVE)


def cmd_reject(ctx: Context, args: dict[str, str]) -> Reply:
    return _decide(ctx, args, Vote.REJECT)


def cmd_workflows(ctx: Context, _: dict[str, str]) -> Reply:
    config = ctx.engine.config
    items = []
    for name, wf in sorted(config.workflows.items()):
        approvals = [s for s in wf.steps if s.approval]
        items.append(
            {
                "name": name,
                "description": wf.description,
                "steps": [s.name for s in wf.steps],
                "approvers": sorted(
                    {a for s in approvals if s.approval for a in ctx.engine.approvers(s.approval)}
                ),
                "may_launch": ctx.engine.may_launch(name, ctx.who),
            }
        )
    return Reply("workflows", {"workflows": items})


def cmd_agents(ctx: Context, _: dict[str, str]) -> Reply:
    agents = [
        {"name": n, "role": a.role, "model": a.model, "custom_prompt": bool(a.prompt)}
        for n, a in sorted(ctx.engine.config.agents.items())
    ]
    return Reply("agents", {"agents": agents, "provider": ctx.engine.llm.name})


def cmd_digest(ctx: Context, _: dict[str, str]) -> Reply:
    """Health figures of the last 24 hours."""
    session = ctx.session
    now = ctx.engine.clock()
    since = now - timedelta(hours=24)
    by_status = dict(
        session.exec(
            select(Run.status, func.count())
            .where(col(Run.created_at) >= since)
            .group_by(Run.status)
        ).all()
    )
    waiting = session.exec(select(Step).where(Step.status == StepStatus.AWAITING_APPROVAL)).all()
    oldest: datetime | None = min(
        (s.awaiting_since for s in waiting if s.awaiting_since), default=None
    )
    votes = session.exec(select(func.count()).select_from(ApprovalVote)).one()
    return Reply(
        "digest",
        {
            "started": sum(by_status.values()),
            "by_status": by_status,
            "awaiting": len(waiting),
            "oldest_wait_s": int((now - oldest).total_seconds()) if oldest else None,
            "spend_usd": round(spend_since(session, since), 4),
            "budget_usd": ctx.engine.config.budgets.per_day_usd,
            "votes": votes,
        },
    )


REGISTRY = Registry(
    [
        CommandSpec(
            "run",
            "launch a workflow",
            cmd_run,
            (Arg("workflow"), Arg("text", rest=True)),
            visible=_may_launch_any,
        ),
        CommandSpec(
            "status", "recent runs, or one run's steps", cmd_status, (Arg("run", required=False),)
        ),
        CommandSpec(
            "approve",
            "approve a run's waiting draft",
            cmd_approve,
            (Arg("run"), Arg("reason", required=False, rest=True)),
            visible=_is_any_approver,
        ),
        CommandSpec(
            "reject",
            "reject a run's waiting draft",
            cmd_reject,
            (Arg("run"), Arg("reason", required=False, rest=True)),
            visible=_is_any_approver,
        ),
        CommandSpec("cancel", "cancel a run", cmd_cancel, (Arg("run"),), visible=_may_manage_any),
        CommandSpec(
            "retry",
            "retry a failed run's failed step",
            cmd_retry,
            (Arg("run"),),
            visible=_may_manage_any,
        ),
        CommandSpec("workflows", "the workflows and who approves them", cmd_workflows),
        CommandSpec("agents", "the agents and their models", cmd_agents),
        CommandSpec("digest", "health figures of the last 24 hours", cmd_digest),
        CommandSpec("help", "this list", cmd_help, aliases=("?",)),
    ]
)
