"""Calls coming in from the trunk, as the worker's FastAGI server routes them (dialplan/agi.py):
what the dialplan is told for each caller, and what an agent answering completes."""

from __future__ import annotations

import wave
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, event, select
from sqlalchemy.orm import Session, sessionmaker

from cbserver import agents as agents_service
from cbserver.agents import add_agent
from cbserver.claims import claim_next
from cbserver.clock import FakeClock
from cbserver.db import DatabaseThread
from cbserver.dialplan import agi
from cbserver.dialplan.agi import (
    ALL_BUSY,
    HOLD_PROMPT,
    NOT_IN_SERVICE,
    RETURN_CALL_PROMPT,
    UNKNOWN_CALLER_MESSAGE,
    InboundCalls,
    Route,
)
from cbserver.housekeeping import free_stranded_agents
from cbserver.intake import Submission, submit
from cbserver.models import (
    Agent,
    AgentAssignment,
    AttemptKind,
    CallbackRequest,
    RequestStatus,
    Subscriber,
)
from cbserver.routing import AgentState, available_in_offer_order, state_of
from cbserver.states import transition
from cbserver.subscribers import LANGUAGES
from cbserver.views.console import console_state

pytestmark = pytest.mark.postgres

NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
BUSINESS = "+12015550100"
INBOUND = "+12015550111"
VISITOR = "+12015550123"
STRANGER = "+12015550199"
HOLD = timedelta(seconds=55)
PROMPTS = Path(__file__).resolve().parents[2] / "asterisk-conf" / "sounds"


def route_call(session: Session, dialled: str, caller: str, now: datetime) -> Route:
    return agi.route_call(session, dialled, caller, now, HOLD)


@pytest.fixture
def shop(session: Session) -> Subscriber:
    subscriber = Subscriber(
        slug="shop", display_name="Shop", country="US", caller_id=BUSINESS, wrap_up_seconds=30
    )
    for name, priority in (("anna", 10), ("ben", 20)):
        agent = add_agent(session, name, contact=f"sip:{name}@127.0.0.1:5999").agent
        subscriber.assignments.append(AgentAssignment(agent=agent, priority=priority))
    session.add(subscriber)
    session.commit()
    return subscriber


def agent_named(session: Session, name: str) -> Agent:
    return session.scalars(select(Agent).where(Agent.name == name)).one()


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
        assert (route.prompt, route.own_prompt) == (RETURN_CALL_PROMPT, True)
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
            RETURN_CALL_PROMPT,
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
        RETURN_CALL_PROMPT,
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
        f'SET VARIABLE CBSERVER_PROMPT "{RETURN_CALL_PROMPT}"',
        'SET VARIABLE CBSERVER_OWN_PROMPT "1"',
        'SET VARIABLE CBSERVER_LANGUAGE "en"',
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
        call = request.attempts[-1]
        assert (call.kind, call.agent and call.agent.name, call.ended_at) == (
            AttemptKind.RETURN_CALL,
            "ben",
            None,
        )
        ben = agent_named(session, "ben")
        assert ben.on_call == request_id, "held by the call like by a call-back"
        assert console_state(session, ben, calls.clock.now())["call"]["request_id"] == request_id
        assert "ben" not in [name for _, name in available_in_offer_order(session, 1, NOW)]

    calls.clock = FakeClock(calls.clock.now() + timedelta(seconds=42))
    await app._route["ended"](FakeAgiRequest(agi_network_script="ended", agi_arg_1=request_id))

    with sessions() as session:
        request = session.get_one(CallbackRequest, request_id)
        call = request.attempts[-1]
        assert (call.outcome, call.billable_seconds) == ("answered", 42)
        assert call.ended_at is not None
        ben = agent_named(session, "ben")
        assert ben.on_call is None
        ended = calls.clock.now()
        assert state_of(ben, ended) == AgentState.WRAP_UP, "the subscriber's wrap-up follows"
        view = console_state(session, ben, ended)
        assert view["call"]["request_id"] == request_id, "on screen after it, for the note"
        assert view["call"]["attempts"][-1]["outcome_text"] == "the visitor called back: talked"


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


@pytest.mark.usefixtures("shop")
def test_no_worker_calls_the_visitor_while_their_return_call_rings_the_agents(
    session: Session,
) -> None:
    request = submit(session, Submission("shop", VISITOR, consent=True), now=NOW).request

    route_call(session, BUSINESS, VISITOR, NOW)

    assert claim_next(session, "worker-a", NOW + HOLD - timedelta(seconds=1)) is None
    claim = claim_next(session, "worker-a", NOW + HOLD)
    assert claim is not None, "nobody answered: called back as before, only later"
    assert claim.request_id == request.id


@pytest.mark.usefixtures("shop")
def test_a_return_call_is_answered_in_the_business_language(session: Session) -> None:
    shop = session.scalars(select(Subscriber)).one()
    shop.language = "de"
    session.commit()
    missed(session)
    route = route_call(session, BUSINESS, VISITOR, NOW)
    assert route.variables(25)["CBSERVER_LANGUAGE"] == "de"


def test_of_businesses_sharing_a_number_the_caller_reaches_the_one_they_ring_back(
    session: Session, shop: Subscriber
) -> None:
    other = Subscriber(slug="other", display_name="Other", country="US", caller_id=BUSINESS)
    cleo = add_agent(session, "cleo", contact="sip:cleo@127.0.0.1:5999").agent
    other.assignments.append(AgentAssignment(agent=cleo, priority=10))
    session.add(other)
    session.commit()
    request = submit(session, Submission("other", VISITOR, consent=True), now=NOW).request

    route = route_call(session, BUSINESS, VISITOR, NOW)
    assert (route.dial, route.request_id) == ("PJSIP/cleo", request.id)
    stranger = route_call(session, BUSINESS, STRANGER, NOW)
    assert stranger.dial == "PJSIP/anna&PJSIP/ben", "anyone else: the first business"


@pytest.mark.usefixtures("shop")
def test_a_foreign_visitor_is_recognised_when_the_trunk_leaves_out_the_plus(
    session: Session,
) -> None:
    session.scalars(select(Subscriber)).one().allowed_countries = "US,DE,EG"
    request = submit(session, Submission("shop", "+4930901820", consent=True), now=NOW).request
    egypt = submit(session, Submission("shop", "+2015550123", consent=True), now=NOW).request

    assert route_call(session, BUSINESS, "4930901820", NOW).request_id == request.id
    # Also +20 15550123 written without its "+": but a valid US number is read as one.
    assert route_call(session, BUSINESS, "2015550123", NOW).request_id == ""
    assert route_call(session, BUSINESS, "+2015550123", NOW).request_id == egypt.id


@pytest.mark.usefixtures("shop")
def test_a_return_call_nobody_answers_keeps_the_visitors_place_in_the_queue(
    session: Session,
) -> None:
    first = submit(session, Submission("shop", VISITOR, consent=True), now=NOW).request
    later = submit(session, Submission("shop", STRANGER, consent=True), now=NOW).request
    route_call(session, BUSINESS, VISITOR, NOW)

    taken = claim_next(session, "worker-a", NOW)
    assert taken is not None
    assert taken.request_id == later.id, "the visitor's own call rings the agents meanwhile"
    agents_service.list_agents(session)[0].on_call = None
    session.commit()
    again = claim_next(session, "worker-a", NOW + HOLD)
    assert again is not None
    assert again.request_id == first.id
    session.refresh(first)
    assert first.due_at == NOW, "still due as it was"


@contextmanager
def meanwhile(request_id: str, step: Callable[[], None]) -> Iterator[list[bool]]:
    """Run ``step`` once, the moment the request is first read: another worker, or the
    dialplan, acting between a look and a write. Yields whether it ran."""
    ran: list[bool] = []

    def once(target: CallbackRequest, _context: object) -> None:
        if not ran and target.id == request_id:
            ran.append(True)  # first: the step reads the request too
            step()

    event.listen(CallbackRequest, "load", once)
    try:
        yield ran
    finally:
        event.remove(CallbackRequest, "load", once)


@pytest.mark.usefixtures("shop")
def test_a_visitor_whose_call_back_a_worker_takes_as_they_ring_is_an_ordinary_caller(
    sessions: sessionmaker[Session],
) -> None:
    with sessions() as session:
        request_id = submit(session, Submission("shop", VISITOR, consent=True), now=NOW).request.id

    def worker_claims() -> None:
        with sessions() as other:
            assert claim_next(other, "worker-a", NOW) is not None

    with sessions() as session, meanwhile(request_id, worker_claims) as ran:
        route = route_call(session, BUSINESS, VISITOR, NOW)

    assert ran
    assert (route.prompt, route.request_id) == (HOLD_PROMPT, "")
    with sessions() as session:
        assert session.get_one(CallbackRequest, request_id).status == RequestStatus.DIALING_AGENT


@pytest.mark.usefixtures("shop")
def test_a_worker_does_not_take_a_call_back_whose_visitor_rings_as_it_looks(
    sessions: sessionmaker[Session],
) -> None:
    with sessions() as session:
        if session.get_bind().dialect.name == "postgresql":
            pytest.skip("PostgreSQL: a claim locks the rows it looks at, so a hold waits for it")
        request_id = submit(session, Submission("shop", VISITOR, consent=True), now=NOW).request.id
    routes: list[Route] = []

    def visitor_rings() -> None:
        with sessions() as other:
            routes.append(route_call(other, BUSINESS, VISITOR, NOW))

    with sessions() as session, meanwhile(request_id, visitor_rings) as ran:
        claim = claim_next(session, "worker-a", NOW)

    assert ran
    assert claim is None
    assert routes[0].request_id == request_id
    with sessions() as session:
        assert session.get_one(CallbackRequest, request_id).status == RequestStatus.QUEUED


def test_every_business_language_has_the_return_call_greeting() -> None:
    for language in LANGUAGES:
        path = PROMPTS / language / f"{RETURN_CALL_PROMPT}.wav"
        with wave.open(str(path)) as prompt:
            # What Asterisk plays as it is: 8 kHz, 16-bit, mono.
            shape = (prompt.getframerate(), prompt.getsampwidth(), prompt.getnchannels())
            assert shape == (8000, 2, 1), path
            assert 2 < prompt.getnframes() / 8000 < 8, "a greeting, not silence or a speech"


@pytest.mark.usefixtures("shop")
def test_a_return_call_whose_end_was_never_heard_frees_its_agent_once_the_phone_is_idle(
    session: Session,
) -> None:
    request_id = missed(session)
    assert agi.answer_return_call(session, request_id, "anna", NOW)
    anna = agent_named(session, "anna")

    anna.presence = "in_use"
    session.commit()
    assert free_stranded_agents(session, NOW + timedelta(minutes=20)) == 0, "still talking"
    anna.presence = "available"
    session.commit()
    assert free_stranded_agents(session, NOW + timedelta(seconds=30)) == 0, "just answered"
    assert free_stranded_agents(session, NOW + timedelta(minutes=20)) == 1

    session.refresh(anna)
    assert anna.on_call is None
    call = session.get_one(CallbackRequest, request_id).attempts[-1]
    assert (call.outcome, call.ended_at) == ("answered", NOW + timedelta(minutes=20))
