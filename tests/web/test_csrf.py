"""Cross-site request forgery: a page elsewhere cannot post the hosted form or the status page's
buttons in a visitor's name; only a form cbserver showed to that browser is taken."""

from __future__ import annotations

import re

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from cbserver.models import CallbackRequest, RequestStatus
from tests.web.conftest import csrf_token, hidden

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("acme")]


def fields(page: str, **values: str) -> dict[str, str]:
    return {
        "submission_id": hidden(page, "submission_id"),
        "form_token": hidden(page, "form_token"),
        "consent": "y",
        "phone": "(201) 555-0123",
        "when": "asap",
        **values,
    }


def stored(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(CallbackRequest)) or 0


def test_a_form_posted_without_its_csrf_token_is_refused_and_nothing_stored(
    client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    page = client.get("/c/acme").get_data(as_text=True)
    sent = client.post("/c/acme", data=fields(page, name="Ada"))
    assert sent.status_code == 422
    assert "This form had expired" in sent.get_data(as_text=True)
    assert stored(sessions) == 0


def test_a_csrf_token_from_another_browser_is_refused(
    app: Flask, client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    attacker = app.test_client()
    attackers_page = attacker.get("/c/acme").get_data(as_text=True)
    victims_page = client.get("/c/acme").get_data(as_text=True)
    forged = fields(victims_page, csrf_token=csrf_token(attackers_page))
    sent = client.post("/c/acme", data=forged)
    assert sent.status_code == 422, "the token belongs to the attacker's session, not the visitor's"
    assert stored(sessions) == 0


def submitted(client: FlaskClient) -> tuple[str, str]:
    """A request sent through the form: its status page's HTML and visitor token."""
    page = client.get("/c/acme").get_data(as_text=True)
    status_url = client.post("/c/acme", data=fields(page, csrf_token=csrf_token(page)))
    location = status_url.headers["Location"]
    html = client.get(location).get_data(as_text=True)
    token = re.search(r'data-token="([^"]+)"', html)
    assert token
    return html, token.group(1)


def test_a_forged_cancel_is_refused_with_a_message_and_cancels_nothing(
    client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    html, token = submitted(client)
    action = re.search(r'<form method="post" action="([^"]+/cancel)"', html)
    assert action
    forged = client.post(action.group(1), data={"token": token})
    assert forged.status_code == 400
    assert "This page had expired" in forged.get_data(as_text=True)
    with sessions() as session:
        request = session.scalars(select(CallbackRequest)).one()
        assert request.status == RequestStatus.QUEUED, "without the page's CSRF token: no change"


def test_a_forged_move_is_refused_with_a_message(
    client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    html, token = submitted(client)
    action = re.search(r'<form method="post" action="([^"]+/reschedule)"', html)
    assert action
    moved = client.post(action.group(1), data={"token": token, "when": "asap"})
    assert moved.status_code == 400
    assert "This page had expired" in moved.get_data(as_text=True)
