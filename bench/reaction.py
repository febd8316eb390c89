"""How soon a ✅ shows as published, timed for each run from the moment a really signed
`reaction_added` ✅ on its draft was sent until the fake Slack Web API received the run's
"published" post (the :large_green_circle: *published* message in the run's thread, which is
what people see). Runs are blog-posts launched with really signed `/crew run` commands through
Slack HTTP mode.

    python -m bench reaction [--runs 100] [--rounds 3] [--think-ms 100] [--database-url URL]
                             [--json]
    python -m bench reaction --burst [--runs 100] [--interval-ms 0] [--database-url URL] [--json]

By default N runs are kept in flight: N are launched, each draft is approved `--think-ms`
after it reached Slack, and each published run is followed by a new launch, until N × rounds
runs were published; a reaction answered with anything but 200 (its draft's `ts` not yet
recorded) is sent again after the same pause, its time counted from the first. `--burst`
instead takes N runs to their drafts and then puts a ✅ on every draft at once (or one every
`--interval-ms`). The target is p95 under 200 ms with 100 runs in flight. The fake Slack runs
in this process; it stamps each call on arrival.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Sequence
from typing import Any

from sqlmodel import select

from bench import common
from bench.slack_bot import CHANNEL, EDITOR, SlackBot, in_turns, serving
from bot.app import freeze_startup
from storage.models import Message, MessageKind
from tests.fakes.slack_api import Call, FakeSlack
from tests.fakes.slack_signing import reaction_added

TIMEOUT_S = 600.0
PUBLISHED_KEY = re.compile(r"\brun:(\d+):published$")
DRAFT_KEY = re.compile(r"\brun:(\d+):step:\d+:v\d+$")
LAUNCHERS = 4  # concurrent senders of the first N commands
RETRIES = 50  # sendings of one reaction at most


class _Stamped(list[Call]):
    """The fake's call log, telling `watch` of each call as it is recorded."""

    def __init__(self, watch: PublishWatch) -> None:
        super().__init__()
        self.watch = watch

    def append(self, call: Call) -> None:
        super().append(call)
        self.watch.seen(call)


class PublishWatch(FakeSlack):
    """The fake Slack, noting when each run's draft and "published" posts arrive (by the outbox
    key the bot puts in every post's metadata, e.g. `post:run:12:published`), and calling
    `on_draft(run, ts)` and `on_published(run)` when one does."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = _Stamped(self)
        self.published_at: dict[int, float] = {}
        self.drafts: dict[int, str] = {}
        self.on_draft = lambda run, ts: None
        self.on_published = lambda run: None

    def seen(self, call: Call) -> None:
        if call.method != "chat.postMessage" or not call.ok:
            return
        key = _outbox_key(call.args.get("metadata"))
        if (published := PUBLISHED_KEY.search(key)) is not None:
            run = int(published[1])
            if run not in self.published_at:
                self.published_at[run] = time.perf_counter()
                self.on_published(run)
        elif (draft := DRAFT_KEY.search(key)) is not None:
            run, ts = int(draft[1]), str(call.response.get("ts", ""))
            if run not in self.drafts and ts:
                self.drafts[run] = ts
                self.on_draft(run, ts)


def _outbox_key(metadata: Any) -> str:
    if isinstance(metadata, str):
        try:
            metadata = json.loads(metadata)
        except ValueError:
            return ""
    if not isinstance(metadata, dict):
        return ""
    payload = metadata.get("event_payload")
    return str(payload.get("key", "")) if isinstance(payload, dict) else ""


class _Launches:
    """Really signed `/crew run blog-post ...` commands, and how many were acknowledged."""

    def __init__(self, bot: SlackBot) -> None:
        self.bot = bot
        self.acknowledged = 0

    async def send(self, i: int) -> None:
        if await self.bot.command(f"run blog-post topic number {i}") == 200:
            self.acknowledged += 1


class _Reactions:
    """The ✅ sent on each run's draft: when, how many runs were in flight then, how many
    answers were not 200."""

    def __init__(self, bot: SlackBot) -> None:
        self.bot = bot
        self.sent_at: dict[int, float] = {}
        self.in_flight: list[int] = []
        self.refused = 0

    async def approve(self, run: int, ts: str, in_flight: int, retry_s: float | None) -> None:
        self.sent_at[run] = time.perf_counter()
        self.in_flight.append(in_flight)
        event = reaction_added(user=EDITOR, reaction="white_check_mark", channel=CHANNEL, ts=ts)
        for _ in range(RETRIES):
            if await self.bot.event(event) == 200:
                return
            self.refused += 1
            if retry_s is None:
                return
            await asyncio.sleep(retry_s)


async def measure(
    runs: int,
    rounds: int,
    think_ms: float,
    burst: bool,
    interval_ms: float,
    database_url: str | None,
) -> common.Result:
    slack = PublishWatch()
    with common.scratch() as tmp, common.fresh_database(database_url, tmp) as url:
        async with serving(url, tmp, slack) as bot:
            reactions = _Reactions(bot)
            if burst:
                launched = await _burst(bot, reactions, runs, interval_ms)
            else:
                launched = await _steady(bot, slack, reactions, runs, runs * rounds, think_ms)
            await _until_published(slack, len(reactions.sent_at))
            await bot.app.wait_idle(timeout=TIMEOUT_S)
    latencies = [
        (slack.published_at[run] - sent) * 1000
        for run, sent in reactions.sent_at.items()
        if run in slack.published_at
    ]
    return {
        "database": common.backend(url),
        "mode": "burst" if burst else "steady",
        "runs": launched,
        "launched": launched,
        "drafts": len(reactions.sent_at),
        "reactions_not_200": reactions.refused,
        "published": len(latencies),
        "in_flight_median": common.percentile(reactions.in_flight, 50),
        "in_flight_min": min(reactions.in_flight, default=0),
        **common.latency_summary(latencies),
        "peak_rss_mb": common.peak_rss_mb(),
    }


async def _steady(
    bot: SlackBot,
    slack: PublishWatch,
    reactions: _Reactions,
    in_flight: int,
    total: int,
    think_ms: float,
) -> int:
    """`in_flight` runs launched, then one more for each published run until `total` were
    launched; each draft approved `think_ms` after it reached Slack. Returns the runs
    acknowledged."""
    launched = 0  # counted when a launch is decided on, before its command is sent
    launches = _Launches(bot)
    tasks: set[asyncio.Task[None]] = set()

    def spawn(work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def first(i: int) -> None:
        nonlocal launched
        launched += 1
        await launches.send(i)

    async def approve(run: int, ts: str) -> None:
        await asyncio.sleep(think_ms / 1000)
        await reactions.approve(run, ts, launched - len(slack.published_at), think_ms / 1000)

    def published(run: int) -> None:
        nonlocal launched
        if launched < total:
            launched += 1
            spawn(launches.send(launched))

    slack.on_draft = lambda run, ts: spawn(approve(run, ts))
    slack.on_published = published
    await in_turns(LAUNCHERS, in_flight, first)
    deadline = time.perf_counter() + TIMEOUT_S
    while (len(slack.published_at) < total or tasks) and time.perf_counter() < deadline:
        await asyncio.sleep(0.01)
    return launches.acknowledged


async def _burst(bot: SlackBot, reactions: _Reactions, runs: int, interval_ms: float) -> int:
    """`runs` runs taken to their drafts, then a ✅ on every draft at once (or one every
    `interval_ms`). Returns the runs acknowledged."""
    launches = _Launches(bot)
    await in_turns(LAUNCHERS, runs, launches.send)
    await bot.app.wait_idle(timeout=TIMEOUT_S)
    drafts = await bot.app.db.call(_drafts, bot)

    async def approve(order: int, run: int, ts: str) -> None:
        await asyncio.sleep(order * interval_ms / 1000)
        await reactions.approve(run, ts, len(drafts), None)

    await asyncio.gather(
        *(approve(order, run, ts) for order, (run, ts) in enumerate(sorted(drafts.items())))
    )
    return launches.acknowledged


def _drafts(bot: SlackBot) -> dict[int, str]:
    """Each run's draft post, by run id."""
    with bot.app.db.read() as session:
        rows = session.exec(
            select(Message.run_id, Message.platform_id).where(Message.kind == MessageKind.DRAFT)
        ).all()
    return {run: ts for run, ts in rows if run is not None and ts}


async def _until_published(slack: PublishWatch, expected: int) -> None:
    deadline = time.perf_counter() + TIMEOUT_S
    while len(slack.published_at) < expected and time.perf_counter() < deadline:
        await asyncio.sleep(0.01)


def report(result: common.Result) -> list[str]:
    return [
        f"database: {result['database']}  mode: {result['mode']}  runs: {result['runs']}  "
        f"drafts: {result['drafts']}  published: {result['published']}  "
        f"reactions not 200: {result['reactions_not_200']}",
        f"runs in flight at each reaction: median {result['in_flight_median']}  "
        f"min {result['in_flight_min']}",
        f"✅ -> published post at Slack, ms  p50 {result['p50_ms']}  p95 {result['p95_ms']}  "
        f"p99 {result['p99_ms']}  max {result['max_ms']}",
    ]


def main(argv: Sequence[str] | None = None) -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--runs", type=int, default=100, help="runs in flight")
    parser.add_argument(
        "--rounds", type=int, default=3, help="runs published in all, as a multiple of --runs"
    )
    parser.add_argument(
        "--think-ms", type=float, default=100.0, help="from a draft reaching Slack to its ✅"
    )
    parser.add_argument(
        "--burst", action="store_true", help="take the runs to their drafts, then approve all"
    )
    parser.add_argument(
        "--interval-ms", type=float, default=0.0, help="with --burst: between two reactions"
    )
    common.add_database_option(parser)
    args = parser.parse_args(argv)
    freeze_startup()  # as `crewchief start` does
    result = asyncio.run(
        measure(
            args.runs, args.rounds, args.think_ms, args.burst, args.interval_ms, args.database_url
        )
    )
    common.emit(result, args.json, report(result))


if __name__ == "__main__":
    main()
