"""The call-back request's state machine: the one place a status may change.

A transition is a conditional UPDATE (``WHERE status = <what we read>``), so two processes
racing on one request cannot both move it: the loser gets ``StaleRequest`` and nothing is
overwritten. Every transition is written to the request's event log and logged.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, insert, update
from sqlalchemy.orm import InstrumentedAttribute, Session
from sqlalchemy.orm.attributes import set_committed_value

from cbserver.models import CallbackRequest, RequestEvent, RequestStatus, utcnow

S = RequestStatus
log = logging.getLogger("cbserver.states")

TRANSITIONS: dict[RequestStatus, frozenset[RequestStatus]] = {
    # Completed while waiting: the visitor called back and an agent answered (dialplan/agi.py).
    S.SCHEDULED: frozenset({S.QUEUED, S.SCHEDULED, S.CANCELED, S.EXPIRED, S.COMPLETED}),
    # queued -> queued: moved to another place in the line (rescheduled into a slot under way).
    # Failed straight from the queue: its number is refused by the policy as it now stands.
    S.QUEUED: frozenset(
        {
            S.DIALING_AGENT,
            S.DIALING_VISITOR,
            S.QUEUED,
            S.SCHEDULED,
            S.CANCELED,
            S.EXPIRED,
            S.FAILED,
            S.COMPLETED,
        }
    ),
    # Agent-first: agent, then visitor. Visitor-first: visitor, then agent.
    # A failed attempt with no time left before the deadline expires the request.
    S.DIALING_AGENT: frozenset(
        {S.DIALING_VISITOR, S.CONNECTED, S.RETRY_WAIT, S.FAILED, S.CANCELED, S.EXPIRED}
    ),
    S.DIALING_VISITOR: frozenset(
        {S.DIALING_AGENT, S.CONNECTED, S.RETRY_WAIT, S.FAILED, S.CANCELED, S.EXPIRED}
    ),
    S.CONNECTED: frozenset({S.COMPLETED, S.FAILED}),
    S.RETRY_WAIT: frozenset({S.QUEUED, S.SCHEDULED, S.CANCELED, S.EXPIRED, S.FAILED, S.COMPLETED}),
    S.COMPLETED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELED: frozenset(),
    S.EXPIRED: frozenset(),
}
TERMINAL = frozenset(status for status, targets in TRANSITIONS.items() if not targets)


class IllegalTransition(ValueError):
    """The state machine does not allow this move."""

    def __init__(self, request_id: str, current: str, target: str) -> None:
        super().__init__(f"request {request_id}: {current} -> {target} is not allowed")
        self.current = current
        self.target = target


class StaleRequest(RuntimeError):
    """Someone else changed the request since it was read."""


def can_transition(current: str, target: str) -> bool:
    return RequestStatus(target) in TRANSITIONS[RequestStatus(current)]


def transition(
    session: Session,
    request: CallbackRequest,
    target: RequestStatus,
    reason: str,
    *,
    now: datetime | None = None,
    unless_changed: bool = False,
    only_if: ColumnElement[bool] | None = None,
    **changes: object,
) -> None:
    """Move ``request`` to ``target`` (with other column ``changes``) and log it; not committed.

    ``unless_changed``: also refuse (StaleRequest) when anything of the request changed since
    it was read, not only its status (a move within one status, like a booking moved again).
    ``only_if``: a further condition the row must meet, checked by the UPDATE itself."""
    current = request.status
    if not can_transition(current, target):
        log.warning(
            "illegal transition refused",
            extra={"request_id": request.id, "from": current, "to": target.value},
        )
        raise IllegalTransition(request.id, current, target.value)
    at = now or utcnow()
    conditions = [CallbackRequest.id == request.id, CallbackRequest.status == current]
    if unless_changed:
        conditions += _as_read(request)
    if only_if is not None:
        conditions.append(only_if)
    result = session.execute(
        update(CallbackRequest)
        .where(*conditions)
        .values(status=target.value, updated_at=at, **changes)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise StaleRequest(f"request {request.id} is no longer {current}")
    session.add(
        RequestEvent(
            request_id=request.id, at=at, from_status=current, to_status=target, reason=reason
        )
    )
    # What was written is known: no SELECT to read it back (a claim's hottest statement).
    for name, value in {"status": target.value, "updated_at": at, **changes}.items():
        set_committed_value(request, name, value)
    session.expire(request, ["events"])
    log.info(
        "request %s: %s -> %s (%s)",
        request.id,
        current,
        target.value,
        reason,
        extra={"request_id": request.id, "from": current, "to": target.value},
    )


def _as_read(request: CallbackRequest) -> list[ColumnElement[bool]]:
    """The request's row still holds what was read (times alone can tie on a coarse clock)."""
    slot = CallbackRequest.slot_start
    return [
        CallbackRequest.updated_at == request.updated_at,
        CallbackRequest.due_at == request.due_at,
        CallbackRequest.attempt_count == request.attempt_count,
        slot.is_(None) if request.slot_start is None else slot == request.slot_start,
    ]


def transition_all(
    session: Session,
    current: RequestStatus,
    target: RequestStatus,
    reason: str,
    *conditions: ColumnElement[bool],
    now: datetime,
    returning: tuple[InstrumentedAttribute[Any], ...] = (),
    **changes: object,
) -> list[tuple[Any, ...]]:
    """Move every request in ``current`` that meets ``conditions`` to ``target`` in one
    UPDATE, each with its event; not committed. The rows moved: the id, then ``returning``.

    However many there are, each moves once even when processes race: the UPDATE itself
    checks the status, and reports only the rows it changed."""
    if not can_transition(current, target):
        raise IllegalTransition("(many)", current.value, target.value)
    rows = [
        tuple(row)
        for row in session.execute(
            update(CallbackRequest)
            .where(CallbackRequest.status == current, *conditions)
            .values(status=target.value, updated_at=now, **changes)
            .returning(CallbackRequest.id, *returning)
            .execution_options(synchronize_session=False)
        )
    ]
    if rows:
        session.execute(
            insert(RequestEvent),
            [
                {
                    "request_id": row[0],
                    "at": now,
                    "from_status": current.value,
                    "to_status": target.value,
                    "reason": reason,
                }
                for row in rows
            ],
        )
        log.info("%d request(s) %s -> %s (%s)", len(rows), current.value, target.value, reason)
    return rows


def record_creation(session: Session, request: CallbackRequest, reason: str) -> None:
    """The first line of a new request's event log."""
    session.add(
        RequestEvent(
            request_id=request.id,
            at=request.created_at,
            from_status=None,
            to_status=request.status,
            reason=reason,
        )
    )
    log.info(
        "request %s: created %s (%s)",
        request.id,
        request.status,
        reason,
        extra={"request_id": request.id, "to": request.status},
    )
