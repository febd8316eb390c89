"""How fast `/crew` is acknowledged: really signed `/crew run` commands from concurrent senders
(each sending its next command once the last one was answered) through the real Bolt app in
Slack HTTP mode, against the local fake Slack, while the workers run the launched workflows.

    python -m bench ack [--requests 1000] [--senders 4] [--database-url URL] [--json]

Slack and Discord give a bot 3 s; the target is p99 under 50 ms. Reports every status that was
not 200, p50/p95/p99/max latency from sending a request to reading its whole answer, and how
long the engine took after the last acknowledgement to finish and deliver every run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from bench import common
from bench.slack_bot import in_turns, serving
from bot.app import freeze_startup
from tests.fakes.slack_api import FakeSlack


async def measure(requests: int, senders: int, database_url: str | None) -> common.Result:
    latencies: list[float] = []
    failed: list[int] = []
    with common.scratch() as tmp, common.fresh_database(database_url, tmp) as url:
        async with serving(url, tmp, FakeSlack()) as bot:

            async def send(i: int) -> None:
                began = time.perf_counter()
                status = await bot.command(f"run research-brief topic number {i}")
                latencies.append((time.perf_counter() - began) * 1000)
                if status != 200:
                    failed.append(status)

            await in_turns(senders, requests, send)
            last_ack = time.perf_counter()
            await bot.app.wait_idle(timeout=3600)
            drained = time.perf_counter() - last_ack
    return {
        "database": common.backend(url),
        "requests": requests,
        "senders": senders,
        "non_200": len(failed),
        "statuses_not_200": sorted(set(failed)),
        **common.latency_summary(latencies),
        "drained_s": round(drained, 2),
        "peak_rss_mb": common.peak_rss_mb(),
    }


def report(result: common.Result) -> list[str]:
    return [
        f"database: {result['database']}  requests: {result['requests']} "
        f"from {result['senders']} senders  not 200: {result['non_200']} "
        f"{result['statuses_not_200'] or ''}",
        f"ack latency ms  p50 {result['p50_ms']}  p95 {result['p95_ms']}  "
        f"p99 {result['p99_ms']}  max {result['max_ms']}",
        f"every run finished and delivered {result['drained_s']} s after the last ack",
    ]


def main(argv: Sequence[str] | None = None) -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--requests", type=int, default=1000, help="commands sent in all")
    parser.add_argument("--senders", type=int, default=4, help="concurrent senders")
    common.add_database_option(parser)
    args = parser.parse_args(argv)
    freeze_startup()  # as `crewchief start` does
    result = asyncio.run(measure(args.requests, args.senders, args.database_url))
    common.emit(result, args.json, report(result))


if __name__ == "__main__":
    main()
