"""The digest: every figure from a seeded database, as an operator reads it, and its posting
once per period to the ops channels."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlmodel import select

from agents import digest
from bot.render import Renderer
from storage import models
from storage.db import Database
from tests.conftest import Bot, make_config

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


def ago(**kwargs: float) -> datetime:
    return NOW - timedelta(**kwargs)


def seed(db: Database) -> None:
    """Two workflows over two days: today's runs of every outcome, yesterday's for comparison."""
    with db.transaction() as s:
        runs: dict[str, models.Run] = {}
        for name, workflow, status, created, cost in [
            ("ok", "blog-post", "succeeded", ago(hours=5), 0.30),
            ("failed", "blog-post", "failed", ago(hours=4), 0.01),
            ("rejected", "blog-post", "rejected", ago(hours=3), 0.02),
            ("cancelled", "blog-post", "cancelled", ago(hours=2), 0.0),
            ("stuck", "blog-post", "running", ago(hours=2), 0.0),
            ("waiting", "blog-post", "awaiting_approval", ago(hours=4), 0.0),
            ("brief", "research-brief", "succeeded", ago(hours=1), 0.05),
            ("old1", "research-brief", "succeeded", ago(hours=30), 0.9),
            ("old2", "research-brief", "failed", ago(hours=40), 0.0),
            ("old3", "blog-post", "succeeded", ago(hours=47), 0.0),
        ]:
            run = models.Run(
                workflow=workflow,
                text=name,
                requester="shell:alice",
                platform="shell",
                channel="shell",
                status=status,
                cost_usd=cost,
                created_at=created,
                updated_at=created,
            )
            s.add(run)
            s.flush()
            runs[name] = run

        def step(run: str, status: str, **kw: Any) -> models.Step:
            row = models.Step(
                run_id=runs[run].id, position=1, name="draft", agent="writer", status=status, **kw
            )
            s.add(row)
            s.flush()
            return row

        step("failed", "failed", error="budget: daily cap reached")
        step("waiting", "awaiting_approval", awaiting_since=ago(hours=3))
        # Drafts and their decisions: waits of 10, 20, 30 and 40 minutes today; one yesterday.
        for run, version, action, posted, waited in [
            ("ok", 1, "draft.sent_back", ago(hours=4), 10),
            ("ok", 2, "draft.approved", ago(hours=3), 20),
            ("rejected", 1, "draft.rejected", ago(hours=2), 30),
            ("brief", 1, "draft.approved", ago(hours=1), 40),
            ("old1", 1, "draft.approved", ago(hours=29), 1),
        ]:
            drafted = step(run, "succeeded") if version == 1 else None
            step_id = drafted.id if drafted else None
            if step_id is None:
                step_id = s.exec(
                    select(models.Step.id).where(models.Step.run_id == runs[run].id)
                ).first()
            s.add(
                models.DraftVersion(
                    run_id=runs[run].id,
                    step_id=step_id,
                    version=version,
                    content="draft",
                    created_at=posted,
                )
            )
            s.add(
                models.AuditEntry(
                    at=posted + timedelta(minutes=waited),
                    actor="shell:editor",
                    action=action,
                    run_id=runs[run].id,
                    detail={"version": version},
                )
            )
        for agent, model, latency, cost, error, at in [
            ("researcher", "gpt-4o-mini", 100, 0.1, None, ago(hours=5)),
            ("researcher", "gpt-4o-mini", 200, 0.1, None, ago(hours=4)),
            ("researcher", "gpt-4o-mini", 300, 0.1, None, ago(hours=3)),
            ("researcher", "gpt-4o-mini", 400, 0.05, None, ago(hours=1)),
            ("writer", "local-llama", 1000, 0.0, None, ago(hours=2)),
            ("writer", "local-llama", 0, 0.0, "HTTP 500 from provider", ago(hours=2)),
            ("writer", "gpt-4o-mini", 5000, 0.9, None, ago(hours=30)),
        ]:
            s.add(
                models.LLMCall(
                    agent=agent,
                    provider="openai",
                    model=model,
                    input_tokens=100,
                    output_tokens=50,
                    cost_usd=cost,
                    latency_ms=latency,
                    error=error,
                    created_at=at,
                )
            )
        s.add(models.JobRun(job="digest", period="p", started_at=ago(hours=1)))


def test_the_digest_reports_every_figure_of_the_window_against_the_one_before(
    db_url: str,
) -> None:
    db = Database(db_url)
    db.upgrade()
    seed(db)
    config = make_config({"budgets": {"per_day_usd": 10}})
    with db.read() as s:
        d = digest.build(s, config, NOW, timedelta(hours=24))
    db.dispose()

    assert d["quiet"] is False and d["window"] == "24h"
    blog, brief = d["workflows"]
    assert blog["name"] == "blog-post"
    assert blog["now"] == {
        "started": 6,
        "succeeded": 1,
        "failed": 1,
        "rejected": 1,
        "cancelled": 1,
        "running": 1,
        "awaiting_approval": 1,
        "stuck": 1,  # running, unchanged for 2h (stuck-run after 30m)
    }
    assert blog["before"]["started"] == 1 and blog["before"]["succeeded"] == 1
    assert brief["now"]["started"] == 1 and brief["now"]["succeeded"] == 1
    assert brief["before"]["started"] == 2 and brief["before"]["failed"] == 1
    assert d["totals"]["now"]["started"] == 7 and d["totals"]["before"]["started"] == 3

    approvals = d["approvals"]
    assert approvals["pending"] == 1 and approvals["oldest_wait_s"] == 3 * 3600
    assert (approvals["decided"], approvals["approved"], approvals["sent_back"]) == (4, 2, 1)
    assert (approvals["approve_rate"], approvals["revise_rate"], approvals["reject_rate"]) == (
        0.5,
        0.25,
        0.25,
    )
    assert approvals["median_s"] == 20 * 60 and approvals["p90_s"] == 40 * 60

    spend = d["spend"]
    assert spend["usd"] == pytest.approx(0.35) and spend["budget_usd"] == 10
    assert spend["unpriced"] == ["local-llama"]
    by_model = {m["model"]: m for m in spend["models"]}
    assert by_model["gpt-4o-mini"]["calls"] == 4 and by_model["gpt-4o-mini"]["priced"]
    assert by_model["local-llama"]["calls"] == 2 and not by_model["local-llama"]["priced"]
    assert spend["tokens"] == 6 * 150
    assert d["llm"] == {"calls": 6, "failed": 1}

    assert d["latency"] == [
        {"agent": "researcher", "calls": 4, "p50_ms": 200, "p95_ms": 400},
        {"agent": "writer", "calls": 1, "p50_ms": 1000, "p95_ms": 1000},
    ]
    assert d["errors"] == [
        {"cause": "HTTP 500 from provider", "count": 1},
        {"cause": "budget: daily cap reached", "count": 1},
    ]
    assert [(r["workflow"], r["cost_usd"]) for r in d["costliest"]] == [
        ("blog-post", 0.3),
        ("research-brief", 0.05),
        ("blog-post", 0.02),
    ]
    assert d["jobs"] == [{"job": "digest", "ago_s": 3600}]
    assert len(d["runs_spark"]) == digest.BUCKETS and "█" in d["runs_spark"]


def test_the_rendered_digest_flags_unpriced_models_and_compares_with_the_day_before(
    db_url: str,
) -> None:
    db = Database(db_url)
    db.upgrade()
    seed(db)
    config = make_config()
    shell = Renderer("shell", lambda who: "@" + who)
    slack = Renderer("slack", lambda who: f"<@{who}>")
    with db.read() as s:
        busy = digest.build(s, config, NOW, timedelta(hours=24))
    db.dispose()
    text = shell.render("digest", busy)
    assert "local-llama: 2 calls · 200 in / 100 out · price unknown" in text
    assert "gpt-4o-mini: 4 calls · 400 in / 200 out · $0.3500" in text
    assert "runs started: 7 (was 3)" in text
    assert "time to decision median 20m 00s, p90 40m 00s" in text
    assert "researcher 200 / 400 ms" in text
    assert "approvals waiting: 1 (oldest 3h 00m)" in text
    assert "_price unknown_" in slack.render("digest", busy)


def test_sparklines_scale_to_the_largest_value() -> None:
    assert digest.sparkline([0, 1, 2, 4]) == "▁▃▅█"
    assert digest.sparkline([0, 0]) == "▁▁"


def test_a_workflow_name_cannot_ping_or_forge_links_in_the_slack_digest() -> None:
    slack = Renderer("slack", lambda who: f"<@{who}>")
    context = digest.build.__globals__["_counts"]({})
    d: dict[str, Any] = {
        "window": "24h",
        "since": "s",
        "until": "u",
        "quiet": False,
        "totals": {"now": context, "before": context},
        "workflows": [{"name": "<!channel> <http://x|y>", "now": context, "before": context}],
        "runs_spark": "▁",
        "approvals": {"pending": 0, "oldest_wait_s": None, "decided": 0},
        "spend": {"usd": 0.0, "budget_usd": None, "tokens": 0, "models": [], "spark": "▁"},
        "llm": {"calls": 0, "failed": 0},
        "latency": [],
        "errors": [{"cause": "<@U123> broke it", "count": 1}],
        "alerts": {"fired": 0, "acknowledged": 0, "resolved": 0},
        "prompts": [],
        "costliest": [],
        "jobs": [],
    }
    text = slack.render("digest", d)
    assert "<!channel>" not in text and "<http" not in text and "<@U123>" not in text
    assert "&lt;!channel&gt;" in text


@pytest.fixture
def ops_bot(bot_factory: Any) -> Bot:
    bot: Bot = bot_factory({"ops": {"channels": ["shell:ops"]}})
    return bot


async def test_a_scheduled_digest_posts_to_the_ops_channel_once_per_period(ops_bot: Bot) -> None:
    app = ops_bot.app
    async with app.running():
        await ops_bot.type("/crew run research-brief solar")
        await ops_bot.wait()
        now = datetime.now(UTC)
        first = await app.db.call(digest.run_scheduled, app.db, app.config, now, "2026-12-03T09:00")
        again = await app.db.call(digest.run_scheduled, app.db, app.config, now, "2026-12-03T09:00")
        await app.wait_idle()
    await app.aclose()
    assert (first, again) == (True, False)
    posts = ops_bot.messages("digest")
    assert [(m.platform, m.channel) for m in posts] == [("shell", "ops")]
    assert ops_bot.transcript.count("digest · last 24h") == 1
    assert "research-brief: started 1" in ops_bot.transcript
    assert [(r.job, r.period) for r in ops_bot.rows(models.JobRun)] == [
        ("digest", "2026-12-03T09:00")
    ]


async def test_crew_digest_says_quiet_in_one_line_takes_a_window_and_refuses_a_bad_one(
    bot: Bot,
) -> None:
    out = await bot.type("/crew digest")
    assert "quiet: no runs, no model calls and no drafts waiting in the last 24h" in out
    assert "spend" not in out and "runs started" not in out
    await bot.type("/crew run research-brief solar")
    await bot.wait()
    out = await bot.type("/crew digest 7d")
    assert "digest · last 7d" in out and "research-brief: started 1" in out
    out = await bot.type("/crew digest soon")
    assert "'soon' is not a duration" in out and "usage: /crew digest [window]" in out
    for huge in ("400000d", "99999999999d"):  # once an OverflowError: now an answer
        out = await bot.type(f"/crew digest {huge}")
        assert "between 1m and 366d" in out or "too long a duration" in out


def test_the_digest_compares_prompt_versions_by_decisions_time_and_cost(db_url: str) -> None:
    db = Database(db_url)
    db.upgrade()
    with db.transaction() as s:
        for n, (version, action, waited, cost) in enumerate(
            [
                ("aaaa1111", "draft.sent_back", 10, 0.01),
                ("aaaa1111", "draft.approved", 30, 0.01),
                ("bbbb2222", "draft.approved", 5, 0.004),
                ("bbbb2222", "draft.approved", 15, 0.004),
            ]
        ):
            run = models.Run(
                workflow="blog-post",
                text="t",
                requester="shell:a",
                platform="shell",
                channel="shell",
                created_at=ago(hours=5),
            )
            s.add(run)
            s.flush()
            step = models.Step(run_id=run.id, position=1, name="draft", agent="writer")
            s.add(step)
            s.flush()
            posted = ago(hours=4 - n)
            s.add(
                models.DraftVersion(
                    run_id=run.id,
                    step_id=step.id,
                    version=1,
                    content="d",
                    prompt_version=version,
                    created_at=posted,
                )
            )
            s.add(
                models.AuditEntry(
                    at=posted + timedelta(minutes=waited),
                    actor="shell:editor",
                    action=action,
                    run_id=run.id,
                    detail={"version": 1},
                )
            )
            for agent, prompt in (("writer", version), ("researcher", "cccc3333")):
                s.add(
                    models.LLMCall(
                        run_id=run.id,
                        agent=agent,
                        provider="openai",
                        model="gpt-4o-mini",
                        cost_usd=cost,
                        prompt_version=prompt,
                        created_at=posted,
                    )
                )
    with db.read() as s:
        d = digest.build(s, make_config(), NOW, timedelta(hours=24))
    db.dispose()
    assert d["prompts"] == [
        {
            "agent": "writer",
            "version": "aaaa1111",
            "calls": 2,
            "cost_usd": 0.02,
            "decided": 2,
            "approve_rate": 0.5,
            "revise_rate": 0.5,
            "median_decision_s": 600,
        },
        {
            "agent": "writer",
            "version": "bbbb2222",
            "calls": 2,
            "cost_usd": 0.008,
            "decided": 2,
            "approve_rate": 1.0,
            "revise_rate": 0.0,
            "median_decision_s": 300,
        },
    ], "the researcher ran one version only: nothing to compare"
    text = Renderer("shell", lambda who: who).render("digest", d)
    assert "writer bbbb2222: 2 calls · $0.0080 · 2 decided · approved 100% · sent back 0%" in text
    assert "median 5m 00s to decide" in text


async def test_each_model_call_and_draft_records_its_prompt_version(bot_factory: Any) -> None:
    from agents.prompts import prompt_version

    custom = {"agents": {"writer": {"role": "writer", "prompt": "Write on {{ topic }}."}}}
    for run_id, config in enumerate((None, custom), start=1):
        bot: Bot = bot_factory(config)  # the same database: run 1, then run 2
        async with bot.app.running():
            await bot.type("/crew run blog-post heat pumps")
            await bot.wait()
        await bot.app.aclose()
        agents = bot.app.config.agents
        writer = prompt_version(agents["writer"])
        calls = {
            (c.agent, c.prompt_version) for c in bot.rows(models.LLMCall) if c.run_id == run_id
        }
        assert ("researcher", prompt_version(agents["researcher"])) in calls
        assert ("writer", writer) in calls
        drafts = [d for d in bot.rows(models.DraftVersion) if d.run_id == run_id]
        assert {d.prompt_version for d in drafts} == {writer}
    assert prompt_version(make_config().agents["writer"]) != prompt_version(
        make_config(custom).agents["writer"]
    )
    assert len(prompt_version(make_config().agents["writer"])) == 8
