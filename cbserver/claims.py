"""Claiming due requests: the claim is the ``queued -> dialing_*`` transition itself.

It is one conditional UPDATE (``WHERE status = 'queued'``) that also records the worker and its
lease, so of two workers reaching for one request exactly one succeeds. The same transaction
opens the call attempt and names the first channel, so the worker can dial the moment it
commits: one database round trip between a visitor's click and the first INVITE.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, bindparam, or_, select
from sqlalchemy.orm import Session, joinedload

from cbserver import audit, number_policy, routing
from cbserver.models import (
    CallAttempt,
    CallbackRequest,
    CallOrder,
    DeniedNumber,
    RequestStatus,
    UtcDateTime,
)
from cbserver.number_policy import NumberRefused
from cbserver.routing import Agents
from cbserver.states import StaleRequest, transition, transition_all

log = logging.getLogger("cbserver.claims")
LEASE = timedelta(minutes=2)
IN_CALL = (RequestStatus.DIALING_AGENT, RequestStatus.DIALING_VISITOR, RequestStatus.CONNECTED)
# Candidates read beyond those wanted, in case another worker takes one first (SQLite has no
# SKIP LOCKED).
SPARE = 1


@dataclass(frozen=True)
class Claim:
    """A claimed request and its new attempt: everything its call needs, read as it was taken."""

    request_id: str
    attempt_id: int
    attempt_number: int
    visitor_first: bool
    visitor_phone: str
    business_caller_id: str
    whisper_prompt: str | None
    agents: Agents
    # Already recorded in the attempt: the first agent's channel (agent first) or the visitor's.
    first_channel: str | None


def channel_id(request_id: str, attempt_number: int, leg: str) -> str:
    """The id a call-back channel is originated with; ``leg`` is an agent's name or "visitor".
    Known before the attempt row is written, so the row is written once."""
    return f"cb-{request_id}-{attempt_number}-{leg}"


def bridge_name(request_id: str) -> str:
    """The name of the bridge a call-back's two legs meet in: found by it after a restart."""
    return f"callback-{request_id}"


def first_status(request: CallbackRequest) -> RequestStatus:
    if request.subscriber.call_order == CallOrder.VISITOR_FIRST:
        return RequestStatus.DIALING_VISITOR
    return RequestStatus.DIALING_AGENT


PROMOTIONS = (
    (RequestStatus.RETRY_WAIT, "time for another try"),
    (RequestStatus.SCHEDULED, "the booked time has come"),
)


def promote_due(session: Session, now: datetime) -> int:
    """Retries and booked slots whose time has come go back in the queue; how many. Committed."""
    moved = sum(
        len(
            transition_all(
                session,
                status,
                RequestStatus.QUEUED,
                reason,
                CallbackRequest.due_at <= now,
                now=now,
            )
        )
        for status, reason in PROMOTIONS
    )
    session.commit()
    if moved:
        # Rows moved behind the session's back: nothing it holds may be trusted as loaded.
        session.expire_all()
    return moved


# Built once: building this statement costs more CPU than running it (measured, bench/).
_NOW = bindparam("now", type_=UtcDateTime())


def _not_held(now: datetime | ColumnElement[datetime]) -> ColumnElement[bool]:
    """Not while the visitor's return call rings the agents (dialplan/agi.py); checked again
    by the claim's UPDATE, as a hold may come between the look and the claim."""
    return or_(CallbackRequest.held_until.is_(None), CallbackRequest.held_until <= now)


_CANDIDATES = (
    select(CallbackRequest)
    .where(
        CallbackRequest.status == RequestStatus.QUEUED,
        CallbackRequest.due_at <= _NOW,
        _not_held(_NOW),
        # A business without an agent free now keeps its line waiting rather than failing.
        routing.has_an_available_agent(_NOW),
    )
    .order_by(CallbackRequest.due_at, CallbackRequest.created_at, CallbackRequest.id)
    .limit(bindparam("candidates"))
    .options(joinedload(CallbackRequest.subscriber, innerjoin=True))
)
# Other workers skip the rows this one is looking at instead of queueing behind them.
_CANDIDATES_LOCKED = _CANDIDATES.with_for_update(skip_locked=True, of=CallbackRequest)


def claim_next(session: Session, worker_id: str, now: datetime) -> Claim | None:
    """The oldest due request, now owned by ``worker_id`` with its attempt open; None when
    nothing is due. Committed."""
    claims = claim_due(session, worker_id, now, 1)
    return claims[0] if claims else None


def claim_due(
    session: Session, worker_id: str, now: datetime, most: int, lease: timedelta = LEASE
) -> list[Claim]:
    """Up to ``most`` due requests, oldest first, now owned by ``worker_id`` with their
    attempts open, in one transaction; an empty list when nothing is due. Committed.

    Each request is still taken by its own conditional UPDATE, its agent by another (see
    routing.reserve), so a
    batch never takes more than one at a time could: it only shares the round trips."""
    postgresql = session.get_bind().dialect.name == "postgresql"
    query = _CANDIDATES_LOCKED if postgresql else _CANDIDATES
    candidates = session.scalars(query, {"now": now, "candidates": most + SPARE}).all()
    if not candidates:
        session.commit()
        return []
    agents_of: dict[int, Agents] = {}
    # The agents free as the batch began, per subscriber: only they are tried, each once.
    free_of: dict[int, set[int]] = {}
    policy = _PolicyNow.read(session)
    taken: list[tuple[CallbackRequest, CallAttempt, Agents]] = []
    for request in candidates:
        if len(taken) == most:
            break
        subscriber_id = request.subscriber_id
        if subscriber_id not in agents_of:
            # Read before writing where possible: on SQLite the write lock is held from the
            # first write on.
            agents_of[subscriber_id] = active_agents(session, subscriber_id)
            free_of[subscriber_id] = routing.free_now(session, subscriber_id, now)
        refusal = policy.refusal(session, request)
        if refusal is not None:
            _fail_unacceptable(session, request, refusal, worker_id, now)
            continue
        agents = _offered(
            session, agents_of[subscriber_id], free_of[subscriber_id], request.id, now
        )
        if agents is None:
            continue  # its business's agents were all taken meanwhile, in this batch or by others
        try:
            transition(
                session,
                request,
                first_status(request),
                f"taken by worker {worker_id}",
                now=now,
                only_if=_not_held(now),
                claimed_by=worker_id,
                lease_until=now + lease,
                attempt_count=request.attempt_count + 1,
                # A booked slot's place is used from here on: it is never given back.
                slot_start=None,
            )
        except StaleRequest:
            # Taken by another worker first: its agent is free again, and the batch goes on in
            # the same transaction.
            routing.unreserve(session, agents[0][0], request.id)
            free_of[subscriber_id].add(agents[0][0])  # free for the business's next request
            continue
        attempt = _new_attempt(request, agents, now)
        session.add(attempt)
        taken.append((request, attempt, agents))
    # One flush inserts every attempt (and event) of the batch and learns their ids.
    session.flush()
    claims = [claim_of(request, attempt, agents) for request, attempt, agents in taken]
    session.commit()
    return claims


@dataclass
class _PolicyNow:
    """The number policy as it stands now, read once per batch: a deny-list entry or a
    narrower choice of number types made since a request was taken stops its call before
    anyone is rung."""

    denied: Sequence[DeniedNumber]
    business: dict[int, set[str]] = field(default_factory=dict)

    @classmethod
    def read(cls, session: Session) -> _PolicyNow:
        # Short by nature (an admin's list): one read serves the whole batch.
        return cls(session.scalars(select(DeniedNumber)).all())

    def refusal(self, session: Session, request: CallbackRequest) -> str | None:
        """Why the request's number may not be called now (a refusal code), or None."""
        subscriber = request.subscriber
        try:
            e164 = number_policy.check(request.visitor_phone, subscriber)
        except NumberRefused as refusal:
            return refusal.code
        if number_policy.listed(self.denied, e164, subscriber.id) is not None:
            return "phone_denied"
        if subscriber.id not in self.business:
            self.business[subscriber.id] = number_policy.business_numbers(session, subscriber)
        if e164 in self.business[subscriber.id]:
            return "phone_is_business"
        return None


def _fail_unacceptable(
    session: Session,
    request: CallbackRequest,
    refusal: str,
    worker_id: str,
    now: datetime,
) -> None:
    try:
        transition(
            session,
            request,
            RequestStatus.FAILED,
            f"not called: the number is now refused ({refusal})",
            now=now,
            slot_start=None,
        )
    except StaleRequest:
        return
    # The request names the number (erased with it after the retention period); this row not.
    audit.record(
        session,
        f"worker {worker_id}",
        "request_refused",
        f"request {request.id}: not called ({refusal})",
        subscriber_id=request.subscriber_id,
        at=now,
    )


def _new_attempt(request: CallbackRequest, agents: Agents, now: datetime) -> CallAttempt:
    number = request.attempt_count
    attempt = CallAttempt(request_id=request.id, number=number, started_at=now)
    if request.status == RequestStatus.DIALING_VISITOR:
        attempt.visitor_channel_id = channel_id(request.id, number, "visitor")
    elif agents:
        attempt.agent_id, name = agents[0]
        attempt.agent_channel_id = channel_id(request.id, number, name)
    return attempt


def _offered(
    session: Session, agents: Agents, free: set[int], request_id: str, now: datetime
) -> Agents | None:
    """The first of ``agents`` free to take the request, now reserved for it, then the others
    in order (rung should it not answer); None when none of them is free. Only the ``free``
    ones are tried, and each leaves ``free`` once tried: one statement per agent and batch,
    however many agents are busy."""
    for n, (agent_id, _) in enumerate(agents):
        if agent_id not in free:
            continue
        free.discard(agent_id)
        if routing.reserve(session, agent_id, request_id, now):
            return (agents[n], *agents[:n], *agents[n + 1 :])
    return None


def claim_of(request: CallbackRequest, attempt: CallAttempt, agents: Agents) -> Claim:
    """What the call of ``request``'s ``attempt`` needs, as the request stands."""
    subscriber = request.subscriber
    visitor_first = subscriber.call_order == CallOrder.VISITOR_FIRST
    return Claim(
        request_id=request.id,
        attempt_id=attempt.id,
        attempt_number=attempt.number,
        visitor_first=visitor_first,
        visitor_phone=request.visitor_phone,
        business_caller_id=subscriber.caller_id,
        whisper_prompt=subscriber.whisper_prompt,
        agents=agents,
        first_channel=attempt.visitor_channel_id if visitor_first else attempt.agent_channel_id,
    )


def active_agents(session: Session, subscriber_id: int) -> Agents:
    """The subscriber's active agents, in the order they are offered a call."""
    return routing.in_offer_order(session, subscriber_id)
