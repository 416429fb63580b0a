"""`cbserver doctor` without Asterisk: the database checks, SIP OPTIONS against local UDP peers,
AMI against a small fake manager, and the command's lines, JSON and exit status."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine

from cbserver import agents as agents_service
from cbserver import db, doctor
from cbserver.asterisk.instance import Credentials
from cbserver.cli import main
from tests.e2e.harness import free_ports

ANSWER = (
    "SIP/2.0 {status}\r\nVia: SIP/2.0/UDP 127.0.0.1\r\nCall-ID: {call_id}\r\n"
    "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
)


class UdpPeer:
    """A SIP peer on a loopback UDP port: answers OPTIONS after ignoring the first few."""

    def __init__(self, ignore: int = 0, status: str = "200 OK", answer: bool = True) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.settimeout(0.05)
        self.port = self.socket.getsockname()[1]
        self.ignore = ignore
        self.status = status
        self.answer = answer
        self.received: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def uri(self) -> str:
        return f"sip:127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, sender = self.socket.recvfrom(4096)
            except TimeoutError:
                continue
            request = data.decode()
            self.received.append(request)
            if not self.answer or len(self.received) <= self.ignore:
                continue
            call_id = next(
                line.split(":", 1)[1].strip()
                for line in request.split("\r\n")
                if line.lower().startswith("call-id:")
            )
            trying = ANSWER.format(status="100 Trying", call_id=call_id)
            final = ANSWER.format(status=self.status, call_id=call_id)
            self.socket.sendto(trying.encode(), sender)
            self.socket.sendto(final.encode(), sender)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.socket.close()


@pytest.fixture
def peers() -> Iterator[list[UdpPeer]]:
    started: list[UdpPeer] = []
    yield started
    for peer in started:
        peer.close()


def closed_udp_port() -> int:
    return free_ports(1)[0]


# --- SIP OPTIONS -----------------------------------------------------------------------------


async def test_options_ping_reports_the_answer_and_its_round_trip(peers: list[UdpPeer]) -> None:
    peer = UdpPeer(status="404 Not Found")
    peers.append(peer)

    answer = await doctor.options_ping(f"sip:+12015550123@127.0.0.1:{peer.port}")

    assert answer.status == 404, "any final answer means the peer is there"
    assert answer.reason == "Not Found"
    assert 0 < answer.milliseconds < 1000
    [request] = peer.received
    assert request.startswith(f"OPTIONS sip:+12015550123@127.0.0.1:{peer.port} SIP/2.0\r\n")


async def test_options_ping_sends_again_when_the_first_request_is_lost(
    peers: list[UdpPeer],
) -> None:
    peer = UdpPeer(ignore=1)
    peers.append(peer)

    answer = await doctor.options_ping(peer.uri)

    assert answer.status == 200
    assert len(peer.received) == 2
    assert answer.milliseconds >= doctor.SIP_T1 * 1000


async def test_options_ping_to_a_closed_port_says_nothing_listens() -> None:
    port = closed_udp_port()

    answer = await doctor.options_ping(f"sip:127.0.0.1:{port}")

    assert answer.status == 0
    assert answer.reason == f"nothing listens on 127.0.0.1 port {port}"


async def test_options_ping_to_a_silent_peer_gives_up_in_time(peers: list[UdpPeer]) -> None:
    peer = UdpPeer(answer=False)
    peers.append(peer)
    started = time.monotonic()

    answer = await doctor.options_ping(peer.uri, within=0.8)

    assert time.monotonic() - started < 1.5
    assert answer.status == 0
    assert answer.reason == "no answer to SIP OPTIONS within 0.8 s"
    assert len(peer.received) == 2, "sent at 0 and 0.5 s"


@pytest.mark.parametrize(
    ("uri", "target"),
    [
        ("sip:gw.example.com", ("gw.example.com", 5060)),
        ("sip:+12015550123@192.0.2.1:5080", ("192.0.2.1", 5080)),
        ("<sip:alice@127.0.0.1:5062;ob>", ("127.0.0.1", 5062)),
        ("sip:[2001:db8::1]:5070", ("2001:db8::1", 5070)),
        ("http://example.com", None),
    ],
)
def test_sip_target(uri: str, target: tuple[str, int] | None) -> None:
    assert doctor.sip_target(uri) == target


def test_a_provisional_answer_or_another_call_is_not_the_answer() -> None:
    def answer(status: str, call_id: str) -> bytes:
        return ANSWER.format(status=status, call_id=call_id).encode()

    assert doctor.final_response(answer("100 Trying", "a"), "a") is None
    assert doctor.final_response(answer("200 OK", "b"), "a") is None
    assert doctor.final_response(answer("200 OK", "a"), "a") == (200, "OK")


# --- the database ----------------------------------------------------------------------------


def test_a_missing_sqlite_file_is_a_problem_and_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "none.sqlite3"

    findings, agents = doctor.check_database(f"sqlite:///{path}")

    [finding] = findings
    assert not finding.ok
    assert finding.found == f"the SQLite database {path} does not exist"
    assert "cbserver db upgrade" in finding.fix
    assert agents is None
    assert not path.exists()


@pytest.mark.postgres
def test_pending_migrations_are_named(engine: Engine, database_url: str) -> None:
    findings, agents = doctor.check_schema(engine, database_url)

    assert [(f.check, f.ok) for f in findings] == [("database", True), ("migrations", False)]
    assert findings[1].found.startswith(f"{len(db.pending_migrations(engine))} migration(s)")
    assert "0001, 0002" in findings[1].found
    assert "cbserver db upgrade" in findings[1].fix
    assert agents is None


@pytest.mark.postgres
def test_a_migrated_database_is_ok_and_lists_the_active_agents(
    engine: Engine, database_url: str
) -> None:
    db.upgrade(engine)
    with db.make_session_factory(engine)() as session:
        agents_service.add_agent(session, "alice", contact="sip:alice@127.0.0.1:5062")
        agents_service.add_agent(session, "bob")

    findings, agents = doctor.check_schema(engine, database_url)

    assert [(f.check, f.ok) for f in findings] == [("database", True), ("migrations", True)]
    assert agents == [
        doctor.AgentPhone("alice", "sip:alice@127.0.0.1:5062"),
        doctor.AgentPhone("bob", None),
    ]


def test_a_database_server_that_is_not_there_is_a_problem_without_its_password() -> None:
    [port] = free_ports(1, socket.SOCK_STREAM)
    url = f"postgresql+psycopg://cb:very-secret-pw@127.0.0.1:{port}/cb"

    findings, agents = doctor.check_database(url)

    [finding] = findings
    assert not finding.ok
    assert finding.found.startswith(f"postgresql+psycopg://cb:***@127.0.0.1:{port}/cb does not")
    assert "very-secret-pw" not in finding.line()
    assert agents is None


# --- AMI and the agents' phones, on a fake manager -------------------------------------------


class FakeAmi:
    """Just enough of Asterisk's manager: Login, Ping and PJSIPShowContacts."""

    def __init__(self, keys: Credentials, contacts: list[tuple[str, str]]) -> None:
        self.keys = keys
        self.contacts = contacts
        self.actions: list[str] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"Asterisk Call Manager/9.0.0\r\n")
        while True:
            try:
                block = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            headers = dict(
                line.split(": ", 1) for line in block.decode().strip().split("\r\n") if line
            )
            self.actions.append(headers["Action"])
            writer.write(self.answer(headers).encode())
            await writer.drain()

    def answer(self, action: dict[str, str]) -> str:
        action_id = f"ActionID: {action['ActionID']}\r\n"
        if action["Action"] == "Login":
            accepted = (action["Username"], action["Secret"]) == (
                self.keys.username,
                self.keys.password,
            )
            outcome = "Success" if accepted else "Error"
            return f"Response: {outcome}\r\n{action_id}Message: Authentication\r\n\r\n"
        if action["Action"] == "Ping":
            return f"Response: Success\r\n{action_id}Ping: Pong\r\n\r\n"
        listing = f"Response: Success\r\n{action_id}EventList: start\r\nMessage: follows\r\n\r\n"
        for name, uri in self.contacts:
            listing += (
                f"Event: ContactList\r\n{action_id}ObjectName: {name}\r\nUri: {uri}\r\n"
                "Status: NonQualified\r\n\r\n"
            )
        return listing + f"Event: ContactListComplete\r\n{action_id}EventList: Complete\r\n\r\n"


@pytest.fixture
async def fake_ami() -> AsyncIterator[tuple[FakeAmi, int]]:
    ami = FakeAmi(Credentials("ami-test", "ami-password"), [])
    server = await asyncio.start_server(ami.serve, "127.0.0.1", 0)
    yield ami, server.sockets[0].getsockname()[1]
    server.close()


async def test_ami_login_and_ping_are_ok(fake_ami: tuple[FakeAmi, int]) -> None:
    ami, port = fake_ami

    finding, manager = await doctor.check_ami(port, ami.keys)
    manager.close()

    assert finding == doctor.Finding("AMI", True, f"127.0.0.1:{port} accepts the user ami-test")
    assert ami.actions == ["Login", "Ping"]


async def test_ami_refusing_the_password_is_a_plain_problem(fake_ami: tuple[FakeAmi, int]) -> None:
    _, port = fake_ami

    finding, manager = await doctor.check_ami(port, Credentials("ami-test", "stale-password"))

    assert manager is None
    assert not finding.ok
    assert finding.found.startswith(f"AMI at 127.0.0.1:{port} refused the user ami-test")
    assert "cbserver asterisk stop" in finding.fix
    assert "stale-password" not in finding.line()


async def test_ami_that_is_not_there_is_a_problem() -> None:
    [port] = free_ports(1, socket.SOCK_STREAM)

    finding, manager = await doctor.check_ami(port, Credentials("ami-test", "pw"))

    assert manager is None
    assert finding.found == f"nothing answers at 127.0.0.1:{port} (AMI)"


async def test_agents_registered_or_not_and_reachable_or_not(
    fake_ami: tuple[FakeAmi, int], peers: list[UdpPeer]
) -> None:
    ami, port = fake_ami
    carol_phone = UdpPeer()
    peers.append(carol_phone)
    gone = closed_udp_port()
    ami.contacts = [
        (f"carol;@{'a' * 32}", f"sip:carol@127.0.0.1:{carol_phone.port}"),
        ("trunk@@0123", "sip:127.0.0.1:5290"),
    ]
    _, manager = await doctor.check_ami(port, ami.keys)
    contacts = await doctor._contacts(manager, 2.0)
    manager.close()
    agents = [
        doctor.AgentPhone("carol", None),
        doctor.AgentPhone("dave", None),
        doctor.AgentPhone("erin", f"sip:erin@127.0.0.1:{gone}"),
    ]

    findings = await doctor._check_agents(agents, contacts, 1.0)

    carol, dave, erin = findings
    assert carol.ok
    assert carol.found.startswith(
        f"the registered phone at sip:carol@127.0.0.1:{carol_phone.port} is reachable in "
    )
    assert not dave.ok
    assert dave.found == "the phone is not registered"
    assert not erin.ok
    assert erin.found == (
        f"the fixed phone at sip:erin@127.0.0.1:{gone} is unreachable: "
        f"nothing listens on 127.0.0.1 port {gone}"
    )


async def test_no_active_agent_is_a_problem() -> None:
    [finding] = await doctor._check_agents([], [], 1.0)

    assert not finding.ok
    assert "cbserver agent add" in finding.fix


# --- the command -----------------------------------------------------------------------------


@pytest.fixture
def environ(tmp_path: Path) -> dict[str, str]:
    """An installation on free ports where nothing runs; its database is migrated."""
    sip, http, ami, trunk = free_ports(4)
    url = f"sqlite:///{tmp_path / 'cb.sqlite3'}"
    db.upgrade(db.make_engine(url))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CBSERVER_")}
    return {
        **env,
        "CBSERVER_STATE_DIR": str(tmp_path / "state"),
        "CBSERVER_DATABASE_URL": url,
        "CBSERVER_SIP_PORT": str(sip),
        "CBSERVER_HTTP_PORT": str(http),
        "CBSERVER_AMI_PORT": str(ami),
        "CBSERVER_TRUNK_URI": f"sip:127.0.0.1:{trunk}",
    }


def run_doctor(environ: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(main, ["doctor", *args], env=environ, catch_exceptions=False)


def test_doctor_with_nothing_running_says_what_to_start(environ: dict[str, str]) -> None:
    result = run_doctor(environ)

    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith("ok       database: sqlite:///")
    assert lines[1] == "ok       migrations: the schema is the newest"
    assert lines[2].startswith("PROBLEM  ARI: there are no credentials in ")
    assert "was never started here. Start it with `cbserver asterisk start`" in lines[2]
    assert lines[3] == (
        "PROBLEM  AMI: not checked: the instance's credentials are missing (see ARI)"
    )
    trunk = environ["CBSERVER_TRUNK_URI"]
    assert lines[4].startswith(f"PROBLEM  trunk: {trunk} is unreachable: nothing listens on ")
    assert lines[5].startswith("PROBLEM  agents: there is no active agent")
    assert len(lines) == 6


def test_doctor_with_stopped_asterisk_names_it_and_prints_no_password(
    environ: dict[str, str], tmp_path: Path
) -> None:
    instance = tmp_path / "state" / "asterisk" / "default"
    instance.mkdir(parents=True)
    keys = {
        "ari": {"username": "ari-user", "password": "ari-secret-value"},
        "ami": {"username": "ami-user", "password": "ami-secret-value"},
    }
    (instance / "secrets.json").write_text(json.dumps(keys))

    result = run_doctor(environ, "--json")

    assert result.exit_code == 1
    assert "secret-value" not in result.output
    report = json.loads(result.stdout)
    assert report["ok"] is False
    checks = {c["check"]: c for c in report["checks"]}
    ari_url = f"http://127.0.0.1:{environ['CBSERVER_HTTP_PORT']}/ari"
    assert checks["ARI"] == {
        "check": "ARI",
        "ok": False,
        "found": f"nothing answers at {ari_url}: the Asterisk instance 'default' is not running",
        "fix": "Start it with `cbserver asterisk start` (or `cbserver run`)",
    }
    assert checks["AMI"]["found"] == (
        f"nothing answers at 127.0.0.1:{environ['CBSERVER_AMI_PORT']} (AMI)"
    )
    assert checks["trunk"]["ok"] is False


# --- which ARI doctor checks -----------------------------------------------------------------


class FakeAri:
    """Asterisk's ARI as doctor asks it: /asterisk/info and /applications, behind one user."""

    def __init__(self, username: str, password: str) -> None:
        self.credentials = f"{username}:{password}"
        self.users_seen: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                sent = self.headers.get("Authorization", "").removeprefix("Basic ")
                given = base64.b64decode(sent).decode()
                fake.users_seen.append(given.split(":", 1)[0])
                if given != fake.credentials:
                    self.send_response(401)
                    self.end_headers()
                    return
                if self.path == "/ari/asterisk/info":
                    body: object = {"system": {"version": "22.1.0"}}
                else:
                    body = [{"name": "cbserver"}] if self.path == "/ari/applications" else {}
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(json.dumps(body).encode())

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/ari"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join()


@pytest.fixture
def remote_ari() -> Iterator[FakeAri]:
    fake = FakeAri("node-2", "remote-ari-secret")
    yield fake
    fake.close()


def remote_environ(environ: dict[str, str], ari: FakeAri, password: str) -> dict[str, str]:
    """The installation, with its worker on the Asterisk behind ``ari`` (not the instance)."""
    engine = db.make_engine(environ["CBSERVER_DATABASE_URL"])
    try:
        with db.make_session_factory(engine)() as session:
            agents_service.add_agent(session, "bob")
    finally:
        engine.dispose()
    return {
        **environ,
        "CBSERVER_ARI_URL": f"{ari.url}/",
        "CBSERVER_ARI_USERNAME": "node-2",
        "CBSERVER_ARI_PASSWORD": password,
    }


def test_doctor_checks_the_remote_ari_and_not_the_instance(
    environ: dict[str, str], remote_ari: FakeAri, tmp_path: Path
) -> None:
    result = run_doctor(remote_environ(environ, remote_ari, "remote-ari-secret"))

    lines = result.stdout.splitlines()
    assert lines[2] == (
        f"ok       ARI: {remote_ari.url} (CBSERVER_ARI_URL) accepts the user node-2 "
        "(Asterisk 22.1.0)"
    )
    assert lines[3] == "ok       worker: a worker is connected (Stasis app 'cbserver')"
    assert lines[4] == (
        f"ok       AMI: not checked: the Asterisk at {remote_ari.url} (CBSERVER_ARI_URL) is "
        "not cbserver's own"
    )
    assert lines[5].startswith("PROBLEM  trunk: ")
    assert lines[6] == (
        "ok       agent bob: not checked: registrations are read over AMI (see AMI)"
    )
    assert set(remote_ari.users_seen) == {"node-2"}
    assert not (tmp_path / "state" / "asterisk").exists(), "no instance was looked for"


def test_a_remote_ari_refusing_the_password_names_the_settings_not_the_password(
    environ: dict[str, str], remote_ari: FakeAri
) -> None:
    result = run_doctor(remote_environ(environ, remote_ari, "stale-password"))

    assert result.exit_code == 1
    ari = next(line for line in result.stdout.splitlines() if " ARI: " in line)
    assert ari == (
        f"PROBLEM  ARI: ARI at {remote_ari.url} refused the user node-2: CBSERVER_ARI_USERNAME "
        "and CBSERVER_ARI_PASSWORD do not match that Asterisk's ari.conf. Set them to a user of "
        "its ari.conf (and reload its res_ari.so after changing it)"
    )
    assert "stale-password" not in result.output


def test_a_remote_ari_that_does_not_answer_is_named(environ: dict[str, str]) -> None:
    [port] = free_ports(1, socket.SOCK_STREAM)
    url = f"http://127.0.0.1:{port}/ari"

    result = run_doctor(
        {
            **environ,
            "CBSERVER_ARI_URL": url,
            "CBSERVER_ARI_USERNAME": "node-2",
            "CBSERVER_ARI_PASSWORD": "pw",
        }
    )

    ari = next(line for line in result.stdout.splitlines() if " ARI: " in line)
    assert ari.startswith(f"PROBLEM  ARI: nothing answers at {url} (CBSERVER_ARI_URL). Check ")


def test_doctor_says_it_checked_the_instances_ari(environ: dict[str, str], tmp_path: Path) -> None:
    instance = tmp_path / "state" / "asterisk" / "default"
    instance.mkdir(parents=True)
    keys = {
        "ari": {"username": "ari-user", "password": "ari-secret-value"},
        "ami": {"username": "ami-user", "password": "ami-secret-value"},
    }
    (instance / "secrets.json").write_text(json.dumps(keys))
    managed = FakeAri("ari-user", "ari-secret-value")
    try:
        result = run_doctor({**environ, "CBSERVER_HTTP_PORT": str(managed.port)})
    finally:
        managed.close()

    ari = next(line for line in result.stdout.splitlines() if " ARI: " in line)
    assert ari == (
        f"ok       ARI: {managed.url} (the Asterisk instance 'default') accepts the user "
        "ari-user (Asterisk 22.1.0)"
    )
