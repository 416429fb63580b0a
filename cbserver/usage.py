"""Usage per subscriber: call-back attempts, connected calls and billable minutes, per day of a
month in the subscriber's own time zone.

A call-back's billable seconds are Asterisk's, from each attempt's call detail record of its
bridged legs (cdr_manager over AMI, see ami.py): from the first leg's answer (the agent's,
whisper included, when the agent is called first) to the end of the call. A return call (a
visitor ringing back, dialplan/agi.py) is an attempt too, connected when an agent answered; its
seconds are cbserver's, from the agent's answer to the end of the call.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from cbserver.errors import FieldError
from cbserver.models import CallAttempt, CallbackRequest, Subscriber

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
# Clear of datetime's ends (years 1 and 9999), which a month's bounds in UTC would cross: an
# OverflowError, not an answer.
YEARS = (1970, 9998)


class UsageError(FieldError):
    """A usage question that cannot be answered as asked."""


@dataclass(frozen=True)
class Usage:
    """One day's (or the month's) figures."""

    attempts: int = 0
    connected: int = 0
    billable_seconds: int = 0

    @property
    def billable_minutes(self) -> float:
        return round(self.billable_seconds / 60, 1)

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.attempts + other.attempts,
            self.connected + other.connected,
            self.billable_seconds + other.billable_seconds,
        )

    def as_json(self) -> dict[str, int | float]:
        return {
            "attempts": self.attempts,
            "connected": self.connected,
            "billable_seconds": self.billable_seconds,
            "billable_minutes": self.billable_minutes,
        }


@dataclass(frozen=True)
class MonthUsage:
    subscriber: str
    month: str  # YYYY-MM
    time_zone: str
    days: dict[date, Usage]  # every day of the month, in order

    @property
    def total(self) -> Usage:
        return sum(self.days.values(), Usage())

    def as_json(self) -> dict[str, object]:
        return {
            "subscriber": self.subscriber,
            "month": self.month,
            "time_zone": self.time_zone,
            "days": [{"date": day.isoformat(), **u.as_json()} for day, u in self.days.items()],
            "total": self.total.as_json(),
        }


def parse_month(text: str) -> date:
    """``2026-11`` -> the month's first day; UsageError names the field and the form."""
    match = _MONTH.fullmatch(text.strip())
    if match is None or not 1 <= int(match.group(2)) <= 12:
        raise UsageError("month", f"month {text!r} is not a month like 2026-11")
    first_year, last_year = YEARS
    if not first_year <= int(match.group(1)) <= last_year:
        raise UsageError(
            "month",
            f"month {text!r} is out of range: give one like 2026-11, "
            f"from {first_year}-01 to {last_year}-12",
        )
    return date(int(match.group(1)), int(match.group(2)), 1)


def this_month(subscriber: Subscriber, now: datetime) -> date:
    """The first day of the month ``now`` is in, in the subscriber's time zone."""
    return now.astimezone(ZoneInfo(subscriber.time_zone)).date().replace(day=1)


def _next_month(first: date) -> date:
    return (first + timedelta(days=32)).replace(day=1)


def month_usage(session: Session, subscriber: Subscriber, month: date) -> MonthUsage:
    """The subscriber's usage in ``month`` (its first day), day by day in its time zone."""
    zone = ZoneInfo(subscriber.time_zone)
    end = _next_month(month)
    start_at = datetime.combine(month, time(), zone).astimezone(UTC)
    end_at = datetime.combine(end, time(), zone).astimezone(UTC)
    days = {month + timedelta(days=n): Usage() for n in range((end - month).days)}
    rows = session.execute(
        select(CallAttempt.started_at, CallAttempt.outcome, CallAttempt.billable_seconds)
        .join(CallbackRequest, CallbackRequest.id == CallAttempt.request_id)
        .where(
            CallbackRequest.subscriber_id == subscriber.id,
            CallAttempt.started_at >= start_at,
            CallAttempt.started_at < end_at,
        )
    )
    for started_at, outcome, billable in rows:
        day = started_at.astimezone(zone).date()
        days[day] = days[day] + Usage(1, int(outcome == "answered"), billable or 0)
    return MonthUsage(subscriber.slug, f"{month:%Y-%m}", subscriber.time_zone, days)
