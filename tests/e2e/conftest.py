"""Fixtures for tests on a real Asterisk (the project's own config) with real sipp peers.

One Asterisk instance serves the whole session on free loopback ports. Each test gets fresh
sipp peers on the ports the session's PJSIP config points at, an ARI client, and a teardown
that hangs up every channel and destroys every bridge.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from cbserver import agents as agents_service
from cbserver import db
from cbserver.ari import AriClient, AriConfig
from cbserver.asterisk.instance import AsteriskInstance
from cbserver.config import Settings
from cbserver.sipp import SippPeer
from tests.e2e.harness import SCENARIOS, EventRecorder, free_media_ports, free_ports, until

TEST_APP = "cbserver-e2e"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.e2e)


@dataclass(frozen=True)
class Ports:
    """The sipp peers' ports, fixed for the session because the PJSIP config names them."""

    alice: int
    bob: int
    trunk: int


def instance_environ(state_dir: Path, name: str) -> dict[str, str]:
    """A CBSERVER_* environment for one test instance on free ports."""
    sip, http, ami, web, agi = free_ports(5)
    return {
        "CBSERVER_WEB_PORT": str(web),
        "CBSERVER_STATE_DIR": str(state_dir),
        "CBSERVER_ASTERISK_INSTANCE": name,
        "CBSERVER_SIP_PORT": str(sip),
        "CBSERVER_HTTP_PORT": str(http),
        "CBSERVER_AMI_PORT": str(ami),
        "CBSERVER_AGI_PORT": str(agi),
        "CBSERVER_RTP_PORT_START": "41000",
        "CBSERVER_RTP_PORT_END": "41999",
        "CBSERVER_DATABASE_URL": f"sqlite:///{state_dir / 'cbserver.sqlite3'}",
    }


@pytest.fixture(scope="session")
def ports() -> Ports:
    alice, bob, trunk = free_ports(3)
    return Ports(alice=alice, bob=bob, trunk=trunk)


@pytest.fixture(scope="session")
def e2e_environ(tmp_path_factory: pytest.TempPathFactory, ports: Ports) -> dict[str, str]:
    environ = instance_environ(tmp_path_factory.mktemp("state"), "e2e")
    environ["CBSERVER_TRUNK_URI"] = f"sip:127.0.0.1:{ports.trunk}"
    return environ


@pytest.fixture(scope="session")
def settings(e2e_environ: dict[str, str]) -> Settings:
    return Settings.load(environ={**os.environ, **e2e_environ})


@pytest.fixture(scope="session")
def asterisk(settings: Settings, ports: Ports) -> Iterator[AsteriskInstance]:
    """The session's Asterisk, started as `cbserver asterisk start` does, with agent alice."""
    engine = db.make_engine(settings.effective_database_url)
    db.upgrade(engine)
    with db.make_session_factory(engine)() as session:
        agents_service.add_agent(
            session, "alice", contact=f"sip:alice@127.0.0.1:{ports.alice}", dtmf_mode="info"
        )
        agents = agents_service.list_agents(session)
    instance = AsteriskInstance(settings)
    instance.start(agents, progress=print)
    yield instance
    instance.stop()
    engine.dispose()


@pytest.fixture
def spare_asterisk(tmp_path: Path) -> Iterator[AsteriskInstance]:
    """A separate instance for a test that restarts or breaks Asterisk; the session's stays up."""
    environ = instance_environ(tmp_path, "spare")
    instance = AsteriskInstance(Settings.load(environ={**os.environ, **environ}))
    instance.start([], progress=print)
    yield instance
    instance.stop()


@pytest.fixture
def sipp(tmp_path: Path) -> Iterator[Callable[..., SippPeer]]:
    """Start sipp peers for one test: ``sipp("trunk", port, "uas_answer.xml", "-d", "1000")``."""
    started: list[SippPeer] = []

    def start(name: str, port: int, scenario: str = "uas_answer.xml", *args: str) -> SippPeer:
        peer = SippPeer(
            name=name,
            port=port,
            workdir=tmp_path / "sipp",
            scenario=SCENARIOS / scenario,
            media_port=free_media_ports(port),
            extra_args=("-aa", *args),
        )
        peer.start()
        started.append(peer)
        return peer

    yield start
    for peer in started:
        peer.stop()


def ari_config(instance: AsteriskInstance, app: str = TEST_APP) -> AriConfig:
    keys = instance.secrets().ari
    return AriConfig(
        base_url=instance.ari_url,
        username=keys.username,
        password=keys.password,
        app=app,
        reconnect_initial=0.1,
        reconnect_max=1.0,
    )


@pytest.fixture
async def ari(asterisk: AsteriskInstance) -> AsyncIterator[AriClient]:
    async with AriClient(ari_config(asterisk)) as client:
        yield client
        for channel in await client.list_channels():
            await client.hangup(channel.id)
        for bridge in await client.list_bridges():
            await client.destroy_bridge(bridge.id)

        async def nothing_left() -> bool:
            return not await client.list_channels() and not await client.list_bridges()

        await until(nothing_left, within=10, message="all channels and bridges gone")


@pytest.fixture
async def events(ari: AriClient) -> AsyncIterator[EventRecorder]:
    """The test's Stasis application, registered while the test runs, recording its events."""
    recorder = EventRecorder(ari)
    await recorder.start()
    yield recorder
    await recorder.stop()


@pytest.fixture
def engine(settings: Settings, asterisk: AsteriskInstance) -> Iterator[Engine]:
    """The database the session's web and worker share (once Asterisk and the schema are up)."""
    engine = db.make_engine(settings.effective_database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return db.make_session_factory(engine)
