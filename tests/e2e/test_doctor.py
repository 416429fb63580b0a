"""`cbserver doctor` run as an admin runs it, against a real Asterisk and sipp phones and trunk.

An installation of its own (own Asterisk, database, trunk and agent ports), so that what other
tests add to the session's instance does not change what doctor finds.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import update

from cbserver import agents as agents_service
from cbserver import db
from cbserver.ari import AriClient
from cbserver.asterisk.instance import AsteriskInstance
from cbserver.config import Settings
from cbserver.models import Agent
from cbserver.sipp import SippPeer
from tests.e2e.conftest import ari_config, instance_environ
from tests.e2e.harness import EventRecorder, free_ports

APP = "cbserver-doctor-e2e"


@dataclass(frozen=True)
class Installation:
    environ: dict[str, str]
    instance: AsteriskInstance
    trunk_port: int
    alice_port: int

    @property
    def trunk_uri(self) -> str:
        return f"sip:127.0.0.1:{self.trunk_port}"

    @property
    def alice_uri(self) -> str:
        return f"sip:alice@127.0.0.1:{self.alice_port}"


@dataclass(frozen=True)
class Outcome:
    exit_code: int
    stdout: str
    stderr: str

    def line(self, check: str) -> str:
        [found] = [line for line in self.stdout.splitlines() if f" {check}: " in line]
        return found


@pytest.fixture(scope="module")
def installation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installation]:
    environ = instance_environ(tmp_path_factory.mktemp("doctor"), "doctor")
    trunk_port, alice_port = free_ports(2)
    environ["CBSERVER_TRUNK_URI"] = f"sip:127.0.0.1:{trunk_port}"
    environ["CBSERVER_ARI_APP"] = APP
    settings = Settings.load(environ={**os.environ, **environ})
    engine = db.make_engine(settings.effective_database_url)
    db.upgrade(engine)
    with db.make_session_factory(engine)() as session:
        agents_service.add_agent(session, "alice", contact=f"sip:alice@127.0.0.1:{alice_port}")
        agents = agents_service.list_agents(session)
    instance = AsteriskInstance(settings)
    instance.start(agents, progress=print)
    yield Installation(environ, instance, trunk_port, alice_port)
    instance.stop()
    engine.dispose()


@pytest.fixture
async def worker(installation: Installation) -> AsyncIterator[None]:
    """A worker's Stasis app registered on the installation's Asterisk while the test runs."""
    async with AriClient(ari_config(installation.instance, APP)) as client:
        recorder = EventRecorder(client)
        await recorder.start()
        yield
        await recorder.stop()


async def doctor(environ: dict[str, str], *args: str) -> Outcome:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cbserver",
        "doctor",
        *args,
        env={**os.environ, **environ},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return Outcome(process.returncode, stdout.decode(), stderr.decode())


async def test_all_well_says_ok_for_every_part_and_exits_0(
    installation: Installation, worker: None, sipp: Callable[..., SippPeer]
) -> None:
    trunk = sipp("trunk", installation.trunk_port)
    sipp("alice", installation.alice_port)

    outcome = await doctor(installation.environ)

    assert outcome.exit_code == 0, outcome.stdout + outcome.stderr
    assert outcome.stderr == ""
    checks = [line.split(":", 1)[0].split(None, 1) for line in outcome.stdout.splitlines()]
    assert checks == [
        ["ok", "database"],
        ["ok", "migrations"],
        ["ok", "ARI"],
        ["ok", "worker"],
        ["ok", "AMI"],
        ["ok", "trunk"],
        ["ok", "agent alice"],
    ]
    assert f"a worker is connected (Stasis app {APP!r})" in outcome.line("worker")
    assert outcome.line("trunk").startswith(
        f"ok       trunk: {installation.trunk_uri} is reachable in "
    )
    assert outcome.line("trunk").endswith(" ms (200 OK)")
    assert outcome.line("agent alice").startswith(
        f"ok       agent alice: the fixed phone at {installation.alice_uri} is reachable in "
    )
    assert trunk.received("OPTIONS"), "the trunk was asked with a real SIP OPTIONS"


async def test_a_trunk_whose_peer_is_not_running_is_unreachable(
    installation: Installation, worker: None, sipp: Callable[..., SippPeer]
) -> None:
    sipp("alice", installation.alice_port)

    outcome = await doctor(installation.environ, "--json")

    assert outcome.exit_code == 1
    report = json.loads(outcome.stdout)
    assert report["ok"] is False
    failed = [c for c in report["checks"] if not c["ok"]]
    assert failed == [
        {
            "check": "trunk",
            "ok": False,
            "found": f"{installation.trunk_uri} is unreachable: nothing listens on 127.0.0.1 "
            f"port {installation.trunk_port}",
            "fix": "Check that the SIP provider (or the demo gateway `cbserver run` starts) is "
            "up, that CBSERVER_TRUNK_URI is right and that no firewall drops SIP",
        }
    ]


async def test_agents_whose_phones_are_not_there_are_named(
    installation: Installation, worker: None, sipp: Callable[..., SippPeer]
) -> None:
    sipp("trunk", installation.trunk_port)
    engine = db.make_engine(installation.environ["CBSERVER_DATABASE_URL"])
    sessions = db.make_session_factory(engine)
    with sessions() as session:
        agents_service.add_agent(session, "dave")
    try:
        outcome = await doctor(installation.environ)
    finally:
        # The other tests expect alice alone.
        with sessions.begin() as session:
            session.execute(update(Agent).where(Agent.name == "dave").values(active=False))
        engine.dispose()

    assert outcome.exit_code == 1
    assert outcome.line("agent alice") == (
        f"PROBLEM  agent alice: the fixed phone at {installation.alice_uri} is unreachable: "
        f"nothing listens on 127.0.0.1 port {installation.alice_port}. Check that the phone is "
        "on and connected, and its address in `cbserver agent list`"
    )
    assert outcome.line("agent dave").startswith(
        "PROBLEM  agent dave: the phone is not registered. Sign in the phone with the SIP "
        "account 'dave'"
    )
    assert outcome.line("trunk").startswith("ok ")


async def test_a_wrong_ari_password_is_said_plainly_and_never_printed(
    installation: Installation, tmp_path: Path
) -> None:
    real = installation.instance.secrets()
    wrong = {
        "ari": {"username": real.ari.username, "password": "wrong-ari-password"},
        "ami": {"username": real.ami.username, "password": "wrong-ami-password"},
    }
    directory = tmp_path / "asterisk" / "doctor"
    directory.mkdir(parents=True)
    (directory / "secrets.json").write_text(json.dumps(wrong))
    environ = {**installation.environ, "CBSERVER_STATE_DIR": str(tmp_path)}

    outcome = await doctor(environ)

    assert outcome.exit_code == 1
    assert "Traceback" not in outcome.stderr
    for password in ("wrong-ari-password", "wrong-ami-password", real.ari.password):
        assert password not in outcome.stdout + outcome.stderr
    port = installation.instance.settings.http_port
    assert outcome.line("ARI") == (
        f"PROBLEM  ARI: ARI at http://127.0.0.1:{port}/ari refused the user {real.ari.username}: "
        f"the password in {directory / 'secrets.json'} does not match Asterisk's ari.conf. "
        "Restart Asterisk so that it reads them again: `cbserver asterisk stop`, then "
        "`cbserver asterisk start`"
    )
    assert outcome.line("AMI").startswith(
        f"PROBLEM  AMI: AMI at 127.0.0.1:{installation.instance.settings.ami_port} refused the "
        f"user {real.ami.username}"
    )
