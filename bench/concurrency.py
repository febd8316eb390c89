"""Whether the engine keeps a slow model busy: N blog-post runs launched at once against the
fake OpenAI-compatible server answering every call after a fixed latency (1 s), approved
once all drafts are in, and published. Wall time is compared with the critical path that the
configured concurrency allows:

    slots          = min(engine.workers, engine.llm_concurrency)
    critical path  = steps x ceil(runs / slots) x latency

where steps counts the workflow's model calls per run (research, draft, publish: 3), each step
being a phase in which every run waits for its call in batches of `slots`. The ratio
wall / critical path is the engine's own overhead (target <= 1.5); peak RSS is this process's
(target < 400 MB). The fake server runs in a child process.

    python -m bench concurrency [--runs 1000] [--latency 1.0] [--slots 100] [--json]
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence

from sqlmodel import col, func, select

from agents.config import CrewConfig, builtin_defaults, merge
from bench import common, fake_llm
from bench.workload import EDITOR, NullPlatform, launch_and_publish
from bot.app import App, build_app, freeze_startup
from storage.models import LLMCall

WORKFLOW = "blog-post"


def bench_config(slots: int) -> CrewConfig:
    engine = {"workers": slots, "llm_concurrency": slots}
    return CrewConfig.model_validate(merge(builtin_defaults(), {"engine": engine}))


def critical_path_s(config: CrewConfig, runs: int, latency: float) -> float:
    slots = min(config.engine.workers, config.engine.llm_concurrency)
    steps = len(config.workflows[WORKFLOW].steps)
    return steps * math.ceil(runs / slots) * latency


async def measure(runs: int, latency: float, slots: int, database_url: str | None) -> common.Result:
    config = bench_config(slots)
    async with fake_llm.running(latency) as base_url:
        with common.scratch() as tmp, common.fresh_database(database_url, tmp) as url:
            settings = common.settings(
                url,
                tmp,
                crewchief_llm="openai",
                openai_api_key=fake_llm.API_KEY,
                openai_base_url=base_url,
            )
            app = build_app(settings, config=config, default_approvers=[EDITOR.qualified])
            app.add_platform(NullPlatform())
            try:
                async with app.running():
                    phases = await launch_and_publish(app, runs)
                calls = await app.db.call(_llm_calls, app)
            finally:
                await app.aclose()
    critical = critical_path_s(config, runs, latency)
    return {
        "database": common.backend(url),
        "runs": runs,
        "succeeded": phases.succeeded,
        "latency_s": latency,
        "slots": min(config.engine.workers, config.engine.llm_concurrency),
        "llm_calls": calls,
        "launch_to_draft_s": round(phases.launch_to_draft_s, 3),
        "approve_to_published_s": round(phases.approve_to_published_s, 3),
        "wall_s": round(phases.total_s, 3),
        "critical_path_s": round(critical, 3),
        "wall_over_critical": round(phases.total_s / critical, 3),
        "peak_rss_mb": common.peak_rss_mb(),
    }


def _llm_calls(app: App) -> int:
    with app.db.read() as session:
        return int(session.exec(select(func.count(col(LLMCall.id)))).one())


def report(result: common.Result) -> list[str]:
    return [
        f"database: {result['database']}  runs: {result['runs']}  "
        f"succeeded: {result['succeeded']}  model calls: {result['llm_calls']} "
        f"({result['latency_s']} s each, {result['slots']} at a time)",
        f"wall {result['wall_s']:.1f} s  critical path {result['critical_path_s']:.1f} s  "
        f"ratio {result['wall_over_critical']:.2f}",
        f"peak RSS: {result['peak_rss_mb']} MB",
    ]


def main(argv: Sequence[str] | None = None) -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--runs", type=int, default=1000, help="runs launched at once")
    parser.add_argument("--latency", type=float, default=1.0, help="seconds per model call")
    parser.add_argument(
        "--slots",
        type=int,
        default=100,
        help="engine.workers and engine.llm_concurrency for the run (1-256)",
    )
    common.add_database_option(parser)
    args = parser.parse_args(argv)
    freeze_startup()  # as `crewchief start` does
    result = asyncio.run(measure(args.runs, args.latency, args.slots, args.database_url))
    common.emit(result, args.json, report(result))


if __name__ == "__main__":
    main()
