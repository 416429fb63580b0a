"""The deny-list and the number types, as admins manage them and as visitors then meet them."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.test import TestResponse

from cbserver import number_policy
from cbserver.models import AuditEvent, DeniedNumber, Subscriber
from cbserver.subscribers import add_subscriber
from tests.web.conftest import US_MOBILE
from tests.web.test_admin_api import Admin, body, error, make_token

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("acme")]

US_TOLL_FREE = "+18002345678"


@pytest.fixture
def bolt(sessions: sessionmaker[Session]) -> Subscriber:
    with sessions() as session:
        return add_subscriber(
            session, "bolt", display_name="Bolt Electrics", country="US", caller_id="+12015550199"
        )


@pytest.fixture
def root(client: FlaskClient, sessions: sessionmaker[Session]) -> Admin:
    """A token for every subscriber, named "ops"."""
    return Admin(client, make_token(sessions, "ops")[1])


@pytest.fixture
def acme_only(client: FlaskClient, sessions: sessionmaker[Session], bolt: Subscriber) -> Admin:
    return Admin(client, make_token(sessions, "acme's shop", "acme")[1])


def ask(client: FlaskClient, phone: str, subscriber: str = "acme") -> TestResponse:
    return client.post(
        "/api/v1/callbacks", json={"subscriber": subscriber, "phone": phone, "consent": True}
    )


def deny(admin: Admin, pattern: str, **fields: object) -> TestResponse:
    return admin.post("/denied-numbers", json={"pattern": pattern, **fields})


def patterns(admin: Admin) -> list[tuple[str, bool, str | None]]:
    items = body(admin.get("/denied-numbers"))["items"]
    return [(i["pattern"], i["prefix"], i["subscriber"]) for i in items]


# --- the deny-list ---------------------------------------------------------------------------


@pytest.mark.usefixtures("bolt")
def test_an_admin_denies_a_number_and_visitors_cannot_ask_for_it(
    root: Admin, client: FlaskClient
) -> None:
    added = body(deny(root, US_MOBILE, reason="asked never to be called"), 201)

    assert added["pattern"] == US_MOBILE
    assert added["prefix"] is False
    assert added["subscriber"] is None
    assert added["reason"] == "asked never to be called"
    for slug in ("acme", "bolt"):
        refused = ask(client, "(201) 555-0123", slug)
        assert error(refused, 422)["code"] == "phone_denied"
        assert "cannot call this number" in error(refused, 422)["message"]
    assert ask(client, "+12015550124").status_code == 201


@pytest.mark.usefixtures("bolt")
def test_a_prefix_for_one_subscriber_refuses_every_number_under_it_there_only(
    root: Admin, client: FlaskClient
) -> None:
    body(deny(root, "+1201555", prefix=True, subscriber="acme"), 201)

    assert error(ask(client, "+12015550124"), 422)["code"] == "phone_denied"
    assert error(ask(client, "+12015559876"), 422)["code"] == "phone_denied"
    assert ask(client, "+12015550124", "bolt").status_code == 201
    assert ask(client, "+12025550124").status_code == 201


def test_entries_are_listed_and_removed(root: Admin, client: FlaskClient) -> None:
    first = body(deny(root, "+4490", prefix=True), 201)
    body(deny(root, US_MOBILE, subscriber="acme"), 201)
    assert patterns(root) == [("+4490", True, None), (US_MOBILE, False, "acme")]

    removed = body(root.delete(f"/denied-numbers/{first['id']}"))
    assert removed["pattern"] == "+4490"
    assert patterns(root) == [(US_MOBILE, False, "acme")]
    gone = error(root.delete(f"/denied-numbers/{first['id']}"), 404)
    assert gone["code"] == "denied_number_not_found"


def test_the_same_entry_twice_is_409(root: Admin) -> None:
    body(deny(root, "+4490", prefix=True), 201)

    assert error(deny(root, "+4490", prefix=True), 409)["code"] == "denied_number_exists"
    body(deny(root, "+4490"), 201)  # the number alone is another entry
    body(deny(root, "+4490", prefix=True, subscriber="acme"), 201)  # and so is acme's own


@pytest.mark.parametrize("subscriber", [None, "acme"])
def test_the_same_entry_twice_is_409_even_when_both_are_checked_at_once(
    root: Admin, monkeypatch: pytest.MonkeyPatch, subscriber: str | None
) -> None:
    # Two admins at once: each looks before the other's entry is stored, so only the
    # database's unique index can refuse the second (for every subscriber too, NULL and all).
    monkeypatch.setattr(number_policy, "find_entry", lambda *_: None)
    body(deny(root, "+4490", prefix=True, subscriber=subscriber), 201)

    refused = error(deny(root, "+4490", prefix=True, subscriber=subscriber), 409)

    assert refused["code"] == "denied_number_exists"
    assert patterns(root) == [("+4490", True, subscriber)]


@pytest.mark.parametrize(
    ("sent", "status", "code", "field"),
    [
        ({"pattern": "4490", "prefix": True}, 422, "bad_pattern", "pattern"),
        ({"pattern": "+4", "prefix": True}, 422, "bad_pattern", "pattern"),
        ({"pattern": "+44 90"}, 422, "bad_pattern", "pattern"),
        ({"pattern": "+4490&PJSIP/+1900"}, 422, "bad_pattern", "pattern"),
        ({"pattern": "+\uff14\uff14\uff19\uff10"}, 422, "bad_pattern", "pattern"),
        ({"pattern": "+4490", "reason": "x" * 201}, 422, "too_long", "reason"),
        ({"pattern": "+4490", "reason": "fraud\nmore"}, 422, "bad_reason", "reason"),
        ({"pattern": "+4490", "prefix": "yes"}, 400, "wrong_type", "prefix"),
        ({"pattern": 4490}, 400, "wrong_type", "pattern"),
        ({"prefix": True}, 400, "missing_field", "pattern"),
        ({"pattern": "+4490", "scope": "all"}, 400, "unknown_field", "scope"),
        ({"pattern": "+4490", "subscriber": "nobody"}, 404, "subscriber_not_found", "subscriber"),
    ],
)
def test_a_bad_entry_is_refused_naming_the_field(
    root: Admin, sent: dict[str, object], status: int, code: str, field: str
) -> None:
    refused = error(root.post("/denied-numbers", json=sent), status)

    assert (refused["code"], refused["field"]) == (code, field)
    assert patterns(root) == []


def test_a_token_for_one_subscriber_manages_its_own_entries_and_reads_the_global_ones(
    root: Admin, acme_only: Admin
) -> None:
    global_entry = body(deny(root, "+4490", prefix=True), 201)
    bolts = body(deny(root, "+12015550111", subscriber="bolt"), 201)

    own = body(deny(acme_only, "+12015550112"), 201)
    assert own["subscriber"] == "acme", "a business's token denies for that business"
    assert patterns(acme_only) == [("+4490", True, None), ("+12015550112", False, "acme")]
    assert error(deny(acme_only, "+12015550113", subscriber="bolt"), 404)["field"] == ("subscriber")
    refused = error(acme_only.delete(f"/denied-numbers/{global_entry['id']}"), 403)
    assert "for every subscriber" in refused["message"]
    hidden = error(acme_only.delete(f"/denied-numbers/{bolts['id']}"), 404)
    assert hidden["code"] == "denied_number_not_found"
    body(acme_only.delete(f"/denied-numbers/{own['id']}"))
    assert len(patterns(root)) == 2


@pytest.mark.parametrize("entry_id", ["abc", "-1", "99999999999", "0"])
def test_an_entry_that_cannot_exist_is_404(root: Admin, entry_id: str) -> None:
    assert error(root.delete(f"/denied-numbers/{entry_id}"), 404)["code"] == (
        "denied_number_not_found"
    )


def test_deny_list_changes_are_audited_with_their_entry(
    root: Admin, sessions: sessionmaker[Session]
) -> None:
    added = body(deny(root, "+4490", prefix=True, reason="premium fraud"), 201)
    body(root.delete(f"/denied-numbers/{added['id']}"))

    with sessions() as session:
        rows = session.execute(
            select(AuditEvent.actor, AuditEvent.action, AuditEvent.detail).order_by(AuditEvent.id)
        ).all()
        left = session.scalars(select(DeniedNumber)).all()
    assert [tuple(row) for row in rows] == [
        ("ops", "denied_number_added", "denied prefix +4490 for every subscriber (premium fraud)"),
        (
            "ops",
            "denied_number_removed",
            "no longer denied: prefix +4490 for every subscriber (premium fraud)",
        ),
    ]
    assert left == []


# --- the business's own numbers --------------------------------------------------------------


def test_a_visitor_cannot_make_the_business_call_itself(client: FlaskClient) -> None:
    refused = error(ask(client, "(201) 555-0100"), 422)

    assert refused["code"] == "phone_is_business"
    assert refused["field"] == "phone"


# --- number types ----------------------------------------------------------------------------


def test_number_types_are_shown_and_set_by_an_admin(root: Admin, client: FlaskClient) -> None:
    assert body(root.get("/subscribers/acme/number-types")) == {
        "number_types": ["fixed_line", "mobile", "fixed_line_or_mobile"],
        "default": True,
    }
    assert error(ask(client, US_TOLL_FREE), 422)["code"] == "phone_toll_free"

    changed = body(
        root.put(
            "/subscribers/acme/number-types",
            json={"number_types": ["fixed_line_or_mobile", "toll_free"]},
        )
    )
    assert changed == {"number_types": ["fixed_line_or_mobile", "toll_free"], "default": False}
    assert body(root.get("/subscribers/acme"))["number_types"] == changed["number_types"]
    assert ask(client, US_TOLL_FREE).status_code == 201

    back = body(root.put("/subscribers/acme/number-types", json={"number_types": None}))
    assert back["default"] is True
    assert error(ask(client, "+18002345679"), 422)["code"] == "phone_toll_free"


@pytest.mark.parametrize(
    ("sent", "status", "code"),
    [
        ({"number_types": ["mobile", "landline"]}, 422, "bad_number_types"),
        ({"number_types": []}, 422, "bad_number_types"),
        ({"number_types": "mobile,,satellite"}, 422, "bad_number_types"),
        ({"number_types": [1, 2]}, 400, "wrong_type"),
        ({}, 400, "missing_field"),
        ({"types": ["mobile"]}, 400, "unknown_field"),
    ],
)
def test_unknown_number_types_are_refused(
    root: Admin, sent: dict[str, object], status: int, code: str
) -> None:
    refused = error(root.put("/subscribers/acme/number-types", json=sent), status)

    assert refused["code"] == code
    if status == 422:
        assert "fixed_line" in refused["message"], "the known types are named"
    assert body(root.get("/subscribers/acme/number-types"))["default"] is True


def test_a_business_token_reads_its_number_types_but_cannot_widen_them(acme_only: Admin) -> None:
    assert body(acme_only.get("/subscribers/acme/number-types"))["default"] is True
    assert error(acme_only.get("/subscribers/bolt/number-types"), 404)["field"] == "subscriber"
    refused = acme_only.put(
        "/subscribers/acme/number-types", json={"number_types": ["premium_rate"]}
    )
    assert error(refused, 403)["code"] == "forbidden"
    assert body(acme_only.get("/subscribers/acme/number-types"))["default"] is True
