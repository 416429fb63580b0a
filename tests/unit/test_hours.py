"""Opening hours and slots in the business's own zone, across DST changes and holidays."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from cbserver.hours import HoursError, OpeningHours, end_of_local_day, slot_containing, slots_on

WEEKDAYS_9_TO_5 = {
    "weekly": {day: ["09:00-17:00"] for day in ("mon", "tue", "wed", "thu", "fri")},
}
QUARTER = timedelta(minutes=15)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def berlin(data: dict[str, Any] | None = None) -> OpeningHours:
    return OpeningHours.parse("Europe/Berlin", WEEKDAYS_9_TO_5 if data is None else data)


def test_no_hours_means_open_around_the_clock() -> None:
    hours = OpeningHours.parse("Europe/Berlin", None)
    assert hours.always_open
    assert hours.is_open(at("2026-12-25T03:00:00+01:00"))
    assert hours.to_json() is None


@pytest.mark.parametrize(
    ("moment", "is_open"),
    [
        ("2026-11-27T08:59:59+01:00", False),  # Friday, a second before opening
        ("2026-11-27T09:00:00+01:00", True),
        ("2026-11-27T16:59:59+01:00", True),
        ("2026-11-27T17:00:00+01:00", False),  # closing time itself is closed
        ("2026-11-28T12:00:00+01:00", False),  # Saturday
    ],
)
def test_open_is_read_on_the_local_wall_clock(moment: str, is_open: bool) -> None:
    assert berlin().is_open(at(moment)) is is_open


def test_the_next_opening_skips_the_weekend_in_local_time() -> None:
    friday_evening = at("2026-11-27T18:00:00+01:00")
    assert berlin().next_opening(friday_evening) == at("2026-11-30T09:00:00+01:00")
    assert berlin().closes_at(at("2026-11-30T10:00:00+01:00")) == at("2026-11-30T17:00:00+01:00")


@pytest.mark.parametrize(
    ("zone", "monday", "utc_offset_before", "utc_offset_after"),
    [
        # Spring: the clocks go forward on the Sunday; Monday opens at 09:00 local, an hour
        # earlier in UTC than the Friday before.
        ("Europe/Berlin", date(2026, 3, 30), 1, 2),
        ("America/New_York", date(2026, 3, 9), -5, -4),
        # Autumn: back again, an hour later in UTC.
        ("Europe/Berlin", date(2026, 10, 26), 2, 1),
        ("America/New_York", date(2026, 11, 2), -4, -5),
    ],
)
def test_opening_stays_at_nine_local_across_dst_changes(
    zone: str, monday: date, utc_offset_before: int, utc_offset_after: int
) -> None:
    hours = OpeningHours.parse(zone, WEEKDAYS_9_TO_5)
    friday = monday - timedelta(days=3)
    friday_opens = hours.next_opening(datetime(friday.year, friday.month, friday.day, tzinfo=UTC))
    assert friday_opens == datetime(
        friday.year, friday.month, friday.day, 9 - utc_offset_before, tzinfo=UTC
    )
    after_close = datetime.combine(friday, datetime.min.time(), UTC) + timedelta(hours=23)
    monday_opens = hours.next_opening(after_close)
    assert monday_opens == datetime(
        monday.year, monday.month, monday.day, 9 - utc_offset_after, tzinfo=UTC
    )


def test_the_night_the_clocks_go_forward_is_an_hour_shorter() -> None:
    night = OpeningHours.parse(
        "Europe/Berlin", {"weekly": {"sat": ["22:00-24:00"], "sun": ["00:00-06:00"]}}
    )
    begin, end = next(night.ranges(at("2026-03-28T12:00:00+01:00")))
    assert begin == at("2026-03-28T22:00:00+01:00")
    assert end == at("2026-03-29T06:00:00+02:00"), "Saturday night runs on into Sunday"
    assert end - begin == timedelta(hours=7)
    slots = slots_on(night, date(2026, 3, 29), timedelta(hours=1))
    assert len(slots) == 5, "00:00 to 06:00 on the day of the change holds five hours"


def test_the_night_the_clocks_go_back_is_an_hour_longer() -> None:
    night = OpeningHours.parse("America/New_York", {"weekly": {"sun": ["00:00-06:00"]}})
    slots = slots_on(night, date(2026, 11, 1), timedelta(hours=1))
    assert len(slots) == 7
    assert slots[0].start == at("2026-11-01T00:00:00-04:00")
    assert slots[-1].end == at("2026-11-01T06:00:00-05:00")


def test_holidays_and_special_hours_override_the_week() -> None:
    hours = berlin(
        {
            **WEEKDAYS_9_TO_5,
            "exceptions": {
                "2026-12-24": ["09:00-12:00"],
                "2026-12-25": [],
                "2026-12-27": ["10:00-14:00"],
            },
        }
    )
    assert hours.closes_at(at("2026-12-24T10:00:00+01:00")) == at("2026-12-24T12:00:00+01:00")
    assert hours.next_opening(at("2026-12-24T12:00:00+01:00")) == at("2026-12-27T10:00:00+01:00"), (
        "Christmas Day closed, Saturday closed, the Sunday opens specially"
    )
    assert hours.next_opening(at("2026-12-27T14:00:00+01:00")) == at("2026-12-28T09:00:00+01:00")


def test_several_openings_a_day_and_slots_at_their_edges() -> None:
    hours = berlin({"weekly": {"mon": ["09:00-12:00", "13:00-14:10"]}})
    slots = slots_on(hours, date(2026, 11, 30), QUARTER)
    starts = [s.start.astimezone(hours.zone).strftime("%H:%M") for s in slots]
    assert starts[:1] == ["09:00"]
    assert "11:45" in starts, "the last whole slot before the lunch break"
    assert "12:00" not in starts
    assert starts[-1] == "13:45", "14:00-14:15 would run past closing"
    assert len(slots) == 12 + 4
    assert slot_containing(hours, at("2026-11-30T11:59:00+01:00"), QUARTER) == slots[11]
    assert slot_containing(hours, at("2026-11-30T12:30:00+01:00"), QUARTER) is None
    assert slot_containing(hours, at("2026-11-30T14:05:00+01:00"), QUARTER) is None


def test_lunch_break_is_closed() -> None:
    hours = berlin({"weekly": {"mon": ["09:00-12:00", "13:00-17:00"]}})
    assert hours.next_opening(at("2026-11-30T12:15:00+01:00")) == at("2026-11-30T13:00:00+01:00")


def test_touching_openings_merge_across_midnight() -> None:
    hours = berlin({"weekly": {"mon": ["20:00-24:00"], "tue": ["00:00-02:00"]}})
    assert hours.closes_at(at("2026-11-30T23:00:00+01:00")) == at("2026-12-01T02:00:00+01:00")


def test_a_business_closed_for_good_has_no_next_opening() -> None:
    assert berlin({"weekly": {}}).next_opening(at("2026-11-27T12:00:00+01:00")) is None


def test_end_of_day_is_local_midnight() -> None:
    hours = berlin()
    assert end_of_local_day(hours, at("2026-11-27T23:30:00+01:00"), 0) == at(
        "2026-11-28T00:00:00+01:00"
    )
    assert end_of_local_day(hours, at("2026-03-28T10:00:00+01:00"), 1) == at(
        "2026-03-30T00:00:00+02:00"
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"weekly": {"mon": ["9-17"]}}, "mon: '9-17' is not an opening like 09:00-17:30"),
        ({"weekly": {"mon": ["17:00-09:00"]}}, "closes before it opens"),
        ({"weekly": {"mon": ["09:00-12:00", "11:00-13:00"]}}, "overlap"),
        ({"weekly": {"mon": ["25:00-26:00"]}}, "not a time of day"),
        ({"weekly": {"funday": []}}, "'funday' is not a day"),
        ({"weekly": {"mon": "09:00-17:00"}}, "give a list of openings"),
        ({"weekly": {}, "exceptions": {"Christmas": []}}, "not a date"),
        ({"weekly": {}, "holidays": {}}, "unknown part 'holidays'"),
        ({"exceptions": {}}, '"weekly" must map'),
        ({"weekly": {"mon": ["08:00-09:00"] * 7}}, "at most 6 openings a day"),
    ],
)
def test_bad_hours_are_refused_saying_what_is_wrong(data: dict[str, Any], message: str) -> None:
    with pytest.raises(HoursError, match=message):
        OpeningHours.parse("Europe/Berlin", data)


def test_hours_read_back_as_written() -> None:
    data = {
        "weekly": {"mon": ["13:00-17:00", "09:00-12:00"], "sat": ["10:00-24:00"]},
        "exceptions": {"2026-12-25": []},
    }
    shown = berlin(data).to_json()
    assert shown is not None
    assert shown["weekly"]["mon"] == ["09:00-12:00", "13:00-17:00"]
    assert shown["weekly"]["sat"] == ["10:00-24:00"]
    assert shown["weekly"]["sun"] == []
    assert shown["exceptions"] == {"2026-12-25": []}
    assert berlin(shown) == berlin(data)
