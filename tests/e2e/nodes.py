"""Installations whose workers are processes of their own, for tests that kill them with -9.

A ``Cluster`` is one database (a PostgreSQL schema of its own when the suite has PostgreSQL,
else a SQLite file) shared by ``Node``s, each an installation with its own Asterisk on free
loopback ports, its own trunk port, Stasis app and wake-up port; a ``WorkerProcess`` runs
``python -m cbserver worker`` for a node. Whatever a cluster started is stopped when it closes,
a test's failure included.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import Engine, func, make_url, select, text
from sqlalchemy.orm import Session, sessionmaker

from cbserver import agents as agents_service
from cbserver import db
from cbserver.asterisk.instance import AsteriskInstance
from cbserver.claims import IN_CALL
from cbserver.config import Settings
from cbserver.models import AgentAssignment, CallbackRequest, Subscriber
from cbserver.web import create_app
from tests.conftest import POSTGRES_URL
from tests.e2e.conftest import instance_environ
from tests.e2e.harness import free_ports, until

PROJECT = Path(__file__).resolve().parents[2]
# The caller ID the businesses of these tests call from.
BUSINESS = "+12015550100"
# The rate limits would stop a test client that asks for many call-backs from one address.
RATE_LIMITS_OFF = {
    f"CBSERVER_RATE_LIMIT_{limit}": "off"
    for limit in ("PER_IP", "PER_NUMBER", "PER_SUBSCRIBER", "NUMBERS_PER_IP", "PUBLIC")
}


@dataclass(frozen=True)
class SharedDatabase:
    """The database every node and worker process of a test uses; ``url`` is for processes."""

    url: str
    engine: Engine
    sessions: sessionmaker[Session]


@contextmanager
def shared_database(directory: Path) -> Iterator[SharedDatabase]:
    """A migrated database for processes: a PostgreSQL schema of its own (named in the URL's
    search_path, so another process finds it), dropped after; else a SQLite file."""
    if not POSTGRES_URL:
        yield from _migrated(f"sqlite:///{directory / 'shared.sqlite3'}")
        return
    schema = f"cbtest_{secrets.token_hex(6)}"
    admin = db.make_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield from _migrated(
            make_url(POSTGRES_URL)
            .update_query_dict({"options": f"-csearch_path={schema}"})
            .render_as_string(hide_password=False)
        )
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _migrated(url: str) -> Iterator[SharedDatabase]:
    engine = db.make_engine(url)
    try:
        # Before any worker starts: two workers migrating one database at once would race.
        db.upgrade(engine)
        yield SharedDatabase(url, engine, db.make_session_factory(engine))
    finally:
        engine.dispose()


@dataclass
class Node:
    """One installation: its own Asterisk, trunk peer port, Stasis app and wake-up port, and
    the cluster's database."""

    name: str
    environ: dict[str, str]
    database: SharedDatabase
    trunk_port: int

    @classmethod
    def create(cls, directory: Path, name: str, database: SharedDatabase) -> Node:
        environ = instance_environ(directory, name)
        trunk_port, wake_port = free_ports(2)
        environ |= {
            "CBSERVER_DATABASE_URL": database.url,
            "CBSERVER_TRUNK_URI": f"sip:127.0.0.1:{trunk_port}",
            "CBSERVER_ARI_APP": f"cbserver-{name}",
            "CBSERVER_WORKER_WAKE_PORT": str(wake_port),
            **RATE_LIMITS_OFF,
        }
        return cls(name, environ, database, trunk_port)

    @property
    def settings(self) -> Settings:
        return Settings.load(environ={**os.environ, **self.environ})

    @property
    def app(self) -> str:
        return self.environ["CBSERVER_ARI_APP"]

    @property
    def instance(self) -> AsteriskInstance:
        return AsteriskInstance(self.settings)

    def start_asterisk(self) -> None:
        """Start the node's Asterisk with the database's active agents (their PJSIP config is
        written at start, so add agents first)."""
        with self.database.sessions() as session:
            agents = agents_service.list_agents(session, active_only=True)
        self.instance.start(agents, progress=print)

    def stop_asterisk(self) -> None:
        self.instance.stop()

    def bridges(self) -> list[dict[str, Any]]:
        """The bridges on the node's Asterisk, as ARI lists them."""
        found: list[dict[str, Any]] = self.instance.ari_get("/bridges")
        return found

    def web(self) -> FlaskClient:
        """A web front end on the node: storing a request wakes the node's worker."""
        return create_app(settings=self.settings, engine=self.database.engine).test_client()


def ask(web: FlaskClient, subscriber: str, phone: str) -> str:
    """Ask for a call-back through the JSON API, as a widget does; the request's id."""
    created = web.post(
        "/api/v1/callbacks", json={"subscriber": subscriber, "phone": phone, "consent": True}
    )
    assert created.status_code == 201, created.json
    return str(created.json["id"])  # type: ignore[index]


@dataclass
class WorkerProcess:
    """``python -m cbserver worker`` for a node, logging to ``log_file``; started again with
    the same name after a kill, it is the same worker to the database."""

    node: Node
    name: str
    log_file: Path
    lease_seconds: float | None = None
    max_calls: int | None = None
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    # Where this start's lines begin in the log, which keeps every start's.
    _log_from: int = field(default=0, init=False, repr=False)

    @property
    def environ(self) -> dict[str, str]:
        environ = {
            **os.environ,
            **self.node.environ,
            "CBSERVER_WORKER_NAME": self.name,
            "PYTHONUNBUFFERED": "1",
        }
        if self.lease_seconds is not None:
            environ["CBSERVER_WORKER_LEASE_SECONDS"] = str(self.lease_seconds)
        if self.max_calls is not None:
            environ["CBSERVER_WORKER_MAX_CALLS"] = str(self.max_calls)
        return environ

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        assert not self.alive(), f"worker {self.name} is running already"
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self._log_from = self.log_file.stat().st_size if self.log_file.exists() else 0
        with open(self.log_file, "ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "cbserver", "worker"],
                env=self.environ,
                cwd=PROJECT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def registered(self) -> bool:
        """Whether this start's process has its Stasis app registered on ARI, as it logs.
        (ARI's own list would still show the app of a killed worker while its calls live.)"""
        return f"Stasis app {self.node.app} registered" in self.log_text(this_start=True)

    async def wait_registered(self, within: float = 30.0) -> None:
        def ready() -> bool:
            if not self.alive():
                raise AssertionError(f"worker {self.name} exited\n{self.log_tail()}")
            return self.registered()

        await until(ready, within, interval=0.05, message=lambda: self.log_tail())

    def kill(self) -> None:
        """kill -9: no drain, no goodbye to Asterisk or the database."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait()

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, as a service manager stops it; killed if it does not end in time."""
        if self._process is None:
            return None
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self._process.returncode

    def log_text(self, this_start: bool = False) -> str:
        try:
            with open(self.log_file, "rb") as log:
                log.seek(self._log_from if this_start else 0)
                return log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        tail = "\n".join(self.log_text().splitlines()[-lines:])
        return f"--- last lines of worker {self.name}'s log ({self.log_file}) ---\n{tail}"


class Cluster:
    """Nodes sharing one database, and their worker processes. On exit every worker is
    killed, every Asterisk stopped and the database dropped."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._cleanup = ExitStack()
        self.nodes: list[Node] = []
        self.workers: list[WorkerProcess] = []

    def __enter__(self) -> Cluster:
        self.database = self._cleanup.enter_context(shared_database(self.directory))
        # Last in, first out: workers go before the Asterisks they are on.
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._cleanup.close()

    @property
    def sessions(self) -> sessionmaker[Session]:
        return self.database.sessions

    def node(self, name: str) -> Node:
        node = Node.create(self.directory / name, name, self.database)
        self.nodes.append(node)
        # One clean-up each: a node that fails to stop does not keep the others running.
        self._cleanup.callback(node.stop_asterisk)
        return node

    def worker(
        self,
        node: Node,
        name: str,
        *,
        lease_seconds: float | None = None,
        max_calls: int | None = None,
    ) -> WorkerProcess:
        worker = WorkerProcess(
            node, name, self.directory / f"worker-{name}.log", lease_seconds, max_calls
        )
        self.workers.append(worker)
        # Run before its node's Asterisk stops (clean-ups run last in, first out).
        self._cleanup.callback(worker.kill)
        return worker


def add_business(
    sessions: sessionmaker[Session], slug: str, display_name: str, agents: list[str], port: int
) -> None:
    """A business served by ``agents`` in that order, whose phones are one sipp peer on
    ``port`` (it takes many calls); a failed try is tried again after a second."""
    with sessions() as session:
        subscriber = Subscriber(
            slug=slug,
            display_name=display_name,
            country="US",
            caller_id=BUSINESS,
            retry_interval_seconds=1,
        )
        for priority, name in enumerate(agents, start=1):
            agent = agents_service.add_agent(
                session, name, contact=f"sip:{name}@127.0.0.1:{port}", dtmf_mode="info"
            ).agent
            subscriber.assignments.append(AgentAssignment(agent=agent, priority=priority))
        session.add(subscriber)
        session.commit()


@dataclass
class InCallSampler:
    """Counts, in a thread of its own every ``interval`` s, each worker's requests in a call
    (dialing or connected); keeps the most seen at once per worker."""

    sessions: sessionmaker[Session]
    interval: float = 0.05
    peaks: Counter[str | None] = field(default_factory=Counter)
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _error: BaseException | None = None

    def _sample(self) -> None:
        query = (
            select(CallbackRequest.claimed_by, func.count())
            .where(CallbackRequest.status.in_(IN_CALL))
            .group_by(CallbackRequest.claimed_by)
        )
        with self.sessions() as session:
            for worker, calls in session.execute(query):
                self.peaks[worker] = max(self.peaks[worker], calls)
        self.samples += 1

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                self._sample()
        except BaseException as exc:
            self._error = exc

    def __enter__(self) -> InCallSampler:
        self._thread = threading.Thread(target=self._run, name="in-call-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc_info: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        if self._error is not None and kind is None:
            raise AssertionError(f"sampling the calls failed: {self._error!r}")
