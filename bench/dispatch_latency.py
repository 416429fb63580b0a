"""Click-to-ring: how long from a visitor's POST to the agent's phone ringing, and to bridged.

Runs a real Asterisk (cbserver's own config, free loopback ports), the web front end on a real
HTTP port, and the worker, with sipp peers for the agent (answers, presses 1) and the trunk
(answers, hangs up). The web and the worker run as ``cbserver run`` runs them (``--topology
embedded``: one process) or as production runs them (``processes``: ``cbserver web`` and
``cbserver worker``, woken by a datagram). It sends N submissions at a given rate and prints
percentiles of

- click-to-ring: the HTTP POST sent -> the agent's INVITE received by the sipp peer;
- click-to-bridged: the HTTP POST sent -> the request's "connected" transition;

and, in the same run, the floor: a ``.call`` spool file per call to the same agent peer, from
the file landing in Asterisk's spool to the INVITE at the peer.

    .venv/bin/python -m bench.dispatch_latency --count 100 --rate 20 --agents 60
    .venv/bin/python -m bench.dispatch_latency --database-url postgresql+psycopg://...
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.orm import Session, sessionmaker

from cbserver import agents, db
from cbserver.ari import AriConfig
from cbserver.asterisk.instance import AsteriskInstance
from cbserver.config import RATE_LIMITS, Settings
from cbserver.models import AgentAssignment, CallbackRequest, RequestEvent, Subscriber
from cbserver.serve import WebServer
from cbserver.sipp import SippPeer
from cbserver.web import create_app
from cbserver.worker import Worker, WorkerThread

SCENARIOS = Path(__file__).resolve().parents[1] / "tests" / "e2e" / "scenarios"


def free_ports(count: int) -> list[int]:
    sockets: list[socket.socket] = []
    ports: list[int] = []
    while len(ports) < count:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        port = udp.getsockname()[1]
        tcp = socket.socket()
        try:
            tcp.bind(("127.0.0.1", port))
        except OSError:
            udp.close()
            continue
        sockets += [udp, tcp]
        ports.append(port)
    for s in sockets:
        s.close()
    return ports


def percentiles(values: Sequence[float]) -> str:
    if not values:
        return "no samples"
    ordered = sorted(values)
    cuts = statistics.quantiles(ordered, n=100, method="inclusive") if len(ordered) > 1 else []

    def at(p: int) -> float:
        return cuts[p - 1] if cuts else ordered[0]

    return (
        f"p50 {at(50) * 1000:7.1f} ms   p95 {at(95) * 1000:7.1f} ms   "
        f"p99 {at(99) * 1000:7.1f} ms   max {ordered[-1] * 1000:7.1f} ms   n={len(ordered)}"
    )


def visitor_number(n: int) -> str:
    return f"+1201555{n:04d}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100, help="submissions to send")
    parser.add_argument("--rate", type=float, default=20.0, help="submissions per second")
    parser.add_argument("--floor-count", type=int, default=50, help=".call files for the floor")
    parser.add_argument(
        "--agents",
        type=int,
        default=60,
        help="agents on duty (one sipp peer answers for all): each takes one call-back at a time",
    )
    parser.add_argument(
        "--topology",
        choices=("embedded", "processes"),
        default="processes",
        help="web and worker in one process (cbserver run) or in two (production)",
    )
    parser.add_argument(
        "--database-url",
        default="",
        help="a PostgreSQL database to use a fresh schema of (default: SQLite in a temp dir)",
    )
    args = parser.parse_args(argv)
    # Killed, it still stops its Asterisk and sipp peers (the finally below).
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(1))

    state = Path(tempfile.mkdtemp(prefix="cbserver-bench-"))
    sip, http, ami, web_port, agent_port, trunk_port, wake = free_ports(7)
    database_url, drop_schema = fresh_database(args.database_url)
    environ = {
        **os.environ,
        "CBSERVER_DATABASE_URL": database_url,
        "CBSERVER_STATE_DIR": str(state),
        "CBSERVER_ASTERISK_INSTANCE": "bench",
        "CBSERVER_SIP_PORT": str(sip),
        "CBSERVER_HTTP_PORT": str(http),
        "CBSERVER_AMI_PORT": str(ami),
        "CBSERVER_WEB_PORT": str(web_port),
        "CBSERVER_WORKER_WAKE_PORT": str(wake),
        "CBSERVER_RTP_PORT_START": "42000",
        "CBSERVER_RTP_PORT_END": "43999",
        "CBSERVER_TRUNK_URI": f"sip:127.0.0.1:{trunk_port}",
        # One client asks for calls to hundreds of numbers at once: what the limits refuse.
        **{f"CBSERVER_{name.upper()}": "off" for name in RATE_LIMITS},
    }
    settings = Settings.load(environ=environ)
    engine = db.make_engine(settings.effective_database_url)
    db.upgrade(engine)
    sessions = db.make_session_factory(engine)
    with sessions() as session:
        business = Subscriber(
            slug="bench", display_name="Bench", country="US", caller_id="+12015550100"
        )
        for n in range(args.agents):
            name = "bench" if n == 0 else f"bench-{n:02d}"  # "bench" also takes the .call files
            agent = agents.add_agent(
                session, name, contact=f"sip:{name}@127.0.0.1:{agent_port}", dtmf_mode="info"
            ).agent
            business.assignments.append(AgentAssignment(agent=agent, priority=1))
        session.add(business)
        session.commit()
        known_agents = agents.list_agents(session)

    instance = AsteriskInstance(settings)
    print("starting Asterisk ...", file=sys.stderr)
    instance.start(known_agents, progress=lambda line: print(line, file=sys.stderr))
    agent_peer = SippPeer(
        "agent",
        agent_port,
        state / "sipp",
        scenario=SCENARIOS / "agent_accepts.xml",
        extra_args=("-aa", "-d", "300", "-l", "1000"),
    )
    trunk_peer = SippPeer(
        "trunk",
        trunk_port,
        state / "sipp",
        scenario=SCENARIOS / "uas_answer_hangup.xml",
        extra_args=("-aa", "-d", "300", "-l", "1000"),
    )
    services: Embedded | Processes = (
        Embedded(instance, settings, engine, sessions)
        if args.topology == "embedded"
        else Processes(environ, state)
    )
    try:
        agent_peer.start()
        trunk_peer.start()
        services.start()
        sent = submit(f"http://127.0.0.1:{web_port}/", args.count, args.rate)
        print(
            f"sent {len(sent)} submissions at {args.rate}/s; waiting for the calls", file=sys.stderr
        )
        done = wait_for_completion(sessions, len(sent), timeout=60 + args.count / 2)
        rings = invites_by_caller(agent_peer)
        to_ring = [rings[phone] - at for phone, at in sent.items() if phone in rings]
        to_bridged = bridged_after(sessions, sent)
        stages = stage_breakdown(sessions, sent, rings)
        floor = spool_floor(instance, agent_peer, args.floor_count)
    finally:
        services.stop()
        agent_peer.stop()
        trunk_peer.stop()
        instance.stop()
        engine.dispose()
        drop_schema()

    database = engine.dialect.name
    print(
        f"\ncbserver dispatch latency ({args.topology}, {database}): "
        f"{args.count} submissions at {args.rate}/s, {done} completed"
    )
    print(f"  click-to-ring      {percentiles(to_ring)}")
    print(f"  click-to-bridged   {percentiles(to_bridged)}")
    print("  where click-to-ring goes:")
    for stage, delays in stages.items():
        print(f"    {stage:<16} {percentiles(delays)}")
    print(f"  floor (.call file) {percentiles(floor)}")
    return 0 if done == args.count and len(to_ring) == args.count else 1


def fresh_database(url: str) -> tuple[str, Callable[[], None]]:
    """SQLite in the state dir (""), or a new schema in the given PostgreSQL database."""
    if not url:
        return "", lambda: None
    schema = f"cbserver_bench_{os.getpid()}"
    admin = create_engine(url)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))

    def drop() -> None:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()

    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options=-csearch_path%3D{schema}", drop


class Embedded:
    """Web and worker in this process, as ``cbserver run`` runs them."""

    def __init__(
        self,
        instance: AsteriskInstance,
        settings: Settings,
        engine: Engine,
        sessions: sessionmaker[Session],
    ) -> None:
        keys = instance.secrets().ari
        ari = AriConfig(instance.ari_url, keys.username, keys.password, settings.ari_app)
        self.worker = WorkerThread(Worker(ari, sessions))
        self.web = WebServer(
            create_app(settings=settings, engine=engine, wake_worker=self.worker.wake),
            "127.0.0.1",
            settings.web_port,
        )

    def start(self) -> None:
        self.worker.start()
        self.web.start()
        time.sleep(1.0)  # the worker's Stasis app registers

    def stop(self) -> None:
        self.web.stop()
        self.worker.stop()


class Processes:
    """``cbserver web`` and ``cbserver worker``, each a process of its own, as in production."""

    def __init__(self, environ: dict[str, str], state: Path) -> None:
        self.environ = environ
        self.logs = state / "logs"
        self.logs.mkdir()
        self.children: list[subprocess.Popen[bytes]] = []

    def _spawn(self, command: str) -> Path:
        log = self.logs / f"{command}.log"
        with log.open("wb") as output:
            self.children.append(
                subprocess.Popen(
                    [sys.executable, "-m", "cbserver", command],
                    env=self.environ,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            )
        return log

    def start(self) -> None:
        worker_log = self._spawn("worker")
        web_log = self._spawn("web")
        deadline = time.monotonic() + 30
        while "registered" not in worker_log.read_text() or "web front end" not in (
            web_log.read_text()
        ):
            if time.monotonic() > deadline or any(c.poll() is not None for c in self.children):
                raise SystemExit(
                    f"web or worker did not start:\n{web_log.read_text()}{worker_log.read_text()}"
                )
            time.sleep(0.1)

    def stop(self) -> None:
        for child in self.children:
            child.terminate()
        for child in self.children:
            try:
                child.wait(20)
            except subprocess.TimeoutExpired:
                child.kill()


def submit(base_url: str, count: int, rate: float) -> dict[str, float]:
    """POST each submission at its slot; the wall time each POST was sent, by visitor number."""
    sent: dict[str, float] = {}
    start = time.monotonic()
    with httpx.Client(base_url=base_url, timeout=10) as client:
        for n in range(count):
            slot = start + n / rate
            while (delay := slot - time.monotonic()) > 0:
                time.sleep(delay)
            phone = visitor_number(n)
            at = time.time()
            answer = client.post(
                "api/v1/callbacks", json={"subscriber": "bench", "phone": phone, "consent": True}
            )
            if answer.status_code == 201:
                sent[phone] = at
            else:
                print(
                    f"submission {n} refused: {answer.status_code} {answer.text}", file=sys.stderr
                )
    return sent


def wait_for_completion(factory: sessionmaker[Session], count: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    done = 0
    while time.monotonic() < deadline:
        with factory() as session:
            done = len(
                session.scalars(
                    select(CallbackRequest.id).where(CallbackRequest.status == "completed")
                ).all()
            )
        if done >= count:
            break
        time.sleep(0.5)
    return done


def invites_by_caller(peer: SippPeer) -> dict[str, float]:
    """When each visitor's call rang the agent: the agent sees the visitor's number as caller."""
    rings: dict[str, float] = {}
    for message in peer.received("INVITE"):
        sender = message.header("From") or ""
        number = sender.split("sip:", 1)[-1].split("@", 1)[0]
        if message.at is not None and number not in rings:
            rings[number] = message.at
    return rings


def bridged_after(factory: sessionmaker[Session], sent: dict[str, float]) -> list[float]:
    delays = []
    with factory() as session:
        rows = session.execute(
            select(CallbackRequest.visitor_phone, RequestEvent.at)
            .join(RequestEvent, RequestEvent.request_id == CallbackRequest.id)
            .where(RequestEvent.to_status == "connected")
        ).all()
    for phone, at in rows:
        if phone in sent:
            delays.append(at.timestamp() - sent[phone])
    return delays


def stage_breakdown(
    factory: sessionmaker[Session], sent: dict[str, float], rings: dict[str, float]
) -> dict[str, list[float]]:
    """Click-to-ring in its three legs: the web stores the request, a worker claims it, the
    agent's phone rings."""
    with factory() as session:
        rows = session.execute(
            select(CallbackRequest.visitor_phone, CallbackRequest.created_at, RequestEvent.at)
            .join(RequestEvent, RequestEvent.request_id == CallbackRequest.id)
            .where(RequestEvent.from_status == "queued", RequestEvent.to_status == "dialing_agent")
        ).all()
    stages: dict[str, list[float]] = {
        "click -> stored": [],
        "stored -> claimed": [],
        "claimed -> ring": [],
    }
    for phone, created, claimed in rows:
        if phone in sent and phone in rings:
            stages["click -> stored"].append(created.timestamp() - sent[phone])
            stages["stored -> claimed"].append(claimed.timestamp() - created.timestamp())
            stages["claimed -> ring"].append(rings[phone] - claimed.timestamp())
    return stages


def spool_floor(instance: AsteriskInstance, peer: SippPeer, count: int) -> list[float]:
    """Asterisk's own fastest way in: a .call file moved into its spool, per call."""
    spool = instance.directory / "spool" / "outgoing"
    staging = instance.directory / "spool" / "staging"
    staging.mkdir(exist_ok=True)
    before = {m.text for m in peer.received("INVITE")}
    moved: dict[str, float] = {}
    for n in range(count):
        caller = f"+1999555{n:04d}"
        text = f"Channel: PJSIP/bench\nCallerID: <{caller}>\nApplication: Hangup\nMaxRetries: 0\n"
        path = staging / f"floor-{n}.call"
        path.write_text(text)
        moved[caller] = time.time()
        path.rename(spool / path.name)
        time.sleep(0.05)
    time.sleep(3)
    delays = []
    for message in peer.received("INVITE"):
        if message.text in before or message.at is None:
            continue
        caller = (message.header("From") or "").split("sip:", 1)[-1].split("@", 1)[0]
        if caller in moved:
            delays.append(message.at - moved[caller])
    return delays


if __name__ == "__main__":
    sys.exit(main())
