"""A stored number that fails the dial-time check is never dialled: the request fails at once."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from cbserver.agents import add_agent
from cbserver.callflow import AgentFirstCall, CallSettings, VisitorFirstCall
from cbserver.claims import Claim, claim_next
from cbserver.db import DatabaseThread
from cbserver.models import (
    AgentAssignment,
    CallbackRequest,
    CallOrder,
    RequestStatus,
    Subscriber,
    utcnow,
)

pytestmark = pytest.mark.postgres


class RecordingAri:
    """Stands in for ARI: writes down what the call asked of Asterisk."""

    def __init__(self) -> None:
        self.originated: list[str] = []
        self.hung_up: list[str] = []

    async def originate(self, endpoint: str, **_options: object) -> None:
        self.originated.append(endpoint)

    async def hangup(self, channel: str) -> None:
        self.hung_up.append(channel)


@pytest.fixture
def database() -> Iterator[DatabaseThread]:
    thread = DatabaseThread("test-calls")
    yield thread
    thread.close()


def claim_then_tamper(sessions: sessionmaker[Session], order: CallOrder) -> tuple[str, Claim]:
    """A request taken by the worker whose number is then changed in the database behind
    cbserver's back (the claim itself checks the policy, so the change comes after it)."""
    with sessions() as session:
        shop = Subscriber(
            slug="shop",
            display_name="Shop",
            country="US",
            caller_id="+12015550100",
            call_order=order.value,
        )
        alice = add_agent(session, "alice", contact="sip:alice@127.0.0.1:5999").agent
        shop.assignments.append(AgentAssignment(agent=alice))
        request = CallbackRequest(
            subscriber=shop,
            visitor_phone="+12015550123",
            due_at=utcnow(),
            status=RequestStatus.QUEUED.value,
        )
        session.add_all([shop, request])
        session.commit()
        claim = claim_next(session, "w", utcnow())
        assert claim is not None
        session.execute(
            update(CallbackRequest)
            .where(CallbackRequest.id == request.id)
            .values(visitor_phone="+1900&PJSIP/x")
        )
        session.commit()
        tampered = replace(claim, visitor_phone="+1900&PJSIP/x")
        return request.id, tampered


async def test_a_visitor_first_call_never_dials_a_tampered_number(
    sessions: sessionmaker[Session], database: DatabaseThread
) -> None:
    request_id, claim = claim_then_tamper(sessions, CallOrder.VISITOR_FIRST)
    ari = RecordingAri()
    ended: list[AgentFirstCall] = []
    call = VisitorFirstCall(ari, sessions, database, CallSettings(app="t"), claim, ended.append)  # type: ignore[arg-type]

    await call.start()

    assert ari.originated == [], "nothing is dialled"
    assert ended == [call]
    with sessions() as session:
        request = session.get_one(CallbackRequest, request_id)
        assert request.status == RequestStatus.FAILED, "no retry: it would meet the same number"
        assert [a.outcome for a in request.attempts] == ["undiallable"]


async def test_an_agent_who_accepted_is_released_when_the_number_cannot_be_dialled(
    sessions: sessionmaker[Session], database: DatabaseThread
) -> None:
    request_id, claim = claim_then_tamper(sessions, CallOrder.AGENT_FIRST)
    ari = RecordingAri()
    call = AgentFirstCall(ari, sessions, database, CallSettings(app="t"), claim, lambda _c: None)  # type: ignore[arg-type]
    await call.start()
    assert ari.originated == ["PJSIP/alice"], "the agent's phone rings first"

    await call._agent_accepted()

    assert ari.originated == ["PJSIP/alice"], "the visitor's number is never dialled"
    assert ari.hung_up == [claim.first_channel], "the agent is released"
    with sessions() as session:
        assert session.get_one(CallbackRequest, request_id).status == RequestStatus.FAILED
