"""A call-back end to end: the worker claims it, the agent presses 1, the visitor is called."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session, sessionmaker

from cbserver.agents import add_agent, list_agents
from cbserver.asterisk.instance import AsteriskInstance
from cbserver.callflow import CallSettings
from cbserver.clock import ShiftedClock
from cbserver.config import Settings
from cbserver.models import (
    OPEN_STATUSES,
    Agent,
    AgentAssignment,
    CallbackRequest,
    RequestStatus,
    Subscriber,
)
from cbserver.sipp import SippPeer
from cbserver.web import create_app
from cbserver.worker import Worker
from tests.e2e.conftest import Ports, ari_config
from tests.e2e.harness import free_ports, shown_status, until

WORKER_APP = "cbserver-worker-e2e"
VISITOR = "+12015550123"
BUSINESS = "+12015550100"


@dataclass
class Business:
    slug: str


@pytest.fixture
def plumber(sessions: sessionmaker[Session], request: pytest.FixtureRequest) -> Iterator[Business]:
    """A business served by agent alice; a slug of its own, as the e2e database is shared.
    What it leaves waiting (a retry not yet due) is canceled after the test: no later test's
    worker may ring alice for it, and alice is free."""
    slug = f"flow-{abs(hash(request.node.name)) % 10**8}"
    with sessions() as session:
        subscriber = Subscriber(slug=slug, display_name="Plumber", country="US", caller_id=BUSINESS)
        alice = session.scalars(select(Agent).where(Agent.name == "alice")).one()
        subscriber.assignments.append(AgentAssignment(agent=alice, priority=10))
        session.add(subscriber)
        session.commit()
        subscriber_id = subscriber.id
    yield Business(slug)
    with sessions() as session:
        theirs = select(CallbackRequest.id).where(CallbackRequest.subscriber_id == subscriber_id)
        # Canceled behind its call's back: the agent it held is free for the next test.
        session.execute(update(Agent).where(Agent.on_call.in_(theirs)).values(on_call=None))
        session.execute(
            update(CallbackRequest)
            .where(
                CallbackRequest.subscriber_id == subscriber_id,
                CallbackRequest.status.in_(OPEN_STATUSES),
            )
            .values(status=RequestStatus.CANCELED.value, claimed_by=None, lease_until=None)
        )
        session.commit()


def make_worker(
    asterisk: AsteriskInstance,
    sessions: sessionmaker[Session],
    name: str,
    call_options: dict[str, Any] | None = None,
    **options: Any,
) -> Worker:
    """A worker on the test's own Stasis app, quick to give up on an agent who does not accept."""
    return Worker(
        ari_config(asterisk, app=WORKER_APP),
        sessions,
        name=name,
        call_settings=CallSettings(app=WORKER_APP, accept_seconds=4, **(call_options or {})),
        **options,
    )


@pytest.fixture
async def worker(
    asterisk: AsteriskInstance, sessions: sessionmaker[Session]
) -> AsyncIterator[Worker]:
    running = make_worker(asterisk, sessions, "e2e-worker")
    stop = asyncio.Event()
    task = asyncio.create_task(running.run(stop))
    yield running
    stop.set()
    await asyncio.wait_for(task, 10)


def status_of(sessions: sessionmaker[Session], request_id: str) -> str:
    with sessions() as session:
        return session.get_one(CallbackRequest, request_id).status


async def reaches(
    sessions: sessionmaker[Session], request_id: str, status: str, within: float
) -> None:
    await until(
        lambda: status_of(sessions, request_id) == status,
        within=within,
        message=lambda: f"{status}; it is {status_of(sessions, request_id)}",
    )


def change(sessions: sessionmaker[Session], business: Business, **values: object) -> None:
    with sessions() as session:
        subscriber = session.scalars(
            select(Subscriber).where(Subscriber.slug == business.slug)
        ).one()
        for name, value in values.items():
            setattr(subscriber, name, value)
        session.commit()


async def test_agent_accepts_and_the_visitor_is_called_bridged_and_completed(
    settings: Settings,
    engine: Engine,
    sessions: sessionmaker[Session],
    plumber: Business,
    worker: Worker,
    sipp: Callable[..., SippPeer],
    ports: Ports,
) -> None:
    alice = sipp("alice", ports.alice, "agent_accepts.xml", "-d", "1000")
    visitor = sipp("trunk", ports.trunk, "uas_answer_hangup.xml", "-d", "2000")
    # Through the HTTP API, as a visitor's widget posts it; storing it wakes the worker.
    web = create_app(settings=settings, engine=engine, wake_worker=worker.wake).test_client()
    created = web.post(
        "/api/v1/callbacks", json={"subscriber": plumber.slug, "phone": VISITOR, "consent": True}
    )
    assert created.status_code == 201
    request_id = created.json["id"]  # type: ignore[index]

    await reaches(sessions, request_id, "completed", within=30)

    [agent_invite] = alice.received("INVITE")
    assert VISITOR in (agent_invite.header("From") or ""), "the agent sees who to call back"
    [trunk_invite] = visitor.received("INVITE")
    assert trunk_invite.request_uri == f"sip:{VISITOR}@127.0.0.1:{ports.trunk}"
    assert BUSINESS in (trunk_invite.header("From") or ""), "the visitor sees the business"
    with sessions() as session:
        request = session.get_one(CallbackRequest, request_id)
        assert [e.to_status for e in request.events] == [
            "queued",
            "dialing_agent",
            "dialing_visitor",
            "connected",
            "completed",
        ]
        [attempt] = request.attempts
        assert attempt.outcome == "answered"
        assert attempt.hangup_cause == 16
        assert attempt.answered_at is not None
        assert attempt.ended_at is not None
        talk = attempt.ended_at - attempt.answered_at
        assert 1.5 < talk.total_seconds() < 15, "about the visitor's two seconds, plus the whisper"
        assert request.claimed_by is None
    await until(lambda: alice.received("BYE"), message="the agent's phone hung up too")


async def test_the_visitors_status_page_shows_each_state_of_the_call(
    settings: Settings,
    engine: Engine,
    sessions: sessionmaker[Session],
    plumber: Business,
    worker: Worker,
    sipp: Callable[..., SippPeer],
    ports: Ports,
) -> None:
    sipp("alice", ports.alice, "agent_accepts.xml", "-d", "1000")
    sipp("trunk", ports.trunk, "visitor_rings_then_answers.xml", "-d", "1500")
    # The page is read 20 times a second to catch every state, beyond what the public-page
    # limit lets one address do in a slow minute (the limit has tests of its own).
    unlimited = settings.replace(rate_limit_public="off")
    web = create_app(settings=unlimited, engine=engine, wake_worker=worker.wake).test_client()
    created = web.post(
        "/api/v1/callbacks", json={"subscriber": plumber.slug, "phone": VISITOR, "consent": True}
    )
    assert created.status_code == 201
    page = urlsplit(created.json["status_url"])  # type: ignore[index]

    seen: list[str] = []

    def follow_the_page() -> bool:
        status = shown_status(web.get(f"{page.path}?{page.query}").get_data(as_text=True))
        if not seen or seen[-1] != status:
            seen.append(status)
        return status.startswith("Done")

    await until(follow_the_page, within=30, interval=0.05, message=lambda: f"done; saw {seen}")
    states = [
        "Getting someone for you now.",
        "Calling you now.",
        "You are connected.",
        "Done: thank you for talking to us.",
    ]
    waiting = "Waiting: we will call you as soon as someone is free."
    assert seen in (states, [waiting, *states]), "each state, in order, as the visitor sees it"


def ask_for_a_call_back(
    settings: Settings,
    engine: Engine,
    worker: Worker,
    business: Business,
    phone: str = VISITOR,
) -> str:
    web = create_app(settings=settings, engine=engine, wake_worker=worker.wake).test_client()
    created = web.post(
        "/api/v1/callbacks", json={"subscriber": business.slug, "phone": phone, "consent": True}
    )
    assert created.status_code == 201
    return str(created.json["id"])  # type: ignore[index]


@pytest.mark.parametrize(
    ("agent_scenario", "visitor_scenario", "outcome", "cause", "visitor_dialled"),
    [
        # The agent's cause is kept; the outcome says no agent took the call.
        ("agent_busy.xml", "uas_answer.xml", "no_agent", 17, False),
        ("agent_ignores_whisper.xml", "uas_answer.xml", "no_agent", 16, False),
        ("agent_accepts.xml", "agent_busy.xml", "busy", 17, True),
    ],
    ids=["agent-busy", "agent-never-presses-1", "visitor-busy"],
)
async def test_an_attempt_that_does_not_connect_is_recorded_and_retried(
    settings: Settings,
    engine: Engine,
    sessions: sessionmaker[Session],
    plumber: Business,
    worker: Worker,
    sipp: Callable[..., SippPeer],
    ports: Ports,
    agent_scenario: str,
    visitor_scenario: str,
    outcome: str,
    cause: int,
    visitor_dialled: bool,
) -> None:
    alice = sipp("alice", ports.alice, agent_scenario, "-d", "1000")
    visitor = sipp("trunk", ports.trunk, visitor_scenario)
    request_id = ask_for_a_call_back(settings, engine, worker, plumber)

    await reaches(sessions, request_id, "retry_wait", within=30)
    assert alice.received("INVITE")
    assert bool(visitor.received("INVITE")) == visitor_dialled
    with sessions() as session:
        request = session.get_one(CallbackRequest, request_id)
        [attempt] = request.attempts
        assert (attempt.outcome, attempt.hangup_cause) == (outcome, cause)
        assert attempt.ended_at is not None
        assert request.due_at > attempt.ended_at, "the retry is due after the interval"
        assert request.claimed_by is None
        assert f"attempt 1 {outcome}; trying again later" in request.events[-1].reason


@pytest.fixture
def backup(
    asterisk: AsteriskInstance, sessions: sessionmaker[Session], plumber: Business, ports: Ports
) -> str:
    """A second agent, after alice, with a phone on the bob port; Asterisk knows it at once."""
    with sessions() as session:
        agent = session.scalars(select(Agent).where(Agent.name == "backup")).first()
        if agent is None:
            agent = add_agent(
                session, "backup", contact=f"sip:backup@127.0.0.1:{ports.bob}", dtmf_mode="info"
            ).agent
        subscriber = session.scalars(
            select(Subscriber).where(Subscriber.slug == plumber.slug)
        ).one()
        subscriber.assignments.append(AgentAssignment(agent=agent, priority=20))
        session.commit()
        asterisk.sync_agents(list_agents(session, active_only=True))
    return "backup"


@pytest.mark.parametrize(
    ("first_agent", "given_up_with"),
    [("agent_busy.xml", "486"), ("agent_no_answer.xml", "CANCEL")],
    ids=["busy", "no-answer"],
)
async def test_an_agent_who_cannot_take_it_fails_over_to_the_next_within_the_same_attempt(
    asterisk: AsteriskInstance,
    settings: Settings,
    engine: Engine,
    sessions: sessionmaker[Session],
    plumber: Business,
    backup: str,
    sipp: Callable[..., SippPeer],
    ports: Ports,
    first_agent: str,
    given_up_with: str,
) -> None:
    alice = sipp("alice", ports.alice, first_agent)
    second = sipp("backup", ports.bob, "agent_accepts.xml", "-d", "1000")
    sipp("trunk", ports.trunk, "uas_answer_hangup.xml", "-d", "1000")
    # Alice's phone rings for two seconds (CBSERVER_AGENT_RING_SECONDS), then the backup's.
    hunting = make_worker(
        asterisk, sessions, "hunting-worker", call_options={"agent_ring_seconds": 2}
    )
    stop = asyncio.Event()
    task = asyncio.create_task(hunting.run(stop))
    request_id = ask_for_a_call_back(settings, engine, hunting, plumber)

    await reaches(sessions, request_id, "completed", within=30)
    stop.set()
    await asyncio.wait_for(task, 15)
    assert alice.received("INVITE")
    if given_up_with == "CANCEL":
        assert alice.received("CANCEL"), "alice's ringing phone was given up on"
    assert second.received("INVITE")
    with sessions() as session:
        request = session.get_one(CallbackRequest, request_id)
        [attempt] = request.attempts
        assert attempt.outcome == "answered"
        assert attempt.agent is not None
        assert attempt.agent.name == backup


async def test_a_failed_attempt_is_retried_when_due_and_then_succeeds(
    settings: Settings,
    engine: Engine,
    sessions: sessionmaker[Session],
    plumber: Business,
    worker: Worker,
    sipp: Callable[..., SippPeer],
    ports: Ports,
) -> None:
    change(sessions, plumber, retry_interval_seconds=2)
    busy = sipp("alice", ports.alice, "agent_busy.xml")
    sipp("trunk", ports.trunk, "uas_answer_hangup.xml", "-d", "1000")
    request_id = ask_for_a_call_back(settings, engine, worker, plumber)
    await reaches(sessions, request_id, "retry_wait", within=20)
    busy.stop()
    sipp("alice-again", ports.alice, "agent_accepts.xml", "-d", "1000")

    await reaches(sessions, request_id, "completed", within=30)
    with sessions() as session:
        request = session.get_one(CallbackRequest, request_id)
        assert [a.outcome for a in request.attempts] == ["no_agent", "answered"]
        assert "queued" in [e.to_status for e in request.events[1:]], "back in the queue when due"


async def test_visitor_first_calls_the_visitor_then_the_agent_and_bridges_them(
    settings: Settings,
    engine: Engine,
    sessions: sessionmaker[Session],
    plumber: Business,
    worker: Worker,
    sipp: Callable[..., SippPeer],
    ports: Ports,
) -> None:
    change(sessions, plumber, call_order="visitor_first")
    alice = sipp("alice", ports.alice, "agent_accepts.xml", "-d", "1000")
    # The visitor holds (greeting, music) while alice rings, hears the whisper, presses 1.
    visitor = sipp("trunk", ports.trunk, "uas_answer_hangup.xml", "-d", "8000")
    request_id = ask_for_a_call_back(settings, engine, worker, plumber)

    await reaches(sessions, request_id, "completed", within=40)
    [trunk_invite] = visitor.received("INVITE")
    assert trunk_invite.request_uri == f"sip:{VISITOR}@127.0.0.1:{ports.trunk}"
    assert alice.received("INVITE")
    with sessions() as session:
        request = session.get_one(CallbackRequest, request_id)
        assert [e.to_status for e in request.events] == [
            "queued",
            "dialing_visitor",
            "dialing_agent",
            "connected",
            "completed",
        ]
        [attempt] = request.attempts
        assert attempt.outcome == "answered"


async def test_a_stopping_worker_claims_nothing_more_and_ends_live_calls_honestly(
    asterisk: AsteriskInstance,
    settings: Settings,
    engine: Engine,
    sessions: sessionmaker[Session],
    plumber: Business,
    sipp: Callable[..., SippPeer],
    ports: Ports,
) -> None:
    alice = sipp("alice", ports.alice, "agent_accepts.xml", "-d", "1000")
    visitor = sipp("trunk", ports.trunk, "uas_answer.xml")  # talks until hung up
    stopping = make_worker(asterisk, sessions, "draining-worker", drain_seconds=1)
    stop = asyncio.Event()
    task = asyncio.create_task(stopping.run(stop))
    request_id = ask_for_a_call_back(settings, engine, stopping, plumber)
    await reaches(sessions, request_id, "connected", within=20)

    stop.set()
    later = ask_for_a_call_back(
        settings, engine, stopping, Business(plumber.slug), phone="+12015550124"
    )
    await asyncio.wait_for(task, 15)

    assert status_of(sessions, request_id) == "completed", "the talk happened: it is complete"
    assert status_of(sessions, later) == "queued", "nothing was claimed after the stop"
    await until(lambda: alice.received("BYE") and visitor.received("BYE"), within=5)
    with sessions() as session:
        [attempt] = session.get_one(CallbackRequest, request_id).attempts
        assert attempt.hangup_cause_text == "the worker stopped before the call ended"


async def test_asterisk_restarted_mid_queue_the_lost_call_is_closed_and_the_queue_completes(
    asterisk: AsteriskInstance,
    settings: Settings,
    engine: Engine,
    sessions: sessionmaker[Session],
    plumber: Business,
    worker: Worker,
    sipp: Callable[..., SippPeer],
    ports: Ports,
) -> None:
    alice = sipp("alice", ports.alice, "agent_accepts.xml", "-d", "1000")
    trunk = sipp("trunk", ports.trunk, "uas_answer.xml")
    request_id = ask_for_a_call_back(settings, engine, worker, plumber)
    await reaches(sessions, request_id, "connected", within=20)

    # A crash, not a stop: a stopping Asterisk hangs its channels up itself and says so.
    pid = asterisk.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    await until(lambda: asterisk.pid() is None, within=10, message="Asterisk gone")
    await until(lambda: not worker.asterisk_connected, within=10, message="the worker noticed")
    # Visitors keep asking while the switch is down.
    waiting = [
        ask_for_a_call_back(settings, engine, worker, plumber, phone=phone)
        for phone in ("+12015550124", "+12015550125")
    ]
    # The worker has been woken and has polled meanwhile: nothing may be claimed while down.
    await asyncio.sleep(2)
    assert [status_of(sessions, later) for later in waiting] == ["queued", "queued"]
    alice.stop()
    trunk.stop()
    sipp("alice-again", ports.alice, "agent_accepts.xml", "-d", "1000")
    sipp("trunk-again", ports.trunk, "uas_answer_hangup.xml", "-d", "1000")
    with sessions() as session:
        asterisk.start(list_agents(session, active_only=True), progress=print)

    await reaches(sessions, request_id, "completed", within=20)
    for later in waiting:
        await reaches(sessions, later, "completed", within=30)
    with sessions() as session:
        [attempt] = session.get_one(CallbackRequest, request_id).attempts
        assert attempt.hangup_cause_text == "lost while Asterisk was unreachable"
        for later in waiting:
            attempts = session.get_one(CallbackRequest, later).attempts
            assert [a.outcome for a in attempts] == ["answered"], "no attempt spent while down"


async def test_a_web_process_wakes_a_worker_process_at_once(
    asterisk: AsteriskInstance,
    settings: Settings,
    engine: Engine,
    sessions: sessionmaker[Session],
    plumber: Business,
    sipp: Callable[..., SippPeer],
    ports: Ports,
) -> None:
    wake_port = free_ports(1)[0]
    # Polling every minute: only the web's datagram can get this request dialled in time.
    separate = make_worker(asterisk, sessions, "woken-worker", poll_seconds=60, wake_port=wake_port)
    stop = asyncio.Event()
    task = asyncio.create_task(separate.run(stop))
    alice = sipp("alice", ports.alice, "agent_accepts.xml", "-d", "1000")
    sipp("trunk", ports.trunk, "uas_answer_hangup.xml", "-d", "1000")
    await asyncio.sleep(0.5)  # the worker's first poll passes before anything is due

    web = create_app(settings=settings.replace(worker_wake_port=wake_port), engine=engine)
    created = web.test_client().post(
        "/api/v1/callbacks", json={"subscriber": plumber.slug, "phone": VISITOR, "consent": True}
    )
    assert created.status_code == 201
    request_id = created.json["id"]  # type: ignore[index]
    await until(lambda: alice.received("INVITE"), within=10, message="the agent ringing")
    await reaches(sessions, request_id, "completed", within=20)
    stop.set()
    await asyncio.wait_for(task, 15)


async def test_a_visitor_who_never_answers_is_retried_then_the_request_fails(
    asterisk: AsteriskInstance,
    settings: Settings,
    engine: Engine,
    sessions: sessionmaker[Session],
    plumber: Business,
    sipp: Callable[..., SippPeer],
    ports: Ports,
) -> None:
    change(sessions, plumber, max_attempts=2, retry_interval_seconds=1)
    alice = sipp("alice", ports.alice, "agent_accepts.xml", "-d", "500")
    visitor = sipp("trunk", ports.trunk, "agent_no_answer.xml")  # rings, never answers
    quick = make_worker(
        asterisk,
        sessions,
        "patient-worker",
        call_options={"visitor_ring_seconds": 2, "unreachable_seconds": 1},
    )
    stop = asyncio.Event()
    task = asyncio.create_task(quick.run(stop))
    request_id = ask_for_a_call_back(settings, engine, quick, plumber)

    await reaches(sessions, request_id, "failed", within=40)
    stop.set()
    await asyncio.wait_for(task, 15)
    assert len(visitor.received("INVITE")) == 2
    assert len(visitor.received("CANCEL")) == 2, "each unanswered ring was given up"
    assert len(alice.received("INVITE")) == 2
    with sessions() as session:
        request = session.get_one(CallbackRequest, request_id)
        assert [(a.outcome, a.hangup_cause) for a in request.attempts] == [
            ("no_answer", 19),
            ("no_answer", 19),
        ]
        assert request.events[-1].reason == "attempt 2 no_answer; no attempts left"


async def test_a_booked_slot_is_dialled_within_a_second_of_its_start(
    asterisk: AsteriskInstance,
    settings: Settings,
    engine: Engine,
    sessions: sessionmaker[Session],
    plumber: Business,
    sipp: Callable[..., SippPeer],
    ports: Ports,
) -> None:
    alice = sipp("alice", ports.alice, "agent_accepts.xml", "-d", "500")
    sipp("trunk", ports.trunk, "uas_answer_hangup.xml", "-d", "500")
    change(sessions, plumber, slot_minutes=5, slot_capacity=1)
    # Web and worker share one clock; it is set once both are up (below).
    clock = ShiftedClock(timedelta(0))
    # Polling only every 30 s: what dials on time is the scheduler's timed wake-up.
    scheduled_worker = make_worker(asterisk, sessions, "slot-worker", clock=clock, poll_seconds=30)
    stop = asyncio.Event()
    task = asyncio.create_task(scheduled_worker.run(stop))
    try:
        web = create_app(
            settings=settings, engine=engine, wake_worker=scheduled_worker.wake, clock=clock
        ).test_client()
        await until(lambda: scheduled_worker.asterisk_connected, within=15, message="the worker")
        # The next 5-minute slot starts 3 s from now, on the shared clock.
        real = datetime.now(UTC)
        boundary = real.replace(second=0, microsecond=0) + timedelta(minutes=5 - real.minute % 5)
        clock.offset = boundary - (real + timedelta(seconds=3))
        slot_start = boundary
        created = web.post(
            "/api/v1/callbacks",
            json={
                "subscriber": plumber.slug,
                "phone": VISITOR,
                "when": slot_start.isoformat(),
                "consent": True,
            },
        )
        assert created.status_code == 201, created.json
        assert created.json["status"] == "scheduled"  # type: ignore[index]
        request_id = created.json["id"]  # type: ignore[index]

        # Not before the slot's start (the lower bound below), and within a second of it.
        await until(lambda: alice.received("INVITE"), within=10, message="the agent's INVITE")
        [invite] = alice.received("INVITE")
        assert invite.at is not None
        slot_start_real = (slot_start - clock.offset).timestamp()
        lateness = invite.at - slot_start_real
        assert -0.05 <= lateness <= 1.0, f"dialled {lateness:+.3f} s from the slot's start"
        await reaches(sessions, request_id, "completed", within=20)
        with sessions() as session:
            reasons = [e.reason for e in session.get_one(CallbackRequest, request_id).events]
        assert reasons[:2] == [
            f"booked for {slot_start:%a %d %b, %H:%M} (UTC)",
            "the booked time has come",
        ]
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
