"""The audit log: admin actions and refused numbers, recorded in the database and listed by the
admin API, each token seeing only what it may."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from cbserver.agents import add_agent
from cbserver.clock import FakeClock
from cbserver.models import AuditEvent
from tests.web.conftest import CLOCK_START, US_MOBILE
from tests.web.test_admin_api import NEW_SUBSCRIBER, Admin, body, error, make_token

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("acme")]


@pytest.fixture
def secret(sessions: sessionmaker[Session]) -> str:
    return make_token(sessions, "ops")[1]


@pytest.fixture
def root(client: FlaskClient, secret: str) -> Admin:
    return Admin(client, secret)


@pytest.fixture
def acme_only(client: FlaskClient, sessions: sessionmaker[Session]) -> Admin:
    return Admin(client, make_token(sessions, "acme's shop", "acme")[1])


def audit(admin: Admin, query: str = "") -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = body(admin.get(f"/audit{query}"))["items"]
    return items


def summary(items: list[dict[str, Any]]) -> list[tuple[str, str, str | None]]:
    return [(i["actor"], i["action"], i["subscriber"]) for i in items]


def ask(client: FlaskClient, phone: str) -> int:
    response = client.post(
        "/api/v1/callbacks",
        json={"subscriber": "acme", "phone": phone, "consent": True},
        environ_base={"REMOTE_ADDR": "198.51.100.7"},
    )
    return response.status_code


def test_admin_changes_are_recorded_newest_first_with_the_tokens_name(
    root: Admin, client: FlaskClient, sessions: sessionmaker[Session], clock: FakeClock
) -> None:
    with sessions() as session:
        add_agent(session, "alice")
    body(root.post("/subscribers", json=NEW_SUBSCRIBER), 201)
    clock.advance(timedelta(minutes=1))
    body(root.call("PATCH", "/subscribers/acme/schedule", json={"slot_minutes": 30}))
    clock.advance(timedelta(minutes=1))
    body(root.put("/subscribers/acme/agents/alice", json={"priority": 5}), 201)
    body(root.post("/agents", json={"name": "bob", "contact": "sip:bob@192.0.2.7"}), 201)
    clock.advance(timedelta(minutes=1))
    created = client.post(
        "/api/v1/callbacks", json={"subscriber": "acme", "phone": US_MOBILE, "consent": True}
    )
    request_id = created.json["id"]  # type: ignore[index]
    body(root.post(f"/requests/{request_id}/reschedule", json={"when": "asap"}))
    body(root.post(f"/requests/{request_id}/cancel"))
    body(root.delete("/subscribers/acme/agents/alice"))

    rows = audit(root)
    assert summary(rows) == [
        ("ops", "agent_unassigned", "acme"),
        ("ops", "request_canceled", "acme"),
        ("ops", "request_moved", "acme"),
        ("ops", "agent_added", None),
        ("ops", "agent_assigned", "acme"),
        ("ops", "schedule_changed", "acme"),
        ("ops", "subscriber_added", "bolt"),
    ]
    details = {row["action"]: row["detail"] for row in rows}
    assert details["subscriber_added"] == "added subscriber bolt"
    assert details["schedule_changed"] == "changed the schedule of acme: slot_minutes"
    assert details["agent_assigned"] == "assigned agent alice to acme (priority 5)"
    assert details["agent_added"] == "added agent bob at sip:bob@192.0.2.7"
    assert details["request_moved"] == f"moved request {request_id} to asap"
    assert details["request_canceled"] == f"canceled request {request_id}"
    assert rows[-1]["at"] == CLOCK_START.isoformat(), "at the app's time"


def test_a_refused_change_is_not_recorded(root: Admin, sessions: sessionmaker[Session]) -> None:
    error(root.call("PATCH", "/subscribers/acme/schedule", json={"slot_minutes": 1}), 422)
    error(root.post("/subscribers", json={**NEW_SUBSCRIBER, "caller_id": "+1"}), 422)
    error(root.delete("/subscribers/acme/agents/nobody"), 404)

    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(AuditEvent)) == 0


def test_refused_numbers_are_recorded_for_the_admin_with_the_visitors_address(
    root: Admin, client: FlaskClient
) -> None:
    assert ask(client, "+1 900 234 5678") == 422
    assert ask(client, "911") == 422
    assert ask(client, "+1201555&PJSIP/+1900") == 422
    assert ask(client, US_MOBILE) == 201

    rows = audit(root, "?action=number_refused")
    assert [(r["actor"], r["subscriber"]) for r in rows] == [("visitor 198.51.100.7", "acme")] * 3
    assert [r["detail"] for r in rows] == [
        "phone_characters: '+1201555&PJSIP/+1900'",
        "phone_emergency: 911",
        "phone_premium_rate: +19002345678",
    ]


def test_the_log_is_filtered_by_subscriber_action_and_time(
    root: Admin, client: FlaskClient, clock: FakeClock
) -> None:
    body(root.post("/subscribers", json=NEW_SUBSCRIBER), 201)
    clock.advance(timedelta(hours=1))
    body(root.call("PATCH", "/subscribers/bolt/schedule", json={"slot_minutes": 30}))
    assert ask(client, "+1 900 234 5678") == 422
    body(root.call("PATCH", "/subscribers/acme/schedule", json={"slot_minutes": 20}))

    assert summary(audit(root, "?subscriber=bolt")) == [
        ("ops", "schedule_changed", "bolt"),
        ("ops", "subscriber_added", "bolt"),
    ]
    assert [r["action"] for r in audit(root, "?action=schedule_changed,subscriber_added")] == [
        "schedule_changed",
        "schedule_changed",
        "subscriber_added",
    ]
    since = (CLOCK_START + timedelta(minutes=30)).isoformat().replace("+00:00", "Z")
    assert len(audit(root, f"?since={since}")) == 3
    assert [r["action"] for r in audit(root, "?limit=1")] == ["schedule_changed"]


def test_a_token_for_one_subscriber_sees_only_its_rows(
    root: Admin, acme_only: Admin, client: FlaskClient
) -> None:
    body(root.post("/subscribers", json=NEW_SUBSCRIBER), 201)
    body(root.post("/denied-numbers", json={"pattern": "+4490", "prefix": True}), 201)
    body(root.call("PATCH", "/subscribers/bolt/schedule", json={"slot_minutes": 30}))
    body(acme_only.call("PATCH", "/subscribers/acme/schedule", json={"slot_minutes": 20}))
    assert ask(client, "911") == 422

    assert summary(audit(acme_only)) == [
        ("visitor 198.51.100.7", "number_refused", "acme"),
        ("acme's shop", "schedule_changed", "acme"),
    ]
    assert len(audit(root)) == 5
    assert error(acme_only.get("/audit?subscriber=bolt"), 404)["code"] == "subscriber_not_found"


@pytest.mark.parametrize(
    ("query", "status", "field"),
    [
        ("?limit=0", 422, "limit"),
        ("?limit=many", 422, "limit"),
        ("?since=yesterday", 422, "since"),
        ("?since=2026-11-18T09:00:00", 422, "since"),
        ("?action=DROP%20TABLE", 422, "action"),
        ("?subscriber=nobody", 404, "subscriber"),
        ("?actor=ops", 400, "actor"),
        ("?limit=1&limit=2", 400, "limit"),
    ],
)
def test_bad_filters_are_refused_naming_them(
    root: Admin, query: str, status: int, field: str
) -> None:
    assert error(root.get(f"/audit{query}"), status)["field"] == field


def test_no_secret_is_ever_in_the_log(
    root: Admin, secret: str, sessions: sessionmaker[Session]
) -> None:
    created = body(root.post("/subscribers", json=NEW_SUBSCRIBER), 201)
    agent = body(root.post("/agents", json={"name": "carol"}), 201)

    with sessions() as session:
        details = " ".join(session.scalars(select(AuditEvent.actor + " " + AuditEvent.detail)))
    for secret_text in (secret, created["widget_key"], agent["sip_password"]):
        assert len(secret_text) >= 20
        assert secret_text not in details
    assert "added agent carol (a registering phone)" in details
