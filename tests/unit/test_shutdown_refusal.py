"""Asterisk refusing a call because it is shutting down: the attempt is given back, not spent.

Between the start of a shutdown and the closing of ARI's connection (up to 15 s while
channels drain), Asterisk answers every originate with "Allocation failed". A request claimed
in that window must not lose an attempt to it. The same 500 from an Asterisk that is not
stopping (an agent's endpoint that does not exist) is an agent who cannot be rung, as before."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from sqlalchemy.orm import Session, sessionmaker

from cbserver.ari import AriClient, AriError, AriUnavailable, Channel
from cbserver.callflow import AgentFirstCall, CallSettings, VisitorFirstCall
from cbserver.claims import claim_next
from cbserver.db import DatabaseThread
from cbserver.intake import Submission, submit
from cbserver.models import CallAttempt, CallbackRequest, CallOrder, RequestStatus, Subscriber
from tests.unit.test_resume import NOW, VISITOR, FakeAsterisk, open_shop

pytestmark = pytest.mark.postgres


@pytest.fixture
def shop(session: Session) -> Subscriber:
    return open_shop(session)


@dataclass
class RefusingAsterisk(FakeAsterisk):
    """Refuses the endpoints in ``refused`` with ARI's 500; makes channels only if ``making``."""

    refused: set[str] = field(default_factory=set)
    making: bool | None = True  # None: gone before the probe could ask

    async def originate(self, endpoint: str, **options: Any) -> Channel:
        if endpoint in self.refused:
            self.asked.append(("refused", endpoint))
            raise AriError("Allocation failed", status=500, method="POST", path="/channels")
        return await super().originate(endpoint, **options)

    async def accepts_new_channels(self) -> bool:
        self.asked.append(("probe", None))
        if self.making is None:
            raise AriUnavailable("connection refused")
        return self.making


def claimed(sessions: sessionmaker[Session], *, visitor_first: bool = False) -> Any:
    with sessions() as session:
        if visitor_first:
            session.query(Subscriber).one().call_order = CallOrder.VISITOR_FIRST
            session.commit()
        submit(session, Submission("shop", VISITOR, consent=True), now=NOW)
        claim = claim_next(session, "node-1", NOW)
        assert claim is not None
        return claim


async def started(
    sessions: sessionmaker[Session],
    database: DatabaseThread,
    asterisk: FakeAsterisk,
    *,
    visitor_first: bool = False,
) -> AgentFirstCall:
    claim = claimed(sessions, visitor_first=visitor_first)
    flow = VisitorFirstCall if visitor_first else AgentFirstCall
    settings = CallSettings(app="test", accept_seconds=60, unreachable_seconds=0)
    ended: list[AgentFirstCall] = []
    call = flow(cast(AriClient, asterisk), sessions, database, settings, claim, ended.append)
    await call.start()
    assert ended == [call], "the call is over either way"
    return call


def the_request(sessions: sessionmaker[Session]) -> tuple[CallbackRequest, list[CallAttempt]]:
    with sessions() as session:
        request = session.query(CallbackRequest).one()
        _ = request.events
        return request, list(request.attempts)


@pytest.mark.usefixtures("shop")
@pytest.mark.parametrize("visitor_first", [False, True])
async def test_refused_by_a_stopping_asterisk_the_attempt_is_given_back(
    sessions: sessionmaker[Session], database: DatabaseThread, visitor_first: bool
) -> None:
    asterisk = RefusingAsterisk(refused={"PJSIP/anna", "PJSIP/ben", f"PJSIP/{VISITOR}@trunk"})
    asterisk.making = False

    call = await started(sessions, database, asterisk, visitor_first=visitor_first)

    request, attempts = the_request(sessions)
    assert call.refused_by_stopping_asterisk
    assert request.status == RequestStatus.RETRY_WAIT
    assert request.due_at <= call.settings.clock.now(), "due as soon as Asterisk is back"
    assert request.attempt_count == 0, "the refusal spent no attempt"
    assert attempts == []
    assert request.claimed_by is None
    assert "shutting down" in request.events[-1].reason
    assert asterisk.asked_for("originate") == [], "nobody was rung"
    assert len(asterisk.asked_for("refused")) == 1, "no second agent tried on a stopping switch"


@pytest.mark.usefixtures("shop")
async def test_gone_while_asked_counts_as_stopping(
    sessions: sessionmaker[Session], database: DatabaseThread
) -> None:
    asterisk = RefusingAsterisk(refused={"PJSIP/anna"}, making=None)

    call = await started(sessions, database, asterisk)

    request, _ = the_request(sessions)
    assert call.refused_by_stopping_asterisk
    assert request.attempt_count == 0


@pytest.mark.usefixtures("shop")
async def test_an_agent_asterisk_cannot_ring_is_skipped_and_the_attempt_goes_on(
    sessions: sessionmaker[Session], database: DatabaseThread
) -> None:
    asterisk = RefusingAsterisk(refused={"PJSIP/anna"}, making=True)

    claim = claimed(sessions)
    settings = CallSettings(app="test", accept_seconds=60, unreachable_seconds=0)
    call = AgentFirstCall(
        cast(AriClient, asterisk), sessions, database, settings, claim, lambda _: None
    )
    await call.start()

    assert not call.refused_by_stopping_asterisk
    assert [endpoint for endpoint, _ in asterisk.asked_for("originate")] == ["PJSIP/ben"]
    request, attempts = the_request(sessions)
    assert request.status == RequestStatus.DIALING_AGENT
    assert request.attempt_count == 1
    assert len(attempts) == 1


@pytest.mark.usefixtures("shop")
async def test_a_refusal_after_an_agent_rang_is_a_spent_attempt(
    sessions: sessionmaker[Session], database: DatabaseThread
) -> None:
    """Anna was rung and let it ring out; Asterisk then began to stop: that attempt was real."""
    asterisk = RefusingAsterisk(making=False)
    claim = claimed(sessions)
    settings = CallSettings(app="test", accept_seconds=60, unreachable_seconds=0)
    ended: list[AgentFirstCall] = []
    call = AgentFirstCall(
        cast(AriClient, asterisk), sessions, database, settings, claim, ended.append
    )
    await call.start()
    asterisk.refused.add("PJSIP/ben")
    anna = next(iter(call.channels))
    await call._hung_up(anna, 19, "No Answer")

    assert ended == [call]
    assert not call.refused_by_stopping_asterisk
    assert ("probe", None) not in asterisk.asked
    request, attempts = the_request(sessions)
    assert request.attempt_count == 1
    assert [a.outcome for a in attempts] == ["no_agent"]
