"""How long the digest takes to build as history grows: a database seeded with N step rows
(a third as many runs, one model call per step, a draft and a decision per run) made in the
order of time over 90 days, as a database that has run that long holds them, then the 24-hour
digest built several times.

    python -m bench digest [--steps 1000000] [--repeat 5] [--database-url URL] [--json]

The target is under 1 s (median) over 1,000,000 steps.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import bindparam, text
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.engine import Connection

from agents import digest
from agents.config import CrewConfig, builtin_defaults
from bench import common
from storage.db import Database
from storage.models import Run

DAYS = 90

# The rows are made by the database itself, INSERT .. SELECT. Runs are evenly spaced over the
# days in the order of their ids, as they are made; a run's outcome, a model call's latency and
# a decision's delay come from a multiplicative hash of an id (Knuth's 2654435761, a salt per
# figure), so every seeding is the same.
# SQL that differs between the databases: a time `secs` seconds after `at`, and a JSON literal.
_DIALECT = {
    "sqlite": {
        "plus": "strftime('%Y-%m-%d %H:%M:%S', {at}, ({secs}) || ' seconds') || '.000000'",
        "json": "'{value}'",
    },
    "postgresql": {"plus": "{at} + ({secs}) * interval '1 second'", "json": "'{value}'::json"},
}


def _hash(salt: int, column: str = "i") -> str:
    return f"((CAST({column} AS BIGINT) * 2654435761 + {salt}) % 4294967296)"


def seed(db: Database, steps: int, now: datetime) -> None:
    runs = max(1, steps // 3)
    with db.engine.begin() as conn:
        sql = _DIALECT[conn.dialect.name]

        def plus(at: str, secs: str) -> str:
            return sql["plus"].format(at=at, secs=secs)

        spacing = f"-CAST(:runs - i AS BIGINT) * {DAYS * 86400} / :runs"  # seconds before now
        statements = [
            # runs: a third of them research briefs, 7 in 10 succeeded
            f"""WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :runs),
            t(i, created) AS (SELECT i, {plus(":now", spacing)}
                FROM n)
            INSERT INTO run (id, workflow, text, requester, platform, channel, status,
                current_step, cost_usd, tokens, created_at, updated_at, finished_at)
            SELECT i, CASE WHEN i % 3 = 0 THEN 'research-brief' ELSE 'blog-post' END, 'topic',
                'shell:bench', 'shell', 'shell',
                CASE {_hash(2)} % 10 WHEN 7 THEN 'failed' WHEN 8 THEN 'rejected'
                    WHEN 9 THEN 'cancelled' ELSE 'succeeded' END,
                2, ({_hash(3)} % 10000) / 1000000.0, 1500, created, created,
                {plus("created", "300")}
            FROM t""",
            # three steps per run, each with one model call
            f"""WITH p(position, name, agent) AS (SELECT 0, 'research', 'researcher'
                UNION ALL SELECT 1, 'draft', 'writer' UNION ALL SELECT 2, 'publish', 'publisher')
            INSERT INTO step (id, run_id, position, name, agent, status, attempts, version,
                available_at, escalated, started_at, finished_at)
            SELECT (run.id - 1) * 3 + position + 1, run.id, position, name, agent, 'succeeded',
                0, 0, created_at, false, created_at,
                {plus("created_at", "60 * (position + 1)")}
            FROM run CROSS JOIN p""",
            f"""INSERT INTO llmcall (run_id, step_id, agent, provider, model, input_tokens,
                output_tokens, cost_usd, latency_ms, error, prompt_version, created_at)
            SELECT run_id, step.id, agent, 'openai',
                CASE WHEN position = 0 THEN 'llama3' ELSE 'gpt-4o-mini' END, 500, 300, 0.0003,
                200 + {_hash(4, "step.id")} % 3800,
                CASE WHEN {_hash(5, "step.id")} % 50 = 0 THEN 'HTTP 500' END,
                substr(agent, 1, 4) || CASE WHEN run_id * 2 / :runs = 0 THEN '0000'
                    ELSE '0001' END,
                {plus("started_at", "30 * position")}
            FROM step""",
            # a draft per run, and its decision 1 to 120 minutes later (1 in 5 sent back)
            f"""INSERT INTO draftversion (run_id, step_id, version, content, prompt_version,
                created_at)
            SELECT id, (id - 1) * 3 + 2, 1, 'draft',
                'writ' || CASE WHEN id * 2 / :runs = 0 THEN '0000' ELSE '0001' END,
                {plus("created_at", "60")}
            FROM run""",
            f"""INSERT INTO auditentry (at, actor, action, run_id, detail)
            SELECT {plus("created_at", f"60 * (2 + {_hash(6, 'id')} % 119)")}, 'shell:editor',
                CASE WHEN {_hash(7, "id")} % 5 = 0 THEN 'draft.sent_back'
                    ELSE 'draft.approved' END,
                id, {sql["json"].format(value='{"version": 1}')}
            FROM run""",
        ]
        params = {"runs": runs, "now": now}
        for statement in statements:
            _execute(conn, statement, params)


def _execute(conn: Connection, statement: str, params: dict[str, object]) -> None:
    clause = text(statement)
    if ":now" in statement:  # stored as the models store their times
        clause = clause.bindparams(bindparam("now", type_=sa_inspect(Run).columns.created_at.type))
    conn.execute(clause, params)


def measure(steps: int, repeat: int, database_url: str | None) -> common.Result:
    with common.scratch() as tmp, common.fresh_database(database_url, tmp) as url:
        db = Database(url)
        db.upgrade()
        now = datetime.now(UTC)
        began = time.perf_counter()
        seed(db, steps, now)
        seeded_s = time.perf_counter() - began
        config = CrewConfig.model_validate(builtin_defaults())
        timings = []
        for _ in range(repeat):
            began = time.perf_counter()
            with db.read() as session:
                built = digest.build(session, config, now, timedelta(hours=24))
            timings.append(time.perf_counter() - began)
        db.dispose()
    return {
        "database": common.backend(url),
        "steps": steps,
        "runs": max(1, steps // 3),
        "seed_s": round(seeded_s, 1),
        "digest_build_s_median": round(statistics.median(timings), 3),
        "digest_build_s_max": round(max(timings), 3),
        "runs_in_window": built["totals"]["now"]["started"],
        "peak_rss_mb": common.peak_rss_mb(),
    }


def report(result: common.Result) -> list[str]:
    return [
        f"database: {result['database']}  steps: {result['steps']:,}  runs: {result['runs']:,}"
        f"  seeded in {result['seed_s']} s",
        f"24-hour digest ({result['runs_in_window']} runs in the window) built in "
        f"{result['digest_build_s_median']:.3f} s (median), {result['digest_build_s_max']:.3f} s"
        " (max)",
    ]


def main(argv: Sequence[str] | None = None) -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--steps", type=int, default=1_000_000, help="step rows to seed")
    parser.add_argument("--repeat", type=int, default=5, help="digests built after seeding")
    common.add_database_option(parser)
    args = parser.parse_args(argv)
    result = measure(args.steps, args.repeat, args.database_url)
    common.emit(result, args.json, report(result))


if __name__ == "__main__":
    main()
