"""How a call-back request looks to its visitor: the same words on the status page and the API."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import phonenumbers
from flask import url_for
from sqlalchemy.orm import Session

from cbserver import intake, scheduling
from cbserver.i18n import _, _l
from cbserver.models import CallbackRequest, OutsideHours, RequestStatus, Subscriber
from cbserver.scheduling import local_text
from cbserver.states import can_transition
from cbserver.web import now

STATUS_TEXT = {
    RequestStatus.SCHEDULED: _l("Booked: we will call you at the time shown."),
    RequestStatus.QUEUED: _l("Waiting: we will call you as soon as someone is free."),
    RequestStatus.DIALING_AGENT: _l("Getting someone for you now."),
    RequestStatus.DIALING_VISITOR: _l("Calling you now."),
    RequestStatus.CONNECTED: _l("You are connected."),
    RequestStatus.RETRY_WAIT: _l("We could not reach you; we will try again shortly."),
    RequestStatus.COMPLETED: _l("Done: thank you for talking to us."),
    RequestStatus.FAILED: _l("We could not reach you, and have stopped trying."),
    RequestStatus.CANCELED: _l("Canceled: we will not call."),
    RequestStatus.EXPIRED: _l("We could not call you in time. Please ask again."),
}


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def phone_display(e164: str) -> str:
    return phonenumbers.format_number(
        phonenumbers.parse(e164), phonenumbers.PhoneNumberFormat.INTERNATIONAL
    )


def when_text(request: CallbackRequest) -> str:
    """When the visitor will be called, in a sentence: what a new request's answer says."""
    zone = request.subscriber.time_zone
    if request.status == RequestStatus.QUEUED:
        return _("We will call you as soon as someone is free.")
    if request.status != RequestStatus.SCHEDULED:
        return str(STATUS_TEXT[RequestStatus(request.status)])
    due = local_text(request.due_at, zone)
    if request.slot_start is not None:
        return _("Booked: we will call you at %(time)s.", time=due)
    return _("We are closed now: we will call you when we open, %(time)s.", time=due)


def status_url(request: CallbackRequest) -> str:
    return url_for(
        "status.page", request_id=request.id, token=request.visitor_token, _external=True
    )


def present(session: Session, request: CallbackRequest) -> dict[str, Any]:
    status = RequestStatus(request.status)
    zone = request.subscriber.time_zone
    expected = intake.estimated_call_at(session, request, now=now())
    return {
        "id": request.id,
        "status": status.value,
        "status_text": str(STATUS_TEXT[status]),
        "subscriber": {
            "slug": request.subscriber.slug,
            "name": request.subscriber.display_name,
        },
        "phone": request.visitor_phone,
        # Erased after the retention period: nothing to show.
        "phone_display": phone_display(request.visitor_phone) if request.visitor_phone else None,
        "name": request.visitor_name,
        "topic": request.topic,
        "requested_time": _iso(request.requested_time),
        "slot_start": _iso(request.slot_start),
        "due_at": _iso(request.due_at),
        "due_text": local_text(request.due_at, zone),
        "deadline_at": _iso(request.deadline_at),
        "position": intake.queue_position(session, request),
        "estimated_call_at": _iso(expected),
        "estimated_call_text": local_text(expected, zone) if expected else None,
        "can_cancel": can_transition(status, RequestStatus.CANCELED),
        "can_reschedule": status in intake.MOVABLE,
        "created_at": _iso(request.created_at),
        "updated_at": _iso(request.updated_at),
        "events": [
            {
                "at": _iso(e.at),
                "at_text": local_text(e.at, zone),
                "from": e.from_status,
                "to": e.to_status,
                "reason": e.reason,
            }
            for e in request.events
        ],
        "attempts": [
            {
                "number": a.number,
                "started_at": _iso(a.started_at),
                "answered_at": _iso(a.answered_at),
                "ended_at": _iso(a.ended_at),
                "outcome": a.outcome,
                "hangup_cause": a.hangup_cause,
                "hangup_cause_text": a.hangup_cause_text,
            }
            for a in request.attempts
        ],
    }


def slot_listing(
    session: Session, subscriber: Subscriber, first_day: date | None, days: int | None
) -> dict[str, Any]:
    """The subscriber's bookable slots as the API and the widget show them."""
    moment = now()
    zone = subscriber.time_zone
    hours = scheduling.hours_of(subscriber)
    opening = hours.next_opening(moment)
    return {
        "subscriber": subscriber.slug,
        "time_zone": zone,
        "slot_minutes": subscriber.slot_minutes,
        "open_now": hours.is_open(moment),
        "next_opening": _iso(opening),
        "next_opening_text": local_text(opening, zone) if opening else None,
        "outside_hours": subscriber.outside_hours,
        "slots": [
            {
                "start": _iso(place.start),
                "end": _iso(place.end),
                "start_text": local_text(place.start, zone),
                "capacity": place.capacity,
                "remaining": place.remaining,
            }
            for place in scheduling.bookable_slots(
                session, subscriber, moment, first_day=first_day, days=days
            )
        ],
    }


@dataclass(frozen=True)
class SlotOption:
    value: str
    label: str
    full: bool


def slot_options(session: Session, subscriber: Subscriber) -> list[tuple[str, list[SlotOption]]]:
    """The booking window's slots grouped by local day, for a form's select."""
    zone = ZoneInfo(subscriber.time_zone)
    days: dict[str, list[SlotOption]] = {}
    for place in scheduling.bookable_slots(session, subscriber, now()):
        start = place.start.astimezone(zone)
        label = f"{start:%H:%M} - {place.end.astimezone(zone):%H:%M}"
        if place.remaining == 0:
            label += " " + _("(full)")
        days.setdefault(f"{start:%A %d %B}", []).append(
            SlotOption(place.start.isoformat(), label, place.remaining == 0)
        )
    return list(days.items())


def closed_note(subscriber: Subscriber) -> str | None:
    """What "as soon as possible" means while the business is closed; None when open."""
    moment = now()
    hours = scheduling.hours_of(subscriber)
    if hours.is_open(moment):
        return None
    opening = hours.next_opening(moment)
    if opening is None:
        return _("We are not taking call-backs at the moment.")
    when = local_text(opening, subscriber.time_zone)
    if subscriber.outside_hours == OutsideHours.REFUSE:
        return str(
            _l("We are closed now and open again %(time)s. Please choose a time.", time=when)
        )
    return str(_l("We are closed now: we will call you when we open, %(time)s.", time=when))
