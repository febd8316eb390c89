"""The alert lifecycle, as Prometheus and Alertmanager run it, over rows in the database.

Every `evaluate_every` the rules (agents.alert_rules) say which conditions hold. A condition
without an open alert opens one, pending; it fires once it has held for the rule's `for`, and
resolves once it has been clear for `keep_firing_for` (a pending alert that clears is simply
dropped). A firing alert posts one card in each ops channel, edited in place as it changes,
with every change as a reply in the card's thread: repeats after `repeat_interval`, the
escalation to `on_call` after `escalate_after`, acknowledgements (👀, anyone), silences (🔕 or
`/crew silence`, only admins, on-call people and the `ops` role) and the resolution.
Acknowledged or silenced alerts neither repeat nor escalate. Alerts that start firing in the
same evaluation share one card that lists them all (as bad as the worst of them): 👀 and 🔕
on it act on each of them, and their repeats and escalation are one reply for the card.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlmodel import Session

from agents.alert_rules import EVALUATION_JOB, Condition, conditions
from agents.approvals import normalize_emoji
from agents.config import CrewConfig
from agents.lifecycle import Clock
from agents.monitoring_config import Rule
from agents.outcomes import Acknowledged, Ignored, Noted, Outcome, Refused, Silenced
from agents.permissions import Permissions, identities
from storage import outbox
from storage.alert_queries import cards_of, group_members, lock_alert, open_alerts, times_fired
from storage.audit import audit
from storage.db import Database
from storage.jobs import claim_period
from storage.models import Alert, AlertState, Message, MessageKind, as_utc

ACKNOWLEDGE = {"eyes", "👀"}
SILENCE = {"no_bell", "🔕"}
SILENCE_BY_REACTION = timedelta(hours=1)
OPS_ROLE = "ops"
FLAP_WINDOW = timedelta(hours=1)  # firing this many times within it is flapping,
FLAP_FIRINGS = 3  # and a flapping alert resolves only once clear for the whole window
INHIBITOR = "llm-errors"  # the provider failing explains runs failing:
INHIBITED = {"failure-rate"}  # these are listed in its card instead of posted
NOTE_SHOWN = 500  # characters of a note a card shows (all of it is stored)
WORST_FIRST = (AlertState.FIRING, AlertState.PENDING, AlertState.RESOLVED)  # a card's colour


def _silenced(alert: Alert, now: datetime) -> bool:
    until = as_utc(alert.silenced_until)
    return until is not None and until > now


def _cut(text: str, limit: int = NOTE_SHOWN) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _when(at: datetime | None) -> str | None:
    at = as_utc(at)
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if at else None


def _seconds(since: datetime | None, now: datetime) -> int | None:
    since = as_utc(since)
    return int((now - since).total_seconds()) if since else None


class AlertService:
    def __init__(self, config: CrewConfig, permissions: Permissions, clock: Clock) -> None:
        self.config = config
        self.permissions = permissions
        self.clock = clock
        self.acknowledge_emoji = {normalize_emoji(e) for e in ACKNOWLEDGE}
        self.silence_emoji = {normalize_emoji(e) for e in SILENCE}

    # -- who may do what ----------------------------------------------------------------

    def may_silence(self, who: str, roles: Iterable[str] = ()) -> bool:
        """Admins, the on-call people and the `ops` role, each as a person or as a platform
        role they hold (a Discord role id carried by the event: `discord:role:42`)."""
        config = self.config
        allowed = config.members(config.alerts.on_call) | set(config.roles.get(OPS_ROLE, []))
        return self.permissions.is_admin(who, roles) or not identities(who, roles).isdisjoint(
            allowed
        )

    def rule(self, name: str) -> Rule:
        """A rule's settings by its name in crewchief.yml (`failure-rate` is `failure_rate`)."""
        rule: Rule = getattr(self.config.alerts.rules, name.replace("-", "_"))
        return rule

    # -- evaluation ---------------------------------------------------------------------

    def evaluate(self, session: Session, now: datetime) -> None:
        """One evaluation of every rule, and what it changes, in the caller's transaction."""
        holding = {c.key: c for c in conditions(session, self.config, now)}
        alerts = {a.key: a for a in open_alerts(session, lock=True)}
        fired: list[Alert] = []
        for key, condition in holding.items():
            alert = alerts.get(key) or self._open(session, condition, now)
            alerts[key] = alert
            alert.last_true_at = now
            alert.summary = condition.summary
            held = now - alert.started_at
            if alert.state == AlertState.PENDING and held >= self.rule(alert.rule).for_:
                alert.state = AlertState.FIRING
                alert.fired_at = now
                alert.notified_at = now
                fired.append(alert)
            session.add(alert)
        for key, alert in alerts.items():
            if key in holding:
                continue
            if alert.state == AlertState.PENDING:
                session.delete(alert)  # it never fired: nobody heard of it
            elif now - alert.last_true_at >= self._hold(session, alert, now):
                self._resolve(session, alert, now)
        firing = [a for a in alerts.values() if a.state == AlertState.FIRING]
        explained = self._inhibited(session, firing, fired)
        posting: list[Alert] = []
        repeats: dict[int, list[Alert]] = {}  # by the card they share
        escalations: dict[int, list[Alert]] = {}
        for alert in firing:
            if alert.id in explained:
                continue
            if alert in fired or (alert.rule in INHIBITED and not self._cards(session, alert)):
                posting.append(alert)  # new, or no longer explained by the provider
            elif not self._quiet(alert, now):
                if self._repeat_due(alert, now):
                    repeats.setdefault(_group_of(alert), []).append(alert)
                if self._escalation_due(alert, now):
                    escalations.setdefault(_group_of(alert), []).append(alert)
        if posting:
            self._fire(session, posting, now)
        for members in repeats.values():
            self._repeat(session, members, now)
        for members in escalations.values():
            self._escalate(session, members, now)
        if explained:
            for alert in firing:
                if alert.rule == INHIBITOR and alert not in fired:
                    self._edit_cards(session, alert, now)

    def _inhibited(self, session: Session, firing: list[Alert], fired: list[Alert]) -> set[int]:
        """Failure-rate alerts the LLM provider's errors explain: those firing without a card
        of their own while an llm-errors alert fires. They are listed in its card instead."""
        if not any(a.rule == INHIBITOR for a in firing):
            return set()
        return {
            a.id
            for a in firing
            if a.id is not None
            and a.rule in INHIBITED
            and (a in fired or not self._cards(session, a))
        }

    def _explains_for(self, session: Session, alert: Alert) -> list[str]:
        """What a firing llm-errors alert explains (nothing for any other alert)."""
        if alert.rule != INHIBITOR or alert.state != AlertState.FIRING:
            return []
        firing = [a for a in open_alerts(session) if a.state == AlertState.FIRING]
        return self._explains(session, firing)

    def _explains(self, session: Session, firing: list[Alert]) -> list[str]:
        explained = self._inhibited(session, firing, [])
        return [a.summary for a in firing if a.id in explained]

    def _flapping(self, session: Session, alert: Alert, now: datetime) -> bool:
        """It fired FLAP_FIRINGS times (this time included) within the window before this
        firing; it stays flapping until it resolves."""
        if alert.state != AlertState.FIRING or alert.fired_at is None:
            return False
        return times_fired(session, alert.key, alert.fired_at - FLAP_WINDOW) >= FLAP_FIRINGS

    def _hold(self, session: Session, alert: Alert, now: datetime) -> timedelta:
        """How long a firing alert must be clear before it resolves: `keep_firing_for`, or
        the whole flapping window for an alert that keeps flipping."""
        hold = self.rule(alert.rule).keep_firing_for
        return max(hold, FLAP_WINDOW) if self._flapping(session, alert, now) else hold

    def _open(self, session: Session, condition: Condition, now: datetime) -> Alert:
        alert = Alert(
            key=condition.key,
            rule=condition.rule,
            labels=dict(condition.labels),
            summary=condition.summary,
            state=AlertState.PENDING,
            started_at=now,
            last_true_at=now,
        )
        session.add(alert)
        session.flush()
        return alert

    def _quiet(self, alert: Alert, now: datetime) -> bool:
        """Acknowledged or silenced: no repeats, no escalation."""
        return alert.acknowledged_by is not None or _silenced(alert, now)

    def _fire(self, session: Session, alerts: list[Alert], now: datetime) -> None:
        """Post the card of the alerts that start firing in this evaluation, in each ops
        channel: one alert's own card, or one card that lists them all."""
        first = alerts[0]
        assert first.id is not None
        for alert in alerts:
            alert.group_id = first.id
            session.add(alert)
        template, card = self._card(session, alerts, now)
        for platform, channel in self.config.ops.targets():
            key = f"alert:{first.id}:{platform}:{channel}"
            outbox.post(
                session,
                key=key,
                kind=MessageKind.ALERT,
                platform=platform,
                channel=channel,
                template=template,
                context=card,
                alert_id=first.id,
                order_key=key,
            )
        for alert in alerts:
            audit(session, "crewchief", "alert.fired", None, alert=alert.id, key=alert.key)

    def _resolve(self, session: Session, alert: Alert, now: datetime) -> None:
        alert.state = AlertState.RESOLVED
        alert.resolved_at = now
        session.add(alert)
        self._changed(session, [alert], now, "resolved", {"after_s": _seconds(alert.fired_at, now)})

    def _repeat_due(self, alert: Alert, now: datetime) -> bool:
        last = as_utc(alert.notified_at) or now
        return now - last >= self.config.alerts.repeat_interval

    def _repeat(self, session: Session, alerts: list[Alert], now: datetime) -> None:
        """One reply in the thread of their card for the alerts of it that repeat now."""
        for alert in alerts:
            alert.notified_at = now
            session.add(alert)
        fired = min(as_utc(a.fired_at) or now for a in alerts)
        self._reply(
            session,
            alerts,
            f"repeat:{now.isoformat(timespec='seconds')}",
            {"event": "repeat", "firing_s": _seconds(fired, now)},
        )

    def _escalation_due(self, alert: Alert, now: datetime) -> bool:
        fired = as_utc(alert.fired_at)
        if not self.config.alerts.on_call or alert.escalated_at is not None or fired is None:
            return False
        return now - fired >= self.config.alerts.escalate_after

    def _escalate(self, session: Session, alerts: list[Alert], now: datetime) -> None:
        """One mention of `on_call` in the thread of their card for the alerts of it that
        nobody acknowledged in time."""
        for alert in alerts:
            alert.escalated_at = now
            session.add(alert)
        fired = min(as_utc(a.fired_at) or now for a in alerts)
        key = "escalated" if len(alerts) == 1 else "escalated:" + ",".join(_ids(alerts))
        self._reply(
            session,
            alerts,
            key,
            {
                "event": "escalated",
                "on_call": sorted(self.config.members(self.config.alerts.on_call)),
                "firing_s": _seconds(fired, now),
            },
        )

    # -- people ---------------------------------------------------------------------------

    def reaction_added(
        self,
        session: Session,
        who: str,
        message: Message,
        emoji: str,
        roles: tuple[str, ...] = (),
    ) -> Outcome:
        """👀 or 🔕 on a card: for every alert the card shows."""
        if message.alert_id is None:
            return Ignored(quiet=True)
        name = normalize_emoji(emoji)
        if name not in self.acknowledge_emoji | self.silence_emoji:
            return Ignored(quiet=True)
        alerts = self.card_alerts(session, message.alert_id)
        if not alerts:
            return Ignored(quiet=True)
        if name in self.acknowledge_emoji:
            return self.acknowledge(session, alerts, who)
        return self.silence(session, alerts, who, SILENCE_BY_REACTION, None, roles)

    def card_alerts(self, session: Session, alert_id: int) -> list[Alert]:
        """The alerts the cards of alert `alert_id` show, locked: the alert itself, or the
        group it posted for."""
        alert = lock_alert(session, alert_id)
        if alert is None:
            return []
        return group_members(session, alert.group_id, lock=True) if alert.group_id else [alert]

    def acknowledge(self, session: Session, alerts: list[Alert], who: str) -> Outcome:
        """Acknowledge each firing alert of one card that nobody acknowledged yet."""
        firing = [a for a in alerts if a.state == AlertState.FIRING]
        if not firing:
            first = alerts[0]
            return Ignored(f"alert {first.id} is {first.state}; there is nothing to acknowledge")
        fresh = [a for a in firing if a.acknowledged_by is None]
        if not fresh:
            return Ignored(f"alert {firing[0].id} is already acknowledged", quiet=True)
        now = self.clock()
        for alert in fresh:
            alert.acknowledged_by = who
            alert.acknowledged_at = now
            session.add(alert)
            audit(session, who, "alert.acknowledged", None, alert=alert.id)
        self._changed(session, fresh, now, "acknowledged", {"who": who})
        assert fresh[0].id is not None
        return Acknowledged(fresh[0].id, who)

    def silence(
        self,
        session: Session,
        alerts: list[Alert],
        who: str,
        duration: timedelta,
        reason: str | None,
        roles: tuple[str, ...] = (),
    ) -> Outcome:
        """Silence the alerts of one card that have not resolved."""
        if not self.may_silence(who, roles):
            return Refused(
                "only admins, the on-call people and the ops role may silence alerts",
                action="alert.silence.refused",
                detail={"alert": alerts[0].id},
            )
        open_ = [a for a in alerts if a.state != AlertState.RESOLVED]
        if not open_:
            return Ignored(f"alert {alerts[0].id} is resolved; there is nothing to silence")
        now = self.clock()
        until = _when(now + duration)
        for alert in open_:
            alert.silenced_by = who
            alert.silenced_until = now + duration
            alert.silence_reason = reason
            session.add(alert)
            audit(session, who, "alert.silenced", None, alert=alert.id, until=until)
        self._changed(
            session,
            open_,
            now,
            f"silenced:{now.isoformat(timespec='seconds')}",
            {"who": who, "until": until, "reason": reason},
            event="silenced",
        )
        assert open_[0].id is not None
        return Silenced(open_[0].id, until or "")

    def thread_reply(self, session: Session, who: str, card: Message, text: str) -> Outcome:
        """A reply in a card's thread: the acknowledger's first one after their 👀 is kept as
        the note of each alert of the card they acknowledged (anyone else's is chatter)."""
        if card.alert_id is None:
            return Ignored(quiet=True)
        alerts = [
            a
            for a in self.card_alerts(session, card.alert_id)
            if a.acknowledged_by == who and a.note is None
        ]
        if not alerts or not text.strip():
            return Ignored(quiet=True)
        now = self.clock()
        for alert in alerts:
            alert.note = text.strip()
            alert.noted_at = now
            session.add(alert)
            audit(session, who, "alert.noted", None, alert=alert.id)
        self._edit_cards(session, alerts[0], now)
        assert alerts[0].id is not None
        return Noted(alerts[0].id, who)

    # -- messages -------------------------------------------------------------------------

    def card_context(
        self,
        alert: Alert,
        now: datetime,
        explains: list[str] | None = None,
        *,
        flapping: bool = False,
    ) -> dict[str, Any]:
        silenced = _silenced(alert, now)
        return {
            "explains": explains or [],
            "flapping": flapping,
            "alert_id": alert.id,
            "rule": alert.rule,
            "labels": dict(alert.labels),
            "summary": alert.summary,
            "state": alert.state,
            "fired_at": _when(alert.fired_at),
            "resolved_after_s": _seconds(alert.fired_at, as_utc(alert.resolved_at) or now)
            if alert.resolved_at
            else None,
            "acknowledged_by": alert.acknowledged_by,
            "silenced_by": alert.silenced_by if silenced else None,
            "silenced_until": _when(alert.silenced_until) if silenced else None,
            "silence_reason": alert.silence_reason if silenced else None,
            "note": _cut(alert.note) if alert.note else None,
            "note_by": alert.acknowledged_by if alert.note else None,
        }

    def _members(self, session: Session, alert: Alert) -> list[Alert]:
        """The alerts that share `alert`'s card (only itself when it was posted alone)."""
        if alert.group_id is None:
            return [alert]
        return group_members(session, alert.group_id) or [alert]

    def _cards(self, session: Session, alert: Alert) -> list[Message]:
        """The cards that show `alert`, one per ops channel (none before it is posted)."""
        return cards_of(session, alert.group_id or alert.id or 0)

    def _card(
        self, session: Session, alerts: list[Alert], now: datetime
    ) -> tuple[str, dict[str, Any]]:
        """The template and context of the card that shows `alerts`: one alert's own card,
        or a card listing several, as bad as the worst of them (firing while any fires)."""
        shown = [
            self.card_context(
                alert,
                now,
                self._explains_for(session, alert),
                flapping=self._flapping(session, alert, now),
            )
            for alert in alerts
        ]
        if len(shown) == 1:
            return "alert", shown[0]
        states = {alert.state for alert in alerts}
        state = next(s for s in WORST_FIRST if s in states)
        return "alert_group", {
            "alert_id": alerts[0].id,
            "alert_ids": [alert.id for alert in alerts],
            "state": state,
            "fired_at": _when(alerts[0].fired_at),
            "alerts": shown,
            "unacknowledged": any(
                a.state == AlertState.FIRING and a.acknowledged_by is None for a in alerts
            ),
        }

    def _edit_cards(self, session: Session, alert: Alert, now: datetime) -> list[Message]:
        """Edit the cards that show `alert` to how it (and its group) is now."""
        cards = self._cards(session, alert)
        if cards:
            template, card = self._card(session, self._members(session, alert), now)
            for message in cards:
                outbox.update(
                    session, message, template=template, context=card, order_key=message.key
                )
        return cards

    def _changed(
        self,
        session: Session,
        alerts: list[Alert],
        now: datetime,
        key: str,
        context: dict[str, Any],
        event: str | None = None,
    ) -> None:
        """Edit the cards of `alerts` (alerts of one card) and say what changed in their
        threads, once for all of them."""
        cards = self._edit_cards(session, alerts[0], now)
        self._reply(session, alerts, key, {"event": event or key, **context}, cards)

    def _reply(
        self,
        session: Session,
        alerts: list[Alert],
        key: str,
        context: dict[str, Any],
        cards: list[Message] | None = None,
    ) -> None:
        """A reply in the thread of each card of `alerts` (alerts of one card; `cards` when
        already read), naming each of them when there are several."""
        first = alerts[0]
        about: dict[str, Any] = {
            "alert_id": first.id,
            "rule": first.rule,
            "summary": first.summary,
            "acknowledged_by": first.acknowledged_by,
            "members": [
                {
                    "alert_id": a.id,
                    "rule": a.rule,
                    "labels": dict(a.labels),
                    "summary": a.summary,
                }
                for a in alerts
            ]
            if len(alerts) > 1
            else [],
        }
        for message in cards if cards is not None else self._cards(session, first):
            outbox.post(
                session,
                key=f"{message.key}:{key}",
                kind=MessageKind.ALERT_UPDATE,
                platform=message.platform,
                channel=message.channel,
                template="alert_update",
                context={**about, **context},
                thread_of=message.id,
                alert_id=message.alert_id,
                order_key=message.key,
            )


def _group_of(alert: Alert) -> int:
    return alert.group_id or alert.id or 0


def _ids(alerts: list[Alert]) -> list[str]:
    return [str(a.id) for a in alerts]


def run_evaluation(db: Database, service: AlertService, now: datetime, period: str) -> bool:
    """One scheduled evaluation; False when another fire already evaluated `period`."""
    with db.transaction() as session:
        if claim_period(session, EVALUATION_JOB, period, now) is None:
            return False
        service.evaluate(session, now)
    return True
