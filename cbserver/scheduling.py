"""When a request is called: opening hours, bookable slots and their capacity, deadlines, ETA.

A booked slot holds a place in ``slot_bookings``; the place is taken by a conditional UPDATE
(``booked < capacity``), so of two visitors reaching for the last place exactly one gets it,
on SQLite and PostgreSQL alike. A request gives its place back when it is canceled, moved
or expires before it is served.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import Insert, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from cbserver.errors import Conflict, Invalid
from cbserver.hours import OpeningHours, Slot, end_of_local_day, slot_containing, slots_on
from cbserver.i18n import _
from cbserver.models import (
    Agent,
    AgentAssignment,
    CallAttempt,
    CallbackRequest,
    OutsideHours,
    RequestStatus,
    SlotBooking,
    Subscriber,
)
from cbserver.states import transition

# Until real handling times are measured, a call-back is assumed to take this long.
DEFAULT_HANDLING = timedelta(minutes=3)
# How many recent calls the handling time is averaged over.
HANDLING_SAMPLE = 20
NEXT_FREE = 3
WAITING = (RequestStatus.QUEUED, RequestStatus.RETRY_WAIT)
# Not called yet: such a request may be moved, holds its slot's place, and expires at its deadline.
UNSERVED = (RequestStatus.SCHEDULED, *WAITING)


def hours_of(subscriber: Subscriber) -> OpeningHours:
    return OpeningHours.parse(subscriber.time_zone, subscriber.hours)


def local_text(moment: datetime, time_zone: str) -> str:
    """A time as the business's visitors read it: "Wed 25 Nov, 08:13 (America/Los_Angeles)"."""
    return f"{moment.astimezone(ZoneInfo(time_zone)):%a %d %b, %H:%M} ({time_zone})"


def active_agent_count(session: Session, subscriber_id: int) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(AgentAssignment)
            .join(Agent, Agent.id == AgentAssignment.agent_id)
            .where(AgentAssignment.subscriber_id == subscriber_id, Agent.active)
        )
        or 0
    )


def slot_capacity(session: Session, subscriber: Subscriber) -> int:
    """Places per slot: the subscriber's own cap, else one per active agent."""
    if subscriber.slot_capacity is not None:
        return subscriber.slot_capacity
    return active_agent_count(session, subscriber.id)


def deadline_for(subscriber: Subscriber, due: datetime) -> datetime:
    return end_of_local_day(hours_of(subscriber), due, subscriber.deadline_days)


@dataclass(frozen=True)
class SlotPlace:
    start: datetime
    end: datetime
    capacity: int
    remaining: int


def _booked(
    session: Session, subscriber_id: int, start: datetime, end: datetime
) -> dict[datetime, int]:
    return {
        row.starts_at: row.booked
        for row in session.scalars(
            select(SlotBooking).where(
                SlotBooking.subscriber_id == subscriber_id,
                SlotBooking.starts_at >= start,
                SlotBooking.starts_at < end,
            )
        )
    }


def bookable_slots(
    session: Session,
    subscriber: Subscriber,
    now: datetime,
    *,
    first_day: date | None = None,
    days: int | None = None,
) -> list[SlotPlace]:
    """Slots from ``first_day`` (local; today by default) for ``days`` days, within the
    subscriber's booking window; slots that already ended are left out."""
    hours = hours_of(subscriber)
    today = hours.local_date(now)
    first_day = max(first_day or today, today)
    last_day = today + timedelta(days=subscriber.booking_days - 1)
    count = min(days if days is not None else subscriber.booking_days, 31)
    length = timedelta(minutes=subscriber.slot_minutes)
    found: list[Slot] = []
    day = first_day
    while day <= last_day and (day - first_day).days < count:
        found.extend(slot for slot in slots_on(hours, day, length) if slot.end > now)
        day += timedelta(days=1)
    if not found:
        return []
    capacity = slot_capacity(session, subscriber)
    booked = _booked(session, subscriber.id, found[0].start, found[-1].end)
    return [
        SlotPlace(slot.start, slot.end, capacity, max(0, capacity - booked.get(slot.start, 0)))
        for slot in found
    ]


def next_free(
    session: Session, subscriber: Subscriber, after: datetime, now: datetime
) -> list[SlotPlace]:
    """The first few slots with room that start after ``after``."""
    places = bookable_slots(session, subscriber, now)
    return [p for p in places if p.start > after and p.remaining > 0][:NEXT_FREE]


def _insert_ignoring_existing(session: Session, subscriber_id: int, start: datetime) -> Insert:
    dialect = session.get_bind().dialect.name
    values = {"subscriber_id": subscriber_id, "starts_at": start, "booked": 0}
    if dialect == "postgresql":
        return postgresql.insert(SlotBooking).values(values).on_conflict_do_nothing()
    return sqlite.insert(SlotBooking).values(values).on_conflict_do_nothing()


def take_place(session: Session, subscriber: Subscriber, start: datetime, capacity: int) -> bool:
    """Hold a place in the slot starting at ``start``; False when it is full. Not committed."""
    session.execute(_insert_ignoring_existing(session, subscriber.id, start))
    result = session.execute(
        update(SlotBooking)
        .where(
            SlotBooking.subscriber_id == subscriber.id,
            SlotBooking.starts_at == start,
            SlotBooking.booked < capacity,
        )
        .values(booked=SlotBooking.booked + 1)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1  # type: ignore[attr-defined,no-any-return]


def give_back_place(session: Session, subscriber_id: int, slot_start: datetime | None) -> None:
    """A request no longer holds its place in the slot starting at ``slot_start`` (canceled,
    moved, expired). Not committed. A request holds a place while its ``slot_start`` is set;
    the claim clears it, as the slot is then used."""
    if slot_start is None:
        return
    session.execute(
        update(SlotBooking)
        .where(
            SlotBooking.subscriber_id == subscriber_id,
            SlotBooking.starts_at == slot_start,
            SlotBooking.booked > 0,
        )
        .values(booked=SlotBooking.booked - 1)
        .execution_options(synchronize_session=False)
    )


@dataclass(frozen=True)
class Plan:
    """When a new (or moved) request is due, and what it is until then."""

    status: RequestStatus
    due_at: datetime
    deadline_at: datetime
    reason: str
    # Set when a place in a slot must be held.
    slot: Slot | None = None


def plan_asap(subscriber: Subscriber, now: datetime) -> Plan:
    """As soon as possible: now when open; else the next opening, or a refusal."""
    hours = hours_of(subscriber)
    if hours.is_open(now):
        return Plan(
            RequestStatus.QUEUED, now, deadline_for(subscriber, now), "waiting to be called"
        )
    opening = hours.next_opening(now)
    if opening is None:
        raise Invalid(_("We are not taking call-backs at the moment."), field="when", code="closed")
    opens_text = local_text(opening, subscriber.time_zone)
    if subscriber.outside_hours == OutsideHours.REFUSE:
        raise Invalid(
            _("We are closed now. Please ask again when we open: %(time)s.", time=opens_text),
            field="when",
            code="closed",
            details={"opens_at": opening.isoformat()},
        )
    return Plan(
        RequestStatus.SCHEDULED,
        opening,
        deadline_for(subscriber, opening),
        f"closed now; scheduled for the next opening, {opens_text}",
    )


def plan_slot(subscriber: Subscriber, at: datetime, now: datetime) -> Plan:
    """The slot ``at`` falls in: it must be inside opening hours and the booking window."""
    hours = hours_of(subscriber)
    slot = slot_containing(hours, at, timedelta(minutes=subscriber.slot_minutes))
    # A slot under way may still be booked (the form offers it until it ends).
    if (slot.end if slot is not None else at) <= now:
        raise Invalid(_("That time has already passed."), field="when", code="time_past")
    if slot is None:
        raise Invalid(
            _("We do not call at that time. Please choose a time within our opening hours."),
            field="when",
            code="outside_hours",
        )
    last_day = hours.local_date(now) + timedelta(days=subscriber.booking_days - 1)
    if hours.local_date(slot.start) > last_day:
        raise Invalid(
            _(
                "We can take call-backs up to %(days)s days ahead.",
                days=subscriber.booking_days,
            ),
            field="when",
            code="time_too_far",
        )
    due = max(slot.start, now)
    status = RequestStatus.SCHEDULED if due > now else RequestStatus.QUEUED
    when_text = local_text(slot.start, subscriber.time_zone)
    return Plan(status, due, deadline_for(subscriber, slot.start), f"booked for {when_text}", slot)


def hold_place(session: Session, subscriber: Subscriber, plan: Plan, now: datetime) -> None:
    """Take the plan's place in its slot, or refuse with 409 and the next free slots."""
    if plan.slot is None:
        return
    if take_place(session, subscriber, plan.slot.start, slot_capacity(session, subscriber)):
        return
    session.rollback()
    free = next_free(session, subscriber, plan.slot.start, now)
    zone = subscriber.time_zone
    suggestions = "; ".join(local_text(place.start, zone) for place in free)
    message = (
        _("That time is fully booked. The next free times are: %(times)s.", times=suggestions)
        if free
        else _("That time is fully booked, and so are the days after it.")
    )
    raise Conflict(
        message,
        field="when",
        code="slot_full",
        details={"next_free": [place.start.isoformat() for place in free]},
    )


def handling_time(session: Session, subscriber_id: int) -> timedelta:
    """How long the subscriber's recent call-backs took, on average."""
    recent = (
        select(CallAttempt.started_at, CallAttempt.ended_at)
        .join(CallbackRequest, CallbackRequest.id == CallAttempt.request_id)
        .where(
            CallbackRequest.subscriber_id == subscriber_id,
            CallAttempt.outcome == "answered",
            CallAttempt.ended_at.is_not(None),
        )
        .order_by(CallAttempt.id.desc())
        .limit(HANDLING_SAMPLE)
    )
    durations = [ended - started for started, ended in session.execute(recent) if ended is not None]
    if not durations:
        return DEFAULT_HANDLING
    return sum(durations, timedelta()) / len(durations)


def replan_waiting(session: Session, subscriber: Subscriber, now: datetime) -> int:
    """After the hours changed: requests waiting for a time that is now closed wait for the
    next opening instead (a booked slot's place is given back). Not committed."""
    hours = hours_of(subscriber)
    waiting = session.scalars(
        select(CallbackRequest).where(
            CallbackRequest.subscriber_id == subscriber.id,
            CallbackRequest.status.in_(UNSERVED),
        )
    ).all()
    moved = 0
    for request in waiting:
        at = max(request.due_at, now)
        opening = hours.next_opening(at)
        if opening is None or opening == at:
            continue
        held = request.slot_start
        deadline = deadline_for(subscriber, opening)
        transition(
            session,
            request,
            RequestStatus.SCHEDULED,
            "the business changed its hours; moved to its next opening, "
            + local_text(opening, subscriber.time_zone),
            now=now,
            due_at=opening,
            deadline_at=max(deadline, request.deadline_at or deadline),
            slot_start=None,
        )
        give_back_place(session, subscriber.id, held)
        moved += 1
    return moved
