"""A subscriber's usage in a month, on SQLite and PostgreSQL: attempts, connected calls and
billable seconds, counted on the day they were in the subscriber's own time zone."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from sqlalchemy.orm import Session

from cbserver.intake import Submission, submit
from cbserver.models import CallAttempt, Subscriber
from cbserver.subscribers import add_subscriber
from cbserver.usage import Usage, UsageError, month_usage, parse_month, this_month

pytestmark = pytest.mark.postgres

NOVEMBER = date(2026, 11, 1)
DECEMBER = date(2026, 12, 1)
ASKED_AT = datetime(2026, 10, 30, 9, 0, tzinfo=UTC)


@pytest.fixture
def bolt(session: Session) -> Subscriber:
    """A business in Berlin: one hour ahead of UTC in November."""
    return add_subscriber(
        session,
        "bolt",
        display_name="Bolt Elektro",
        country="DE",
        caller_id="+49 30 901820",
        time_zone="Europe/Berlin",
    )


def ask(session: Session, slug: str, phone: str = "+4915123456789") -> str:
    return submit(session, Submission(slug, phone, consent=True), now=ASKED_AT).request.id


def attempts(
    session: Session, request_id: str, *tries: tuple[datetime, str | None, int | None]
) -> None:
    """The request's attempts, each (started at, outcome, billable seconds), as calls end."""
    for number, (started_at, outcome, billable_seconds) in enumerate(tries, start=1):
        session.add(
            CallAttempt(
                request_id=request_id,
                number=number,
                started_at=started_at,
                outcome=outcome,
                billable_seconds=billable_seconds,
            )
        )
    session.commit()


def at(month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


def test_an_attempt_counts_on_its_day_in_the_subscribers_time_zone(
    session: Session, bolt: Subscriber
) -> None:
    attempts(
        session,
        ask(session, "bolt"),
        (at(10, 31, 23, 30), "answered", 60),  # 00:30 on 1 November in Berlin
        (at(11, 30, 23, 30), "answered", 120),  # 00:30 on 1 December in Berlin
    )

    november = month_usage(session, bolt, NOVEMBER)
    december = month_usage(session, bolt, DECEMBER)

    assert november.days[date(2026, 11, 1)] == Usage(1, 1, 60)
    assert november.days[date(2026, 11, 30)] == Usage()
    assert november.total == Usage(1, 1, 60)
    assert december.days[date(2026, 12, 1)] == Usage(1, 1, 120)
    assert december.total == Usage(1, 1, 120)


def test_only_answered_attempts_are_connected_and_missing_seconds_count_as_none(
    session: Session, bolt: Subscriber
) -> None:
    attempts(
        session,
        ask(session, "bolt"),
        (at(11, 3, 9), "busy", None),
        (at(11, 3, 10), "no_answer", None),
        (at(11, 3, 11), "answered", 90),
        (at(11, 3, 12), "answered", None),  # no call detail record came
        (at(11, 3, 13), None, None),  # still under way
        (at(11, 4, 9), "answered", 48),
    )

    usage = month_usage(session, bolt, NOVEMBER)

    assert usage.days[date(2026, 11, 3)] == Usage(attempts=5, connected=2, billable_seconds=90)
    assert usage.days[date(2026, 11, 4)] == Usage(attempts=1, connected=1, billable_seconds=48)
    assert usage.total == Usage(attempts=6, connected=3, billable_seconds=138)
    assert usage.as_json()["total"] == {
        "attempts": 6,
        "connected": 3,
        "billable_seconds": 138,
        "billable_minutes": 2.3,
    }


def test_another_subscribers_attempts_are_not_counted(session: Session, bolt: Subscriber) -> None:
    add_subscriber(session, "acme", display_name="Acme", country="US", caller_id="+12015550100")
    attempts(session, ask(session, "acme", "+12015550123"), (at(11, 3, 9), "answered", 30))

    assert month_usage(session, bolt, NOVEMBER).total == Usage()


def test_a_month_without_calls_has_every_day_at_zero(session: Session, bolt: Subscriber) -> None:
    usage = month_usage(session, bolt, NOVEMBER)

    shown = usage.as_json()
    assert (shown["subscriber"], shown["month"], shown["time_zone"]) == (
        "bolt",
        "2026-11",
        "Europe/Berlin",
    )
    days = shown["days"]
    assert isinstance(days, list)
    assert len(days) == 30
    assert days[0] == {
        "date": "2026-11-01",
        "attempts": 0,
        "connected": 0,
        "billable_seconds": 0,
        "billable_minutes": 0.0,
    }
    assert days[-1]["date"] == "2026-11-30"
    assert all(day["attempts"] == day["billable_seconds"] == 0 for day in days)
    assert shown["total"] == Usage().as_json()


def test_this_month_is_the_subscribers(bolt: Subscriber) -> None:
    # 23:30 UTC on 30 November is already December in Berlin.
    assert this_month(bolt, at(11, 30, 23, 30)) == DECEMBER
    assert this_month(bolt, at(11, 30, 22, 59)) == NOVEMBER


def test_a_month_is_read_from_its_year_and_number() -> None:
    assert parse_month("2026-11") == NOVEMBER
    assert parse_month(" 2026-12 ") == DECEMBER


@pytest.mark.parametrize("text", ["2026-13", "2026-00", "11-2026", "2026-1", "2026/11", ""])
def test_a_month_not_written_like_2026_11_is_refused_naming_the_form(text: str) -> None:
    with pytest.raises(UsageError) as refused:
        parse_month(text)

    assert refused.value.field == "month"
    assert str(refused.value) == f"month {text!r} is not a month like 2026-11"


@pytest.mark.parametrize("text", ["0000-01", "1969-12", "9999-12"])
def test_a_month_out_of_range_is_refused_naming_the_range(text: str) -> None:
    with pytest.raises(UsageError) as refused:
        parse_month(text)

    assert refused.value.field == "month"
    assert "from 1970-01 to 9998-12" in str(refused.value)
