"""The hosted form and the live status page in headless Chromium, as a visitor uses them."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cbserver.models import CallbackRequest, RequestStatus
from cbserver.states import transition
from tests.browser import Browser

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("acme")]


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    # One database is enough here: the browser, not the store, is under test.
    return f"sqlite:///{tmp_path / 'cbserver.sqlite3'}"


def agree(browser: Browser) -> None:
    """Tick "I agree to be called at this number", as every visitor must."""
    browser.page.get_by_label("I agree to be called at this number.").check()


def test_visitor_asks_lands_on_the_status_page_and_sees_it_change_live(
    browser: Browser, base_url: str, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    browser.open(f"{base_url}/c/acme")
    browser.fill("Your phone number", "(201) 555-0123")
    browser.fill("Your name (optional)", "Ada")
    agree(browser)
    browser.click("Call me back")
    browser.wait_for_text("Waiting: we will call you as soon as someone is free.")
    assert "/s/" in browser.url
    assert "You are number 1 in the queue." in browser.text()

    with sessions() as session:
        request = session.scalars(select(CallbackRequest)).one()
        transition(session, request, RequestStatus.DIALING_AGENT, "calling an agent for you")
        session.commit()
    # No reload: the page polls and shows the new state by itself.
    browser.wait_for_text("Getting someone for you now.", timeout=5)
    browser.wait_for_text("calling an agent for you", timeout=5)
    assert "You are number" not in browser.text()
    browser.screenshot(tmp_path / "status.png")
    assert not browser.page_errors


def test_a_refused_number_is_explained_next_to_the_field(
    browser: Browser, base_url: str, sessions: sessionmaker[Session]
) -> None:
    browser.open(f"{base_url}/c/acme")
    browser.fill("Your phone number", "+1 900 234 5678")
    browser.fill("Your name (optional)", "Ada")
    agree(browser)
    browser.click("Call me back")
    browser.wait_for_text("This is a premium-rate number. We do not call premium-rate numbers.")
    assert browser.evaluate("document.getElementById('phone').getAttribute('aria-invalid')") == (
        "true"
    )
    assert browser.evaluate("document.getElementById('name').value") == "Ada"
    with sessions() as session:
        assert session.scalars(select(CallbackRequest)).first() is None


def test_the_visitor_cancels_from_the_status_page(browser: Browser, base_url: str) -> None:
    browser.open(f"{base_url}/c/acme")
    browser.fill("Your phone number", "(201) 555-0123")
    agree(browser)
    browser.click("Call me back")
    browser.wait_for_text("Waiting: we will call you")
    browser.click("Cancel my call-back")
    browser.wait_for_text("Canceled: we will not call.")
    assert not browser.evaluate("document.querySelector('[data-field=cancel]').checkVisibility()")
