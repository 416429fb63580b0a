"""Simple bots are told from people without a CAPTCHA: a field people never see, and the
signed time the form was shown (a bot posts at once). A person who was just quick sends again."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from playwright.sync_api import Request, expect
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from cbserver import bots
from cbserver.clock import FakeClock
from cbserver.config import Settings
from cbserver.models import AuditEvent, CallbackRequest, Subscriber
from cbserver.web import create_app
from tests.browser import Browser, live_server
from tests.web.conftest import CLOCK_START, UNLIMITED, US_MOBILE, ask_acme, csrf_token, hidden

pytestmark = [pytest.mark.usefixtures("acme")]

TOO_QUICK = (
    "This form was sent too quickly or not as a person sends it. Please check your details "
    "and send it again."
)
WAIT_MS = 10_000


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    # The checks are in the web layer, the same on every database.
    return f"sqlite:///{tmp_path / 'cbserver.sqlite3'}"


@pytest.fixture
def app(engine: Engine, sessions: sessionmaker[Session], tmp_path: Path, clock: FakeClock) -> Flask:
    """The rate limits lifted, the minimum fill time at its default (3 s)."""
    settings = Settings(state_dir=tmp_path).replace(**{**UNLIMITED, "form_min_seconds": 3.0})
    return create_app(settings=settings, engine=engine, clock=clock)


def form_fields(page: str, **values: str) -> dict[str, str]:
    return {
        "csrf_token": csrf_token(page),
        "submission_id": hidden(page, "submission_id"),
        "form_token": hidden(page, "form_token"),
        "phone": "(201) 555-0123",
        "name": "Ada",
        "topic": "Leaking tap",
        "when": "asap",
        "consent": "y",
        **values,
    }


def stored(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return len(session.scalars(select(CallbackRequest.id)).all())


def refusals(sessions: sessionmaker[Session]) -> list[AuditEvent]:
    with sessions() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.action == "bot_refused")))


def notice(page: str) -> str | None:
    found = re.search(r'<p class="error" role="alert" data-field="notice">([^<]*)</p>', page)
    return found.group(1) if found else None


# --- the hosted form ---------------------------------------------------------------------------


def test_a_form_sent_sooner_than_a_person_could_is_refused_and_can_be_sent_again(
    client: FlaskClient, sessions: sessionmaker[Session], clock: FakeClock
) -> None:
    page = client.get("/c/acme").text
    clock.advance(timedelta(seconds=1))
    refused = client.post("/c/acme", data=form_fields(page))
    assert refused.status_code == 422
    assert notice(refused.text) == TOO_QUICK
    assert 'value="(201) 555-0123"' in refused.text
    assert 'value="Ada"' in refused.text
    assert re.search(r">\s*Leaking tap</textarea>", refused.text)
    assert stored(sessions) == 0
    [event] = refusals(sessions)
    assert event.actor == "visitor 127.0.0.1"
    assert event.detail == "acme: the form was sent 1.0 s after it was shown"

    # The page shown again still knows when the form was first shown: once 3 s have passed,
    # the same form goes through.
    assert hidden(refused.text, "form_token") == hidden(page, "form_token")
    clock.advance(timedelta(seconds=2))
    sent = client.post("/c/acme", data=form_fields(refused.text))
    assert sent.status_code == 303
    assert stored(sessions) == 1


def test_a_filled_in_hidden_field_is_refused_and_emptied_for_the_next_try(
    client: FlaskClient, sessions: sessionmaker[Session], clock: FakeClock
) -> None:
    page = client.get("/c/acme").text
    assert re.search(
        r'<div class="hp" aria-hidden="true">\s*<label for="website">Leave this field empty'
        r'</label> <input autocomplete="off" id="website" name="website" tabindex="-1"',
        page,
    ), "hidden from people, from screen readers and from the keyboard"
    clock.advance(timedelta(seconds=30))
    refused = client.post("/c/acme", data=form_fields(page, website="https://spam.example"))
    assert refused.status_code == 422
    assert notice(refused.text) == TOO_QUICK
    assert 'id="website" name="website" tabindex="-1" type="text" value=""' in refused.text
    assert "spam.example" not in refused.text
    assert [event.detail for event in refusals(sessions)] == [
        "acme: the hidden field was filled in"
    ]
    assert stored(sessions) == 0

    sent = client.post("/c/acme", data=form_fields(refused.text))
    assert sent.status_code == 303


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("", "the form came without the time it was shown"),
        ("forged", "the time the form was shown is not one we signed"),
        ("other key", "the time the form was shown is not one we signed"),
        ("other business", "the time the form was shown is not one we signed"),
    ],
)
def test_a_form_without_a_time_we_signed_is_refused(
    client: FlaskClient,
    sessions: sessionmaker[Session],
    clock: FakeClock,
    app: Flask,
    token: str,
    reason: str,
) -> None:
    page = client.get("/c/acme").text
    made_up = {
        "": "",
        "forged": "eyJzIjoiYWNtZSIsInQiOjB9.forged",
        "other key": bots.form_token("another secret", "acme", CLOCK_START),
        "other business": bots.form_token(app.config["SECRET_KEY"], "bolt", CLOCK_START),
    }[token]
    clock.advance(timedelta(seconds=30))
    refused = client.post("/c/acme", data=form_fields(page, form_token=made_up))
    assert refused.status_code == 422
    assert notice(refused.text) == TOO_QUICK
    assert [event.detail for event in refusals(sessions)] == [f"acme: {reason}"]
    assert stored(sessions) == 0
    # A person is given a good one with the page, to send after the usual few seconds.
    fresh = hidden(refused.text, "form_token")
    assert bots.shown_at(app.config["SECRET_KEY"], "acme", fresh) == CLOCK_START + timedelta(
        seconds=30
    )


# --- the widget's calls to the JSON API ------------------------------------------------------


def test_the_widget_form_carries_a_signed_time_and_is_refused_when_sent_at_once(
    client: FlaskClient, sessions: sessionmaker[Session], clock: FakeClock
) -> None:
    answer = client.get("/widget/acme/form-token.json")
    assert answer.status_code == 200
    assert answer.headers["Cache-Control"] == "no-store"
    assert answer.json is not None
    token = answer.json["form_token"]

    status, body = ask_acme(client, form_token=token, website="")
    assert (status, body) == (
        422,
        {"error": {"code": "bot_suspected", "message": TOO_QUICK}},
    )
    clock.advance(timedelta(seconds=3))
    status, _ = ask_acme(client, form_token=token, website="")
    assert status == 201
    assert [e.detail for e in refusals(sessions)] == [
        "acme: the form was sent 0.0 s after it was shown"
    ]


def test_a_filled_in_hidden_field_of_the_widget_is_refused(
    client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    status, body = ask_acme(client, website="http://spam.example")
    assert status == 422
    assert body["error"] == {"code": "bot_suspected", "message": TOO_QUICK}
    assert stored(sessions) == 0


def test_a_server_side_integration_needs_neither_check(
    client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    status, _ = ask_acme(client)
    assert status == 201
    assert refusals(sessions) == []


def test_the_widget_cannot_be_given_a_forged_time(
    client: FlaskClient, sessions: sessionmaker[Session], clock: FakeClock
) -> None:
    clock.advance(timedelta(minutes=5))
    status, body = ask_acme(client, form_token="eyJzIjoiYWNtZSIsInQiOjB9.forged")
    assert status == 422
    assert body["error"] == {"code": "bot_suspected", "message": TOO_QUICK}
    assert stored(sessions) == 0


def widget_token(client: FlaskClient) -> str:
    answer = client.get("/widget/acme/form-token.json")
    assert answer.json is not None
    assert answer.json["expires_in"] == 12 * 3600
    token: str = answer.json["form_token"]
    return token


def reasons(sessions: sessionmaker[Session]) -> list[str]:
    return [event.detail for event in refusals(sessions)]


def test_a_widget_token_takes_one_request_and_a_repeat_of_that_request(
    client: FlaskClient, sessions: sessionmaker[Session], clock: FakeClock
) -> None:
    token = widget_token(client)
    clock.advance(timedelta(seconds=5))
    first = client.post(
        "/api/v1/callbacks",
        json={"subscriber": "acme", "phone": US_MOBILE, "consent": True, "form_token": token},
        headers={"Idempotency-Key": "order-1"},
    )
    assert first.status_code == 201
    # The same request again (a retry after a lost answer) is answered with the first.
    again = client.post(
        "/api/v1/callbacks",
        json={"subscriber": "acme", "phone": US_MOBILE, "consent": True, "form_token": token},
        headers={"Idempotency-Key": "order-1"},
    )
    assert again.status_code == 201
    assert again.json == first.json

    status, body = ask_acme(client, phone="+12015550124", form_token=token)
    assert (status, body) == (422, {"error": {"code": "bot_suspected", "message": TOO_QUICK}})
    assert reasons(sessions) == ["acme: the form's token was used for another request already"]
    assert stored(sessions) == 1


def test_a_refused_request_leaves_its_token_for_the_corrected_one(
    client: FlaskClient, sessions: sessionmaker[Session], clock: FakeClock
) -> None:
    token = widget_token(client)
    clock.advance(timedelta(seconds=5))
    status, body = ask_acme(client, phone="+1 900 234 5678", form_token=token)
    assert status == 422
    assert body["error"]["code"] == "phone_premium_rate"  # type: ignore[index]
    status, _ = ask_acme(client, form_token=token)
    assert status == 201
    assert refusals(sessions) == []


def test_a_token_is_good_for_twelve_hours(
    client: FlaskClient, sessions: sessionmaker[Session], clock: FakeClock
) -> None:
    token = widget_token(client)
    clock.advance(timedelta(hours=12, seconds=1))
    status, body = ask_acme(client, form_token=token)
    assert (status, body) == (422, {"error": {"code": "bot_suspected", "message": TOO_QUICK}})
    assert reasons(sessions) == ["acme: the form was shown 12.0 hours ago"]
    assert stored(sessions) == 0


def test_a_browser_must_send_a_token(
    client: FlaskClient, sessions: sessionmaker[Session], clock: FakeClock
) -> None:
    own = {"Origin": "http://localhost"}  # the test client's host: always allowed
    body = {"subscriber": "acme", "phone": US_MOBILE, "consent": True}
    refused = client.post("/api/v1/callbacks", json=body, headers=own)
    assert refused.status_code == 422
    assert refused.json == {"error": {"code": "bot_suspected", "message": TOO_QUICK}}
    assert reasons(sessions) == ["acme: the form came without the time it was shown"]

    token = widget_token(client)
    clock.advance(timedelta(seconds=5))
    taken = client.post("/api/v1/callbacks", json={**body, "form_token": token}, headers=own)
    assert taken.status_code == 201


@pytest.mark.parametrize("token", ["\ud800", "\udfff.abc", "a\x00b"])
def test_a_token_that_is_no_text_we_could_sign_is_refused_like_a_forged_one(
    client: FlaskClient, sessions: sessionmaker[Session], token: str
) -> None:
    status, body = ask_acme(client, form_token=token)
    assert (status, body) == (422, {"error": {"code": "bot_suspected", "message": TOO_QUICK}})
    assert reasons(sessions) == ["acme: the time the form was shown is not one we signed"]


def test_the_form_sent_again_after_it_was_taken_is_refused_with_a_new_token_and_input_kept(
    client: FlaskClient, sessions: sessionmaker[Session], clock: FakeClock, app: Flask
) -> None:
    page = client.get("/c/acme").text
    clock.advance(timedelta(seconds=5))
    assert client.post("/c/acme", data=form_fields(page)).status_code == 303
    # The browser's Back button: the same page, another number, a new request.
    other = form_fields(page, phone="(201) 555-0124", submission_id="another-request")
    refused = client.post("/c/acme", data=other)
    assert refused.status_code == 422
    assert notice(refused.text) == TOO_QUICK
    assert 'value="(201) 555-0124"' in refused.text
    fresh = hidden(refused.text, "form_token")
    assert fresh != hidden(page, "form_token")
    assert bots.shown_at(app.config["SECRET_KEY"], "acme", fresh) == CLOCK_START + timedelta(
        seconds=5
    )
    assert stored(sessions) == 1

    clock.advance(timedelta(seconds=5))
    again = form_fields(refused.text, phone="(201) 555-0124")
    assert client.post("/c/acme", data=again).status_code == 303
    assert stored(sessions) == 2


# --- in a browser ------------------------------------------------------------------------------

SHOP_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Acme Plumbing</title></head>
<body><h1>Acme Plumbing</h1>
<script src="{cbserver}/widget.js" data-subscriber="acme" async></script>
</body></html>
"""


@pytest.fixture
def shop(base_url: str, sessions: sessionmaker[Session]) -> Iterator[str]:
    """A business's page on an origin of its own, with the widget, allowed to ask."""
    site = Flask("business_site")

    @site.get("/contact")
    def contact() -> str:
        return SHOP_PAGE.replace("{cbserver}", base_url)

    with live_server(site) as url:
        with sessions() as session:
            acme = session.scalars(select(Subscriber)).one()
            acme.allowed_origins = url
            session.commit()
        yield url


@pytest.mark.browser
def test_the_hidden_field_is_out_of_sight_and_out_of_the_keyboards_way(
    browser: Browser, base_url: str
) -> None:
    browser.open(f"{base_url}/c/acme")
    box = browser.evaluate("document.getElementById('website').getBoundingClientRect().right")
    assert box <= 0, "off the left edge of the page"
    focused = []
    for _ in range(12):
        browser.page.keyboard.press("Tab")
        focused.append(browser.evaluate("document.activeElement.id"))
    assert "website" not in focused
    assert "consent" in focused


@pytest.mark.browser
def test_the_widget_sends_its_signed_time_and_a_quick_person_sends_again(
    browser: Browser, shop: str, sessions: sessionmaker[Session], clock: FakeClock, app: Flask
) -> None:
    posts: list[Request] = []
    browser.page.on(
        "request",
        lambda r: posts.append(r) if r.method == "POST" and "/api/" in r.url else None,
    )
    browser.open(shop + "/contact")
    with browser.page.expect_response("**/widget/acme/form-token.json"):
        browser.click("Call me back")
    dialog = browser.page.get_by_role("dialog", name="We will call you back")
    browser.fill("Your phone number", "(201) 555-0123")
    dialog.get_by_role("checkbox", name="I agree to be called at this number.").check()
    browser.click("Send")
    expect(dialog.get_by_role("alert")).to_have_text(TOO_QUICK, timeout=WAIT_MS)
    assert stored(sessions) == 0

    clock.advance(timedelta(seconds=4))
    browser.click("Send")
    expect(browser.page.get_by_text("Thank you \u2014 we will call you.")).to_be_visible(
        timeout=WAIT_MS
    )
    assert stored(sessions) == 1
    sent = [json.loads(post.post_data or "{}") for post in posts]
    assert [body["website"] for body in sent] == ["", ""]
    assert sent[0]["form_token"] == sent[1]["form_token"]
    shown = bots.shown_at(app.config["SECRET_KEY"], "acme", sent[0]["form_token"])
    assert shown == CLOCK_START, "the time the dialog opened, signed by the server"
    assert not browser.page_errors
