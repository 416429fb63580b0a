"""The hosted form and the status page, as a visitor's browser posts them (no JavaScript)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from cbserver.models import CallbackRequest, Subscriber
from tests.web.conftest import csrf_token, hidden

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("acme")]


def form_fields(page: str, **values: str) -> dict[str, str]:
    return {
        "csrf_token": csrf_token(page),
        "submission_id": hidden(page, "submission_id"),
        "form_token": hidden(page, "form_token"),
        "consent": "y",
        "page_url": "https://acme.example/contact",
        "phone": "(201) 555-0123",
        "name": "",
        "topic": "",
        "when": "asap",
        **values,
    }


def stored(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(CallbackRequest)) or 0


def test_form_has_labelled_fields_for_the_business(client: FlaskClient) -> None:
    page = client.get("/c/acme")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Acme Plumbing will call you back" in html
    for label in ("Your phone number", "Your name (optional)", "When should we call you?"):
        assert label in html
    assert re.search(r'<label for="phone">', html)
    assert 'autocomplete="tel"' in html


def test_unknown_business_is_a_404_page(client: FlaskClient) -> None:
    page = client.get("/c/nobody")
    assert page.status_code == 404
    assert "There is no call-back service called" in page.get_data(as_text=True)


def test_submitting_lands_on_the_status_page(
    client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    page = client.get("/c/acme").get_data(as_text=True)
    sent = client.post("/c/acme", data=form_fields(page, name="Ada", topic="Leaking tap"))
    assert sent.status_code == 303
    status = client.get(sent.headers["Location"])
    html = status.get_data(as_text=True)
    assert status.status_code == 200
    assert "Your call-back from Acme Plumbing" in html
    assert "Waiting: we will call you as soon as someone is free." in html
    assert 'You are number <span data-field="position">1</span>' in html
    assert "We expect to call you around" in html
    with sessions() as session:
        request = session.scalars(select(CallbackRequest)).one()
        assert request.page_url == "https://acme.example/contact"
        assert request.visitor_phone == "+12015550123"


@pytest.mark.parametrize(
    ("link", "kept"),
    [
        ("/c/acme?from=https://acme.example/prices", "https://acme.example/prices"),
        ("/c/acme?from=javascript:alert(1)", ""),
        ("/c/acme?from=http://[::1", ""),
    ],
)
def test_the_page_the_visitor_came_from_is_kept_only_when_it_is_a_web_address(
    client: FlaskClient, sessions: sessionmaker[Session], link: str, kept: str
) -> None:
    page = client.get(link).get_data(as_text=True)
    assert hidden(page, "page_url") == kept
    fields = form_fields(page)
    fields["page_url"] = hidden(page, "page_url")
    sent = client.post("/c/acme", data=fields)
    assert sent.status_code == 303, "a hostile link never stops the visitor from sending"
    with sessions() as session:
        assert session.scalars(select(CallbackRequest.page_url)).one() == (kept or None)


def test_a_refused_number_is_explained_next_to_the_field_and_nothing_is_lost(
    client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    page = client.get("/c/acme").get_data(as_text=True)
    sent = client.post(
        "/c/acme", data=form_fields(page, phone="+1 900 234 5678", name="Ada", topic="Taps")
    )
    assert sent.status_code == 422
    html = sent.get_data(as_text=True)
    assert re.search(r'id="phone-error" role="alert">This is a premium-rate number', html)
    assert 'aria-invalid="true"' in html
    assert 'value="+1 900 234 5678"' in html
    assert 'value="Ada"' in html
    assert re.search(r">\s*Taps</textarea>", html)
    assert 'aria-describedby="None"' not in html
    assert stored(sessions) == 0


def test_an_expired_form_keeps_the_visitors_input(
    client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    page = client.get("/c/acme").get_data(as_text=True)
    sent = client.post("/c/acme", data=form_fields(page, csrf_token="stale", name="Ada"))
    assert sent.status_code == 422
    html = sent.get_data(as_text=True)
    assert "This form had expired" in html
    assert 'value="Ada"' in html
    assert stored(sessions) == 0


def test_a_later_time_is_one_of_the_slots_in_the_business_time_zone(
    client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    # The clock stands at Wednesday 18 November 2026, 09:00 in Los Angeles (17:00 UTC).
    page = client.get("/c/acme").get_data(as_text=True)
    days = re.findall(r'<optgroup label="([^"]+)">', page)
    assert days == [
        "Wednesday 18 November",
        "Thursday 19 November",
        "Friday 20 November",
        "Saturday 21 November",
        "Sunday 22 November",
        "Monday 23 November",
        "Tuesday 24 November",
    ], "a group per day of the 7-day booking window"
    assert '<option value="2026-11-18T17:00:00+00:00">09:00 - 09:15</option>' in page
    assert '<option value="2026-11-19T18:30:00+00:00">10:30 - 10:45</option>' in page
    assert "2026-11-18T16:45:00+00:00" not in page, "a slot that has ended is not offered"
    assert "Times are in the time zone of Acme Plumbing: America/Los_Angeles." in page

    missing = client.post("/c/acme", data=form_fields(page, when="slot", slot=""))
    assert missing.status_code == 422
    assert re.search(r'id="slot-error" role="alert">Please choose a time.', missing.text)

    too_far = client.post(
        "/c/acme", data=form_fields(page, when="slot", slot="2026-11-25T17:00:00+00:00")
    )
    assert too_far.status_code == 422
    assert "We can take call-backs up to 7 days ahead." in too_far.text
    assert stored(sessions) == 0

    sent = client.post(
        "/c/acme", data=form_fields(page, when="slot", slot="2026-11-19T18:30:00+00:00")
    )
    assert sent.status_code == 303
    status = client.get(sent.headers["Location"]).text
    assert "Booked: we will call you at the time shown." in status
    assert "Thu 19 Nov, 10:30 (America/Los_Angeles)" in status
    with sessions() as session:
        request = session.scalars(select(CallbackRequest)).one()
        assert request.status == "scheduled"
        assert request.due_at == datetime(2026, 11, 19, 18, 30, tzinfo=UTC)
        assert request.slot_start == request.due_at


def test_a_double_click_stores_one_request(
    client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    page = client.get("/c/acme").get_data(as_text=True)
    fields = form_fields(page)
    first = client.post("/c/acme", data=fields)
    second = client.post("/c/acme", data=fields)
    assert first.headers["Location"] == second.headers["Location"]
    assert stored(sessions) == 1


def test_names_are_shown_as_text_never_as_markup(client: FlaskClient) -> None:
    page = client.get("/c/acme").get_data(as_text=True)
    sent = client.post("/c/acme", data=form_fields(page, name="<script>alert(1)</script>"))
    html = client.get(sent.headers["Location"]).get_data(as_text=True)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>alert(1)" not in html


def test_the_status_page_cancels_with_its_button(client: FlaskClient) -> None:
    page = client.get("/c/acme").get_data(as_text=True)
    status_url = client.post("/c/acme", data=form_fields(page)).headers["Location"]
    status = client.get(status_url).get_data(as_text=True)
    token = re.search(r'data-token="([^"]+)"', status)
    assert token
    action = re.search(r'<form method="post" action="([^"]+/cancel)"', status)
    assert action
    done = client.post(
        action.group(1), data={"csrf_token": csrf_token(status), "token": token.group(1)}
    )
    assert done.status_code == 303
    after = client.get(status_url).get_data(as_text=True)
    assert "Canceled: we will not call." in after
    assert "canceled by the visitor" in after


def test_the_status_page_needs_the_token(client: FlaskClient) -> None:
    page = client.get("/c/acme").get_data(as_text=True)
    status_url = client.post("/c/acme", data=form_fields(page, name="Ada")).headers["Location"]
    wrong = client.get(status_url.split("?")[0] + "?token=guess")
    assert wrong.status_code == 404
    assert "Ada" not in wrong.get_data(as_text=True)


def test_a_german_business_speaks_german_to_its_visitors(
    client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    with sessions() as session:
        acme = session.scalars(select(Subscriber)).one()
        acme.language = "de"
        session.commit()
    page = client.get("/c/acme", headers={"Accept-Language": "en"})
    html = page.get_data(as_text=True)
    assert '<html lang="de">' in html
    assert "Acme Plumbing ruft Sie zurück" in html
    assert "Ihre Telefonnummer" in html
    refused = client.post(
        "/c/acme",
        data=form_fields(html, phone="+44 7400 123456"),
        headers={"Accept-Language": "en"},
    )
    assert "Wir können nur Nummern in US anrufen." in refused.get_data(as_text=True)
    api = client.post(
        "/api/v1/callbacks",
        json={"subscriber": "acme", "phone": "+1 201 555 01", "consent": True},
    )
    assert api.json["error"]["message"].startswith("Diese Telefonnummer ist ungültig")  # type: ignore[index]
    sent = client.post("/c/acme", data=form_fields(html))
    status = client.get(sent.headers["Location"]).get_data(as_text=True)
    assert "Wartend: Wir rufen Sie an, sobald jemand frei ist." in status
    assert "Meinen Rückruf absagen" in status
