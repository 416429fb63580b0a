"""/metrics as Prometheus scrapes it."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session, sessionmaker

from cbserver.models import CallAttempt
from tests.web.conftest import US_MOBILE

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("acme")]


def scrape(client: FlaskClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    found = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_requests_are_counted_by_subscriber_and_status(client: FlaskClient) -> None:
    before = scrape(client)
    waiting = ("cbserver_callback_requests", (("status", "queued"), ("subscriber", "acme")))
    canceled = ("cbserver_callback_requests", (("status", "canceled"), ("subscriber", "acme")))
    assert before[waiting] == 0
    assert before[canceled] == 0

    created = client.post(
        "/api/v1/callbacks", json={"subscriber": "acme", "phone": US_MOBILE, "consent": True}
    )
    body = created.json
    assert body is not None
    client.post(
        "/api/v1/callbacks",
        json={"subscriber": "acme", "phone": "+1 201 555 0124", "consent": True},
    )
    client.post(f"/api/v1/callbacks/{body['id']}/cancel?token={body['token']}")

    after = scrape(client)
    assert after[waiting] == 1
    assert after[canceled] == 1
    answers = (
        "cbserver_http_answers_total",
        (("code", "201"), ("endpoint", "api.create_callback")),
    )
    assert after[answers] == 2


def test_metrics_are_not_shown_outside_the_allowed_networks(app: Flask) -> None:
    outside = app.test_client().get("/metrics", environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert outside.status_code == 404
    assert "cbserver_callback_requests" not in outside.get_data(as_text=True)


def test_attempts_are_counted_by_outcome(
    client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    created = client.post(
        "/api/v1/callbacks", json={"subscriber": "acme", "phone": US_MOBILE, "consent": True}
    )
    request_id = created.json["id"]  # type: ignore[index]
    with sessions() as session:
        session.add_all(
            [
                CallAttempt(request_id=request_id, number=1, outcome="busy"),
                CallAttempt(request_id=request_id, number=2),
            ]
        )
        session.commit()
    found = scrape(client)
    assert found[("cbserver_call_attempts", (("outcome", "busy"), ("subscriber", "acme")))] == 1
    in_progress = (("outcome", "in_progress"), ("subscriber", "acme"))
    assert found[("cbserver_call_attempts", in_progress)] == 1
