"""Every JSON body is checked against its schema in the OpenAPI document before a view sees it:
a wrong shape is a 400, a value that cannot be taken a 422, each naming the field in plain words."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from jsonschema import Draft202012Validator
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.test import TestResponse

from cbserver import admin_tokens, intake
from cbserver.agents import add_agent
from cbserver.intake import Submission
from cbserver.models import CallbackRequest
from cbserver.subscribers import assign_agent
from cbserver.views import openapi
from cbserver.views.bodies import request_bodies
from tests.web.conftest import CLOCK_START, US_MOBILE

pytestmark = [pytest.mark.usefixtures("acme")]


@pytest.fixture
def secret(sessions: sessionmaker[Session]) -> str:
    with sessions() as session:
        return admin_tokens.create_token(session, "schemas")[1]


@pytest.fixture
def callback(sessions: sessionmaker[Session]) -> CallbackRequest:
    with sessions() as session:
        submission = Submission(subscriber="acme", phone=US_MOBILE, consent=True)
        return intake.submit(session, submission, now=CLOCK_START).request


def problem(response: TestResponse, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    found: dict[str, Any] = response.json["error"]  # type: ignore[index]
    assert found["message"].endswith("."), found
    return found


def send(
    client: FlaskClient, method: str, path: str, secret: str, callback: CallbackRequest, **kw: Any
) -> TestResponse:
    concrete = (
        path.replace("{request_id}", callback.id)
        .replace("{slug}", "acme")
        .replace("{agent}", "alice")
        .replace("{entry_id}", "1")
    )
    token = secret if "/admin/" in path else callback.visitor_token
    return client.open(
        concrete, method=method.upper(), headers={"Authorization": f"Bearer {token}"}, **kw
    )


def test_every_operation_that_takes_a_body_checks_it(
    app: Flask, client: FlaskClient, secret: str, callback: CallbackRequest
) -> None:
    operations = sorted(request_bodies())
    document = app.test_client().get("/api/v1/openapi.json").json
    assert document is not None
    with_bodies = sorted(
        (path, method)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if "requestBody" in operation
    )
    assert operations == with_bodies
    assert len(operations) >= 6

    for path, method in operations:
        unknown = send(client, method, path, secret, callback, json={"zz_not_a_field": 1})
        not_json = send(client, method, path, secret, callback, data="a=1")
        a_list = send(client, method, path, secret, callback, json=[1])

        assert problem(unknown, 400)["code"] == "unknown_field", path
        assert problem(unknown, 400)["field"] == "zz_not_a_field"
        assert problem(not_json, 400)["code"] == "not_json", path
        assert problem(a_list, 400)["code"] == "bad_json", path


@pytest.mark.parametrize(
    ("body", "code", "field", "message"),
    [
        ({"phone": US_MOBILE}, "missing_field", "subscriber", "The field subscriber is required."),
        ({"subscriber": "acme", "phone": None}, "missing_field", "phone", "phone is required"),
        ({"subscriber": "acme", "phone": ""}, "missing_field", "phone", "phone is required"),
        ({"subscriber": "acme", "phone": 2015550123}, "wrong_type", "phone", "must be text."),
        (
            {"subscriber": "acme", "phone": US_MOBILE, "name": ["Ada"]},
            "wrong_type",
            "name",
            "The field name must be text.",
        ),
        (
            {"subscriber": "acme", "phone": US_MOBILE, "consent": "yes"},
            "wrong_type",
            "consent",
            "The field consent must be true or false.",
        ),
        (
            {"subscriber": "acme", "phone": US_MOBILE, "Phone": US_MOBILE},
            "unknown_field",
            "Phone",
            "Unknown field: Phone.",
        ),
    ],
)
def test_a_body_of_the_wrong_shape_is_400_naming_the_field(
    client: FlaskClient, body: dict[str, Any], code: str, field: str, message: str
) -> None:
    refused = problem(client.post("/api/v1/callbacks", json=body), 400)

    assert (refused["code"], refused["field"]) == (code, field)
    assert message in refused["message"]


def test_a_value_too_long_is_422_saying_how_long_it_may_be(client: FlaskClient) -> None:
    body = {"subscriber": "acme", "phone": US_MOBILE, "consent": True, "name": "A" * 101}

    refused = problem(client.post("/api/v1/callbacks", json=body), 422)

    assert (refused["code"], refused["field"]) == ("too_long", "name")
    assert refused["message"] == "The field name is too long: at most 100 characters."


@pytest.mark.parametrize(
    ("body", "status", "code", "field", "message"),
    [
        (
            {"hours": {"weekly": {"mon": ["09:00-12:00"], "noday": []}}},
            400,
            "unknown_field",
            "hours",
            "Unknown field: hours.weekly.noday.",
        ),
        (
            {"hours": {"weekly": {"wed": ["09:00-12:00", "9-5"]}}},
            422,
            "invalid",
            "hours",
            "hours.weekly.wed[1]: '9-5' is not an opening like 09:00-17:30.",
        ),
        (
            {"hours": {"weekly": {"wed": [9]}}},
            400,
            "wrong_type",
            "hours",
            "The field hours.weekly.wed[0] must be text.",
        ),
        (
            {"retry_rules": {"visitor_busy": {"max_attempts": "3"}}},
            400,
            "wrong_type",
            "retry_rules",
            "retry_rules.visitor_busy.max_attempts must be a whole number.",
        ),
        ({"slot_minutes": None}, 400, "wrong_type", "slot_minutes", "must be a whole number."),
        ({"slot_minutes": 1.5}, 400, "wrong_type", "slot_minutes", "must be a whole number."),
        ({"slot_minutes": True}, 400, "wrong_type", "slot_minutes", "must be a whole number."),
        (
            {"outside_hours": "sometimes"},
            422,
            "invalid",
            "outside_hours",
            "The field outside_hours must be one of ",
        ),
    ],
)
def test_nested_problems_name_the_whole_path(
    client: FlaskClient,
    secret: str,
    body: dict[str, Any],
    status: int,
    code: str,
    field: str,
    message: str,
) -> None:
    response = client.patch(
        "/api/v1/admin/subscribers/acme/schedule",
        json=body,
        headers={"Authorization": f"Bearer {secret}"},
    )

    refused = problem(response, status)
    assert (refused["code"], refused["field"]) == (code, field)
    assert message in refused["message"]


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 5000 + b"]" * 5000,
        b'{"subscriber": "acme", "phone": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        b'{"a":' * 2000 + b"1" + b"}" * 2000,
        b'{"subscriber": "acme", "phone": ' + b"9" * 5000 + b"}",
        b'{"subscriber": "acme"',
        b"",
    ],
    ids=["deep list", "deep field", "deep object", "huge number", "half", "empty"],
)
def test_json_that_cannot_be_read_is_400_not_a_crash(client: FlaskClient, raw: bytes) -> None:
    response = client.post("/api/v1/callbacks", data=raw, content_type="application/json")

    assert problem(response, 400)["code"] == "bad_json"


def test_the_admin_api_asks_for_a_token_before_it_reads_a_body(client: FlaskClient) -> None:
    response = client.post("/api/v1/admin/subscribers", json={"nothing": "known"})

    assert problem(response, 401)["code"] == "unauthorized"


def test_a_visitor_api_body_is_checked_before_the_request_is_looked_up(
    client: FlaskClient, callback: CallbackRequest
) -> None:
    for token in (callback.visitor_token, "guess"):
        response = client.post(
            f"/api/v1/callbacks/{callback.id}/reschedule?token={token}", json={"when": 5}
        )
        assert problem(response, 400)["code"] == "wrong_type"


def test_a_body_where_none_is_needed_may_be_left_out(
    client: FlaskClient, secret: str, sessions: sessionmaker[Session]
) -> None:
    with sessions() as session:
        add_agent(session, "alice", contact="sip:alice@192.0.2.10")
        assign_agent(session, "acme", "alice", priority=10)
    headers = {"Authorization": f"Bearer {secret}"}

    assert (
        client.put("/api/v1/admin/subscribers/acme/agents/alice", headers=headers).status_code
        == 200
    )
    wrong = client.put(
        "/api/v1/admin/subscribers/acme/agents/alice", json={"priority": 1001}, headers=headers
    )
    assert problem(wrong, 422)["message"] == (
        "The field priority must be a whole number from 0 to 1000."
    )


def test_every_request_schema_in_the_document_is_a_valid_json_schema() -> None:
    spec = openapi.document()
    bodies_checked = 0
    for operations in spec["paths"].values():
        for operation in operations.values():
            body = operation.get("requestBody")
            if body is None:
                continue
            schema = body["content"]["application/json"]["schema"]
            Draft202012Validator.check_schema({**schema, "components": spec["components"]})
            bodies_checked += 1
    assert bodies_checked == len(request_bodies()), "each body the app checks is a schema"
