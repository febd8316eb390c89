"""The digest's chart (runs and spend per day): its figures from the database, the PNG, and
where it goes: into the digest's thread on Slack, attached to the digest on Discord, written
to a file in the terminal. A chart that cannot be drawn or uploaded never holds the text back."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agents import digest
from bot import chart
from bot.platforms.base import Delivery
from storage import models
from storage.db import Database
from tests.conftest import Bot, make_config
from tests.fakes.discord_api import OPS_CHANNEL_ID, FakeDiscord, running_fake_discord
from tests.fakes.slack_api import FakeSlack, fake_slack
from tests.test_cli import crewchief
from tests.test_discord import build as build_discord
from tests.test_discord import discord_env
from tests.test_slack import CHANNEL, build, seen, slack_env

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
OPS = {"ops": {"channels": [f"slack:{CHANNEL}"]}}


def seed(db: Database, now: datetime) -> None:
    """Runs and model spend a minute before `now` (2 runs), a day before (1) and three days
    before (3)."""
    with db.transaction() as s:
        for days_ago, runs, cost in [(0, 2, 0.25), (1, 1, 0.5), (3, 3, 0.125)]:
            at = now - timedelta(days=days_ago, minutes=1)
            for i in range(runs):
                s.add(
                    models.Run(
                        workflow="blog-post",
                        text=f"run {i}",
                        requester="shell:alice",
                        platform="shell",
                        channel="shell",
                        status="succeeded",
                        created_at=at,
                        updated_at=at,
                    )
                )
            s.add(
                models.LLMCall(
                    agent="writer",
                    provider="openai",
                    model="gpt-4o-mini",
                    cost_usd=cost,
                    created_at=at,
                )
            )


def is_png(data: bytes | None) -> bool:
    return data is not None and data.startswith(chart.PNG_SIGNATURE) and len(data) > 5_000


def test_the_chart_shows_runs_and_spend_per_utc_day_over_at_least_a_week(db_url: str) -> None:
    db = Database(db_url)
    db.upgrade()
    config = make_config()
    with db.read() as s:
        assert digest.build(s, config, NOW, timedelta(hours=24))["chart"] is None, "nothing yet"
    seed(db, NOW)
    with db.read() as s:
        day = digest.build(s, config, NOW, timedelta(hours=24))["chart"]
        month = digest.build(s, config, NOW, timedelta(days=30))["chart"]
        year = digest.build(s, config, NOW, timedelta(days=366))["chart"]
    db.dispose()
    assert day["days"] == [f"2026-11-{d}" for d in range(27, 31)] + [
        "2026-12-01",
        "2026-12-02",
        "2026-12-03",
    ]
    assert day["runs"] == [0, 0, 0, 3, 0, 1, 2]
    assert day["spend_usd"] == [0.0, 0.0, 0.0, 0.125, 0.0, 0.5, 0.25]
    assert len(month["days"]) == 30 and month["runs"][-7:] == day["runs"]
    assert len(year["days"]) == digest.CHART_DAYS[1]

    png = chart.render_png(day)
    assert is_png(png)
    assert chart.render_png(day) == png, "the same figures draw the same bytes"
    assert chart.filename(day) == "digest-2026-12-03.png"


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    from bot.platforms.slack import SCOPES

    async with fake_slack(channels=[CHANNEL], scopes=SCOPES) as fake:
        yield fake


async def test_the_scheduled_digest_uploads_its_chart_into_its_slack_thread(
    db_url: str, tmp_path: Path, slack: FakeSlack
) -> None:
    app, _ = build(slack_env(db_url, tmp_path, slack.api_url), OPS)
    now = models.utcnow()
    seed(app.db, now)
    async with app.running():
        assert await app.db.call(digest.run_scheduled, app.db, app.config, now, "p1")
        await app.wait_idle(timeout=30)
    await app.aclose()

    [post] = slack.top_level(CHANNEL)
    assert "digest · last 24h" in seen(post) and "runs started:* 2" in seen(post)
    [upload] = slack.uploads_in(CHANNEL)
    assert is_png(upload.content) and len(upload.content or b"") == upload.length
    assert upload.filename == f"digest-{now.date().isoformat()}.png"
    assert upload.title == chart.TITLE
    [shared] = slack.thread(CHANNEL, post.ts)
    assert [f["id"] for f in shared.files] == [upload.id]
    [complete] = [c for c in slack.calls_to("files.completeUploadExternal") if c.ok]
    assert (complete.args["channel_id"], complete.args["thread_ts"]) == (CHANNEL, post.ts)


def digest_delivery(app: Any, attempt: int = 1) -> Delivery:
    with app.db.read() as s:
        context = digest.build(s, app.config, models.utcnow(), timedelta(hours=24))
    return Delivery(
        kind="post",
        channel=CHANNEL,
        template="digest",
        context=context,
        key=f"post:digest:p1:slack:{CHANNEL}",
        attempt=attempt,
    )


async def test_a_retried_slack_digest_uploads_its_chart_once(
    db_url: str, tmp_path: Path, slack: FakeSlack
) -> None:
    """The bot died after posting the digest, before its chart: the retry finds the post,
    uploads the chart into its thread, and a further retry uploads nothing."""
    app, platform = build(slack_env(db_url, tmp_path, slack.api_url), OPS)
    seed(app.db, models.utcnow())
    first = digest_delivery(app)
    posted = await platform.client.chat_postMessage(
        channel=CHANNEL,
        text="digest",
        metadata={"event_type": "crewchief_outbox", "event_payload": {"key": first.key}},
    )
    again = await platform.deliver(digest_delivery(app, attempt=2))
    once_more = await platform.deliver(digest_delivery(app, attempt=3))
    await platform.aclose()
    await app.aclose()
    assert again == once_more == posted["ts"]
    assert len(slack.top_level(CHANNEL)) == 1
    [upload] = slack.uploads_in(CHANNEL)
    assert is_png(upload.content)
    assert len(slack.calls_to("files.getUploadURLExternal")) == 1


async def test_a_chart_slack_refuses_or_that_cannot_be_drawn_leaves_the_text_posted(
    db_url: str,
    tmp_path: Path,
    slack: FakeSlack,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, platform = build(slack_env(db_url, tmp_path, slack.api_url), OPS)
    seed(app.db, models.utcnow())
    caplog.set_level(logging.WARNING)
    slack.script_error("files.completeUploadExternal", "not_in_channel")
    refused = await platform.deliver(digest_delivery(app))
    assert refused is not None and slack.uploads_in(CHANNEL) == []
    assert "the digest's chart could not be uploaded to C0CONTENT1: not_in_channel" in caplog.text

    def broken(data: Any) -> bytes:
        raise RuntimeError("no fonts today")

    monkeypatch.setattr(chart, "render_png", broken)
    calls = len(slack.calls)
    undrawn = await platform.deliver(digest_delivery(app))
    await platform.aclose()
    await app.aclose()
    assert undrawn is not None
    post = slack.message(CHANNEL, undrawn)
    assert "digest · last 24h" in seen(post)
    assert "the chart of runs and spend per day could not be drawn this time" in seen(post)
    assert [c.method for c in slack.calls[calls:]] == ["chat.postMessage"], "no upload tried"
    assert "the digest's chart could not be drawn: RuntimeError: no fonts today" in caplog.text


@pytest.fixture
async def fake_discord() -> AsyncIterator[FakeDiscord]:
    async with running_fake_discord() as server:
        yield server


async def test_the_discord_digest_carries_its_chart_as_an_attachment(
    db_url: str, tmp_path: Path, fake_discord: FakeDiscord
) -> None:
    app, platform = build_discord(
        discord_env(db_url, tmp_path), {"ops": {"channels": [f"discord:{OPS_CHANNEL_ID}"]}}
    )
    now = models.utcnow()
    seed(app.db, now)
    async with app.running():
        await platform.start(ready_timeout=5)
        assert await app.db.call(digest.run_scheduled, app.db, app.config, now, "p1")
        await app.wait_idle(timeout=30)
    await app.aclose()
    [post] = fake_discord.bot_messages(OPS_CHANNEL_ID)
    name = f"digest-{now.date().isoformat()}.png"
    assert "digest · last 24h" in post.embeds[0]["description"]
    [attachment] = post.attachments
    assert (attachment["filename"], attachment["content_type"]) == (name, "image/png")
    assert is_png(post.files[name])
    assert post.embeds[-1]["image"]["url"] == attachment["url"], "the embed shows the chart"


async def test_the_shell_digest_writes_its_chart_and_shows_the_path(
    bot_factory: Any, tmp_path: Path
) -> None:
    bot: Bot = bot_factory({"ops": {"channels": ["shell:ops"]}})
    seed(bot.app.db, models.utcnow())
    async with bot.app.running():
        app = bot.app
        assert await app.db.call(digest.run_scheduled, app.db, app.config, models.utcnow(), "p")
        await app.wait_idle()
        typed = await bot.type("/crew digest 7d")
    await app.aclose()
    paths = re.findall(r"chart: (\S+\.png)", bot.transcript)
    assert len(paths) == 2 and paths[-1] in typed
    for path in map(Path, paths):
        assert path.parent == tmp_path / "charts" and is_png(path.read_bytes())


@pytest.mark.slow
def test_crewchief_digest_print_writes_the_chart_beside(tmp_path: Path) -> None:
    ran = crewchief(tmp_path, "shell", "--script", "-", stdin="/crew run research-brief solar\n")
    assert ran.returncode == 0, ran.stderr
    charts = tmp_path / "charts"
    done = crewchief(tmp_path, "digest", "--print", env={"CREWCHIEF_CHART_DIR": str(charts)})
    assert done.returncode == 0, done.stderr
    [path] = re.findall(r"chart: (\S+\.png)", done.stdout)
    assert Path(path).parent == charts and is_png(Path(path).read_bytes())
