"""The embeddable widget's server side: ``/widget.js`` and CORS on the create endpoint."""

from __future__ import annotations

import json

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.test import TestResponse

from cbserver.models import CallbackRequest, Subscriber
from tests.web.conftest import US_MOBILE

pytestmark = [pytest.mark.postgres]

SHOP = "https://shop.example.com"
PREFLIGHT = {"Access-Control-Request-Method": "POST"}


@pytest.fixture
def acme(acme: Subscriber, sessions: sessionmaker[Session]) -> Subscriber:
    """Acme, whose widget may post from its shop (written as an operator might type it)."""
    with sessions() as session:
        subscriber = session.get_one(Subscriber, acme.id)
        subscriber.allowed_origins = " https://www.example.com, HTTPS://Shop.Example.com:443/ "
        session.commit()
        return subscriber


def ask(client: FlaskClient, origin: str | None, **body: object) -> TestResponse:
    """A request as the widget sends it from ``origin`` (with a form token, which a browser
    must send), or as a server-side integration does (no Origin, no token)."""
    checks: dict[str, object] = {}
    if origin:
        answer = client.get(f"/widget/{body.get('subscriber', 'acme')}/form-token.json").json
        assert answer is not None
        # An unknown subscriber has none: the request is refused for that first.
        checks = {"form_token": answer.get("form_token"), "website": ""}
    return client.post(
        "/api/v1/callbacks",
        json={"subscriber": "acme", "phone": US_MOBILE, "consent": True, **checks, **body},
        headers={"Origin": origin} if origin else {},
    )


def stored(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(CallbackRequest)) or 0


def test_widget_js_is_served_as_cacheable_javascript(client: FlaskClient) -> None:
    response = client.get("/widget.js")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/javascript; charset=utf-8"
    assert response.cache_control.public
    assert response.cache_control.max_age == 300
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    script = response.get_data(as_text=True)
    assert "attachShadow" in script
    assert "/api/v1/callbacks" in script
    assert "innerHTML" not in script
    # Answered 304 when the browser already has it.
    again = client.get("/widget.js", headers={"If-None-Match": response.headers["ETag"]})
    assert again.status_code == 304


@pytest.mark.usefixtures("acme")
def test_a_preflight_from_an_allowed_origin_gets_the_allow_headers(client: FlaskClient) -> None:
    response = client.options(
        "/api/v1/callbacks",
        headers={
            "Origin": SHOP,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,idempotency-key",
        },
    )
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == SHOP
    assert "Origin" in response.vary
    assert response.headers["Access-Control-Allow-Methods"] == "POST, OPTIONS"
    assert response.headers["Access-Control-Allow-Headers"] == "Content-Type, Idempotency-Key"
    assert response.headers["Access-Control-Max-Age"] == "600"


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example.net",
        "http://shop.example.com",  # another scheme
        "https://shop.example.com:8443",  # another port
        "https://example.com",  # a parent domain
        "https://shop.example.com.evil.net",
        "null",
    ],
)
@pytest.mark.usefixtures("acme")
def test_a_preflight_from_another_origin_gets_no_allow_headers(
    client: FlaskClient, origin: str
) -> None:
    response = client.options("/api/v1/callbacks", headers={"Origin": origin, **PREFLIGHT})
    assert response.status_code == 204
    assert not any(name.startswith("Access-Control-Allow") for name, _ in response.headers.items())
    assert "Origin" in response.vary


def test_a_preflight_ignores_inactive_subscribers(
    client: FlaskClient, acme: Subscriber, sessions: sessionmaker[Session]
) -> None:
    with sessions() as session:
        session.get_one(Subscriber, acme.id).active = False
        session.commit()
    response = client.options("/api/v1/callbacks", headers={"Origin": SHOP, **PREFLIGHT})
    assert "Access-Control-Allow-Origin" not in response.headers


@pytest.mark.usefixtures("acme")
def test_a_post_from_an_allowed_origin_is_taken_and_readable(client: FlaskClient) -> None:
    response = ask(client, SHOP, page_url=f"{SHOP}/contact")
    assert response.status_code == 201
    assert response.headers["Access-Control-Allow-Origin"] == SHOP
    assert "Origin" in response.vary
    assert response.json is not None
    assert response.json["status"] == "queued"


@pytest.mark.usefixtures("acme")
def test_an_allowed_origin_reads_the_apis_errors_too(client: FlaskClient) -> None:
    response = ask(client, SHOP, phone="+1 900 234 5678")
    assert response.status_code == 422
    assert response.headers["Access-Control-Allow-Origin"] == SHOP
    assert response.json is not None
    assert response.json["error"]["field"] == "phone"


@pytest.mark.usefixtures("acme")
def test_a_post_from_a_foreign_origin_is_refused_and_stores_nothing(
    client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    response = ask(client, "https://evil.example.net")
    assert response.status_code == 403
    assert response.json == {
        "error": {
            "code": "origin_not_allowed",
            "message": "This web site may not send call-back requests for Acme Plumbing.",
        }
    }
    assert "Access-Control-Allow-Origin" not in response.headers
    assert stored(sessions) == 0


def test_an_origin_another_subscriber_lists_is_refused_but_may_read_why(
    client: FlaskClient, acme: Subscriber, sessions: sessionmaker[Session]
) -> None:
    other = "https://beta.example.org"
    with sessions() as session:
        session.add(
            Subscriber(
                slug="beta",
                display_name="Beta Bakery",
                country="US",
                caller_id="+12015550101",
                allowed_origins=other,
            )
        )
        session.commit()
    preflight = client.options("/api/v1/callbacks", headers={"Origin": other, **PREFLIGHT})
    assert preflight.headers["Access-Control-Allow-Origin"] == other
    response = ask(client, other)
    assert response.status_code == 403
    assert response.json is not None
    assert response.json["error"]["code"] == "origin_not_allowed"
    # Its preflight passed, so the widget on that page may show the owner why.
    assert response.headers["Access-Control-Allow-Origin"] == other
    assert stored(sessions) == 0
    assert ask(client, other, subscriber="beta").status_code == 201


@pytest.mark.usefixtures("acme")
def test_a_post_without_an_origin_works_as_before(
    client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    response = ask(client, None)
    assert response.status_code == 201
    assert "Access-Control-Allow-Origin" not in response.headers
    assert stored(sessions) == 1


def test_cbservers_own_origin_is_always_allowed(
    client: FlaskClient, acme: Subscriber, sessions: sessionmaker[Session]
) -> None:
    with sessions() as session:
        session.get_one(Subscriber, acme.id).allowed_origins = ""
        session.commit()
    own = "http://localhost"  # the test client's host
    preflight = client.options("/api/v1/callbacks", headers={"Origin": own, **PREFLIGHT})
    assert preflight.headers["Access-Control-Allow-Origin"] == own
    response = ask(client, own)
    assert response.status_code == 201
    assert ask(client, SHOP, phone="+1 201 555 0124").status_code == 403


@pytest.mark.usefixtures("acme")
def test_an_unknown_subscriber_from_a_foreign_origin_is_not_found_and_unreadable(
    client: FlaskClient,
) -> None:
    response = ask(client, "https://evil.example.net", subscriber="nobody")
    assert response.status_code == 404
    assert "Access-Control-Allow-Origin" not in response.headers


@pytest.mark.usefixtures("acme")
def test_a_mistyped_subscriber_on_an_allowed_page_is_reported_readably(
    client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    response = ask(client, SHOP, subscriber="acne")
    assert response.status_code == 404
    assert response.headers["Access-Control-Allow-Origin"] == SHOP
    assert response.json is not None
    assert response.json["error"]["code"] == "unknown_subscriber"
    assert stored(sessions) == 0


@pytest.mark.usefixtures("acme")
def test_only_the_create_endpoint_speaks_cors(client: FlaskClient) -> None:
    created = ask(client, None).json
    assert created is not None
    shown = client.get(
        f"/api/v1/callbacks/{created['id']}?token={created['token']}", headers={"Origin": SHOP}
    )
    assert shown.status_code == 200
    assert "Access-Control-Allow-Origin" not in shown.headers


def test_widget_texts_come_in_the_business_language(
    client: FlaskClient, acme: Subscriber, sessions: sessionmaker[Session]
) -> None:
    english = client.get("/widget/acme.json")
    assert english.status_code == 200
    assert english.headers["Access-Control-Allow-Origin"] == "*"
    assert english.json["text"]["launcher"] == "Call me back"  # type: ignore[index]
    with sessions() as session:
        session.scalars(select(Subscriber)).one().language = "de"
        session.commit()
    german = client.get("/widget/acme.json").json
    assert german is not None
    assert german["text"]["launcher"] == "Rufen Sie mich zurück"
    assert german["text"]["thanks"] == "Danke \u2013 wir rufen Sie an."
    missing = client.get("/widget/nobody.json")
    assert missing.status_code == 404
    assert missing.json["error"]["code"] == "unknown_subscriber"  # type: ignore[index]


def test_widget_texts_include_the_choice_of_time(
    client: FlaskClient, acme: Subscriber, sessions: sessionmaker[Session]
) -> None:
    text = client.get("/widget/acme.json").json["text"]  # type: ignore[index]
    assert text["when"] == "When should we call you?"
    assert text["asap"] == "As soon as possible"
    assert text["full"] == "(full)"
    # Placeholders the widget fills in from the slot listing.
    assert text["zoneHint"] == "Times are in the time zone of {name}: {zone}."
    assert text["closedNote"] == "We are closed now: we will call you when we open, {time}."
    assert text["closedRefuse"] == (
        "We are closed now and open again {time}. Please choose a time."
    )
    assert text["notTaking"] == "We are not taking call-backs at the moment."
    # Every text has an English default in the script, used when the texts do not come.
    script = client.get("/widget.js").get_data(as_text=True)
    for name, english in text.items():
        assert f"{name}: {json.dumps(english)}" in script, name
    with sessions() as session:
        session.get_one(Subscriber, acme.id).language = "de"
        session.commit()
    german = client.get("/widget/acme.json").json["text"]  # type: ignore[index]
    assert german["when"] == "Wann sollen wir Sie anrufen?"
    assert german["asap"] == "So bald wie möglich"
