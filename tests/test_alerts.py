"""Alerts in the ops channel, as the on-call person lives them: a failing workflow raises an
alert that fires after `for`, repeats, escalates, is acknowledged or silenced in chat, and
resolves after `keep_firing_for`, all on the clock the test moves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from agents import digest
from agents.alert_rules import conditions
from agents.alerts import run_evaluation
from storage import models
from tests.conftest import Bot, FakeClock, make_config

OPS = {
    "ops": {"channels": ["shell:ops"]},
    "admins": ["shell:admin"],
    "roles": {"oncall": ["shell:olga"]},
    "alerts": {"on_call": "role:oncall", "rules": {"missed-job": {"enabled": False}}},
}


def ops_config(**alerts: Any) -> dict[str, Any]:
    return {**OPS, "alerts": {**OPS["alerts"], **alerts}}


def failed_runs(bot: Bot, n: int, workflow: str = "blog-post") -> None:
    assert bot.clock is not None
    with bot.app.db.transaction() as s:
        for i in range(n):
            at = bot.clock() - timedelta(minutes=1)
            s.add(
                models.Run(
                    workflow=workflow,
                    text=f"run {i}",
                    requester="shell:alice",
                    platform="shell",
                    channel="shell",
                    status="failed",
                    created_at=at,
                    updated_at=at,
                    finished_at=at,
                )
            )


async def evaluate(bot: Bot) -> None:
    assert bot.clock is not None
    now = bot.clock()
    app = bot.app
    assert await app.db.call(run_evaluation, app.db, app.crew.alerts, now, now.isoformat())
    await app.wait_idle()


def alerts(bot: Bot) -> list[models.Alert]:
    return bot.rows(models.Alert)


def outbox_edits(bot: Bot) -> int:
    return sum(1 for row in bot.rows(models.Outbox) if row.kind == "update")


async def test_a_failing_workflow_goes_pending_then_firing_then_resolved(
    bot_factory: Any,
) -> None:
    clock = FakeClock()
    bot: Bot = bot_factory(OPS, clock=clock)
    async with bot.app.running():
        failed_runs(bot, 3)
        await evaluate(bot)
        assert [a.state for a in alerts(bot)] == ["pending"]
        clock.advance(minutes=4)
        await evaluate(bot)
        assert bot.messages("alert") == [], "pending alerts post nothing"

        clock.advance(minutes=1)  # `for: 5m` has passed
        await evaluate(bot)
        assert [a.state for a in alerts(bot)] == ["firing"]
        [card] = bot.messages("alert")
        assert (card.platform, card.channel) == ("shell", "ops")
        assert "🔴 alert 1 · failure-rate · workflow=blog-post · firing" in bot.transcript
        assert "3 of 3 blog-post runs failed in the last 1h (100%)" in bot.transcript

        clock.advance(minutes=10)
        await evaluate(bot)
        assert len(bot.messages("alert")) == 1 and bot.messages("alert_update") == []

        clock.advance(minutes=43)  # the failures are 59m old: still in the 1h window
        await evaluate(bot)
        clock.advance(minutes=2)  # now they are not: clear, but it keeps firing for 10m
        await evaluate(bot)
        assert [a.state for a in alerts(bot)] == ["firing"]
        clock.advance(minutes=7)  # clear for 9m
        await evaluate(bot)
        assert [a.state for a in alerts(bot)] == ["firing"]
        clock.advance(minutes=1)  # clear for 10m
        await evaluate(bot)
    await bot.app.aclose()

    [alert] = alerts(bot)
    assert alert.state == "resolved"
    replies = bot.messages("alert_update")
    assert [r.thread_of for r in replies] == [card.id, card.id]
    assert "📣 @olga: alert 1 has fired for 53m 00s and nobody has acknowledged it" in (
        bot.transcript
    )
    assert "✅ alert 1 resolved after 1h 03m" in bot.transcript
    assert f"#{card.id} edited ✅ alert 1 · failure-rate · workflow=blog-post · resolved" in (
        bot.transcript
    )
    assert outbox_edits(bot) == 1


async def test_people_acknowledge_and_silence_an_alert_that_repeats_and_escalates(
    bot_factory: Any,
) -> None:
    clock = FakeClock()
    config = ops_config(repeat_interval="1h", escalate_after="30m")
    config["alerts"]["rules"] = {"failure-rate": {"for": 0}, "missed-job": {"enabled": False}}
    bot: Bot = bot_factory(config, clock=clock, user="bob")
    async with bot.app.running():
        failed_runs(bot, 3)
        await evaluate(bot)
        [card] = bot.messages("alert")
        clock.advance(minutes=31)
        failed_runs(bot, 3)  # still failing
        await evaluate(bot)
        assert "📣 @olga: alert 1 has fired for 31m 00s and nobody has acknowledged it" in (
            bot.transcript
        )
        clock.advance(minutes=30)
        failed_runs(bot, 3)
        await evaluate(bot)
        assert "🔁 still firing after 1h 01m" in bot.transcript
        assert len(bot.messages("alert_update")) == 2  # one escalation, one repeat

        out = await bot.type(f"react #{card.id} 🔕")
        await bot.wait()
        assert "only admins, the on-call people and the ops role may silence alerts" in (
            bot.transcript
        )
        assert len(bot.audit("alert.silence.refused")) == 1

        await bot.type(f"react #{card.id} 👀")
        await bot.wait()
        assert "👀 acknowledged by @bob" in bot.transcript
        clock.advance(hours=2)
        failed_runs(bot, 3)
        await evaluate(bot)
        assert len(bot.messages("alert_update")) == 3, "acknowledged: no repeat, no escalation"

        out = await bot.type("/crew silence 1 2h deploying a fix")
        assert "you may not run silence" in out
        bot.act_as("olga")
        out = await bot.type("/crew silence #" + str(card.id) + " 2h deploying a fix")
        assert "alert 1 silenced until" in out
        await bot.wait()
        assert "🔕 silenced by @olga until" in bot.transcript and ": deploying a fix" in (
            bot.transcript
        )
        out = await bot.type("/crew alerts")
        assert "alert 1 · failure-rate · workflow=blog-post · firing for 3h 01m" in out
        assert "acknowledged by shell:bob · silenced by shell:olga until" in out
        out = await bot.type("/crew silence 7 1h")
        assert "there is no alert 7" in out
    await bot.app.aclose()
    [alert] = alerts(bot)
    assert (alert.acknowledged_by, alert.silenced_by) == ("shell:bob", "shell:olga")
    assert alert.silence_reason == "deploying a fix"


async def test_a_restart_in_the_middle_of_a_firing_alert_posts_nothing_twice(
    bot_factory: Any,
) -> None:
    clock = FakeClock()
    config = ops_config()
    config["alerts"]["rules"] = {
        "failure-rate": {"for": 0, "keep_firing_for": 0},
        "missed-job": {"enabled": False},
    }
    first: Bot = bot_factory(config, clock=clock)
    async with first.app.running():
        failed_runs(first, 3)
        await evaluate(first)
    await first.app.aclose()
    assert len(first.messages("alert")) == 1

    second: Bot = bot_factory(config, clock=clock)
    async with second.app.running():
        clock.advance(minutes=5)
        await evaluate(second)
        assert len(second.messages("alert")) == 1
        assert [a.state for a in alerts(second)] == ["firing"]
        clock.advance(hours=1)
        await evaluate(second)
    await second.app.aclose()
    assert [a.state for a in alerts(second)] == ["resolved"]
    assert len(second.messages("alert")) == 1 and len(second.messages("alert_update")) == 1
    assert "✅ alert 1 resolved after 1h 05m" in second.transcript


async def test_a_missed_digest_raises_an_alert_until_the_digest_runs(bot_factory: Any) -> None:
    clock = FakeClock()
    clock.now = datetime(2026, 12, 3, 8, 50, tzinfo=UTC)
    config = ops_config(evaluate_every="15m")  # evaluations 15 minutes apart are not missed
    config["alerts"]["rules"] = {}
    config["digest"] = {"schedule": "0 9 * * *"}
    bot: Bot = bot_factory(config, clock=clock)
    async with bot.app.running():
        await evaluate(bot)  # the scheduler is alive before the digest is due
        clock.advance(minutes=15)  # 09:05: within the 10m grace
        await evaluate(bot)
        assert alerts(bot) == []
        clock.advance(minutes=10)  # 09:15: no digest ran for 09:00
        await evaluate(bot)
        [alert] = alerts(bot)
        assert (alert.rule, alert.state) == ("missed-job", "firing")
        assert "the digest due at 2026-12-03 09:00 UTC did not run" in bot.transcript
        app = bot.app
        await app.db.call(
            digest.run_scheduled, app.db, app.config, clock(), "2026-12-03T09:00+00:00"
        )
        await app.wait_idle()
        clock.advance(minutes=1)
        await evaluate(bot)
    await bot.app.aclose()
    assert [a.state for a in alerts(bot)] == ["resolved"]


async def test_a_gap_in_alert_evaluation_is_said_once_then_resolves(bot_factory: Any) -> None:
    clock = FakeClock()
    clock.now = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
    config = ops_config()  # evaluated every minute, 10 minutes of grace
    config["alerts"]["rules"] = {}
    bot: Bot = bot_factory(config, clock=clock)
    async with bot.app.running():
        await evaluate(bot)
        clock.advance(minutes=11)  # within one interval plus the grace: not missed
        await evaluate(bot)
        assert alerts(bot) == []
        clock.advance(minutes=40)  # the bot was down, say
        await evaluate(bot)
        [alert] = alerts(bot)
        assert (alert.rule, alert.state) == ("missed-job", "firing")
        assert "alerts were not evaluated for 40m (from 2026-12-03 08:11 UTC)" in bot.transcript
        clock.advance(minutes=1)
        await evaluate(bot)
    await bot.app.aclose()
    assert [a.state for a in alerts(bot)] == ["resolved"]


def test_every_rule_names_what_it_measures(db_url: str) -> None:
    from storage.db import Database

    db = Database(db_url)
    db.upgrade()
    now = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    config = make_config({"budgets": {"per_day_usd": 1.0}})
    with db.transaction() as s:
        stuck = models.Run(
            workflow="blog-post",
            text="t",
            requester="shell:a",
            platform="shell",
            channel="shell",
            status="running",
            created_at=now - timedelta(hours=2),
            updated_at=now - timedelta(hours=1),
        )
        waiting = models.Run(
            workflow="research-brief",
            text="t",
            requester="shell:a",
            platform="shell",
            channel="shell",
            status="awaiting_approval",
        )
        s.add(stuck)
        s.add(waiting)
        s.flush()
        s.add(
            models.Step(
                run_id=waiting.id,
                position=0,
                name="draft",
                agent="writer",
                status="awaiting_approval",
                awaiting_since=now - timedelta(hours=5),
            )
        )
        for i in range(5):
            s.add(
                models.LLMCall(
                    agent="writer",
                    provider="openai",
                    model="gpt-4o",
                    cost_usd=0.2,
                    error="HTTP 500" if i < 2 else None,
                    created_at=now - timedelta(minutes=5),
                )
            )
        s.add(
            models.Outbox(
                key="k",
                kind="post",
                platform="slack",
                channel="C1",
                order_key="k",
                template="notice",
                created_at=now - timedelta(minutes=20),
            )
        )
    with db.read() as s:
        found = {c.key: c.summary for c in conditions(s, config, now)}
    db.dispose()
    assert found == {
        "stuck-run{workflow=blog-post}": "1 blog-post run unchanged for over 30m",
        "approval-sla{workflow=research-brief}": (
            "1 research-brief draft waiting for approval for over 4h"
        ),
        "budget-burn{}": "$1.00 spent today of the $1.00 daily budget (100%)",
        "llm-errors{model=gpt-4o}": "2 of 5 calls to gpt-4o failed in the last 15m (40%)",
        "undelivered{platform=slack}": (
            "1 message to slack not delivered (waiting over 15m or given up)"
        ),
    }
    quiet = make_config({"alerts": {"rules": {"stuck-run": {"enabled": False}}}})
    with Database(db_url).read() as s:
        assert "stuck-run{workflow=blog-post}" not in {c.key for c in conditions(s, quiet, now)}


async def test_llm_errors_inhibit_the_failure_rate_alerts_they_explain(bot_factory: Any) -> None:
    clock = FakeClock()
    config = ops_config()
    config["alerts"]["rules"] = {
        "failure-rate": {"for": 0, "keep_firing_for": 0},
        "llm-errors": {"keep_firing_for": 0},
        "missed-job": {"enabled": False},
    }
    bot: Bot = bot_factory(config, clock=clock)
    async with bot.app.running():
        with bot.app.db.transaction() as s:
            for _ in range(5):
                s.add(
                    models.LLMCall(
                        agent="writer",
                        provider="openai",
                        model="gpt-4o-mini",
                        error="HTTP 500 from the provider",
                        created_at=clock() - timedelta(minutes=1),
                    )
                )
        failed_runs(bot, 3)
        await evaluate(bot)
        [card] = bot.messages("alert")  # one card: the provider's
        assert [(a.id, a.rule, a.state) for a in alerts(bot)] == [
            (1, "failure-rate", "firing"),
            (2, "llm-errors", "firing"),
        ]
        assert "alert 2 · llm-errors · model=gpt-4o-mini · firing" in bot.transcript
        assert "alert 1 · failure-rate" not in bot.transcript
        assert "also explains (not posted on their own):" in bot.transcript
        assert "· 3 of 3 blog-post runs failed in the last 1h (100%)" in bot.transcript

        clock.advance(minutes=20)  # the model errors left their 15m window; runs still fail
        failed_runs(bot, 3)
        await evaluate(bot)
    await bot.app.aclose()
    states = {a.rule: a.state for a in alerts(bot)}
    assert states == {"llm-errors": "resolved", "failure-rate": "firing"}
    cards = bot.messages("alert")
    assert len(cards) == 2 and cards[0].id == card.id
    assert "alert 1 · failure-rate · workflow=blog-post · firing" in bot.transcript


async def test_a_flapping_alert_holds_its_resolution(bot_factory: Any) -> None:
    clock = FakeClock()
    config = ops_config()
    config["alerts"]["rules"] = {
        "stuck-run": {"after": "1m", "for": 0, "keep_firing_for": 0},
        "missed-job": {"enabled": False},
    }
    bot: Bot = bot_factory(config, clock=clock)

    def stuck(yes: bool) -> None:
        with bot.app.db.transaction() as s:
            run = s.get(models.Run, 1)
            if run is None:
                run = models.Run(
                    workflow="blog-post",
                    text="t",
                    requester="shell:alice",
                    platform="shell",
                    channel="shell",
                )
            run.status = "running" if yes else "succeeded"
            run.updated_at = clock() - timedelta(minutes=5)
            s.add(run)

    async with bot.app.running():
        for _ in range(2):  # fires and clears twice: resolved each time
            stuck(True)
            await evaluate(bot)
            clock.advance(minutes=1)
            stuck(False)
            await evaluate(bot)
            clock.advance(minutes=1)
        assert [a.state for a in alerts(bot)] == ["resolved", "resolved"]

        stuck(True)  # the third time within the hour: flapping
        await evaluate(bot)
        assert "↯ flapping: it keeps firing and clearing" in bot.transcript
        clock.advance(minutes=1)
        stuck(False)
        await evaluate(bot)
        assert [a.state for a in alerts(bot)][-1] == "firing", "its resolution is held"
        clock.advance(minutes=58)  # last seen 59m ago
        await evaluate(bot)
        assert [a.state for a in alerts(bot)][-1] == "firing"
        clock.advance(minutes=1)  # an hour
        await evaluate(bot)
    await bot.app.aclose()
    assert [a.state for a in alerts(bot)] == ["resolved", "resolved", "resolved"]
    assert len(bot.messages("alert")) == 3


async def test_alerts_firing_in_one_evaluation_share_one_card_per_ops_channel(
    bot_factory: Any,
) -> None:
    clock = FakeClock()
    config = ops_config(escalate_after="30m", repeat_interval="1h")
    config["ops"] = {"channels": ["shell:ops", "shell:ops2"]}
    config["alerts"]["rules"] = {
        "failure-rate": {"for": 0, "keep_firing_for": 0},
        "missed-job": {"enabled": False},
    }
    bot: Bot = bot_factory(config, clock=clock, user="bob")
    async with bot.app.running():
        failed_runs(bot, 3)
        failed_runs(bot, 3, workflow="research-brief")
        await evaluate(bot)
        cards = bot.messages("alert")
        assert [(c.platform, c.channel) for c in cards] == [("shell", "ops"), ("shell", "ops2")]
        assert [c.thread_of for c in cards] == [None, None], "each card is a top-level post"
        assert [a.group_id for a in alerts(bot)] == [1, 1], "both rows point at the one card"
        assert bot.transcript.count("🔴 alerts 1, 2 · fired together · firing") == 2
        assert bot.transcript.count("🔴 alert 1 · failure-rate · workflow=blog-post · firing") == 2
        assert bot.transcript.count("🔴 alert 2 · failure-rate · workflow=research-brief") == 2
        assert "3 of 3 research-brief runs failed in the last 1h (100%)" in bot.transcript
        assert "react 👀 to acknowledge them all" in bot.transcript

        clock.advance(minutes=31)  # nobody acknowledged: one escalation per card, naming both
        failed_runs(bot, 3)
        failed_runs(bot, 3, workflow="research-brief")
        await evaluate(bot)
        escalations = bot.messages("alert_update")
        assert [r.thread_of for r in escalations] == [c.id for c in cards]
        assert (
            bot.transcript.count(
                "📣 @olga: alerts 1, 2 have fired for 31m 00s and nobody has acknowledged them:"
            )
            == 2
        )

        clock.advance(minutes=30)  # and one repeat per card
        failed_runs(bot, 3)
        failed_runs(bot, 3, workflow="research-brief")
        await evaluate(bot)
        assert len(bot.messages("alert_update")) == 4
        assert bot.transcript.count("🔁 still firing after 1h 01m:") == 2

        await bot.type(f"react #{cards[0].id} 👀")  # on one card: acknowledges both alerts
        await bot.wait()
        assert [a.acknowledged_by for a in alerts(bot)] == ["shell:bob", "shell:bob"]
        assert bot.transcript.count("👀 acknowledged by @bob (alerts 1, 2)") == 2
        assert f"#{cards[1].id} edited 🔴 alerts 1, 2 · fired together · firing" in (bot.transcript)

        clock.advance(minutes=61)  # research-brief stopped failing an hour ago; blog-post not
        failed_runs(bot, 3)
        before = bot.transcript
        await evaluate(bot)
    await bot.app.aclose()

    assert [a.state for a in alerts(bot)] == ["firing", "resolved"]
    assert bot.messages("alert") == cards, "no new card: the shared one is edited"
    after = bot.transcript[len(before) :]
    for card in cards:
        assert f"#{card.id} edited 🔴 alerts 1, 2 · fired together · firing" in after
    assert after.count("✅ alert 2 · failure-rate · workflow=research-brief · resolved after") == 2
    assert after.count("🔴 alert 1 · failure-rate · workflow=blog-post · firing") == 2
    assert after.count("✅ alert 2 resolved after 2h 02m, acknowledged by @bob") == 2
    replies = bot.messages("alert_update")
    assert len(replies) == 8 and {r.thread_of for r in replies} == {c.id for c in cards}


async def test_a_card_of_one_alert_stays_its_own_when_another_fires_later(
    bot_factory: Any,
) -> None:
    clock = FakeClock()
    config = ops_config()
    config["alerts"]["rules"] = {"failure-rate": {"for": 0}, "missed-job": {"enabled": False}}
    bot: Bot = bot_factory(config, clock=clock)
    async with bot.app.running():
        failed_runs(bot, 3)
        await evaluate(bot)
        clock.advance(minutes=1)
        failed_runs(bot, 3, workflow="research-brief")
        await evaluate(bot)
        await bot.type(f"react #{bot.messages('alert')[0].id} 👀")
        await bot.wait()
    await bot.app.aclose()
    assert len(bot.messages("alert")) == 2
    assert "alerts 1, 2" not in bot.transcript
    assert "🔴 alert 2 · failure-rate · workflow=research-brief · firing" in bot.transcript
    assert [a.acknowledged_by for a in alerts(bot)] == ["shell:alice", None]


async def test_the_acknowledgers_next_reply_in_the_thread_is_kept_as_a_note(
    bot_factory: Any,
) -> None:
    clock = FakeClock()
    config = ops_config()
    config["alerts"]["rules"] = {"failure-rate": {"for": 0}, "missed-job": {"enabled": False}}
    bot: Bot = bot_factory(config, clock=clock, user="ana")
    async with bot.app.running():
        failed_runs(bot, 3)
        await evaluate(bot)
        [card] = bot.messages("alert")
        await bot.type(f"reply #{card.id} is anyone on this?")  # before the 👀: chatter
        await bot.wait()
        bot.act_as("bob")
        await bot.type(f"reply #{card.id} looking")
        bot.act_as("ana")
        await bot.type(f"react #{card.id} 👀")
        await bot.wait()
        [ack] = bot.messages("alert_update")
        bot.act_as("bob")
        await bot.type(f"reply #{card.id} not me")  # someone else, after the 👀
        await bot.wait()
        assert [a.note for a in alerts(bot)] == [None]
        bot.act_as("ana")
        # in the thread, even as a reply to the bot's reply there
        await bot.type(f"reply #{ack.id} restarting the provider <@U1> [x](https://evil)")
        await bot.wait()
        await bot.type(f"reply #{card.id} and a second thought")  # only the next one counts
        await bot.wait()
        assert (
            f"#{card.id} edited 🔴 alert 1 · failure-rate · workflow=blog-post · firing"
            in bot.transcript
        )
        assert "📝 note by @ana: restarting the provider <@U1> [x](https://evil)" in (
            bot.transcript
        )
        out = await bot.type("/crew alerts")
        assert "📝 note by shell:ana: restarting the provider" in out
    await bot.app.aclose()
    [alert] = alerts(bot)
    assert alert.note == "restarting the provider <@U1> [x](https://evil)"
    assert alert.noted_at is not None
    assert "second thought" not in bot.transcript.split("📝 note by @ana:")[-1].splitlines()[0]
    assert len(bot.audit("alert.noted")) == 1
    assert len(bot.messages("alert_update")) == 1, "a note is shown on the card, not replied to"


async def test_a_note_on_a_shared_card_goes_to_each_alert_it_acknowledged(
    bot_factory: Any,
) -> None:
    clock = FakeClock()
    config = ops_config()
    config["alerts"]["rules"] = {"failure-rate": {"for": 0}, "missed-job": {"enabled": False}}
    bot: Bot = bot_factory(config, clock=clock, user="ana")
    async with bot.app.running():
        failed_runs(bot, 3)
        failed_runs(bot, 3, workflow="research-brief")
        await evaluate(bot)
        [card] = bot.messages("alert")
        await bot.type(f"react #{card.id} 👀")
        await bot.wait()
        await bot.type(f"reply #{card.id} restarting the provider")
        await bot.wait()
        edited = bot.transcript.split(f"#{card.id} edited")[-1]
        assert edited.count("📝 note by @ana: restarting the provider") == 2
        bot.act_as("olga")
        out = await bot.type(f"/crew silence #{card.id} 2h deploying a fix")
        assert "silenced until" in out
        await bot.wait()
    await bot.app.aclose()
    assert [a.note for a in alerts(bot)] == ["restarting the provider"] * 2
    assert [a.silenced_by for a in alerts(bot)] == ["shell:olga"] * 2
    assert "🔕 silenced by @olga until" in bot.transcript and "(alerts 1, 2): deploying a fix" in (
        bot.transcript
    )
