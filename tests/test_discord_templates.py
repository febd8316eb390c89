"""The Discord templates: every message kind renders as short Discord markdown with Unicode
emoji, and no user or LLM text can mention, ping or hide a link from inside it."""

from __future__ import annotations

import re
from typing import Any

import pytest

from bot.escaping import ZWSP, escape_discord
from bot.platforms.discord_text import EMBED_DESCRIPTION_LIMIT, mention
from bot.platforms.shell import CHANNEL
from bot.render import Renderer
from commands.events import Actor, SlashCommand
from storage import models
from tests.conftest import Bot
from tests.test_slack_templates import CONTEXTS as SLACK_CONTEXTS
from tests.test_slack_templates import EVIL as SLACK_EVIL
from tests.test_slack_templates import TEMPLATES, card, draft, poison, run_summary, slack_names

REQUESTER, APPROVER, ROLE = "discord:81234", "discord:123", "discord:role:42"
# The Slack test's people, as Discord knows them.
IDS = {"slack:U0REQ": REQUESTER, "slack:U012AB": APPROVER, "slack:U034CD": ROLE}

EVIL = "@everyone @here <@1> <@!7> <@&42> <#5> [login](https://evil.example)"
HINT = (
    "✅ approve · ❌ reject · 🔁 send back (reply in this thread with notes, or /crew revise)"
    " · 🛑 cancel"
)
STATUS_ICONS = {
    "running": "🔄",
    "awaiting_approval": "⏳",
    "succeeded": "🟢",
    "failed": "🔴",
    "rejected": "⛔",
    "cancelled": "🛑",
}
# What Discord would turn into a ping, a mention chip or a disguised link.
LIVE = re.compile(r"<@!?\d+>|<@&\d+>|<#\d+>|@everyone|@here|\]\(", re.IGNORECASE)
# Slack's `:name:` emoji codes, which Discord prints as they are in a bot's message.
EMOJI_CODE = re.compile(r"(?<![\w:]):[a-z][a-z0-9_+-]*:(?![\w:])")


def swap(value: Any, mapping: dict[str, str]) -> Any:
    """`value` with every occurrence of each key replaced, in every string it holds."""
    if isinstance(value, str):
        for old, new in mapping.items():
            value = value.replace(old, new)
        return value
    if isinstance(value, list):
        return [swap(v, mapping) for v in value]
    if isinstance(value, dict):
        return {k: swap(v, mapping) for k, v in value.items()}
    return value


def discord_poison(value: Any) -> Any:
    """The Slack test's poisoning, with text that Discord (not Slack) would parse."""
    return swap(poison(value), {SLACK_EVIL: EVIL})


@pytest.fixture(scope="module")
def discord() -> Renderer:
    return Renderer("discord", mention)


CONTEXTS: dict[str, dict[str, Any]] = {
    **swap(SLACK_CONTEXTS, IDS),
    "reminder": {"run_id": 3, "version": 2, "waited_s": 90_000, "approvers": [APPROVER, ROLE]},
}
ONLY_NUMBERS_AND_IDS = {"digest", "reminder"}  # contexts without text anyone wrote
# The mentions each template makes on purpose (all others must be absent).
INTENDED = {
    "reminder": ["<@123>", "<@&42>"],
    "help": ["<@81234>"],
    "run_card": ["<@81234>"],
    "status": ["<@81234>"],
    "alert_update": ["<@123>"],  # an escalation mentions the on-call people
}


def discord_card(status: str, **fields: Any) -> dict[str, Any]:
    return dict(swap(card(status, **fields), IDS))


def discord_draft(**overrides: Any) -> dict[str, Any]:
    return {**swap(draft(), IDS), **overrides}


def discord_names() -> set[str]:
    return {p.stem for p in (TEMPLATES / "discord").glob("*.j2")}


def test_every_slack_template_has_a_discord_twin() -> None:
    assert slack_names() - discord_names() == set(), "message kinds without a Discord template"
    assert discord_names() - slack_names() == set(), "Discord templates Slack does not have"
    assert set(CONTEXTS) == discord_names(), "every template needs a context in this test"


@pytest.mark.parametrize("name", sorted(CONTEXTS))
def test_every_template_renders(discord: Renderer, name: str) -> None:
    text = discord.render(name, CONTEXTS[name])
    assert text.splitlines()[0].strip(), "the first line is what a notification shows"
    assert len(text) <= EMBED_DESCRIPTION_LIMIT
    assert "\n\n\n" not in text
    assert "[bold]" not in text and "[/" not in text, "rich markup leaked into Discord"
    assert EMOJI_CODE.findall(text) == [], "Slack emoji names leaked into Discord"
    assert "&lt;" not in text and "&gt;" not in text and "&amp;" not in text
    assert not re.search(r"<https?://[^>]*\|", text), "a Slack link leaked into Discord"
    assert LIVE.findall(text) == INTENDED.get(name, [])


@pytest.mark.parametrize("name", sorted(CONTEXTS))
def test_untrusted_text_never_becomes_live(discord: Renderer, name: str) -> None:
    text = discord.render(name, discord_poison(CONTEXTS[name]))
    if name not in ONLY_NUMBERS_AND_IDS:
        assert "@everyone" in text.replace(ZWSP, ""), "the poisoned text is shown"
    assert LIVE.findall(text) == INTENDED.get(name, []), f"live Discord syntax in {name}"


def test_live_pattern_catches_every_trick() -> None:
    """The safety tests above are only as good as this pattern."""
    assert len(LIVE.findall(EVIL)) == 7
    assert LIVE.findall(escape_discord(EVIL)) == []


def test_llm_draft_is_shown_as_written_but_inert(discord: Renderer) -> None:
    content = f"Intro\n{EVIL}\n**R&D** costs <3"
    text = discord.render("draft", discord_draft(content=content, feedback=EVIL))
    assert LIVE.findall(text) == []
    visible = text.replace(ZWSP, "")
    assert f"\n{content}\n" in visible, "the reader sees exactly what the LLM wrote"
    assert f"*revised after feedback: “{EVIL}”*" in visible


def test_draft_card_shows_content_hint_and_approvers(discord: Renderer) -> None:
    text = discord.render("draft", discord_draft(quorum=2))
    lines = text.splitlines()
    assert lines[0] == "**writer · draft v2** · *offline model*"
    assert "*revised after feedback: “shorter, add a cost table”*" in lines
    assert "They move heat instead of making it." in lines
    assert lines[-2:] == [HINT, "approvers: discord:123, discord:role:42 · 2 approvals needed"]
    assert LIVE.findall(text) == [], "a draft card must not mention its approvers"


def test_draft_card_first_version(discord: Renderer) -> None:
    context = discord_draft(version=1, feedback=None, offline=False, approvers=[])
    text = discord.render("draft", context)
    assert text.splitlines()[0] == "**writer · draft v1**"
    assert "feedback" not in text
    assert text.splitlines()[-1] == "approvers: none configured"
    assert "approvals needed" not in text


def test_draft_hint_follows_the_configured_reactions(discord: Renderer) -> None:
    reactions = {"approve": ["👍"], "reject": ["x", "👎"], "revise": ["✏️"], "cancel": ["🗑️"]}
    text = discord.render("draft", discord_draft(reactions=reactions))
    assert "👍 approve · 👎 reject · ✏️ send back" in text
    assert "🗑️ cancel" in text and "✅" not in text


@pytest.mark.parametrize("decision", ["approved", "rejected", "sent back", "cancelled"])
def test_locked_draft_has_no_hint(discord: Renderer, decision: str) -> None:
    text = discord.render("draft", discord_draft(decision=decision, decided_by=APPROVER))
    assert text.splitlines()[-1] == f"**{decision}** by discord:123 · this draft is closed"
    assert "approve ·" not in text and "approvers:" not in text
    assert "They move heat instead of making it." in text, "the content stays readable"


def test_reminder_mentions_the_approvers(discord: Renderer) -> None:
    text = discord.render("reminder", CONTEXTS["reminder"])
    assert text == "⏰ **draft v2** has waited 1d 1h for a decision · <@123>, <@&42>"
    nobody = discord.render("reminder", {**CONTEXTS["reminder"], "approvers": []})
    assert nobody.endswith("· no approvers configured")
    assert LIVE.findall(nobody) == []


@pytest.mark.parametrize("status", list(STATUS_ICONS))
def test_run_card_names_run_workflow_and_status(discord: Renderer, status: str) -> None:
    text = discord.render("run_card", discord_card(status))
    label = status.replace("_", " ")
    assert text.splitlines()[0] == f"**Run 3 · blog-post** · {STATUS_ICONS[status]} {label}"
    for other, icon in STATUS_ICONS.items():
        if other != status:
            assert icon not in text
    runs = discord.render("runs", {"runs": [run_summary(status=status)]})
    assert f"{STATUS_ICONS[status]} **run 3** · blog-post · {label}" in runs
    one = discord.render("status", {"run": swap(run_summary(status=status), IDS)})
    assert one.splitlines()[0] == f"**Run 3 · blog-post** · {STATUS_ICONS[status]} {label}"


def test_run_card_while_waiting(discord: Renderer) -> None:
    lines = discord.render("run_card", discord_card("awaiting_approval")).splitlines()
    assert lines == [
        "**Run 3 · blog-post** · ⏳ awaiting approval",
        "> Why heat pumps beat gas boilers",
        "step 2 of 3 · draft (writer) · draft v2 waiting for approval · 2m 05s elapsed",
        "requested by <@81234>",
    ]


def test_run_card_when_finished_names_who_decided(discord: Renderer) -> None:
    context = discord_card("succeeded", current=2, decided_by=APPROVER, cost_usd=0.01234)
    lines = discord.render("run_card", context).splitlines()
    assert lines[2:] == [
        "research: succeeded → draft: succeeded → publish: succeeded · took 2m 05s · $0.0123",
        "requested by <@81234> · decided by <@123>",
    ]


def test_run_card_error_and_multiline_topic(discord: Renderer) -> None:
    context = discord_card(
        "rejected",
        text="line one\n> forged quote\n-# small print @here",
        decided_by="timeout",
        error="approval timed out",
    )
    text = discord.render("run_card", context)
    lines = text.splitlines()
    assert lines[1].replace(ZWSP, "") == "> line one > forged quote -# small print @here"
    assert "requested by <@81234> · decided by timeout" in lines
    assert lines[-1] == "⚠️ approval timed out"
    assert LIVE.findall(text) == ["<@81234>"]


def test_published_never_shows_a_webhook_path(discord: Renderer) -> None:
    def published(to: str, location: str, offline: bool = False) -> str:
        context = {"run_id": 3, "to": to, "location": location, "content": "# Heat pumps"}
        return discord.render("published", {**context, "offline": offline})

    url = "https://hooks.example.com/services/T000/B000/s3cr3t"
    assert published("webhook", url) == "🟢 **published** to a webhook at `hooks.example.com`"
    userinfo = published("webhook", "https://bot:pw@h.example/x")
    assert userinfo == "🟢 **published** to a webhook at `h.example`"
    folder = published("folder", "/srv/out/00003-x.md", offline=True)
    assert folder == "🟢 **published** to `/srv/out/00003-x.md` · *offline model*"
    thread = published("thread", "this thread").splitlines()
    assert thread == ["🟢 **published** to this thread", "", "# Heat pumps"]
    assert "# Heat pumps" in published("channel", "this thread")


def test_decision_says_who_decided(discord: Renderer) -> None:
    sent_back = discord.render("decision", CONTEXTS["decision"])
    assert sent_back.splitlines() == [
        "🔁 draft v1 **sent back** by discord:123",
        "notes: *“shorter, add a cost table”*",
    ]
    no_notes = discord.render("decision", {**CONTEXTS["decision"], "feedback": None})
    assert "notes: none (reply in this thread before reacting 🔁 to send notes)" in no_notes
    rejected = discord.render(
        "decision",
        {**CONTEXTS["decision"], "decision": "rejected", "reason": "off topic", "feedback": None},
    )
    assert rejected == "❌ draft v1 **rejected** by discord:123: off topic"
    approved = discord.render("decision", {**CONTEXTS["decision"], "decision": "approved"})
    assert approved == "✅ draft v1 **approved** by discord:123"


def test_small_replies(discord: Renderer) -> None:
    assert discord.render("usage_error", CONTEXTS["usage_error"]).splitlines() == [
        "⚠️ unknown workflow 'blg-post'; available: blog-post, research-brief",
        "did you mean `/crew run blog-post …`?",
        "usage: `/crew run <workflow> <text…>`",
    ]
    assert discord.render("run_started", CONTEXTS["run_started"]).splitlines() == [
        "🚀 run 3 (blog-post) started; follow it in its thread",
        "⚠️ your text was cut to 40,000 characters",
    ]
    assert discord.render("runs", {"runs": []}) == (
        "no runs yet · start one with `/crew run blog-post <topic>`"
    )
    assert discord.render("runs", CONTEXTS["runs"]).splitlines() == [
        "**recent runs**",
        "⏳ **run 3** · blog-post · awaiting approval · “Why heat pumps beat gas boilers”",
        "🔴 **run 2** · blog-post · failed · “Why heat pumps beat gas boilers”",
    ]
    assert discord.render("status", CONTEXTS["status"]).splitlines() == [
        "**Run 3 · blog-post** · ⏳ awaiting approval",
        "> Why heat pumps beat gas boilers",
        "1. research: succeeded",
        "2. draft: awaiting approval (draft v2)",
        "3. publish: waiting",
        "requested by <@81234> · 2025-05-01T09:00:00+00:00",
    ]
    digest = discord.render("digest", CONTEXTS["digest"]).splitlines()
    assert digest[0] == "📊 **digest · last 24h**"
    assert "**approvals waiting:** 1 (oldest 1h 01m)" in digest
    assert discord.render("workflows", CONTEXTS["workflows"]).splitlines() == [
        "**blog-post**: Research, a draft that people approve, then publishing.",
        "steps: research → draft → publish · approvers: discord:123 · *you may not launch it*",
    ]
    assert discord.render("agents", CONTEXTS["agents"]).splitlines() == [
        "**writer**: writer · `gpt-4o-mini` · custom prompt",
        "LLM provider: offline",
    ]
    assert discord.render("help", CONTEXTS["help"]).splitlines() == [
        "**crewchief** · what you (<@81234>) may run:",
        "• `/crew run <workflow> <text…>` — launch a workflow",
        "• `/crew help` — this list",
        "on a draft: ✅ approve · ❌ reject · 🔁 send back · 🛑 cancel",
    ]
    assert discord.render("failure", CONTEXTS["failure"]).splitlines() == [
        "🔴 **step draft failed** (writer): LLM timed out",
        "type `/crew retry 3` to try it again",
    ]
    notes = discord.render("notes", CONTEXTS["notes"])
    assert notes.splitlines()[:3] == [
        "**researcher · research**",
        "",
        "- heat pumps are 3-4x as efficient",
    ]
    assert discord.render("notice", CONTEXTS["notice"]) == "run 3 cancelled"


# -- the contexts the real code builds, end to end -----------------------------------------


async def test_contexts_of_a_real_walkthrough_render(bot_factory: Any, discord: Renderer) -> None:
    """Every message a real run queues, and every command reply, renders for Discord too."""
    bot: Bot = bot_factory(approvers=["shell:editor", APPROVER])
    rendered: dict[str, list[str]] = {}

    def render(template: str, context: dict[str, Any]) -> None:
        rendered.setdefault(template, []).append(discord.render(template, context))

    async with bot.app.running():
        launch = SlashCommand(
            "shell-launch", Actor("shell", "alice"), CHANNEL, f"run blog-post Heat pumps {EVIL}"
        )
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

        actor = Actor("discord", "123")
        lines = ["help", "status", "status 1", "workflows", "agents", "digest", "alerts"]
        lines += ["run nope x"]
        lines += ["cancel 1", "approve 1"]
        for n, line in enumerate(lines):
            event = SlashCommand(f"discord-test-{n}", actor, "C1", line)
            for reply in bot.app.dispatcher.handle_now(event):
                render(reply.template, reply.context)
    await bot.app.aclose()

    # a failing LLM, a timeout, an alert rule that trips, a full disk (test_full_disk.py)
    unseen = {"failure", "reminder", "alert", "alert_group", "alert_update", "database_error"}
    expected = discord_names() - unseen
    assert expected <= set(rendered)
    everything = "\n".join(text for texts in rendered.values() for text in texts)
    assert "@everyone" in everything.replace(ZWSP, ""), "the poisoned topic is shown"
    assert set(LIVE.findall(everything)) <= {"<@123>"}, "only the Discord user's own mention"
    assert "<@123>" in "\n".join(rendered["help"])
    assert EMOJI_CODE.findall(everything) == [] and "[bold]" not in everything
    assert all(len(t) <= EMBED_DESCRIPTION_LIMIT for texts in rendered.values() for t in texts)
    assert any(HINT in text for text in rendered["draft"])
    locked = [t for t in rendered["draft"] if "this draft is closed" in t]
    assert any("**sent back** by shell:editor · this draft is closed" in t for t in locked)
    assert locked and all(HINT not in t for t in locked)
    assert any("🔁 draft v1 **sent back** by shell:editor" in t for t in rendered["decision"])
    assert any(t.startswith("**Run 1 · blog-post** · 🟢 succeeded") for t in rendered["run_card"])
