"""The admin JSON API under ``/api/v1/admin``, behind bearer tokens (see cbserver.admin_tokens).

Every call needs ``Authorization: Bearer <token>``. A token for one subscriber sees only that
subscriber: the others answer 404, as if they did not exist, and it may not create subscribers
or agents (403). Answers carry no secrets: no token hashes, no visitors' tokens, no SIP
passwords — except what its creator must be told once: a registering agent's SIP password and
a new subscriber's widget key, in the answer that creates them.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, g, jsonify, request, url_for
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session, selectinload

from cbserver import admin_tokens, audit, captcha, intake, number_policy, usage
from cbserver import agents as agents_service
from cbserver import subscribers as subscribers_service
from cbserver.errors import BadRequest, CbError, Conflict, FieldError, Invalid, NotFound
from cbserver.models import (
    Agent,
    AgentAssignment,
    ApiToken,
    CallbackRequest,
    DeniedNumber,
    RequestStatus,
    Subscriber,
)
from cbserver.numbers import E164
from cbserver.routing import shown_state
from cbserver.views import bodies
from cbserver.views.present import present
from cbserver.web import db_session, now, request_stored

blueprint = Blueprint("admin", __name__, url_prefix="/api/v1/admin")

CANCEL_REASON = "canceled by an admin"
STATUSES = tuple(status.value for status in RequestStatus)
DEFAULT_LIMIT = 50
LIMIT = (1, 200)
OFFSET = (0, 1_000_000_000)
DEFAULT_PRIORITY = 100
REALM = "cbserver admin"

# What a new subscriber may be given besides its slug, passed on as given.
SUBSCRIBER_OPTIONS = (
    "display_name",
    "country",
    "caller_id",
    "time_zone",
    "language",
    "call_order",
    "max_attempts",
    "retry_interval_seconds",
    "wrap_up_seconds",
    "inbound_number",
    "unknown_callers",
)
# A comma-separated string, as the command line takes them, or a JSON array of strings.
SUBSCRIBER_LISTS = ("allowed_countries", "allowed_origins")
SUBSCRIBER_REQUIRED = ("slug", "display_name", "country", "caller_id")
REQUEST_FILTERS = ("subscriber", "status", "phone", "created_from", "created_to", "limit", "offset")
AUDIT_FILTERS = ("subscriber", "action", "since", "limit")
USAGE_FILTERS = ("month",)

# What may be looked up at all; anything else cannot exist, and is not sent to the database.
_REQUEST_ID = re.compile(r"[0-9A-Za-z-]{1,36}")
_PHONE_PUNCTUATION = re.compile(r"[\s().\-/]")
_WHOLE = re.compile(r"[0-9]{1,12}")


class Forbidden(CbError):
    status = 403
    code = "forbidden"


# --- authentication --------------------------------------------------------------------------


def _presented() -> str | None:
    """The bearer token of the request; never a query parameter (those end up in logs)."""
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credentials.strip() or None


@blueprint.before_request
def authenticate() -> None:
    g.admin_token = admin_tokens.authenticate(db_session(), _presented())


# After authentication: who has no token learns nothing, not even what a body should hold.
blueprint.before_request(bodies.check_json_body)


@blueprint.after_request
def admin_headers(response: Response) -> Response:
    # Answers name people's phone numbers, and some carry a secret shown once: keep no copies.
    response.headers["Cache-Control"] = "no-store"
    if response.status_code == 401:
        challenge = f'Bearer realm="{REALM}"'
        if _presented() is not None:
            challenge += ', error="invalid_token"'
        response.headers["WWW-Authenticate"] = challenge
    return response


def _token() -> ApiToken:
    token: ApiToken = g.admin_token
    return token


def _scope() -> int | None:
    """The one subscriber the token may see, or None for all of them."""
    return _token().scope_subscriber_id


def _require_all_subscribers(action: str) -> None:
    if _scope() is not None:
        raise Forbidden(
            f"This token is for one subscriber only: it cannot {action}. "
            "Use a token for all subscribers."
        )


def _audit(
    session: Session, action: str, detail: str, *, subscriber: Subscriber | None = None
) -> None:
    """Record what the token did, and commit: after the service that made the change, so a
    refused change is never recorded. (The deny-list and number types record their own.)"""
    audit.record(
        session,
        _token().name,
        action,
        detail,
        subscriber_id=subscriber.id if subscriber is not None else None,
        at=now(),
    )
    session.commit()


# --- finding what the token may see ----------------------------------------------------------


def _subscriber(session: Session, slug: str, *, field: str = "subscriber") -> Subscriber:
    """The subscriber, if the token may see it; 404 alike for the unknown and the hidden."""
    missing = NotFound(
        f"there is no subscriber named {slug!r}", field=field, code="subscriber_not_found"
    )
    try:
        subscribers_service.validate_slug(slug)
        subscriber = subscribers_service.get_subscriber(session, slug)
    except subscribers_service.SubscriberError as exc:
        raise missing from exc
    scope = _scope()
    if scope is not None and subscriber.id != scope:
        raise missing
    return subscriber


def _agent_named(session: Session, name: str) -> Agent | None:
    try:
        agents_service.validate_name(name)
    except agents_service.AgentError:
        return None
    return agents_service.named(session, name)


def _agent_not_found(name: str) -> NotFound:
    return NotFound(f"there is no agent named {name!r}", field="agent", code="agent_not_found")


def _assignment(subscriber: Subscriber, agent: Agent | None) -> AgentAssignment | None:
    if agent is None:
        return None
    return next((a for a in subscriber.assignments if a.agent_id == agent.id), None)


def _callback(session: Session, request_id: str) -> CallbackRequest:
    found = session.get(CallbackRequest, request_id) if _REQUEST_ID.fullmatch(request_id) else None
    scope = _scope()
    if found is None or (scope is not None and found.subscriber_id != scope):
        raise NotFound("There is no such call-back request.", code="request_not_found")
    return found


# --- reading bodies --------------------------------------------------------------------------


def _body() -> dict[str, Any]:
    """The JSON body, of the shape its schema says (bodies.check_json_body saw to that); {} for
    an optional body left out."""
    body: dict[str, Any] = request.get_json() if request.get_data(cache=True) else {}
    return body


def _joined(value: str | list[str] | None) -> str | None:
    """Texts as the services take them: a JSON list of them comma-separated, like a string."""
    return ",".join(value) if isinstance(value, list) else value


# --- presenting ------------------------------------------------------------------------------


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _subscriber_json(subscriber: Subscriber) -> dict[str, Any]:
    return {
        "slug": subscriber.slug,
        "display_name": subscriber.display_name,
        "country": subscriber.country,
        "caller_id": subscriber.caller_id,
        "time_zone": subscriber.time_zone,
        "language": subscriber.language,
        "call_order": subscriber.call_order,
        "max_attempts": subscriber.max_attempts,
        "retry_interval_seconds": subscriber.retry_interval_seconds,
        "wrap_up_seconds": subscriber.wrap_up_seconds,
        "inbound_number": subscriber.inbound_number,
        "unknown_callers": subscriber.unknown_callers,
        "whisper_prompt": subscriber.whisper_prompt,
        # Empty: the subscriber's own country only.
        "allowed_countries": [c for c in subscriber.allowed_countries.split(",") if c],
        "allowed_origins": subscriber.allowed_origin_list,
        "number_types": number_policy.type_names(subscriber),
        "active": subscriber.active,
        "created_at": _iso(subscriber.created_at),
        # In the order they are called.
        "agents": [
            {"name": a.agent.name, "priority": a.priority, "active": a.agent.active}
            for a in subscriber.assignments
        ],
    }


def _agent_json(agent: Agent) -> dict[str, Any]:
    moment = now()
    wrap_up = agent.wrap_up_until
    return {
        "name": agent.name,
        "contact": agent.contact,
        # A registering phone has a password; it is shown only in the answer that creates it.
        "registers": agent.contact is None,
        "dtmf_mode": agent.dtmf_mode,
        "active": agent.active,
        "created_at": _iso(agent.created_at),
        "state": shown_state(agent, moment),
        "pause_reason": agent.pause_reason if agent.paused else None,
        "presence": agent.presence,
        "on_call": agent.on_call,
        "wrap_up_until": _iso(wrap_up) if wrap_up is not None and wrap_up > moment else None,
    }


def _request_summary(callback: CallbackRequest) -> dict[str, Any]:
    return {
        "id": callback.id,
        "status": callback.status,
        "subscriber": callback.subscriber.slug,
        "phone": callback.visitor_phone,
        "name": callback.visitor_name,
        "topic": callback.topic,
        "requested_time": _iso(callback.requested_time),
        "due_at": _iso(callback.due_at),
        "attempt_count": callback.attempt_count,
        "created_at": _iso(callback.created_at),
        "updated_at": _iso(callback.updated_at),
    }


# What the visitor is shown, without whatever would let its reader act as the visitor.
_VISITOR_SECRETS = ("token", "visitor_token", "status_url")


def _request_detail(session: Session, callback: CallbackRequest) -> dict[str, Any]:
    body = present(session, callback)
    for key in _VISITOR_SECRETS:
        body.pop(key, None)
    body["page_url"] = callback.page_url
    body["attempt_count"] = callback.attempt_count
    # Not the Idempotency-Key: replayed to the visitor API with the phone, it gives the token.
    for shown, attempt in zip(body["attempts"], callback.attempts, strict=True):
        shown["agent"] = attempt.agent.name if attempt.agent is not None else None
    return body


# --- subscribers -----------------------------------------------------------------------------


@blueprint.get("/subscribers")
def list_subscribers() -> Response:
    session = db_session()
    scope = _scope()
    if scope is None:
        visible = subscribers_service.list_subscribers(session)
    else:
        # The token's subscriber exists: deleting it deletes the token.
        visible = [s for s in [session.get(Subscriber, scope)] if s is not None]
    return jsonify(items=[_subscriber_json(s) for s in visible])


@blueprint.post("/subscribers")
def create_subscriber() -> tuple[Response, int, dict[str, str]]:
    _require_all_subscribers("create subscribers")
    session = db_session()
    body = _body()
    slug: str = body["slug"]
    given = {name: body.get(name) for name in SUBSCRIBER_OPTIONS}
    given.update({name: _joined(body.get(name)) for name in SUBSCRIBER_LISTS})
    options = {name: value for name, value in given.items() if value is not None}
    try:
        created = subscribers_service.add_subscriber(session, slug, **options)
    except subscribers_service.SubscriberError as exc:
        if exc.field == "slug" and _subscriber_exists(session, slug):
            raise Conflict(str(exc), field="slug", code="subscriber_exists") from exc
        raise Invalid(str(exc), field=exc.field) from exc
    _audit(session, "subscriber_added", f"added subscriber {created.slug}", subscriber=created)
    answer = _subscriber_json(created)
    # Shown here as `cbserver subscriber add` shows it, and not in the other answers.
    answer["widget_key"] = created.widget_key
    location = url_for("admin.get_subscriber", slug=created.slug)
    return jsonify(answer), 201, {"Location": location}


def _subscriber_exists(session: Session, slug: str) -> bool:
    try:
        subscribers_service.get_subscriber(session, subscribers_service.validate_slug(slug))
    except subscribers_service.SubscriberError:
        return False
    return True


@blueprint.get("/subscribers/<slug>")
def get_subscriber(slug: str) -> Response:
    return jsonify(_subscriber_json(_subscriber(db_session(), slug)))


@blueprint.get("/subscribers/<slug>/schedule")
def get_schedule(slug: str) -> Response:
    return jsonify(subscribers_service.schedule_of(_subscriber(db_session(), slug)))


@blueprint.patch("/subscribers/<slug>/schedule")
def change_schedule(slug: str) -> Response:
    """Opening hours, slots, deadlines, retry rules, the agents' wrap-up time and who reaches
    the agents calling in; fields left out stay as they are."""
    session = db_session()
    subscriber = _subscriber(session, slug)
    body = _body()
    try:
        subscribers_service.set_schedule(session, subscriber.slug, body, now=now())
    except subscribers_service.SubscriberError as exc:
        session.rollback()
        raise Invalid(str(exc), field=exc.field) from exc
    _audit(
        session,
        "schedule_changed",
        f"changed the schedule of {subscriber.slug}: {', '.join(sorted(body))}",
        subscriber=subscriber,
    )
    return jsonify(subscribers_service.schedule_of(subscriber))


@blueprint.get("/subscribers/<slug>/usage")
def get_usage(slug: str) -> Response:
    """Call-back attempts, connected calls and billable minutes in a month (default: this
    one), every day of it in the subscriber's time zone."""
    session = db_session()
    subscriber = _subscriber(session, slug)
    query = _query(USAGE_FILTERS)
    try:
        month = (
            usage.parse_month(query["month"])
            if "month" in query
            else usage.this_month(subscriber, now())
        )
    except usage.UsageError as exc:
        raise Invalid(str(exc), field=exc.field, code="bad_month") from exc
    return jsonify(usage.month_usage(session, subscriber, month).as_json())


# --- a CAPTCHA on the subscriber's form and widget (see captcha.py) ---------------------------


@blueprint.get("/subscribers/<slug>/captcha")
def get_captcha(slug: str) -> Response:
    return jsonify(captcha.shown(_subscriber(db_session(), slug)))


@blueprint.put("/subscribers/<slug>/captcha")
def set_captcha(slug: str) -> Response:
    """Turn the subscriber's CAPTCHA on (a provider, its site key and secret) or off
    (provider null). The secret is taken, never shown; left out, the one set before stays.
    Only a token for all subscribers may say where answers are checked: the server posts to
    that address, which is not a subscriber's to point at the network around it."""
    session = db_session()
    subscriber = _subscriber(session, slug)
    body = _body()
    if body.get("verify_url") is not None:
        _require_all_subscribers("set where CAPTCHA answers are checked")
    try:
        captcha.configure(
            subscriber,
            provider=body["provider"],
            site_key=body.get("site_key"),
            secret=body.get("secret"),
            verify_url=body.get("verify_url"),
        )
    except captcha.CaptchaError as exc:
        session.rollback()
        raise Invalid(str(exc), field=exc.field.removeprefix("captcha_")) from exc
    session.commit()
    _audit(
        session,
        "captcha_changed",
        f"CAPTCHA of {subscriber.slug}: {captcha.describe(subscriber)}",
        subscriber=subscriber,
    )
    return jsonify(captcha.shown(subscriber))


# --- agents ----------------------------------------------------------------------------------


@blueprint.get("/agents")
def list_agents() -> Response:
    session = db_session()
    scope = _scope()
    if scope is None:
        listed = agents_service.list_agents(session)
    else:
        # A token for one subscriber sees the agents who serve it, no others.
        listed = list(
            session.scalars(
                select(Agent)
                .join(AgentAssignment, AgentAssignment.agent_id == Agent.id)
                .where(AgentAssignment.subscriber_id == scope)
                .order_by(Agent.name)
            )
        )
    return jsonify(items=[_agent_json(a) for a in listed])


@blueprint.post("/agents")
def create_agent() -> tuple[Response, int]:
    _require_all_subscribers("create agents")
    session = db_session()
    body = _body()
    name = body["name"]
    contact = body.get("contact")
    dtmf_mode = body.get("dtmf_mode") or "rfc4733"
    try:
        created = agents_service.add_agent(session, name, contact=contact, dtmf_mode=dtmf_mode)
    except agents_service.AgentError as exc:
        if exc.field == "name" and _agent_named(session, name) is not None:
            raise Conflict(str(exc), field="name", code="agent_exists") from exc
        raise Invalid(str(exc), field=exc.field) from exc
    phone = f"at {created.agent.contact}" if created.agent.contact else "(a registering phone)"
    _audit(session, "agent_added", f"added agent {created.agent.name} {phone}")
    # TODO(asterisk): a running Asterisk learns of the agent only when the command line next
    # syncs agents (`cbserver agent add`, `cbserver asterisk start`); see the report.
    answer = _agent_json(created.agent)
    answer["sip_password"] = created.sip_password
    return jsonify(answer), 201


# --- assignments -----------------------------------------------------------------------------


@blueprint.put("/subscribers/<slug>/agents/<agent>")
def assign_agent(slug: str, agent: str) -> tuple[Response, int]:
    session = db_session()
    subscriber = _subscriber(session, slug)
    priority = _body().get("priority")
    found = _agent_named(session, agent)
    current = _assignment(subscriber, found)
    if current is None and _scope() is not None:
        # Said alike whether the agent exists or not: agents serving others stay unseen.
        raise Forbidden(
            "A token for one subscriber can change the priority of the agents who serve it, "
            "but not assign others. Use a token for all subscribers."
        )
    if found is None:
        raise _agent_not_found(agent)
    if priority is None:
        priority = current.priority if current is not None else DEFAULT_PRIORITY
    try:
        subscribers_service.assign_agent(session, subscriber.slug, found.name, priority=priority)
    except subscribers_service.SubscriberError as exc:
        raise Invalid(str(exc), field=exc.field) from exc
    _audit(
        session,
        "agent_assigned",
        f"assigned agent {found.name} to {subscriber.slug} (priority {priority})",
        subscriber=subscriber,
    )
    return jsonify(_subscriber_json(subscriber)), 200 if current is not None else 201


@blueprint.delete("/subscribers/<slug>/agents/<agent>")
def unassign_agent(slug: str, agent: str) -> Response:
    session = db_session()
    subscriber = _subscriber(session, slug)
    found = _agent_named(session, agent)
    if found is None or (_scope() is not None and _assignment(subscriber, found) is None):
        raise _agent_not_found(agent)
    if not subscribers_service.unassign_agent(session, subscriber.slug, found.name):
        raise NotFound(
            f"agent {found.name!r} does not serve {subscriber.slug!r}",
            field="agent",
            code="not_assigned",
        )
    _audit(
        session,
        "agent_unassigned",
        f"unassigned agent {found.name} from {subscriber.slug}",
        subscriber=subscriber,
    )
    return jsonify(_subscriber_json(subscriber))


# --- call-back requests ----------------------------------------------------------------------


def _query(known: tuple[str, ...] = REQUEST_FILTERS) -> dict[str, str]:
    """The request's query parameters, each given at most once; empty ones left out."""
    unknown = sorted(set(request.args) - set(known))
    if unknown:
        raise BadRequest(
            f"Unknown query parameter: {unknown[0]} (known: {', '.join(known)}).",
            field=unknown[0],
            code="unknown_parameter",
        )
    values = {}
    for name in request.args:
        given = request.args.getlist(name)
        if name == "status":
            values[name] = ",".join(given)  # status=a&status=b is status=a,b
        elif len(given) > 1:
            raise BadRequest(f"Give {name} only once.", field=name, code="repeated_parameter")
        else:
            values[name] = given[0]
    return {name: value.strip() for name, value in values.items() if value.strip()}


def _statuses(text: str) -> list[str]:
    listed = [s.strip() for s in text.split(",") if s.strip()]
    for status in listed:
        if status not in STATUSES:
            raise Invalid(
                f"unknown status {status!r}: give one or more (comma-separated) of "
                f"{', '.join(STATUSES)}",
                field="status",
                code="unknown_status",
            )
    return listed


def _phone(text: str) -> str:
    phone = _PHONE_PUNCTUATION.sub("", text)
    if not E164.fullmatch(phone):
        raise Invalid(
            f"phone {text!r} is not a number in E.164 form, like +12015550123 "
            "(in a URL, write the + as %2B)",
            field="phone",
            code="bad_phone",
        )
    return phone


def _moment(name: str, text: str) -> datetime:
    message = (
        f"{name} must be an ISO 8601 time with a time zone, like 2026-11-25T09:00:00Z "
        "(in a URL, write a + as %2B)"
    )
    try:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            raise Invalid(message, field=name, code="bad_time")
        return moment.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise Invalid(message, field=name, code="bad_time") from exc


def _bounded(name: str, text: str, bounds: tuple[int, int]) -> int:
    low, high = bounds
    if not _WHOLE.fullmatch(text) or not low <= int(text) <= high:
        raise Invalid(
            f"{name} must be a whole number from {low} to {high}", field=name, code="bad_number"
        )
    return int(text)


def _request_conditions(session: Session, query: dict[str, str]) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    scope = _scope()
    if scope is not None:
        conditions.append(CallbackRequest.subscriber_id == scope)
    if "subscriber" in query:
        subscriber = _subscriber(session, query["subscriber"])
        conditions.append(CallbackRequest.subscriber_id == subscriber.id)
    if "status" in query and (statuses := _statuses(query["status"])):
        conditions.append(CallbackRequest.status.in_(statuses))
    if "phone" in query:
        conditions.append(CallbackRequest.visitor_phone == _phone(query["phone"]))
    start = _moment("created_from", query["created_from"]) if "created_from" in query else None
    end = _moment("created_to", query["created_to"]) if "created_to" in query else None
    if start is not None and end is not None and end < start:
        raise Invalid(
            "created_to must not be before created_from", field="created_to", code="bad_range"
        )
    if start is not None:
        conditions.append(CallbackRequest.created_at >= start)
    if end is not None:
        conditions.append(CallbackRequest.created_at < end)
    return conditions


@blueprint.get("/requests")
def list_requests() -> Response:
    session = db_session()
    query = _query()
    limit = _bounded("limit", query["limit"], LIMIT) if "limit" in query else DEFAULT_LIMIT
    offset = _bounded("offset", query["offset"], OFFSET) if "offset" in query else 0
    conditions = _request_conditions(session, query)
    total = session.scalar(select(func.count()).select_from(CallbackRequest).where(*conditions))
    page = session.scalars(
        select(CallbackRequest)
        .where(*conditions)
        .order_by(CallbackRequest.created_at.desc(), CallbackRequest.id.desc())
        .limit(limit)
        .offset(offset)
        .options(selectinload(CallbackRequest.subscriber))
    )
    return jsonify(
        items=[_request_summary(c) for c in page],
        total=int(total or 0),
        limit=limit,
        offset=offset,
    )


@blueprint.get("/requests/<request_id>")
def get_request(request_id: str) -> Response:
    session = db_session()
    return jsonify(_request_detail(session, _callback(session, request_id)))


@blueprint.post("/requests/<request_id>/reschedule")
def reschedule_request(request_id: str) -> Response:
    session = db_session()
    callback = _callback(session, request_id)
    when = _body()["when"]
    intake.reschedule(session, callback, when, "moved by an admin", now=now())
    request_stored(True)
    _audit(
        session,
        "request_moved",
        f"moved request {callback.id} to {when.strip()}",
        subscriber=callback.subscriber,
    )
    session.expire(callback, ["events"])
    return jsonify(_request_detail(session, callback))


@blueprint.post("/requests/<request_id>/cancel")
def cancel_request(request_id: str) -> Response:
    session = db_session()
    callback = _callback(session, request_id)
    intake.cancel(session, callback, CANCEL_REASON)
    _audit(
        session,
        "request_canceled",
        f"canceled request {callback.id}",
        subscriber=callback.subscriber,
    )
    session.expire(callback, ["events"])
    return jsonify(_request_detail(session, callback))


# --- which numbers are called ------------------------------------------------------------------


def _number_types_json(subscriber: Subscriber) -> dict[str, Any]:
    return {
        "number_types": number_policy.type_names(subscriber),
        "default": subscriber.number_types is None,
    }


@blueprint.get("/subscribers/<slug>/number-types")
def get_number_types(slug: str) -> Response:
    return jsonify(_number_types_json(_subscriber(db_session(), slug)))


@blueprint.put("/subscribers/<slug>/number-types")
def set_number_types(slug: str) -> Response:
    """Which kinds of numbers the subscriber's visitors may give; null for the default."""
    # Allowing premium-rate numbers costs whoever pays the trunk: not for a business's token.
    _require_all_subscribers("change which kinds of numbers are called")
    session = db_session()
    subscriber = _subscriber(session, slug)
    try:
        number_policy.set_number_types(
            session,
            subscriber,
            _joined(_body()["number_types"]),
            actor=_token().name,
            at=now(),
        )
    except number_policy.PolicyError as exc:
        raise Invalid(str(exc), field=exc.field, code="bad_number_types") from exc
    session.commit()
    return jsonify(_number_types_json(subscriber))


# --- the deny-list -----------------------------------------------------------------------------


def _denied_json(session: Session, entry: DeniedNumber) -> dict[str, Any]:
    owner = session.get(Subscriber, entry.subscriber_id) if entry.subscriber_id else None
    return {
        "id": entry.id,
        "pattern": entry.pattern,
        "prefix": entry.is_prefix,
        # None: every subscriber.
        "subscriber": owner.slug if owner is not None else None,
        "reason": entry.reason,
        "created_at": _iso(entry.created_at),
    }


@blueprint.get("/denied-numbers")
def list_denied_numbers() -> Response:
    """Every entry; a token for one subscriber: those for every subscriber, and its own."""
    session = db_session()
    entries = number_policy.list_entries(session, subscriber_id=_scope())
    return jsonify(items=[_denied_json(session, e) for e in entries])


@blueprint.post("/denied-numbers")
def add_denied_number() -> tuple[Response, int]:
    session = db_session()
    body = _body()
    slug = body.get("subscriber")
    scope = _scope()
    owner: Subscriber | None = None
    if slug is not None:
        owner = _subscriber(session, slug)
    elif scope is not None:
        # A business's token denies numbers for that business.
        owner = session.get(Subscriber, scope)
    try:
        entry = number_policy.validate_entry(
            body["pattern"], prefix=bool(body.get("prefix")), reason=body.get("reason") or ""
        )
        denied = number_policy.add_entry(session, entry, owner, actor=_token().name, at=now())
    except number_policy.AlreadyDenied as exc:
        raise Conflict(str(exc), field=exc.field, code="denied_number_exists") from exc
    except number_policy.PolicyError as exc:
        raise Invalid(str(exc), field=exc.field, code=f"bad_{exc.field}") from exc
    session.commit()
    return jsonify(_denied_json(session, denied)), 201


@blueprint.delete("/denied-numbers/<entry_id>")
def remove_denied_number(entry_id: str) -> Response:
    session = db_session()
    found = None
    if _WHOLE.fullmatch(entry_id):
        found = number_policy.entry_by_id(session, int(entry_id))
    scope = _scope()
    if found is None or (scope is not None and found.subscriber_id not in (None, scope)):
        raise NotFound(
            f"there is no deny-list entry with id {entry_id!r}",
            field="id",
            code="denied_number_not_found",
        )
    if scope is not None and found.subscriber_id is None:
        raise Forbidden(
            "This entry is for every subscriber: a token for one subscriber can read it but not "
            "remove it. Use a token for all subscribers."
        )
    shown = _denied_json(session, found)
    number_policy.remove_entry(session, found, actor=_token().name, at=now())
    session.commit()
    return jsonify(shown)


# --- the audit log -----------------------------------------------------------------------------


@blueprint.get("/audit")
def list_audit_events() -> Response:
    """What admins did and what was refused, newest first; a token for one subscriber sees
    only that subscriber's rows."""
    session = db_session()
    query = _query(AUDIT_FILTERS)
    limit = _bounded("limit", query["limit"], LIMIT) if "limit" in query else DEFAULT_LIMIT
    # Within the token's scope: _subscriber answers 404 for any other.
    subscriber_id = (
        _subscriber(session, query["subscriber"]).id if "subscriber" in query else _scope()
    )
    try:
        actions = audit.action_codes(query["action"]) if "action" in query else None
    except FieldError as exc:
        raise Invalid(str(exc), field=exc.field, code="bad_action") from exc
    since = _moment("since", query["since"]) if "since" in query else None
    rows = audit.events(
        session, limit=limit, subscriber_id=subscriber_id, actions=actions, since=since
    )
    items = [
        {
            "id": event.id,
            "at": _iso(event.at),
            "actor": event.actor,
            "action": event.action,
            "subscriber": slug,
            "detail": event.detail,
        }
        for event, slug in rows
    ]
    return jsonify(items=items, limit=limit)
