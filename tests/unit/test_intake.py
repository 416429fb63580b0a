"""Taking call-back requests and the request state machine, on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from cbserver import intake
from cbserver.errors import BadRequest, Conflict, Invalid, NotFound
from cbserver.intake import Submission, submit
from cbserver.models import CallbackRequest, RequestEvent, RequestStatus, Subscriber
from cbserver.scheduling import DEFAULT_HANDLING
from cbserver.states import TRANSITIONS, IllegalTransition, StaleRequest, transition

pytestmark = pytest.mark.postgres

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
US_MOBILE = "+12015550123"  # phonenumbers' own example numbers: valid by its metadata
US_PREMIUM = "+19002345678"
UK_MOBILE = "+447400123456"
# The same number in fullwidth look-alike characters, which must never pass as digits.
FULLWIDTH_MOBILE = US_MOBILE.translate({c: c + 0xFEE0 for c in range(0x21, 0x7F)})


@pytest.fixture
def acme(session: Session) -> Subscriber:
    subscriber = Subscriber(
        slug="acme",
        display_name="Acme Plumbing",
        time_zone="America/Los_Angeles",
        country="US",
        caller_id="+12015550100",
        slot_capacity=2,
    )
    session.add(subscriber)
    session.commit()
    return subscriber


def ask(
    session: Session, phone: str = US_MOBILE, at: datetime = NOW, **fields: str | None
) -> intake.Submitted:
    return submit(
        session, Submission(subscriber="acme", phone=phone, consent=True, **fields), now=at
    )


def count_requests(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(CallbackRequest)) or 0


# --- what a visitor may send -----------------------------------------------------------------


@pytest.mark.usefixtures("acme")
def test_national_number_is_stored_in_e164_and_queued_now(session: Session) -> None:
    result = ask(session, "(201) 555-0123", name=" Ada ", topic="Leaking tap")
    request = result.request
    assert result.created
    assert request.visitor_phone == US_MOBILE
    assert request.visitor_name == "Ada"
    assert request.status == RequestStatus.QUEUED
    assert request.due_at == NOW
    assert len(request.visitor_token) >= 40
    [created] = request.events
    assert (created.from_status, created.to_status) == (None, "queued")


@pytest.mark.usefixtures("acme")
@pytest.mark.parametrize(
    ("phone", "code"),
    [
        ("", "phone_missing"),
        ("call me maybe", "phone_characters"),
        (FULLWIDTH_MOBILE, "phone_characters"),
        ("+1 201 555 0123; +1 900 234 5678", "phone_characters"),
        ("911", "phone_emergency"),
        ("+1 201 555 01", "phone_invalid"),
        (UK_MOBILE, "phone_country_not_allowed"),
        (US_PREMIUM, "phone_premium_rate"),
        ("+1 800 234 5678", "phone_toll_free"),
    ],
)
def test_numbers_that_cannot_be_called_are_refused_in_plain_words(
    session: Session, phone: str, code: str
) -> None:
    with pytest.raises(Invalid) as refused:
        ask(session, phone)
    assert refused.value.code == code
    assert refused.value.field == "phone"
    assert refused.value.status == 422
    assert refused.value.message.endswith(".")
    assert count_requests(session) == 0


def test_allowed_countries_widen_the_default(session: Session, acme: Subscriber) -> None:
    acme.allowed_countries = "US,GB"
    session.commit()
    assert ask(session, UK_MOBILE).request.visitor_phone == UK_MOBILE


@pytest.mark.usefixtures("acme")
@pytest.mark.parametrize(
    ("fields", "field", "code"),
    [
        ({"name": "Ada\x00"}, "name", "bad_text"),
        ({"name": "Ada\nLovelace"}, "name", "bad_text"),
        ({"name": "x" * 101}, "name", "too_long"),
        ({"topic": "y" * 501}, "topic", "too_long"),
        ({"page_url": "javascript:alert(1)"}, "page_url", "bad_url"),
        ({"page_url": "https://a.example/\ud800"}, "page_url", "bad_url"),
        ({"page_url": "https://a.example/\x00"}, "page_url", "bad_url"),
        ({"page_url": "https://a.example/a\nb"}, "page_url", "bad_url"),
        ({"page_url": "https://a.example/\x1b[31mred"}, "page_url", "bad_url"),
        ({"page_url": "https://a.example/\u202egnp.exe"}, "page_url", "bad_url"),
        ({"when": "tomorrow-ish"}, "when", "bad_time"),
        ({"when": "2026-11-26T09:00:00"}, "when", "time_without_zone"),
        ({"when": "2026-11-25T14:00:00+00:00"}, "when", "time_past"),
        ({"when": "2027-02-01T09:00:00+00:00"}, "when", "time_too_far"),
    ],
)
def test_bad_fields_are_refused_and_nothing_is_stored(
    session: Session, fields: dict[str, str], field: str, code: str
) -> None:
    with pytest.raises(Invalid) as refused:
        ask(session, **fields)
    assert (refused.value.field, refused.value.code) == (field, code)
    assert count_requests(session) == 0


@pytest.mark.usefixtures("acme")
def test_multiline_topic_is_kept(session: Session) -> None:
    assert ask(session, topic="Line one\nLine two").request.topic == "Line one\nLine two"


@pytest.mark.usefixtures("acme")
def test_a_future_slot_is_scheduled_for_that_time(session: Session) -> None:
    request = ask(session, when="2026-11-26T09:30:00-08:00").request
    assert request.status == RequestStatus.SCHEDULED
    assert request.due_at == datetime(2026, 11, 26, 17, 30, tzinfo=UTC)


def test_unknown_or_inactive_subscriber_is_404(session: Session, acme: Subscriber) -> None:
    with pytest.raises(NotFound) as unknown:
        submit(session, Submission(subscriber="nobody", phone=US_MOBILE), now=NOW)
    assert unknown.value.code == "unknown_subscriber"
    acme.active = False
    session.commit()
    with pytest.raises(NotFound):
        ask(session)


# --- repeats ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("acme")
def test_a_number_already_waiting_gets_its_request_back(session: Session) -> None:
    first = ask(session, "(201) 555-0123")
    again = ask(session, US_MOBILE, name="Ada again")
    assert not again.created
    assert again.request.id == first.request.id
    assert count_requests(session) == 1


@pytest.mark.usefixtures("acme")
def test_after_a_request_ends_the_same_number_may_ask_again(session: Session) -> None:
    first = ask(session).request
    intake.cancel(session, first, "visitor canceled")
    second = ask(session)
    assert second.created
    assert second.request.id != first.id


@pytest.mark.usefixtures("acme")
def test_idempotency_key_returns_the_same_request_and_refuses_reuse(session: Session) -> None:
    first = ask(session, idempotency_key="form-123")
    intake.cancel(session, first.request, "visitor canceled")
    repeat = ask(session, idempotency_key="form-123")
    assert not repeat.created
    assert repeat.request.id == first.request.id
    with pytest.raises(Conflict) as reused:
        ask(session, "+1 201 555 0124", idempotency_key="form-123")
    assert reused.value.code == "idempotency_key_reused"
    with pytest.raises(BadRequest):
        ask(session, idempotency_key="é" * 3)


@pytest.mark.parametrize("with_key", [False, True], ids=["same-phone", "same-key"])
def test_concurrent_identical_submissions_store_one_request(
    sessions: sessionmaker[Session], acme: Subscriber, with_key: bool
) -> None:
    workers = 6
    barrier = threading.Barrier(workers)
    ids: list[str] = []
    errors: list[BaseException] = []

    def visitor() -> None:
        with sessions() as own:
            barrier.wait()
            try:
                key = "double-click" if with_key else None
                ids.append(ask(own, idempotency_key=key).request.id)
            except BaseException as exc:  # collected and re-raised by the test
                errors.append(exc)

    threads = [threading.Thread(target=visitor) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    assert len(ids) == workers
    assert len(set(ids)) == 1
    with sessions() as check:
        assert count_requests(check) == 1


# --- the state machine -----------------------------------------------------------------------


ALL = list(RequestStatus)


@pytest.mark.parametrize(
    ("current", "target"),
    [(a, b) for a, b in itertools.product(ALL, ALL) if b not in TRANSITIONS[a]],
    ids=lambda s: str(s),
)
def test_every_illegal_transition_is_refused_and_changes_nothing(
    session: Session, acme: Subscriber, current: RequestStatus, target: RequestStatus
) -> None:
    request = ask(session).request
    request.status = current.value
    session.commit()
    with pytest.raises(IllegalTransition):
        transition(session, request, target, "test")
    session.rollback()
    session.refresh(request)
    assert request.status == current.value
    assert [e.to_status for e in request.events] == ["queued"]


def test_legal_transitions_move_the_request_and_log_each_step(
    session: Session, acme: Subscriber
) -> None:
    request = ask(session).request
    path = [
        RequestStatus.DIALING_AGENT,
        RequestStatus.DIALING_VISITOR,
        RequestStatus.CONNECTED,
        RequestStatus.COMPLETED,
    ]
    for step in path:
        transition(session, request, step, f"to {step}", now=NOW + timedelta(seconds=1))
    session.commit()
    assert request.status == "completed"
    log = session.scalars(
        select(RequestEvent).where(RequestEvent.request_id == request.id).order_by(RequestEvent.id)
    ).all()
    assert [(e.from_status, e.to_status) for e in log] == [
        (None, "queued"),
        ("queued", "dialing_agent"),
        ("dialing_agent", "dialing_visitor"),
        ("dialing_visitor", "connected"),
        ("connected", "completed"),
    ]


def test_a_stale_copy_cannot_overwrite_a_newer_status(
    sessions: sessionmaker[Session], acme: Subscriber
) -> None:
    with sessions() as setup:
        request_id = ask(setup).request.id
    with sessions() as worker_a, sessions() as worker_b:
        copy_a = worker_a.get(CallbackRequest, request_id)
        copy_b = worker_b.get(CallbackRequest, request_id)
        assert copy_a is not None
        assert copy_b is not None
        transition(worker_a, copy_a, RequestStatus.DIALING_AGENT, "worker a claimed it")
        worker_a.commit()
        with pytest.raises(StaleRequest):
            transition(worker_b, copy_b, RequestStatus.CANCELED, "visitor canceled")
        worker_b.rollback()
    with sessions() as check:
        stored = check.get(CallbackRequest, request_id)
        assert stored is not None
        assert stored.status == "dialing_agent"


# --- what the visitor sees -------------------------------------------------------------------


@pytest.mark.usefixtures("acme")
def test_only_the_token_holder_sees_the_request(session: Session) -> None:
    request = ask(session).request
    assert intake.for_visitor(session, request.id, request.visitor_token) is request
    for token in (None, "", "wrong", request.visitor_token[:-1]):
        with pytest.raises(NotFound):
            intake.for_visitor(session, request.id, token)
    with pytest.raises(NotFound):
        intake.for_visitor(session, "no-such-id", request.visitor_token)


@pytest.mark.usefixtures("acme")
def test_queue_position_counts_who_is_due_first(session: Session) -> None:
    first = ask(session, "+1 201 555 0123").request
    second = ask(session, "+1 201 555 0124", at=NOW + timedelta(seconds=1)).request
    later = ask(session, "+1 201 555 0125", when="2026-11-26T09:30:00+00:00").request
    assert intake.queue_position(session, first) == 1
    assert intake.queue_position(session, second) == 2
    assert intake.queue_position(session, later) is None
    intake.cancel(session, first, "visitor canceled")
    assert intake.queue_position(session, second) == 1
    with pytest.raises(Conflict):
        intake.cancel(session, first, "twice")


def test_the_estimated_call_time_follows_position_and_agents(
    session: Session, acme: Subscriber
) -> None:
    from cbserver.agents import add_agent
    from cbserver.models import AgentAssignment

    requests = [
        ask(session, f"+1 201 555 012{n}", at=NOW + timedelta(seconds=n)).request for n in range(3)
    ]
    first, _second, third = requests
    assert intake.estimated_call_at(session, first, now=NOW) == NOW
    # One agent (none assigned counts as one): the third waits for two calls before it.
    assert intake.estimated_call_at(session, third, now=NOW) == third.due_at + 2 * (
        DEFAULT_HANDLING
    )
    for name in ("alice", "bob"):
        agent = add_agent(session, name, contact=f"sip:{name}@127.0.0.1:5070").agent
        session.add(AgentAssignment(subscriber=acme, agent=agent))
    session.commit()
    session.refresh(acme)
    assert intake.estimated_call_at(session, third, now=NOW) == third.due_at + (DEFAULT_HANDLING)
    booked = ask(session, "+1 201 555 0199", when="2026-11-26T09:30:00+00:00").request
    assert intake.estimated_call_at(session, booked, now=NOW) == booked.due_at
    intake.cancel(session, first, "visitor canceled")
    assert intake.estimated_call_at(session, first, now=NOW) is None
