"""The agent console in headless Chromium: logging in, pausing, and the page following the
agent's calls by itself (console.js), under the page's strict Content-Security-Policy."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cbserver import intake
from cbserver.intake import Submission
from cbserver.models import Agent, Subscriber
from tests.browser import Browser
from tests.web.conftest import CLOCK_START, US_MOBILE
from tests.web.test_console import console_password

pytestmark = [pytest.mark.browser]


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    # One database is enough here: the browser, not the store, is under test.
    return f"sqlite:///{tmp_path / 'cbserver.sqlite3'}"


@pytest.fixture
def password(sessions: sessionmaker[Session], acme: Subscriber) -> str:
    return console_password(sessions)


def test_the_console_follows_the_agents_call_without_a_reload(
    browser: Browser, base_url: str, sessions: sessionmaker[Session], password: str
) -> None:
    browser.open(f"{base_url}/agent/login")
    browser.fill("Agent name", "alice")
    browser.fill("Password", password)
    browser.click("Log in")
    browser.wait_for_text("Agent console: alice")
    assert "No call at the moment." in browser.text()
    browser.fill("reason", "lunch")
    browser.click("Pause")
    browser.wait_for_text("reason: lunch")

    with sessions() as session:
        request = intake.submit(
            session,
            Submission(subscriber="acme", phone=US_MOBILE, name="Ada", consent=True),
            now=CLOCK_START,
        ).request
        alice = session.scalars(select(Agent).where(Agent.name == "alice")).one()
        alice.on_call = request.id
        session.commit()

    # No reload: the page polls and shows the call, the queue and the state by itself.
    browser.wait_for_text("Ada", timeout=5)
    text = browser.text()
    assert "On a call" in text
    assert "Acme Plumbing" in text
    assert "no agent on duty" in text, "alice is paused: the ETA of the queue follows too"
    assert "No call at the moment." not in text
    browser.fill("Wrap-up note", "Wants a plumber on Friday.")
    with browser.page.expect_navigation():
        browser.click("Save the note")
    assert browser.page.get_by_label("Wrap-up note").input_value() == "Wants a plumber on Friday."
    assert not browser.page_errors
