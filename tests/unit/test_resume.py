"""A restarted worker taking up its calls, step by step, without Asterisk: for each state a call
can be left in, what the worker asks of Asterisk and what the request then records.

Asterisk is a fake that answers from the test's table of live channels and bridges and writes
down every request; the database is real (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from sqlalchemy.orm import Session, sessionmaker

from cbserver.adoption import OnAsterisk, owned_calls
from cbserver.agents import add_agent
from cbserver.ari import AriClient, Bridge, Channel, StasisStart, parse_event
from cbserver.callflow import AgentFirstCall, CallSettings, VisitorFirstCall
from cbserver.claims import LEASE, bridge_name, claim_next
from cbserver.db import DatabaseThread
from cbserver.intake import Submission, submit
from cbserver.models import (
    AgentAssignment,
    CallAttempt,
    CallbackRequest,
    CallOrder,
    RequestStatus,
    Subscriber,
)
from cbserver.states import transition

pytestmark = pytest.mark.postgres

NOW = datetime(2026, 11, 27, 11, 0, tzinfo=UTC)
VISITOR = "+12015550123"


@dataclass
class FakeAsterisk:
    """What a call flow asks of ARI, written down; channels and bridges as the test sets them."""

    channels: dict[str, str] = field(default_factory=dict)  # id -> state
    bridges: dict[str, tuple[str, ...]] = field(default_factory=dict)  # name -> channel ids
    asked: list[tuple[str, Any]] = field(default_factory=list)

    def found(self, request_id: str) -> OnAsterisk:
        """What adoption.look_up would have found."""
        return OnAsterisk(
            channels={c: channel(c, state) for c, state in self.channels.items()},
            bridges={
                name: bridge(f"bridge-{name}", name, ids) for name, ids in self.bridges.items()
            },
        )

    def asked_for(self, what: str) -> list[Any]:
        return [args for name, args in self.asked if name == what]

    async def originate(self, endpoint: str, **options: Any) -> Channel:
        self.asked.append(("originate", (endpoint, options["channel_id"])))
        return channel(options["channel_id"], "Down")

    async def hangup(self, channel_id: str, reason: str = "normal") -> bool:
        self.asked.append(("hangup", channel_id))
        return True

    async def create_bridge(self, type: str = "mixing", **options: Any) -> Bridge:
        self.asked.append(("create_bridge", options.get("name")))
        return bridge("new-bridge", options.get("name") or "", ())

    async def add_channel(self, bridge_id: str, channel_ids: list[str]) -> None:
        self.asked.append(("add_channel", (bridge_id, tuple(channel_ids))))

    async def destroy_bridge(self, bridge_id: str) -> bool:
        self.asked.append(("destroy_bridge", bridge_id))
        return True

    async def play(self, channel_id: str, media: Any, **options: Any) -> None:
        self.asked.append(("play", channel_id))

    async def stop_playback(self, playback_id: str) -> bool:
        self.asked.append(("stop_playback", playback_id))
        return False

    async def ring(self, channel_id: str) -> None:
        self.asked.append(("ring", channel_id))

    async def ring_stop(self, channel_id: str) -> None:
        self.asked.append(("ring_stop", channel_id))

    async def start_moh(self, channel_id: str, moh_class: str | None = None) -> None:
        self.asked.append(("start_moh", channel_id))

    async def stop_moh(self, channel_id: str) -> None:
        self.asked.append(("stop_moh", channel_id))


def channel(channel_id: str, state: str) -> Channel:
    return Channel.from_json({"id": channel_id, "state": state})


def bridge(bridge_id: str, name: str, channels: tuple[str, ...]) -> Bridge:
    return Bridge.from_json({"id": bridge_id, "name": name, "channels": list(channels)})


def open_shop(session: Session) -> Subscriber:
    """A business with two agents, anna then ben."""
    subscriber = Subscriber(
        slug="shop", display_name="Shop", country="US", caller_id="+12015550100"
    )
    session.add(subscriber)
    for name in ("anna", "ben"):
        agent = add_agent(session, name, contact=f"sip:{name}@127.0.0.1:5999").agent
        subscriber.assignments.append(AgentAssignment(agent=agent))
    session.commit()
    return subscriber


@pytest.fixture
def shop(session: Session) -> Subscriber:
    return open_shop(session)


@dataclass
class LeftBehind:
    """A request node-1 owned when it was killed, and the channel ids its attempt names."""

    request_id: str
    agent_channel: str
    visitor_channel: str


def left_in(session: Session, status: RequestStatus, *, visitor_first: bool = False) -> LeftBehind:
    shop = session.query(Subscriber).one()
    if visitor_first:
        shop.call_order = CallOrder.VISITOR_FIRST
        session.commit()
    request = submit(session, Submission("shop", VISITOR, consent=True), now=NOW).request
    claim = claim_next(session, "node-1", NOW)
    assert claim is not None
    session.refresh(request)
    attempt = session.get_one(CallAttempt, claim.attempt_id)
    agent_channel = f"cb-{request.id}-1-anna"
    visitor_channel = f"cb-{request.id}-1-visitor"
    attempt.agent_channel_id = agent_channel
    attempt.agent_id = claim.agents[0][0]
    attempt.visitor_channel_id = visitor_channel
    path = {
        RequestStatus.DIALING_AGENT: [],
        RequestStatus.DIALING_VISITOR: [RequestStatus.DIALING_VISITOR],
        RequestStatus.CONNECTED: [RequestStatus.DIALING_VISITOR, RequestStatus.CONNECTED],
    }[status]
    if visitor_first:
        path = {
            RequestStatus.DIALING_VISITOR: [],
            RequestStatus.DIALING_AGENT: [RequestStatus.DIALING_AGENT],
            RequestStatus.CONNECTED: [RequestStatus.DIALING_AGENT, RequestStatus.CONNECTED],
        }[status]
    for step in path:
        transition(session, request, step, "test")
    session.commit()
    return LeftBehind(request.id, agent_channel, visitor_channel)


async def take_up(
    sessions: sessionmaker[Session], database: DatabaseThread, asterisk: FakeAsterisk
) -> AgentFirstCall:
    """What the restarted worker does: find what it owned, take it up, carry it on."""
    with sessions() as session:
        [owned] = owned_calls(session, "node-1", (), NOW + timedelta(seconds=5), LEASE)
    flow = VisitorFirstCall if owned.claim.visitor_first else AgentFirstCall
    settings = CallSettings(app="test", accept_seconds=60, unreachable_seconds=0)
    ari = cast(AriClient, asterisk)
    call = flow(ari, sessions, database, settings, owned.claim, lambda _: None)
    found = asterisk.found(owned.claim.request_id)
    call.take_up(owned, found)
    await call.resume(owned, found)
    return call


def request_in(sessions: sessionmaker[Session], request_id: str) -> CallbackRequest:
    with sessions() as session:
        request = session.get_one(CallbackRequest, request_id)
        _ = request.attempts
        return request


def stasis_start(channel_id: str, request_id: str, leg: str) -> StasisStart:
    event = parse_event(
        {
            "type": "StasisStart",
            "application": "test",
            "timestamp": "",
            "args": ["callback", request_id, leg],
            "channel": {"id": channel_id, "state": "Up"},
        }
    )
    assert isinstance(event, StasisStart)
    return event


@pytest.fixture
def stop_timers() -> Iterator[list[AgentFirstCall]]:
    calls: list[AgentFirstCall] = []
    yield calls
    for call in calls:
        call._stop_accept_timer()


@pytest.mark.usefixtures("shop")
async def test_a_bridged_call_goes_on_untouched_and_its_lease_is_renewed(
    sessions: sessionmaker[Session], database: DatabaseThread
) -> None:
    with sessions() as session:
        left = left_in(session, RequestStatus.CONNECTED)
    legs = (left.agent_channel, left.visitor_channel)
    asterisk = FakeAsterisk(
        channels=dict.fromkeys(legs, "Up"), bridges={bridge_name(left.request_id): legs}
    )

    call = await take_up(sessions, database, asterisk)

    assert asterisk.asked == [], "nothing done to a call that talks"
    assert call.channels == set(legs)
    assert call.bridge_id == f"bridge-{bridge_name(left.request_id)}"
    request = request_in(sessions, left.request_id)
    assert request.status == RequestStatus.CONNECTED
    assert request.lease_until == NOW + timedelta(seconds=5) + LEASE


@pytest.mark.usefixtures("shop")
async def test_a_bridged_call_whose_visitor_left_meanwhile_ends_and_completes(
    sessions: sessionmaker[Session], database: DatabaseThread
) -> None:
    with sessions() as session:
        left = left_in(session, RequestStatus.CONNECTED)
    name = bridge_name(left.request_id)
    asterisk = FakeAsterisk(
        channels={left.agent_channel: "Up"}, bridges={name: (left.agent_channel,)}
    )

    await take_up(sessions, database, asterisk)

    assert asterisk.asked_for("hangup") == [left.agent_channel]
    assert asterisk.asked_for("destroy_bridge") == [f"bridge-{name}"]
    request = request_in(sessions, left.request_id)
    assert request.status == RequestStatus.COMPLETED
    [attempt] = request.attempts
    assert (attempt.outcome, attempt.hangup_cause_text) == (
        "answered",
        "the call ended while the worker was away",
    )


@pytest.mark.usefixtures("shop")
async def test_legs_bridged_just_before_the_kill_are_recorded_as_talking_not_bridged_again(
    sessions: sessionmaker[Session], database: DatabaseThread
) -> None:
    with sessions() as session:
        left = left_in(session, RequestStatus.DIALING_VISITOR)
    legs = (left.agent_channel, left.visitor_channel)
    asterisk = FakeAsterisk(
        channels=dict.fromkeys(legs, "Up"), bridges={bridge_name(left.request_id): legs}
    )

    await take_up(sessions, database, asterisk)

    assert asterisk.asked == []
    assert request_in(sessions, left.request_id).status == RequestStatus.CONNECTED


@pytest.mark.usefixtures("shop")
async def test_a_visitor_found_answered_is_bridged_once_though_its_stasis_start_follows(
    sessions: sessionmaker[Session], database: DatabaseThread
) -> None:
    with sessions() as session:
        left = left_in(session, RequestStatus.DIALING_VISITOR)
    asterisk = FakeAsterisk(channels={left.agent_channel: "Up", left.visitor_channel: "Up"})

    call = await take_up(sessions, database, asterisk)
    await call.handle(stasis_start(left.visitor_channel, left.request_id, "visitor"))

    assert asterisk.asked_for("create_bridge") == [bridge_name(left.request_id)]
    assert asterisk.asked_for("add_channel") == [
        ("new-bridge", (left.agent_channel, left.visitor_channel))
    ]
    assert request_in(sessions, left.request_id).status == RequestStatus.CONNECTED


@pytest.mark.usefixtures("shop")
async def test_a_visitor_still_ringing_is_waited_for_and_bridged_when_it_answers(
    sessions: sessionmaker[Session], database: DatabaseThread
) -> None:
    with sessions() as session:
        left = left_in(session, RequestStatus.DIALING_VISITOR)
    asterisk = FakeAsterisk(channels={left.agent_channel: "Up", left.visitor_channel: "Ringing"})

    call = await take_up(sessions, database, asterisk)
    assert asterisk.asked == [], "a ringing phone is left to ring"
    await call.handle(stasis_start(left.visitor_channel, left.request_id, "visitor"))

    assert len(asterisk.asked_for("create_bridge")) == 1
    assert request_in(sessions, left.request_id).status == RequestStatus.CONNECTED


@pytest.mark.usefixtures("shop")
async def test_an_agents_line_gone_while_the_worker_was_away_is_rung_again(
    sessions: sessionmaker[Session], database: DatabaseThread
) -> None:
    with sessions() as session:
        left = left_in(session, RequestStatus.DIALING_AGENT)
    asterisk = FakeAsterisk()

    await take_up(sessions, database, asterisk)

    # Rung again under the same id: the old channel is gone (or was never made).
    assert asterisk.asked_for("originate") == [("PJSIP/anna", left.agent_channel)]
    assert asterisk.asked_for("hangup") == []
    assert request_in(sessions, left.request_id).status == RequestStatus.DIALING_AGENT


@pytest.mark.usefixtures("shop")
async def test_an_agent_who_had_answered_hears_the_whisper_again(
    sessions: sessionmaker[Session], database: DatabaseThread, stop_timers: list[AgentFirstCall]
) -> None:
    with sessions() as session:
        left = left_in(session, RequestStatus.DIALING_AGENT)
    asterisk = FakeAsterisk(channels={left.agent_channel: "Up"})

    call = await take_up(sessions, database, asterisk)
    stop_timers.append(call)
    await call.handle(stasis_start(left.agent_channel, left.request_id, "agent"))

    assert asterisk.asked_for("stop_playback") == [f"{left.agent_channel}-whisper"]
    assert asterisk.asked_for("play") == [left.agent_channel], "once, not again at StasisStart"
    assert asterisk.asked_for("originate") == []


@pytest.mark.usefixtures("shop")
async def test_a_visitor_on_hold_who_left_ends_the_attempt_and_releases_the_agent(
    sessions: sessionmaker[Session], database: DatabaseThread
) -> None:
    with sessions() as session:
        left = left_in(session, RequestStatus.DIALING_AGENT, visitor_first=True)
    asterisk = FakeAsterisk(channels={left.agent_channel: "Ringing"})

    await take_up(sessions, database, asterisk)

    assert asterisk.asked_for("hangup") == [left.agent_channel]
    request = request_in(sessions, left.request_id)
    assert request.status == RequestStatus.RETRY_WAIT
    assert request.claimed_by is None
    [attempt] = request.attempts
    assert attempt.hangup_cause_text == "the visitor's line ended while the worker was away"


@pytest.mark.usefixtures("shop")
async def test_a_visitor_on_hold_keeps_holding_while_the_next_agent_is_rung(
    sessions: sessionmaker[Session], database: DatabaseThread
) -> None:
    with sessions() as session:
        left = left_in(session, RequestStatus.DIALING_AGENT, visitor_first=True)
    asterisk = FakeAsterisk(channels={left.visitor_channel: "Up"})

    await take_up(sessions, database, asterisk)

    assert asterisk.asked_for("hangup") == []
    assert asterisk.asked_for("originate") == [("PJSIP/anna", left.agent_channel)]
    assert request_in(sessions, left.request_id).status == RequestStatus.DIALING_AGENT
