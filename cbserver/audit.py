"""The audit log: admin actions and refusals, kept in the database for people to review.

A row is added to the caller's session and committed with the caller's work, so an admin's
change and its record land together. A refusal has no work of its own to commit: use
``record_now``, which writes on a session of its own and never lets a failure to write hide
the refusal's answer from the visitor.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session, sessionmaker

from cbserver.errors import FieldError
from cbserver.models import AuditEvent, Subscriber, utcnow

log = logging.getLogger("cbserver.audit")
MAX_DETAIL = 1000
MAX_ACTOR = 120
VISITOR = "visitor"
_ACTION = re.compile(r"[a-z_]{1,60}")


def visitor(client: str | None) -> str:
    """The actor of a row about a visitor: "visitor" and the client's address, or "visitor
    unknown"; always "visitor " and more, which is how the retention erasure finds them."""
    return f"{VISITOR} {client or 'unknown'}"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def record(
    session: Session,
    actor: str,
    action: str,
    detail: str = "",
    *,
    subscriber_id: int | None = None,
    at: datetime | None = None,
    log_detail: str | None = None,
) -> AuditEvent:
    """Add an audit row to ``session`` (not committed) and log it.

    ``log_detail`` stands for the detail in the log line when the detail holds what logs
    should not (a visitor's whole phone number): the row is for the admin, logs go further.
    """
    event = AuditEvent(
        at=at or utcnow(),
        actor=_clip(actor, MAX_ACTOR),
        action=action,
        subscriber_id=subscriber_id,
        detail=_clip(detail, MAX_DETAIL),
    )
    session.add(event)
    shown = event.detail if log_detail is None else _clip(log_detail, MAX_DETAIL)
    log.info("audit: %s %s %s", event.actor, action, shown)
    return event


def record_now(
    sessions: sessionmaker[Session],
    actor: str,
    action: str,
    detail: str = "",
    *,
    subscriber_id: int | None = None,
    at: datetime | None = None,
    log_detail: str | None = None,
) -> None:
    """Write an audit row at once, on a session of its own; a failure is logged, not raised."""
    try:
        with sessions() as session:
            record(
                session,
                actor,
                action,
                detail,
                subscriber_id=subscriber_id,
                at=at,
                log_detail=log_detail,
            )
            session.commit()
    except Exception:
        log.exception("audit: could not record %s by %s", action, actor)


# --- reading the log ---------------------------------------------------------------------------


def action_codes(text: str) -> list[str]:
    """The action codes in "number_refused,rate_limited", as a list; FieldError if one is none."""
    codes = [code.strip() for code in text.split(",")]
    if not all(_ACTION.fullmatch(code) for code in codes):
        raise FieldError(
            "action",
            f"action {text!r} must be one or more (comma-separated) action codes like "
            "number_refused or subscriber_added",
        )
    return codes


def events(
    session: Session,
    *,
    limit: int,
    subscriber_id: int | None = None,
    actions: list[str] | None = None,
    since: datetime | None = None,
) -> list[tuple[AuditEvent, str | None]]:
    """The rows that match, newest first, each with its subscriber's slug (None: no subscriber)."""
    conditions: list[ColumnElement[bool]] = []
    if subscriber_id is not None:
        conditions.append(AuditEvent.subscriber_id == subscriber_id)
    if actions:
        conditions.append(AuditEvent.action.in_(actions))
    if since is not None:
        conditions.append(AuditEvent.at >= since)
    rows = session.execute(
        select(AuditEvent, Subscriber.slug)
        .outerjoin(Subscriber, Subscriber.id == AuditEvent.subscriber_id)
        .where(*conditions)
        .order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
        .limit(limit)
    )
    return [(event, slug) for event, slug in rows]
