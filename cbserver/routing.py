"""Which agent takes a call-back: agents' states, the longest-idle agent first, one at a time.

An agent is offered a call-back only when active, not paused, on no other call-back, past
the wrap-up of the last one and, as far as AMI tells (``presence``), with a phone registered
and not on a call of its own. Among a subscriber's agents, the lowest priority group is
offered first; within a group, the agent idle the longest.

The offer is a conditional UPDATE of the agent's row (``on_call``), re-checked by the
database against the row as it stands: two workers never give one agent two call-backs, even
for two businesses sharing that agent.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import ColumnElement, and_, bindparam, or_, select, update
from sqlalchemy.orm import Session

from cbserver.ami import AVAILABLE, IN_USE, OFFLINE, RINGING
from cbserver.models import (
    Agent,
    AgentAssignment,
    AttemptKind,
    CallAttempt,
    CallbackRequest,
    UtcDateTime,
)

# The longest a return call lasts: the dialplan's TIMEOUT(absolute) in cbserver-inbound.
RETURN_CALL_LIMIT = timedelta(hours=1)
# A return call whose agent's phone is idle this long after the answer is over, though the
# dialplan's word of its end (AGI /ended) never came.
RETURN_CALL_QUIET = timedelta(minutes=1)

# An agent: (id, name), the name also the PJSIP endpoint.
Agents = tuple[tuple[int, str], ...]


class AgentState(StrEnum):
    AVAILABLE = "available"
    PAUSED = "paused"
    ON_CALL = "on_call"
    WRAP_UP = "wrap_up"
    OFFLINE = "offline"


def available(now: datetime | ColumnElement[datetime]) -> ColumnElement[bool]:
    """The agent may be offered a call-back at ``now``."""
    return and_(
        Agent.active,
        Agent.paused.is_(False),
        Agent.on_call.is_(None),
        or_(Agent.wrap_up_until.is_(None), Agent.wrap_up_until <= now),
        # Presence as ami.py records it; unknown (never seen, or no AMI) holds no call back.
        or_(Agent.presence.is_(None), Agent.presence == AVAILABLE),
    )


def state_of(agent: Agent, now: datetime) -> AgentState:
    """What the agent's console and the agent list show."""
    if agent.on_call is not None or agent.presence in (RINGING, IN_USE):
        return AgentState.ON_CALL
    if agent.presence == OFFLINE:
        return AgentState.OFFLINE
    if agent.paused:
        return AgentState.PAUSED
    if agent.wrap_up_until is not None and agent.wrap_up_until > now:
        return AgentState.WRAP_UP
    return AgentState.AVAILABLE


INACTIVE = "inactive"


def shown_state(agent: Agent, now: datetime) -> str:
    """The agent's state as the agent list (CLI, admin API) shows it: an inactive agent's
    state says nothing."""
    return state_of(agent, now).value if agent.active else INACTIVE


def has_an_available_agent(now: ColumnElement[datetime]) -> ColumnElement[bool]:
    """The candidate request's subscriber has an agent who may be offered it now."""
    return (
        select(AgentAssignment.agent_id)
        .join(Agent, Agent.id == AgentAssignment.agent_id)
        .where(AgentAssignment.subscriber_id == CallbackRequest.subscriber_id, available(now))
        .exists()
    )


_IN_OFFER_ORDER = (
    select(Agent.id, Agent.name)
    .join(AgentAssignment, AgentAssignment.agent_id == Agent.id)
    .where(AgentAssignment.subscriber_id == bindparam("subscriber_id"), Agent.active)
    .order_by(AgentAssignment.priority, Agent.idle_since.asc().nulls_first(), Agent.id)
)


def available_in_offer_order(session: Session, subscriber_id: int, now: datetime) -> Agents:
    """The subscriber's agents available at ``now`` (each still to be reserved), in the order
    they are offered a call."""
    rows = session.execute(
        _IN_OFFER_ORDER.where(available(_NOW)), {"subscriber_id": subscriber_id, "now": now}
    )
    return tuple((agent_id, name) for agent_id, name in rows)


def free_now(session: Session, subscriber_id: int, now: datetime) -> set[int]:
    """The ids of the subscriber's agents available at ``now``."""
    return {agent_id for agent_id, _ in available_in_offer_order(session, subscriber_id, now)}


def in_offer_order(session: Session, subscriber_id: int) -> Agents:
    """The subscriber's active agents, busy or not, in the order they are offered a call."""
    rows = session.execute(_IN_OFFER_ORDER, {"subscriber_id": subscriber_id})
    return tuple((agent_id, name) for agent_id, name in rows)


_NOW = bindparam("now", type_=UtcDateTime())
_RESERVE = (
    update(Agent)
    .where(Agent.id == bindparam("agent_id"), available(_NOW))
    .values(on_call=bindparam("request_id"))
    .execution_options(synchronize_session=False)
)
# Reserving an agent the request holds already changes nothing, and succeeds.
_HOLD = (
    update(Agent)
    .where(
        Agent.id == bindparam("agent_id"),
        or_(Agent.on_call == bindparam("request_id"), available(_NOW)),
    )
    .values(on_call=bindparam("request_id"))
    .execution_options(synchronize_session=False)
)


# Another worker busy with the agent's row is as good as an answer: that agent is being taken.
# Skipped, never waited for, so two workers reserving agents in different orders never
# deadlock (PostgreSQL; SQLite has one writer at a time).
# Only an available agent's row is locked: a claim looking at busy agents locks none of them.
_LOCK = (
    select(Agent.id)
    .where(Agent.id == bindparam("agent_id"), available(_NOW))
    .with_for_update(skip_locked=True)
)


def _locked(session: Session, agent_id: int, now: datetime) -> bool:
    return session.execute(_LOCK, {"agent_id": agent_id, "now": now}).first() is not None


def reserve(session: Session, agent_id: int, request_id: str, now: datetime) -> bool:
    """Give the available agent this call-back; False when it is not available (another
    worker may hold it for this very request). Not committed."""
    if not _locked(session, agent_id, now):
        return False
    result = session.execute(_RESERVE, {"agent_id": agent_id, "request_id": request_id, "now": now})
    return bool(getattr(result, "rowcount", 0))


def unreserve(session: Session, agent_id: int, request_id: str) -> None:
    """Undo this transaction's ``reserve``. Not committed."""
    session.execute(
        update(Agent)
        .where(Agent.id == agent_id, Agent.on_call == request_id)
        .values(on_call=None)
        .execution_options(synchronize_session=False)
    )


def hand_over(session: Session, agent_id: int, request_id: str, now: datetime) -> bool:
    """The request's call moves on to ``agent_id`` (the agent before did not take it), held
    from the claim on when it is the first: that agent is held and any other the request held
    is free again. False when the agent is not available. Not committed."""
    # Not skipped when locked: an agent this request holds already is its own to keep (a claim
    # elsewhere may be looking at the row), and a claim never waits, so this cannot deadlock.
    result = session.execute(_HOLD, {"agent_id": agent_id, "request_id": request_id, "now": now})
    if not getattr(result, "rowcount", 0):
        return False
    session.execute(
        update(Agent)
        .where(Agent.on_call == request_id, Agent.id != agent_id)
        .values(on_call=None)
        .execution_options(synchronize_session=False)
    )
    return True


def hold_for_return_call(session: Session, agent_id: int, request_id: str) -> bool:
    """The agent answered the visitor's return call about ``request_id``: held by it, like by a
    call-back, unless a call-back holds the agent already. Not committed."""
    result = session.execute(
        update(Agent)
        .where(Agent.id == agent_id, Agent.on_call.is_(None))
        .values(on_call=request_id)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


def release(
    session: Session, request_id: str, now: datetime, *, talked: bool, wrap_up_seconds: int
) -> None:
    """The call-back is over for its agent: free, after the wrap-up if they talked (and idle
    from now on, for the longest-idle order). Not committed.

    Only for a request this transaction moved, or one over for good: a request back to waiting
    may be held by a claim's agent again."""
    values: dict[str, object] = {"on_call": None}
    if talked:
        values["idle_since"] = now
        if wrap_up_seconds > 0:
            values["wrap_up_until"] = now + timedelta(seconds=wrap_up_seconds)
    session.execute(
        update(Agent)
        .where(Agent.on_call == request_id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )


def _on_return_calls(session: Session, request_ids: Sequence[str], now: datetime) -> set[str]:
    """Which of ``request_ids`` have a return call under way: answered, not yet ended, and not
    over by every other sign (the dialplan's word of the end can be lost with the worker)."""
    phone_busy = or_(Agent.presence.is_(None), Agent.presence.in_((RINGING, IN_USE)))
    return set(
        session.scalars(
            select(CallAttempt.request_id)
            .join(Agent, Agent.id == CallAttempt.agent_id)
            .where(
                CallAttempt.request_id.in_(request_ids),
                CallAttempt.kind == AttemptKind.RETURN_CALL,
                CallAttempt.ended_at.is_(None),
                CallAttempt.started_at > now - RETURN_CALL_LIMIT,
                or_(phone_busy, CallAttempt.started_at > now - RETURN_CALL_QUIET),
            )
        )
    )


def free_stranded(session: Session, in_call: Sequence[str], now: datetime) -> list[str]:
    """Free the agents held for requests no longer in a call (statuses ``in_call``, or a return
    call under way): a request canceled while its worker was dead, or whose call ended without
    its agent's release being written. A return call so ended is closed. The names freed.
    Committed.

    The held rows are locked first (a claim busy with one is skipped), and the requests read
    after that, so a reservation made meanwhile is never taken for a stale one."""
    held = session.execute(
        select(Agent.id, Agent.name, Agent.on_call)
        .where(Agent.on_call.is_not(None))
        .with_for_update(skip_locked=True)
    ).all()
    if not held:
        session.commit()
        return []
    held_for = [request_id for _, _, request_id in held if request_id is not None]
    still_in_call = set(
        session.scalars(
            select(CallbackRequest.id).where(
                CallbackRequest.id.in_(held_for),
                CallbackRequest.status.in_(in_call),
            )
        )
    ) | _on_return_calls(session, held_for, now)
    stranded = [
        (agent_id, name, request_id)
        for agent_id, name, request_id in held
        if request_id not in still_in_call
    ]
    if stranded:
        session.execute(
            update(Agent)
            .where(Agent.id.in_([agent_id for agent_id, _, _ in stranded]))
            .values(on_call=None)
            .execution_options(synchronize_session=False)
        )
        session.execute(
            update(CallAttempt)
            .where(
                CallAttempt.request_id.in_([request_id for _, _, request_id in stranded]),
                CallAttempt.kind == AttemptKind.RETURN_CALL,
                CallAttempt.ended_at.is_(None),
            )
            .values(ended_at=now, outcome="answered")
            .execution_options(synchronize_session=False)
        )
    session.commit()
    return [name for _, name, _ in stranded]
