"""Claiming due requests: the claim is the ``queued -> dialing_*`` transition itself.

It is one conditional UPDATE (``WHERE status = 'queued'``) that also records the worker and its
lease, so of two workers reaching for one request exactly one succeeds.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from cbserver.models import CallbackRequest, CallOrder, RequestStatus
from cbserver.states import IllegalTransition, StaleRequest, transition

LEASE = timedelta(minutes=2)
CANDIDATES = 5


def first_status(request: CallbackRequest) -> RequestStatus:
    if request.subscriber.call_order == CallOrder.VISITOR_FIRST:
        return RequestStatus.DIALING_VISITOR
    return RequestStatus.DIALING_AGENT


def promote_due(session: Session, now: datetime) -> int:
    """Retries and booked slots whose time has come go back in the queue; how many. Committed."""
    due = session.scalars(
        select(CallbackRequest).where(
            CallbackRequest.status.in_((RequestStatus.RETRY_WAIT, RequestStatus.SCHEDULED)),
            CallbackRequest.due_at <= now,
        )
    ).all()
    moved = 0
    for request in due:
        reason = (
            "time for another try"
            if request.status == RequestStatus.RETRY_WAIT
            else ("the booked time has come")
        )
        try:
            transition(session, request, RequestStatus.QUEUED, reason, now=now)
        except (StaleRequest, IllegalTransition):
            session.rollback()
            continue
        session.commit()
        moved += 1
    return moved


def claim_next(session: Session, worker_id: str, now: datetime) -> CallbackRequest | None:
    """The oldest due request, now owned by ``worker_id``; None when nothing is due. Committed."""
    query = (
        select(CallbackRequest)
        .where(CallbackRequest.status == RequestStatus.QUEUED, CallbackRequest.due_at <= now)
        .order_by(CallbackRequest.due_at, CallbackRequest.created_at)
        .limit(CANDIDATES)
    )
    if session.get_bind().dialect.name == "postgresql":
        # Other workers skip the rows this one is looking at instead of queueing behind them.
        query = query.with_for_update(skip_locked=True, of=CallbackRequest)
    for request in session.scalars(query).all():
        if request.status != RequestStatus.QUEUED:
            # Reloaded after a lost race (a rollback expires every candidate): someone else's.
            continue
        try:
            transition(
                session,
                request,
                first_status(request),
                f"taken by worker {worker_id}",
                now=now,
                claimed_by=worker_id,
                lease_until=now + LEASE,
            )
        except StaleRequest:
            session.rollback()
            continue
        session.commit()
        return request
    session.commit()
    return None
