"""Adoption: a worker started again under its name takes up the calls its previous life owned.

A killed worker leaves its requests claimed under its name (``dialing_*`` or ``connected``) and
their calls on its Asterisk, which carries on without it: a bridged call keeps talking, a phone
keeps ringing. The new process reads those requests, asks Asterisk which of their channels (named
in the attempt rows) and bridge still exist, and hands each to a call flow that carries on from
there (``AgentFirstCall.resume``); a call that vanished meanwhile closes its attempt honestly.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from sqlalchemy import and_, select, update
from sqlalchemy.orm import Session

from cbserver.ari import AriClient, AriNotFound, Bridge, Channel
from cbserver.claims import IN_CALL, Claim, active_agents, bridge_name, claim_of
from cbserver.models import CallAttempt, CallbackRequest, RequestStatus
from cbserver.routing import Agents


@dataclass(frozen=True)
class Owned:
    """A request a previous life of this worker left in a call, with its open attempt."""

    claim: Claim
    status: RequestStatus
    agent_channel: str | None
    visitor_channel: str | None
    # The agent the attempt was ringing (or had rung) when the worker stopped, if any.
    agent_rung: tuple[int, str] | None
    # The agents after that one, in order.
    agents_after: Agents


@dataclass
class OnAsterisk:
    """What Asterisk still has of the owned calls: their live channels and bridges."""

    channels: dict[str, Channel] = field(default_factory=dict)
    bridges: dict[str, Bridge] = field(default_factory=dict)

    def channel(self, channel_id: str | None) -> Channel | None:
        return None if channel_id is None else self.channels.get(channel_id)

    def bridge_of(self, request_id: str) -> Bridge | None:
        return self.bridges.get(bridge_name(request_id))


def owned_calls(
    session: Session, worker: str, carried: Collection[str], now: datetime, lease: timedelta
) -> list[Owned]:
    """The requests ``worker`` owns in a call that it does not carry (``carried``: request ids),
    their leases renewed first: from here on no other worker's housekeeping releases them.
    Committed."""
    mine = and_(
        CallbackRequest.claimed_by == worker,
        CallbackRequest.status.in_(IN_CALL),
        CallbackRequest.id.not_in(list(carried)),
    )
    session.execute(
        update(CallbackRequest)
        .where(mine)
        .values(lease_until=now + lease)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    requests = session.scalars(select(CallbackRequest).where(mine).order_by(CallbackRequest.id))
    owned: list[Owned] = []
    for request in requests.all():
        attempt = _open_attempt(request)
        agents = active_agents(session, request.subscriber_id)
        # Every channel rung from here on is recorded in the attempt as it is rung.
        claim = replace(claim_of(request, attempt, agents), first_channel=None)
        rung = [n for n, (agent_id, _) in enumerate(agents) if agent_id == attempt.agent_id]
        owned.append(
            Owned(
                claim=claim,
                status=RequestStatus(request.status),
                agent_channel=attempt.agent_channel_id,
                visitor_channel=attempt.visitor_channel_id,
                agent_rung=agents[rung[0]] if rung else None,
                agents_after=agents[rung[0] + 1 :] if rung else agents,
            )
        )
    session.commit()
    return owned


def _open_attempt(request: CallbackRequest) -> CallAttempt:
    """The attempt the claim opened; one is opened in the claim's own transaction."""
    current = [a for a in request.attempts if a.number == request.attempt_count]
    return current[0] if current else request.attempts[-1]


async def look_up(ari: AriClient, owned: Collection[Owned]) -> OnAsterisk:
    """Ask Asterisk which of the owned calls' channels and bridges still exist.
    Raises AriUnavailable when it cannot be asked (then nothing is decided)."""
    found = OnAsterisk()
    for call in owned:
        for channel_id in (call.agent_channel, call.visitor_channel):
            if channel_id is None:
                continue
            try:
                found.channels[channel_id] = await ari.get_channel(channel_id)
            except AriNotFound:
                continue
    names = {bridge_name(call.claim.request_id) for call in owned}
    for bridge in await ari.list_bridges():
        if bridge.name in names:
            found.bridges[bridge.name] = bridge
    return found
