"""Taking call-back requests: validation in plain words, de-duplication, idempotency.

Every path into the store (hosted form, widget, JSON API) goes through ``submit``.
"""

from __future__ import annotations

import hmac
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from sqlalchemy import func, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from cbserver import number_policy, scheduling, subscribers
from cbserver.errors import BadRequest, Conflict, Invalid, NotFound
from cbserver.i18n import _
from cbserver.models import (
    OPEN_STATUSES,
    CallbackRequest,
    RequestStatus,
    Subscriber,
    utcnow,
)
from cbserver.states import (
    TERMINAL,
    StaleRequest,
    can_transition,
    record_creation,
    transition,
)

MAX_NAME = 100
MAX_TOPIC = 500
MAX_PAGE_URL = 2000
MAX_IDEMPOTENCY_KEY = 100
# Beyond any booking window a subscriber may set (see subscribers.BOOKING_DAYS).
FAR_AHEAD = timedelta(days=366)
WAITING = scheduling.WAITING
# A request may be moved, and holds its slot's place, while nobody has started calling it.
MOVABLE = scheduling.UNSERVED


@dataclass(frozen=True)
class Submission:
    subscriber: str
    phone: str
    name: str | None = None
    topic: str | None = None
    when: str | None = "asap"
    page_url: str | None = None
    idempotency_key: str | None = None
    # Who sent it (the client's IP address), for the audit log of refused numbers.
    client: str | None = None
    # The visitor ticked "I agree to be called at this number": nobody is called without.
    consent: bool = False


@dataclass(frozen=True)
class Submitted:
    request: CallbackRequest
    # False when an earlier request was returned (same Idempotency-Key, or already waiting).
    created: bool


def find_subscriber(session: Session, slug: str) -> Subscriber:
    subscriber = subscribers.find_active(session, slug)
    if subscriber is None:
        raise NotFound(
            _("There is no call-back service called %(name)s.", name=repr(slug)),
            field="subscriber",
            code="unknown_subscriber",
        )
    return subscriber


def normalise_phone(session: Session, raw: str, subscriber: Subscriber) -> str:
    """The visitor's number in E.164, or Invalid (``NumberRefused``) saying in plain words
    what is wrong: by what the number itself says, then by the deny-list and the business's
    own numbers."""
    phone = number_policy.check(raw, subscriber)
    number_policy.check_lists(session, subscriber, phone)
    return phone


def _bad_text(field: str) -> str:
    if field == "name":
        return _("Your name contains characters we cannot accept.")
    return _("The topic contains characters we cannot accept.")


def _too_long(field: str, limit: int) -> str:
    if field == "name":
        return _("Your name is too long: at most %(limit)s characters.", limit=limit)
    return _("The topic is too long: at most %(limit)s characters.", limit=limit)


def _unacceptable(text: str, allowed: str = "") -> bool:
    """Whether ``text`` holds a control or format character other than ``allowed`` (NUL, an
    ANSI escape, a bidi override), or a lone surrogate: a JSON escape like \\ud800 is no
    character, and no database can store it."""
    return any(unicodedata.category(c) in ("Cc", "Cf", "Cs") and c not in allowed for c in text)


def _clean_text(value: str | None, field: str, limit: int, *, multiline: bool) -> str | None:
    if value is None:
        return None
    # Browsers send a textarea's line breaks as CRLF.
    text = unicodedata.normalize("NFC", value.replace("\r\n", "\n")).strip()
    if _unacceptable(text, "\n\t" if multiline else ""):
        raise Invalid(_bad_text(field), field=field, code="bad_text")
    if len(text) > limit:
        raise Invalid(_too_long(field, limit), field=field, code="too_long")
    return text or None


def usable_page_url(value: str | None) -> str:
    """``value`` if the intake would take it as the page the visitor came from, else ""."""
    try:
        return _clean_page_url(value) or ""
    except Invalid:
        return ""


def _clean_page_url(value: str | None) -> str | None:
    if not value:
        return None
    url = value.strip()
    try:
        parts = urlsplit(url)
    except ValueError:  # "http://[::1": an unclosed IPv6 host
        parts = None
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.netloc
        or len(value) > MAX_PAGE_URL
        or _unacceptable(url)
    ):
        raise Invalid(_("The page address is not a web address."), field="page_url", code="bad_url")
    return url


def _requested_time(when: str | None, now: datetime) -> datetime | None:
    """None for "as soon as possible", else the requested time in UTC."""
    if when is None or when.strip().lower() in ("", "asap"):
        return None
    try:
        at = datetime.fromisoformat(when.strip())
        if at.tzinfo is not None:
            at = at.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise Invalid(
            _('The time must be "asap" or a date and time like 2026-12-01T09:30:00+01:00.'),
            field="when",
            code="bad_time",
        ) from exc
    if at.tzinfo is None:
        raise Invalid(
            _("The time needs a time zone, like 2026-12-01T09:30:00+01:00."),
            field="when",
            code="time_without_zone",
        )
    if at > now + FAR_AHEAD:
        # Refused before any slot is looked for (the year 9999 has no slots to compute).
        raise Invalid(
            _("That time is too far ahead. Please choose one of the times offered."),
            field="when",
            code="time_too_far",
        )
    return at


def plan(subscriber: Subscriber, when: str | None, now: datetime) -> scheduling.Plan:
    """When the request will be called: as soon as the business is open, or a booked slot."""
    requested = _requested_time(when, now)
    if requested is None:
        return scheduling.plan_asap(subscriber, now)
    return scheduling.plan_slot(subscriber, requested, now)


def _check_idempotency_key(key: str | None) -> str | None:
    if key is None:
        return None
    if not (0 < len(key) <= MAX_IDEMPOTENCY_KEY) or not key.isascii() or not key.isprintable():
        raise BadRequest(
            _(
                "Idempotency-Key must be 1 to %(limit)s printable ASCII characters.",
                limit=MAX_IDEMPOTENCY_KEY,
            ),
            field="idempotency_key",
            code="bad_idempotency_key",
        )
    return key


def _by_key(session: Session, subscriber: Subscriber, key: str) -> CallbackRequest | None:
    return session.scalar(
        select(CallbackRequest).where(
            CallbackRequest.subscriber_id == subscriber.id,
            CallbackRequest.idempotency_key == key,
        )
    )


def _open_for_phone(session: Session, subscriber: Subscriber, phone: str) -> CallbackRequest | None:
    return session.scalar(
        select(CallbackRequest).where(
            CallbackRequest.subscriber_id == subscriber.id,
            CallbackRequest.visitor_phone == phone,
            CallbackRequest.status.in_(OPEN_STATUSES),
        )
    )


def _replay(existing: CallbackRequest, phone: str | None) -> Submitted:
    if phone is not None and existing.visitor_phone != phone:
        raise Conflict(
            _("This Idempotency-Key was already used for another request."),
            field="idempotency_key",
            code="idempotency_key_reused",
        )
    return Submitted(existing, created=False)


def _accepted_phone(
    session: Session, submission: Submission, subscriber: Subscriber, now: datetime
) -> str:
    try:
        return normalise_phone(session, submission.phone, subscriber)
    except number_policy.NumberRefused as refusal:
        if refusal.code != "phone_missing":
            # On a session of its own: the caller's is rolled back or closed after a refusal.
            number_policy.record_refusal(
                sessionmaker(session.get_bind()), refusal, subscriber, submission.client, at=now
            )
        raise


def _check_consent(submission: Submission) -> None:
    if submission.consent is not True:
        raise Invalid(
            _("Please tick the box to agree that we call you at this number."),
            field="consent",
            code="consent_missing",
        )


def submit(
    session: Session,
    submission: Submission,
    *,
    now: datetime | None = None,
    admit: Callable[[Subscriber, str], None] | None = None,
) -> Submitted:
    """Store a new request, or return the one this submission repeats; committed.

    ``admit`` is asked about a valid number just before a new request is stored (not for a
    repeat), and refuses it by raising: the web's rate limits per number and subscriber."""
    now = now or utcnow()
    subscriber = find_subscriber(session, submission.subscriber)
    key = _check_idempotency_key(submission.idempotency_key)
    phone = _accepted_phone(session, submission, subscriber, now)
    _check_consent(submission)
    if key is not None and (earlier := _by_key(session, subscriber, key)) is not None:
        return _replay(earlier, phone)
    name = _clean_text(submission.name, "name", MAX_NAME, multiline=False)
    topic = _clean_text(submission.topic, "topic", MAX_TOPIC, multiline=True)
    page_url = _clean_page_url(submission.page_url)
    planned = plan(subscriber, submission.when, now)
    if (waiting := _open_for_phone(session, subscriber, phone)) is not None:
        return Submitted(waiting, created=False)
    if admit is not None:
        admit(subscriber, phone)

    request = CallbackRequest(
        subscriber=subscriber,
        visitor_phone=phone,
        visitor_name=name,
        topic=topic,
        page_url=page_url,
        requested_time=planned.slot.start if planned.slot else None,
        slot_start=planned.slot.start if planned.slot else None,
        due_at=planned.due_at,
        deadline_at=planned.deadline_at,
        status=planned.status.value,
        idempotency_key=key,
        consent_at=now,
        created_at=now,
        updated_at=now,
    )
    try:
        scheduling.hold_place(session, subscriber, planned, now)
        session.add(request)
        session.flush()
        record_creation(session, request, planned.reason)
        session.commit()
    except IntegrityError:
        # A concurrent identical submission won the unique index: answer with its request.
        session.rollback()
        winner = (key and _by_key(session, subscriber, key)) or _open_for_phone(
            session, subscriber, phone
        )
        if winner is None:
            raise
        return _replay(winner, phone if key else None)
    return Submitted(request, created=True)


def for_visitor(session: Session, request_id: str, token: str | None) -> CallbackRequest:
    """The request, only for the visitor who holds its token; 404 otherwise, never a hint."""
    request = session.get(CallbackRequest, request_id) if len(request_id) <= 36 else None
    presented = (token or "").encode()
    if request is None or not hmac.compare_digest(request.visitor_token.encode(), presented):
        raise NotFound(_("There is no such call-back request."), code="request_not_found")
    return request


def cancel(session: Session, request: CallbackRequest, reason: str) -> None:
    """Cancel a request that has not ended yet; committed."""
    if RequestStatus(request.status) in TERMINAL:
        raise Conflict(_("This call-back request has already ended."), code="request_finished")
    if not can_transition(request.status, RequestStatus.CANCELED):
        # Connected: the call itself is under way, and hanging up is what ends it.
        raise Conflict(
            _("The call is under way; it ends when either side hangs up."),
            code="request_in_call",
        )
    held = request.slot_start
    try:
        # Anything changed since it was read (a claim uses the slot): look again, not guess.
        transition(session, request, RequestStatus.CANCELED, reason, unless_changed=True)
    except StaleRequest as exc:
        session.rollback()
        raise _changed() from exc
    scheduling.give_back_place(session, request.subscriber_id, held)
    session.commit()


def _changed() -> Conflict:
    return Conflict(
        _("This call-back request changed just now. Please look again."),
        code="request_changed",
    )


def reschedule(
    session: Session,
    request: CallbackRequest,
    when: str | None,
    reason: str,
    *,
    now: datetime | None = None,
) -> None:
    """Move a request that is still waiting to another slot (or "asap"); committed."""
    now = now or utcnow()
    if request.status not in MOVABLE:
        raise Conflict(
            _("This call-back request can no longer be moved: it is under way or over."),
            code="request_not_movable",
        )
    subscriber = request.subscriber
    planned = plan(subscriber, when, now)
    held = request.slot_start
    try:
        # Two moves of one request at once (a double click, the visitor and an admin): the
        # second finds it changed, so no place is taken or given back twice.
        transition(
            session,
            request,
            planned.status,
            f"{reason}: {planned.reason}",
            now=now,
            unless_changed=True,
            due_at=planned.due_at,
            deadline_at=planned.deadline_at,
            slot_start=planned.slot.start if planned.slot else None,
            requested_time=planned.slot.start if planned.slot else None,
        )
    except StaleRequest as exc:
        session.rollback()
        raise _changed() from exc
    if planned.slot is None or planned.slot.start != held:
        scheduling.hold_place(session, subscriber, planned, now)
        scheduling.give_back_place(session, subscriber.id, held)
    session.commit()


def queue_position(session: Session, request: CallbackRequest) -> int | None:
    """1 for the next request the subscriber's agents will take; None when not waiting."""
    if request.status not in WAITING:
        return None
    ahead = session.scalar(
        select(func.count())
        .select_from(CallbackRequest)
        .where(
            CallbackRequest.subscriber_id == request.subscriber_id,
            CallbackRequest.status.in_(WAITING),
            # The claim's order; the id settles requests made in the same instant.
            tuple_(CallbackRequest.due_at, CallbackRequest.created_at, CallbackRequest.id)
            < tuple_(request.due_at, request.created_at, request.id),
        )
    )
    return int(ahead or 0) + 1


def estimated_call_at(
    session: Session, request: CallbackRequest, *, now: datetime | None = None
) -> datetime | None:
    """When the visitor can expect the call: None once it is happening or over.

    Those ahead in the line share the subscriber's agents, each taking as long as recent
    calls took; a closed business adds the wait for its next opening.
    """
    if request.status == RequestStatus.SCHEDULED:
        return request.due_at
    position = queue_position(session, request)
    if position is None:
        return None
    subscriber = request.subscriber
    agents = scheduling.active_agent_count(session, subscriber.id) or 1
    start = max(request.due_at, now or utcnow())
    start = scheduling.hours_of(subscriber).next_opening(start) or start
    handling = scheduling.handling_time(session, subscriber.id)
    return start + handling * ((position - 1) // agents)
