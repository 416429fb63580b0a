"""The JSON API as an integrator or the widget sees it."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.test import TestResponse

from cbserver.models import CallbackRequest, RequestStatus
from cbserver.states import transition
from tests.web.conftest import US_MOBILE

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("acme")]


def ask(client: FlaskClient, headers: dict[str, str] | None = None, **body: object) -> TestResponse:
    return client.post(
        "/api/v1/callbacks",
        json={"subscriber": "acme", "phone": US_MOBILE, "consent": True, **body},
        headers=headers,
    )


def error(response: TestResponse) -> dict[str, str]:
    assert response.is_json
    return response.json["error"]  # type: ignore[index,no-any-return]


def test_a_request_is_created_and_its_status_url_shows_it(client: FlaskClient) -> None:
    created = ask(client, phone="(201) 555-0123", name="Ada", topic="Leaking tap")
    assert created.status_code == 201
    body = created.json
    assert body is not None
    assert set(body) == {"id", "status", "token", "status_url", "due_at", "when_text"}
    assert body["status"] == "queued"
    assert body["when_text"] == "We will call you as soon as someone is free."
    assert body["status_url"].endswith(f"/s/{body['id']}?token={body['token']}")

    shown = client.get(
        f"/api/v1/callbacks/{body['id']}", headers={"Authorization": f"Bearer {body['token']}"}
    )
    assert shown.status_code == 200
    callback = shown.json
    assert callback is not None
    assert callback["phone"] == US_MOBILE
    assert callback["position"] == 1
    assert callback["can_cancel"] is True
    assert callback["subscriber"] == {"slug": "acme", "name": "Acme Plumbing"}
    assert [e["to"] for e in callback["events"]] == ["queued"]
    assert client.get(f"/api/v1/callbacks/{body['id']}?token={body['token']}").status_code == 200


def test_a_number_already_waiting_gets_the_same_request_with_200(client: FlaskClient) -> None:
    first = ask(client)
    again = ask(client, name="Ada again")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json["id"] == first.json["id"]  # type: ignore[index]


def test_an_idempotency_key_replays_the_first_answer(client: FlaskClient) -> None:
    first = ask(client, headers={"Idempotency-Key": "order-77"})
    replay = ask(client, headers={"Idempotency-Key": "order-77"})
    assert (first.status_code, replay.status_code) == (201, 201)
    assert replay.json == first.json
    reused = ask(client, phone="+1 201 555 0124", headers={"Idempotency-Key": "order-77"})
    assert reused.status_code == 409
    assert error(reused)["code"] == "idempotency_key_reused"


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({"subscriber": "acme"}, 400, "missing_field", "phone"),
        ({"subscriber": "acme", "phone": 2015550123}, 400, "wrong_type", "phone"),
        ({"subscriber": "acme", "phone": US_MOBILE, "admin": True}, 400, "unknown_field", "admin"),
        ({"subscriber": "nobody", "phone": US_MOBILE}, 404, "unknown_subscriber", "subscriber"),
        ({"subscriber": "acme", "phone": "+19002345678"}, 422, "phone_premium_rate", "phone"),
        ({"subscriber": "acme", "phone": "1234"}, 422, "phone_invalid", "phone"),
        ({"subscriber": "acme", "phone": US_MOBILE, "when": "soon"}, 422, "bad_time", "when"),
    ],
)
def test_bad_input_gets_a_clear_error_naming_the_field(
    client: FlaskClient, body: dict[str, object], status: int, code: str, field: str
) -> None:
    response = client.post("/api/v1/callbacks", json={"consent": True, **body})
    assert response.status_code == status
    problem = error(response)
    assert (problem["code"], problem["field"]) == (code, field)
    assert problem["message"].endswith(".")


def test_bodies_that_are_not_json_objects_or_too_large_are_refused(client: FlaskClient) -> None:
    not_json = client.post("/api/v1/callbacks", data="phone=1", content_type="text/plain")
    assert (not_json.status_code, error(not_json)["code"]) == (400, "not_json")
    a_list = client.post("/api/v1/callbacks", json=[1, 2])
    assert (a_list.status_code, error(a_list)["code"]) == (400, "bad_json")
    huge = client.post("/api/v1/callbacks", data="x" * 20_000, content_type="application/json")
    assert huge.status_code == 413
    assert "16 KiB" in error(huge)["message"]


def test_wrong_or_missing_token_is_404_and_shows_nothing(client: FlaskClient) -> None:
    created = ask(client, name="Ada").json
    assert created is not None
    for url in (
        f"/api/v1/callbacks/{created['id']}",
        f"/api/v1/callbacks/{created['id']}?token=guess",
        f"/api/v1/callbacks/{created['id'][:-1]}x?token={created['token']}",
    ):
        response = client.get(url)
        assert response.status_code == 404
        assert "Ada" not in response.get_data(as_text=True)


def test_cancel_ends_the_request_once(client: FlaskClient) -> None:
    created = ask(client).json
    assert created is not None
    url = f"/api/v1/callbacks/{created['id']}/cancel?token={created['token']}"
    canceled = client.post(url)
    assert canceled.status_code == 200
    assert canceled.json["status"] == "canceled"  # type: ignore[index]
    assert canceled.json["can_cancel"] is False  # type: ignore[index]
    again = client.post(url)
    assert (again.status_code, error(again)["code"]) == (409, "request_finished")


def test_unknown_addresses_and_methods_answer_json(client: FlaskClient) -> None:
    assert error(client.get("/api/v1/nothing"))["code"] == "not_found"
    wrong_method = client.delete("/api/v1/callbacks")
    assert wrong_method.status_code == 405
    assert error(wrong_method)["code"] == "method_not_allowed"


def test_a_crash_answers_500_without_a_stack_trace(app: Flask) -> None:
    @app.get("/api/v1/boom")
    def boom() -> str:
        raise RuntimeError("secret internals")

    response = app.test_client().get("/api/v1/boom")
    assert response.status_code == 500
    assert error(response)["code"] == "internal_error"
    assert "secret internals" not in response.get_data(as_text=True)
    assert "Traceback" not in response.get_data(as_text=True)


def test_healthz_reports_the_database(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok", "database": "ok"}


def test_a_connected_call_cannot_be_canceled_from_the_api(
    client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    created = ask(client).json
    assert created is not None
    with sessions() as session:
        request = session.get(CallbackRequest, created["id"])
        assert request is not None
        for step in (RequestStatus.DIALING_AGENT, RequestStatus.DIALING_VISITOR):
            transition(session, request, step, "test")
        transition(session, request, RequestStatus.CONNECTED, "test")
        session.commit()
    shown = client.get(f"/api/v1/callbacks/{created['id']}?token={created['token']}").json
    assert shown is not None
    assert shown["can_cancel"] is False
    refused = client.post(f"/api/v1/callbacks/{created['id']}/cancel?token={created['token']}")
    assert refused.status_code == 409
    assert error(refused)["code"] == "request_in_call"
