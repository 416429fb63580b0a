"""How a call-back request looks to its visitor: the same words on the status page and the API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import phonenumbers
from flask import url_for
from sqlalchemy.orm import Session

from cbserver import intake
from cbserver.i18n import _l
from cbserver.models import CallbackRequest, RequestStatus
from cbserver.scheduling import local_text
from cbserver.states import can_transition

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


def status_url(request: CallbackRequest) -> str:
    return url_for(
        "status.page", request_id=request.id, token=request.visitor_token, _external=True
    )


def present(session: Session, request: CallbackRequest) -> dict[str, Any]:
    status = RequestStatus(request.status)
    zone = request.subscriber.time_zone
    expected = intake.estimated_call_at(session, request)
    return {
        "id": request.id,
        "status": status.value,
        "status_text": str(STATUS_TEXT[status]),
        "subscriber": {
            "slug": request.subscriber.slug,
            "name": request.subscriber.display_name,
        },
        "phone": request.visitor_phone,
        "phone_display": phone_display(request.visitor_phone),
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
