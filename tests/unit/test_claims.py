"""Claiming due requests, on SQLite and PostgreSQL: each is taken by exactly one worker."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cbserver import number_policy, routing
from cbserver.agents import add_agent
from cbserver.claims import LEASE, claim_due, claim_next, promote_due
from cbserver.intake import Submission, submit
from cbserver.models import (
    Agent,
    AgentAssignment,
    AuditEvent,
    CallbackRequest,
    CallOrder,
    RequestStatus,
    Subscriber,
)
from cbserver.numbers import UnsafeNumber, trunk_endpoint
from cbserver.states import transition

pytestmark = pytest.mark.postgres

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)


@pytest.fixture
def acme(session: Session) -> Subscriber:
    subscriber = Subscriber(
        slug="acme", display_name="Acme", country="US", caller_id="+12015550100"
    )
    session.add(subscriber)
    session.commit()
    return subscriber


@pytest.fixture
def staff(session: Session, acme: Subscriber) -> list[Agent]:
    """Six agents serving acme: as many calls at once as the racing tests make."""
    agents = [
        add_agent(session, f"agent{n}", contact=f"sip:agent{n}@127.0.0.1:{5900 + n}").agent
        for n in range(6)
    ]
    acme.assignments += [AgentAssignment(agent=agent) for agent in agents]
    session.commit()
    return agents


def ask(session: Session, phone: str, at: datetime, when: str = "asap") -> str:
    return submit(session, Submission("acme", phone, when=when, consent=True), now=at).request.id


@pytest.mark.usefixtures("staff")
def test_the_oldest_due_request_is_claimed_with_a_lease(session: Session) -> None:
    first = ask(session, "+12015550123", NOW)
    ask(session, "+12015550124", NOW + timedelta(seconds=1))
    ask(session, "+12015550125", NOW, when=(NOW + timedelta(hours=1)).isoformat())

    claim = claim_next(session, "worker-a", NOW + timedelta(seconds=5))
    assert claim is not None
    assert claim.request_id == first
    claimed = session.get_one(CallbackRequest, first)
    assert claimed.status == RequestStatus.DIALING_AGENT
    assert claimed.claimed_by == "worker-a"
    assert claimed.lease_until == NOW + timedelta(seconds=5) + LEASE
    assert claimed.events[-1].reason == "taken by worker worker-a"

    second = claim_next(session, "worker-a", NOW + timedelta(seconds=5))
    assert second is not None
    assert claim_next(session, "worker-a", NOW + timedelta(seconds=5)) is None, (
        "the booked slot is not due yet"
    )


@pytest.mark.usefixtures("staff")
def test_visitor_first_business_starts_by_dialing_the_visitor(
    session: Session, acme: Subscriber
) -> None:
    acme.call_order = CallOrder.VISITOR_FIRST.value
    session.commit()
    ask(session, "+12015550123", NOW)
    claim = claim_next(session, "worker-a", NOW)
    assert claim is not None
    assert claim.visitor_first
    assert session.get_one(CallbackRequest, claim.request_id).status == "dialing_visitor"
    [attempt] = session.get_one(CallbackRequest, claim.request_id).attempts
    assert attempt.visitor_channel_id == claim.first_channel is not None
    assert attempt.agent_id is None


@pytest.mark.usefixtures("staff")
def test_racing_workers_never_take_the_same_request(sessions: sessionmaker[Session]) -> None:
    with sessions() as setup:
        for n in range(6):
            ask(setup, f"+1201555{n:04d}", NOW + timedelta(milliseconds=n))
    workers = 4
    barrier = threading.Barrier(workers)
    taken: dict[str, list[str]] = {}
    errors: list[BaseException] = []

    def worker(name: str) -> None:
        mine: list[str] = []
        with sessions() as own:
            barrier.wait()
            try:
                while (request := claim_next(own, name, NOW + timedelta(seconds=1))) is not None:
                    mine.append(request.request_id)
            except BaseException as exc:  # collected and re-raised by the test
                errors.append(exc)
        taken[name] = mine

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    every = [rid for mine in taken.values() for rid in mine]
    assert len(every) == 6
    assert len(set(every)) == 6, "no request was claimed twice"


def test_the_claim_opens_the_attempt_and_names_the_first_agents_channel(
    session: Session, acme: Subscriber
) -> None:
    second = add_agent(session, "second", contact="sip:second@127.0.0.1:5999").agent
    first = add_agent(session, "first", contact="sip:first@127.0.0.1:5998").agent
    away = add_agent(session, "away", contact="sip:away@127.0.0.1:5997").agent
    away.active = False
    acme.assignments += [
        AgentAssignment(agent=second, priority=20),
        AgentAssignment(agent=first, priority=10),
        AgentAssignment(agent=away, priority=1),
    ]
    session.commit()
    ask(session, "+12015550123", NOW)

    claim = claim_next(session, "worker-a", NOW)
    assert claim is not None
    assert claim.agents == ((first.id, "first"), (second.id, "second")), "priority order, active"
    assert (claim.visitor_phone, claim.business_caller_id) == ("+12015550123", "+12015550100")
    session.expire_all()
    request = session.get_one(CallbackRequest, claim.request_id)
    assert request.attempt_count == 1
    [attempt] = request.attempts
    assert attempt.id == claim.attempt_id
    assert attempt.agent_id == first.id
    assert attempt.agent_channel_id == claim.first_channel
    assert claim.first_channel is not None
    assert "first" in claim.first_channel


@pytest.mark.parametrize("number", ["+14155550123", "+442079460018"])
def test_an_e164_number_becomes_a_trunk_dial_string(number: str) -> None:
    assert trunk_endpoint(number) == f"PJSIP/{number}@trunk"


@pytest.mark.parametrize(
    "number",
    ["14155550123", "+1415&PJSIP/900", "+1415,t", "+0123", "+1 415 555", "+14155550123\n", ""],
)
def test_anything_else_never_becomes_a_dial_string(number: str) -> None:
    with pytest.raises(UnsafeNumber):
        trunk_endpoint(number)


@pytest.mark.usefixtures("staff")
def test_retries_and_booked_slots_come_back_in_the_queue_when_due(session: Session) -> None:
    retry = ask(session, "+12015550123", NOW)
    # In the 15:15-15:30 slot: due at its start.
    booked = ask(session, "+12015550124", NOW, when=(NOW + timedelta(minutes=20)).isoformat())
    later = ask(session, "+12015550125", NOW, when=(NOW + timedelta(hours=1)).isoformat())
    request = session.get_one(CallbackRequest, retry)
    transition(session, request, RequestStatus.DIALING_AGENT, "test")
    transition(
        session, request, RequestStatus.RETRY_WAIT, "busy", due_at=NOW + timedelta(minutes=2)
    )
    session.commit()

    assert promote_due(session, NOW + timedelta(minutes=1)) == 0
    assert promote_due(session, NOW + timedelta(minutes=14)) == 1
    assert promote_due(session, NOW + timedelta(minutes=15)) == 1
    statuses = {rid: session.get_one(CallbackRequest, rid).status for rid in (retry, booked, later)}
    assert statuses == {retry: "queued", booked: "queued", later: "scheduled"}
    session.expire_all()
    assert session.get_one(CallbackRequest, retry).events[-1].reason == "time for another try"
    assert session.get_one(CallbackRequest, booked).events[-1].reason == "the booked time has come"


def test_a_subscriber_never_has_more_calls_under_way_than_active_agents(
    session: Session, acme: Subscriber
) -> None:
    alice = add_agent(session, "alice", contact="sip:alice@127.0.0.1:5999").agent
    acme.assignments.append(AgentAssignment(agent=alice))
    session.commit()
    first = ask(session, "+12015550123", NOW)
    second = ask(session, "+12015550124", NOW + timedelta(seconds=1))

    claim = claim_next(session, "worker-a", NOW + timedelta(seconds=2))
    assert claim is not None
    assert claim.request_id == first
    assert claim_next(session, "worker-a", NOW + timedelta(seconds=2)) is None, (
        "alice is on the first call: the second waits"
    )
    request = session.get_one(CallbackRequest, first)
    transition(session, request, RequestStatus.RETRY_WAIT, "busy", due_at=NOW + timedelta(hours=1))
    routing.release(session, first, NOW, talked=False, wrap_up_seconds=0)  # as the call ends
    session.commit()
    claim = claim_next(session, "worker-a", NOW + timedelta(seconds=3))
    assert claim is not None
    assert claim.request_id == second


def test_a_retry_keeps_its_place_among_requests_due_at_the_same_time(
    session: Session, staff: list[Agent]
) -> None:
    older = ask(session, "+12015550123", NOW)
    request = session.get_one(CallbackRequest, older)
    transition(session, request, RequestStatus.DIALING_AGENT, "test")
    due = NOW + timedelta(minutes=15)  # a slot's start
    transition(session, request, RequestStatus.RETRY_WAIT, "busy", due_at=due)
    session.commit()
    # Asked later, but booked for the same moment as the retry.
    newer = ask(session, "+12015550124", NOW + timedelta(minutes=1), when=due.isoformat())
    promote_due(session, due)
    claims = [claim_next(session, "worker-a", due) for _ in range(2)]
    assert [c.request_id for c in claims if c] == [older, newer]


def test_a_batch_takes_the_due_requests_in_order_each_with_its_attempt(
    session: Session, staff: list[Agent]
) -> None:
    asked = [ask(session, f"+1201555012{n}", NOW + timedelta(seconds=n)) for n in range(4)]

    claims = claim_due(session, "worker-a", NOW + timedelta(seconds=5), 3)

    assert [c.request_id for c in claims] == asked[:3], "the three oldest, oldest first"
    assert len({c.attempt_id for c in claims}) == 3, "each with an attempt of its own"
    for claim in claims:
        request = session.get_one(CallbackRequest, claim.request_id)
        assert request.status == RequestStatus.DIALING_AGENT
        assert request.claimed_by == "worker-a"
        assert [a.id for a in request.attempts] == [claim.attempt_id]
    left = claim_due(session, "worker-a", NOW + timedelta(seconds=5), 3)
    assert [c.request_id for c in left] == asked[3:]


def test_a_batch_takes_no_more_of_a_business_than_it_has_agents_free(
    session: Session, acme: Subscriber
) -> None:
    alice = add_agent(session, "alice", contact="sip:alice@127.0.0.1:5999").agent
    acme.assignments.append(AgentAssignment(agent=alice))
    bolt = Subscriber(slug="bolt", display_name="Bolt", country="US", caller_id="+12015550199")
    bob = add_agent(session, "bob", contact="sip:bob@127.0.0.1:5998").agent
    bolt.assignments.append(AgentAssignment(agent=bob))
    session.add(bolt)
    session.commit()
    acme_first = ask(session, "+12015550123", NOW)
    ask(session, "+12015550124", NOW + timedelta(seconds=1))
    bolt_request = submit(
        session, Submission("bolt", "+12015550125", consent=True), now=NOW + timedelta(seconds=2)
    ).request.id

    claims = claim_due(session, "worker-a", NOW + timedelta(seconds=3), 10)

    assert [c.request_id for c in claims] == [acme_first, bolt_request], (
        "acme's one agent takes its oldest request; its second waits, bolt's is not held up"
    )


@pytest.mark.usefixtures("staff")
def test_a_number_denied_after_it_was_taken_is_never_claimed(session: Session) -> None:
    denied = ask(session, "+12015550123", NOW)
    later = ask(session, "+12015550124", NOW + timedelta(seconds=1))
    entry = number_policy.validate_entry("+12015550123", prefix=False, reason="abuse")
    number_policy.add_entry(session, entry, None, actor="ops")
    session.commit()

    claims = claim_due(session, "worker-a", NOW + timedelta(seconds=2), 5)

    assert [c.request_id for c in claims] == [later], "the denied number is never rung"
    request = session.get_one(CallbackRequest, denied)
    assert request.status == RequestStatus.FAILED
    assert request.attempts == [], "no attempt: nobody was rung"
    assert request.events[-1].reason == "not called: the number is now refused (phone_denied)"
    refusal = session.scalars(select(AuditEvent).where(AuditEvent.action == "request_refused"))
    assert [e.detail for e in refusal] == [f"request {denied}: not called (phone_denied)"]
