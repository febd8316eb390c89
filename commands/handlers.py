"""The `/crew` commands. Each handler runs inside the transaction that recorded the event,
validates, changes state through the crew's services, and returns a reply or an outcome: no
waiting, no LLM calls. It never answers on its own; the dispatcher does, once."""

from __future__ import annotations

from datetime import timedelta

from agents import digest
from agents.cards import run_summary
from agents.durations import parse_duration
from agents.outcomes import Ignored, Outcome, Refused, Retrying, Started
from commands.context import Context
from commands.refs import run_ref
from commands.spec import Arg, CommandSpec, Registry, Reply, UsageError, did_you_mean
from storage.alert_queries import lock_alert, open_alerts
from storage.models import Alert, Message, Run, RunStatus, Vote
from storage.queries import lock_run, runs_with_steps, steps_of

# -- who sees what in help ---------------------------------------------------------------


def _may_launch_any(ctx: Context) -> bool:
    return ctx.crew.permissions.may_launch_any(ctx.who, ctx.roles)


def _is_any_approver(ctx: Context) -> bool:
    return ctx.crew.permissions.is_any_approver(ctx.who, ctx.roles)


def _may_manage_any(ctx: Context) -> bool:
    return ctx.crew.permissions.may_manage_any(ctx.who, ctx.roles)


# -- helpers ------------------------------------------------------------------------------


def referenced(ctx: Context, ref: str, field: str, problem: str) -> int | None:
    """The id `ref` names: `3` is 3 itself; `#12` is message 12's `field` (its run or alert).
    `problem` is the answer to text that is neither."""
    parsed = run_ref(ref)
    if parsed is None:
        raise UsageError(f"{ref[:40]!r} {problem}")
    kind, number = parsed
    if kind != "message":
        return number
    message = ctx.session.get(Message, number)
    value = getattr(message, field) if message else None
    return int(value) if value is not None else None


def find_run(ctx: Context, ref: str, *, lock: bool = True) -> Run:
    """`3` is run 3; `#12` is the run that message #12 belongs to. The run comes back locked
    (unless only read): what the command decides about it is serialized with other decisions."""
    run_id = referenced(
        ctx, ref, "run_id", "is not a run: give its number, e.g. 3, or a message ref, e.g. #12"
    )
    if run_id is None:
        run = None
    else:
        run = lock_run(ctx.session, run_id) if lock else ctx.session.get(Run, run_id)
    if run is None:
        raise UsageError(f"there is no run {ref}; /crew status lists recent runs")
    return run


# -- handlers -----------------------------------------------------------------------------

MAX_WINDOW = timedelta(days=366)  # a digest window or a silence: a year, not an overflow


def cmd_help(ctx: Context, _: dict[str, str]) -> Reply:
    specs = [s for s in REGISTRY.specs if s.visible(ctx)]
    return Reply(
        "help",
        {
            "commands": [{"usage": s.usage, "summary": s.summary} for s in specs],
            "who": ctx.who,
            "reactions": ctx.crew.config.reactions.shown(),
        },
    )


def cmd_run(ctx: Context, args: dict[str, str]) -> Outcome:
    name = args["workflow"].lower()
    workflows = ctx.crew.config.workflows
    if name not in workflows:
        suggestion = did_you_mean(name, list(workflows))
        raise UsageError(
            f"unknown workflow {name[:40]!r}; available: {', '.join(sorted(workflows))}",
            usage=REGISTRY.parse("run x y")[0].usage,
            suggestion=f"/crew run {suggestion} …" if suggestion else None,
        )
    if not ctx.crew.permissions.may_launch(name, ctx.who, ctx.roles):
        return Refused(f"you may not launch {name}", detail={"workflow": name})
    text = args.get("text", "").strip()
    if not text:
        raise UsageError("run needs a text", usage=REGISTRY.parse("run x y")[0].usage)
    limit = ctx.crew.config.max_text_chars
    cut = len(text) > limit
    if cut:
        text = text[:limit]
    run = ctx.crew.lifecycle.start_run(
        ctx.session,
        workflow=name,
        text=text,
        requester=ctx.who,
        platform=ctx.actor.platform,
        channel=ctx.channel,
    )
    assert run.id is not None
    return Started(run.id, name, cut, limit)


def cmd_status(ctx: Context, args: dict[str, str]) -> Reply:
    if args.get("run"):
        run = find_run(ctx, args["run"], lock=False)
        steps = steps_of(ctx.session, run.id or 0)
        return Reply("status", {"run": run_summary(run, steps)})
    rows = runs_with_steps(ctx.session, limit=10)
    return Reply("runs", {"runs": [run_summary(run, steps) for run, steps in rows]})


def cmd_cancel(ctx: Context, args: dict[str, str]) -> Outcome:
    run = find_run(ctx, args["run"])
    return ctx.crew.approvals.cancel(ctx.session, run, ctx.who, ctx.roles)


def cmd_retry(ctx: Context, args: dict[str, str]) -> Outcome:
    run = find_run(ctx, args["run"])
    if not ctx.crew.permissions.may_manage(run, ctx.who, ctx.roles):
        return Refused(
            "only the requester, the run's approvers or an admin can retry it",
            action="retry.refused",
            run_id=run.id,
        )
    if run.status != RunStatus.FAILED:
        return Ignored(f"run {run.id} is {run.status}; only failed runs retry", run_id=run.id)
    step = ctx.crew.lifecycle.retry(ctx.session, run, ctx.who)
    assert step is not None and run.id is not None
    return Retrying(run.id, step)


def cmd_approve(ctx: Context, args: dict[str, str]) -> Outcome:
    run = find_run(ctx, args["run"])
    reason = args.get("reason") or None
    return ctx.crew.approvals.decide_by_command(
        ctx.session, run, ctx.who, Vote.APPROVE, reason, ctx.roles
    )


def cmd_reject(ctx: Context, args: dict[str, str]) -> Outcome:
    run = find_run(ctx, args["run"])
    reason = args.get("reason") or None
    return ctx.crew.approvals.decide_by_command(
        ctx.session, run, ctx.who, Vote.REJECT, reason, ctx.roles
    )


def cmd_revise(ctx: Context, args: dict[str, str]) -> Outcome:
    run = find_run(ctx, args["run"])
    return ctx.crew.approvals.revise_by_command(ctx.session, run, ctx.who, args["notes"], ctx.roles)


def cmd_workflows(ctx: Context, _: dict[str, str]) -> Reply:
    config = ctx.crew.config
    permissions = ctx.crew.permissions
    items = []
    for name, wf in sorted(config.workflows.items()):
        approvals = [s for s in wf.steps if s.approval]
        items.append(
            {
                "name": name,
                "description": wf.description,
                "steps": [s.name for s in wf.steps],
                "approvers": sorted(
                    {a for s in approvals if s.approval for a in permissions.approvers(s.approval)}
                ),
                "may_launch": permissions.may_launch(name, ctx.who, ctx.roles),
            }
        )
    return Reply("workflows", {"workflows": items})


def cmd_agents(ctx: Context, _: dict[str, str]) -> Reply:
    agents = [
        {"name": n, "role": a.role, "model": a.model, "custom_prompt": bool(a.prompt)}
        for n, a in sorted(ctx.crew.config.agents.items())
    ]
    return Reply("agents", {"agents": agents, "provider": ctx.crew.provider})


def cmd_digest(ctx: Context, args: dict[str, str]) -> Reply:
    """The digest over the configured window (or the one asked for, e.g. 7d)."""
    window = ctx.crew.config.digest.window
    if args.get("window"):
        try:
            window = parse_duration(args["window"])
        except ValueError as exc:
            raise UsageError(str(exc), usage=REGISTRY.parse("digest")[0].usage) from None
        if not timedelta(minutes=1) <= window <= MAX_WINDOW:
            raise UsageError("the window must be between 1m and 366d (e.g. 24h, 7d)")
    return Reply("digest", digest.build(ctx.session, ctx.crew.config, ctx.crew.now(), window))


def _may_silence(ctx: Context) -> bool:
    return ctx.crew.alerts.may_silence(ctx.who, ctx.roles)


def find_alert(ctx: Context, ref: str) -> Alert:
    """`3` is alert 3; `#12` is the alert whose card (or thread reply) is message 12."""
    alert_id = referenced(
        ctx, ref, "alert_id", "is not an alert: give its number, e.g. 3, or its card, e.g. #12"
    )
    alert = lock_alert(ctx.session, alert_id) if alert_id is not None else None
    if alert is None:
        raise UsageError(f"there is no alert {ref}; /crew alerts lists them")
    return alert


def cmd_alerts(ctx: Context, _: dict[str, str]) -> Reply:
    """Firing and pending alerts, with who acknowledged or silenced them."""
    now = ctx.crew.now()
    service = ctx.crew.alerts
    items = []
    for alert in open_alerts(ctx.session):
        since = alert.fired_at or alert.started_at
        items.append(
            {
                **service.card_context(alert, now),
                "age_s": int((now - since).total_seconds()),
            }
        )
    return Reply("alerts", {"alerts": items})


def cmd_silence(ctx: Context, args: dict[str, str]) -> Outcome:
    alert = find_alert(ctx, args["alert"])
    try:
        duration = parse_duration(args["duration"])
    except ValueError as exc:
        raise UsageError(str(exc), usage=REGISTRY.parse("silence 1 1h")[0].usage) from None
    if not timedelta(0) < duration <= MAX_WINDOW:
        raise UsageError("silence for a positive duration of at most 366d, e.g. 2h")
    reason = args.get("reason", "").strip() or None
    service = ctx.crew.alerts
    parsed = run_ref(args["alert"])
    # a card (#12) stands for every alert it shows; a number for that alert alone
    alerts = (
        service.card_alerts(ctx.session, alert.id or 0)
        if parsed is not None and parsed[0] == "message"
        else [alert]
    )
    return service.silence(ctx.session, alerts, ctx.who, duration, reason, ctx.roles)


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
        CommandSpec(
            "revise",
            "send a run's waiting draft back with notes",
            cmd_revise,
            (Arg("run"), Arg("notes", rest=True)),
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
        CommandSpec(
            "digest",
            "how the crew did: runs, approvals, spend, latency, errors",
            cmd_digest,
            (Arg("window", required=False),),
        ),
        CommandSpec("alerts", "firing alerts, who acknowledged or silenced them", cmd_alerts),
        CommandSpec(
            "silence",
            "mute an alert's repeats and escalation for a while",
            cmd_silence,
            (Arg("alert"), Arg("duration"), Arg("reason", required=False, rest=True)),
            visible=_may_silence,
        ),
        CommandSpec("help", "this list", cmd_help, aliases=("?",)),
    ]
)
