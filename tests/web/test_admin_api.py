"""The admin JSON API as an operator's scripts see it, with tokens for all or one subscriber."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import positive_data_acceptance
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.test import TestResponse

from cbserver import admin_tokens, intake
from cbserver import agents as agents_service
from cbserver.agents import add_agent
from cbserver.clock import FakeClock
from cbserver.intake import Submission
from cbserver.models import (
    Agent,
    ApiToken,
    CallAttempt,
    CallbackRequest,
    RequestStatus,
    Subscriber,
)
from cbserver.subscribers import add_subscriber, assign_agent
from tests.unit.test_usage import attempts
from tests.web.conftest import US_MOBILE

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("acme")]

ADMIN = "/api/v1/admin"
NEW_SUBSCRIBER = {
    "slug": "bolt",
    "display_name": "Bolt Electrics",
    "country": "DE",
    "caller_id": "+49 30 901820",
    "time_zone": "Europe/Berlin",
    "language": "de",
    "allowed_origins": ["https://bolt.example", "https://www.bolt.example"],
}
T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


class Admin:
    """A client that sends one admin token, and keeps every body it was answered."""

    def __init__(self, client: FlaskClient, secret: str | None) -> None:
        self.client = client
        self.secret = secret
        self.bodies: list[str] = []

    def call(self, method: str, path: str, **kwargs: Any) -> TestResponse:
        headers = kwargs.pop("headers", {})
        if self.secret is not None:
            headers.setdefault("Authorization", f"Bearer {self.secret}")
        response = self.client.open(ADMIN + path, method=method, headers=headers, **kwargs)
        self.bodies.append(response.get_data(as_text=True))
        return response

    def get(self, path: str, **kwargs: Any) -> TestResponse:
        return self.call("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> TestResponse:
        return self.call("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> TestResponse:
        return self.call("PUT", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> TestResponse:
        return self.call("DELETE", path, **kwargs)


def body(response: TestResponse, status: int = 200) -> Any:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json
    return response.json


def error(response: TestResponse, status: int) -> dict[str, str]:
    return body(response, status)["error"]  # type: ignore[no-any-return]


def make_token(
    sessions: sessionmaker[Session], name: str, slug: str | None = None
) -> tuple[ApiToken, str]:
    with sessions() as session:
        scope = None
        if slug is not None:
            scope = session.scalars(select(Subscriber).where(Subscriber.slug == slug)).one()
        return admin_tokens.create_token(session, name, subscriber=scope)


@pytest.fixture
def secret(sessions: sessionmaker[Session]) -> str:
    return make_token(sessions, "everything")[1]


@pytest.fixture
def admin(client: FlaskClient, secret: str) -> Admin:
    return Admin(client, secret)


@pytest.fixture
def bolt(sessions: sessionmaker[Session]) -> Subscriber:
    """A second business, which a token for acme must not see."""
    with sessions() as session:
        return add_subscriber(
            session,
            "bolt",
            display_name="Bolt Electrics",
            country="US",
            caller_id="+12015550199",
        )


@pytest.fixture
def acme_only(client: FlaskClient, sessions: sessionmaker[Session], bolt: Subscriber) -> Admin:
    return Admin(client, make_token(sessions, "acme's shop", "acme")[1])


@pytest.fixture
def staff(sessions: sessionmaker[Session], bolt: Subscriber) -> dict[str, str]:
    """Agents: alice and bob serve acme (in that order), carol serves bolt. Name -> password."""
    passwords = {}
    with sessions() as session:
        for name in ("alice", "bob", "carol"):
            passwords[name] = add_agent(session, name).sip_password or ""
        assign_agent(session, "acme", "alice", priority=10)
        assign_agent(session, "acme", "bob", priority=20)
        assign_agent(session, "bolt", "carol")
    return passwords


def submit(sessions: sessionmaker[Session], phone: str, *, at: datetime, **fields: Any) -> str:
    """A request made as a visitor makes it; its id."""
    with sessions() as session:
        made = intake.submit(session, Submission(phone=phone, consent=True, **fields), now=at)
        return made.request.id


@pytest.fixture
def requests_made(sessions: sessionmaker[Session], bolt: Subscriber) -> dict[str, str]:
    """Four requests an hour apart: three for acme (one of them scheduled), one for bolt."""
    return {
        "first": submit(sessions, US_MOBILE, at=T0, subscriber="acme", name="Ada"),
        "second": submit(
            sessions, "+1 201 555 0124", at=T0 + timedelta(hours=1), subscriber="acme"
        ),
        "later": submit(
            sessions,
            "+1 201 555 0125",
            at=T0 + timedelta(hours=2),
            subscriber="acme",
            when=(T0 + timedelta(days=1)).isoformat(),
        ),
        "bolt": submit(sessions, US_MOBILE, at=T0 + timedelta(hours=3), subscriber="bolt"),
    }


def visitor_tokens(sessions: sessionmaker[Session]) -> list[str]:
    with sessions() as session:
        return list(session.scalars(select(CallbackRequest.visitor_token)))


# --- authentication --------------------------------------------------------------------------

ENDPOINTS = [
    ("GET", "/subscribers"),
    ("POST", "/subscribers"),
    ("GET", "/subscribers/acme"),
    ("PUT", "/subscribers/acme/agents/alice"),
    ("DELETE", "/subscribers/acme/agents/alice"),
    ("GET", "/agents"),
    ("POST", "/agents"),
    ("GET", "/requests"),
    ("GET", "/requests/00000000-0000-0000-0000-000000000000"),
    ("POST", "/requests/00000000-0000-0000-0000-000000000000/cancel"),
    ("GET", "/subscribers/acme/number-types"),
    ("PUT", "/subscribers/acme/number-types"),
    ("GET", "/denied-numbers"),
    ("POST", "/denied-numbers"),
    ("DELETE", "/denied-numbers/1"),
    ("GET", "/audit"),
    ("GET", "/subscribers/acme/captcha"),
    ("PUT", "/subscribers/acme/captcha"),
    ("GET", "/subscribers/acme/usage"),
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_without_a_token_every_endpoint_is_401_with_a_bearer_challenge(
    client: FlaskClient, method: str, path: str
) -> None:
    response = Admin(client, None).call(method, path, json={"name": "x"})

    assert error(response, 401)["code"] == "unauthorized"
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="cbserver admin"'
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize(
    "authorization",
    ["Bearer cbs_not-a-token", "Bearer ", "Basic dXNlcjpwYXNz", "cbs_no-scheme"],
)
def test_a_wrong_token_is_401(client: FlaskClient, secret: str, authorization: str) -> None:
    response = client.get(f"{ADMIN}/subscribers", headers={"Authorization": authorization})

    assert error(response, 401)["code"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="cbserver admin"')
    assert secret not in response.get_data(as_text=True)


def test_the_token_is_taken_from_the_header_only(client: FlaskClient, secret: str) -> None:
    assert client.get(f"{ADMIN}/subscribers?token={secret}").status_code == 401
    lower_case = client.get(f"{ADMIN}/subscribers", headers={"Authorization": f"bearer {secret}"})
    assert lower_case.status_code == 200


def test_a_revoked_token_is_401_from_then_on(
    client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    token, secret = make_token(sessions, "soon revoked")
    admin = Admin(client, secret)
    assert admin.get("/subscribers").status_code == 200

    with sessions() as session:
        admin_tokens.revoke_token(session, token.id)

    response = admin.get("/subscribers")
    assert error(response, 401)["code"] == "unauthorized"
    assert response.headers["WWW-Authenticate"] == (
        'Bearer realm="cbserver admin", error="invalid_token"'
    )


def test_using_a_token_marks_it_used(admin: Admin, sessions: sessionmaker[Session]) -> None:
    admin.get("/subscribers")

    with sessions() as session:
        [token] = admin_tokens.list_tokens(session)
    assert token.last_used_at is not None


# --- subscribers -----------------------------------------------------------------------------


def test_a_subscriber_is_created_listed_and_shown(admin: Admin) -> None:
    created = admin.post("/subscribers", json=NEW_SUBSCRIBER)

    shown = body(created, 201)
    assert created.headers["Location"] == f"{ADMIN}/subscribers/bolt"
    assert shown["slug"] == "bolt"
    assert shown["caller_id"] == "+4930901820"  # normalised by the same rules as the CLI
    assert shown["allowed_origins"] == ["https://bolt.example", "https://www.bolt.example"]
    assert shown["allowed_countries"] == []
    assert (shown["max_attempts"], shown["retry_interval_seconds"]) == (3, 300)
    assert shown["wrap_up_seconds"] == 0
    assert (shown["inbound_number"], shown["unknown_callers"]) == (None, "agents")
    assert shown["agents"] == []
    assert len(shown["widget_key"]) >= 40  # once, as `cbserver subscriber add` prints it

    listed = body(admin.get("/subscribers"))["items"]
    assert [s["slug"] for s in listed] == ["acme", "bolt"]
    again = body(admin.get("/subscribers/bolt"))
    assert again == {k: v for k, v in shown.items() if k != "widget_key"}
    assert shown["widget_key"] not in "".join(admin.bodies[1:])


def test_a_subscriber_is_created_with_a_wrap_up_time(admin: Admin) -> None:
    created = admin.post("/subscribers", json={**NEW_SUBSCRIBER, "wrap_up_seconds": 3600})

    assert body(created, 201)["wrap_up_seconds"] == 3600
    assert body(admin.get("/subscribers/bolt"))["wrap_up_seconds"] == 3600
    assert body(admin.get("/subscribers/bolt/schedule"))["wrap_up_seconds"] == 3600


def test_a_subscriber_is_created_with_an_inbound_number_and_unknown_callers(admin: Admin) -> None:
    created = admin.post(
        "/subscribers",
        json={**NEW_SUBSCRIBER, "inbound_number": "+49 30 901821", "unknown_callers": "message"},
    )

    expected = ("+4930901821", "message")  # normalised by the same rules as the caller ID
    shown = body(created, 201)
    assert (shown["inbound_number"], shown["unknown_callers"]) == expected
    again = body(admin.get("/subscribers/bolt"))
    assert (again["inbound_number"], again["unknown_callers"]) == expected
    schedule = body(admin.get("/subscribers/bolt/schedule"))
    assert (schedule["inbound_number"], schedule["unknown_callers"]) == expected


def test_lists_given_as_text_are_taken_as_the_cli_takes_them(admin: Admin) -> None:
    created = admin.post(
        "/subscribers",
        json={**NEW_SUBSCRIBER, "allowed_countries": "de, at", "allowed_origins": ""},
    )

    shown = body(created, 201)
    assert shown["allowed_countries"] == ["DE", "AT"]
    assert shown["allowed_origins"] == []


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"slug": "Bolt!"}, "slug", "must be 2 to 40 lowercase"),
        ({"country": "XX"}, "country", "not an ISO 3166"),
        ({"caller_id": "12345"}, "caller_id", "E.164"),
        ({"time_zone": "Mars/Olympus"}, "time_zone", "IANA"),
        ({"language": "fr"}, "language", "one of en, de"),
        ({"max_attempts": 0}, "max_attempts", "from 1 to 10"),
        ({"wrap_up_seconds": -1}, "wrap_up_seconds", "wrap_up_seconds must be a whole number"),
        ({"wrap_up_seconds": 3601}, "wrap_up_seconds", "from 0 to 3600"),
        ({"inbound_number": "030 901821"}, "inbound_number", "inbound number '030 901821' is not"),
        (
            {"inbound_number": "+1 201 555 0100"},
            "inbound_number",
            "inbound number '+12015550100' is already acme's number",
        ),
        ({"unknown_callers": "voicemail"}, "unknown_callers", "must be one of agents, message"),
        ({"allowed_origins": ["ftp://x.example"]}, "allowed_origins", "web origin"),
    ],
)
def test_a_refused_subscriber_is_422_naming_the_field(
    admin: Admin, change: dict[str, Any], field: str, message: str
) -> None:
    refused = error(admin.post("/subscribers", json={**NEW_SUBSCRIBER, **change}), 422)

    assert refused["field"] == field
    assert message in refused["message"]
    assert [s["slug"] for s in body(admin.get("/subscribers"))["items"]] == ["acme"]


@pytest.mark.parametrize(
    ("sent", "code", "field"),
    [
        ({"slug": "bolt"}, "missing_field", "display_name"),
        ({**NEW_SUBSCRIBER, "widget_key": "mine"}, "unknown_field", "widget_key"),
        ({**NEW_SUBSCRIBER, "max_attempts": "3"}, "wrong_type", "max_attempts"),
        ({**NEW_SUBSCRIBER, "max_attempts": True}, "wrong_type", "max_attempts"),
        ({**NEW_SUBSCRIBER, "max_attempts": 3.0}, "wrong_type", "max_attempts"),
        ({**NEW_SUBSCRIBER, "wrap_up_seconds": "60"}, "wrong_type", "wrap_up_seconds"),
        ({**NEW_SUBSCRIBER, "inbound_number": 4930901821}, "wrong_type", "inbound_number"),
        ({**NEW_SUBSCRIBER, "display_name": 7}, "wrong_type", "display_name"),
        ({**NEW_SUBSCRIBER, "allowed_origins": [1]}, "wrong_type", "allowed_origins"),
    ],
)
def test_a_malformed_body_is_400_naming_the_field(
    admin: Admin, sent: dict[str, Any], code: str, field: str
) -> None:
    refused = error(admin.post("/subscribers", json=sent), 400)

    assert (refused["code"], refused["field"]) == (code, field)


def test_bodies_that_are_not_json_objects_are_400(admin: Admin) -> None:
    not_json = admin.post("/subscribers", data="slug=bolt")
    a_list = admin.post("/subscribers", json=["bolt"])

    assert error(not_json, 400)["code"] == "not_json"
    assert error(a_list, 400)["code"] == "bad_json"


def test_a_second_subscriber_of_a_slug_is_409(admin: Admin) -> None:
    refused = error(admin.post("/subscribers", json={**NEW_SUBSCRIBER, "slug": "acme"}), 409)

    assert (refused["code"], refused["field"]) == ("subscriber_exists", "slug")


def test_an_unknown_subscriber_is_404(admin: Admin) -> None:
    assert error(admin.get("/subscribers/nobody"), 404)["code"] == "subscriber_not_found"
    assert error(admin.get("/subscribers/NOT%20A%20SLUG"), 404)["code"] == "subscriber_not_found"


# --- usage -------------------------------------------------------------------------------------


@pytest.fixture
def calls_made(sessions: sessionmaker[Session], requests_made: dict[str, str]) -> None:
    """Attempts at acme's first request (acme is in Los Angeles), and one at bolt's."""
    with sessions() as session:
        attempts(
            session,
            requests_made["first"],
            (T0 + timedelta(hours=1), "answered", 95),
            (T0 + timedelta(hours=2), "busy", None),
            # 21:00 on 30 November in Los Angeles.
            (datetime(2026, 12, 1, 5, 0, tzinfo=UTC), "answered", 30),
        )
        attempts(session, requests_made["bolt"], (T0 + timedelta(hours=4), "answered", 600))


def test_a_subscribers_usage_is_shown_day_by_day_in_its_time_zone(
    admin: Admin, calls_made: None
) -> None:
    usage = body(admin.get("/subscribers/acme/usage?month=2026-11"))

    assert (usage["subscriber"], usage["month"], usage["time_zone"]) == (
        "acme",
        "2026-11",
        "America/Los_Angeles",
    )
    assert [day["date"] for day in usage["days"]][::29] == ["2026-11-01", "2026-11-30"]
    counted = {day.pop("date"): day for day in usage["days"] if day["attempts"]}
    assert counted == {
        "2026-11-20": {
            "attempts": 2,
            "connected": 1,
            "billable_seconds": 95,
            "billable_minutes": 1.6,
        },
        "2026-11-30": {
            "attempts": 1,
            "connected": 1,
            "billable_seconds": 30,
            "billable_minutes": 0.5,
        },
    }
    assert usage["total"] == {
        "attempts": 3,
        "connected": 2,
        "billable_seconds": 125,
        "billable_minutes": 2.1,
    }
    december = body(admin.get("/subscribers/acme/usage?month=2026-12"))
    assert december["total"]["attempts"] == 0


def test_usage_is_of_this_month_in_the_subscribers_time_zone_unless_asked(
    admin: Admin, clock: FakeClock, calls_made: None
) -> None:
    clock.set(datetime(2026, 12, 1, 5, 0, tzinfo=UTC))  # still November in Los Angeles

    usage = body(admin.get("/subscribers/acme/usage"))

    assert usage["month"] == "2026-11"
    assert len(usage["days"]) == 30
    assert usage["total"]["attempts"] == 3


def test_the_usage_of_an_unknown_or_hidden_subscriber_is_404(
    admin: Admin, acme_only: Admin
) -> None:
    unknown = error(admin.get("/subscribers/nobody/usage?month=2026-11"), 404)
    hidden = error(acme_only.get("/subscribers/bolt/usage?month=2026-11"), 404)

    assert (unknown["code"], unknown["field"]) == ("subscriber_not_found", "subscriber")
    assert hidden["code"] == "subscriber_not_found"
    assert hidden["message"] == "there is no subscriber named 'bolt'"


@pytest.mark.parametrize("month", ["2026-13", "11-2026", "2026-1"])
def test_usage_of_a_month_not_like_2026_11_is_422_naming_the_month(
    admin: Admin, month: str
) -> None:
    refused = error(admin.get(f"/subscribers/acme/usage?month={month}"), 422)

    assert (refused["code"], refused["field"]) == ("bad_month", "month")
    assert refused["message"] == f"month {month!r} is not a month like 2026-11"


def test_usage_takes_no_other_query_parameter(admin: Admin) -> None:
    refused = error(admin.get("/subscribers/acme/usage?from=2026-11"), 400)

    assert (refused["code"], refused["field"]) == ("unknown_parameter", "from")


# --- agents and assignments ------------------------------------------------------------------


def test_a_registering_agent_is_told_its_sip_password_once(admin: Admin) -> None:
    created = body(admin.post("/agents", json={"name": "dora", "dtmf_mode": "info"}), 201)

    password = created["sip_password"]
    assert len(password) >= 20
    assert created["registers"] is True
    assert created["dtmf_mode"] == "info"
    [listed] = body(admin.get("/agents"))["items"]
    assert listed == {k: v for k, v in created.items() if k != "sip_password"}
    assert password not in admin.bodies[-1]


def test_the_agent_list_says_what_each_agent_is_doing(
    admin: Admin, sessions: sessionmaker[Session]
) -> None:
    for name in ("dora", "eve", "finn", "gus", "hal"):
        body(admin.post("/agents", json={"name": name}), 201)
    with sessions() as session:
        agents_service.pause(session, "dora", "lunch")
        named = {agent.name: agent for agent in session.scalars(select(Agent))}
        named["eve"].presence = "offline"
        named["finn"].on_call = "0f0e0d0c-0000-4000-8000-000000000001"
        named["hal"].active = False
        session.commit()

    listed = {a["name"]: a for a in body(admin.get("/agents"))["items"]}

    assert {name: (a["state"], a["pause_reason"]) for name, a in listed.items()} == {
        "dora": ("paused", "lunch"),
        "eve": ("offline", None),
        "finn": ("on_call", None),
        "gus": ("available", None),
        "hal": ("inactive", None),
    }
    assert listed["eve"]["presence"] == "offline"
    assert listed["finn"]["on_call"] == "0f0e0d0c-0000-4000-8000-000000000001"


def test_an_agent_with_a_contact_has_no_password(admin: Admin) -> None:
    created = body(
        admin.post("/agents", json={"name": "eve", "contact": "sip:eve@192.0.2.10:5060"}), 201
    )

    assert created["sip_password"] is None
    assert created["registers"] is False
    assert created["contact"] == "sip:eve@192.0.2.10:5060"


@pytest.mark.parametrize(
    ("sent", "status", "field"),
    [
        ({"name": "Bad Name"}, 422, "name"),
        ({"name": "trunk"}, 422, "name"),
        ({"name": "eve", "contact": "sip:eve@h;transport=tcp"}, 422, "contact"),
        ({"name": "eve", "dtmf_mode": "smoke"}, 422, "dtmf_mode"),
        ({"name": "alice"}, 409, "name"),
        ({"contact": "sip:eve@192.0.2.10"}, 400, "name"),
        ({"name": "eve", "password": "mine"}, 400, "password"),
    ],
)
def test_a_refused_agent_names_the_field(
    admin: Admin, staff: dict[str, str], sent: dict[str, Any], status: int, field: str
) -> None:
    assert error(admin.post("/agents", json=sent), status)["field"] == field


def test_agents_are_assigned_reordered_and_unassigned(admin: Admin, staff: dict[str, str]) -> None:
    def order(response: TestResponse, status: int = 200) -> list[tuple[str, int]]:
        return [(a["name"], a["priority"]) for a in body(response, status)["agents"]]

    assert order(admin.get("/subscribers/acme")) == [("alice", 10), ("bob", 20)]
    assert order(admin.put("/subscribers/acme/agents/carol"), 201) == [
        ("alice", 10),
        ("bob", 20),
        ("carol", 100),
    ]
    assert order(admin.put("/subscribers/acme/agents/carol", json={"priority": 5})) == [
        ("carol", 5),
        ("alice", 10),
        ("bob", 20),
    ]
    # Without a priority, the one it has stays.
    assert order(admin.put("/subscribers/acme/agents/carol", json={}))[0] == ("carol", 5)
    assert order(admin.delete("/subscribers/acme/agents/alice")) == [("carol", 5), ("bob", 20)]
    assert order(admin.get("/subscribers/acme")) == [("carol", 5), ("bob", 20)]

    again = error(admin.delete("/subscribers/acme/agents/alice"), 404)
    assert again["code"] == "not_assigned"


@pytest.mark.parametrize(
    ("method", "path", "sent", "status", "code"),
    [
        ("PUT", "/subscribers/acme/agents/zed", None, 404, "agent_not_found"),
        ("PUT", "/subscribers/nobody/agents/alice", None, 404, "subscriber_not_found"),
        ("PUT", "/subscribers/acme/agents/alice", {"priority": 1001}, 422, "invalid"),
        ("PUT", "/subscribers/acme/agents/alice", {"priority": "1"}, 400, "wrong_type"),
        ("PUT", "/subscribers/acme/agents/alice", {"rank": 1}, 400, "unknown_field"),
        ("DELETE", "/subscribers/acme/agents/zed", None, 404, "agent_not_found"),
    ],
)
def test_refused_assignments_say_why(
    admin: Admin,
    staff: dict[str, str],
    method: str,
    path: str,
    sent: dict[str, Any] | None,
    status: int,
    code: str,
) -> None:
    assert error(admin.call(method, path, json=sent), status)["code"] == code


# --- call-back requests ----------------------------------------------------------------------


def listed(admin: Admin, query: str = "", status: int = 200) -> Any:
    return body(admin.get(f"/requests{query}"), status)


def ids(page: dict[str, Any]) -> list[str]:
    return [item["id"] for item in page["items"]]


def test_requests_are_listed_newest_first(admin: Admin, requests_made: dict[str, str]) -> None:
    page = listed(admin)

    assert ids(page) == [requests_made[k] for k in ("bolt", "later", "second", "first")]
    assert (page["total"], page["limit"], page["offset"]) == (4, 50, 0)
    first = page["items"][-1]
    assert first["subscriber"] == "acme"
    assert first["phone"] == US_MOBILE
    assert first["name"] == "Ada"
    assert first["status"] == "queued"
    assert first["created_at"] == T0.isoformat()
    assert "token" not in json.dumps(page)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("?subscriber=acme", ["later", "second", "first"]),
        ("?subscriber=bolt", ["bolt"]),
        ("?status=scheduled", ["later"]),
        ("?status=queued,scheduled&subscriber=acme", ["later", "second", "first"]),
        ("?status=queued&status=scheduled&subscriber=acme", ["later", "second", "first"]),
        ("?status=completed", []),
        (f"?phone={US_MOBILE.replace('+', '%2B')}", ["bolt", "first"]),
        ("?phone=%2B1 (201) 555-0124", ["second"]),
        ("?created_from=2026-11-20T10:00:00Z", ["bolt", "later", "second"]),
        ("?created_to=2026-11-20T11:00:00%2B01:00", ["first"]),
        ("?created_from=2026-11-20T10:00:00Z&created_to=2026-11-20T12:00:00Z", ["later", "second"]),
        ("?limit=2", ["bolt", "later"]),
        ("?limit=2&offset=2", ["second", "first"]),
        ("?offset=10", []),
        ("?phone=&status=", ["bolt", "later", "second", "first"]),
    ],
)
def test_requests_are_filtered(
    admin: Admin, requests_made: dict[str, str], query: str, expected: list[str]
) -> None:
    page = listed(admin, query)

    assert ids(page) == [requests_made[k] for k in expected]


def test_total_counts_all_that_match_not_the_page(
    admin: Admin, requests_made: dict[str, str]
) -> None:
    page = listed(admin, "?subscriber=acme&limit=1&offset=1")

    assert (len(page["items"]), page["total"], page["limit"], page["offset"]) == (1, 3, 1, 1)


@pytest.mark.parametrize(
    ("query", "status", "field", "message"),
    [
        ("?status=waiting", 422, "status", "scheduled, queued, dialing_agent"),
        ("?status=queued,bogus", 422, "status", "unknown status 'bogus'"),
        ("?limit=0", 422, "limit", "from 1 to 200"),
        ("?limit=201", 422, "limit", "from 1 to 200"),
        ("?limit=ten", 422, "limit", "whole number"),
        ("?offset=-1", 422, "offset", "whole number"),
        ("?offset=99999999999999999999", 422, "offset", "whole number"),
        ("?phone=call-me", 422, "phone", "E.164"),
        ("?phone=+12015550123", 422, "phone", "%2B"),  # an unescaped + arrives as a space
        ("?created_from=yesterday", 422, "created_from", "ISO 8601"),
        ("?created_from=2026-11-20T10:00:00", 422, "created_from", "time zone"),
        ("?created_to=0001-01-01T00:00:00%2B01:00", 422, "created_to", "ISO 8601"),
        (
            "?created_from=2026-11-21T00:00:00Z&created_to=2026-11-20T00:00:00Z",
            422,
            "created_to",
            "not be before",
        ),
        ("?subscriber=nobody", 404, "subscriber", "no subscriber named 'nobody'"),
        ("?state=queued", 400, "state", "Unknown query parameter"),
        ("?limit=1&limit=2", 400, "limit", "only once"),
    ],
)
def test_bad_filters_are_refused_clearly(
    admin: Admin, requests_made: dict[str, str], query: str, status: int, field: str, message: str
) -> None:
    refused = error(admin.get(f"/requests{query}"), status)

    assert refused["field"] == field
    assert message in refused["message"]


def test_a_request_is_shown_with_its_history_and_attempts(
    admin: Admin,
    sessions: sessionmaker[Session],
    staff: dict[str, str],
    requests_made: dict[str, str],
) -> None:
    request_id = requests_made["first"]
    with sessions() as session:
        alice = session.scalars(select(Agent).where(Agent.name == "alice")).one()
        session.add(
            CallAttempt(
                request_id=request_id,
                number=1,
                agent_id=alice.id,
                started_at=T0 + timedelta(minutes=1),
                ended_at=T0 + timedelta(minutes=2),
                outcome="no_answer",
                hangup_cause=19,
                hangup_cause_text="No answer",
            )
        )
        session.execute(
            update(CallbackRequest)
            .where(CallbackRequest.id == request_id)
            .values(attempt_count=1, page_url="https://acme.example/contact")
        )
        session.commit()

    shown = body(admin.get(f"/requests/{request_id}"))

    assert shown["id"] == request_id
    assert shown["subscriber"] == {"slug": "acme", "name": "Acme Plumbing"}
    assert shown["phone"] == US_MOBILE
    assert shown["status"] == "queued"
    assert shown["position"] == 1
    assert shown["page_url"] == "https://acme.example/contact"
    assert shown["attempt_count"] == 1
    assert [(e["from"], e["to"]) for e in shown["events"]] == [(None, "queued")]
    [attempt] = shown["attempts"]
    assert (attempt["number"], attempt["agent"], attempt["outcome"]) == (1, "alice", "no_answer")
    for secret_key in ("token", "visitor_token", "status_url", "idempotency_key"):
        assert secret_key not in shown


def test_an_unknown_request_is_404(admin: Admin) -> None:
    assert error(admin.get("/requests/nope"), 404)["code"] == "request_not_found"
    assert error(admin.get("/requests/" + "9" * 37), 404)["code"] == "request_not_found"
    assert error(admin.post("/requests/nope/cancel"), 404)["code"] == "request_not_found"


def test_an_admin_cancels_a_request_once(admin: Admin, requests_made: dict[str, str]) -> None:
    request_id = requests_made["second"]

    canceled = body(admin.post(f"/requests/{request_id}/cancel"))

    assert canceled["status"] == "canceled"
    assert canceled["can_cancel"] is False
    assert canceled["events"][-1]["from"] == "queued"
    assert canceled["events"][-1]["to"] == "canceled"
    assert canceled["events"][-1]["reason"] == "canceled by an admin"
    assert ids(listed(admin, "?status=canceled")) == [request_id]
    again = error(admin.post(f"/requests/{request_id}/cancel"), 409)
    assert again["code"] == "request_finished"


def test_a_connected_call_cannot_be_canceled(
    admin: Admin, sessions: sessionmaker[Session], requests_made: dict[str, str]
) -> None:
    request_id = requests_made["first"]
    with sessions() as session:
        session.execute(
            update(CallbackRequest)
            .where(CallbackRequest.id == request_id)
            .values(status=RequestStatus.CONNECTED.value)
        )
        session.commit()

    refused = error(admin.post(f"/requests/{request_id}/cancel"), 409)

    assert refused["code"] == "request_in_call"
    assert "under way" in refused["message"]
    assert body(admin.get(f"/requests/{request_id}"))["status"] == "connected"


# --- a token for one subscriber --------------------------------------------------------------


def test_a_token_for_one_subscriber_sees_only_it(
    acme_only: Admin, staff: dict[str, str], requests_made: dict[str, str]
) -> None:
    assert [s["slug"] for s in body(acme_only.get("/subscribers"))["items"]] == ["acme"]
    assert body(acme_only.get("/subscribers/acme"))["slug"] == "acme"
    assert [a["name"] for a in body(acme_only.get("/agents"))["items"]] == ["alice", "bob"]
    page = listed(acme_only)
    assert ids(page) == [requests_made[k] for k in ("later", "second", "first")]
    assert page["total"] == 3
    assert ids(listed(acme_only, "?subscriber=acme&limit=1")) == [requests_made["later"]]
    assert body(acme_only.get(f"/requests/{requests_made['first']}"))["id"]


def test_other_subscribers_look_as_if_they_did_not_exist(
    acme_only: Admin, staff: dict[str, str], requests_made: dict[str, str]
) -> None:
    hidden = acme_only.get("/subscribers/bolt")
    absent = acme_only.get("/subscribers/nobody")
    assert error(hidden, 404)["code"] == error(absent, 404)["code"] == "subscriber_not_found"
    assert (
        hidden.json["error"]["message"].replace("bolt", "nobody")
        == (  # type: ignore[index]
            absent.json["error"]["message"]  # type: ignore[index]
        )
    )

    other = requests_made["bolt"]
    assert error(acme_only.get(f"/requests/{other}"), 404)["code"] == "request_not_found"
    assert error(acme_only.post(f"/requests/{other}/cancel"), 404)["code"] == "request_not_found"
    assert error(acme_only.get("/requests?subscriber=bolt"), 404)["field"] == "subscriber"
    assert error(acme_only.put("/subscribers/bolt/agents/carol"), 404)["field"] == "subscriber"
    assert error(acme_only.delete("/subscribers/bolt/agents/carol"), 404)["field"] == "subscriber"
    # carol serves bolt only: to acme's token she is not there.
    assert error(acme_only.delete("/subscribers/acme/agents/carol"), 404)["code"] == (
        "agent_not_found"
    )


def test_a_token_for_one_subscriber_cannot_create_or_assign_others(
    acme_only: Admin, admin: Admin, staff: dict[str, str]
) -> None:
    for path, sent in (("/subscribers", NEW_SUBSCRIBER), ("/agents", {"name": "mallory"})):
        assert error(acme_only.post(path, json=sent), 403)["code"] == "forbidden"
    # The same answer whether the agent exists (carol) or not (zed).
    carol = error(acme_only.put("/subscribers/acme/agents/carol"), 403)
    zed = error(acme_only.put("/subscribers/acme/agents/zed"), 403)
    assert carol == zed
    assert [s["slug"] for s in body(admin.get("/subscribers"))["items"]] == ["acme", "bolt"]
    assert [a["name"] for a in body(admin.get("/agents"))["items"]] == ["alice", "bob", "carol"]


def test_a_token_for_one_subscriber_orders_and_removes_its_own_agents(
    acme_only: Admin, staff: dict[str, str]
) -> None:
    moved = body(acme_only.put("/subscribers/acme/agents/bob", json={"priority": 1}))
    assert [a["name"] for a in moved["agents"]] == ["bob", "alice"]

    removed = body(acme_only.delete("/subscribers/acme/agents/bob"))
    assert [a["name"] for a in removed["agents"]] == ["alice"]


# --- no secrets ------------------------------------------------------------------------------


def test_no_answer_carries_a_secret(
    admin: Admin,
    acme_only: Admin,
    sessions: sessionmaker[Session],
    secret: str,
    staff: dict[str, str],
    requests_made: dict[str, str],
) -> None:
    calls = [
        ("GET", "/subscribers"),
        ("GET", "/subscribers/acme"),
        ("GET", "/subscribers/bolt"),
        ("PUT", "/subscribers/acme/agents/carol"),
        ("DELETE", "/subscribers/acme/agents/carol"),
        ("GET", "/agents"),
        ("GET", "/requests"),
        *(("GET", f"/requests/{request_id}") for request_id in requests_made.values()),
        ("POST", f"/requests/{requests_made['second']}/cancel"),
        ("POST", "/agents"),  # a bad one: no name
    ]
    for client in (admin, acme_only):
        for method, path in calls:
            client.call(method, path, json={})
    with sessions() as session:
        tokens = admin_tokens.list_tokens(session)
        widget_keys = list(session.scalars(select(Subscriber.widget_key)))

    answers = "\n".join(admin.bodies + acme_only.bodies)
    forbidden = [
        secret,
        acme_only.secret or "",
        *(t.token_hash for t in tokens),
        *visitor_tokens(sessions),
        *staff.values(),
        *widget_keys,
    ]
    assert all(len(s) >= 20 for s in forbidden)
    leaked = [s for s in forbidden if s in answers]
    assert leaked == []


# --- the OpenAPI document, with a valid token --------------------------------------------------


@pytest.fixture
def admin_operations(app: Flask) -> list[schemathesis.APIOperation]:
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    return [op for op in operations if op.path.startswith("/api/v1/admin/")]


def test_the_admin_api_keeps_to_its_openapi_document_with_a_valid_token(
    admin_operations: list[schemathesis.APIOperation],
    secret: str,
    staff: dict[str, str],
    requests_made: dict[str, str],
) -> None:
    """The OpenAPI test at large sends no valid token, so sees only 401s here: this sends one,
    and (half the time) names things that exist, so more than the 404 paths are explored."""
    assert len(admin_operations) == 22
    headers = {"Authorization": f"Bearer {secret}"}
    existing = {
        "slug": "acme",
        "agent": "bob",
        "request_id": requests_made["first"],
        "subscriber": "acme",
    }

    def existing_names(drawn: tuple[schemathesis.Case, bool]) -> schemathesis.Case:
        case, pin = drawn
        if pin:
            for values in (case.path_parameters, case.query):
                for name in set(values or {}) & set(existing):
                    values[name] = existing[name]  # type: ignore[index]
        return case

    for operation in admin_operations:

        @given(case=st.tuples(operation.as_strategy(), st.booleans()).map(existing_names))
        @settings(
            max_examples=25,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        )
        def keeps_to_the_document(case: schemathesis.Case) -> None:
            # Schema-valid is not business-valid (an unknown slug, a bad caller ID): no
            # "positive data must be accepted" check.
            case.call_and_validate(headers=headers, excluded_checks=[positive_data_acceptance])

        keeps_to_the_document()
