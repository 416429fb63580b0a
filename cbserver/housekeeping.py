"""The worker's housekeeping: expiry, closing time, stale claims, leases, retention.

Each job is one short transaction on the database, which stays the only record: the
scheduler that runs them (APScheduler, in the worker) only decides when.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, case, func, select, union_all, update
from sqlalchemy.orm import Session

from cbserver import audit, routing
from cbserver.callflow import retry_or_give_up
from cbserver.claims import IN_CALL, LEASE
from cbserver.models import (
    AuditEvent,
    CallbackRequest,
    RequestStatus,
    Subscriber,
    UtcDateTime,
)
from cbserver.scheduling import UNSERVED, deadline_for, give_back_place, hours_of, local_text
from cbserver.states import TERMINAL, StaleRequest, transition, transition_all

log = logging.getLogger("cbserver.housekeeping")


def expire_overdue(session: Session, now: datetime) -> int:
    """Requests still waiting at their deadline expire, giving back unused slot places."""
    moved = 0
    for status in UNSERVED:
        rows = transition_all(
            session,
            status,
            RequestStatus.EXPIRED,
            "not called before its deadline",
            CallbackRequest.deadline_at <= now,
            now=now,
            # Expired requests are over: their slot_start is not cleared, only its place freed.
            returning=(CallbackRequest.subscriber_id, CallbackRequest.slot_start),
        )
        for row in rows:
            give_back_place(session, row[1], row[2])
        moved += len(rows)
    session.commit()
    return moved


def close_doors(session: Session, now: datetime) -> int:
    """Requests waiting in the line of a business that has closed wait for its next opening."""
    moved = 0
    for subscriber in session.scalars(select(Subscriber).where(Subscriber.hours.is_not(None))):
        hours = hours_of(subscriber)
        if hours.is_open(now):
            continue
        opening = hours.next_opening(now)
        if opening is None:
            continue
        opens = local_text(opening, subscriber.time_zone)
        # The deadline moves with the wait: a request carried over is not expired meanwhile.
        deadline = deadline_for(subscriber, opening)
        moved += len(
            transition_all(
                session,
                RequestStatus.QUEUED,
                RequestStatus.SCHEDULED,
                f"closed now; waiting for the next opening, {opens}",
                CallbackRequest.subscriber_id == subscriber.id,
                now=now,
                due_at=opening,
                deadline_at=case(
                    (CallbackRequest.deadline_at < deadline, deadline),
                    else_=CallbackRequest.deadline_at,
                ),
            )
        )
    session.commit()
    return moved


def next_closing(session: Session, now: datetime) -> datetime | None:
    """The next moment some business with opening hours closes."""
    found: list[datetime] = []
    for subscriber in session.scalars(select(Subscriber).where(Subscriber.hours.is_not(None))):
        closes = hours_of(subscriber).closes_at(now)
        if closes is not None:
            found.append(closes)
    return min(found, default=None)


def release_stale_claims(session: Session, now: datetime, spare: str | None = None) -> int:
    """Calls whose worker stopped renewing its lease are closed honestly: a call that had not
    connected is retried (or given up) by the subscriber's rules; a connected one is done.
    ``spare``'s claims are left alone: a worker just started under that name has yet to adopt
    the calls its previous life left on its Asterisk."""
    stale_query = select(CallbackRequest).where(
        CallbackRequest.status.in_(IN_CALL), CallbackRequest.lease_until < now
    )
    if spare is not None:
        stale_query = stale_query.where(CallbackRequest.claimed_by != spare)
    stale = session.scalars(stale_query).all()
    released = 0
    for request in stale:
        owner = request.claimed_by
        # Checked again by the UPDATE itself: its worker may have renewed (adopted) it since.
        still_stale = and_(CallbackRequest.lease_until < now, CallbackRequest.claimed_by == owner)
        for attempt in request.attempts:
            if attempt.ended_at is None:
                attempt.ended_at = now
                attempt.hangup_cause_text = f"worker {owner} stopped during the call"
                attempt.outcome = (
                    "answered" if request.status == RequestStatus.CONNECTED else "failed"
                )
        try:
            if request.status == RequestStatus.CONNECTED:
                transition(
                    session,
                    request,
                    RequestStatus.COMPLETED,
                    f"worker {owner} stopped while the call was connected",
                    now=now,
                    only_if=still_stale,
                    claimed_by=None,
                    lease_until=None,
                )
            else:
                retry_or_give_up(session, request, "failed", now, only_if=still_stale)
        except StaleRequest:
            session.rollback()
            continue
        routing.release(
            session,
            request.id,
            now,
            talked=request.status == RequestStatus.COMPLETED,
            wrap_up_seconds=request.subscriber.wrap_up_seconds,
        )
        session.commit()
        released += 1
        log.warning("request %s: released from worker %s, whose lease ran out", request.id, owner)
    return released


def renew_leases(
    session: Session, worker: str, live: Collection[str], now: datetime, lease: timedelta = LEASE
) -> int:
    """The worker is alive: the claims whose calls it carries (``live``, request ids) hold for
    another lease. A claim it holds without a call (the answer to its commit was lost on the
    way) is not renewed, so it is released as a dead worker's would be."""
    if not live:
        session.commit()
        return 0
    result = session.execute(
        update(CallbackRequest)
        .where(
            CallbackRequest.claimed_by == worker,
            CallbackRequest.status.in_(IN_CALL),
            CallbackRequest.id.in_(list(live)),
        )
        .values(lease_until=now + lease)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return int(result.rowcount)  # type: ignore[attr-defined]


def anonymise_old_requests(session: Session, now: datetime, retention: timedelta) -> int:
    """Erase the visitor's number, name, topic and page, and the agent's note about the call,
    from requests over ``retention`` after they ended; the rest (times, outcomes) stays for the
    business's figures."""
    result = session.execute(
        update(CallbackRequest)
        .where(
            CallbackRequest.status.in_(TERMINAL),
            CallbackRequest.updated_at < now - retention,
            CallbackRequest.anonymised_at.is_(None),
        )
        .values(
            visitor_phone="",
            visitor_name=None,
            topic=None,
            page_url=None,
            agent_note=None,
            idempotency_key=None,
            anonymised_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    session.commit()
    erased = int(result.rowcount)  # type: ignore[attr-defined]
    if erased:
        log.info("%d request(s) past the retention period: visitor data erased", erased)
    return erased


ERASED = "(erased after the retention period)"


def anonymise_old_refusals(session: Session, now: datetime, retention: timedelta) -> int:
    """Erase what audit rows about visitors hold of them (the number refused, their address)
    after ``retention``; the action, time and subscriber stay for the admin's figures."""
    result = session.execute(
        update(AuditEvent)
        .where(AuditEvent.actor.like(audit.VISITOR + " %"), AuditEvent.at < now - retention)
        .values(actor=audit.VISITOR, detail=ERASED)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return int(result.rowcount)  # type: ignore[attr-defined]


def free_stranded_agents(session: Session, now: datetime) -> int:
    """Agents held for requests no longer in a call are free again; how many. Committed."""
    freed = routing.free_stranded(session, IN_CALL, now)
    if freed:
        log.warning("agent(s) %s held for no call any more: free again", ", ".join(freed))
    return len(freed)


def next_due(session: Session) -> datetime | None:
    """When the next booked slot or retry comes due."""
    # One MIN per status: each is the first entry of the due index, however many wait.
    firsts = union_all(
        *(
            select(func.min(CallbackRequest.due_at).label("due")).where(
                CallbackRequest.status == status
            )
            for status in (RequestStatus.SCHEDULED, RequestStatus.RETRY_WAIT)
        )
    ).subquery()
    found = session.scalar(select(func.min(firsts.c.due)))
    return UtcDateTime().process_result_value(found, session.get_bind().dialect)


@dataclass(frozen=True)
class Rounds:
    """What one housekeeping round did, for the log and the tests."""

    expired: int
    moved_to_opening: int
    released: int
    renewed: int
    freed: int = 0


def one_round(
    session: Session,
    worker: str,
    now: datetime,
    live: Collection[str] = (),
    *,
    lease: timedelta = LEASE,
    adopted: bool = True,
) -> Rounds:
    """One round for ``worker``, carrying the calls of ``live`` (request ids); until it has
    ``adopted`` what its previous life left, its own old claims are not released."""
    # Renewed first: a slow round must never find this worker's own calls stale.
    renewed = renew_leases(session, worker, live, now, lease)
    return Rounds(
        expired=expire_overdue(session, now),
        moved_to_opening=close_doors(session, now),
        released=release_stale_claims(session, now, spare=None if adopted else worker),
        renewed=renewed,
        freed=free_stranded_agents(session, now),
    )
