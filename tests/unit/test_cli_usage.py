"""`cbserver usage`: a subscriber's attempts, connected calls and billable minutes in a month,
as the admin reads them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from cbserver import db
from cbserver.intake import Submission, submit
from tests.unit.conftest import Run
from tests.unit.test_usage import attempts

BOLT = (
    "--name",
    "Bolt Elektro",
    "--country",
    "DE",
    "--caller-id",
    "+49 30 901820",
    "--time-zone",
    "Europe/Berlin",
)


@pytest.fixture
def bolt(cbserver: Run, tmp_path: Path) -> None:
    """bolt, in Berlin, with four attempts in November and one just after it (in Berlin)."""
    added = cbserver("subscriber", "add", "bolt", *BOLT)
    assert added.exit_code == 0, added.output
    tries = [
        (datetime(2026, 11, 3, 9, 0, tzinfo=UTC), "busy", None),
        (datetime(2026, 11, 3, 10, 0, tzinfo=UTC), "answered", 95),
        (datetime(2026, 11, 17, 14, 0, tzinfo=UTC), "answered", 30),
        (datetime(2026, 11, 17, 15, 0, tzinfo=UTC), "no_answer", None),
        (datetime(2026, 11, 30, 23, 30, tzinfo=UTC), "answered", 600),  # 1 December in Berlin
    ]
    engine = db.make_engine(f"sqlite:///{tmp_path / 'cb.sqlite3'}")
    try:
        with db.make_session_factory(engine)() as session:
            request_id = submit(
                session,
                Submission("bolt", "+4915123456789", consent=True),
                now=datetime(2026, 11, 2, 9, 0, tzinfo=UTC),
            ).request.id
            attempts(session, request_id, *tries)
    finally:
        engine.dispose()


@pytest.mark.usefixtures("bolt")
def test_usage_shows_the_days_with_calls_and_the_months_total(cbserver: Run) -> None:
    shown = cbserver("usage", "--subscriber", "bolt", "--month", "2026-11")

    assert shown.exit_code == 0, shown.output
    header, columns, *days, total = shown.stdout.splitlines()
    assert header == "Usage of bolt in 2026-11 (days in Europe/Berlin):"
    assert columns.split() == ["DATE", "ATTEMPTS", "CONNECTED", "MINUTES", "SECONDS"]
    assert [line.split() for line in days] == [
        ["2026-11-03", "2", "1", "1.6", "95"],
        ["2026-11-17", "2", "1", "0.5", "30"],
    ]
    assert total.split() == ["total", "4", "2", "2.1", "125"]


@pytest.mark.usefixtures("bolt")
def test_a_month_without_calls_still_shows_its_total(cbserver: Run) -> None:
    shown = cbserver("usage", "--subscriber", "bolt", "--month", "2026-10")

    assert shown.exit_code == 0, shown.output
    assert shown.stdout.splitlines()[0] == "Usage of bolt in 2026-10 (days in Europe/Berlin):"
    assert shown.stdout.splitlines()[-1].split() == ["total", "0", "0", "0.0", "0"]
    assert len(shown.stdout.splitlines()) == 3


@pytest.mark.usefixtures("bolt")
def test_usage_defaults_to_this_month_in_the_subscribers_time_zone(cbserver: Run) -> None:
    before = datetime.now(ZoneInfo("Europe/Berlin")).strftime("%Y-%m")

    shown = cbserver("usage", "--subscriber", "bolt")

    after = datetime.now(ZoneInfo("Europe/Berlin")).strftime("%Y-%m")  # a month may have ended
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.splitlines()[0] in {
        f"Usage of bolt in {month} (days in Europe/Berlin):" for month in (before, after)
    }


@pytest.mark.usefixtures("bolt")
def test_usage_as_json_has_every_day_of_the_month(cbserver: Run) -> None:
    shown = cbserver("usage", "--subscriber", "bolt", "--month", "2026-12", "--json")

    assert shown.exit_code == 0, shown.output
    usage = json.loads(shown.stdout)
    assert (usage["subscriber"], usage["month"], usage["time_zone"]) == (
        "bolt",
        "2026-12",
        "Europe/Berlin",
    )
    assert len(usage["days"]) == 31
    assert usage["days"][0] == {
        "date": "2026-12-01",
        "attempts": 1,
        "connected": 1,
        "billable_seconds": 600,
        "billable_minutes": 10.0,
    }
    assert usage["total"] == {
        "attempts": 1,
        "connected": 1,
        "billable_seconds": 600,
        "billable_minutes": 10.0,
    }


def test_usage_of_an_unknown_subscriber_fails_clearly(cbserver: Run) -> None:
    refused = cbserver("usage", "--subscriber", "nobody", "--month", "2026-11")

    assert refused.exit_code != 0
    assert "error: there is no subscriber named 'nobody'" in refused.output
    assert refused.stdout == ""


@pytest.mark.usefixtures("bolt")
@pytest.mark.parametrize("month", ["2026-13", "11-2026", ""])
def test_usage_of_a_month_not_like_2026_11_fails_clearly(cbserver: Run, month: str) -> None:
    refused = cbserver("usage", "--subscriber", "bolt", "--month", month)

    assert refused.exit_code != 0
    assert f"error: month {month!r} is not a month like 2026-11" in refused.output
    assert refused.stdout == ""
