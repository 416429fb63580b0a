"""Fixtures for the command line's tests (settings from the environment, nothing else) and the
call flows' database thread."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cbserver.cli import main
from cbserver.db import DatabaseThread

Run = Callable[..., Result]


@pytest.fixture
def no_outside_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CBSERVER_* variable of the machine running the tests reaches the command."""
    for name in list(os.environ):
        if name.startswith("CBSERVER_"):
            monkeypatch.delenv(name)


@pytest.fixture
def cbserver(tmp_path: Path, no_outside_settings: None) -> Run:
    """``cbserver ARGS...`` on a state directory and SQLite database of the test's own."""
    runner = CliRunner()
    env = {
        "CBSERVER_STATE_DIR": str(tmp_path / "state"),
        "CBSERVER_DATABASE_URL": f"sqlite:///{tmp_path / 'cb.sqlite3'}",
    }

    def run(*args: str) -> Result:
        return runner.invoke(main, list(args), env=env, catch_exceptions=False)

    return run


@pytest.fixture
async def database() -> AsyncIterator[DatabaseThread]:
    """The thread a call flow runs its database steps on."""
    thread = DatabaseThread("test-calls")
    yield thread
    thread.close()
