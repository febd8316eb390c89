"""The monitoring keys of crewchief.yml: sensible defaults, and mistakes named by key."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agents.cron import cron_trigger
from bot.config_file import ConfigError, load_config


def load(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "crewchief.yml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)


def test_the_defaults_are_the_documented_ones(tmp_path: Path) -> None:
    config = load_config(tmp_path / "absent.yml")
    assert config.ops.channels == []
    assert (config.digest.schedule, config.digest.timezone) == ("0 9 * * *", "UTC")
    assert config.digest.window == timedelta(hours=24)
    alerts = config.alerts
    assert alerts.evaluate_every == timedelta(minutes=1)
    assert alerts.repeat_interval == timedelta(hours=4)
    assert alerts.escalate_after == timedelta(minutes=30)
    rules = alerts.rules
    assert rules.failure_rate.threshold == 0.25 and rules.failure_rate.min_runs == 3
    assert rules.failure_rate.for_ == timedelta(minutes=5)
    assert rules.failure_rate.keep_firing_for == timedelta(minutes=10)
    assert rules.stuck_run.after == timedelta(minutes=30)
    assert rules.approval_sla.after == timedelta(hours=4)
    assert rules.budget_burn.share == 0.8
    assert (rules.llm_errors.threshold, rules.llm_errors.min_calls) == (0.2, 5)
    assert rules.missed_job.grace == timedelta(minutes=10)
    assert rules.undelivered.after == timedelta(minutes=15)
    assert all(
        rule.enabled
        for rule in (rules.failure_rate, rules.stuck_run, rules.approval_sla, rules.budget_burn)
    )


def test_the_issue_example_loads(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
roles: {oncall: [slack:U0ONCALL]}
ops:
  channels: ["slack:C0OPS", "discord:1234567890", "shell:ops"]
digest: {schedule: "0 9 * * 1-5", timezone: Europe/Berlin, window: 24h}
alerts:
  evaluate_every: 1m
  repeat_interval: 4h
  rules:
    failure-rate: {threshold: 0.25, window: 1h, min_runs: 3, for: 5m, keep_firing_for: 10m}
    stuck-run: {after: 45m}
    llm-errors: {enabled: false}
  on_call: role:oncall
  escalate_after: 30m
""",
    )
    assert config.ops.targets() == [("slack", "C0OPS"), ("discord", "1234567890"), ("shell", "ops")]
    assert config.alerts.on_call == ["role:oncall"]
    assert config.alerts.rules.stuck_run.after == timedelta(minutes=45)
    assert config.alerts.rules.llm_errors.enabled is False
    assert config.alerts.rules.approval_sla.after == timedelta(hours=4)  # the rest keep defaults


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ops: {channels: [C0OPS]}", "ops.channels: 'C0OPS' is not a platform-qualified channel"),
        ("digest: {schedule: '0 9 * *'}", "digest.schedule: '0 9 * *' has 4 fields"),
        ("digest: {schedule: '0 25 * * *'}", "digest.schedule: Error validating expression"),
        ("digest: {schedule: '0 9 * * 8'}", "digest.schedule: '8' is not a weekday"),
        ("digest: {timezone: Mars/Olympus}", "digest.timezone: 'Mars/Olympus' is not an IANA"),
        ("digest: {window: soon}", "digest.window: 'soon' is not a duration"),
        ("alerts: {evaluate_every: 1s}", "alerts.evaluate_every: evaluate at most every 10s"),
        ("alerts: {rules: {failure-rate: {threshold: 2}}}", "alerts.rules.failure-rate.threshold"),
        ("alerts: {rules: {stuck-run: {for: -5}}}", "alerts.rules.stuck-run.for: a duration"),
        ("alerts: {rules: {disk-full: {}}}", "alerts.rules.disk-full: Extra inputs"),
        ("alerts: {on_call: role:oncall}", "alerts.on_call: unknown role 'role:oncall'"),
        ("alerts: {on_call: [bob]}", "alerts.on_call: 'bob' is not a user or role"),
    ],
)
def test_a_bad_monitoring_key_is_refused_with_the_key_named(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    assert message in str(caught.value)
    assert str(tmp_path / "crewchief.yml") in str(caught.value)


def fires(expression: str, after: datetime, count: int, timezone: str = "UTC") -> list[str]:
    trigger = cron_trigger(expression, timezone)
    out, when = [], after
    for _ in range(count):
        nxt = trigger.get_next_fire_time(None, when)
        assert nxt is not None
        out.append(nxt.strftime("%a %H:%M %Z"))
        when = nxt + timedelta(seconds=1)
    return out


def test_cron_weekdays_count_from_sunday_as_in_crontab() -> None:
    friday_noon = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    assert fires("0 9 * * 1-5", friday_noon, 3) == [
        "Mon 09:00 UTC",
        "Tue 09:00 UTC",
        "Wed 09:00 UTC",
    ]
    assert fires("30 8 * * 0", friday_noon, 1) == ["Sun 08:30 UTC"]
    assert fires("30 8 * * 7", friday_noon, 1) == ["Sun 08:30 UTC"]
    assert fires("0 9 * * sat,sun", friday_noon, 2) == ["Sat 09:00 UTC", "Sun 09:00 UTC"]
    assert fires("0 9 * * 1-5", friday_noon, 1, "Europe/Berlin") == ["Mon 09:00 CET"]
