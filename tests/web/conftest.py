"""The web front end under Flask's test client, on SQLite and PostgreSQL (see tests/conftest.py)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from cbserver.clock import FakeClock
from cbserver.config import Settings
from cbserver.models import Subscriber
from cbserver.web import create_app
from tests.browser import Browser, live_server

US_MOBILE = "+12015550123"
# The web app's time unless a test moves it: Wednesday 18 November 2026, 09:00 in Los Angeles
# (acme's time zone), so that what depends on "now" is the same on every run.
CLOCK_START = datetime(2026, 11, 18, 17, 0, tzinfo=UTC)


@pytest.fixture
def acme(sessions: sessionmaker[Session]) -> Subscriber:
    with sessions() as session:
        subscriber = Subscriber(
            slug="acme",
            display_name="Acme Plumbing",
            time_zone="America/Los_Angeles",
            country="US",
            caller_id="+12015550100",
            slot_capacity=2,
        )
        session.add(subscriber)
        session.commit()
        return subscriber


@pytest.fixture
def clock() -> FakeClock:
    """The app's clock: stands at CLOCK_START until the test moves it (set, advance)."""
    return FakeClock(CLOCK_START)


# Rate limits and the minimum time to fill in a form are tested on their own
# (test_rate_limits.py, test_bot_resistance.py); elsewhere a test may post as often as it likes,
# and the app's clock, which stands still, would make every form look filled in by a bot.
UNLIMITED = {
    "rate_limit_per_ip": "off",
    "rate_limit_per_number": "off",
    "rate_limit_per_subscriber": "off",
    "rate_limit_numbers_per_ip": "off",
    "rate_limit_public": "off",
    "form_min_seconds": 0.0,
}


@pytest.fixture
def app(engine: Engine, sessions: sessionmaker[Session], tmp_path: Path, clock: FakeClock) -> Flask:
    settings = Settings(state_dir=tmp_path).replace(**UNLIMITED)
    return create_app(settings=settings, engine=engine, clock=clock)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def browser() -> Iterator[Browser]:
    """Headless Chromium (tests/browser.py), one per test."""
    with Browser.launch() as launched:
        yield launched


@pytest.fixture
def base_url(app: Flask) -> Iterator[str]:
    """The app served on a free loopback port, for the browser."""
    with live_server(app) as url:
        yield url


def csrf_token(page: str) -> str:
    match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
    assert match, "the page carries a CSRF token"
    return match.group(1)


def hidden(page: str, name: str) -> str:
    match = re.search(rf'name="{name}" type="hidden" value="([^"]*)"', page)
    assert match, f"the page carries {name}"
    return match.group(1)


def ask_acme(client: FlaskClient, **fields: object) -> tuple[int, dict[str, object]]:
    """POST /api/v1/callbacks for acme's usual visitor, with ``fields`` added or changed: the
    status and the JSON answer."""
    response = client.post(
        "/api/v1/callbacks",
        json={"subscriber": "acme", "phone": US_MOBILE, "consent": True, **fields},
    )
    assert response.json is not None
    return response.status_code, response.json
