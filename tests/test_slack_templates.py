"""The Slack templates: every message kind renders as short mrkdwn, and no user or LLM text can
ping, mention or link from inside it."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agents.cards import run_card_context
from agents.config import Reactions
from bot.platforms.shell import CHANNEL
from bot.render import Renderer
from commands.events import Actor, SlashCommand
from storage import models
from storage.models import Run, RunStatus, Step, StepStatus
from tests.conftest import Bot

TEMPLATES = Path(__file__).resolve().parent.parent / "bot" / "templates"
SHELL_ONLY = {"greeting", "edit_draft"}

EVIL = "<!channel> read this <@U999> <https://evil|click>"
HINT = (
    ":white_check_mark: approve · :x: reject · "
    ":repeat: send back (reply in this thread with notes) · :octagonal_sign: cancel"
)
STATUS_ICONS = {
    "running": ":arrows_counterclockwise:",
    "awaiting_approval": ":hourglass_flowing_sand:",
    "succeeded": ":large_green_circle:",
    "failed": ":red_circle:",
    "rejected": ":no_entry:",
    "cancelled": ":octagonal_sign:",
}
# What Slack would turn into a ping, a mention or a link: `<!…>`, `<@…>`, `<#…>`, `<url|…>`.
LIVE = re.compile(r"<[!@#]|<[a-z]+:", re.IGNORECASE)


def slack_mention(who: str) -> str:
    return f"<@{who.split(':', 1)[1]}>" if who.startswith("slack:") else who


@pytest.fixture(scope="module")
def slack() -> Renderer:
    return Renderer("slack", mention=slack_mention, emoji_names=True)


NOW = datetime(2025, 5, 1, 9, 0, tzinfo=UTC)
STEPS = [("research", "researcher"), ("draft", "writer"), ("publish", "publisher")]


def card(
    status: str,
    *,
    current: int = 1,
    text: str = "Why heat pumps beat gas boilers",
    **run_fields: Any,
) -> dict[str, Any]:
    """The context agents.cards builds for a run card, from unsaved rows."""
    run = Run(
        id=3,
        workflow="blog-post",
        text=text,
        requester="slack:U0REQ",
        platform="slack",
        channel="C1",
        status=status,
        current_step=current,
        created_at=NOW - timedelta(seconds=125),
        **run_fields,
    )
    finished = RunStatus(status).finished
    steps = []
    for position, (name, agent) in enumerate(STEPS):
        if position < current:
            step_status = StepStatus.SUCCEEDED
        elif position == current:
            step_status = StepStatus.SUCCEEDED if status == "succeeded" else status
        else:
            step_status = StepStatus.SUCCEEDED if status == "succeeded" else StepStatus.WAITING
        steps.append(
            Step(
                run_id=3,
                position=position,
                name=name,
                agent=agent,
                status=step_status,
                version=2 if name == "draft" else 0,
            )
        )
    if finished:
        run.finished_at = NOW
    return run_card_context(run, steps, NOW, offline=False)


def draft(**overrides: Any) -> dict[str, Any]:
    """Mirrors Engine.draft_context, plus the run_id post_in_thread adds."""
    context: dict[str, Any] = {
        "run_id": 3,
        "step": "draft",
        "agent": "writer",
        "version": 2,
        "content": "# Heat pumps\n\nThey move heat instead of making it.\n\n| Cost item | € |",
        "feedback": "shorter, add a cost table",
        "offline": True,
        "approvers": ["slack:U012AB", "slack:U034CD"],
        "quorum": 1,
        "reactions": Reactions().shown(),
        "decision": None,
        "decided_by": None,
    }
    return {**context, **overrides}


def run_summary(**overrides: Any) -> dict[str, Any]:
    """Mirrors commands.handlers.run_summary."""
    summary: dict[str, Any] = {
        "id": 3,
        "workflow": "blog-post",
        "text": "Why heat pumps beat gas boilers",
        "status": "awaiting_approval",
        "requester": "slack:U0REQ",
        "error": None,
        "decided_by": None,
        "cost_usd": 0.0123,
        "created_at": "2025-05-01T09:00:00+00:00",
        "steps": [
            {"name": "research", "status": "succeeded", "version": 0},
            {"name": "draft", "status": "awaiting_approval", "version": 2},
            {"name": "publish", "status": "waiting", "version": 0},
        ],
    }
    return {**summary, **overrides}


NOW_COUNTS = {
    "started": 5,
    "succeeded": 3,
    "failed": 1,
    "rejected": 0,
    "cancelled": 0,
    "running": 0,
    "awaiting_approval": 1,
    "stuck": 0,
}
BEFORE_COUNTS = {
    "started": 2,
    "succeeded": 2,
    "failed": 0,
    "rejected": 0,
    "cancelled": 0,
    "running": 0,
    "awaiting_approval": 0,
    "stuck": 0,
}

CONTEXTS: dict[str, dict[str, Any]] = {
    "run_card": card("awaiting_approval"),
    "draft": draft(),
    "notes": {
        "run_id": 3,
        "step": "research",
        "agent": "researcher",
        "content": "- heat pumps are 3-4x as efficient\n- gas prices rose",
        "offline": False,
    },
    "failure": {"run_id": 3, "step": "draft", "agent": "writer", "error": "LLM timed out"},
    "published": {
        "run_id": 3,
        "to": "thread",
        "location": "this thread",
        "content": "# Heat pumps",
        "offline": False,
    },
    "reminder": {"run_id": 3, "version": 2, "waited_s": 90_000, "approvers": ["slack:U012AB"]},
    "decision": {
        "run_id": 3,
        "version": 1,
        "decision": "sent back",
        "decided_by": "slack:U012AB",
        "reason": None,
        "feedback": "shorter, add a cost table",
    },
    "help": {
        "commands": [
            {"usage": "/crew run <workflow> <text…>", "summary": "launch a workflow"},
            {"usage": "/crew help", "summary": "this list"},
        ],
        "who": "slack:U0REQ",
        "reactions": Reactions().shown(),
    },
    "run_started": {"run_id": 3, "workflow": "blog-post", "cut": True, "limit": 40_000},
    "status": {"run": run_summary()},
    "runs": {"runs": [run_summary(), run_summary(id=2, status="failed", error="boom")]},
    "workflows": {
        "workflows": [
            {
                "name": "blog-post",
                "description": "Research, a draft that people approve, then publishing.",
                "steps": ["research", "draft", "publish"],
                "approvers": ["slack:U012AB"],
                "may_launch": False,
            }
        ]
    },
    "agents": {
        "agents": [
            {"name": "writer", "role": "writer", "model": "gpt-4o-mini", "custom_prompt": True}
        ],
        "provider": "offline",
    },
    "digest": {
        "window": "24h",
        "since": "2026-12-02T09:00+00:00",
        "until": "2026-12-03T09:00+00:00",
        "quiet": False,
        "totals": {"now": NOW_COUNTS, "before": BEFORE_COUNTS},
        "workflows": [{"name": "blog-post", "now": NOW_COUNTS, "before": BEFORE_COUNTS}],
        "runs_spark": "▁▃█",
        "approvals": {
            "pending": 1,
            "oldest_wait_s": 3_700,
            "decided": 4,
            "approved": 2,
            "sent_back": 1,
            "rejected": 1,
            "approve_rate": 0.5,
            "revise_rate": 0.25,
            "reject_rate": 0.25,
            "median_s": 1_200,
            "p90_s": 2_400,
        },
        "spend": {
            "usd": 0.0123,
            "budget_usd": 5.0,
            "tokens": 1_500,
            "models": [
                {
                    "model": "gpt-4o-mini",
                    "calls": 3,
                    "input_tokens": 1_000,
                    "output_tokens": 400,
                    "cost_usd": 0.0123,
                    "priced": True,
                },
                {
                    "model": "llama3",
                    "calls": 1,
                    "input_tokens": 80,
                    "output_tokens": 20,
                    "cost_usd": 0.0,
                    "priced": False,
                },
            ],
            "unpriced": ["llama3"],
            "spark": "▁█▁",
        },
        "llm": {"calls": 4, "failed": 1},
        "latency": [{"agent": "writer", "calls": 3, "p50_ms": 900, "p95_ms": 2_100}],
        "errors": [{"cause": "HTTP 500 from the model", "count": 1}],
        "costliest": [{"run_id": 3, "workflow": "blog-post", "cost_usd": 0.0123}],
        "alerts": {"fired": 2, "acknowledged": 1, "resolved": 1},
        "prompts": [
            {
                "agent": "writer",
                "version": "1a2b3c4d",
                "calls": 3,
                "cost_usd": 0.01,
                "decided": 2,
                "approve_rate": 0.5,
                "revise_rate": 0.5,
                "median_decision_s": 600,
            }
        ],
        "jobs": [{"job": "digest", "ago_s": 86_400}],
    },
    "alert": {
        "alert_id": 1,
        "rule": "failure-rate",
        "labels": {"workflow": "blog-post"},
        "summary": "3 of 4 blog-post runs failed in the last 1h (75%)",
        "state": "firing",
        "fired_at": "2026-12-03 09:00 UTC",
        "resolved_after_s": None,
        "acknowledged_by": "slack:U012AB",
        "silenced_by": "slack:U0ADMIN",
        "silenced_until": "2026-12-03 11:00 UTC",
        "silence_reason": "deploying a fix",
        "explains": ["3 of 4 blog-post runs failed in the last 1h (75%)"],
        "flapping": True,
        "note": "restarting the provider",
        "note_by": "slack:U012AB",
    },
    "alert_group": {
        "alert_id": 1,
        "alert_ids": [1, 2],
        "state": "firing",
        "fired_at": "2026-12-03 09:00 UTC",
        "unacknowledged": True,
        "alerts": [
            {
                "alert_id": 1,
                "rule": "failure-rate",
                "labels": {"workflow": "blog-post"},
                "summary": "3 of 4 blog-post runs failed in the last 1h (75%)",
                "state": "resolved",
                "fired_at": "2026-12-03 09:00 UTC",
                "resolved_after_s": 720,
                "acknowledged_by": "slack:U012AB",
                "silenced_by": None,
                "silenced_until": None,
                "silence_reason": None,
                "explains": [],
                "flapping": False,
                "note": "restarting the provider",
                "note_by": "slack:U012AB",
            },
            {
                "alert_id": 2,
                "rule": "llm-errors",
                "labels": {"model": "gpt-4o-mini"},
                "summary": "5 of 6 calls to gpt-4o-mini failed in the last 15m (83%)",
                "state": "firing",
                "fired_at": "2026-12-03 09:00 UTC",
                "resolved_after_s": None,
                "acknowledged_by": None,
                "silenced_by": "slack:U0ADMIN",
                "silenced_until": "2026-12-03 11:00 UTC",
                "silence_reason": "deploying a fix",
                "explains": ["3 of 4 research-brief runs failed in the last 1h (75%)"],
                "flapping": True,
                "note": None,
                "note_by": None,
            },
        ],
    },
    "alert_update": {
        "alert_id": 1,
        "rule": "failure-rate",
        "summary": "3 of 4 blog-post runs failed in the last 1h (75%)",
        "acknowledged_by": None,
        "event": "escalated",
        "on_call": ["slack:U012AB"],
        "firing_s": 1_900,
    },
    "alerts": {
        "alerts": [
            {
                "alert_id": 1,
                "rule": "llm-errors",
                "labels": {"model": "gpt-4o-mini"},
                "summary": "5 of 6 calls to gpt-4o-mini failed in the last 15m (83%)",
                "state": "firing",
                "age_s": 600,
                "acknowledged_by": "slack:U012AB",
                "silenced_by": None,
                "silenced_until": None,
                "note": "restarting the provider",
                "note_by": "slack:U012AB",
            }
        ]
    },
    "notice": {"text": "run 3 cancelled"},
    "database_error": {
        "problem": "database or disk is full: no space is left on the disk that holds crew.db"
    },
    "usage_error": {
        "error": "unknown workflow 'blg-post'; available: blog-post, research-brief",
        "usage": "/crew run <workflow> <text…>",
        "suggestion": "/crew run blog-post …",
    },
}


def slack_names() -> set[str]:
    return {p.stem for p in (TEMPLATES / "slack").glob("*.j2")}


def test_every_shell_message_kind_has_a_slack_twin() -> None:
    shell = {p.stem for p in (TEMPLATES / "shell").glob("*.j2")} - SHELL_ONLY
    assert shell - slack_names() == set(), "message kinds without a Slack template"
    assert slack_names() - shell == set(), "Slack templates no shell twin documents"
    assert set(CONTEXTS) == shell, "every template needs a context in this test"


@pytest.mark.parametrize("name", sorted(CONTEXTS))
def test_every_template_renders(slack: Renderer, name: str) -> None:
    text = slack.render(name, CONTEXTS[name])
    assert text.strip()
    headline = text.splitlines()[0]
    assert headline.strip(), "the first line is the notification text"
    assert len(text) < 3_000
    assert "[bold]" not in text and "[/" not in text, "rich markup leaked into Slack"
    assert "\n\n\n" not in text


@pytest.mark.parametrize("name", sorted(CONTEXTS))
def test_templates_print_literal_angle_brackets_only_as_entities(
    slack: Renderer, name: str
) -> None:
    """Text we write ourselves must not contain `<`: Slack would parse it as markup."""
    source = (TEMPLATES / "slack" / f"{name}.j2").read_text()
    outside_tags = re.sub(r"\{[{%#].*?[}%#]\}", "", source, flags=re.DOTALL)
    assert "<" not in outside_tags


def poison(value: Any) -> Any:
    """Put EVIL into every string of a context, except ids mention filters turn into pings."""
    if isinstance(value, str):
        return f"{value} {EVIL}"
    if isinstance(value, list):
        return [poison(v) for v in value]
    if isinstance(value, dict):
        return {
            k: v
            if k
            in {"requester", "who", "approvers", "status", "to", "decision", "on_call", "event"}
            else poison(v)
            for k, v in value.items()
        }
    return value


@pytest.mark.parametrize("name", sorted(CONTEXTS))
def test_untrusted_text_never_becomes_live(slack: Renderer, name: str) -> None:
    text = slack.render(name, poison(CONTEXTS[name]))
    for live in ("<!channel>", "<@U999>", "<https://evil"):
        assert live not in text
    found = {m.group(0) for m in LIVE.finditer(text)}
    assert found <= {"<@"}, f"live markup in {name}: {found}"
    allowed = {"<@U0REQ>", "<@U012AB>"}  # the ids our own mention filter produced
    assert set(re.findall(r"<@[^>]*>", text)) <= allowed


def test_llm_draft_is_escaped(slack: Renderer) -> None:
    text = slack.render("draft", draft(content=f"Intro\n{EVIL}\nR&D costs", feedback=EVIL))
    assert "&lt;!channel&gt; read this &lt;@U999&gt; &lt;https://evil|click&gt;" in text
    assert "R&amp;D costs" in text
    assert "<!channel>" not in text and "<@U999>" not in text and "<https://evil" not in text


def test_draft_card_shows_hint_and_approvers_as_text(slack: Renderer) -> None:
    text = slack.render("draft", draft(quorum=2))
    lines = text.splitlines()
    assert lines[0] == "*writer · draft v2* · _offline model_"
    assert "_revised after feedback: “shorter, add a cost table”_" in lines
    assert HINT in lines
    assert "approvers: slack:U012AB, slack:U034CD · 2 approvals needed" in lines
    assert "<@" not in text, "a draft card must not ping its approvers"


def test_draft_card_first_version(slack: Renderer) -> None:
    text = slack.render("draft", draft(version=1, feedback=None, offline=False, approvers=[]))
    assert text.splitlines()[0] == "*writer · draft v1*"
    assert "feedback" not in text
    assert "approvers: none configured" in text
    assert "approvals needed" not in text


@pytest.mark.parametrize("decision", ["approved", "rejected", "sent back"])
def test_locked_draft_has_no_hint(slack: Renderer, decision: str) -> None:
    text = slack.render("draft", draft(decision=decision, decided_by="slack:U012AB"))
    assert f"*{decision}* by slack:U012AB · this draft is closed" in text.splitlines()
    assert HINT not in text
    assert ":white_check_mark:" not in text and "approvers:" not in text
    assert "<@" not in text
    assert "They move heat instead of making it." in text, "the content stays readable"


def test_reminder_mentions_the_approvers(slack: Renderer) -> None:
    text = slack.render("reminder", CONTEXTS["reminder"])
    assert "<@U012AB>" in text
    assert text.startswith(":alarm_clock: *draft v2* has waited 1d 1h for a decision")
    nobody = slack.render("reminder", {**CONTEXTS["reminder"], "approvers": []})
    assert "no approvers configured" in nobody


@pytest.mark.parametrize("status", list(STATUS_ICONS))
def test_run_card_status_emoji(slack: Renderer, status: str) -> None:
    text = slack.render("run_card", card(status))
    label = status.replace("_", " ")
    assert text.splitlines()[0] == f"*Run 3 · blog-post* · {STATUS_ICONS[status]} {label}"
    for other, icon in STATUS_ICONS.items():
        if other != status:
            assert icon not in text
    runs = slack.render("runs", {"runs": [run_summary(status=status)]})
    assert STATUS_ICONS[status] in runs
    one = slack.render("status", {"run": run_summary(status=status)})
    assert STATUS_ICONS[status] in one.splitlines()[0]


def test_run_card_while_running(slack: Renderer) -> None:
    text = slack.render("run_card", card("awaiting_approval"))
    lines = text.splitlines()
    assert lines[1] == "> Why heat pumps beat gas boilers"
    assert lines[2] == (
        "step 2 of 3 · draft (writer) · draft v2 waiting for approval · 2m 05s elapsed"
    )
    assert "requested by <@U0REQ>" in text
    assert "decided by" not in text and "took" not in text


def test_run_card_when_finished(slack: Renderer) -> None:
    context = card("succeeded", current=2, decided_by="slack:U012AB", cost_usd=0.01234)
    text = slack.render("run_card", context)
    assert (
        "research: succeeded → draft: succeeded → publish: succeeded · took 2m 05s · $0.0123"
        in text
    )
    assert "requested by <@U0REQ> · decided by <@U012AB>" in text
    assert "step 3 of 3" not in text


def test_run_card_error_and_multiline_topic(slack: Renderer) -> None:
    context = card(
        "rejected",
        text="line one\n> forged quote\n<!here>",
        decided_by="timeout",
        error="approval timed out",
    )
    text = slack.render("run_card", context)
    assert "> line one &gt; forged quote &lt;!here&gt;" in text.splitlines()
    assert "decided by timeout" in text
    assert ":warning: approval timed out" in text


def test_published_never_shows_a_webhook_path(slack: Renderer) -> None:
    url = "https://hooks.example.com/services/T000/B000/s3cr3t"
    text = slack.render(
        "published",
        {"run_id": 3, "to": "webhook", "location": url, "content": "x", "offline": False},
    )
    assert text == ":large_green_circle: *published* to a webhook at `hooks.example.com`"
    userinfo = slack.render(
        "published",
        {
            "run_id": 3,
            "to": "webhook",
            "location": "https://bot:pw@h.example/x",
            "content": "x",
            "offline": False,
        },
    )
    assert userinfo == ":large_green_circle: *published* to a webhook at `h.example`"
    folder = slack.render(
        "published",
        {
            "run_id": 3,
            "to": "folder",
            "location": "/srv/out/00003-x.md",
            "content": "x",
            "offline": True,
        },
    )
    assert folder == ":large_green_circle: *published* to `/srv/out/00003-x.md` · _offline model_"
    # publishing "to: channel" reports "this thread" today: show what was published
    channel = slack.render("published", {**CONTEXTS["published"], "to": "channel"})
    assert "# Heat pumps" in channel
    thread = slack.render("published", CONTEXTS["published"])
    assert thread.splitlines()[0] == ":large_green_circle: *published* to this thread"
    assert "# Heat pumps" in thread


def test_decision_messages(slack: Renderer) -> None:
    sent_back = slack.render("decision", CONTEXTS["decision"])
    assert sent_back.splitlines() == [
        ":repeat: draft v1 *sent back* by slack:U012AB",
        "notes: _“shorter, add a cost table”_",
    ]
    no_notes = slack.render("decision", {**CONTEXTS["decision"], "feedback": None})
    assert "none (reply in this thread before reacting :repeat: to send notes)" in no_notes
    rejected = slack.render(
        "decision",
        {**CONTEXTS["decision"], "decision": "rejected", "reason": "off topic", "feedback": None},
    )
    assert rejected == ":x: draft v1 *rejected* by slack:U012AB: off topic"


def test_small_replies(slack: Renderer) -> None:
    assert slack.render("usage_error", CONTEXTS["usage_error"]).splitlines() == [
        ":warning: unknown workflow 'blg-post'; available: blog-post, research-brief",
        "did you mean `/crew run blog-post …`?",
        "usage: `/crew run &lt;workflow&gt; &lt;text…&gt;`",
    ]
    assert slack.render("run_started", CONTEXTS["run_started"]).splitlines() == [
        ":rocket: run 3 (blog-post) started; follow it in its thread",
        ":warning: your text was cut to 40,000 characters",
    ]
    assert slack.render("runs", {"runs": []}) == (
        "no runs yet · start one with `/crew run blog-post &lt;topic&gt;`"
    )
    digest = slack.render("digest", CONTEXTS["digest"]).splitlines()
    assert digest[:5] == [
        ":bar_chart: *digest · last 24h*",
        "*runs started:* 5 (was 2)  `▁▃█`",
        "succeeded 3 (was 2) · failed 1 (was 0) · rejected 0 · cancelled 0 · stuck 0"
        " · in progress 0 · waiting for approval 1",
        "• *blog-post*: started 5 (was 2) · succeeded 3 (was 2) · failed 1 (was 0) · rejected 0"
        " · cancelled 0 · stuck 0",
        "*approvals waiting:* 1 (oldest 1h 01m)",
    ]
    assert "• llama3: 1 calls · 80 in / 20 out · _price unknown_" in digest
    assert "*spend:* $0.0123 of $5.00 budget · 1500 tokens  `▁█▁`" in digest
    workflows = slack.render("workflows", CONTEXTS["workflows"])
    assert "approvers: slack:U012AB · _you may not launch it_" in workflows
    assert "<@" not in workflows
    help_text = slack.render("help", CONTEXTS["help"])
    assert help_text.splitlines() == [
        "*crewchief* · what you (<@U0REQ>) may run:",
        "• `/crew run &lt;workflow&gt; &lt;text…&gt;` — launch a workflow",
        "• `/crew help` — this list",
        "on a draft: :white_check_mark: approve · :x: reject · :repeat: send back"
        " · :octagonal_sign: cancel",
    ]


# -- the contexts the real code builds, end to end -----------------------------------------


async def test_contexts_of_a_real_walkthrough_render(bot_factory: Any, slack: Renderer) -> None:
    """Every message a real run queues, and every command reply, renders in Slack too."""
    bot: Bot = bot_factory(approvers=["shell:editor", "slack:U012AB"])
    rendered: dict[str, list[str]] = {}

    def render(template: str, context: dict[str, Any]) -> None:
        rendered.setdefault(template, []).append(slack.render(template, context))

    async with bot.app.running():
        text = f"run blog-post Heat pumps {EVIL}"
        launch = SlashCommand("shell-launch", Actor("shell", "alice"), CHANNEL, text)
        for reply in bot.app.dispatcher.handle_now(launch):
            render(reply.template, reply.context)
        await bot.wait()
        draft1 = bot.latest_draft()
        bot.act_as("editor")
        await bot.type(f"reply #{draft1.id} shorter {EVIL}", f"react #{draft1.id} 🔁")
        await bot.wait()
        await bot.type(f"react #{bot.latest_draft().id} ✅")
        await bot.wait()
        assert bot.run().status == models.RunStatus.SUCCEEDED

        for row in bot.rows(models.Outbox):
            if row.template != "webhook":
                render(row.template, row.context)

        actor = Actor("slack", "U012AB")
        lines = ["help", "status", "status 1", "workflows", "agents", "digest", "alerts"]
        lines += ["run nope x"]
        lines += ["cancel 1", "approve 1"]
        for n, line in enumerate(lines):
            event = SlashCommand(f"slack-test-{n}", actor, "C1", line)
            for reply in bot.app.dispatcher.handle_now(event):
                render(reply.template, reply.context)
    await bot.app.aclose()

    # a failing LLM, a timeout, an alert rule that trips, a full disk (test_full_disk.py)
    unseen = {"failure", "reminder", "alert", "alert_group", "alert_update", "database_error"}
    expected = slack_names() - unseen
    assert expected <= set(rendered)
    everything = "\n".join(text for texts in rendered.values() for text in texts)
    assert "<!channel>" not in everything and "<@U999>" not in everything
    assert "<https://evil" not in everything
    assert "&lt;!channel&gt;" in everything
    assert "[bold]" not in everything
    locked = [t for t in rendered["draft"] if "this draft is closed" in t]
    assert locked and all(HINT not in t for t in locked)
    assert any("*sent back* by shell:editor · this draft is closed" in t for t in locked)
    assert all("<@" not in t for t in rendered["draft"])
