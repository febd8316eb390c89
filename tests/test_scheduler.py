"""The scheduler: jobs from crewchief.yml at every start, one scheduling replica, one run per
period however often a job fires."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from apscheduler.triggers.date import DateTrigger
from sqlmodel import select

from agents import digest
from agents.cron import cron_trigger, fires_between, last_fire, period_of
from bot.scheduler import Job, Scheduler
from storage import models
from storage.db import Database
from tests.conftest import POSTGRES_URL, Bot, FakeClock, make_config


async def until(condition: Any, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_jobs_are_registered_from_crewchief_yml_when_the_bot_starts(bot_factory: Any) -> None:
    bot: Bot = bot_factory(
        {
            "digest": {"schedule": "0 9 * * 1-5", "timezone": "Europe/Berlin"},
            "alerts": {"evaluate_every": "30s"},
        }
    )
    async with bot.app.running(schedule=True):
        await until(lambda: bot.app.scheduler.leading)
        scheduled = bot.app.scheduler.next_run("digest")
        evaluation = bot.app.scheduler.next_run("alerts")
        started = datetime.now(UTC)
    await bot.app.aclose()
    assert evaluation is not None
    assert timedelta(0) < evaluation - started <= timedelta(seconds=30)
    expected = cron_trigger("0 9 * * 1-5", "Europe/Berlin").get_next_fire_time(
        None, datetime.now(UTC)
    )
    assert scheduled == expected
    assert scheduled is not None and scheduled.strftime("%H:%M %Z") == "09:00 CET"
    assert scheduled.weekday() < 5


async def test_a_job_fired_twice_for_one_period_posts_one_digest(db_url: str) -> None:
    db = Database(db_url)
    db.upgrade()
    config = make_config({"ops": {"channels": ["shell:ops", "slack:C0OPS"]}})
    done: list[bool] = []

    async def post() -> None:
        now = datetime.now(UTC)
        done.append(await db.call(digest.run_scheduled, db, config, now, "2026-12-03T09:00"))

    soon = DateTrigger(datetime.now(UTC) + timedelta(milliseconds=100))
    scheduler = Scheduler(db, [Job("digest", soon, post), Job("digest-again", soon, post)])
    stop = asyncio.Event()
    task = asyncio.create_task(scheduler.serve(stop))
    await until(lambda: len(done) == 2)
    stop.set()
    await task
    assert sorted(done) == [False, True]
    with db.read() as s:
        posts = s.exec(select(models.Message)).all()
        periods = s.exec(select(models.JobRun)).all()
    db.dispose()
    assert sorted((m.platform, m.channel) for m in posts) == [("shell", "ops"), ("slack", "C0OPS")]
    assert [(p.job, p.period) for p in periods] == [("digest", "2026-12-03T09:00")]


def test_a_fire_stands_for_its_minute_in_utc() -> None:
    berlin = datetime(2026, 12, 3, 10, 0, 0, 400_000, tzinfo=UTC).astimezone()
    assert period_of(berlin) == "2026-12-03T10:00+00:00"


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    ("schedule", "zone", "start"),
    [
        ("30 1 * * *", "America/New_York", datetime(2026, 11, 1, 4, 0, tzinfo=UTC)),
        ("*/5 * * * *", "America/New_York", datetime(2026, 11, 1, 5, 0, tzinfo=UTC)),
        ("30 2 * * *", "Europe/Berlin", datetime(2026, 10, 25, 0, 0, tzinfo=UTC)),
    ],
)
def test_the_fires_of_the_night_clocks_go_back_are_found_in_order(
    schedule: str, zone: str, start: datetime
) -> None:
    """The hour repeated when clocks go back: each search for the digests due, minute by
    minute through that night, ends, and finds only fires inside its window, oldest first."""
    trigger = cron_trigger(schedule, zone)
    grace = timedelta(minutes=5)
    for minute in range(0, 4 * 60):
        now = start + timedelta(minutes=minute, seconds=10)
        fires = fires_between(trigger, now - grace, now)
        assert all(now - grace < f <= now for f in fires), (now, fires)
        assert fires == sorted(set(fires))
        last = last_fire(trigger, now)
        assert last is not None and last <= now


@pytest.mark.skipif(not POSTGRES_URL, reason="replicas share a PostgreSQL server")
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
async def test_one_replica_schedules_and_another_takes_over_when_it_stops(db_url: str) -> None:
    first_db, second_db = Database(db_url), Database(db_url)
    first_db.upgrade()
    never = cron_trigger("0 9 1 1 *")

    async def nothing() -> None:
        return None

    first = Scheduler(first_db, [Job("digest", never, nothing)], poll=0.05)
    second = Scheduler(second_db, [Job("digest", never, nothing)], poll=0.05)
    stop_first, stop_second = asyncio.Event(), asyncio.Event()
    first_task = asyncio.create_task(first.serve(stop_first))
    await until(lambda: first.leading)
    second_task = asyncio.create_task(second.serve(stop_second))
    await asyncio.sleep(0.3)  # several of its polls
    assert (first.state, second.state) == ("leading", "standby")
    stop_first.set()
    await first_task
    await until(lambda: second.leading)
    stop_second.set()
    await second_task
    first_db.dispose()
    second_db.dispose()


async def test_on_sqlite_the_one_process_schedules(tmp_path: Any) -> None:
    db = Database(f"sqlite:///{tmp_path / 'crewchief.db'}")
    db.upgrade()

    async def nothing() -> None:
        return None

    scheduler = Scheduler(db, [Job("digest", cron_trigger("0 9 * * *"), nothing)], poll=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(scheduler.serve(stop))
    await until(lambda: scheduler.leading)
    assert scheduler.state == "leading"
    stop.set()
    await task
    assert scheduler.state == "off"
    db.dispose()


@pytest.mark.parametrize(("late", "posted"), [(timedelta(minutes=2), 1), (timedelta(minutes=6), 0)])
async def test_a_process_that_starts_scheduling_posts_a_digest_missed_just_before(
    bot_factory: Any, late: timedelta, posted: int
) -> None:
    """The process that scheduled died just before 09:00; another takes over at 09:02 and posts
    the 09:00 digest at once (within the 5-minute misfire grace), only once however many
    processes take over; at 09:06 it is too late and left to the missed-job alert."""
    clock = FakeClock()
    clock.now = datetime(2026, 12, 3, 9, 0, tzinfo=UTC) + late  # a Thursday
    config = {"ops": {"channels": ["shell:ops"]}, "digest": {"schedule": "0 9 * * 1-5"}}
    for _ in range(2):  # a second takeover
        bot: Bot = bot_factory(config, clock=clock)
        async with bot.app.running(schedule=True):
            scheduler = bot.app.scheduler
            await until(lambda: scheduler.leading and not scheduler.next_run("digest-catch-up"))  # noqa: B023
            await until(lambda: len(digests(bot)) >= posted)  # noqa: B023
            await asyncio.sleep(0.5)  # time for a second post, were there one
            await bot.app.wait_idle()
    assert len(digests(bot)) == posted
    with bot.app.db.read() as s:
        periods = s.exec(select(models.JobRun).where(models.JobRun.job == "digest")).all()
    assert [p.period for p in periods] == ["2026-12-03T09:00+00:00"] * posted


@pytest.mark.parametrize(
    ("posted_before", "posted"),
    [(None, ["09:02"]), ("09:00", ["09:00", "09:01", "09:02"])],
)
async def test_a_fire_skipped_while_the_last_still_ran_is_posted_by_the_next(
    bot_factory: Any, posted_before: str | None, posted: list[str]
) -> None:
    """Every minute: 09:00 was posted, the 09:01 fire was skipped (the 09:00 job still waited
    on the database) and the job starts again at 09:02:10: it posts 09:01 and 09:02, each once
    however often it runs. A database that never posted one posts only the latest."""
    clock = FakeClock()
    clock.now = datetime(2026, 12, 3, 9, 2, 10, tzinfo=UTC)
    config = {"ops": {"channels": ["shell:ops"]}, "digest": {"schedule": "* * * * *"}}
    if posted_before is not None:
        first: Bot = bot_factory(config, clock=clock)
        period = f"2026-12-03T{posted_before}+00:00"
        fired = datetime.fromisoformat(period)
        crew = make_config(config)
        assert digest.run_scheduled(first.app.db, crew, clock.now, period, ending=fired)
    for _ in range(2):  # a second takeover
        bot: Bot = bot_factory(config, clock=clock)
        async with bot.app.running(schedule=True):
            await until(lambda: bot.app.scheduler.leading)  # noqa: B023
            await until(lambda: len(_periods(bot)) >= len(posted))  # noqa: B023
            await asyncio.sleep(0.5)  # time for a second post, were there one
            await bot.app.wait_idle()
    assert _periods(bot) == [f"2026-12-03T{m}+00:00" for m in posted]
    assert len(digests(bot)) == len(posted)
    with bot.app.db.read() as s:
        queued = s.exec(select(models.Outbox).where(models.Outbox.channel == "ops")).all()
    # each over the 24 hours up to its own fire, not all over the same window
    assert sorted(row.context["since"] for row in queued) == [
        f"2026-12-02T{m}+00:00" for m in posted
    ]


def _periods(bot: Bot) -> list[str]:
    with bot.app.db.read() as s:
        rows = s.exec(select(models.JobRun).where(models.JobRun.job == "digest")).all()
    return sorted(p.period for p in rows)


def digests(bot: Bot) -> list[models.Message]:
    with bot.app.db.read() as s:
        return list(s.exec(select(models.Message).where(models.Message.channel == "ops")).all())
