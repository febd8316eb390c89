"""/metrics as Prometheus reads it: parsed with prometheus_client's own parser."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from agents.alerts import run_evaluation
from bot.metrics import registry_for, render
from storage import models
from tests.conftest import Bot, FakeClock


def scrape(bot: Bot) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = render(registry_for(bot.app.db)).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_metrics_report_runs_tokens_approvals_alerts_and_job_runs(bot_factory: Any) -> None:
    clock = FakeClock()
    bot: Bot = bot_factory(
        {"alerts": {"rules": {"stuck-run": {"after": "1m"}, "missed-job": {"enabled": False}}}},
        clock=clock,
    )
    async with bot.app.running():
        await bot.type("/crew run research-brief solar", "/crew run blog-post heat pumps")
        await bot.wait()
        with bot.app.db.transaction() as s:
            s.add(
                models.Run(
                    workflow="blog-post",
                    text="stuck",
                    requester="shell:alice",
                    platform="shell",
                    channel="shell",
                    created_at=clock() - timedelta(hours=1),
                    updated_at=clock() - timedelta(hours=1),
                )
            )
        app = bot.app
        await app.db.call(run_evaluation, app.db, app.crew.alerts, clock(), "p1")
    await bot.app.aclose()

    samples = scrape(bot)
    assert samples[("crewchief_runs", (("status", "succeeded"),))] == 1
    # research-brief's one step and blog-post's research and draft steps ran to an end
    researched = (("agent", "researcher"),)
    assert samples[("crewchief_step_duration_seconds_count", researched)] == 2
    assert samples[("crewchief_step_duration_seconds_bucket", (*researched, ("le", "+Inf")))] == 2
    assert samples[("crewchief_step_duration_seconds_bucket", (*researched, ("le", "1800.0")))] == 2
    assert samples[("crewchief_runs", (("status", "awaiting_approval"),))] == 1
    assert samples[("crewchief_runs", (("status", "running"),))] == 1
    assert samples[("crewchief_approvals_pending", ())] == 1
    tokens_in = samples[
        (
            "crewchief_gen_ai_client_token_usage_total",
            (("gen_ai_request_model", "gpt-4o-mini"), ("gen_ai_token_type", "input")),
        )
    ]
    assert tokens_in > 0
    assert (
        samples[
            (
                "crewchief_gen_ai_client_operations_total",
                (("gen_ai_request_model", "gpt-4o-mini"), ("outcome", "ok")),
            )
        ]
        == 3
    )
    assert samples[("crewchief_alerts", (("rule", "stuck-run"), ("state", "firing")))] == 1
    last = samples[("crewchief_scheduled_job_last_run_timestamp_seconds", (("job", "alerts"),))]
    assert abs(last - clock().timestamp()) < 1
