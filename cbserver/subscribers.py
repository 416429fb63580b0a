"""Subscribers: the businesses whose visitors ask for call-backs, and the agents who serve them."""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import NumberParseException
from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from cbserver import agents
from cbserver.errors import FieldError
from cbserver.hours import HoursError, OpeningHours
from cbserver.models import (
    Agent,
    AgentAssignment,
    CallOrder,
    OutsideHours,
    Subscriber,
    UnknownCallers,
    utcnow,
)
from cbserver.retries import RetryRuleError, parse_rules
from cbserver.scheduling import replan_waiting

LANGUAGES = ("en", "de")
CALL_ORDERS = tuple(order.value for order in CallOrder)
UNKNOWN_CALLERS = tuple(choice.value for choice in UnknownCallers)
MAX_ATTEMPTS = (1, 10)
RETRY_INTERVAL_SECONDS = (30, 86400)
WRAP_UP_SECONDS = (0, 3600)
PRIORITY = (0, 1000)
MAX_DISPLAY_NAME = 120
MAX_TIME_ZONE = 64
MAX_ALLOWED_COUNTRIES = 200
DEFAULT_PORTS = {"http": 80, "https": 443}

_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{1,39}$")
# ASCII only: phonenumbers would quietly read look-alike digits (fullwidth, Arabic-Indic).
_CALLER_ID = re.compile(r"\+[0-9()\-. ]{3,30}")
_HOST_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST = re.compile(rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})*")


class SubscriberError(FieldError):
    """A subscriber or assignment was refused."""


# --- validation ----------------------------------------------------------------------------


def validate_slug(slug: str) -> str:
    if not _SLUG.fullmatch(slug):
        raise SubscriberError(
            "slug",
            f"subscriber slug {slug!r} must be 2 to 40 lowercase letters, digits and '-', "
            "starting with a letter or digit",
        )
    return slug


def validate_display_name(name: str) -> str:
    text = unicodedata.normalize("NFC", name).strip()
    if not text:
        raise SubscriberError("display_name", "the subscriber's name must not be empty")
    if len(text) > MAX_DISPLAY_NAME:
        raise SubscriberError(
            "display_name", f"the subscriber's name is too long: at most {MAX_DISPLAY_NAME}"
        )
    if any(unicodedata.category(c) in ("Cc", "Cf") for c in text):
        raise SubscriberError("display_name", "the subscriber's name contains control characters")
    return text


def _region(code: str, field: str) -> str:
    region = code.strip().upper()
    if not (len(region) == 2 and region.isascii() and region.isalpha()) or (
        region not in phonenumbers.SUPPORTED_REGIONS
    ):
        raise SubscriberError(
            field, f"country {code!r} is not an ISO 3166 alpha-2 country code like US or DE"
        )
    return region


def validate_country(country: str) -> str:
    return _region(country, "country")


def validate_caller_id(caller_id: str, field: str = "caller_id", what: str = "caller ID") -> str:
    """The caller ID (or another of the business's numbers, ``field``) in E.164 (+ and country
    code required)."""
    text = caller_id.strip()
    message = f"{what} {caller_id!r} is not a valid phone number in E.164 form, like +12015550100"
    if not _CALLER_ID.fullmatch(text):
        raise SubscriberError(field, message)
    try:
        number = phonenumbers.parse(text, None)
    except NumberParseException as exc:
        raise SubscriberError(field, message) from exc
    if not phonenumbers.is_valid_number(number):
        raise SubscriberError(field, message)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def validate_inbound_number(number: str | None) -> str | None:
    """The inbound number in E.164, or None for none."""
    if number is None:
        return None
    return validate_caller_id(number, "inbound_number", "inbound number")


def validate_time_zone(time_zone: str) -> str:
    message = f"time zone {time_zone!r} is not an IANA time zone like Europe/Berlin or UTC"
    if not time_zone or len(time_zone) > MAX_TIME_ZONE:
        raise SubscriberError("time_zone", message)
    try:
        ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise SubscriberError("time_zone", message) from exc
    return time_zone


def validate_language(language: str) -> str:
    if language not in LANGUAGES:
        raise SubscriberError("language", f"language must be one of {', '.join(LANGUAGES)}")
    return language


def validate_call_order(call_order: str) -> str:
    if call_order not in CALL_ORDERS:
        raise SubscriberError("call_order", f"call order must be one of {', '.join(CALL_ORDERS)}")
    return call_order


def validate_unknown_callers(unknown_callers: str) -> str:
    if unknown_callers not in UNKNOWN_CALLERS:
        raise SubscriberError(
            "unknown_callers", f"unknown_callers must be one of {', '.join(UNKNOWN_CALLERS)}"
        )
    return unknown_callers


def _in_range(value: int, bounds: tuple[int, int], field: str, what: str) -> int:
    low, high = bounds
    # bool is an int: refuse it, it is never what was meant.
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SubscriberError(field, f"{what} must be a whole number from {low} to {high}")
    return value


def validate_allowed_countries(countries: str) -> str:
    """A comma-separated list of countries, upper case, without repeats; "" for none."""
    listed: list[str] = []
    for item in countries.split(","):
        if item.strip():
            region = _region(item, "allowed_countries")
            if region not in listed:
                listed.append(region)
    text = ",".join(listed)
    if len(text) > MAX_ALLOWED_COUNTRIES:
        raise SubscriberError(
            "allowed_countries", f"allowed countries: at most {MAX_ALLOWED_COUNTRIES} characters"
        )
    return text


def normalise_origin(origin: str) -> str:
    """A web origin as browsers send it: lower case, no default port, no trailing slash."""
    text = origin.strip()
    message = (
        f"origin {origin!r} is not a web origin like https://www.example.com "
        "(http or https, a host and an optional port, no path)"
    )
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise SubscriberError("allowed_origins", message) from exc
    host = parts.hostname or ""
    if (
        parts.scheme.lower() not in DEFAULT_PORTS
        or parts.path not in ("", "/")
        or "?" in text
        or "#" in text
        or "@" in parts.netloc
        or not host.isascii()
        or (port is not None and not 0 < port < 65536)
    ):
        raise SubscriberError("allowed_origins", message)
    if ":" in host:
        try:
            host = f"[{ipaddress.IPv6Address(host).compressed}]"
        except ValueError as exc:
            raise SubscriberError("allowed_origins", message) from exc
    elif not _HOST.fullmatch(host):
        raise SubscriberError("allowed_origins", message)
    scheme = parts.scheme.lower()
    suffix = "" if port is None or port == DEFAULT_PORTS[scheme] else f":{port}"
    return f"{scheme}://{host}{suffix}"


def validate_allowed_origins(origins: str) -> str:
    """A comma-separated list of normalised origins, without repeats; "" for none."""
    listed: list[str] = []
    for item in origins.split(","):
        if item.strip():
            origin = normalise_origin(item)
            if origin not in listed:
                listed.append(origin)
    return ",".join(listed)


# --- subscribers ---------------------------------------------------------------------------


def add_subscriber(
    session: Session,
    slug: str,
    *,
    display_name: str,
    country: str,
    caller_id: str,
    time_zone: str = "UTC",
    language: str = "en",
    call_order: str = CallOrder.AGENT_FIRST.value,
    max_attempts: int = 3,
    retry_interval_seconds: int = 300,
    wrap_up_seconds: int = 0,
    allowed_countries: str = "",
    allowed_origins: str = "",
    inbound_number: str | None = None,
    unknown_callers: str = UnknownCallers.AGENTS.value,
) -> Subscriber:
    """Validate and store a subscriber (committed); SubscriberError names what is wrong."""
    subscriber = Subscriber(
        slug=validate_slug(slug),
        display_name=validate_display_name(display_name),
        country=validate_country(country),
        caller_id=validate_caller_id(caller_id),
        time_zone=validate_time_zone(time_zone),
        language=validate_language(language),
        call_order=validate_call_order(call_order),
        max_attempts=_in_range(max_attempts, MAX_ATTEMPTS, "max_attempts", "attempts"),
        retry_interval_seconds=_in_range(
            retry_interval_seconds,
            RETRY_INTERVAL_SECONDS,
            "retry_interval_seconds",
            "the retry interval in seconds",
        ),
        wrap_up_seconds=_in_range(
            wrap_up_seconds, WRAP_UP_SECONDS, "wrap_up_seconds", "the wrap-up time in seconds"
        ),
        allowed_countries=validate_allowed_countries(allowed_countries),
        allowed_origins=validate_allowed_origins(allowed_origins),
        inbound_number=validate_inbound_number(inbound_number),
        unknown_callers=validate_unknown_callers(unknown_callers),
    )
    duplicate = SubscriberError("slug", f"a subscriber named {slug!r} already exists")
    if _find(session, slug) is not None:
        raise duplicate
    _check_numbers_free(session, subscriber.slug, subscriber.caller_id, subscriber.inbound_number)
    session.add(subscriber)
    try:
        session.commit()
    except IntegrityError as exc:
        # A concurrent add of the same slug (or inbound number) won the unique constraint.
        session.rollback()
        if _find(session, slug) is not None:
            raise duplicate from exc
        _check_numbers_free(
            session, subscriber.slug, subscriber.caller_id, subscriber.inbound_number
        )
        raise
    return subscriber


def _check_numbers_free(session: Session, slug: str, caller_id: str, inbound: str | None) -> None:
    """Refuse a number that would make calls in reach two businesses: the inbound number may be
    no business's caller ID or inbound number, nor the caller ID another's inbound number."""
    others = select(Subscriber.slug).where(Subscriber.slug != slug).limit(1)
    if inbound is not None:
        if inbound == caller_id:
            raise SubscriberError(
                "inbound_number",
                f"inbound number {inbound!r} is already {slug}'s number: its caller ID",
            )
        owner = session.scalar(
            others.where(or_(Subscriber.caller_id == inbound, Subscriber.inbound_number == inbound))
        )
        if owner is not None:
            raise SubscriberError(
                "inbound_number", f"inbound number {inbound!r} is already {owner}'s number"
            )
    owner = session.scalar(others.where(Subscriber.inbound_number == caller_id))
    if owner is not None:
        raise SubscriberError("caller_id", f"caller ID {caller_id!r} is already {owner}'s number")


def _find(session: Session, slug: str) -> Subscriber | None:
    return session.scalar(select(Subscriber).where(Subscriber.slug == slug))


def find_active(session: Session, slug: object) -> Subscriber | None:
    """The active subscriber called ``slug``, or None. A name no subscriber can have is never
    sent to the database (PostgreSQL answers a NUL in text with an error, not "no rows")."""
    if not isinstance(slug, str) or not _SLUG.fullmatch(slug):
        return None
    return session.scalar(select(Subscriber).where(Subscriber.slug == slug, Subscriber.active))


def get_subscriber(session: Session, slug: str) -> Subscriber:
    """The subscriber, active or not; SubscriberError (field "subscriber") when unknown."""
    subscriber = _find(session, slug)
    if subscriber is None:
        raise SubscriberError("subscriber", f"there is no subscriber named {slug!r}")
    return subscriber


def list_subscribers(session: Session) -> list[Subscriber]:
    """All subscribers by slug, with their assignments (in priority order) and agents loaded."""
    query = (
        select(Subscriber)
        .order_by(Subscriber.slug)
        .options(selectinload(Subscriber.assignments).selectinload(AgentAssignment.agent))
    )
    return list(session.scalars(query))


# --- assignments ---------------------------------------------------------------------------


def _get_agent(session: Session, name: str) -> Agent:
    agent = agents.named(session, name)
    if agent is None:
        raise SubscriberError("agent", f"there is no agent named {name!r}")
    return agent


def _assignment(session: Session, subscriber: Subscriber, agent: Agent) -> AgentAssignment | None:
    return session.scalar(
        select(AgentAssignment).where(
            AgentAssignment.subscriber_id == subscriber.id, AgentAssignment.agent_id == agent.id
        )
    )


def assign_agent(
    session: Session, subscriber_slug: str, agent_name: str, *, priority: int = 100
) -> AgentAssignment:
    """Let the agent serve the subscriber (lower priority is called first); committed.

    Assigning an agent that is already assigned sets its priority.
    """
    _in_range(priority, PRIORITY, "priority", "priority")
    subscriber = get_subscriber(session, subscriber_slug)
    agent = _get_agent(session, agent_name)
    assignment = _assignment(session, subscriber, agent)
    if assignment is None:
        assignment = AgentAssignment(
            subscriber_id=subscriber.id, agent_id=agent.id, priority=priority
        )
        session.add(assignment)
    else:
        assignment.priority = priority
    try:
        session.commit()
    except IntegrityError:
        # A concurrent assign inserted the same pair first: set the priority on its row.
        session.rollback()
        assignment = _assignment(session, subscriber, agent)
        if assignment is None:
            raise
        assignment.priority = priority
        session.commit()
    # The loaded list (if any) is in the old order: read it again on next access.
    session.expire(subscriber, ["assignments"])
    return assignment


def unassign_agent(session: Session, subscriber_slug: str, agent_name: str) -> bool:
    """Stop the agent serving the subscriber; committed. False if it was not assigned."""
    subscriber = get_subscriber(session, subscriber_slug)
    agent = _get_agent(session, agent_name)
    assignment = _assignment(session, subscriber, agent)
    if assignment is None:
        return False
    session.delete(assignment)
    session.commit()
    session.expire(subscriber, ["assignments"])
    return True


# --- when the subscriber takes call-backs ----------------------------------------------------

SLOT_MINUTES = (5, 240)
SLOT_CAPACITY = (1, 1000)
BOOKING_DAYS = (1, 60)
DEADLINE_DAYS = (0, 30)
SCHEDULE_FIELDS = (
    "hours",
    "outside_hours",
    "slot_minutes",
    "slot_capacity",
    "booking_days",
    "deadline_days",
    "retry_rules",
    "wrap_up_seconds",
    "inbound_number",
    "unknown_callers",
)
OUTSIDE_HOURS = tuple(choice.value for choice in OutsideHours)


def schedule_of(subscriber: Subscriber) -> dict[str, Any]:
    """The subscriber's scheduling settings as the admin API and the CLI show them."""
    return {
        "time_zone": subscriber.time_zone,
        # None: open around the clock.
        "hours": OpeningHours.parse(subscriber.time_zone, subscriber.hours).to_json(),
        "outside_hours": subscriber.outside_hours,
        "slot_minutes": subscriber.slot_minutes,
        # None: one place per active agent.
        "slot_capacity": subscriber.slot_capacity,
        "booking_days": subscriber.booking_days,
        "deadline_days": subscriber.deadline_days,
        "max_attempts": subscriber.max_attempts,
        "retry_interval_seconds": subscriber.retry_interval_seconds,
        "retry_rules": subscriber.retry_rules or {},
        # 0: the agent is offered the next call-back as soon as one ends.
        "wrap_up_seconds": subscriber.wrap_up_seconds,
        # None: calls in reach the business by its caller ID only.
        "inbound_number": subscriber.inbound_number,
        # What a caller without a waiting call-back gets: the agents, or a message.
        "unknown_callers": subscriber.unknown_callers,
    }


def set_schedule(
    session: Session, slug: str, changes: Mapping[str, Any], *, now: datetime | None = None
) -> Subscriber:
    """Change some of the scheduling settings (validated first, all or none); committed.
    Requests waiting for a time the new hours close are moved to the next opening."""
    subscriber = get_subscriber(session, slug)
    unknown = sorted(set(changes) - set(SCHEDULE_FIELDS))
    if unknown:
        raise SubscriberError(unknown[0], f"{unknown[0]} is not a scheduling setting")
    checked: dict[str, Any] = {}
    if "hours" in changes:
        try:
            checked["hours"] = OpeningHours.parse(subscriber.time_zone, changes["hours"]).to_json()
        except HoursError as exc:
            raise SubscriberError("hours", str(exc)) from exc
    if "outside_hours" in changes:
        if changes["outside_hours"] not in OUTSIDE_HOURS:
            raise SubscriberError(
                "outside_hours", f"outside_hours must be one of {', '.join(OUTSIDE_HOURS)}"
            )
        checked["outside_hours"] = changes["outside_hours"]
    numbers = {
        "slot_minutes": (SLOT_MINUTES, "the slot length in minutes"),
        "booking_days": (BOOKING_DAYS, "the booking window in days"),
        "deadline_days": (DEADLINE_DAYS, "the days a request may wait past its day"),
        "wrap_up_seconds": (WRAP_UP_SECONDS, "the wrap-up time in seconds"),
    }
    for name, (bounds, what) in numbers.items():
        if name in changes:
            checked[name] = _in_range(changes[name], bounds, name, what)
    if "slot_capacity" in changes:
        capacity = changes["slot_capacity"]
        checked["slot_capacity"] = (
            None
            if capacity is None
            else _in_range(capacity, SLOT_CAPACITY, "slot_capacity", "places per slot")
        )
    if "retry_rules" in changes:
        try:
            checked["retry_rules"] = parse_rules(changes["retry_rules"]) or None
        except RetryRuleError as exc:
            raise SubscriberError("retry_rules", str(exc)) from exc
    if "inbound_number" in changes:
        checked["inbound_number"] = _free_inbound_number(
            session, subscriber, changes["inbound_number"]
        )
    if "unknown_callers" in changes:
        checked["unknown_callers"] = validate_unknown_callers(changes["unknown_callers"])
    for name, value in checked.items():
        setattr(subscriber, name, value)
    if "hours" in checked:
        session.flush()
        replan_waiting(session, subscriber, now or utcnow())
    try:
        session.commit()
    except IntegrityError:
        # A concurrent change gave the same inbound number to another subscriber first.
        session.rollback()
        if "inbound_number" in checked:
            _free_inbound_number(session, subscriber, checked["inbound_number"])
        raise
    return subscriber


def _free_inbound_number(session: Session, subscriber: Subscriber, number: object) -> str | None:
    """The inbound number asked for, in E.164, if no other business has it; None for none."""
    if number is not None and not isinstance(number, str):
        raise SubscriberError(
            "inbound_number", "the inbound number must be a phone number in E.164 form or none"
        )
    inbound = validate_inbound_number(number)
    _check_numbers_free(session, subscriber.slug, subscriber.caller_id, inbound)
    return inbound
