"""Scheduling as visitors, integrators and admins see it: slots, full slots, closed hours,
moving a request, queue position and ETA — on a fake clock, so "now" is the same every run.

acme (tests/web/conftest.py) is in Los Angeles with 2 places per slot; the clock starts on
Wednesday 18 November 2026 at 09:00 there (17:00 UTC). Slots are 15 minutes unless changed.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.test import TestResponse

from cbserver import subscribers
from cbserver.agents import add_agent
from cbserver.clock import FakeClock
from cbserver.models import CallbackRequest, RequestStatus, Subscriber
from tests.web.conftest import csrf_token
from tests.web.test_admin_api import Admin, bolt, make_token  # noqa: F401 (bolt: a fixture)

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("acme")]

LA = ZoneInfo("America/Los_Angeles")
WORKDAY = ["09:00-12:00", "13:00-17:00"]
# Weekdays with a lunch break, closed at the weekend; Friday 20 November only 09:00-10:00.
HOURS: dict[str, Any] = {
    "weekly": {day: WORKDAY for day in ("mon", "tue", "wed", "thu", "fri")},
    "exceptions": {"2026-11-20": ["09:00-10:00"]},
}
PHONES = ["+12015550123", "+12015550124", "+12015550125", "+12015550126"]


def at(local: str) -> datetime:
    """A wall-clock time in Los Angeles ("2026-11-19 10:00") as the UTC instant."""
    return datetime.fromisoformat(local).replace(tzinfo=LA).astimezone(UTC)


def iso(local: str) -> str:
    """How the API writes that instant."""
    return at(local).isoformat()


@pytest.fixture
def weekdays(acme: Subscriber, sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        subscribers.set_schedule(session, "acme", {"hours": HOURS})


def schedule(sessions: sessionmaker[Session], **changes: Any) -> None:
    with sessions() as session:
        subscribers.set_schedule(session, "acme", changes)


def ask(client: FlaskClient, phone: str = PHONES[0], when: str = "asap") -> TestResponse:
    return client.post(
        "/api/v1/callbacks",
        json={"subscriber": "acme", "phone": phone, "when": when, "consent": True},
    )


def created(response: TestResponse) -> dict[str, Any]:
    assert response.status_code == 201, response.get_data(as_text=True)
    body: dict[str, Any] = response.json  # type: ignore[assignment]
    return body


def shown(client: FlaskClient, callback: dict[str, Any]) -> dict[str, Any]:
    response = client.get(f"/api/v1/callbacks/{callback['id']}?token={callback['token']}")
    assert response.status_code == 200
    body: dict[str, Any] = response.json  # type: ignore[assignment]
    return body


def error(response: TestResponse, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json
    return response.json["error"]  # type: ignore[index,no-any-return]


def slots(client: FlaskClient, query: str = "") -> dict[str, Any]:
    response = client.get(f"/api/v1/subscribers/acme/slots{query}")
    assert response.status_code == 200, response.get_data(as_text=True)
    body: dict[str, Any] = response.json  # type: ignore[assignment]
    return body


def remaining(client: FlaskClient, local: str) -> int:
    """The places left in the slot that starts at ``local``."""
    listing = slots(client, f"?date={local[:10]}&days=1")["slots"]
    return next(s["remaining"] for s in listing if s["start"] == iso(local))  # type: ignore[no-any-return]


def stored(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(CallbackRequest)) or 0


def reschedule(
    client: FlaskClient, callback: dict[str, Any], when: str, token: str | None = None
) -> TestResponse:
    return client.post(
        f"/api/v1/callbacks/{callback['id']}/reschedule",
        json={"when": when},
        headers={"Authorization": f"Bearer {token or callback['token']}"},
    )


# --- the slots API -----------------------------------------------------------------------------


@pytest.mark.usefixtures("weekdays")
def test_slots_lie_inside_the_opening_hours_with_their_places(
    client: FlaskClient, clock: FakeClock
) -> None:
    clock.set(at("2026-11-18 10:20"))
    response = client.get("/api/v1/subscribers/acme/slots?date=2026-11-18&days=1")
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    listing = response.json
    assert listing is not None
    assert listing["time_zone"] == "America/Los_Angeles"
    assert listing["slot_minutes"] == 15
    assert listing["open_now"] is True
    starts = [s["start_text"] for s in listing["slots"]]
    # From the slot under way (10:15-10:30) to the last before noon; none over lunch.
    assert starts[0] == "Wed 18 Nov, 10:15 (America/Los_Angeles)"
    assert starts[6] == "Wed 18 Nov, 11:45 (America/Los_Angeles)"
    assert starts[7] == "Wed 18 Nov, 13:00 (America/Los_Angeles)"
    assert starts[-1] == "Wed 18 Nov, 16:45 (America/Los_Angeles)"
    assert len(starts) == 7 + 16
    assert listing["slots"][0] == {
        "start": iso("2026-11-18 10:15"),
        "end": iso("2026-11-18 10:30"),
        "start_text": "Wed 18 Nov, 10:15 (America/Los_Angeles)",
        "capacity": 2,
        "remaining": 2,
    }


@pytest.mark.usefixtures("weekdays")
def test_slots_follow_exceptions_weekends_and_the_booking_window(client: FlaskClient) -> None:
    friday = slots(client, "?date=2026-11-20&days=1")["slots"]
    assert [s["start_text"] for s in friday] == [
        f"Fri 20 Nov, {time} (America/Los_Angeles)" for time in ("09:00", "09:15", "09:30", "09:45")
    ]
    assert slots(client, "?date=2026-11-21&days=2")["slots"] == [], "closed at the weekend"
    week = slots(client)["slots"]
    days = list(dict.fromkeys(s["start_text"][:10] for s in week))
    assert days == ["Wed 18 Nov", "Thu 19 Nov", "Fri 20 Nov", "Mon 23 Nov", "Tue 24 Nov"]
    assert slots(client, "?date=2026-11-25")["slots"] == [], "beyond the 7-day window"


@pytest.mark.parametrize(
    ("query", "code", "field"),
    [
        ("?date=2026-13-01", "bad_date", "date"),
        ("?date=tomorrow", "bad_date", "date"),
        ("?days=0", "bad_days", "days"),
        ("?days=32", "bad_days", "days"),
        ("?days=two", "bad_days", "days"),
        ("?days=-1", "bad_days", "days"),
        ("?days=%C2%B2", "bad_days", "days"),
    ],
)
def test_a_bad_slot_query_is_422_naming_the_parameter(
    client: FlaskClient, query: str, code: str, field: str
) -> None:
    problem = error(client.get(f"/api/v1/subscribers/acme/slots{query}"), 422)
    assert (problem["code"], problem["field"]) == (code, field)
    expected = "2026-12-01" if code == "bad_date" else "from 1 to 31"
    assert expected in problem["message"]


def test_the_slots_of_an_unknown_business_are_404(client: FlaskClient) -> None:
    problem = error(client.get("/api/v1/subscribers/nobody/slots"), 404)
    assert problem["code"] == "unknown_subscriber"


# --- capacity ------------------------------------------------------------------------------------

SLOT = "2026-11-19 10:00"


@pytest.mark.usefixtures("weekdays")
def test_a_full_slot_is_409_with_the_next_free_times_until_a_place_is_freed(
    client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    first = created(ask(client, PHONES[0], iso(SLOT)))
    assert first["status"] == "scheduled"
    created(ask(client, PHONES[1], iso(SLOT)))
    assert remaining(client, SLOT) == 0

    full = ask(client, PHONES[2], iso(SLOT))
    problem = error(full, 409)
    assert (problem["code"], problem["field"]) == ("slot_full", "when")
    assert problem["message"] == (
        "That time is fully booked. The next free times are: "
        "Thu 19 Nov, 10:15 (America/Los_Angeles); Thu 19 Nov, 10:30 (America/Los_Angeles); "
        "Thu 19 Nov, 10:45 (America/Los_Angeles)."
    )
    assert problem["next_free"] == [
        iso("2026-11-19 10:15"),
        iso("2026-11-19 10:30"),
        iso("2026-11-19 10:45"),
    ]
    assert stored(sessions) == 2

    canceled = client.post(f"/api/v1/callbacks/{first['id']}/cancel?token={first['token']}")
    assert canceled.status_code == 200
    assert remaining(client, SLOT) == 1
    third = created(ask(client, PHONES[2], iso(SLOT)))
    assert shown(client, third)["slot_start"] == iso(SLOT)
    assert remaining(client, SLOT) == 0


@pytest.mark.usefixtures("weekdays")
def test_the_form_shows_a_full_slot_but_does_not_offer_it(client: FlaskClient) -> None:
    for phone in PHONES[:2]:
        created(ask(client, phone, iso(SLOT)))
    page = client.get("/c/acme").text
    assert f'<option value="{iso(SLOT)}" disabled>10:00 - 10:15 (full)</option>' in page
    assert f'<option value="{iso("2026-11-19 10:15")}">10:15 - 10:30</option>' in page


@pytest.mark.usefixtures("weekdays")
def test_a_time_outside_the_hours_or_past_is_refused(client: FlaskClient) -> None:
    lunch = error(ask(client, when=iso("2026-11-19 12:30")), 422)
    assert lunch["code"] == "outside_hours"
    assert "within our opening hours" in lunch["message"]
    past = error(ask(client, when=iso("2026-11-18 08:00")), 422)
    assert past["code"] == "time_past"


# --- "as soon as possible" while closed --------------------------------------------------------


@pytest.mark.usefixtures("weekdays")
def test_asap_while_closed_is_scheduled_for_the_next_opening(
    client: FlaskClient, clock: FakeClock
) -> None:
    clock.set(at("2026-11-18 18:30"))
    answer = created(ask(client))
    assert answer["status"] == "scheduled"
    assert answer["when_text"] == (
        "We are closed now: we will call you when we open, Thu 19 Nov, 09:00 (America/Los_Angeles)."
    )
    callback = shown(client, answer)
    assert callback["status_text"] == "Booked: we will call you at the time shown."
    assert callback["due_at"] == iso("2026-11-19 09:00")
    assert callback["due_text"] == "Thu 19 Nov, 09:00 (America/Los_Angeles)"
    assert callback["estimated_call_text"] == "Thu 19 Nov, 09:00 (America/Los_Angeles)"
    assert callback["slot_start"] is None
    assert callback["position"] is None, "not in the line until the opening"
    assert callback["can_reschedule"] is True
    page = client.get(answer["status_url"]).text
    assert "We expect to call you around" in page
    assert "Thu 19 Nov, 09:00 (America/Los_Angeles)" in page
    assert "closed now; scheduled for the next opening" in page


@pytest.mark.usefixtures("weekdays")
def test_asap_on_friday_afternoon_waits_for_monday(client: FlaskClient, clock: FakeClock) -> None:
    clock.set(at("2026-11-20 10:30"))  # the shortened Friday is over
    callback = shown(client, created(ask(client)))
    assert callback["due_text"] == "Mon 23 Nov, 09:00 (America/Los_Angeles)"


@pytest.mark.usefixtures("weekdays")
def test_asap_while_closed_is_refused_when_the_business_says_so(
    client: FlaskClient, clock: FakeClock, sessions: sessionmaker[Session]
) -> None:
    schedule(sessions, outside_hours="refuse")
    clock.set(at("2026-11-18 18:30"))
    problem = error(ask(client), 422)
    assert (problem["code"], problem["field"]) == ("closed", "when")
    assert problem["message"] == (
        "We are closed now. Please ask again when we open: Thu 19 Nov, 09:00 (America/Los_Angeles)."
    )
    assert problem["opens_at"] == iso("2026-11-19 09:00")
    assert stored(sessions) == 0
    booked = created(ask(client, when=iso("2026-11-19 09:30")))
    assert booked["status"] == "scheduled", "a chosen time is still taken"


@pytest.mark.usefixtures("weekdays")
def test_the_form_says_when_a_closed_business_will_call(
    client: FlaskClient, clock: FakeClock, sessions: sessionmaker[Session]
) -> None:
    assert 'data-field="closed"' not in client.get("/c/acme").text, "open: nothing to say"
    clock.set(at("2026-11-18 18:30"))
    assert (
        '<p class="hint" data-field="closed">We are closed now: we will call you when we open, '
        "Thu 19 Nov, 09:00 (America/Los_Angeles).</p>"
    ) in client.get("/c/acme").text
    schedule(sessions, outside_hours="refuse")
    assert (
        "We are closed now and open again Thu 19 Nov, 09:00 (America/Los_Angeles). "
        "Please choose a time."
    ) in client.get("/c/acme").text


# --- moving a request: the API ---------------------------------------------------------------

OTHER_SLOT = "2026-11-19 11:00"


@pytest.mark.usefixtures("weekdays")
def test_the_visitor_moves_a_booking_and_its_old_place_is_freed(client: FlaskClient) -> None:
    answer = created(ask(client, when=iso(SLOT)))
    moved = reschedule(client, answer, iso(OTHER_SLOT))
    assert moved.status_code == 200
    callback = moved.json
    assert callback is not None
    assert callback["status"] == "scheduled"
    assert callback["due_at"] == iso(OTHER_SLOT)
    assert callback["slot_start"] == iso(OTHER_SLOT)
    assert callback["events"][-1]["reason"] == (
        "moved by the visitor: booked for Thu 19 Nov, 11:00 (America/Los_Angeles)"
    )
    assert remaining(client, SLOT) == 2
    assert remaining(client, OTHER_SLOT) == 1

    now = reschedule(client, answer, "asap").json
    assert now is not None
    assert now["status"] == "queued"
    assert now["slot_start"] is None
    assert now["due_at"] == iso("2026-11-18 09:00")
    assert now["position"] == 1
    assert remaining(client, OTHER_SLOT) == 2


@pytest.mark.usefixtures("weekdays")
def test_a_move_into_a_full_slot_is_409_and_keeps_the_booking(client: FlaskClient) -> None:
    for phone in PHONES[1:3]:
        created(ask(client, phone, iso(OTHER_SLOT)))
    answer = created(ask(client, when=iso(SLOT)))
    problem = error(reschedule(client, answer, iso(OTHER_SLOT)), 409)
    assert problem["code"] == "slot_full"
    assert problem["next_free"][0] == iso("2026-11-19 11:15")
    assert shown(client, answer)["slot_start"] == iso(SLOT)
    assert remaining(client, SLOT) == 1


@pytest.mark.parametrize("status", [RequestStatus.COMPLETED, RequestStatus.CANCELED])
def test_a_request_that_is_over_cannot_be_moved(
    client: FlaskClient, sessions: sessionmaker[Session], status: RequestStatus
) -> None:
    answer = created(ask(client))
    with sessions() as session:
        session.execute(
            update(CallbackRequest)
            .where(CallbackRequest.id == answer["id"])
            .values(status=status.value)
        )
        session.commit()
    assert shown(client, answer)["can_reschedule"] is False
    problem = error(reschedule(client, answer, "asap"), 409)
    assert problem["code"] == "request_not_movable"
    assert problem["message"] == (
        "This call-back request can no longer be moved: it is under way or over."
    )


def test_moving_needs_the_visitors_token(client: FlaskClient) -> None:
    answer = created(ask(client))
    problem = error(reschedule(client, answer, "asap", token="guess"), 404)
    assert problem["code"] == "request_not_found"
    unsigned = client.post(f"/api/v1/callbacks/{answer['id']}/reschedule", json={"when": "asap"})
    assert unsigned.status_code == 404


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [({}, "missing_field", "when"), ({"when": "asap", "who": 1}, "unknown_field", "who")],
)
def test_a_malformed_move_is_400_naming_the_field(
    client: FlaskClient, body: dict[str, Any], code: str, field: str
) -> None:
    answer = created(ask(client))
    response = client.post(
        f"/api/v1/callbacks/{answer['id']}/reschedule?token={answer['token']}", json=body
    )
    problem = error(response, 400)
    assert (problem["code"], problem["field"]) == (code, field)


# --- moving a request: the status page -------------------------------------------------------


def move_on_page(client: FlaskClient, answer: dict[str, Any], **fields: str) -> TestResponse:
    page = client.get(answer["status_url"]).text
    action = re.search(r'<form method="post" action="([^"]+/reschedule)"', page)
    assert action
    data = {"csrf_token": csrf_token(page), "token": answer["token"], **fields}
    return client.post(action.group(1), data=data)


@pytest.mark.usefixtures("weekdays")
def test_the_status_page_moves_a_booking_to_another_slot(client: FlaskClient) -> None:
    answer = created(ask(client, when=iso(SLOT)))
    before = client.get(answer["status_url"]).text
    assert f'<option value="{iso(SLOT)}" selected>10:00 - 10:15</option>' in before
    moved = move_on_page(client, answer, when="slot", slot=iso(OTHER_SLOT))
    assert moved.status_code == 303
    assert moved.headers["Location"] == answer["status_url"]
    after = client.get(answer["status_url"]).text
    assert "We expect to call you around" in after
    assert "Thu 19 Nov, 11:00 (America/Los_Angeles)" in after
    assert "moved by the visitor: booked for Thu 19 Nov, 11:00 (America/Los_Angeles)" in after
    assert f'<option value="{iso(OTHER_SLOT)}" selected>11:00 - 11:15</option>' in after
    assert remaining(client, SLOT) == 2


@pytest.mark.usefixtures("weekdays")
def test_the_status_page_explains_a_full_slot_and_keeps_the_booking(
    client: FlaskClient,
) -> None:
    for phone in PHONES[1:3]:
        created(ask(client, phone, iso(OTHER_SLOT)))
    answer = created(ask(client, when=iso(SLOT)))
    refused = move_on_page(client, answer, when="slot", slot=iso(OTHER_SLOT))
    assert refused.status_code == 409
    assert re.search(
        r'role="alert">That time is fully booked. The next free times are: '
        r"Thu 19 Nov, 11:15 \(America/Los_Angeles\)",
        refused.text,
    )
    assert "Thu 19 Nov, 10:00 (America/Los_Angeles)" in refused.text, "still booked as before"
    assert shown(client, answer)["slot_start"] == iso(SLOT)


@pytest.mark.usefixtures("weekdays")
def test_the_status_page_asks_for_a_time_and_refuses_an_expired_page(
    client: FlaskClient,
) -> None:
    answer = created(ask(client, when=iso(SLOT)))
    missing = move_on_page(client, answer, when="slot", slot="")
    assert missing.status_code == 422
    assert 'role="alert">Please choose a time.' in missing.text
    stale = move_on_page(client, answer, when="asap", csrf_token="stale")
    assert stale.status_code == 400
    assert "This page had expired. Please try again." in stale.text
    assert shown(client, answer)["status"] == "scheduled"


# --- the admin API ---------------------------------------------------------------------------


@pytest.fixture
def admin(client: FlaskClient, sessions: sessionmaker[Session]) -> Admin:
    return Admin(client, make_token(sessions, "everything")[1])


def test_an_admin_reads_and_changes_the_schedule(admin: Admin, client: FlaskClient) -> None:
    before = admin.get("/subscribers/acme/schedule")
    assert before.status_code == 200
    assert before.json == {
        "time_zone": "America/Los_Angeles",
        "hours": None,
        "outside_hours": "schedule",
        "slot_minutes": 15,
        "slot_capacity": 2,
        "booking_days": 7,
        "deadline_days": 1,
        "max_attempts": 3,
        "retry_interval_seconds": 300,
        "retry_rules": {},
        "wrap_up_seconds": 0,
        "inbound_number": None,
        "unknown_callers": "agents",
    }
    changed = admin.call(
        "PATCH",
        "/subscribers/acme/schedule",
        json={"hours": HOURS, "slot_minutes": 30, "outside_hours": "refuse"},
    )
    assert changed.status_code == 200
    settings = changed.json
    assert settings is not None
    assert settings["hours"] == {
        "weekly": {**HOURS["weekly"], "sat": [], "sun": []},
        "exceptions": {"2026-11-20": ["09:00-10:00"]},
    }
    assert (settings["slot_minutes"], settings["outside_hours"]) == (30, "refuse")
    assert settings["slot_capacity"] == 2, "left out: unchanged"
    assert admin.get("/subscribers/acme/schedule").json == settings
    listing = slots(client, "?date=2026-11-20&days=1")
    assert [s["start_text"][12:17] for s in listing["slots"]] == ["09:00", "09:30"]


@pytest.mark.parametrize(
    ("hours", "message"),
    [
        (
            {"weekly": {"mon": ["09:00-17:00", "12:00-13:00"]}},
            "mon: 09:00-17:00 and 12:00-13:00 overlap",
        ),
        ({"weekly": {"tue": ["17:00-09:00"]}}, "tue: '17:00-09:00' closes before it opens"),
        ({"weekly": {"wed": ["9-5"]}}, "wed[0]: '9-5' is not an opening like 09:00-17:30"),
    ],
)
def test_hours_that_cannot_be_used_are_422_naming_the_day(
    admin: Admin, hours: dict[str, Any], message: str
) -> None:
    response = admin.call("PATCH", "/subscribers/acme/schedule", json={"hours": hours})
    problem = error(response, 422)
    assert problem["field"] == "hours"
    assert message in problem["message"]
    assert admin.get("/subscribers/acme/schedule").json["hours"] is None  # type: ignore[index]


def test_a_schedule_change_with_an_unknown_field_is_400(admin: Admin) -> None:
    response = admin.call("PATCH", "/subscribers/acme/schedule", json={"opening": "9-5"})
    problem = error(response, 400)
    assert (problem["code"], problem["field"]) == ("unknown_field", "opening")
    someday = {"hours": {"weekly": {"someday": []}}}
    problem = error(admin.call("PATCH", "/subscribers/acme/schedule", json=someday), 400)
    assert (problem["code"], problem["field"]) == ("unknown_field", "hours")
    assert "hours.weekly.someday" in problem["message"]


def test_a_schedule_number_out_of_range_is_422(admin: Admin) -> None:
    response = admin.call("PATCH", "/subscribers/acme/schedule", json={"booking_days": 0})
    problem = error(response, 422)
    assert problem["field"] == "booking_days"
    assert "from 1 to 60" in problem["message"]


def test_an_admin_changes_the_wrap_up_time(admin: Admin) -> None:
    changed = admin.call("PATCH", "/subscribers/acme/schedule", json={"wrap_up_seconds": 120})
    assert changed.status_code == 200, changed.text
    assert changed.json is not None
    assert changed.json["wrap_up_seconds"] == 120
    assert admin.get("/subscribers/acme/schedule").json == changed.json
    assert admin.get("/subscribers/acme").json["wrap_up_seconds"] == 120  # type: ignore[index]


@pytest.mark.parametrize("seconds", [-1, 3601])
def test_a_wrap_up_time_out_of_range_is_422_naming_the_field(admin: Admin, seconds: int) -> None:
    response = admin.call("PATCH", "/subscribers/acme/schedule", json={"wrap_up_seconds": seconds})
    problem = error(response, 422)
    assert problem["field"] == "wrap_up_seconds"
    assert "wrap_up_seconds must be a whole number from 0 to 3600" in problem["message"]
    unchanged = admin.get("/subscribers/acme/schedule").json
    assert unchanged is not None
    assert unchanged["wrap_up_seconds"] == 0


def test_an_admin_changes_the_inbound_number_and_unknown_callers(admin: Admin) -> None:
    change = {"inbound_number": "+1 201 555 0111", "unknown_callers": "message"}
    changed = admin.call("PATCH", "/subscribers/acme/schedule", json=change)
    assert changed.status_code == 200, changed.text
    assert changed.json is not None
    assert (changed.json["inbound_number"], changed.json["unknown_callers"]) == (
        "+12015550111",
        "message",
    )
    assert admin.get("/subscribers/acme/schedule").json == changed.json
    shown = admin.get("/subscribers/acme").json
    assert shown is not None
    assert (shown["inbound_number"], shown["unknown_callers"]) == ("+12015550111", "message")

    cleared = admin.call("PATCH", "/subscribers/acme/schedule", json={"inbound_number": None})
    assert cleared.status_code == 200, cleared.text
    assert cleared.json is not None
    assert (cleared.json["inbound_number"], cleared.json["unknown_callers"]) == (None, "message")


@pytest.mark.usefixtures("bolt")
def test_another_businesss_number_as_the_inbound_number_is_422_naming_it(admin: Admin) -> None:
    bolts_caller_id = "+12015550199"
    response = admin.call(
        "PATCH", "/subscribers/acme/schedule", json={"inbound_number": bolts_caller_id}
    )
    problem = error(response, 422)
    assert problem["field"] == "inbound_number"
    assert f"inbound number '{bolts_caller_id}' is already bolt's number" in problem["message"]
    unchanged = admin.get("/subscribers/acme/schedule").json
    assert unchanged is not None
    assert unchanged["inbound_number"] is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"inbound_number": "12345"}, "inbound number '12345' is not a valid phone number"),
        ({"unknown_callers": "voicemail"}, "must be one of agents, message"),
    ],
)
def test_a_bad_inbound_setting_is_422_naming_the_field(
    admin: Admin, change: dict[str, str], message: str
) -> None:
    response = admin.call("PATCH", "/subscribers/acme/schedule", json=change)
    problem = error(response, 422)
    [field] = change
    assert problem["field"] == field
    assert message in problem["message"]
    unchanged = admin.get("/subscribers/acme/schedule").json
    assert unchanged is not None
    assert (unchanged["inbound_number"], unchanged["unknown_callers"]) == (None, "agents")


@pytest.mark.usefixtures("bolt")
def test_a_token_for_another_subscriber_does_not_see_the_schedule(
    client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    bolts = Admin(client, make_token(sessions, "bolt's shop", "bolt")[1])
    assert error(bolts.get("/subscribers/acme/schedule"), 404)["code"] == "subscriber_not_found"
    patch = bolts.call("PATCH", "/subscribers/acme/schedule", json={"hours": HOURS})
    assert error(patch, 404)["code"] == "subscriber_not_found"
    assert bolts.get("/subscribers/bolt/schedule").status_code == 200


@pytest.mark.usefixtures("weekdays", "bolt")
def test_an_admin_moves_a_request(
    admin: Admin, client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    answer = created(ask(client, when=iso(SLOT)))
    moved = admin.post(f"/requests/{answer['id']}/reschedule", json={"when": iso(OTHER_SLOT)})
    assert moved.status_code == 200
    detail = moved.json
    assert detail is not None
    assert detail["due_at"] == iso(OTHER_SLOT)
    assert detail["events"][-1]["reason"] == (
        "moved by an admin: booked for Thu 19 Nov, 11:00 (America/Los_Angeles)"
    )
    assert "token" not in detail
    assert remaining(client, SLOT) == 2
    assert shown(client, answer)["due_text"] == "Thu 19 Nov, 11:00 (America/Los_Angeles)"

    missing = admin.post(f"/requests/{answer['id']}/reschedule", json={})
    assert error(missing, 400)["code"] == "missing_field"
    bolts = Admin(client, make_token(sessions, "bolt's shop", "bolt")[1])
    hidden = bolts.post(f"/requests/{answer['id']}/reschedule", json={"when": "asap"})
    assert error(hidden, 404)["code"] == "request_not_found"
    client.post(f"/api/v1/callbacks/{answer['id']}/cancel?token={answer['token']}")
    over = admin.post(f"/requests/{answer['id']}/reschedule", json={"when": "asap"})
    assert error(over, 409)["code"] == "request_not_movable"


# --- queue position and ETA ------------------------------------------------------------------


@pytest.fixture
def two_agents(acme: Subscriber, sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        for name in ("alice", "bob"):
            add_agent(session, name)
            subscribers.assign_agent(session, "acme", name)


@pytest.mark.usefixtures("weekdays", "two_agents")
def test_the_position_counts_those_ahead_and_the_eta_shares_the_agents(
    client: FlaskClient, clock: FakeClock, sessions: sessionmaker[Session]
) -> None:
    answers = []
    for phone in PHONES[:3]:
        answers.append(created(ask(client, phone)))
        clock.advance(timedelta(minutes=1))
    created(ask(client, PHONES[3], iso(SLOT)))  # booked for later: not in the line
    first, second, third = (shown(client, a) for a in answers)
    assert [first["position"], second["position"], third["position"]] == [1, 2, 3]
    # Two agents, each call taking 3 minutes until real ones are measured: the first two are
    # called now (09:03), the third when an agent is free again.
    assert first["estimated_call_text"] == "Wed 18 Nov, 09:03 (America/Los_Angeles)"
    assert second["estimated_call_text"] == "Wed 18 Nov, 09:03 (America/Los_Angeles)"
    assert third["estimated_call_text"] == "Wed 18 Nov, 09:06 (America/Los_Angeles)"

    with sessions() as session:
        subscribers.unassign_agent(session, "acme", "bob")
    assert shown(client, answers[2])["estimated_call_text"] == (
        "Wed 18 Nov, 09:09 (America/Los_Angeles)"
    )

    client.post(f"/api/v1/callbacks/{answers[0]['id']}/cancel?token={answers[0]['token']}")
    third = shown(client, answers[2])
    assert third["position"] == 2
    assert third["estimated_call_text"] == "Wed 18 Nov, 09:06 (America/Los_Angeles)"
    page = client.get(answers[2]["status_url"]).text
    assert 'You are number <span data-field="position">2</span>' in page


@pytest.mark.usefixtures("weekdays", "two_agents")
def test_the_eta_of_a_request_still_waiting_at_closing_time_is_after_the_opening(
    client: FlaskClient, clock: FakeClock
) -> None:
    clock.set(at("2026-11-18 16:56"))
    answers = []
    for phone in PHONES[:3]:
        answers.append(created(ask(client, phone)))
        clock.advance(timedelta(minutes=1))
    clock.set(at("2026-11-18 17:30"))  # closed; still in the line
    first, _, third = (shown(client, a) for a in answers)
    assert first["status"] == "queued"
    assert (first["position"], third["position"]) == (1, 3)
    assert first["estimated_call_text"] == "Thu 19 Nov, 09:00 (America/Los_Angeles)"
    assert third["estimated_call_text"] == "Thu 19 Nov, 09:03 (America/Los_Angeles)"
