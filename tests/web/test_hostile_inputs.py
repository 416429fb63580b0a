"""Every input of the hostile corpus (tests/hostile.py) refused as its sender sees it: through the
JSON API, the widget's path (the API from an allowed page) and the hosted form, each with its
status, its error code and a plain message; nothing stored, and a refused number in the audit log.

The app runs with every rate limit lifted and no minimum fill time (settings): the corpus sends
well over a thousand requests from one address within seconds, and each must meet the refusal it
is about, not a limit. One app and database serve the whole module (per database), as setting
one up per input would take minutes.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, delete, func, select
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.test import TestResponse

from cbserver import db
from cbserver.clock import FakeClock
from cbserver.config import Settings
from cbserver.models import AuditEvent, CallbackRequest
from cbserver.views.form import FORM_FIELD
from cbserver.web import create_app
from tests.conftest import DATABASES, POSTGRES_URL, fresh_engine
from tests.hostile import (
    ABSENT,
    ALLOWED_ORIGIN,
    BODY,
    CORPUS,
    HOME,
    IDEMPOTENCY_KEY,
    NO_LIMITS,
    ORIGIN,
    RAW,
    VALID_PHONE,
    Hostile,
    add_subscribers,
    base_body,
    form_submission,
    hidden_fields,
    sendable_by_form,
)
from tests.web.conftest import CLOCK_START

pytestmark = pytest.mark.postgres

API = "/api/v1/callbacks"
JSON_FIELDS = ("subscriber", "phone", "name", "topic", "when", "page_url", "consent")


def entry_id(entry: Hostile) -> str:
    return re.sub(r"[^A-Za-z0-9+-]+", "_", f"{entry.subscriber[8:]}-{entry.description}")[:90]


FORM_CORPUS = [entry for entry in CORPUS if sendable_by_form(entry)]
# The widget's path differs from the API's by the Origin header, which ORIGIN entries set.
WIDGET_CORPUS = [entry for entry in CORPUS if entry.where != ORIGIN]


# --- one app and database for the module ----------------------------------------------------


@pytest.fixture(scope="module", params=DATABASES, ids=DATABASES)
def corpus_engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    url = POSTGRES_URL
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('hostile') / 'cbserver.sqlite3'}"
    with fresh_engine(url) as engine:
        db.upgrade(engine)
        yield engine


@pytest.fixture(scope="module")
def corpus_sessions(corpus_engine: Engine) -> sessionmaker[Session]:
    sessions = db.make_session_factory(corpus_engine)
    with sessions() as session:
        add_subscribers(session)
        session.commit()
    return sessions


@pytest.fixture(scope="module")
def corpus_app(
    corpus_engine: Engine,
    corpus_sessions: sessionmaker[Session],
    tmp_path_factory: pytest.TempPathFactory,
) -> Flask:
    settings = Settings(state_dir=tmp_path_factory.mktemp("state")).replace(**NO_LIMITS)
    return create_app(settings=settings, engine=corpus_engine, clock=FakeClock(CLOCK_START))


@pytest.fixture
def web(corpus_app: Flask, corpus_sessions: sessionmaker[Session]) -> Iterator[FlaskClient]:
    yield corpus_app.test_client()
    # An input wrongly accepted fails its own test, and must not fail the ones after it.
    if stored(corpus_sessions):
        with corpus_sessions() as session:
            session.execute(delete(CallbackRequest))
            session.commit()


# --- sending an entry -----------------------------------------------------------------------


def api_request(entry: Hostile) -> tuple[bytes, dict[str, str]]:
    """The entry as the body and headers of a POST to the API."""
    if entry.where == RAW:
        assert isinstance(entry.value, bytes)
        return entry.value, {"Content-Type": entry.content_type}
    headers = {"Content-Type": "application/json"}
    body: object = base_body(entry.subscriber)
    assert isinstance(body, dict)
    if entry.where == BODY:
        body = entry.value
    elif entry.where == IDEMPOTENCY_KEY:
        headers["Idempotency-Key"] = str(entry.value)
    elif entry.where == ORIGIN:
        headers["Origin"] = str(entry.value)
    elif entry.value is ABSENT:
        del body[entry.where]
    else:
        body[entry.where] = entry.value
    # ASCII JSON, and a JSON null body as "null" (the test client's json=None sends nothing).
    return json.dumps(body).encode(), headers


def post_api(client: FlaskClient, entry: Hostile, origin: str | None = None) -> TestResponse:
    body, headers = api_request(entry)
    if origin is not None:
        headers["Origin"] = origin
        body = with_form_token(client, entry, body)
    return client.post(API, data=body, headers=headers)


def with_form_token(client: FlaskClient, entry: Hostile, body: bytes) -> bytes:
    """The body with the form token a browser must send (see bots.py) written in first, where
    it is a JSON object, so that the refusal is the entry's own, not the bot check's; the
    entry's bytes stay as they are."""
    start = len(body) - len(body.lstrip())
    if not body[start:].startswith(b"{"):
        return body
    token = client.get(f"/widget/{entry.subscriber}/form-token.json").json
    member = b'"form_token": ' + json.dumps(token and token.get("form_token")).encode()
    rest = body[start + 1 :]
    return body[: start + 1] + member + (b"" if rest.lstrip().startswith(b"}") else b", ") + rest


def problem(response: TestResponse) -> dict[str, str]:
    assert response.is_json, response.get_data(as_text=True)[:500]
    error = response.json["error"]  # type: ignore[index]
    assert isinstance(error, dict)
    return error


def plain_sentence(message: str) -> bool:
    return bool(message) and message[-1] in ".?!" and "Traceback" not in message


def stored(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(CallbackRequest)) or 0


def refusals_logged(sessions: sessionmaker[Session], code: str) -> int:
    with sessions() as session:
        return (
            session.scalar(
                select(func.count())
                .select_from(AuditEvent)
                .where(AuditEvent.action == "number_refused", AuditEvent.detail.startswith(code))
            )
            or 0
        )


def number_refusal(entry: Hostile) -> bool:
    """A refusal by the number policy, which the admin finds in the audit log."""
    return entry.code.startswith("phone_") and entry.code != "phone_missing" and entry.status == 422


def assert_refused(
    response: TestResponse, entry: Hostile, sessions: sessionmaker[Session]
) -> dict[str, str]:
    error = problem(response)
    assert (response.status_code, error["code"]) == (entry.status, entry.code), error
    assert plain_sentence(error["message"]), error
    if entry.where in JSON_FIELDS and entry.status != 413:
        assert error.get("field") == entry.where, error
    assert stored(sessions) == 0, "a refused input stores no request"
    return error


# --- the tests ------------------------------------------------------------------------------


def test_the_corpus_has_over_200_inputs_of_every_kind() -> None:
    assert len(CORPUS) >= 200
    assert len({(e.subscriber, e.description) for e in CORPUS}) == len(CORPUS), "no duplicates"
    agreed = {
        "phone_missing",
        "phone_characters",
        "phone_unparseable",
        "phone_emergency",
        "phone_premium_rate",
        "phone_shared_cost",
        "phone_toll_free",
        "phone_type_not_allowed",
        "phone_country_not_allowed",
        "phone_denied",
        "phone_is_business",
    }
    codes = {entry.code for entry in CORPUS}
    assert agreed <= codes, agreed - codes
    assert {"wrong_type", "unknown_field", "bad_json", "bad_text", "too_long"} <= codes
    assert any(entry.status == 413 for entry in CORPUS), "bodies over 16 KiB"
    countries = {e.subscriber for e in CORPUS if e.code == "phone_emergency"}
    assert len(countries) >= 10, "emergency numbers of many countries"


@pytest.mark.parametrize("entry", CORPUS, ids=entry_id)
def test_the_api_refuses(
    web: FlaskClient, corpus_sessions: sessionmaker[Session], entry: Hostile
) -> None:
    logged = refusals_logged(corpus_sessions, entry.code) if number_refusal(entry) else 0
    response = post_api(web, entry)
    assert_refused(response, entry, corpus_sessions)
    if entry.where == ORIGIN:
        assert response.headers.get("Access-Control-Allow-Origin") != entry.value
    if number_refusal(entry):
        assert refusals_logged(corpus_sessions, entry.code) == logged + 1, "shown to the admin"


@pytest.mark.parametrize("entry", WIDGET_CORPUS, ids=entry_id)
def test_the_widget_shows_the_refusal(
    web: FlaskClient, corpus_sessions: sessionmaker[Session], entry: Hostile
) -> None:
    response = post_api(web, entry, origin=ALLOWED_ORIGIN)
    assert_refused(response, entry, corpus_sessions)
    # Without it the widget's script may not read the answer, and shows no reason.
    assert response.headers.get("Access-Control-Allow-Origin") == ALLOWED_ORIGIN


def form_data(client: FlaskClient, entry: Hostile) -> dict[str, str]:
    page = client.get(f"/c/{entry.subscriber}")
    assert page.status_code == 200
    return form_submission(page.get_data(as_text=True), entry)


def field_error(page: str, field: str) -> str | None:
    found = re.search(rf'<p class="error" id="{field}-error" role="alert">(.*?)</p>', page, re.S)
    return html.unescape(found.group(1)).strip() if found else None


@pytest.mark.parametrize("entry", FORM_CORPUS, ids=entry_id)
def test_the_form_refuses_and_says_why_next_to_the_field(
    web: FlaskClient, corpus_sessions: sessionmaker[Session], entry: Hostile
) -> None:
    api_message = problem(post_api(web, entry))["message"]
    logged = refusals_logged(corpus_sessions, entry.code) if number_refusal(entry) else 0
    sent = web.post(f"/c/{entry.subscriber}", data=form_data(web, entry))

    assert stored(corpus_sessions) == 0, "a refused input stores no request"
    page = sent.get_data(as_text=True)
    if entry.status == 413:
        assert sent.status_code == 413
        assert "16 KiB" in page
        return
    assert sent.status_code == 422
    shown_at = FORM_FIELD.get(entry.where, entry.where)
    message = field_error(page, shown_at)
    assert message is not None, f"no error shown at {shown_at}"
    assert plain_sentence(message), message
    if entry.where == "phone" and entry.status == 422:
        assert api_message in message, "the number policy's reason, as the API gives it"
    if number_refusal(entry):
        assert refusals_logged(corpus_sessions, entry.code) == logged + 1, "shown to the admin"


def test_line_breaks_a_browser_sends_in_the_topic_are_no_hostile_characters(
    web: FlaskClient, corpus_sessions: sessionmaker[Session]
) -> None:
    page = web.get(f"/c/{HOME}").get_data(as_text=True)
    data = {
        **hidden_fields(page),
        "phone": VALID_PHONE[HOME],
        # As browsers send a textarea's line breaks.
        "topic": "Leaking tap\r\nin the kitchen",
        "when": "asap",
        "consent": "y",
    }
    sent = web.post(f"/c/{HOME}", data=data)
    assert sent.status_code == 303, field_error(sent.get_data(as_text=True), "topic")
    with corpus_sessions() as session:
        topic = session.scalars(select(CallbackRequest.topic)).one()
    assert topic == "Leaking tap\nin the kitchen"
