"""Asterisk stopped and started again under a running worker: the queue waits, then completes.

An installation of its own (own Asterisk on its own ports, database, trunk and agent peers), so
that stopping Asterisk does not disturb the session's instance.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from cbserver import agents as agents_service
from cbserver import db
from cbserver.ari import AriConfig
from cbserver.asterisk.instance import AsteriskInstance
from cbserver.callflow import CallSettings
from cbserver.claims import IN_CALL
from cbserver.config import Settings
from cbserver.models import Agent, AgentAssignment, Subscriber
from cbserver.sipp import SippPeer
from cbserver.web import create_app
from cbserver.worker import Worker
from tests.e2e.conftest import instance_environ
from tests.e2e.harness import Tally, dials, free_ports, statuses, until

APP = "cbserver-restart-e2e"
BUSINESS = "+12015550100"
# Six asked for before the stop, three while Asterisk is down.
BEFORE = [f"+120155501{n}" for n in range(30, 36)]
WHILE_DOWN = [f"+120155501{n}" for n in range(36, 39)]
RESUME_BUDGET = 5.0


@dataclass(frozen=True)
class Installation:
    settings: Settings
    instance: AsteriskInstance
    engine: Engine
    sessions: sessionmaker[Session]
    trunk_port: int
    alice_port: int

    def agents(self) -> list[Agent]:
        with self.sessions() as session:
            return agents_service.list_agents(session, active_only=True)


@pytest.fixture
def installation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installation]:
    environ = instance_environ(tmp_path_factory.mktemp("restart"), "restart")
    trunk_port, alice_port = free_ports(2)
    environ["CBSERVER_TRUNK_URI"] = f"sip:127.0.0.1:{trunk_port}"
    environ["CBSERVER_ARI_APP"] = APP
    for limit in ("PER_IP", "PER_NUMBER", "PER_SUBSCRIBER", "NUMBERS_PER_IP", "PUBLIC"):
        environ[f"CBSERVER_RATE_LIMIT_{limit}"] = "off"  # nine visitors from one test client
    settings = Settings.load(environ={**os.environ, **environ})
    engine = db.make_engine(settings.effective_database_url)
    db.upgrade(engine)
    sessions = db.make_session_factory(engine)
    with sessions() as session:
        alice = agents_service.add_agent(
            session, "alice", contact=f"sip:alice@127.0.0.1:{alice_port}", dtmf_mode="info"
        ).agent
        subscriber = Subscriber(
            slug="restart",
            display_name="Plumber",
            country="US",
            caller_id=BUSINESS,
            retry_interval_seconds=1,
        )
        subscriber.assignments.append(AgentAssignment(agent=alice, priority=10))
        session.add(subscriber)
        session.commit()
    installation = Installation(
        settings, AsteriskInstance(settings), engine, sessions, trunk_port, alice_port
    )
    installation.instance.start(installation.agents(), progress=print)
    yield installation
    installation.instance.stop()
    engine.dispose()


@pytest.mark.slow
async def test_asterisk_stopped_mid_run_the_worker_resumes_within_5_s_and_all_complete(
    installation: Installation, sipp: Callable[..., SippPeer]
) -> None:
    sessions = installation.sessions
    instance = installation.instance
    alice = sipp("alice", installation.alice_port, "agent_accepts.xml", "-d", "500")
    trunk = sipp("trunk", installation.trunk_port, "uas_answer_hangup.xml", "-d", "500")
    keys = instance.secrets().ari
    # The back-off a deployed worker has, not the quicker one of the other e2e tests.
    production = AriConfig(instance.ari_url, keys.username, keys.password, app=APP)
    worker = Worker(
        production,
        sessions,
        name="restart-worker",
        call_settings=CallSettings(app=APP, accept_seconds=4),
    )
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    web = create_app(
        settings=installation.settings, engine=installation.engine, wake_worker=worker.wake
    ).test_client()

    def ask(phone: str) -> None:
        created = web.post(
            "/api/v1/callbacks", json={"subscriber": "restart", "phone": phone, "consent": True}
        )
        assert created.status_code == 201, created.json

    try:
        await until(lambda: worker.asterisk_connected, within=15, message="the worker on ARI")
        for phone in BEFORE:
            ask(phone)

        # Two calls done and the third under way: the stop cuts a live call.
        def mid_run() -> bool:
            now = statuses(sessions)
            return now["completed"] >= 2 and any(now[s] for s in IN_CALL)

        await until(mid_run, within=30, interval=0.01, message=lambda: f"{statuses(sessions)}")
        down_from = datetime.now(UTC)
        await asyncio.to_thread(instance.stop)
        await until(lambda: not worker.asterisk_connected, within=5, message="the worker noticed")
        for phone in WHILE_DOWN:
            ask(phone)  # each wakes the worker, which must not claim while Asterisk is away

        starting = asyncio.create_task(
            asyncio.to_thread(instance.start, installation.agents(), print)
        )
        async with httpx.AsyncClient(auth=(keys.username, keys.password), timeout=1) as http:

            async def ari_answers() -> float | None:
                try:
                    answer = await http.get(f"{instance.ari_url}/asterisk/info")
                except httpx.HTTPError:
                    return None
                return time.time() if answer.is_success else None

            ari_up: float = await until(ari_answers, within=30, interval=0.02, message="ARI")
        await starting
        back_at = datetime.fromtimestamp(ari_up, UTC)

        def dialled_since_up(*peers: SippPeer) -> list[float]:
            invites = [i for peer in peers for i in dials(peer)]
            return sorted(i.at for i in invites if i.at is not None and i.at > ari_up)

        # Agent first: the first call after the restart rings the agent, then the trunk.
        await until(lambda: dialled_since_up(trunk), within=15, message="a trunk INVITE")
        resumed = dialled_since_up(alice, trunk)[0] - ari_up
        trunk_resumed = dialled_since_up(trunk)[0] - ari_up

        everyone = BEFORE + WHILE_DOWN

        def all_done() -> bool:
            return statuses(sessions)["completed"] == len(everyone)

        await until(all_done, within=45, interval=0.1, message=lambda: f"{statuses(sessions)}")
    finally:
        stop.set()
        await asyncio.wait_for(running, 15)

    tally = Tally.of(sessions, len(everyone), trunk)
    requests = tally.requests
    figures = (
        f"{tally}; after ARI answered, the first INVITE came in {resumed:.2f} s (the agent's), "
        f"at the trunk in {trunk_resumed:.2f} s; cut by the stop and retried: {tally.retried}"
    )
    print(f"\nAsterisk restart: {figures}")

    assert trunk_resumed <= RESUME_BUDGET, figures
    assert tally.lost == 0, figures
    assert tally.dialled_twice == [], figures
    assert tally.without_attempt == [], figures
    assert len(tally.retried) <= 1, f"only the call live at the stop is tried again; {figures}"
    for phone, request in requests.items():
        assert [a.outcome for a in request.attempts][-1] == "answered", phone
        spent_while_down = [a for a in request.attempts if down_from < a.started_at < back_at]
        history = [(e.at.time().isoformat(), e.to_status, e.reason) for e in request.events]
        assert spent_while_down == [], (
            f"{phone}: an attempt while Asterisk was down ({down_from.time()} to "
            f"{back_at.time()}): {history}"
        )
    for phone in WHILE_DOWN:
        assert len(requests[phone].attempts) == 1, f"{phone} waited: no attempt spent"
    attempts = sum(len(r.attempts) for r in requests.values())
    assert len(dials(alice)) <= attempts, f"the agent rung only within an attempt; {figures}"
