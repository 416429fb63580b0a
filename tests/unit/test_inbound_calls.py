"""Calls coming in from the trunk, as the worker's FastAGI server routes them (dialplan/agi.py):
what the dialplan is told for each caller, and what an agent answering completes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session, sessionmaker

from cbserver import agents as agents_service
from cbserver.agents import add_agent
from cbserver.claims import claim_next
from cbserver.db import DatabaseThread
from cbserver.dialplan.agi import (
    ALL_BUSY,
    HOLD_PROMPT,
    NOT_IN_SERVICE,
    UNKNOWN_CALLER_MESSAGE,
    InboundCalls,
    route_call,
)
from cbserver.intake import Submission, submit
from cbserver.models import AgentAssignment, CallbackRequest, RequestStatus, Subscriber
from cbserver.states import transition

pytestmark = pytest.mark.postgres

NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
BUSINESS = "+12015550100"
INBOUND = "+12015550111"
VISITOR = "+12015550123"
STRANGER = "+12015550199"


@pytest.fixture
def shop(session: Session) -> Subscriber:
    subscriber = Subscriber(slug="shop", display_name="Shop", country="US", caller_id=BUSINESS)
    for name, priority in (("anna", 10), ("ben", 20)):
        agent = add_agent(session, name, contact=f"sip:{name}@127.0.0.1:5999").agent
        subscriber.assignments.append(AgentAssignment(agent=agent, priority=priority))
    session.add(subscriber)
    session.commit()
    return subscriber


def missed(session: Session) -> str:
    """A call-back that found the visitor busy: waiting for its retry."""
    request = submit(session, Submission("shop", VISITOR, consent=True), now=NOW).request
    claim = claim_next(session, "worker-a", NOW)
    assert claim is not None
    session.refresh(request)
    transition(session, request, RequestStatus.RETRY_WAIT, "busy", due_at=NOW + timedelta(hours=1))
    agents_service.list_agents(session)[0].on_call = None
    session.commit()
    return request.id


@pytest.mark.usefixtures("shop")
def test_a_visitor_ringing_back_is_recognised_in_any_number_form(session: Session) -> None:
    request_id = missed(session)

    for dialled, caller in ((BUSINESS, VISITOR), ("12015550100", "2015550123")):
        route = route_call(session, dialled, caller, NOW)
        assert route.request_id == request_id
        assert route.prompt == HOLD_PROMPT
        assert route.dial == "PJSIP/anna&PJSIP/ben", "every available agent, first group first"


@pytest.mark.usefixtures("shop")
def test_another_caller_reaches_the_agents_about_no_request(session: Session) -> None:
    missed(session)
    route = route_call(session, BUSINESS, STRANGER, NOW)
    assert (route.prompt, route.dial, route.request_id) == (HOLD_PROMPT, "PJSIP/anna&PJSIP/ben", "")


def test_a_call_to_the_inbound_number_reaches_the_agents_as_the_caller_id_does(
    session: Session, shop: Subscriber
) -> None:
    shop.inbound_number = INBOUND
    session.commit()
    request_id = missed(session)

    for dialled in (INBOUND, "2015550111"):
        route = route_call(session, dialled, VISITOR, NOW)
        assert (route.prompt, route.dial, route.request_id) == (
            HOLD_PROMPT,
            "PJSIP/anna&PJSIP/ben",
            request_id,
        )
    assert route_call(session, BUSINESS, VISITOR, NOW).request_id == request_id, "still its number"


def test_with_unknown_callers_given_the_message_only_a_visitor_ringing_back_reaches_the_agents(
    session: Session, shop: Subscriber
) -> None:
    shop.unknown_callers = "message"
    session.commit()
    request_id = missed(session)

    stranger = route_call(session, BUSINESS, STRANGER, NOW)
    assert (stranger.prompt, stranger.dial, stranger.request_id) == (UNKNOWN_CALLER_MESSAGE, "", "")
    visitor = route_call(session, BUSINESS, VISITOR, NOW)
    assert (visitor.prompt, visitor.dial, visitor.request_id) == (
        HOLD_PROMPT,
        "PJSIP/anna&PJSIP/ben",
        request_id,
    )


@pytest.mark.usefixtures("shop")
def test_a_number_no_business_has_is_not_in_service(session: Session) -> None:
    route = route_call(session, "+12015550999", VISITOR, NOW)
    assert (route.prompt, route.dial) == (NOT_IN_SERVICE, "")


@pytest.mark.usefixtures("shop")
def test_with_every_agent_paused_the_caller_hears_all_busy(session: Session) -> None:
    request_id = missed(session)
    agents_service.pause(session, "anna", None)
    agents_service.pause(session, "ben", None)
    route = route_call(session, BUSINESS, VISITOR, NOW)
    assert (route.prompt, route.dial, route.request_id) == (ALL_BUSY, "", request_id)


class FakeAgiRequest:
    """What panoramisk hands a route: Asterisk's headers; the commands sent back, written down."""

    def __init__(self, **headers: str) -> None:
        self.headers = headers
        self.commands: list[str] = []

    async def send_command(self, command: str) -> dict[str, Any]:
        self.commands.append(command)
        return {"status_code": 200, "result": ("1", "")}


@pytest.fixture
async def calls(sessions: sessionmaker[Session]) -> AsyncIterator[InboundCalls]:
    thread = DatabaseThread("test-agi")
    yield InboundCalls(sessions, thread, ring_seconds=25)
    thread.close()


@pytest.mark.usefixtures("shop")
async def test_the_answer_completes_the_request_the_caller_rang_back_about(
    sessions: sessionmaker[Session], calls: InboundCalls
) -> None:
    with sessions() as session:
        request_id = missed(session)
    app = calls.application()
    inbound = FakeAgiRequest(agi_network_script="inbound", agi_arg_1=BUSINESS, agi_callerid=VISITOR)
    await app._route["inbound"](inbound)
    assert inbound.commands == [
        f'SET VARIABLE CBSERVER_PROMPT "{HOLD_PROMPT}"',
        'SET VARIABLE CBSERVER_DIAL "PJSIP/anna&PJSIP/ben"',
        f'SET VARIABLE CBSERVER_REQUEST "{request_id}"',
        'SET VARIABLE CBSERVER_RING_SECONDS "25"',
    ]

    answered = FakeAgiRequest(
        agi_network_script="answered", agi_arg_1=request_id, agi_channel="PJSIP/ben-0000002a"
    )
    await app._route["answered"](answered)

    with sessions() as session:
        request = session.get_one(CallbackRequest, request_id)
        assert request.status == RequestStatus.COMPLETED
        assert request.events[-1].reason == "the visitor called back and ben answered"


async def test_a_failure_tells_the_dialplan_to_apologise(tmp_path: Path) -> None:
    """The database cannot be opened: the caller hears the apology, never a silent line."""
    nowhere = sessionmaker(create_engine(f"sqlite:///{tmp_path / 'missing' / 'cb.sqlite3'}"))
    thread = DatabaseThread("test-agi-broken")
    try:
        app = InboundCalls(nowhere, thread, ring_seconds=25).application()
        inbound = FakeAgiRequest(agi_network_script="inbound", agi_arg_1=BUSINESS)
        await app._route["inbound"](inbound)
    finally:
        thread.close()

    assert inbound.commands == ['SET VARIABLE CBSERVER_PROMPT ""']
