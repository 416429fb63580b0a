"""Claiming due requests, on SQLite and PostgreSQL: each is taken by exactly one worker."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from cbserver.claims import LEASE, claim_next
from cbserver.intake import Submission, submit
from cbserver.models import CallOrder, RequestStatus, Subscriber
from cbserver.numbers import UnsafeNumber, trunk_endpoint

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


def ask(session: Session, phone: str, at: datetime, when: str = "asap") -> str:
    return submit(session, Submission("acme", phone, when=when), now=at).request.id


@pytest.mark.usefixtures("acme")
def test_the_oldest_due_request_is_claimed_with_a_lease(session: Session) -> None:
    first = ask(session, "+12015550123", NOW)
    ask(session, "+12015550124", NOW + timedelta(seconds=1))
    ask(session, "+12015550125", NOW, when=(NOW + timedelta(hours=1)).isoformat())

    claimed = claim_next(session, "worker-a", NOW + timedelta(seconds=5))
    assert claimed is not None
    assert claimed.id == first
    assert claimed.status == RequestStatus.DIALING_AGENT
    assert claimed.claimed_by == "worker-a"
    assert claimed.lease_until == NOW + timedelta(seconds=5) + LEASE
    assert claimed.events[-1].reason == "taken by worker worker-a"

    second = claim_next(session, "worker-a", NOW + timedelta(seconds=5))
    assert second is not None
    assert claim_next(session, "worker-a", NOW + timedelta(seconds=5)) is None, (
        "the booked slot is not due yet"
    )


def test_visitor_first_business_starts_by_dialing_the_visitor(
    session: Session, acme: Subscriber
) -> None:
    acme.call_order = CallOrder.VISITOR_FIRST.value
    session.commit()
    ask(session, "+12015550123", NOW)
    claimed = claim_next(session, "worker-a", NOW)
    assert claimed is not None
    assert claimed.status == RequestStatus.DIALING_VISITOR


def test_racing_workers_never_take_the_same_request(
    sessions: sessionmaker[Session], acme: Subscriber
) -> None:
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
                    mine.append(request.id)
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


@pytest.mark.usefixtures("acme")
def test_retries_and_booked_slots_come_back_in_the_queue_when_due(session: Session) -> None:
    from cbserver.claims import promote_due
    from cbserver.models import CallbackRequest
    from cbserver.states import transition

    retry = ask(session, "+12015550123", NOW)
    booked = ask(session, "+12015550124", NOW, when=(NOW + timedelta(minutes=5)).isoformat())
    later = ask(session, "+12015550125", NOW, when=(NOW + timedelta(hours=1)).isoformat())
    request = session.get_one(CallbackRequest, retry)
    transition(session, request, RequestStatus.DIALING_AGENT, "test")
    transition(
        session, request, RequestStatus.RETRY_WAIT, "busy", due_at=NOW + timedelta(minutes=2)
    )
    session.commit()

    assert promote_due(session, NOW + timedelta(minutes=1)) == 0
    assert promote_due(session, NOW + timedelta(minutes=10)) == 2
    statuses = {rid: session.get_one(CallbackRequest, rid).status for rid in (retry, booked, later)}
    assert statuses == {retry: "queued", booked: "queued", later: "scheduled"}
    assert session.get_one(CallbackRequest, retry).events[-1].reason == "time for another try"
