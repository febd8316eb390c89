"""How many runs the engine carries per second: N blog-post runs launched at once, through
research and draft to `awaiting_approval`, then all approved and published. Offline model and
a platform that accepts every delivery at once, so this measures crewchief (claiming, state
changes, the outbox), not an LLM or a chat service.

    python -m bench engine [--runs 200] [--database-url URL] [--json]

runs_per_s is runs / (launch_to_draft_s + approve_to_published_s); cpu_ms_per_run is the
process's CPU time (every thread) over those two phases, per run; sql_per_run the SQL
statements sent to the database over them, per run; peak_rss_mb is the process's peak
resident set size (getrusage ru_maxrss); gc_ms_per_run and gc_pause_max_ms the garbage
collector's pauses over the two phases, per run and the longest (the process freezes what
start-up made first, as `crewchief start` does: bot.app.freeze_startup).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
from collections.abc import Sequence

from sqlalchemy import event

from bench import common
from bench.workload import EDITOR, NullPlatform, launch_and_publish
from bot.app import build_app, freeze_startup


async def measure(runs: int, database_url: str | None) -> common.Result:
    with common.scratch() as tmp, common.fresh_database(database_url, tmp) as url:
        app = build_app(common.settings(url, tmp), default_approvers=[EDITOR.qualified])
        platform = NullPlatform()
        app.add_platform(platform)
        statements = itertools.count()
        counting = functools.partial(_count, statements)
        try:
            async with app.running():
                event.listen(app.db.engine, "before_cursor_execute", counting)
                with common.gc_pauses() as pauses:
                    phases = await launch_and_publish(app, runs)
                event.remove(app.db.engine, "before_cursor_execute", counting)
        finally:
            await app.aclose()
    return {
        "database": common.backend(url),
        "runs": runs,
        "succeeded": phases.succeeded,
        "launch_to_draft_s": round(phases.launch_to_draft_s, 3),
        "approve_to_published_s": round(phases.approve_to_published_s, 3),
        "runs_per_s": round(phases.runs_per_s, 2),
        "messages": platform.delivered,
        "cpu_ms_per_run": round(phases.cpu_s * 1000 / runs, 2) if runs else 0.0,
        "sql_per_run": round(next(statements) / runs, 1) if runs else 0.0,
        "peak_rss_mb": common.peak_rss_mb(),
        "gc_ms_per_run": round(sum(pauses) / runs, 3) if runs else 0.0,
        "gc_pause_max_ms": round(max(pauses, default=0.0), 1),
    }


def _count(counter: itertools.count[int], *_: object) -> None:
    next(counter)


def report(result: common.Result) -> list[str]:
    return [
        f"database: {result['database']}  runs: {result['runs']}  succeeded: {result['succeeded']}",
        f"launch -> draft awaiting approval: {result['launch_to_draft_s']:.2f} s",
        f"approve -> published:              {result['approve_to_published_s']:.2f} s",
        f"runs per second (both phases):     {result['runs_per_s']:.1f}",
        f"messages delivered: {result['messages']}   SQL statements per run: "
        f"{result['sql_per_run']}",
        f"CPU per run: {result['cpu_ms_per_run']:.1f} ms   peak RSS: {result['peak_rss_mb']} MB",
        f"garbage collection per run: {result['gc_ms_per_run']:.2f} ms   longest pause: "
        f"{result['gc_pause_max_ms']:.1f} ms",
    ]


def main(argv: Sequence[str] | None = None) -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--runs", type=int, default=200, help="runs launched at once")
    common.add_database_option(parser)
    args = parser.parse_args(argv)
    freeze_startup()  # as `crewchief start` does
    result = asyncio.run(measure(args.runs, args.database_url))
    common.emit(result, args.json, report(result))


if __name__ == "__main__":
    main()
