"""How long the digest takes to build as history grows: a database seeded with N step rows
(a third as many runs, one model call per step, a draft and a decision per run) spread over
90 days, then the 24-hour digest built several times.

    python -m bench digest [--steps 1000000] [--repeat 5] [--database-url URL] [--json]

The target is under 1 s (median) over 1,000,000 steps.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert

from agents import digest
from agents.config import CrewConfig, builtin_defaults
from bench import common
from storage.db import Database
from storage.models import AuditEntry, DraftVersion, LLMCall, Run, Step

DAYS = 90
BATCH = 20_000
OUTCOMES = ["succeeded"] * 7 + ["failed", "rejected", "cancelled"]


def seed(db: Database, steps: int, now: datetime) -> None:
    rng = random.Random(7)
    runs = max(1, steps // 3)
    span = DAYS * 86400
    with db.engine.begin() as conn:
        for start in range(0, runs, BATCH):
            ids = range(start + 1, min(runs, start + BATCH) + 1)
            created = {i: now - timedelta(seconds=rng.randrange(span)) for i in ids}
            conn.execute(
                insert(Run),
                [
                    {
                        "id": i,
                        "workflow": "blog-post" if i % 3 else "research-brief",
                        "text": "topic",
                        "requester": "shell:bench",
                        "platform": "shell",
                        "channel": "shell",
                        "status": rng.choice(OUTCOMES),
                        "current_step": 2,
                        "cost_usd": rng.random() / 100,
                        "tokens": 1500,
                        "created_at": created[i],
                        "updated_at": created[i],
                        "finished_at": created[i] + timedelta(minutes=5),
                    }
                    for i in ids
                ],
            )
            step_rows: list[dict[str, Any]] = []
            calls: list[dict[str, Any]] = []
            for i in ids:
                for position, (name, agent) in enumerate(
                    [("research", "researcher"), ("draft", "writer"), ("publish", "publisher")]
                ):
                    step_rows.append(
                        {
                            "id": (i - 1) * 3 + position + 1,
                            "run_id": i,
                            "position": position,
                            "name": name,
                            "agent": agent,
                            "status": "succeeded",
                            "available_at": created[i],
                            "started_at": created[i],
                            "finished_at": created[i] + timedelta(minutes=position + 1),
                        }
                    )
                    calls.append(
                        {
                            "run_id": i,
                            "step_id": (i - 1) * 3 + position + 1,
                            "agent": agent,
                            "provider": "openai",
                            "model": "gpt-4o-mini" if position else "llama3",
                            "input_tokens": 500,
                            "output_tokens": 300,
                            "cost_usd": 0.0003,
                            "latency_ms": rng.randrange(200, 4000),
                            "error": "HTTP 500" if rng.random() < 0.02 else None,
                            "prompt_version": f"{agent[:4]}{i * 2 // runs:04d}",
                            "created_at": created[i] + timedelta(seconds=position * 30),
                        }
                    )
            conn.execute(insert(Step), step_rows)
            conn.execute(insert(LLMCall), calls)
            conn.execute(
                insert(DraftVersion),
                [
                    {
                        "run_id": i,
                        "step_id": (i - 1) * 3 + 2,
                        "version": 1,
                        "content": "draft",
                        "prompt_version": f"writ{i * 2 // runs:04d}",
                        "created_at": created[i] + timedelta(minutes=1),
                    }
                    for i in ids
                ],
            )
            conn.execute(
                insert(AuditEntry),
                [
                    {
                        "at": created[i] + timedelta(minutes=1 + rng.randrange(1, 120)),
                        "actor": "shell:editor",
                        "action": rng.choice(["draft.approved"] * 4 + ["draft.sent_back"]),
                        "run_id": i,
                        "detail": {"version": 1},
                    }
                    for i in ids
                ],
            )


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
