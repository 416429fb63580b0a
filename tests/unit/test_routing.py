"""Which agent a call-back is offered to, on SQLite and PostgreSQL: the longest-idle available
agent of the first priority group, never one who is paused, offline, on a call or wrapping up,
and never two call-backs to one agent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from cbserver import agents as agents_service
from cbserver import housekeeping, intake, routing
from cbserver.agents import add_agent
from cbserver.callflow import AgentFirstCall, CallSettings
from cbserver.claims import claim_next, promote_due
from cbserver.housekeeping import release_stale_claims
from cbserver.intake import Submission, submit
from cbserver.models import Agent, AgentAssignment, CallbackRequest, RequestStatus, Subscriber
from cbserver.routing import AgentState
from cbserver.states import transition

pytestmark = pytest.mark.postgres

NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
PHONES = [f"+1201555013{n}" for n in range(10)]


def business(session: Session, slug: str, *agents: tuple[Agent, int]) -> Subscriber:
    subscriber = Subscriber(
        slug=slug, display_name=slug.title(), country="US", caller_id="+12015550100"
    )
    for agent, priority in agents:
        subscriber.assignments.append(AgentAssignment(agent=agent, priority=priority))
    session.add(subscriber)
    session.commit()
    return subscriber


def agent(session: Session, name: str, idle_since: datetime | None = None) -> Agent:
    created = add_agent(session, name, contact=f"sip:{name}@127.0.0.1:5999").agent
    created.idle_since = idle_since
    session.commit()
    return created


def ask(session: Session, slug: str, phone: str, at: datetime = NOW) -> str:
    return submit(session, Submission(slug, phone, consent=True), now=at).request.id


def offered_to(session: Session, at: datetime = NOW) -> str | None:
    """Claim the next due request; the agent it is offered to first."""
    claim = claim_next(session, "worker-a", at)
    return None if claim is None else claim.agents[0][1]


def end_call(session: Session, request_id: str, at: datetime, *, talked: bool = True) -> None:
    """What the call flow records as a call-back ends."""
    request = session.get_one(CallbackRequest, request_id)
    if talked:
        transition(session, request, RequestStatus.CONNECTED, "talking", now=at)
        transition(session, request, RequestStatus.COMPLETED, "the call ended", now=at)
    else:
        transition(session, request, RequestStatus.RETRY_WAIT, "no answer", now=at, due_at=at)
    routing.release(
        session, request_id, at, talked=talked, wrap_up_seconds=request.subscriber.wrap_up_seconds
    )
    session.commit()


@pytest.fixture
def three(session: Session) -> list[Agent]:
    """anna idle since 9:00, ben never had a call, cleo idle since 9:30: one priority group."""
    agents = [
        agent(session, "anna", NOW - timedelta(hours=1)),
        agent(session, "ben"),
        agent(session, "cleo", NOW - timedelta(minutes=30)),
    ]
    business(session, "shop", *((a, 10) for a in agents))
    return agents


@pytest.mark.usefixtures("three")
def test_the_longest_idle_agent_is_offered_each_call_and_goes_last_after_it(
    session: Session,
) -> None:
    offered: list[str | None] = []
    at = NOW
    for phone in PHONES[:6]:
        request_id = ask(session, "shop", phone, at)
        offered.append(offered_to(session, at))
        at += timedelta(minutes=1)
        end_call(session, request_id, at)

    assert offered == ["ben", "anna", "cleo", "ben", "anna", "cleo"]


def test_a_lower_priority_group_is_offered_first_even_when_idle_for_less_long(
    session: Session,
) -> None:
    first_line = agent(session, "anna", NOW - timedelta(minutes=1))
    backup = agent(session, "ben", NOW - timedelta(days=1))
    business(session, "shop", (first_line, 10), (backup, 20))
    ask(session, "shop", PHONES[0])
    ask(session, "shop", PHONES[1])

    assert offered_to(session) == "anna"
    assert offered_to(session) == "ben", "the backup group takes what the first cannot"


def test_a_paused_offline_or_busy_phone_is_not_offered_a_call(
    session: Session, three: list[Agent]
) -> None:
    anna, ben, cleo = three
    agents_service.pause(session, "ben", "lunch")
    anna.presence = "offline"  # her phone unregistered
    cleo.presence = "in_use"  # on a call of her own
    session.commit()
    ask(session, "shop", PHONES[0])

    assert offered_to(session) is None, "nobody can take it: it waits in the queue"
    assert routing.state_of(anna, NOW) == AgentState.OFFLINE
    assert routing.state_of(ben, NOW) == AgentState.PAUSED
    assert ben.pause_reason == "lunch"
    assert routing.state_of(cleo, NOW) == AgentState.ON_CALL

    cleo.presence = "available"
    session.commit()
    assert offered_to(session) == "cleo"


def alone_with_wrap_up(session: Session, seconds: int) -> Agent:
    """anna, the only agent of a shop that gives its agents ``seconds`` after a call."""
    anna = agent(session, "anna")
    shop = business(session, "shop", (anna, 10))
    shop.wrap_up_seconds = seconds
    session.commit()
    return anna


def test_after_a_call_the_agent_wraps_up_before_the_next(session: Session) -> None:
    anna = alone_with_wrap_up(session, seconds=30)
    first = ask(session, "shop", PHONES[0])
    assert offered_to(session) == "anna"
    end_call(session, first, NOW + timedelta(minutes=2))
    ask(session, "shop", PHONES[1], NOW + timedelta(minutes=2))

    session.refresh(anna)
    assert routing.state_of(anna, NOW + timedelta(minutes=2)) == AgentState.WRAP_UP
    assert offered_to(session, NOW + timedelta(minutes=2, seconds=29)) is None
    assert offered_to(session, NOW + timedelta(minutes=2, seconds=30)) == "anna"


def test_an_agent_who_did_not_answer_is_free_again_without_wrap_up(session: Session) -> None:
    anna = alone_with_wrap_up(session, seconds=30)
    first = ask(session, "shop", PHONES[0])
    assert offered_to(session) == "anna"
    end_call(session, first, NOW + timedelta(seconds=20), talked=False)

    session.refresh(anna)
    assert routing.state_of(anna, NOW + timedelta(seconds=20)) == AgentState.AVAILABLE
    assert anna.idle_since is None, "still the longest idle: she took no call"


def test_an_agent_of_two_businesses_never_gets_two_call_backs_at_once(session: Session) -> None:
    anna = agent(session, "anna")
    business(session, "shop", (anna, 10))
    business(session, "cafe", (anna, 10))
    shop_request = ask(session, "shop", PHONES[0])
    ask(session, "cafe", PHONES[1], NOW + timedelta(seconds=1))

    assert offered_to(session, NOW + timedelta(seconds=2)) == "anna"
    assert offered_to(session, NOW + timedelta(seconds=2)) is None, "anna is on the shop's call"
    session.refresh(anna)
    assert anna.on_call == shop_request
    assert routing.state_of(anna, NOW) == AgentState.ON_CALL

    end_call(session, shop_request, NOW + timedelta(minutes=1))
    assert offered_to(session, NOW + timedelta(minutes=1)) == "anna"


def test_ringing_the_next_agent_frees_the_one_before(session: Session, three: list[Agent]) -> None:
    request_id = ask(session, "shop", PHONES[0])
    claim = claim_next(session, "worker-a", NOW)
    assert claim is not None
    assert [name for _, name in claim.agents] == ["ben", "anna", "cleo"]
    anna_id = claim.agents[1][0]
    agents_service.pause(session, "anna", None)

    assert not routing.hand_over(session, anna_id, request_id, NOW), "anna paused meanwhile"
    assert routing.hand_over(session, claim.agents[2][0], request_id, NOW)
    session.commit()

    holding = {a.name: a.on_call for a in agents_service.list_agents(session)}
    assert holding == {"anna": None, "ben": None, "cleo": request_id}


def test_a_dead_workers_call_frees_its_agent_when_its_lease_runs_out(
    session: Session, three: list[Agent]
) -> None:
    request_id = ask(session, "shop", PHONES[0])
    claim = claim_next(session, "worker-a", NOW)
    assert claim is not None

    assert release_stale_claims(session, NOW + timedelta(hours=1)) == 1

    assert all(a.on_call is None for a in agents_service.list_agents(session))
    assert session.get_one(CallbackRequest, request_id).status == RequestStatus.RETRY_WAIT


def test_available_again_ends_a_pause_and_a_wrap_up(session: Session, three: list[Agent]) -> None:
    ben = three[1]
    agents_service.pause(session, "ben", "meeting")
    ben.wrap_up_until = NOW + timedelta(minutes=5)
    session.commit()

    agents_service.make_available(session, "ben")

    assert routing.state_of(ben, NOW) == AgentState.AVAILABLE
    assert ben.pause_reason is None


def test_a_pause_reason_too_long_is_refused_by_name(session: Session, three: list[Agent]) -> None:
    with pytest.raises(agents_service.AgentError, match="at most 100 characters"):
        agents_service.pause(session, "ben", "x" * 101)
    with pytest.raises(agents_service.AgentError, match="no agent named 'zoe'"):
        agents_service.pause(session, "zoe", None)


def test_an_agent_held_for_a_request_canceled_behind_its_calls_back_is_freed(
    session: Session, three: list[Agent]
) -> None:
    """The worker died mid-call and the visitor canceled: no call flow is left to free ben."""
    request_id = ask(session, "shop", PHONES[0])
    assert offered_to(session) == "ben"
    intake.cancel(session, session.get_one(CallbackRequest, request_id), "the visitor canceled")
    under_way = ask(session, "shop", PHONES[1])
    assert offered_to(session) == "anna"

    done = housekeeping.one_round(session, "node-1", NOW + timedelta(seconds=30))

    assert done.freed == 1
    holding = {a.name: a.on_call for a in agents_service.list_agents(session)}
    assert holding["ben"] is None
    assert holding["anna"] == under_way, "a call under way keeps its agent"


def test_a_call_ending_as_its_request_is_claimed_again_leaves_the_new_claims_agent_held(
    sessions: sessionmaker[Session], three: list[Agent]
) -> None:
    """Worker a's call ends late: its lease ran out and housekeeping put the request back. Just
    as a reads the request, worker c claims it again, holding an agent for it."""
    with sessions() as session:
        request_id = ask(session, "shop", PHONES[0])
        late_claim = claim_next(session, "worker-a", NOW)
        assert late_claim is not None
        assert release_stale_claims(session, NOW + timedelta(minutes=3)) == 1
        promote_due(session, NOW + timedelta(minutes=10))
    held_by_c: list[str] = []
    hooked: list[bool] = []

    def claimed_again_meanwhile(target: CallbackRequest, _context: object) -> None:
        if hooked or target.id != request_id:
            return
        hooked.append(True)  # once: the claim below loads the request too
        with sessions() as other:
            claim = claim_next(other, "worker-c", NOW + timedelta(minutes=10))
            assert claim is not None
            held_by_c.append(claim.agents[0][1])

    late = AgentFirstCall(None, sessions, None, CallSettings(app="test"), late_claim, print)  # type: ignore[arg-type]
    event.listen(CallbackRequest, "load", claimed_again_meanwhile)
    try:
        late._close(16, "Normal Clearing")
    finally:
        event.remove(CallbackRequest, "load", claimed_again_meanwhile)

    assert held_by_c, "worker c claimed the request while a was closing its call"
    with sessions() as session:
        holding = {a.name: a.on_call for a in agents_service.list_agents(session)}
        request = session.get_one(CallbackRequest, request_id)
        assert (request.status, request.claimed_by) == (RequestStatus.DIALING_AGENT, "worker-c")
    assert holding[held_by_c[0]] == request_id, "c's agent is still held for c's call"
