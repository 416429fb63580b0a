"""Business rules on a fake clock, on SQLite and PostgreSQL: hours, slots, capacity, retries,
deadlines, housekeeping."""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cbserver import audit, housekeeping, intake, scheduling
from cbserver.agents import add_agent
from cbserver.callflow import retry_or_give_up
from cbserver.claims import LEASE, claim_next
from cbserver.clock import FakeClock
from cbserver.errors import Conflict, Invalid
from cbserver.intake import Submission, submit
from cbserver.models import (
    AgentAssignment,
    AuditEvent,
    CallAttempt,
    CallbackRequest,
    OutsideHours,
    RequestStatus,
    SlotBooking,
    Subscriber,
)
from cbserver.states import transition

pytestmark = pytest.mark.postgres

# A Friday in Berlin: 12:00 local.
FRIDAY_NOON = datetime(2026, 11, 27, 11, 0, tzinfo=UTC)
HOURS = {
    "weekly": {day: ["09:00-12:30", "13:30-17:00"] for day in ("mon", "tue", "wed", "thu", "fri")},
    "exceptions": {"2026-11-30": []},  # a closed Monday
}
TUESDAY_OPENS = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)  # 09:00 in Berlin


@pytest.fixture
def shop(session: Session) -> Subscriber:
    """A Berlin shop with two agents, open weekdays with a lunch break."""
    subscriber = Subscriber(
        slug="shop",
        display_name="Shop",
        time_zone="Europe/Berlin",
        country="DE",
        caller_id="+493012345678",
        hours=HOURS,
    )
    session.add(subscriber)
    for name in ("anna", "ben"):
        agent = add_agent(session, name, contact=f"sip:{name}@127.0.0.1:5999").agent
        subscriber.assignments.append(AgentAssignment(agent=agent))
    session.commit()
    return subscriber


def ask(
    session: Session, phone: str = "+4915112345678", at: datetime = FRIDAY_NOON, when: str = "asap"
) -> CallbackRequest:
    return submit(session, Submission("shop", phone, when=when, consent=True), now=at).request


def booked(session: Session, subscriber: Subscriber, start: datetime) -> int:
    row = session.get(SlotBooking, (subscriber.id, start))
    session.refresh(row) if row is not None else None
    return row.booked if row is not None else 0


PHONES = [f"+4915112345{n:03d}" for n in range(20)]


# --- as soon as possible -----------------------------------------------------------------------


@pytest.mark.usefixtures("shop")
def test_asap_while_open_is_queued_now(session: Session) -> None:
    request = ask(session)
    assert (request.status, request.due_at) == (RequestStatus.QUEUED, FRIDAY_NOON)
    assert request.deadline_at == datetime(2026, 11, 28, 23, 0, tzinfo=UTC), (
        "the end of the next day, Berlin time"
    )


@pytest.mark.usefixtures("shop")
def test_asap_at_lunch_waits_for_the_afternoon(session: Session) -> None:
    lunch = FRIDAY_NOON + timedelta(minutes=45)  # 12:45 local
    request = ask(session, at=lunch)
    assert request.status == RequestStatus.SCHEDULED
    assert request.due_at == datetime(2026, 11, 27, 12, 30, tzinfo=UTC)
    assert request.events[0].reason == (
        "closed now; scheduled for the next opening, Fri 27 Nov, 13:30 (Europe/Berlin)"
    )


@pytest.mark.usefixtures("shop")
def test_asap_on_friday_evening_waits_past_the_weekend_and_the_closed_monday(
    session: Session,
) -> None:
    request = ask(session, at=datetime(2026, 11, 27, 18, 0, tzinfo=UTC))
    assert request.status == RequestStatus.SCHEDULED
    assert request.due_at == TUESDAY_OPENS


def test_a_business_that_refuses_outside_hours_says_when_it_opens(
    session: Session, shop: Subscriber
) -> None:
    shop.outside_hours = OutsideHours.REFUSE.value
    session.commit()
    with pytest.raises(Invalid) as refused:
        ask(session, at=datetime(2026, 11, 27, 18, 0, tzinfo=UTC))
    assert refused.value.code == "closed"
    assert refused.value.message == (
        "We are closed now. Please ask again when we open: Tue 01 Dec, 09:00 (Europe/Berlin)."
    )
    assert refused.value.to_json()["error"]["opens_at"] == TUESDAY_OPENS.isoformat()  # type: ignore[index]
    assert session.scalars(select(CallbackRequest)).all() == []


# --- slots and their capacity ------------------------------------------------------------------


def test_slots_lie_inside_opening_hours_with_places_per_agent(
    session: Session, shop: Subscriber
) -> None:
    places = scheduling.bookable_slots(session, shop, FRIDAY_NOON, days=1)
    local = [p.start.astimezone(scheduling.hours_of(shop).zone).strftime("%H:%M") for p in places]
    assert local[0] == "12:00", "slots already over are not offered"
    assert "12:15" in local
    assert "12:30" not in local, "lunch"
    assert local[-1] == "16:45"
    assert {p.capacity for p in places} == {2}, "one place per active agent"


def test_a_full_slot_is_refused_with_the_next_free_ones(session: Session, shop: Subscriber) -> None:
    slot = datetime(2026, 11, 27, 13, 0, tzinfo=UTC)  # 14:00 local
    first = ask(session, PHONES[0], when=slot.isoformat())
    ask(session, PHONES[1], when=(slot + timedelta(minutes=7)).isoformat())
    assert (first.status, first.due_at, first.slot_start) == (RequestStatus.SCHEDULED, slot, slot)
    assert booked(session, shop, slot) == 2

    with pytest.raises(Conflict) as full:
        ask(session, PHONES[2], when=slot.isoformat())
    assert full.value.code == "slot_full"
    assert full.value.message == (
        "That time is fully booked. The next free times are: Fri 27 Nov, 14:15 (Europe/Berlin); "
        "Fri 27 Nov, 14:30 (Europe/Berlin); Fri 27 Nov, 14:45 (Europe/Berlin)."
    )
    assert full.value.details["next_free"][0] == (slot + timedelta(minutes=15)).isoformat()  # type: ignore[index]

    intake.cancel(session, first, "changed my mind")
    assert booked(session, shop, slot) == 1, "a canceled booking gives its place back"
    assert ask(session, PHONES[2], when=slot.isoformat()).slot_start == slot


@pytest.mark.usefixtures("shop")
@pytest.mark.parametrize(
    ("when", "code"),
    [
        ("2026-11-27T12:45:00+01:00", "time_past"),
        ("2026-12-01T12:45:00+01:00", "outside_hours"),  # Tuesday's lunch break
        ("2026-11-28T10:00:00+01:00", "outside_hours"),  # Saturday
        ("2026-12-07T10:00:00+01:00", "time_too_far"),  # a week ahead is the window
    ],
)
def test_times_that_cannot_be_booked_are_refused(session: Session, when: str, code: str) -> None:
    with pytest.raises(Invalid) as refused:
        ask(session, at=FRIDAY_NOON + timedelta(hours=2), when=when)
    assert refused.value.code == code


def test_two_visitors_racing_for_the_last_place_one_wins(
    sessions: sessionmaker[Session], shop: Subscriber
) -> None:
    slot = datetime(2026, 11, 27, 14, 0, tzinfo=UTC)
    with sessions() as setup:
        ask(setup, PHONES[0], when=slot.isoformat())  # one of two places left
    racers = 6
    barrier = threading.Barrier(racers)
    outcomes: list[str] = []

    def book(phone: str) -> None:
        with sessions() as own:
            barrier.wait()
            try:
                ask(own, phone, when=slot.isoformat())
            except Conflict as exc:
                outcomes.append(exc.code)
            else:
                outcomes.append("created")

    threads = [threading.Thread(target=book, args=(PHONES[n + 1],)) for n in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes) == ["created"] + ["slot_full"] * (racers - 1)
    with sessions() as check:
        holders = check.scalars(select(CallbackRequest).where(CallbackRequest.slot_start == slot))
        assert len(holders.all()) == 2
        assert booked(check, shop, slot) == 2


# --- moving a request --------------------------------------------------------------------------


def test_a_waiting_request_moves_to_another_slot(session: Session, shop: Subscriber) -> None:
    first_slot = datetime(2026, 11, 27, 13, 0, tzinfo=UTC)
    later_slot = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    request = ask(session, when=first_slot.isoformat())
    intake.reschedule(
        session, request, later_slot.isoformat(), "moved by the visitor", now=FRIDAY_NOON
    )
    assert (request.status, request.due_at, request.slot_start) == (
        RequestStatus.SCHEDULED,
        later_slot,
        later_slot,
    )
    assert booked(session, shop, first_slot) == 0
    assert booked(session, shop, later_slot) == 1
    assert request.events[-1].reason == (
        "moved by the visitor: booked for Tue 01 Dec, 10:00 (Europe/Berlin)"
    )
    intake.reschedule(session, request, "asap", "moved by the visitor", now=FRIDAY_NOON)
    assert (request.status, request.slot_start) == (RequestStatus.QUEUED, None)
    assert booked(session, shop, later_slot) == 0


def test_moving_to_the_slot_already_held_keeps_the_place(
    session: Session, shop: Subscriber
) -> None:
    shop.slot_capacity = 1
    session.commit()
    slot = datetime(2026, 11, 27, 13, 0, tzinfo=UTC)
    request = ask(session, when=slot.isoformat())
    later = (slot + timedelta(minutes=5)).isoformat()  # the same 15-minute slot
    intake.reschedule(session, request, later, "moved by the visitor", now=FRIDAY_NOON)
    assert (request.status, request.slot_start) == (RequestStatus.SCHEDULED, slot)
    assert booked(session, shop, slot) == 1


@pytest.mark.usefixtures("shop")
def test_a_request_under_way_cannot_be_moved(session: Session) -> None:
    request = ask(session)
    assert claim_next(session, "w", FRIDAY_NOON) is not None
    session.refresh(request)
    with pytest.raises(Conflict) as refused:
        intake.reschedule(session, request, "asap", "moved", now=FRIDAY_NOON)
    assert refused.value.code == "request_not_movable"


# --- retries -------------------------------------------------------------------------------


def failed_attempt(session: Session, request: CallbackRequest, at: datetime) -> None:
    assert claim_next(session, "w", at) is not None
    session.refresh(request)


def test_a_retry_pushed_past_closing_waits_for_the_next_opening(
    session: Session, shop: Subscriber
) -> None:
    shop.retry_rules = {"visitor_busy": {"delay_seconds": 600, "jitter": 0}}
    session.commit()
    request = ask(session, at=datetime(2026, 11, 27, 15, 55, tzinfo=UTC))  # 16:55 Friday
    failed_attempt(session, request, datetime(2026, 11, 27, 15, 55, tzinfo=UTC))
    shop.deadline_days = 5
    request.deadline_at = scheduling.deadline_for(shop, request.due_at)
    session.commit()
    retry_or_give_up(
        session, request, "busy", datetime(2026, 11, 27, 15, 56, tzinfo=UTC), random.Random(1)
    )
    session.commit()
    assert request.status == RequestStatus.RETRY_WAIT
    assert request.due_at == TUESDAY_OPENS
    assert request.events[-1].reason == (
        "attempt 1 busy; trying again later, when we open: Tue 01 Dec, 09:00 (Europe/Berlin)"
    )


@pytest.mark.usefixtures("shop")
def test_a_retry_that_cannot_happen_before_the_deadline_expires_the_request(
    session: Session,
) -> None:
    friday_late = datetime(2026, 11, 27, 15, 57, tzinfo=UTC)  # 16:57: any retry is after 17:00
    request = ask(session, at=friday_late)
    failed_attempt(session, request, friday_late)
    retry_or_give_up(session, request, "no_answer", friday_late, random.Random(1))
    session.commit()
    assert request.status == RequestStatus.EXPIRED
    assert request.claimed_by is None
    assert request.events[-1].reason == "attempt 1 no_answer; no time left before the deadline"


# --- housekeeping ----------------------------------------------------------------------------


def test_requests_not_called_by_their_deadline_expire_and_free_their_place(
    session: Session, shop: Subscriber
) -> None:
    slot = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)
    waiting = ask(session, PHONES[0])
    booked_one = ask(session, PHONES[1], when=slot.isoformat())
    clock = FakeClock(FRIDAY_NOON)
    assert housekeeping.expire_overdue(session, clock.now()) == 0
    clock.set(datetime(2026, 11, 28, 22, 59, tzinfo=UTC))
    assert housekeeping.expire_overdue(session, clock.now()) == 0
    clock.advance(timedelta(minutes=1))
    assert housekeeping.expire_overdue(session, clock.now()) == 2
    for request in (waiting, booked_one):
        session.refresh(request)
        assert request.status == RequestStatus.EXPIRED
        assert request.events[-1].reason == "not called before its deadline"
    assert booked(session, shop, slot) == 0


@pytest.mark.usefixtures("shop")
def test_at_closing_time_the_waiting_line_moves_to_the_next_opening(session: Session) -> None:
    request = ask(session, at=datetime(2026, 11, 27, 15, 59, tzinfo=UTC))  # 16:59
    assert housekeeping.next_closing(session, datetime(2026, 11, 27, 15, 59, tzinfo=UTC)) == (
        datetime(2026, 11, 27, 16, 0, tzinfo=UTC)
    )
    assert housekeeping.close_doors(session, datetime(2026, 11, 27, 15, 59, tzinfo=UTC)) == 0
    assert housekeeping.close_doors(session, datetime(2026, 11, 27, 16, 0, tzinfo=UTC)) == 1
    session.refresh(request)
    assert (request.status, request.due_at) == (RequestStatus.SCHEDULED, TUESDAY_OPENS)
    assert claim_next(session, "w", datetime(2026, 11, 27, 16, 1, tzinfo=UTC)) is None


@pytest.mark.usefixtures("shop")
def test_claims_whose_worker_died_are_released_and_live_ones_renewed(session: Session) -> None:
    dialing, talking, mine = (
        ask(session, PHONES[n], at=FRIDAY_NOON - timedelta(seconds=3 - n)) for n in range(3)
    )
    session.add(
        AgentAssignment(
            subscriber_id=dialing.subscriber_id,
            agent=add_agent(session, "cleo", contact="sip:cleo@127.0.0.1:5999").agent,
        )
    )
    session.commit()
    assert claim_next(session, "dead", FRIDAY_NOON) is not None
    assert claim_next(session, "dead", FRIDAY_NOON) is not None
    assert claim_next(session, "alive", FRIDAY_NOON) is not None
    session.refresh(talking)
    transition(session, talking, RequestStatus.DIALING_VISITOR, "test")
    transition(session, talking, RequestStatus.CONNECTED, "test")
    session.commit()

    later = FRIDAY_NOON + LEASE + timedelta(seconds=1)
    carried = {mine.id}
    done = housekeeping.one_round(session, "alive", later - timedelta(seconds=2), carried)
    assert (done.renewed, done.released) == (1, 0)
    done = housekeeping.one_round(session, "alive", later, carried)
    assert (done.renewed, done.released) == (1, 2)
    for request in (dialing, talking, mine):
        session.refresh(request)
    assert dialing.status == RequestStatus.RETRY_WAIT
    assert dialing.claimed_by is None
    assert talking.status == RequestStatus.COMPLETED
    assert talking.events[-1].reason == "worker dead stopped while the call was connected"
    assert mine.status == RequestStatus.DIALING_AGENT, "a live worker's call is left alone"
    [attempt] = dialing.attempts
    assert (attempt.outcome, attempt.hangup_cause_text) == (
        "failed",
        "worker dead stopped during the call",
    )


@pytest.mark.usefixtures("shop")
def test_a_claim_its_live_worker_does_not_carry_is_released_when_its_lease_runs_out(
    session: Session,
) -> None:
    # The claim was committed, but its answer never reached the worker: no call carries it.
    lost = ask(session, PHONES[0], at=FRIDAY_NOON - timedelta(seconds=2))
    assert claim_next(session, "alive", FRIDAY_NOON) is not None

    later = FRIDAY_NOON + LEASE + timedelta(seconds=1)
    carried: tuple[str, ...] = ()
    done = housekeeping.one_round(session, "alive", later - timedelta(seconds=2), carried)
    assert (done.renewed, done.released) == (0, 0), "not renewed, not yet stale"
    done = housekeeping.one_round(session, "alive", later, carried)
    assert done.released == 1
    session.refresh(lost)
    assert (lost.status, lost.claimed_by) == (RequestStatus.RETRY_WAIT, None)


@pytest.mark.usefixtures("shop")
def test_a_worker_just_started_leaves_its_own_old_claims_for_it_to_adopt(
    session: Session,
) -> None:
    mine, theirs = (
        ask(session, PHONES[n], at=FRIDAY_NOON - timedelta(seconds=3 - n)) for n in (0, 1)
    )
    session.add(
        AgentAssignment(
            subscriber_id=mine.subscriber_id,
            agent=add_agent(session, "cleo", contact="sip:cleo@127.0.0.1:5999").agent,
        )
    )
    session.commit()
    assert claim_next(session, "node-1", FRIDAY_NOON) is not None
    assert claim_next(session, "node-2", FRIDAY_NOON) is not None

    later = FRIDAY_NOON + LEASE + timedelta(minutes=5)
    done = housekeeping.one_round(session, "node-1", later, adopted=False)
    assert done.released == 1, "node-2's stale claim is released"
    for request in (mine, theirs):
        session.refresh(request)
    assert (mine.status, mine.claimed_by) == (RequestStatus.DIALING_AGENT, "node-1")
    assert theirs.status == RequestStatus.RETRY_WAIT
    done = housekeeping.one_round(session, "node-1", later, adopted=True)
    assert done.released == 1, "once it has adopted what it could, the rest is released"


@pytest.mark.usefixtures("shop")
def test_visitor_data_is_erased_after_the_retention_period(session: Session) -> None:
    old = ask(session, PHONES[0])
    recent = ask(session, PHONES[1])
    still_open = ask(session, PHONES[2])
    intake.cancel(session, old, "test")
    old.updated_at = FRIDAY_NOON - timedelta(days=91)
    old.agent_note = "wants a quote for the boiler at 12 Elm St"
    recent.agent_note = "called back, all fine"
    session.commit()
    intake.cancel(session, recent, "test")
    erased = housekeeping.anonymise_old_requests(session, FRIDAY_NOON, timedelta(days=90))
    assert erased == 1
    for request in (old, recent, still_open):
        session.refresh(request)
    assert (old.visitor_phone, old.visitor_name, old.anonymised_at) == ("", None, FRIDAY_NOON)
    assert old.agent_note is None, "the agent's note may hold what the visitor said"
    assert recent.visitor_phone == PHONES[1]
    assert recent.agent_note == "called back, all fine"
    assert still_open.visitor_phone == PHONES[2]


def test_what_the_audit_log_holds_of_visitors_is_erased_after_the_retention_period(
    session: Session,
) -> None:
    def refusal(days_ago: int, actor: str) -> AuditEvent:
        return audit.record(
            session,
            actor,
            "number_refused",
            "shop: +19005550100 (phone_premium_rate)",
            at=FRIDAY_NOON - timedelta(days=days_ago),
        )

    old = refusal(91, "visitor 192.0.2.7")
    recent = refusal(10, "visitor 192.0.2.8")
    admin = refusal(91, "ops token")
    session.commit()

    assert housekeeping.anonymise_old_refusals(session, FRIDAY_NOON, timedelta(days=90)) == 1
    for event in (old, recent, admin):
        session.refresh(event)
    assert (old.actor, old.detail) == ("visitor", housekeeping.ERASED)
    assert old.action == "number_refused", "what happened stays, only who and which number go"
    assert recent.detail.startswith("shop: +1900")
    assert admin.actor == "ops token", "admins' own actions are not visitors' data"


# --- position and ETA ----------------------------------------------------------------------


def test_the_eta_follows_handling_times_agents_and_opening_hours(
    session: Session, shop: Subscriber
) -> None:
    line = [ask(session, PHONES[n], at=FRIDAY_NOON + timedelta(seconds=n)) for n in range(5)]
    assert [intake.queue_position(session, r) for r in line] == [1, 2, 3, 4, 5]
    fifth = line[4]
    # Two agents, no calls measured yet: three minutes each, two at a time.
    assert (
        intake.estimated_call_at(session, fifth, now=FRIDAY_NOON)
        == fifth.due_at + 2 * scheduling.DEFAULT_HANDLING
    )
    # Measured calls of ten minutes make the wait longer.
    done = ask(session, PHONES[10], at=FRIDAY_NOON - timedelta(hours=1))
    session.add(
        CallAttempt(
            request_id=done.id,
            number=1,
            started_at=FRIDAY_NOON - timedelta(minutes=50),
            ended_at=FRIDAY_NOON - timedelta(minutes=40),
            outcome="answered",
        )
    )
    session.commit()
    assert scheduling.handling_time(session, shop.id) == timedelta(minutes=10)
    # While closed (lunch), the wait starts at the next opening.
    lunch = FRIDAY_NOON + timedelta(minutes=40)
    assert intake.estimated_call_at(session, line[0], now=lunch) == datetime(
        2026, 11, 27, 12, 30, tzinfo=UTC
    )


def test_fake_clock_moves_only_when_told() -> None:
    clock = FakeClock(FRIDAY_NOON)
    assert clock.now() == FRIDAY_NOON
    assert clock.advance(timedelta(seconds=5)) == FRIDAY_NOON + timedelta(seconds=5)
    with pytest.raises(ValueError, match="aware"):
        FakeClock(datetime(2026, 1, 1))


# --- races and leftovers found in review -------------------------------------------------------

MONDAY_9 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)  # Tuesday 09:00 Berlin: Monday is closed


def test_two_workers_never_exceed_the_active_agents(
    sessions: sessionmaker[Session], shop: Subscriber, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cbserver import claims, routing

    with sessions() as setup:
        ben = setup.scalars(select(AgentAssignment).where(AgentAssignment.priority >= 0)).all()[1]
        setup.delete(ben)  # anna alone
        setup.commit()
        # Three: on PostgreSQL, A locks the first two it looks at, and B takes the third.
        for n in range(3):
            ask(setup, PHONES[n], at=FRIDAY_NOON + timedelta(seconds=n))
    first_look = claims.active_agents
    racing = {"done": False}

    def another_worker_claims_meanwhile(session: Session, subscriber_id: int) -> routing.Agents:
        if not racing["done"]:
            racing["done"] = True
            with sessions() as other:
                assert claim_next(other, "B", FRIDAY_NOON + timedelta(seconds=2)) is not None
        return first_look(session, subscriber_id)

    monkeypatch.setattr(claims, "active_agents", another_worker_claims_meanwhile)
    with sessions() as worker_a:
        assert claim_next(worker_a, "A", FRIDAY_NOON + timedelta(seconds=2)) is None, (
            "anna is on B's call: A must not dial the second request"
        )
    with sessions() as check:
        statuses = sorted(r.status for r in check.scalars(select(CallbackRequest)))
    assert statuses == ["dialing_agent", "queued", "queued"]


def test_a_booking_moved_twice_at_once_moves_once(
    sessions: sessionmaker[Session], shop: Subscriber
) -> None:
    first, second, third = (MONDAY_9 + timedelta(minutes=15 * n) for n in range(3))
    with sessions() as setup:
        request_id = ask(setup, PHONES[0], when=first.isoformat()).id
        ask(setup, PHONES[1], when=first.isoformat())
    tab_one, tab_two = sessions(), sessions()
    in_one = tab_one.get_one(CallbackRequest, request_id)
    in_two = tab_two.get_one(CallbackRequest, request_id)
    tab_one.commit()
    tab_two.commit()
    intake.reschedule(tab_one, in_one, second.isoformat(), "moved", now=FRIDAY_NOON)
    with pytest.raises(Conflict) as refused:
        intake.reschedule(tab_two, in_two, third.isoformat(), "moved", now=FRIDAY_NOON)
    assert refused.value.code == "request_changed"
    with sessions() as check:
        assert [booked(check, shop, s) for s in (first, second, third)] == [1, 1, 0]


@pytest.mark.usefixtures("shop")
def test_a_place_taken_after_a_failed_try_is_given_back_when_moved_or_canceled(
    session: Session, shop: Subscriber
) -> None:
    request = ask(session)
    failed_attempt(session, request, FRIDAY_NOON)
    retry_or_give_up(session, request, "busy", FRIDAY_NOON, random.Random(1))
    session.commit()
    later = MONDAY_9 + timedelta(minutes=15)
    for slot in (MONDAY_9, MONDAY_9, later):
        intake.reschedule(session, request, slot.isoformat(), "moved", now=FRIDAY_NOON)
    assert (booked(session, shop, MONDAY_9), booked(session, shop, later)) == (0, 1)
    intake.cancel(session, request, "changed my mind")
    assert booked(session, shop, later) == 0


def test_a_slot_under_way_can_still_be_booked(session: Session, shop: Subscriber) -> None:
    twenty_past_ten = datetime(2026, 11, 27, 9, 20, tzinfo=UTC)
    [first, *_] = scheduling.bookable_slots(session, shop, twenty_past_ten)
    assert first.start == datetime(2026, 11, 27, 9, 15, tzinfo=UTC)
    request = ask(session, at=twenty_past_ten, when=first.start.isoformat())
    assert (request.status, request.due_at) == (RequestStatus.QUEUED, twenty_past_ten)


@pytest.mark.usefixtures("shop")
def test_a_request_carried_over_at_closing_time_keeps_time_to_be_called(
    session: Session,
) -> None:
    request = ask(session, at=datetime(2026, 11, 27, 15, 55, tzinfo=UTC))  # Friday 16:55
    housekeeping.close_doors(session, datetime(2026, 11, 27, 16, 1, tzinfo=UTC))
    housekeeping.expire_overdue(session, datetime(2026, 11, 29, 12, 0, tzinfo=UTC))
    session.refresh(request)
    assert (request.status, request.due_at) == (RequestStatus.SCHEDULED, TUESDAY_OPENS)
    assert request.deadline_at == datetime(2026, 12, 2, 23, 0, tzinfo=UTC)


@pytest.mark.usefixtures("shop")
def test_a_late_hang_up_does_not_move_a_request_another_worker_took_up(
    sessions: sessionmaker[Session],
) -> None:
    from cbserver.callflow import AgentFirstCall, CallSettings
    from cbserver.claims import promote_due

    with sessions() as session:
        request_id = ask(session).id
        first_claim = claim_next(session, "A", FRIDAY_NOON)
    assert first_claim is not None
    with sessions() as session:  # A's lease ran out; B takes the request up again
        assert housekeeping.release_stale_claims(session, FRIDAY_NOON + timedelta(minutes=3)) == 1
        promote_due(session, FRIDAY_NOON + timedelta(minutes=10))
        assert claim_next(session, "B", FRIDAY_NOON + timedelta(minutes=10)) is not None
    late = AgentFirstCall(None, sessions, None, CallSettings(app="test"), first_claim, print)  # type: ignore[arg-type]
    late._close(19, "No answer")  # A's call ends at last
    with sessions() as session:
        request = session.get_one(CallbackRequest, request_id)
        assert (request.status, request.claimed_by) == (RequestStatus.DIALING_AGENT, "B")
        assert [a.outcome for a in request.attempts] == ["no_answer", None]


@pytest.mark.usefixtures("shop")
def test_new_hours_move_requests_waiting_for_a_now_closed_time(session: Session) -> None:
    from cbserver import subscribers

    booked_on_tuesday = ask(session, when=MONDAY_9.isoformat())
    subscribers.set_schedule(
        session, "shop", {"hours": {**HOURS, "exceptions": {"2026-12-01": []}}}, now=FRIDAY_NOON
    )
    session.refresh(booked_on_tuesday)
    wednesday_opens = MONDAY_9 + timedelta(days=1)
    assert (booked_on_tuesday.status, booked_on_tuesday.due_at, booked_on_tuesday.slot_start) == (
        RequestStatus.SCHEDULED,
        wednesday_opens,
        None,
    )
    assert booked_on_tuesday.events[-1].reason == (
        "the business changed its hours; moved to its next opening, "
        "Wed 02 Dec, 09:00 (Europe/Berlin)"
    )


@pytest.mark.usefixtures("shop")
def test_an_anonymised_request_still_shows(session: Session) -> None:
    from cbserver.views.present import present
    from cbserver.web import create_app

    request = ask(session)
    intake.cancel(session, request, "test")
    housekeeping.anonymise_old_requests(
        session, FRIDAY_NOON + timedelta(days=91), timedelta(days=90)
    )
    session.refresh(request)
    app = create_app({"SERVER_NAME": "cb.test"}, engine=session.get_bind())  # type: ignore[arg-type]
    with app.test_request_context():
        shown = present(session, request)
    assert (shown["phone"], shown["phone_display"], shown["name"]) == ("", None, None)
