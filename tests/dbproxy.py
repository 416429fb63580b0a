"""Database outages on demand, without stopping the machine's PostgreSQL.

``DatabaseProxy`` stands between the code under test and PostgreSQL: ``cut`` drops every
connection through it and turns new ones away (as a stopped server does), ``restore`` lets them
through again. ``SqliteLock`` does the same to SQLite the way it fails in production: another
process holds the write lock past the busy timeout. ``outage_database`` gives either, on a
fresh migrated database, with a way to look at the data that no cut stops.
"""

from __future__ import annotations

import contextlib
import secrets
import select
import socket
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Engine, event, make_url, text
from sqlalchemy.orm import Session, sessionmaker

from cbserver import db

# Short, so that a test's refused submissions take a fifth of a second each, not five.
SQLITE_BUSY_MILLISECONDS = 200


class DatabaseProxy:
    """A TCP proxy on a free loopback port to ``upstream``; cut and restored by the test."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port: int = self._listener.getsockname()[1]
        self._open = threading.Event()
        self._open.set()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._pairs: set[tuple[socket.socket, socket.socket]] = set()
        self._acceptor = threading.Thread(target=self._accept, name="dbproxy", daemon=True)
        self._acceptor.start()

    def cut(self) -> None:
        """Drop every connection now, and turn new ones away until ``restore``."""
        self._open.clear()
        with self._lock:
            pairs = list(self._pairs)
        for pair in pairs:
            for end in pair:
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def restore(self) -> None:
        self._open.set()

    def close(self) -> None:
        self._closed.set()
        self.cut()
        self._acceptor.join(5)
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            if not self._open.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            client.settimeout(None)
            upstream.settimeout(None)
            pair = (client, upstream)
            with self._lock:
                self._pairs.add(pair)
            threading.Thread(target=self._pump, args=(pair,), daemon=True).start()

    def _pump(self, pair: tuple[socket.socket, socket.socket]) -> None:
        client, upstream = pair
        other = {client: upstream, upstream: client}
        try:
            while True:
                readable, _, _ = select.select([client, upstream], [], [])
                for end in readable:
                    data = end.recv(65536)
                    if not data:
                        return
                    other[end].sendall(data)
        except OSError:
            return
        finally:
            with self._lock:
                self._pairs.discard(pair)
            for end in pair:
                end.close()


class SqliteLock:
    """Another process's write transaction on the SQLite file: writers wait the busy timeout,
    then fail with "database is locked"."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._holder: sqlite3.Connection | None = None

    def cut(self) -> None:
        # Waits for a writer under way, as a second process would.
        self._holder = sqlite3.connect(
            self.path, timeout=5, isolation_level=None, check_same_thread=False
        )
        self._holder.execute("BEGIN IMMEDIATE")

    def restore(self) -> None:
        if self._holder is not None:
            self._holder.execute("ROLLBACK")
            self._holder.close()
            self._holder = None


class Cuttable(Protocol):
    def cut(self) -> None: ...

    def restore(self) -> None: ...


@dataclass(frozen=True)
class OutageDatabase:
    # What the code under test is given: ``outage.cut()`` takes it away.
    engine: Engine
    # For the test to look at (and, but for SQLite during a cut, write) the data meanwhile.
    direct: sessionmaker[Session]
    outage: Cuttable


@contextlib.contextmanager
def outage_database(kind: str, postgres_url: str, tmp_path: Path) -> Iterator[OutageDatabase]:
    """A fresh, migrated database of ``kind`` ("sqlite" or "postgresql") that can be cut."""
    if kind == "sqlite":
        with _sqlite(tmp_path / "outage.sqlite3") as found:
            yield found
    else:
        with _postgresql(postgres_url) as found:
            yield found


@contextlib.contextmanager
def _sqlite(path: Path) -> Iterator[OutageDatabase]:
    engine = db.make_engine(f"sqlite:///{path}")
    event.listen(engine, "connect", _short_busy_timeout)
    db.upgrade(engine)
    lock = SqliteLock(path)
    try:
        yield OutageDatabase(engine, db.make_session_factory(engine), lock)
    finally:
        lock.restore()
        engine.dispose()


def _short_busy_timeout(dbapi_connection: Any, _record: Any) -> None:
    # Runs after cbserver's own pragmas (listeners run in order): only the wait is shorter.
    dbapi_connection.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MILLISECONDS}")


@contextlib.contextmanager
def _postgresql(url: str) -> Iterator[OutageDatabase]:
    schema = f"cbtest_{secrets.token_hex(6)}"
    in_schema = {"options": f"-csearch_path={schema}"}
    admin = db.make_engine(url)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    direct = db.make_engine(url, connect_args=in_schema)
    address = make_url(url)
    proxy = DatabaseProxy(address.host or "127.0.0.1", address.port or 5432)
    through_proxy = address.set(host="127.0.0.1", port=proxy.port)
    engine = db.make_engine(
        through_proxy.render_as_string(hide_password=False), connect_args=in_schema
    )
    try:
        db.upgrade(direct)
        yield OutageDatabase(engine, db.make_session_factory(direct), proxy)
    finally:
        proxy.close()
        engine.dispose()
        direct.dispose()
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
