"""Business hours in the business's own time zone, and the bookable slots inside them.

Hours are stored as JSON on the subscriber, in the form people write them::

    {"weekly": {"mon": ["09:00-12:00", "13:00-17:00"], ..., "sun": []},
     "exceptions": {"2026-12-25": [], "2026-12-24": ["09:00-12:00"]}}

No hours at all (``None``) means open around the clock. Wall-clock times are turned into
instants day by day through the IANA zone, so a DST change shortens or lengthens that day's
opening as a clock on the wall would: a time the change skips is read with the offset before
the change, and a time it repeats means its first occurrence.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_INTERVALS_PER_DAY = 6
MAX_EXCEPTIONS = 400
# How far ahead a next opening is looked for: a business closed for longer takes no bookings.
SEARCH_DAYS = 400
_INTERVAL = re.compile(r"(\d{2}):(\d{2})-(\d{2}):(\d{2})")


class HoursError(ValueError):
    """Opening hours that cannot be used; the message says which part and why."""


@dataclass(frozen=True, order=True)
class Interval:
    """One opening on a day, in minutes after local midnight (``closes`` may be 24:00)."""

    opens: int
    closes: int

    def __str__(self) -> str:
        return f"{_hhmm(self.opens)}-{_hhmm(self.closes)}"


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def parse_interval(text: str, where: str) -> Interval:
    match = _INTERVAL.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise HoursError(f"{where}: {text!r} is not an opening like 09:00-17:30")
    oh, om, ch, cm = (int(part) for part in match.groups())
    if oh > 23 or om > 59 or cm > 59 or ch > 24 or (ch == 24 and cm != 0):
        raise HoursError(f"{where}: {text!r} is not a time of day (00:00 to 24:00)")
    interval = Interval(oh * 60 + om, ch * 60 + cm)
    if interval.closes <= interval.opens:
        raise HoursError(f"{where}: {text!r} closes before it opens")
    return interval


def _parse_day(value: Any, where: str) -> tuple[Interval, ...]:
    if not isinstance(value, list):
        raise HoursError(f'{where}: give a list of openings like ["09:00-17:00"], or [] closed')
    if len(value) > MAX_INTERVALS_PER_DAY:
        raise HoursError(f"{where}: at most {MAX_INTERVALS_PER_DAY} openings a day")
    intervals = sorted(parse_interval(item, where) for item in value)
    for before, after in itertools.pairwise(intervals):
        if after.opens < before.closes:
            raise HoursError(f"{where}: {before} and {after} overlap")
    return tuple(intervals)


@dataclass(frozen=True)
class OpeningHours:
    """When a business takes calls; ``weekly is None`` means always."""

    zone: ZoneInfo
    weekly: tuple[tuple[Interval, ...], ...] | None = None
    exceptions: Mapping[date, tuple[Interval, ...]] = field(default_factory=dict)

    @classmethod
    def parse(cls, time_zone: str, data: Mapping[str, Any] | None) -> OpeningHours:
        """Validate stored or submitted hours; HoursError names the faulty part."""
        zone = ZoneInfo(time_zone)
        if data is None:
            return cls(zone)
        if not isinstance(data, Mapping):
            raise HoursError('hours: give an object with "weekly" and optionally "exceptions"')
        unknown = sorted(set(data) - {"weekly", "exceptions"})
        if unknown:
            raise HoursError(f"hours: unknown part {unknown[0]!r} (weekly, exceptions)")
        weekly_data = data.get("weekly")
        if not isinstance(weekly_data, Mapping):
            raise HoursError('hours: "weekly" must map mon…sun to openings')
        days = sorted(set(weekly_data) - set(WEEKDAYS))
        if days:
            raise HoursError(f"hours: {days[0]!r} is not a day (use {', '.join(WEEKDAYS)})")
        weekly = tuple(_parse_day(weekly_data.get(day, []), day) for day in WEEKDAYS)
        exceptions_data = data.get("exceptions") or {}
        if not isinstance(exceptions_data, Mapping):
            raise HoursError('hours: "exceptions" must map dates (2026-12-25) to openings')
        if len(exceptions_data) > MAX_EXCEPTIONS:
            raise HoursError(f"hours: at most {MAX_EXCEPTIONS} dated exceptions")
        exceptions: dict[date, tuple[Interval, ...]] = {}
        for key, value in exceptions_data.items():
            try:
                day = date.fromisoformat(key)
            except (TypeError, ValueError) as exc:
                raise HoursError(f"hours: exception {key!r} is not a date like 2026-12-25") from exc
            exceptions[day] = _parse_day(value, key)
        return cls(zone, weekly, exceptions)

    def to_json(self) -> dict[str, Any] | None:
        if self.weekly is None:
            return None
        return {
            "weekly": {day: [str(i) for i in self.weekly[n]] for n, day in enumerate(WEEKDAYS)},
            "exceptions": {
                day.isoformat(): [str(i) for i in intervals]
                for day, intervals in sorted(self.exceptions.items())
            },
        }

    @property
    def always_open(self) -> bool:
        return self.weekly is None

    def intervals_on(self, day: date) -> tuple[Interval, ...]:
        """The day's openings in local wall-clock time, exceptions first."""
        if self.weekly is None:
            return (Interval(0, 24 * 60),)
        if day in self.exceptions:
            return self.exceptions[day]
        return self.weekly[day.weekday()]

    def instant(self, day: date, minutes: int) -> datetime:
        """The UTC instant of a local wall-clock time (24:00 is the next midnight)."""
        extra, minutes = divmod(minutes, 24 * 60)
        local = datetime.combine(day + timedelta(days=extra), time(minutes // 60, minutes % 60))
        return local.replace(tzinfo=self.zone).astimezone(UTC)

    def local_date(self, at: datetime) -> date:
        return at.astimezone(self.zone).date()

    def day_ranges(self, day: date) -> Iterator[tuple[datetime, datetime]]:
        """The local day's openings as UTC ranges."""
        for interval in self.intervals_on(day):
            start, end = self.instant(day, interval.opens), self.instant(day, interval.closes)
            if end > start:  # an opening that a DST change swallowed whole is no opening
                yield start, end

    def ranges(
        self, start: datetime, *, days: int = SEARCH_DAYS
    ) -> Iterator[tuple[datetime, datetime]]:
        """Open ranges (UTC) that end after ``start``, in order; touching ranges merged."""
        first_day = self.local_date(start) - timedelta(days=1)
        pending: tuple[datetime, datetime] | None = None
        for offset in range(days + 2):
            for begin, end in self.day_ranges(first_day + timedelta(days=offset)):
                if pending is not None and begin <= pending[1]:
                    pending = (pending[0], max(pending[1], end))
                    continue
                if pending is not None and pending[1] > start:
                    yield pending
                pending = (begin, end)
        if pending is not None and pending[1] > start:
            yield pending

    def open_range_at(self, at: datetime) -> tuple[datetime, datetime] | None:
        """The open range containing ``at``, or None when closed then."""
        for begin, end in self.ranges(at, days=2):
            return (begin, end) if begin <= at else None
        return None

    def is_open(self, at: datetime) -> bool:
        return self.open_range_at(at) is not None

    def next_opening(self, at: datetime) -> datetime | None:
        """``at`` itself when open, else when it next opens; None if not within a year."""
        for begin, _end in self.ranges(at):
            return max(begin, at)
        return None

    def closes_at(self, at: datetime) -> datetime | None:
        """When the range open at ``at`` closes; None when closed at ``at``."""
        found = self.open_range_at(at)
        return found[1] if found else None


@dataclass(frozen=True)
class Slot:
    start: datetime
    end: datetime


def slots_on(hours: OpeningHours, day: date, length: timedelta) -> list[Slot]:
    """Whole slots of ``length`` inside each opening of the local ``day``, from its start."""
    found = []
    for begin, end in hours.day_ranges(day):
        start = begin
        while start + length <= end:
            found.append(Slot(start, start + length))
            start += length
    return found


def slot_containing(hours: OpeningHours, at: datetime, length: timedelta) -> Slot | None:
    """The bookable slot that ``at`` falls in, or None outside opening hours."""
    day = hours.local_date(at)
    for candidate_day in (day - timedelta(days=1), day):
        for slot in slots_on(hours, candidate_day, length):
            if slot.start <= at < slot.end:
                return slot
    return None


def end_of_local_day(hours: OpeningHours, at: datetime, days_after: int) -> datetime:
    """Local midnight ending the day ``days_after`` days after the day of ``at``."""
    day = hours.local_date(at) + timedelta(days=days_after)
    return hours.instant(day, 24 * 60)


def week_from_text(text: str) -> dict[str, Any] | None:
    """Weekly hours as written on a door: ``mon-fri 09:00-12:30,13:30-17:00; sat 10:00-14:00``.

    "always" means open around the clock (no hours); days not named are closed."""
    if text.strip().lower() == "always":
        return None
    weekly: dict[str, list[str]] = {day: [] for day in WEEKDAYS}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        days_text, _, openings = part.partition(" ")
        if not openings.strip():
            raise HoursError(f"{part!r}: give days and openings, like mon-fri 09:00-17:00")
        intervals = [o.strip() for o in openings.split(",") if o.strip()]
        for day in _days(days_text.lower()):
            weekly[day].extend(intervals)
    return {"weekly": weekly}


def _days(text: str) -> list[str]:
    days: list[str] = []
    for item in text.split(","):
        first, _, last = item.partition("-")
        if first not in WEEKDAYS or (last and last not in WEEKDAYS):
            raise HoursError(f"{item!r} is not a day or a range of days like mon-fri")
        start = WEEKDAYS.index(first)
        end = WEEKDAYS.index(last) if last else start
        if end < start:
            raise HoursError(f"{item!r}: a range of days runs forwards, like mon-fri")
        days.extend(WEEKDAYS[start : end + 1])
    return days


def week_to_text(hours: Mapping[str, Any] | None) -> str:
    """The inverse of ``week_from_text``: days with equal openings joined into ranges."""
    if hours is None:
        return "always"
    weekly = hours["weekly"]
    parts: list[str] = []
    n = 0
    while n < len(WEEKDAYS):
        openings = weekly.get(WEEKDAYS[n], [])
        last = n
        while last + 1 < len(WEEKDAYS) and weekly.get(WEEKDAYS[last + 1], []) == openings:
            last += 1
        if openings:
            days = WEEKDAYS[n] if last == n else f"{WEEKDAYS[n]}-{WEEKDAYS[last]}"
            parts.append(f"{days} {','.join(openings)}")
        n = last + 1
    return "; ".join(parts) or "closed"
