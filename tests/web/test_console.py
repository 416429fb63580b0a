"""The agent console /agent/: an agent logs in with its own password, pauses and comes back,
sees its businesses' queue and, during and just after a call, the request with a wrap-up note."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.test import TestResponse

from cbserver import agents, intake, subscribers
from cbserver.clock import FakeClock
from cbserver.config import Settings
from cbserver.intake import Submission
from cbserver.models import (
    Agent,
    AuditEvent,
    CallAttempt,
    CallbackRequest,
    RequestStatus,
    Subscriber,
)
from cbserver.web import create_app
from tests.web.conftest import CLOCK_START, UNLIMITED, US_MOBILE, csrf_token

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("acme")]

WRONG = "Wrong agent name or password."


def console_password(sessions: sessionmaker[Session]) -> str:
    """alice serves acme and has a console password: this one."""
    with sessions() as session:
        agents.add_agent(session, "alice", contact="sip:alice@127.0.0.1:5070")
        subscribers.assign_agent(session, "acme", "alice")
        return agents.set_console_password(session, "alice")


@pytest.fixture
def password(sessions: sessionmaker[Session], acme: Subscriber) -> str:
    return console_password(sessions)


@pytest.fixture
def logged_in(client: FlaskClient, password: str) -> FlaskClient:
    response = log_in(client, "alice", password)
    assert response.status_code == 303, response.get_data(as_text=True)
    return client


def log_in(client: FlaskClient, name: str, password: str) -> TestResponse:
    page = client.get("/agent/login").get_data(as_text=True)
    return client.post(
        "/agent/login", data={"csrf_token": csrf_token(page), "name": name, "password": password}
    )


def console_state(client: FlaskClient) -> dict[str, Any]:
    response = client.get("/agent/state.json")
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.json
    assert isinstance(body, dict)
    return body


def post_from_console(client: FlaskClient, path: str, **fields: str) -> TestResponse:
    """Post one of the console page's forms, with the page's CSRF token."""
    page = client.get("/agent/").get_data(as_text=True)
    return client.post(path, data={"csrf_token": csrf_token(page), **fields})


def ask(sessions: sessionmaker[Session], slug: str, phone: str, **fields: str) -> str:
    """A visitor's request (queued: acme is always open); its id."""
    with sessions() as session:
        submission = Submission(subscriber=slug, phone=phone, consent=True, **fields)
        return intake.submit(session, submission, now=CLOCK_START).request.id


def put_alice_on_call(sessions: sessionmaker[Session], request_id: str | None) -> None:
    with sessions() as session:
        alice = session.scalars(select(Agent).where(Agent.name == "alice")).one()
        alice.on_call = request_id
        session.commit()


def audit_details(sessions: sessionmaker[Session], action: str) -> list[str]:
    with sessions() as session:
        rows = session.scalars(select(AuditEvent).where(AuditEvent.action == action))
        return [f"{row.actor}: {row.detail}" for row in rows]


# --- logging in ------------------------------------------------------------------------------


@pytest.mark.usefixtures("password")
def test_a_wrong_password_or_unknown_agent_gets_the_form_again_with_one_message(
    client: FlaskClient,
) -> None:
    wrong_password = log_in(client, "alice", "not-the-password")
    unknown_agent = log_in(client, "zoe", "not-the-password")

    for refused in (wrong_password, unknown_agent):
        assert refused.status_code == 401
        page = refused.get_data(as_text=True)
        assert WRONG in page
        assert 'name="password"' in page, "the form again"
    assert unknown_agent.get_data(as_text=True).count("error") == wrong_password.get_data(
        as_text=True
    ).count("error"), "an unknown name reads exactly like a wrong password"
    assert client.get("/agent/").status_code == 303, "still not logged in"


def test_logging_in_shows_the_console_with_the_agents_name_and_state(
    client: FlaskClient, password: str, sessions: sessionmaker[Session]
) -> None:
    response = log_in(client, "Alice ", password)

    assert response.status_code == 303
    assert response.headers["Location"].endswith("/agent/")
    page = client.get("/agent/")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "Agent console: alice" in html
    assert "Available" in html
    assert page.headers["Cache-Control"] == "no-store"
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy
    assert "connect-src 'self'" in policy
    assert "<script>" not in html, "no inline script"
    assert audit_details(sessions, "agent_logged_in") == ["agent alice: agent alice logged in"]


def test_an_inactive_agent_or_one_without_a_console_password_cannot_log_in(
    client: FlaskClient, password: str, sessions: sessionmaker[Session]
) -> None:
    with sessions() as session:
        agents.add_agent(session, "bob", contact="sip:bob@127.0.0.1:5071")
        alice = session.scalars(select(Agent).where(Agent.name == "alice")).one()
        alice.active = False
        session.commit()

    assert log_in(client, "alice", password).status_code == 401
    assert log_in(client, "bob", "").status_code == 401


def test_only_a_salted_hash_of_the_console_password_is_stored(
    password: str, sessions: sessionmaker[Session]
) -> None:
    with sessions() as session:
        alice = session.scalars(select(Agent).where(Agent.name == "alice")).one()
        stored = alice.console_password_hash or ""
    assert password not in stored
    assert stored.startswith("scrypt:")


def test_a_new_password_logs_the_agent_out_of_the_browsers_it_was_in(
    logged_in: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    with sessions() as session:
        agents.set_console_password(session, "alice")

    assert logged_in.get("/agent/state.json").status_code == 401
    assert logged_in.get("/agent/").status_code == 303


def test_logging_out_ends_the_session(logged_in: FlaskClient) -> None:
    response = post_from_console(logged_in, "/agent/logout")

    assert response.status_code == 303
    assert response.headers["Location"].endswith("/agent/login")
    assert logged_in.get("/agent/state.json").status_code == 401


def test_without_logging_in_the_console_leads_to_the_login_and_its_data_is_refused(
    client: FlaskClient,
) -> None:
    page = client.get("/agent/")
    data = client.get("/agent/state.json")
    post = client.post("/agent/state", data={"state": "paused"})

    assert page.status_code == 303
    assert page.headers["Location"].endswith("/agent/login")
    assert post.status_code == 303
    assert data.status_code == 401
    assert data.json is not None
    assert data.json["error"]["code"] == "not_logged_in"
    assert data.json["error"]["message"] == "You are not logged in to the agent console."


@pytest.mark.usefixtures("password")
def test_forms_posted_without_their_csrf_token_are_refused(
    client: FlaskClient, logged_in: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    paused = logged_in.post("/agent/state", data={"state": "paused", "reason": "lunch"})
    note = logged_in.post("/agent/note", data={"request_id": "x", "note": "hello"})
    logout = logged_in.post("/agent/logout")

    for refused in (paused, note, logout):
        assert refused.status_code == 400
        assert "This page had expired. Please try again." in refused.get_data(as_text=True)
    assert console_state(logged_in)["state"] == "available", "nothing changed"
    login = logged_in.post("/agent/login", data={"name": "alice", "password": "x"})
    assert login.status_code == 400


def test_guessing_passwords_meets_the_limit_of_public_pages(
    engine: Engine, tmp_path: Path, clock: FakeClock, password: str
) -> None:
    settings = Settings(state_dir=tmp_path).replace(
        **{**UNLIMITED, "rate_limit_public": "3/minute"}
    )
    client = create_app(settings=settings, engine=engine, clock=clock).test_client()

    answers = [log_in(client, "alice", f"guess-{n}") for n in range(2)]

    assert [answer.status_code for answer in answers] == [401, 429]
    assert "There were too many requests from your connection." in answers[1].text


# --- the agent's state -----------------------------------------------------------------------


def test_pausing_with_a_reason_and_becoming_available_again(
    logged_in: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    paused = post_from_console(logged_in, "/agent/state", state="paused", reason="lunch")

    assert paused.status_code == 303
    state = console_state(logged_in)
    assert state["agent"] == "alice"
    assert state["state"] == "paused"
    assert state["pause_reason"] == "lunch"
    assert state["wrap_up_until"] is None
    page = logged_in.get("/agent/").get_data(as_text=True)
    assert "Paused" in page
    assert "lunch" in page

    back = post_from_console(logged_in, "/agent/state", state="available")

    assert back.status_code == 303
    state = console_state(logged_in)
    assert state["state"] == "available"
    assert state["pause_reason"] is None
    assert audit_details(sessions, "agent_paused") == ["agent alice: paused agent alice: lunch"]
    assert audit_details(sessions, "agent_available") == ["agent alice: agent alice is available"]


def test_a_too_long_pause_reason_or_an_unknown_state_is_refused_on_the_page(
    logged_in: FlaskClient,
) -> None:
    too_long = post_from_console(logged_in, "/agent/state", state="paused", reason="x" * 101)
    unknown = post_from_console(logged_in, "/agent/state", state="asleep")

    assert too_long.status_code == 422
    assert "A pause reason is at most 100 characters." in too_long.get_data(as_text=True)
    assert unknown.status_code == 422
    assert "Choose Available or Pause." in unknown.get_data(as_text=True)
    assert console_state(logged_in)["state"] == "available"


def test_a_wrap_up_shows_until_when(
    logged_in: FlaskClient, sessions: sessionmaker[Session], clock: FakeClock
) -> None:
    until = CLOCK_START + timedelta(seconds=30)
    with sessions() as session:
        alice = session.scalars(select(Agent).where(Agent.name == "alice")).one()
        alice.wrap_up_until = until
        session.commit()

    state = console_state(logged_in)

    assert state["state"] == "wrap_up"
    assert state["wrap_up_until"] == until.isoformat()
    page = logged_in.get("/agent/").get_data(as_text=True)
    assert "Wrap-up" in page
    assert f'datetime="{until.isoformat()}">17:00:30 UTC</time>' in page
    clock.advance(timedelta(seconds=31))
    assert console_state(logged_in)["state"] == "available"
    assert console_state(logged_in)["wrap_up_until"] is None


# --- the queue -------------------------------------------------------------------------------


def test_the_queue_counts_the_waiting_requests_of_the_agents_businesses_only(
    logged_in: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    with sessions() as session:
        session.add(
            Subscriber(
                slug="globex",
                display_name="Globex",
                time_zone="America/New_York",
                country="US",
                caller_id="+12015550101",
            )
        )
        session.commit()
    ask(sessions, "acme", US_MOBILE)
    ask(sessions, "acme", "+12015550124")
    ask(sessions, "globex", "+12015550125")

    queue = console_state(logged_in)["queue"]

    assert queue == [
        {
            "subscriber": "acme",
            "display_name": "Acme Plumbing",
            "waiting": 2,
            "next_due": CLOCK_START.isoformat(),
            "next_due_text": "Wed 18 Nov, 09:00 (America/Los_Angeles)",
            "eta_seconds": 360,
            "eta_text": "about 6 min",
        }
    ]
    page = logged_in.get("/agent/").get_data(as_text=True)
    assert "Acme Plumbing" in page
    assert "Globex" not in page


def test_a_business_with_nobody_waiting_shows_an_empty_queue_called_now(
    logged_in: FlaskClient,
) -> None:
    assert console_state(logged_in)["queue"] == [
        {
            "subscriber": "acme",
            "display_name": "Acme Plumbing",
            "waiting": 0,
            "next_due": None,
            "next_due_text": None,
            "eta_seconds": 0,
            "eta_text": "now",
        }
    ]
    page = logged_in.get("/agent/").get_data(as_text=True)
    assert '<th scope="col">All due called in</th>' in page
    assert "<td>now</td>" in page


def add_agent_serving_acme(
    sessions: sessionmaker[Session], name: str, *, paused: bool = False, presence: str | None = None
) -> None:
    with sessions() as session:
        agents.add_agent(session, name, contact=f"sip:{name}@127.0.0.1:5071")
        subscribers.assign_agent(session, "acme", name)
        agent = session.scalars(select(Agent).where(Agent.name == name)).one()
        agent.paused = paused
        agent.presence = presence
        session.commit()


def add_attempt(
    sessions: sessionmaker[Session], request_id: str, ended_ago: timedelta, seconds: int
) -> None:
    """The request's first attempt: it lasted ``seconds`` and ended ``ended_ago`` before now."""
    ended_at = CLOCK_START - ended_ago
    with sessions() as session:
        session.add(
            CallAttempt(
                request_id=request_id,
                number=1,
                started_at=ended_at - timedelta(seconds=seconds),
                ended_at=ended_at,
                outcome="answered",
            )
        )
        session.commit()


def test_the_eta_shares_the_requests_due_now_among_the_agents_on_duty(
    logged_in: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    add_agent_serving_acme(sessions, "bob", presence="in_use")
    add_agent_serving_acme(sessions, "carol", paused=True)
    add_agent_serving_acme(sessions, "dave", presence="offline")
    due = [ask(sessions, "acme", phone) for phone in (US_MOBILE, "+12015550124", "+12015550125")]
    later = ask(sessions, "acme", "+12015550126")
    with sessions() as session:
        booked = session.get(CallbackRequest, later)
        assert booked is not None
        booked.status = RequestStatus.SCHEDULED
        booked.due_at = CLOCK_START + timedelta(hours=1)
        session.commit()
    add_attempt(sessions, due[0], timedelta(days=6), seconds=60)
    add_attempt(sessions, due[1], timedelta(hours=1), seconds=180)

    acme = console_state(logged_in)["queue"][0]

    # Two rounds of alice and bob (carol paused, dave offline), 120 s each: the average of the
    # business's recent answered calls, as the visitors' estimates take it.
    assert acme["waiting"] == 4
    assert acme["eta_seconds"] == 240
    assert acme["eta_text"] == "about 4 min"
    assert "<td>about 4 min</td>" in logged_in.get("/agent/").get_data(as_text=True)
    german = logged_in.get("/agent/", headers={"Accept-Language": "de"}).get_data(as_text=True)
    assert '<th scope="col">Alle fälligen angerufen in</th>' in german
    assert "<td>etwa 4 Min.</td>" in german


def test_with_every_agent_paused_requests_due_have_no_eta(
    logged_in: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    add_agent_serving_acme(sessions, "bob", paused=True)
    ask(sessions, "acme", US_MOBILE)
    assert post_from_console(logged_in, "/agent/state", state="paused").status_code == 303

    acme = console_state(logged_in)["queue"][0]

    assert acme["eta_seconds"] is None
    assert acme["eta_text"] == "no agent on duty"
    assert "<td>no agent on duty</td>" in logged_in.get("/agent/").get_data(as_text=True)


def test_without_an_answered_call_yet_the_eta_takes_three_minutes_a_call(
    logged_in: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    ask(sessions, "acme", US_MOBILE)

    acme = console_state(logged_in)["queue"][0]

    assert acme["eta_seconds"] == 180
    assert acme["eta_text"] == "about 3 min"


# --- screen-pop and wrap-up note -------------------------------------------------------------


def test_the_call_the_agent_is_on_pops_up_and_takes_a_note(
    logged_in: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    assert console_state(logged_in)["call"] is None
    assert "No call at the moment." in logged_in.get("/agent/").get_data(as_text=True)
    request_id = ask(
        sessions,
        "acme",
        US_MOBILE,
        name="Ada Lovelace",
        topic="A leaking tap",
        page_url="https://acme.example/taps",
    )
    put_alice_on_call(sessions, request_id)

    call = console_state(logged_in)["call"]

    assert call["request_id"] == request_id
    assert call["visitor_name"] == "Ada Lovelace"
    assert call["visitor_phone"] == US_MOBILE
    assert call["topic"] == "A leaking tap"
    assert call["page_url"] == "https://acme.example/taps"
    assert call["subscriber"] == "acme"
    assert call["status"] == "queued"
    assert call["note"] is None
    assert call["attempts"] == []
    page = logged_in.get("/agent/").get_data(as_text=True)
    assert "Ada Lovelace" in page
    assert "A leaking tap" in page

    saved = post_from_console(
        logged_in, "/agent/note", request_id=request_id, note="Wants a plumber on Friday.\r\nOk"
    )

    assert saved.status_code == 303
    assert console_state(logged_in)["call"]["note"] == "Wants a plumber on Friday.\nOk"
    assert "Wants a plumber on Friday." in logged_in.get("/agent/").get_data(as_text=True)
    assert audit_details(sessions, "agent_note_saved") == [
        f"agent alice: agent alice saved the note on request {request_id}"
    ]


def test_after_a_call_the_agent_talked_in_the_request_stays_for_ten_minutes(
    logged_in: FlaskClient, sessions: sessionmaker[Session], clock: FakeClock
) -> None:
    request_id = ask(sessions, "acme", US_MOBILE, name="Ada")
    with sessions() as session:
        alice = session.scalars(select(Agent).where(Agent.name == "alice")).one()
        session.add(
            CallAttempt(
                request_id=request_id,
                number=1,
                agent_id=alice.id,
                started_at=CLOCK_START - timedelta(minutes=5),
                ended_at=CLOCK_START - timedelta(minutes=1),
                outcome="answered",
            )
        )
        session.commit()

    call = console_state(logged_in)["call"]

    assert call["request_id"] == request_id
    assert call["attempts"] == [
        {
            "number": 1,
            "started_at": (CLOCK_START - timedelta(minutes=5)).isoformat(),
            "started_at_text": "Wed 18 Nov, 08:55 (America/Los_Angeles)",
            "kind": "call_back",
            "outcome": "answered",
            "outcome_text": "talked",
            "agent": "alice",
        }
    ]
    assert post_from_console(logged_in, "/agent/note", request_id=request_id, note="ok").status_code
    assert console_state(logged_in)["call"]["note"] == "ok"

    clock.advance(timedelta(minutes=9, seconds=1))

    assert console_state(logged_in)["call"] is None
    late = post_from_console(logged_in, "/agent/note", request_id=request_id, note="later")
    assert late.status_code == 403


def test_a_note_on_a_request_that_is_not_the_agents_is_refused(
    logged_in: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    mine = ask(sessions, "acme", US_MOBILE)
    other = ask(sessions, "acme", "+12015550124")
    put_alice_on_call(sessions, mine)

    refused = post_from_console(logged_in, "/agent/note", request_id=other, note="sneaky")

    assert refused.status_code == 403
    assert (
        "You can write a note only on a call you are on or have had in the last 10 minutes."
        in refused.get_data(as_text=True)
    )
    with sessions() as session:
        stored = session.get(CallbackRequest, other)
        assert stored is not None
        assert stored.agent_note is None


def test_a_note_longer_than_2000_characters_is_refused_and_kept_on_the_page(
    logged_in: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    request_id = ask(sessions, "acme", US_MOBILE)
    put_alice_on_call(sessions, request_id)

    refused = post_from_console(logged_in, "/agent/note", request_id=request_id, note="x" * 2001)

    assert refused.status_code == 422
    page = refused.get_data(as_text=True)
    assert "The note is too long: at most 2000 characters." in page
    assert "x" * 2001 in page, "what the agent wrote is not lost"
    assert console_state(logged_in)["call"]["note"] is None
    fits = post_from_console(logged_in, "/agent/note", request_id=request_id, note="y" * 2000)
    assert fits.status_code == 303
