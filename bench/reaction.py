"""How soon a ✅ shows as published: N blog-post runs launched with really signed `/crew run`
commands through Slack HTTP mode and taken to their drafts, then a really signed
`reaction_added` ✅ on every draft at once (N runs in flight), timing for each run the moment
the reaction was sent until the fake Slack Web API received the run's "published" post (the
:large_green_circle: *published* message in the run's thread, which is what people see).

    python -m bench reaction [--runs 100] [--interval-ms 0] [--database-url URL] [--json]

`--interval-ms` spaces the reactions out instead of sending them all at once. The target is
p95 under 200 ms. The fake Slack runs in this process; it stamps each call on arrival.
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
from storage.models import Message, MessageKind
from tests.fakes.slack_api import Call, FakeSlack
from tests.fakes.slack_signing import reaction_added

TIMEOUT_S = 600.0
PUBLISHED_KEY = re.compile(r"\brun:(\d+):published$")


class _Stamped(list[Call]):
    """The fake's call log, telling `watch` of each call as it is recorded."""

    def __init__(self, watch: PublishWatch) -> None:
        super().__init__()
        self.watch = watch

    def append(self, call: Call) -> None:
        super().append(call)
        self.watch.seen(call)


class PublishWatch(FakeSlack):
    """The fake Slack, noting when each run's "published" post arrives (by the outbox key the
    bot puts in every post's metadata, e.g. `post:run:12:published`)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = _Stamped(self)
        self.published_at: dict[int, float] = {}

    def seen(self, call: Call) -> None:
        if call.method != "chat.postMessage" or not call.ok:
            return
        published = PUBLISHED_KEY.search(_outbox_key(call.args.get("metadata")))
        if published is not None:
            self.published_at.setdefault(int(published[1]), time.perf_counter())


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


async def measure(runs: int, interval_ms: float, database_url: str | None) -> common.Result:
    slack = PublishWatch()
    with common.scratch() as tmp, common.fresh_database(database_url, tmp) as url:
        async with serving(url, tmp, slack) as bot:
            launched = await _launch(bot, runs)
            await bot.app.wait_idle(timeout=TIMEOUT_S)
            drafts = await bot.app.db.call(_drafts, bot)
            sent_at, refused = await _react(bot, drafts, interval_ms)
            await _until_published(slack, len(drafts))
            await bot.app.wait_idle(timeout=TIMEOUT_S)
    latencies = [
        (slack.published_at[run] - sent) * 1000
        for run, sent in sent_at.items()
        if run in slack.published_at
    ]
    return {
        "database": common.backend(url),
        "runs": runs,
        "launched": launched,
        "drafts": len(drafts),
        "reactions_not_200": refused,
        "published": len(latencies),
        **common.latency_summary(latencies),
        "peak_rss_mb": common.peak_rss_mb(),
    }


async def _launch(bot: SlackBot, runs: int) -> int:
    acknowledged = 0

    async def send(i: int) -> None:
        nonlocal acknowledged
        if await bot.command(f"run blog-post topic number {i}") == 200:
            acknowledged += 1

    await in_turns(4, runs, send)
    return acknowledged


def _drafts(bot: SlackBot) -> dict[int, str]:
    """Each run's draft post, by run id."""
    with bot.app.db.read() as session:
        rows = session.exec(
            select(Message.run_id, Message.platform_id).where(Message.kind == MessageKind.DRAFT)
        ).all()
    return {run: ts for run, ts in rows if run is not None and ts}


async def _react(
    bot: SlackBot, drafts: dict[int, str], interval_ms: float
) -> tuple[dict[int, float], int]:
    sent_at: dict[int, float] = {}
    refused = 0

    async def approve(order: int, run: int, ts: str) -> None:
        nonlocal refused
        await asyncio.sleep(order * interval_ms / 1000)
        event = reaction_added(user=EDITOR, reaction="white_check_mark", channel=CHANNEL, ts=ts)
        sent_at[run] = time.perf_counter()
        if await bot.event(event) != 200:
            refused += 1

    await asyncio.gather(
        *(approve(order, run, ts) for order, (run, ts) in enumerate(sorted(drafts.items())))
    )
    return sent_at, refused


async def _until_published(slack: PublishWatch, expected: int) -> None:
    deadline = time.perf_counter() + TIMEOUT_S
    while len(slack.published_at) < expected and time.perf_counter() < deadline:
        await asyncio.sleep(0.01)


def report(result: common.Result) -> list[str]:
    return [
        f"database: {result['database']}  runs: {result['runs']}  drafts: {result['drafts']}  "
        f"published: {result['published']}  reactions not 200: {result['reactions_not_200']}",
        f"✅ -> published post at Slack, ms  p50 {result['p50_ms']}  p95 {result['p95_ms']}  "
        f"p99 {result['p99_ms']}  max {result['max_ms']}",
    ]


def main(argv: Sequence[str] | None = None) -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--runs", type=int, default=100, help="runs in flight")
    parser.add_argument(
        "--interval-ms", type=float, default=0.0, help="time between two reactions (0: at once)"
    )
    common.add_database_option(parser)
    args = parser.parse_args(argv)
    result = asyncio.run(measure(args.runs, args.interval_ms, args.database_url))
    common.emit(result, args.json, report(result))


if __name__ == "__main__":
    main()
