"""The call centre on the real Asterisk: three agents' sipp phones, the worker following their
presence and the call detail records over AMI. Each call-back rings the longest-idle available
agent; a paused agent is never rung; an agent wrapping up is rung again only once the wrap-up is
over; a bridged call's billable seconds are recorded on its attempt. Calls coming in from the
trunk go through the worker's FastAGI server: a visitor ringing back reaches the agents and
completes the request; with the worker away the caller hears an apology and nothing hangs."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from cbserver import agents as agents_service
from cbserver.ami import AmiConfig
from cbserver.ari import AriClient
from cbserver.asterisk.instance import AsteriskInstance
from cbserver.callflow import CallSettings
from cbserver.config import Settings
from cbserver.intake import Submission, submit
from cbserver.models import Agent, AgentAssignment, CallbackRequest, RequestStatus, Subscriber
from cbserver.sipp import SippPeer
from cbserver.views.console import console_state
from cbserver.worker import Worker
from tests.e2e.conftest import Ports, ari_config
from tests.e2e.harness import SCENARIOS, dials, free_media_ports, free_ports, until

APP = "cbserver-call-centre-e2e"
NAMES = ("anna", "ben", "cleo")


@dataclass
class Team:
    slug: str
    number: str  # the business's number: its call-backs' caller ID, and where calls come in
    agents: dict[str, str]  # short name -> agent (endpoint) name
    phones: dict[str, SippPeer]

    def rung(self) -> list[str]:
        """Who was rung, in the order their INVITEs arrived."""
        invites = [
            (invite.at or 0.0, short)
            for short, phone in self.phones.items()
            for invite in dials(phone)
        ]
        return [short for _, short in sorted(invites)]


@pytest.fixture
def team(
    sessions: sessionmaker[Session], asterisk: AsteriskInstance, sipp: Callable[..., SippPeer]
) -> Iterator[Team]:
    """A business served by three agents of its own at one priority, none of whom has had a
    call: offered in the order they were added, then by how long each has been idle."""
    tag = secrets.token_hex(3)
    number = f"+12015559{secrets.randbelow(1000):03d}"  # its own: the e2e database is shared
    ports = dict(zip(NAMES, free_ports(3), strict=True))
    agents = {short: f"{short}-{tag}" for short in NAMES}
    with sessions() as session:
        subscriber = Subscriber(
            slug=f"routing-{tag}", display_name="Team", country="US", caller_id=number
        )
        for short in NAMES:
            agent = agents_service.add_agent(
                session,
                agents[short],
                contact=f"sip:{agents[short]}@127.0.0.1:{ports[short]}",
                dtmf_mode="info",
            ).agent
            subscriber.assignments.append(AgentAssignment(agent=agent, priority=10))
        session.add(subscriber)
        session.commit()
        asterisk.sync_agents(agents_service.list_agents(session, active_only=True))
    phones = {
        short: sipp(agents[short], ports[short], "agent_accepts.xml", "-d", "300")
        for short in NAMES
    }
    yield Team(subscriber.slug, number, agents, phones)
    with sessions() as session:
        session.execute(
            update(Agent).where(Agent.name.in_(agents.values())).values(active=False, on_call=None)
        )
        session.commit()
        asterisk.sync_agents(agents_service.list_agents(session, active_only=True))


@pytest.fixture
async def worker(
    settings: Settings, asterisk: AsteriskInstance, sessions: sessionmaker[Session]
) -> AsyncIterator[Worker]:
    """A worker that follows presence and CDRs over AMI and answers the dialplan's FastAGI
    requests, as `cbserver worker` does."""
    keys = asterisk.secrets().ami
    running = Worker(
        ari_config(asterisk, app=APP),
        sessions,
        name=f"routing-{secrets.token_hex(2)}",
        call_settings=CallSettings(app=APP, accept_seconds=4),
        ami=AmiConfig("127.0.0.1", settings.ami_port, keys.username, keys.password),
        agi_port=settings.agi_port,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(running.run(stop))
    await until(lambda: running.asterisk_connected, within=15, message="the worker on ARI")
    yield running
    stop.set()
    await asyncio.wait_for(task, 15)


def ask(sessions: sessionmaker[Session], team: Team, phone: str) -> str:
    with sessions() as session:
        return submit(session, Submission(team.slug, phone, consent=True)).request.id


def ended_at(sessions: sessionmaker[Session], request_id: str) -> datetime | None:
    with sessions() as session:
        request = session.get_one(CallbackRequest, request_id)
        if request.status != RequestStatus.COMPLETED:
            return None
        return max(a.ended_at for a in request.attempts if a.ended_at is not None)


async def completed(sessions: sessionmaker[Session], request_id: str) -> datetime:
    ended: datetime = await until(
        lambda: ended_at(sessions, request_id), within=20, message=f"{request_id} completed"
    )
    return ended


def presence_of(sessions: sessionmaker[Session], name: str) -> str | None:
    with sessions() as session:
        return session.scalar(select(Agent.presence).where(Agent.name == name))


def change(sessions: sessionmaker[Session], team: Team, **values: object) -> None:
    with sessions() as session:
        subscriber = session.scalars(select(Subscriber).where(Subscriber.slug == team.slug)).one()
        for name, value in values.items():
            setattr(subscriber, name, value)
        session.commit()


async def test_longest_idle_first_a_paused_agent_skipped_and_wrap_up_respected(
    sessions: sessionmaker[Session],
    team: Team,
    worker: Worker,
    sipp: Callable[..., SippPeer],
    ports: Ports,
) -> None:
    sipp("trunk", ports.trunk, "uas_answer_hangup.xml", "-d", "300")
    for short in NAMES:
        # Fixed contacts: presence comes from the device state, which is "not in use".
        await until(
            lambda short=short: presence_of(sessions, team.agents[short]) == "available",
            within=10,
            message=f"{short} seen available over AMI",
        )

    # One at a time: each call-back goes to whoever has waited longest for one.
    for n in range(6):
        await completed(sessions, ask(sessions, team, f"+1201555014{n}"))
    assert team.rung() == ["anna", "ben", "cleo", "anna", "ben", "cleo"]

    with sessions() as session:
        agents_service.pause(session, team.agents["ben"], "training")
    for n in range(6, 8):
        await completed(sessions, ask(sessions, team, f"+1201555014{n}"))
    assert team.rung()[6:] == ["anna", "cleo"], "ben is paused: skipped, not rung"

    # Wrap-up: ben alone (the others paused), 3 s after each call. Two asked at once: the
    # second rings ben only once his wrap-up after the first is over.
    wrap_up = 3
    change(sessions, team, wrap_up_seconds=wrap_up)
    with sessions() as session:
        agents_service.make_available(session, team.agents["ben"])
        agents_service.pause(session, team.agents["anna"], None)
        agents_service.pause(session, team.agents["cleo"], None)
    first = ask(sessions, team, "+12015550148")
    second = ask(sessions, team, "+12015550149")
    first_ended = await completed(sessions, first)
    await completed(sessions, second)
    assert team.rung()[8:] == ["ben", "ben"]
    second_rang = dials(team.phones["ben"])[-1].at
    assert second_rang is not None
    waited = second_rang - first_ended.timestamp()
    assert wrap_up <= waited < wrap_up + 2, f"ben was rung again {waited:.2f} s after the call"


def answered(phone: SippPeer) -> float:
    """When the phone last answered a call (its 200 to an INVITE left)."""
    *_, answer = (
        m
        for m in phone.messages()
        if m.direction == "sent" and m.status == 200 and (m.header("CSeq") or "").endswith("INVITE")
    )
    assert answer.at is not None
    return answer.at


def hung_up(phone: SippPeer) -> float:
    """When the phone hung up (its BYE left)."""
    bye = next(m for m in phone.messages() if m.direction == "sent" and m.method == "BYE")
    assert bye.at is not None
    return bye.at


async def test_a_bridged_calls_billable_seconds_are_recorded_on_its_attempt(
    sessions: sessionmaker[Session],
    team: Team,
    worker: Worker,
    sipp: Callable[..., SippPeer],
    ports: Ports,
) -> None:
    talk_ms = 3200
    trunk = sipp("trunk", ports.trunk, "uas_answer_hangup.xml", "-d", str(talk_ms))
    request_id = ask(sessions, team, "+12015550150")
    await completed(sessions, request_id)

    def billed() -> int | None:
        with sessions() as session:
            [attempt] = session.get_one(CallbackRequest, request_id).attempts
            return attempt.billable_seconds

    seconds: int = await until(billed, within=5, message="the CDR's billable seconds")
    # Asterisk bills the bridged legs from the first answer (the agent's, who hears the
    # whisper, then ringback) to the hang-up: measured here on the wire.
    [agent] = [team.phones[short] for short in team.rung()[:1]]
    on_the_wire = hung_up(trunk) - answered(agent)
    print(f"\nCDR: billed {seconds} s; agent's answer to the visitor's BYE {on_the_wire:.2f} s")
    assert talk_ms / 1000 <= on_the_wire
    assert abs(seconds - on_the_wire) <= 1, f"billed {seconds} s, {on_the_wire:.2f} s on the wire"


def caller(tmp_path: Path, number: str, dialled: str) -> SippPeer:
    """A phone on the trunk side, calling ``dialled`` from ``number``."""
    port = free_ports(1)[0]
    return SippPeer(
        name=f"caller-{number}",
        port=port,
        workdir=tmp_path / "caller",
        scenario=SCENARIOS / "uac_calls_in.xml",
        media_port=free_media_ports(port),
        extra_args=("-s", dialled, "-key", "caller", number),
    )


def status_of(sessions: sessionmaker[Session], request_id: str) -> str:
    with sessions() as session:
        return session.get_one(CallbackRequest, request_id).status


def answering_agent(sessions: sessionmaker[Session], request_id: str) -> Agent | None:
    """The agent on the request's return call, while it lasts."""
    with sessions() as session:
        agent = session.scalars(select(Agent).where(Agent.on_call == request_id)).first()
        if agent is not None:
            session.expunge(agent)
        return agent


async def test_a_visitor_ringing_back_reaches_an_agent_whose_console_shows_the_request(
    settings: Settings,
    sessions: sessionmaker[Session],
    team: Team,
    worker: Worker,
    sipp: Callable[..., SippPeer],
    ports: Ports,
    tmp_path: Path,
) -> None:
    change(sessions, team, retry_interval_seconds=3600, wrap_up_seconds=60)
    sipp("trunk", ports.trunk, "agent_busy.xml")  # the visitor's line is busy at the call-back
    visitor = "+12015550160"
    request_id = ask(sessions, team, visitor)
    await until(
        lambda: status_of(sessions, request_id) == "retry_wait",
        within=20,
        message=lambda: f"the busy attempt; {status_of(sessions, request_id)}",
    )
    rung_before = len(team.rung())

    phone = caller(tmp_path, visitor, team.number)
    calling = asyncio.create_task(
        asyncio.to_thread(phone.call, f"127.0.0.1:{settings.sip_port}", timeout=25)
    )
    # During the call: the agent who answered is held by it, and their console shows the request.
    agent = await until(
        lambda: answering_agent(sessions, request_id), within=15, message="an agent answered"
    )
    with sessions() as session:
        view = console_state(session, session.get_one(Agent, agent.id), datetime.now(UTC))
    assert (view["state"], view["call"]["request_id"]) == ("on_call", request_id)
    assert view["call"]["visitor_phone"] == visitor
    assert [a["outcome_text"] for a in view["call"]["attempts"]] == [
        "busy",
        "the visitor called back: under way",
    ]
    exit_code = await calling

    assert exit_code == 0, phone.output_file.read_text(errors="replace")[-2000:]
    answer = next(m for m in phone.received() if m.status == 200)
    invites = [i for p in team.phones.values() for i in dials(p)][rung_before:]
    assert invites, "the business's agents were rung"
    assert all(visitor in (i.header("From") or "") for i in invites), "showing who rings"
    assert answer.at is not None
    assert invites[0].at is not None
    greeting = invites[0].at - answer.at
    print(f"\nreturn call: agents rung {greeting:.2f} s after the caller was answered")
    assert greeting >= 4, "after the greeting (cbserver's own prompt, about 4.5 s)"
    with sessions() as session:
        request = session.get_one(CallbackRequest, request_id)
        assert request.status == "completed"
        assert request.events[-1].reason == f"the visitor called back and {agent.name} answered"

    # After the call: its attempt closed with the seconds talked, the agent wrapping up.
    def closed() -> int | None:
        with sessions() as session:
            call = session.get_one(CallbackRequest, request_id).attempts[-1]
            return call.billable_seconds if call.ended_at is not None else None

    seconds = await until(closed, within=5, message="the return call's attempt closed")
    short = next(s for s, name in team.agents.items() if name == agent.name)
    talked = hung_up(phone) - answered(team.phones[short])
    print(f"return call: {seconds} s recorded, {talked:.2f} s on the wire")
    assert abs(seconds - talked) <= 1, f"recorded {seconds} s, {talked:.2f} s on the wire"
    with sessions() as session:
        view = console_state(session, session.get_one(Agent, agent.id), datetime.now(UTC))
    assert view["state"] == "wrap_up"
    assert view["call"]["request_id"] == request_id, "still on screen, for the note"
    assert view["call"]["attempts"][-1]["outcome_text"] == "the visitor called back: talked"


async def test_with_the_worker_away_a_caller_hears_an_apology_and_no_channel_is_left(
    settings: Settings, ari: AriClient, team: Team, tmp_path: Path
) -> None:
    phone = caller(tmp_path, "+12015550161", team.number)
    started = time.monotonic()
    exit_code = await asyncio.to_thread(phone.call, f"127.0.0.1:{settings.sip_port}", timeout=20)

    assert exit_code == 0, phone.output_file.read_text(errors="replace")[-2000:]
    flow = [m.method or m.status for m in phone.messages()]
    assert 200 in flow, "answered, for the apology"
    assert "BYE" in [m.method for m in phone.received()], "Asterisk hung up, not the caller"
    assert time.monotonic() - started < 4, "ended by Asterisk after the apology"
    assert team.rung() == [], "no agent rung"

    async def nothing_left() -> bool:
        return await ari.list_channels() == []

    await until(nothing_left, within=5, message="no channel left on Asterisk")
