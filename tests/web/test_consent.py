"""Nobody is called without saying so: "I agree to be called at this number" on the hosted
form, in the widget and in the JSON API, stored with the request."""

from __future__ import annotations

import re

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cbserver.models import CallbackRequest
from tests.web.conftest import CLOCK_START, US_MOBILE, csrf_token, hidden

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("acme")]

ASK_FOR_CONSENT = "Please tick the box to agree that we call you at this number."


def stored(sessions: sessionmaker[Session]) -> list[CallbackRequest]:
    with sessions() as session:
        return list(session.scalars(select(CallbackRequest)))


@pytest.mark.parametrize("consent", ["left out", False, None])
def test_the_api_calls_nobody_who_did_not_agree(
    client: FlaskClient, sessions: sessionmaker[Session], consent: object
) -> None:
    body: dict[str, object] = {"subscriber": "acme", "phone": US_MOBILE}
    if consent != "left out":
        body["consent"] = consent
    response = client.post("/api/v1/callbacks", json=body)
    assert response.status_code == 422
    assert response.json == {
        "error": {"code": "consent_missing", "message": ASK_FOR_CONSENT, "field": "consent"}
    }
    assert stored(sessions) == []


def test_the_api_document_says_consent_is_required_and_must_be_true(client: FlaskClient) -> None:
    document = client.get("/api/v1/openapi.json").json
    assert document is not None
    create = document["components"]["schemas"]["CallbackCreate"]
    assert "consent" in create["required"]
    assert create["properties"]["consent"]["type"] == "boolean"
    assert create["properties"]["consent"]["const"] is True


def test_consent_must_be_true_not_a_word_for_it(
    client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    response = client.post(
        "/api/v1/callbacks", json={"subscriber": "acme", "phone": US_MOBILE, "consent": "yes"}
    )
    assert response.status_code == 400
    assert response.json is not None
    assert response.json["error"]["code"] == "wrong_type"
    assert response.json["error"]["field"] == "consent"
    assert stored(sessions) == []


def test_the_consent_is_stored_with_the_time_it_was_given(
    client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    response = client.post(
        "/api/v1/callbacks", json={"subscriber": "acme", "phone": US_MOBILE, "consent": True}
    )
    assert response.status_code == 201
    [request] = stored(sessions)
    assert request.consent_at == CLOCK_START


def test_the_form_asks_for_consent_and_keeps_what_was_typed(
    client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    page = client.get("/c/acme").text
    assert re.search(
        r'<label class="choice"><input [^>]*name="consent"[^>]*type="checkbox"[^>]*> '
        r"I agree to be called at this number.</label>",
        page,
    )
    fields = {
        "csrf_token": csrf_token(page),
        "submission_id": hidden(page, "submission_id"),
        "form_token": hidden(page, "form_token"),
        "phone": "(201) 555-0123",
        "name": "Ada",
        "when": "asap",
    }
    refused = client.post("/c/acme", data=fields)
    assert refused.status_code == 422
    assert f'<p class="error" id="consent-error" role="alert">{ASK_FOR_CONSENT}</p>' in refused.text
    assert 'aria-describedby="consent-error"' in refused.text
    assert 'value="(201) 555-0123"' in refused.text
    assert 'value="Ada"' in refused.text
    assert stored(sessions) == []

    sent = client.post("/c/acme", data={**fields, "consent": "y"})
    assert sent.status_code == 303
    [request] = stored(sessions)
    assert request.consent_at == CLOCK_START


def test_the_widget_is_given_the_consent_words_in_the_business_language(
    client: FlaskClient,
) -> None:
    texts = client.get("/widget/acme.json").json
    assert texts is not None
    assert texts["text"]["consent"] == "I agree to be called at this number."
    assert texts["text"]["consentMissing"] == ASK_FOR_CONSENT
