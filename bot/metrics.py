"""/metrics with prometheus-client: every figure is read from the database at scrape time, so
every replica reports the same numbers and nothing is lost when a process restarts.

OpenTelemetry's `gen_ai.*` names map to Prometheus style: `gen_ai.client.token.usage` becomes
`crewchief_gen_ai_client_token_usage_total`, with `gen_ai_request_model` and
`gen_ai_token_type` labels.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from storage.alert_queries import open_alerts
from storage.db import Database
from storage.figures import STEP_SECONDS_BUCKETS, approvals_pending, step_duration_histogram
from storage.jobs import last_runs
from storage.models import RunStatus, as_utc, utcnow
from storage.queries import health_figures, model_usage


class DatabaseCollector(Collector):
    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[Metric]:
        now = utcnow()
        with self.db.read() as session:
            figures = health_figures(session)
            usage = model_usage(session)
            pending, oldest = approvals_pending(session)
            alerts = open_alerts(session)
            jobs = last_runs(session)
            durations = step_duration_histogram(session)

        runs = GaugeMetricFamily("crewchief_runs", "Runs by status.", labels=["status"])
        for status in RunStatus:
            runs.add_metric([status.value], figures["runs"].get(status.value, 0))
        yield runs
        yield GaugeMetricFamily(
            "crewchief_steps_runnable", "Steps waiting for a worker.", figures["steps_runnable"]
        )
        yield GaugeMetricFamily(
            "crewchief_outbox_pending", "Messages not yet delivered.", figures["outbox_pending"]
        )
        yield GaugeMetricFamily(
            "crewchief_outbox_failed",
            "Messages given up on (a platform refused them for good).",
            figures["outbox_failed"],
        )
        yield GaugeMetricFamily(
            "crewchief_approvals_pending", "Drafts waiting for people.", pending
        )
        yield GaugeMetricFamily(
            "crewchief_approval_oldest_wait_seconds",
            "How long the oldest waiting draft has waited.",
            (now - oldest).total_seconds() if oldest else 0,
        )

        tokens = CounterMetricFamily(
            "crewchief_gen_ai_client_token_usage",
            "Tokens used by model calls (gen_ai.client.token.usage).",
            labels=["gen_ai_request_model", "gen_ai_token_type"],
        )
        cost = CounterMetricFamily(
            "crewchief_gen_ai_client_cost_usd",
            "What model calls cost, in USD (0 for models without a known price).",
            labels=["gen_ai_request_model"],
        )
        calls = CounterMetricFamily(
            "crewchief_gen_ai_client_operations",
            "Model calls, by outcome.",
            labels=["gen_ai_request_model", "outcome"],
        )
        for model, tokens_in, tokens_out, usd, n, errors in usage:
            tokens.add_metric([model, "input"], tokens_in)
            tokens.add_metric([model, "output"], tokens_out)
            cost.add_metric([model], usd)
            calls.add_metric([model, "ok"], n - errors)
            calls.add_metric([model, "error"], errors)
        yield tokens
        yield cost
        yield calls

        by_state: dict[tuple[str, str], int] = {}
        for alert in alerts:
            key = (alert.rule, alert.state)
            by_state[key] = by_state.get(key, 0) + 1
        open_gauge = GaugeMetricFamily(
            "crewchief_alerts", "Pending and firing alerts.", labels=["rule", "state"]
        )
        for (rule, state), n in sorted(by_state.items()):
            open_gauge.add_metric([rule, state], n)
        yield open_gauge

        histogram = HistogramMetricFamily(
            "crewchief_step_duration_seconds",
            "How long steps took from their claim to their end, by agent.",
            labels=["agent"],
        )
        bounds = [floatToGoString(le) for le in (*STEP_SECONDS_BUCKETS, float("inf"))]
        for agent, (counts, total, summed) in sorted(durations.items()):
            histogram.add_metric(
                [agent], list(zip(bounds, [*counts, total], strict=True)), sum_value=summed
            )
        yield histogram

        last = GaugeMetricFamily(
            "crewchief_scheduled_job_last_run_timestamp_seconds",
            "When each scheduled job last ran (Unix time).",
            labels=["job"],
        )
        for job, at in sorted(jobs.items()):
            last.add_metric([job], as_utc(at).timestamp())
        yield last


def registry_for(db: Database) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(db))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
