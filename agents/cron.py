"""Cron expressions as people write them, for APScheduler 3.

APScheduler 3's `CronTrigger.from_crontab` counts weekdays from Monday = 0, so the crontab
`0 9 * * 1-5` would fire Tuesday to Saturday. Here the weekday field is read the crontab way
(0 and 7 are Sunday) and handed to APScheduler as day names.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from apscheduler.triggers.cron import CronTrigger

_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]


def _weekday_number(text: str) -> int:
    lowered = text.strip().lower()
    if lowered[:3] in _DAYS and not lowered.isdigit():
        return _DAYS.index(lowered[:3])
    if not lowered.isdigit() or int(lowered) > 7:
        raise ValueError(f"{text!r} is not a weekday (0-7 or sun-sat)")
    return int(lowered) % 7


def _weekdays(field: str) -> str:
    """The crontab weekday field -> an explicit, comma-separated list of day names."""
    if field == "*":
        return "*"
    days: set[int] = set()
    for item in field.split(","):
        part, _, step_text = item.partition("/")
        step = int(step_text) if step_text.isdigit() and int(step_text) > 0 else None
        if step_text and step is None:
            raise ValueError(f"{item!r}: the step after / must be a positive number")
        if part == "*":
            first, last = 0, 6
        elif "-" in part:
            low, high = part.split("-", 1)
            first, last = _weekday_number(low), _weekday_number(high)
            if high.strip() == "7":
                last = 7
            if last < first:
                raise ValueError(f"{item!r}: a range must go from a lower day to a higher one")
        else:
            first = last = _weekday_number(part)
        days.update(d % 7 for d in range(first, last + 1, step or 1))
    return ",".join(_DAYS[d] for d in sorted(days))


def cron_trigger(expression: str, timezone: str = "UTC") -> CronTrigger:
    """`minute hour day month weekday` in `timezone` (an IANA name). Raises ValueError."""
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(
            f"{expression!r} has {len(fields)} fields; a cron schedule has 5: "
            "minute hour day month weekday (e.g. '0 9 * * 1-5')"
        )
    minute, hour, day, month, weekday = fields
    return CronTrigger(
        minute=minute,
        hour=hour,
        day=day,
        month=month,
        day_of_week=_weekdays(weekday),
        timezone=timezone,
    )


def period_of(when: datetime) -> str:
    """The period a fire stands for: its minute, in UTC (cron's resolution)."""
    return when.astimezone(UTC).replace(second=0, microsecond=0).isoformat(timespec="minutes")


def last_fire(trigger: CronTrigger, at_or_before: datetime) -> datetime | None:
    """The latest time `trigger` fires at or before `at_or_before` (within about a year)."""
    for lookback in (timedelta(hours=1), timedelta(days=1), timedelta(days=8), timedelta(days=400)):
        fires = fires_between(trigger, at_or_before - lookback, at_or_before)
        if fires:
            return fires[-1]
    return None


def fires_between(trigger: CronTrigger, after: datetime, until: datetime) -> list[datetime]:
    """The times (in UTC) `trigger` fires after `after` and at or before `until`, oldest
    first.

    In the hour repeated when clocks go back, APScheduler places a local time at its first
    occurrence, before the time asked about; the second occurrence is passed over (cron runs
    a job at a fixed time once that night), and the search always moves forward."""
    fires: list[datetime] = []
    # in UTC: two times in one zone compare by their wall clocks, the repeated hour's alike
    cursor, until = after.astimezone(UTC) + timedelta(microseconds=1), until.astimezone(UTC)
    while cursor <= until:
        found = trigger.get_next_fire_time(None, cursor)
        when = found.astimezone(UTC) if found is not None else None
        if when is None or when > until:
            break
        if when < cursor:  # the repeated hour: step through it
            cursor += timedelta(minutes=1)
            continue
        fires.append(when)
        cursor = when + timedelta(seconds=1)
    return fires
