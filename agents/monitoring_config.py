"""The monitoring part of crewchief.yml: the ops channels, the digest's schedule, the alert
rules. Every value is checked at load, so a bad cron line or time zone names its key."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from agents.cron import cron_trigger
from agents.durations import Duration

CHANNEL_PATTERN = re.compile(r"^(slack|discord|shell):[^\s,]+$")


class _Keys(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Ops(_Keys):
    channels: list[str] = Field(default_factory=list)

    @field_validator("channels")
    @classmethod
    def _qualified(cls, channels: list[str]) -> list[str]:
        for channel in channels:
            if not CHANNEL_PATTERN.match(channel):
                raise ValueError(
                    f"{channel!r} is not a platform-qualified channel: use e.g. "
                    "slack:C0OPS, discord:1234567890 or shell:ops"
                )
        return channels

    def targets(self) -> list[tuple[str, str]]:
        """(platform, channel) of each ops channel."""
        return [tuple(c.split(":", 1)) for c in self.channels]  # type: ignore[misc]


class DigestSettings(_Keys):
    schedule: str = "0 9 * * *"  # cron: minute hour day month weekday
    timezone: str = "UTC"
    window: Duration = timedelta(hours=24)

    @field_validator("timezone")
    @classmethod
    def _iana(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"{name!r} is not an IANA time zone (e.g. UTC, Europe/Berlin)"
            ) from None
        return name

    @field_validator("schedule")
    @classmethod
    def _cron(cls, expression: str) -> str:
        cron_trigger(expression)  # raises ValueError naming the problem
        return expression

    @field_validator("window")
    @classmethod
    def _positive(cls, window: timedelta) -> timedelta:
        if window < timedelta(minutes=1):
            raise ValueError("the digest window must be at least 1m (e.g. 24h, 7d)")
        return window


def _non_negative(value: timedelta) -> timedelta:
    if value < timedelta(0):
        raise ValueError("a duration cannot be negative")
    return value


class Rule(_Keys):
    enabled: bool = True
    for_: Duration = Field(default=timedelta(0), alias="for")  # pending this long before firing
    keep_firing_for: Duration = timedelta(0)  # clear this long before resolving

    _durations = field_validator("for_", "keep_firing_for")(_non_negative)


class FailureRate(Rule):
    threshold: float = Field(default=0.25, gt=0, le=1)
    window: Duration = timedelta(hours=1)
    min_runs: int = Field(default=3, ge=1)
    for_: Duration = Field(default=timedelta(minutes=5), alias="for")
    keep_firing_for: Duration = timedelta(minutes=10)


class StuckRun(Rule):
    after: Duration = timedelta(minutes=30)


class ApprovalSLA(Rule):
    after: Duration = timedelta(hours=4)


class BudgetBurn(Rule):
    share: float = Field(default=0.8, gt=0, le=1)  # of the daily budget


class LLMErrors(Rule):
    threshold: float = Field(default=0.2, gt=0, le=1)
    window: Duration = timedelta(minutes=15)
    min_calls: int = Field(default=5, ge=1)


class MissedJob(Rule):
    grace: Duration = timedelta(minutes=10)


class Undelivered(Rule):
    after: Duration = timedelta(minutes=15)


class Rules(_Keys):
    failure_rate: FailureRate = Field(default=FailureRate(), alias="failure-rate")
    stuck_run: StuckRun = Field(default=StuckRun(), alias="stuck-run")
    approval_sla: ApprovalSLA = Field(default=ApprovalSLA(), alias="approval-sla")
    budget_burn: BudgetBurn = Field(default=BudgetBurn(), alias="budget-burn")
    llm_errors: LLMErrors = Field(default=LLMErrors(), alias="llm-errors")
    missed_job: MissedJob = Field(default=MissedJob(), alias="missed-job")
    undelivered: Undelivered = Field(default=Undelivered(), alias="undelivered")


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class AlertSettings(_Keys):
    evaluate_every: Duration = timedelta(minutes=1)
    repeat_interval: Duration = timedelta(hours=4)
    rules: Rules = Rules()
    on_call: Annotated[list[str], BeforeValidator(_as_list)] = Field(default_factory=list)
    escalate_after: Duration = timedelta(minutes=30)

    @field_validator("evaluate_every")
    @classmethod
    def _evaluation_floor(cls, every: timedelta) -> timedelta:
        if every < timedelta(seconds=10):
            raise ValueError("evaluate at most every 10s (e.g. 1m)")
        return every

    _durations = field_validator("repeat_interval", "escalate_after")(_non_negative)
