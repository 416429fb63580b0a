"""The database: an engine from a URL (SQLite embedded, PostgreSQL in production) and migrations."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    OperationalError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
P = ParamSpec("P")
T = TypeVar("T")
# A PostgreSQL that does not answer (a network partition, not a refusal) fails a connection
# after this long, so a web request answers 503 instead of hanging.
CONNECT_TIMEOUT_SECONDS = 5
# SQLite reports some mistakes in a statement as OperationalError: those are bugs, not outages.
_SQLITE_MISTAKES = ("no such table", "no such column", "syntax error", "has no column")
# PostgreSQL: a standby that cannot write (a fail-over under way) is an outage, too.
_READ_ONLY_TRANSACTION = "25006"
# While the database is away: the first wait, doubled up to the longest.
FIRST_WAIT_SECONDS = 0.5
LONGEST_WAIT_SECONDS = 5.0


def make_engine(url: str, **kwargs: Any) -> Engine:
    if url.startswith("sqlite"):
        database = url.split("///", 1)[-1]
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False}, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if "connect_timeout" not in make_url(url).query:
        connect_args = {
            "connect_timeout": CONNECT_TIMEOUT_SECONDS,
            **kwargs.pop("connect_args", {}),
        }
        kwargs["connect_args"] = connect_args
    return create_engine(url, pool_pre_ping=True, **kwargs)


def unreachable(error: BaseException) -> bool:
    """Whether ``error`` means the database cannot be used just now (down, restarting, a
    dropped connection, no connection free, SQLite locked past its busy timeout or on a full
    or read-only disk), rather than a mistake in a statement: worth a 503 or a retry later."""
    if isinstance(error, DisconnectionError | PoolTimeout):
        return True
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    if getattr(getattr(error, "orig", None), "sqlstate", None) == _READ_ONLY_TRANSACTION:
        return True
    if isinstance(error, OperationalError | InterfaceError):
        return not any(mistake in str(error.orig) for mistake in _SQLITE_MISTAKES)
    return False


class OutageLog:
    """Says once that ``what`` stopped for want of the database, and once that it goes on:
    a worker polling a database that is down logs two lines, not one traceback a poll."""

    def __init__(self, log: logging.Logger, what: str) -> None:
        self.log = log
        self.what = what
        self.down_since: float | None = None

    def failed(self, error: BaseException) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
            self.log.warning(
                "%s: the database is unreachable (%s); trying again until it answers",
                self.what,
                first_line(error),
            )

    def succeeded(self) -> bool:
        """Whether the database was away until now."""
        if self.down_since is None:
            return False
        away = time.monotonic() - self.down_since
        self.log.info("%s: the database answers again after %.1f s", self.what, away)
        self.down_since = None
        return True


def waits() -> Iterator[float]:
    """How long to wait before each next try at an unreachable database: 0.5 s, doubling to 5 s."""
    wait = FIRST_WAIT_SECONDS
    while True:
        yield wait
        wait = min(wait * 2, LONGEST_WAIT_SECONDS)


def first_line(error: BaseException) -> str:
    """What went wrong, in one line: for a log line, not a traceback."""
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    # The web and the worker are separate processes: WAL lets readers and a writer overlap.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    command.upgrade(alembic_config(engine), revision)


def pending_migrations(engine: Engine) -> list[str]:
    """Revisions not yet applied, oldest first."""
    script = ScriptDirectory.from_config(alembic_config(engine))
    with engine.connect() as connection:
        current = set(MigrationContext.configure(connection).get_current_heads())
    pending = []
    for rev in script.walk_revisions():
        if rev.revision in current:
            break
        pending.append(rev.revision)
    return list(reversed(pending))


class DatabaseThread:
    """Runs an async caller's database work on one thread of its own, in order.

    One thread, not a pool: SQLite has a single writer, and pooled threads racing for its lock
    wait in its sleeping busy handler; queued on one thread, each transaction runs at once.
    """

    def __init__(self, name: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def run(self, work: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(work, *args, **kwargs))

    async def run_until_done(
        self, outage: OutageLog, work: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """``run``, tried again (see ``waits``) for as long as the database is unreachable: for
        a step that must be recorded before what follows it can happen. ``work`` must be safe
        to repeat, as a commit whose answer was lost may have been made."""
        pause = waits()
        while True:
            try:
                done = await self.run(work, *args, **kwargs)
            except Exception as exc:
                if not unreachable(exc):
                    raise
                outage.failed(exc)
                await asyncio.sleep(next(pause))
            else:
                outage.succeeded()
                return done

    def close(self) -> None:
        self._executor.shutdown(wait=True)
