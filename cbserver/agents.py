"""Agents: adding and listing the SIP phones that take call-backs, pausing and resuming them,
and their logins to the web console."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from functools import cache

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from cbserver.errors import FieldError
from cbserver.models import Agent

PAUSE_REASON_LENGTH = 100
DTMF_MODES = ("rfc4733", "info", "inband", "auto", "auto_info")
# "visitor" names the visitor's leg in a call-back's channel ids (claims.channel_id).
RESERVED_NAMES = frozenset({"trunk", "anonymous", "cbserver", "visitor"})
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
# A plain sip: URI: no parameters, headers or spaces, which would reach PJSIP's config as is.
_CONTACT = re.compile(
    r"^sip:[A-Za-z0-9._~+\-]+@(?:[A-Za-z0-9.\-]+|\[[0-9a-fA-F:]+\])(?::\d{1,5})?$"
)


class AgentError(FieldError):
    """An agent could not be added."""


@dataclass(frozen=True)
class NewAgent:
    agent: Agent
    # Shown once: the password a registering phone needs.
    sip_password: str | None


def validate_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise AgentError(
            "name",
            f"agent name {name!r} must start with a lowercase letter and hold only lowercase "
            "letters, digits, '-' and '_' (at most 40)",
        )
    if name in RESERVED_NAMES:
        raise AgentError("name", f"agent name {name!r} is reserved")
    return name


def validate_contact(contact: str) -> str:
    match = _CONTACT.fullmatch(contact)
    port = contact.rsplit(":", 1)[-1] if contact.count(":") >= 2 else None
    if match is None or (port is not None and port.isdigit() and not 0 < int(port) < 65536):
        raise AgentError(
            "contact", f"contact {contact!r} is not a SIP URI like sip:alice@192.0.2.10:5060"
        )
    return contact


def add_agent(
    session: Session, name: str, *, contact: str | None = None, dtmf_mode: str = "rfc4733"
) -> NewAgent:
    """Add an agent with a fixed contact, or a registering one with a generated password."""
    validate_name(name)
    if contact is not None:
        validate_contact(contact)
    if dtmf_mode not in DTMF_MODES:
        raise AgentError("dtmf_mode", f"DTMF mode must be one of {', '.join(DTMF_MODES)}")
    password = None if contact else secrets.token_urlsafe(18)
    agent = Agent(name=name, contact=contact, sip_password=password, dtmf_mode=dtmf_mode)
    session.add(agent)
    try:
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        raise AgentError("name", f"an agent named {name!r} already exists") from exc
    return NewAgent(agent, password)


def list_agents(session: Session, *, active_only: bool = False) -> list[Agent]:
    query = select(Agent).order_by(Agent.name)
    if active_only:
        query = query.where(Agent.active.is_(True))
    return list(session.scalars(query))


def named(session: Session, name: str) -> Agent | None:
    """The agent of that name, active or not; None when there is none."""
    return session.scalar(select(Agent).where(Agent.name == name))


def get_agent(session: Session, name: str) -> Agent:
    agent = named(session, name)
    if agent is None:
        raise AgentError("name", f"no agent named {name!r}")
    return agent


def pause(session: Session, name: str, reason: str | None) -> Agent:
    """The agent is offered no call-back until available again; a call under way goes on."""
    reason = (reason or "").strip() or None
    if reason is not None and len(reason) > PAUSE_REASON_LENGTH:
        raise AgentError("reason", f"a pause reason is at most {PAUSE_REASON_LENGTH} characters")
    agent = get_agent(session, name)
    agent.paused = True
    agent.pause_reason = reason
    session.commit()
    return agent


def make_available(session: Session, name: str) -> Agent:
    """Back from a pause, and done with any wrap-up: offered the next call-back."""
    agent = get_agent(session, name)
    agent.paused = False
    agent.pause_reason = None
    agent.wrap_up_until = None
    session.commit()
    return agent


def set_console_password(session: Session, name: str, password: str | None = None) -> str:
    """Give the agent a new web console password (generated unless given), returned to be
    shown once (only its salted hash is kept); the one before stops working."""
    agent = get_agent(session, name)
    password = password or secrets.token_urlsafe(12)
    agent.console_password_hash = generate_password_hash(password)
    session.commit()
    return password


@cache
def _unusable_hash() -> str:
    """Checked against when there is no hash to check: a refusal takes as long as a check."""
    return generate_password_hash(secrets.token_urlsafe(32))


def check_console_login(session: Session, name: str, password: str) -> Agent | None:
    """The agent these credentials are for; None when the name is unknown, the agent inactive
    or without a console password, or the password wrong (which of these, nobody learns)."""
    agent = named(session, name)
    stored = agent.console_password_hash if agent is not None else None
    matches = check_password_hash(stored or _unusable_hash(), password)
    if agent is None or stored is None or not agent.active or not matches:
        return None
    return agent
