"""Fixtures shared by every tier: the database matrix.

Data-layer tests run on SQLite and, when CBSERVER_TEST_POSTGRES_URL is set (CI sets it), on
PostgreSQL too, each test in a schema of its own that is dropped afterwards.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from cbserver import db

POSTGRES_URL = os.environ.get("CBSERVER_TEST_POSTGRES_URL", "")
DATABASES = ["sqlite", *(["postgresql"] if POSTGRES_URL else [])]


@pytest.fixture(params=DATABASES, ids=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'cbserver.sqlite3'}"
    return POSTGRES_URL


@contextmanager
def fresh_engine(url: str) -> Iterator[Engine]:
    """An engine on ``url``: SQLite as given; PostgreSQL in a schema of its own, dropped after."""
    if url.startswith("sqlite"):
        engine = db.make_engine(url)
        yield engine
        engine.dispose()
        return
    schema = f"cbtest_{secrets.token_hex(6)}"
    admin = db.make_engine(url)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = db.make_engine(url, connect_args={"options": f"-csearch_path={schema}"})
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    with fresh_engine(database_url) as engine:
        yield engine


@pytest.fixture
def session(sessions: sessionmaker[Session]) -> Iterator[Session]:
    with sessions() as session:
        yield session


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    """A session factory on a migrated database, for tests that need several sessions."""
    db.upgrade(engine)
    return db.make_session_factory(engine)
