"""The audit log: admin actions and refusals, kept in the database for people to review.

A row is added to the caller's session and committed with the caller's work, so an admin's
change and its record land together. A refusal has no work of its own to commit: use
``record_now``, which writes on a session of its own and never lets a failure to write hide
the refusal's answer from the visitor.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from cbserver.models import AuditEvent, utcnow

log = logging.getLogger("cbserver.audit")
MAX_DETAIL = 1000
MAX_ACTOR = 120


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
