"""Typed models. The database is the durable truth of everything cbserver knows."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC in, aware UTC out, on every database (SQLite would hand back naive times)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"refusing a naive datetime {value!r}: give it a time zone")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def new_request_id() -> str:
    return str(uuid.uuid4())


def new_secret() -> str:
    return secrets.token_urlsafe(32)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class RequestStatus(StrEnum):
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    DIALING_AGENT = "dialing_agent"
    DIALING_VISITOR = "dialing_visitor"
    CONNECTED = "connected"
    RETRY_WAIT = "retry_wait"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"
    EXPIRED = "expired"


# A visitor has at most one of these per subscriber: a second submission finds it.
OPEN_STATUSES = (
    RequestStatus.SCHEDULED,
    RequestStatus.QUEUED,
    RequestStatus.DIALING_AGENT,
    RequestStatus.DIALING_VISITOR,
    RequestStatus.CONNECTED,
    RequestStatus.RETRY_WAIT,
)
_OPEN_SQL = "status IN (" + ", ".join(f"'{s.value}'" for s in OPEN_STATUSES) + ")"


class OutsideHours(StrEnum):
    """What an "as soon as possible" request made while the business is closed becomes."""

    SCHEDULE = "schedule"
    REFUSE = "refuse"


class UnknownCallers(StrEnum):
    """What a call in from someone without a waiting call-back gets (see dialplan/agi.py)."""

    AGENTS = "agents"
    MESSAGE = "message"


class CallOrder(StrEnum):
    AGENT_FIRST = "agent_first"
    VISITOR_FIRST = "visitor_first"


class Agent(Base):
    """A person at a SIP phone who takes call-backs. ``name`` is also the PJSIP endpoint."""

    __tablename__ = "agents"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(40), unique=True)
    # A fixed phone or test peer has a contact URI; a registering phone has a password.
    contact: Mapped[str | None] = mapped_column(String(255))
    sip_password: Mapped[str | None] = mapped_column(String(128))
    dtmf_mode: Mapped[str] = mapped_column(String(16), default="rfc4733")
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    # As the worker last saw it over AMI (see ami.py): available, ringing, in_use or offline;
    # None until seen.
    presence: Mapped[str | None] = mapped_column(String(20))
    presence_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # Set by the agent (console or CLI): offered nothing until available again.
    paused: Mapped[bool] = mapped_column(default=False, server_default=false())
    pause_reason: Mapped[str | None] = mapped_column(String(100))
    # The call-back request this agent is rung for or talks in: one at a time (see routing.py).
    on_call: Mapped[str | None] = mapped_column(String(36), index=True)
    wrap_up_until: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # When the agent's last call-back ended; None: none yet, the longest idle of all.
    idle_since: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # The web console's password (werkzeug's salted hash); None: the agent cannot log in.
    console_password_hash: Mapped[str | None] = mapped_column(String(255))

    def __repr__(self) -> str:
        return f"Agent(name={self.name!r}, contact={self.contact!r})"


class Subscriber(Base):
    """A business whose visitors ask for call-backs."""

    __tablename__ = "subscribers"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(40), unique=True)
    display_name: Mapped[str] = mapped_column(String(120))
    time_zone: Mapped[str] = mapped_column(String(64), default="UTC")
    # ISO 3166 country: visitors' national numbers are read as numbers of this country.
    country: Mapped[str] = mapped_column(String(2))
    caller_id: Mapped[str] = mapped_column(String(20))
    # A second number calls in reach the business by, besides its caller ID; None: none.
    inbound_number: Mapped[str | None] = mapped_column(String(20), unique=True)
    unknown_callers: Mapped[str] = mapped_column(
        String(16), default=UnknownCallers.AGENTS.value, server_default="agents"
    )
    language: Mapped[str] = mapped_column(String(8), default="en")
    call_order: Mapped[str] = mapped_column(String(16), default=CallOrder.AGENT_FIRST.value)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    retry_interval_seconds: Mapped[int] = mapped_column(Integer, default=300)
    # After a call-back an agent talked in, this long before the next is offered (notes).
    wrap_up_seconds: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    whisper_prompt: Mapped[str | None] = mapped_column(String(200))
    # Comma-separated ISO countries; empty means the subscriber's own country only.
    allowed_countries: Mapped[str] = mapped_column(String(200), default="")
    # Comma-separated web origins the widget may post from (CORS).
    allowed_origins: Mapped[str] = mapped_column(Text, default="")
    # Opening hours as JSON (see hours.py); None: open around the clock.
    hours: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    outside_hours: Mapped[str] = mapped_column(
        String(16), default=OutsideHours.SCHEDULE.value, server_default="schedule"
    )
    slot_minutes: Mapped[int] = mapped_column(Integer, default=15, server_default="15")
    # Bookings per slot; None: as many as the subscriber has active agents.
    slot_capacity: Mapped[int | None] = mapped_column(Integer)
    booking_days: Mapped[int] = mapped_column(Integer, default=7, server_default="7")
    # A request not served by the end of the local day this many days after its due day expires.
    deadline_days: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    # Per-outcome retry rules as JSON (see retries.py); None: max_attempts and the interval.
    retry_rules: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    # Comma-separated phonenumbers types a visitor's number may be (see number_policy.py);
    # None: fixed line and mobile.
    number_types: Mapped[str | None] = mapped_column(String(200))
    # An optional CAPTCHA on the form and widget (see captcha.py); None: off.
    captcha_provider: Mapped[str | None] = mapped_column(String(20))
    captcha_site_key: Mapped[str | None] = mapped_column(String(200))
    captcha_secret: Mapped[str | None] = mapped_column(String(200))
    # Where answers are checked; None: the provider's own address.
    captcha_verify_url: Mapped[str | None] = mapped_column(String(300))
    active: Mapped[bool] = mapped_column(default=True)
    widget_key: Mapped[str] = mapped_column(String(64), unique=True, default=new_secret)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)

    assignments: Mapped[list[AgentAssignment]] = relationship(
        back_populates="subscriber",
        # Equal priorities: the agent added first comes first, never the database's whim.
        order_by="(AgentAssignment.priority, AgentAssignment.agent_id)",
        cascade="all, delete-orphan",
    )

    @property
    def allowed_country_list(self) -> list[str]:
        listed = [c.strip().upper() for c in self.allowed_countries.split(",") if c.strip()]
        return listed or [self.country.upper()]

    @property
    def allowed_origin_list(self) -> list[str]:
        return [o.strip().rstrip("/") for o in self.allowed_origins.split(",") if o.strip()]


class ApiToken(Base):
    """A bearer token for the admin API; only the SHA-256 of its secret is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    # A label for people: what or who uses the token.
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # None: every subscriber. A token for one subscriber goes with it when it is deleted.
    scope_subscriber_id: Mapped[int | None] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime())

    scope_subscriber: Mapped[Subscriber | None] = relationship()

    def __repr__(self) -> str:
        # Never the hash: reprs end up in logs.
        return f"ApiToken(id={self.id!r}, name={self.name!r})"


class AgentAssignment(Base):
    """Which agents serve a subscriber, in which order (lower priority first)."""

    __tablename__ = "agent_assignments"

    subscriber_id: Mapped[int] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), primary_key=True
    )
    agent_id: Mapped[int] = mapped_column(
        ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True
    )
    priority: Mapped[int] = mapped_column(Integer, default=100)

    subscriber: Mapped[Subscriber] = relationship(back_populates="assignments")
    agent: Mapped[Agent] = relationship()


class CallbackRequest(Base):
    """A visitor's request to be called back: a persisted state machine (see states.py)."""

    __tablename__ = "callback_requests"
    __table_args__ = (
        UniqueConstraint("subscriber_id", "idempotency_key"),
        Index(
            "uq_callback_requests_open_per_phone",
            "subscriber_id",
            "visitor_phone",
            unique=True,
            postgresql_where=text(_OPEN_SQL),
            sqlite_where=text(_OPEN_SQL),
        ),
        # The claim's order: the oldest due first, then the first asked (see claims.py).
        Index("ix_callback_requests_due", "status", "due_at", "created_at", "id"),
        Index("ix_callback_requests_deadline", "status", "deadline_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_request_id)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    visitor_phone: Mapped[str] = mapped_column(String(20))
    visitor_name: Mapped[str | None] = mapped_column(String(100))
    topic: Mapped[str | None] = mapped_column(String(500))
    page_url: Mapped[str | None] = mapped_column(String(2000))
    # None means "as soon as possible".
    requested_time: Mapped[datetime | None] = mapped_column(UtcDateTime())
    due_at: Mapped[datetime] = mapped_column(UtcDateTime())
    # The visitor's return call rings the agents (dialplan/agi.py): no worker calls them
    # before this; the request keeps its place in the queue.
    held_until: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # The booked slot's start, while the request holds a place in it.
    slot_start: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # Not served by then: expired.
    deadline_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    status: Mapped[str] = mapped_column(String(20))
    attempt_count: Mapped[int] = mapped_column(Integer, default=0)
    idempotency_key: Mapped[str | None] = mapped_column(String(100))
    visitor_token: Mapped[str] = mapped_column(String(64), default=new_secret)
    # Which worker is serving the request, and until when its claim holds without renewal.
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    # When the visitor's number, name and topic were erased after the retention period.
    anonymised_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # When the visitor ticked "I agree to be called at this number".
    consent_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # The agent's wrap-up note on the call, written in the console.
    agent_note: Mapped[str | None] = mapped_column(Text)

    subscriber: Mapped[Subscriber] = relationship()
    events: Mapped[list[RequestEvent]] = relationship(
        back_populates="request", order_by="RequestEvent.id", cascade="all, delete-orphan"
    )
    attempts: Mapped[list[CallAttempt]] = relationship(
        back_populates="request", order_by="CallAttempt.number", cascade="all, delete-orphan"
    )


class AgentPresence(Base):
    """An agent's presence as one node's Asterisk sees it (``ami.py``); ``Agent.presence`` is
    what they add up to: a phone registered to one node is offline on the others."""

    __tablename__ = "agent_presence"

    agent_id: Mapped[int] = mapped_column(
        ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True
    )
    node: Mapped[str] = mapped_column(String(64), primary_key=True)
    presence: Mapped[str] = mapped_column(String(20))
    at: Mapped[datetime] = mapped_column(UtcDateTime())


class WorkerNode(Base):
    """A running worker under its stable name: the claims it owns carry this name across its
    restarts, so two live processes must never share it (``nodes.register``)."""

    __tablename__ = "worker_nodes"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    # This process's own mark: a takeover of the name by another process is seen at once.
    instance: Mapped[str] = mapped_column(String(100))
    host: Mapped[str] = mapped_column(String(255))
    # Which kernel boot and pid namespace ``pid`` belongs to: containers may share a host name.
    machine: Mapped[str] = mapped_column(String(100))
    pid: Mapped[int] = mapped_column(Integer)
    # The holder's own lease: it is silent once it has not been seen for that long.
    lease_seconds: Mapped[float] = mapped_column(Float)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime())
    seen_at: Mapped[datetime] = mapped_column(UtcDateTime())


class SlotBooking(Base):
    """How many requests hold a place in one of a subscriber's slots: booked by a conditional
    UPDATE (``booked < capacity``), so two visitors cannot both take the last place."""

    __tablename__ = "slot_bookings"

    subscriber_id: Mapped[int] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), primary_key=True
    )
    starts_at: Mapped[datetime] = mapped_column(UtcDateTime(), primary_key=True)
    booked: Mapped[int] = mapped_column(Integer, default=0)


class AttemptKind(StrEnum):
    # cbserver rang agent and visitor.
    CALL_BACK = "call_back"
    # The visitor rang the business's number back, and an agent answered (dialplan/agi.py).
    RETURN_CALL = "return_call"


class CallAttempt(Base):
    """One try at connecting agent and visitor, with each leg's channel and how it ended."""

    __tablename__ = "call_attempts"
    __table_args__ = (UniqueConstraint("request_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[str] = mapped_column(
        ForeignKey("callback_requests.id", ondelete="CASCADE"), index=True
    )
    number: Mapped[int] = mapped_column(Integer)
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))
    agent_channel_id: Mapped[str | None] = mapped_column(String(64))
    visitor_channel_id: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    answered_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    hangup_cause: Mapped[int | None] = mapped_column(Integer)
    hangup_cause_text: Mapped[str | None] = mapped_column(String(100))
    # answered | busy | no_answer | rejected | no_agent | failed
    outcome: Mapped[str | None] = mapped_column(String(20))
    kind: Mapped[str] = mapped_column(
        String(12), default=AttemptKind.CALL_BACK, server_default=AttemptKind.CALL_BACK
    )
    # A call-back's: Asterisk's billable seconds for the bridged legs (their CDR, over AMI);
    # None: no bridge, or no record received. A return call's: from the agent's answer to the
    # end, as the dialplan told cbserver.
    billable_seconds: Mapped[int | None] = mapped_column(Integer)

    request: Mapped[CallbackRequest] = relationship(back_populates="attempts")
    agent: Mapped[Agent | None] = relationship()


class RequestEvent(Base):
    """The request's history: every transition, with time and reason."""

    __tablename__ = "request_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[str] = mapped_column(
        ForeignKey("callback_requests.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    from_status: Mapped[str | None] = mapped_column(String(20))
    to_status: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(String(500), default="")

    request: Mapped[CallbackRequest] = relationship(back_populates="events")


class DeniedNumber(Base):
    """A number (or every number under a prefix) never called: for every subscriber, or one."""

    __tablename__ = "denied_numbers"
    __table_args__ = (
        UniqueConstraint("pattern", "is_prefix", "subscriber_id"),
        # The constraint above lets NULLs differ, so entries for every subscriber need their own.
        Index(
            "uq_denied_numbers_global",
            "pattern",
            "is_prefix",
            unique=True,
            postgresql_where=text("subscriber_id IS NULL"),
            sqlite_where=text("subscriber_id IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # E.164: "+" and digits.
    pattern: Mapped[str] = mapped_column(String(20))
    is_prefix: Mapped[bool] = mapped_column(default=False)
    # None: every subscriber.
    subscriber_id: Mapped[int | None] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE")
    )
    reason: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


class AuditEvent(Base):
    """What an admin did, or what cbserver refused and why: kept for people to review."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_subscriber_id", "subscriber_id", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow, index=True)
    # Who: an admin token's name, "cli", or "visitor <client>" for refusals.
    actor: Mapped[str] = mapped_column(String(120))
    # A stable code: "subscriber_added", "number_refused", "rate_limited", ...
    action: Mapped[str] = mapped_column(String(60))
    subscriber_id: Mapped[int | None] = mapped_column(
        ForeignKey("subscribers.id", ondelete="SET NULL")
    )
    detail: Mapped[str] = mapped_column(String(1000), default="")
