"""Markup a visitor or an admin types is shown as text, never run, on every page: headless Chromium
opens each page that shows it and finds the text as typed and no script run (``window.__xss``
stays undefined), and no Content-Security-Policy report either (nothing was even tried)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from flask import Flask
from playwright.sync_api import ConsoleMessage, expect
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cbserver import admin_tokens, intake
from cbserver.intake import Submission
from cbserver.models import CallbackRequest, Subscriber
from tests.browser import Browser, live_server
from tests.web.conftest import CLOCK_START, US_MOBILE

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("acme")]

SCRIPT = "<script>window.__xss=1</script>"
IMAGE = "<img src=x onerror=window.__xss=1>"
ATTRIBUTE = '"><svg onload=window.__xss=1>'
LINK = "javascript:window.__xss=1"
BUSINESS = f"Acme {IMAGE}"


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    # One database is enough here: the browser, not the store, is under test.
    return f"sqlite:///{tmp_path / 'cbserver.sqlite3'}"


@pytest.fixture
def csp_reports(browser: Browser) -> list[str]:
    """What Chromium says it blocked under the pages' Content-Security-Policy."""
    reports: list[str] = []

    def seen(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            reports.append(message.text)

    browser.page.on("console", seen)
    return reports


@pytest.fixture
def hostile_business(sessions: sessionmaker[Session], acme: Subscriber) -> None:
    """An admin typed markup into the business's name, shown on its form and status pages."""
    with sessions() as session:
        session.get_one(Subscriber, acme.id).display_name = BUSINESS
        session.commit()


def hostile_request(sessions: sessionmaker[Session]) -> CallbackRequest:
    with sessions() as session:
        submission = Submission(
            subscriber="acme",
            phone=US_MOBILE,
            name=SCRIPT + IMAGE,
            topic=ATTRIBUTE,
            page_url="https://shop.example/?q=" + quote(SCRIPT),
            consent=True,
        )
        return intake.submit(session, submission, now=CLOCK_START).request


def assert_inert(browser: Browser, csp_reports: list[str]) -> None:
    assert browser.evaluate("() => document.readyState") == "complete"
    assert browser.evaluate("() => window.__xss") is None
    assert browser.evaluate("() => document.querySelectorAll('main img, main svg').length") == 0
    assert csp_reports == []
    assert browser.page_errors == []


@pytest.mark.usefixtures("hostile_business")
def test_the_form_shown_again_with_errors_keeps_markup_as_text(
    browser: Browser, base_url: str, csp_reports: list[str]
) -> None:
    browser.open(f"{base_url}/c/acme?from={quote(LINK)}")
    assert_inert(browser, csp_reports)
    assert BUSINESS in browser.text("h1")
    assert browser.evaluate("() => document.querySelector('[name=page_url]').value") == "", (
        "a javascript: link is not a page the visitor came from: dropped, never echoed"
    )

    browser.fill("Your phone number", "12")
    browser.fill("Your name (optional)", SCRIPT + IMAGE)
    browser.fill("What would you like to talk about? (optional)", ATTRIBUTE)
    browser.page.get_by_label("I agree to be called at this number.").check()
    browser.click("Call me back")
    browser.page.wait_for_selector("#phone[aria-invalid=true]")

    assert_inert(browser, csp_reports)
    assert BUSINESS in browser.text("h1")
    assert browser.evaluate("() => document.getElementById('name').value") == SCRIPT + IMAGE
    assert browser.evaluate("() => document.getElementById('topic').value") == ATTRIBUTE


@pytest.mark.usefixtures("hostile_business")
def test_the_status_page_shows_markup_as_text(
    browser: Browser, base_url: str, sessions: sessionmaker[Session], csp_reports: list[str]
) -> None:
    callback = hostile_request(sessions)

    browser.open(f"{base_url}/s/{callback.id}?token={callback.visitor_token}")

    text = browser.wait_for_text(SCRIPT + IMAGE)
    assert ATTRIBUTE in text
    assert BUSINESS in text
    # status.js has polled and drawn the page again from the JSON API: still text.
    browser.page.wait_for_function(
        "() => performance.getEntriesByType('resource')"
        ".some((r) => r.name.includes('/api/v1/callbacks/'))"
    )
    assert SCRIPT + IMAGE in browser.text()
    assert_inert(browser, csp_reports)


def test_an_error_page_shows_the_address_as_text(
    browser: Browser, base_url: str, csp_reports: list[str]
) -> None:
    for slug in (IMAGE, ATTRIBUTE):
        browser.open(f"{base_url}/c/{quote(slug)}")

        assert slug in browser.wait_for_text("There is no call-back service called")
        assert_inert(browser, csp_reports)


def test_the_admin_api_serves_markup_as_inert_json(
    browser: Browser, base_url: str, sessions: sessionmaker[Session], csp_reports: list[str]
) -> None:
    callback = hostile_request(sessions)
    with sessions() as session:
        secret = admin_tokens.create_token(session, "xss")[1]
    browser.page.set_extra_http_headers({"Authorization": f"Bearer {secret}"})

    response = browser.page.goto(f"{base_url}/api/v1/admin/requests/{callback.id}")

    assert response is not None
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-content-type-options"] == "nosniff"
    text = browser.text()
    assert SCRIPT + IMAGE in text
    assert "https://shop.example/?q=" in text
    assert_inert(browser, csp_reports)


# A shop whose own policy is as strict as cbserver's: the widget must need no inline style or
# script of its own, only cbserver's origin in script-src and connect-src (as the README says).
SHOP_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Shop</title>
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src {cbserver};
  connect-src {cbserver}; style-src 'self'; base-uri 'none'">
</head>
<body><h1>Shop</h1><script src="{cbserver}/widget.js" data-subscriber="acme" async></script>
</body></html>
"""


@pytest.fixture
def shop(base_url: str, sessions: sessionmaker[Session]) -> Iterator[str]:
    site = Flask("shop")

    @site.get("/")
    def page() -> str:
        return SHOP_PAGE.replace("{cbserver}", base_url)

    with live_server(site) as url:
        with sessions() as session:
            acme = session.scalars(select(Subscriber).where(Subscriber.slug == "acme")).one()
            acme.allowed_origins = url
            session.commit()
        yield url


@pytest.mark.usefixtures("hostile_business")
def test_the_widget_in_a_strict_page_is_styled_shows_text_and_takes_a_request(
    browser: Browser, shop: str, sessions: sessionmaker[Session], csp_reports: list[str]
) -> None:
    browser.open(shop + "/")
    browser.click("Call me back")
    expect(browser.page.get_by_role("dialog", name="We will call you back")).to_be_visible()

    expect(browser.page.get_by_text("Times are in the time zone of")).to_contain_text(BUSINESS)
    launcher = "document.querySelector('cbserver-callback').shadowRoot.querySelector('.launcher')"
    assert browser.evaluate(f"() => getComputedStyle({launcher}).borderRadius") == "999px"

    browser.fill("Your phone number", "(201) 555-0123")
    browser.fill("Your name (optional)", SCRIPT)
    browser.page.get_by_label("I agree to be called at this number.").check()
    browser.page.get_by_role("button", name="Send", exact=True).click()
    expect(browser.page.get_by_text("Thank you \u2014 we will call you.")).to_be_visible()

    with sessions() as session:
        [stored] = session.scalars(select(CallbackRequest)).all()
        assert stored.visitor_name == SCRIPT
    assert browser.evaluate("() => window.__xss") is None
    assert csp_reports == []
    assert browser.page_errors == []
