"""How long until a business's call-backs due now are all called: the agent console's ETA.

The requests due now are shared by the business's agents on duty, each call taking as long as
the business's recent answered calls took on average: the handling time the visitors' own
estimates use (scheduling.handling_time).
"""

from __future__ import annotations

import math
from collections.abc import Collection
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from cbserver.ami import OFFLINE
from cbserver.models import Agent, AgentAssignment, CallbackRequest
from cbserver.scheduling import UNSERVED, handling_time


def eta_seconds(due_now: int, staffed: int, handling: timedelta) -> int | None:
    """Seconds until the last of ``due_now`` requests is called, when ``staffed`` agents call
    them in rounds of ``handling`` each: 0 when nothing is due, None when requests are due
    and no agent is on duty."""
    if due_now == 0:
        return 0
    if staffed == 0:
        return None
    return round(math.ceil(due_now / staffed) * handling.total_seconds())


def _due_now(session: Session, subscriber_ids: Collection[int], now: datetime) -> dict[int, int]:
    rows = session.execute(
        select(CallbackRequest.subscriber_id, func.count())
        .where(
            CallbackRequest.subscriber_id.in_(subscriber_ids),
            CallbackRequest.status.in_(UNSERVED),
            CallbackRequest.due_at <= now,
        )
        .group_by(CallbackRequest.subscriber_id)
    )
    return {subscriber_id: count for subscriber_id, count in rows}


def _staffed(session: Session, subscriber_ids: Collection[int]) -> dict[int, int]:
    """Active agents neither paused nor offline; busy ones count: they are on duty."""
    rows = session.execute(
        select(AgentAssignment.subscriber_id, func.count())
        .join(Agent, Agent.id == AgentAssignment.agent_id)
        .where(
            AgentAssignment.subscriber_id.in_(subscriber_ids),
            Agent.active,
            Agent.paused.is_(False),
            # Never seen by AMI is not known to be offline.
            or_(Agent.presence.is_(None), Agent.presence != OFFLINE),
        )
        .group_by(AgentAssignment.subscriber_id)
    )
    return {subscriber_id: count for subscriber_id, count in rows}


def queue_etas(
    session: Session, subscriber_ids: Collection[int], now: datetime
) -> dict[int, int | None]:
    """Each business's ETA in seconds (see eta_seconds), by subscriber id."""
    if not subscriber_ids:
        return {}
    due_now = _due_now(session, subscriber_ids, now)
    staffed = _staffed(session, subscriber_ids)
    return {
        subscriber_id: eta_seconds(
            due_now.get(subscriber_id, 0),
            staffed.get(subscriber_id, 0),
            handling_time(session, subscriber_id) if due_now.get(subscriber_id) else timedelta(),
        )
        for subscriber_id in subscriber_ids
    }
