"""The widget in headless Chromium, embedded in a business's page on another origin.

Two live servers on two ports are two origins: cbserver, and a "business site" whose page has
hostile CSS and the snippet the business pastes. The widget must look like itself there and post
cross-origin only when the business's origin is allowed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from playwright.sync_api import Locator, Request, expect
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cbserver.models import CallbackRequest, Subscriber
from tests.browser import Browser, live_server

pytestmark = [pytest.mark.browser]

WAIT_MS = 10_000
PAGE = "/contact?from=ad"

HOSTILE_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Acme Plumbing</title>
<style>
  html { font-size: 40px; }
  * { color: red !important; display: inline !important; font-family: cursive !important;
      letter-spacing: 3px !important; text-transform: uppercase !important; }
  button { display: none !important; }
  div, form, input, textarea, dialog, a, p, label {
    border: 6px dashed lime !important; background: yellow !important; }
  body > * { position: static !important; transform: rotate(8deg); opacity: .5; }
  head, style { display: none !important; }
</style>
</head>
<body>
  <h1>Acme Plumbing</h1>
  <p>Leaking tap? We fix it today.</p>
  <button type="button">The page's own button</button>
  <script src="{cbserver}/widget.js" data-subscriber="acme" async></script>
</body>
</html>
"""


NEW_GLOBALS = """() => {
  const frame = document.createElement("iframe");
  document.body.appendChild(frame);
  const blank = new Set(Object.getOwnPropertyNames(frame.contentWindow));
  frame.remove();
  return Object.getOwnPropertyNames(window).filter((name) => !blank.has(name));
}"""


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    # One database is enough here: the browser, not the store, is under test.
    return f"sqlite:///{tmp_path / 'cbserver.sqlite3'}"


@pytest.fixture
def cbserver(base_url: str) -> str:
    """cbserver's origin, as the business's page sees it."""
    return base_url


@pytest.fixture
def shop(cbserver: str) -> Iterator[str]:
    """The business's own web site, on an origin of its own."""
    site = Flask("business_site")

    @site.get("/contact")
    def contact() -> str:
        return HOSTILE_PAGE.replace("{cbserver}", cbserver)

    with live_server(site) as url:
        yield url


def allow(sessions: sessionmaker[Session], slug: str, origins: str) -> None:
    with sessions() as session:
        subscriber = session.scalars(select(Subscriber).where(Subscriber.slug == slug)).one()
        subscriber.allowed_origins = origins
        session.commit()


def stored(sessions: sessionmaker[Session]) -> list[CallbackRequest]:
    with sessions() as session:
        return list(session.scalars(select(CallbackRequest)))


def shadow(browser: Browser, expression: str) -> object:
    """Evaluate ``expression`` with ``root`` bound to the widget's shadow root."""
    return browser.evaluate(
        f"() => {{ const root = document.querySelector('cbserver-callback').shadowRoot; "
        f"return {expression}; }}"
    )


def widget_dialog(browser: Browser) -> Locator:
    return browser.page.get_by_role("dialog", name="We will call you back")


def open_widget(browser: Browser, url: str) -> None:
    browser.open(url)
    browser.click("Call me back")
    expect(widget_dialog(browser)).to_be_visible(timeout=WAIT_MS)


def test_a_visitor_asks_for_a_call_back_from_the_business_page(
    browser: Browser,
    cbserver: str,
    shop: str,
    acme: Subscriber,
    sessions: sessionmaker[Session],
    tmp_path: Path,
) -> None:
    allow(sessions, "acme", f"https://www.example.com,{shop}")
    posts: list[Request] = []
    browser.page.on(
        "request",
        lambda r: posts.append(r) if r.method == "POST" and "/api/" in r.url else None,
    )
    browser.open(shop + PAGE)
    browser.screenshot(tmp_path / "widget-closed.png", full_page=False)
    browser.click("Call me back")
    expect(widget_dialog(browser)).to_be_visible(timeout=WAIT_MS)
    # The focus went into the dialog, onto the first field.
    assert shadow(browser, "root.activeElement.id") == "cb-phone"

    # The page's CSS is live, and did not reach into the widget.
    page_color = browser.evaluate("getComputedStyle(document.querySelector('p')).color")
    assert page_color == "rgb(255, 0, 0)"
    assert shadow(browser, "getComputedStyle(root.querySelector('.send')).display") != "none"
    assert shadow(browser, "getComputedStyle(root.querySelector('label')).color") != page_color
    assert shadow(browser, "getComputedStyle(root.host).position") == "fixed"
    assert shadow(browser, "getComputedStyle(root.host).transform") == "none"
    # And it left no globals behind: the page's window has what a blank one has.
    assert browser.evaluate(NEW_GLOBALS) == []

    browser.fill("Your phone number", "(201) 555-0123")
    browser.fill("Your name (optional)", "Ada")
    browser.fill("What would you like to talk about? (optional)", "Leaking tap")
    browser.screenshot(tmp_path / "widget-open.png", full_page=False)

    browser.page.get_by_role("button", name="Send", exact=True).dblclick()
    expect(browser.page.get_by_text("Thank you \u2014 we will call you.")).to_be_visible(
        timeout=WAIT_MS
    )
    browser.screenshot(tmp_path / "widget-thanks.png", full_page=False)

    assert len(posts) == 1, "a double-click is one request"
    assert posts[0].headers["idempotency-key"].startswith("widget-")
    [request] = stored(sessions)
    assert request.page_url == shop + PAGE
    assert (request.visitor_phone, request.visitor_name, request.topic) == (
        "+12015550123",
        "Ada",
        "Leaking tap",
    )
    link = browser.page.get_by_role("link", name="Follow your call-back")
    assert link.get_attribute("href") == (
        f"{cbserver}/s/{request.id}?token={request.visitor_token}"
    )
    assert link.get_attribute("target") == "_blank"
    assert link.get_attribute("rel") == "noopener"

    # Escape closes the dialog and gives the focus back to the button that opened it.
    browser.page.keyboard.press("Escape")
    expect(widget_dialog(browser)).to_be_hidden(timeout=WAIT_MS)
    assert shadow(browser, "root.activeElement.className") == "launcher"
    assert not browser.page_errors


@pytest.mark.parametrize(
    ("listed_elsewhere", "message"),
    [
        # No subscriber lists the page: the browser's preflight fails, the POST is never sent.
        (False, "Could not reach the call-back service. Please try again."),
        # Another subscriber lists it: the preflight passes and the 403 says why.
        (True, "This web site may not send call-back requests for Acme Plumbing."),
    ],
)
def test_a_page_on_an_origin_the_business_did_not_allow_cannot_ask(
    browser: Browser,
    shop: str,
    acme: Subscriber,
    sessions: sessionmaker[Session],
    listed_elsewhere: bool,
    message: str,
) -> None:
    allow(sessions, "acme", "https://www.example.com")
    if listed_elsewhere:
        with sessions() as session:
            session.add(
                Subscriber(
                    slug="beta",
                    display_name="Beta Bakery",
                    country="US",
                    caller_id="+12015550101",
                    allowed_origins=shop,
                )
            )
            session.commit()
    open_widget(browser, shop + PAGE)
    browser.fill("Your phone number", "(201) 555-0123")
    browser.click("Send")
    alert = widget_dialog(browser).get_by_role("alert")
    expect(alert).to_have_text(message, timeout=WAIT_MS)
    assert shadow(browser, "root.getElementById('cb-phone').value") == "(201) 555-0123"
    assert shadow(browser, "root.querySelector('.send').disabled") is False
    assert stored(sessions) == []


def test_a_refused_number_is_explained_next_to_the_phone_field(
    browser: Browser, shop: str, acme: Subscriber, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    allow(sessions, "acme", shop)
    open_widget(browser, shop + PAGE)
    browser.fill("Your phone number", "+1 900 234 5678")
    browser.fill("Your name (optional)", "Ada")
    browser.click("Send")
    error = widget_dialog(browser).locator("#cb-phone-error")
    expect(error).to_have_text(
        "We can only call ordinary landline and mobile numbers, not premium-rate, "
        "toll-free or service numbers.",
        timeout=WAIT_MS,
    )
    assert error.get_attribute("role") == "alert"
    assert shadow(browser, "root.getElementById('cb-phone').getAttribute('aria-invalid')") == (
        "true"
    )
    assert shadow(browser, "root.getElementById('cb-phone').getAttribute('aria-describedby')") == (
        "cb-phone-hint cb-phone-error"
    )
    assert shadow(browser, "root.activeElement.id") == "cb-phone"
    assert shadow(browser, "root.getElementById('cb-name').value") == "Ada"
    assert stored(sessions) == []
    browser.screenshot(tmp_path / "widget-error.png", full_page=False)

    # Corrected, it goes through; the error is gone.
    browser.fill("Your phone number", "(201) 555-0123")
    browser.click("Send")
    expect(browser.page.get_by_text("Thank you \u2014 we will call you.")).to_be_visible(
        timeout=WAIT_MS
    )
    [request] = stored(sessions)
    assert request.visitor_name == "Ada"
    assert not browser.page_errors


def test_an_empty_phone_is_caught_before_sending(
    browser: Browser, shop: str, acme: Subscriber, sessions: sessionmaker[Session]
) -> None:
    allow(sessions, "acme", shop)
    open_widget(browser, shop + PAGE)
    browser.click("Send")
    expect(widget_dialog(browser).locator("#cb-phone-error")).to_have_text(
        "Please enter your phone number."
    )
    # The close button also closes, and the focus goes back to the launcher.
    browser.click("Close")
    expect(widget_dialog(browser)).to_be_hidden(timeout=WAIT_MS)
    assert shadow(browser, "root.activeElement.className") == "launcher"
    assert stored(sessions) == []


def test_a_german_business_widget_speaks_german(
    browser: Browser, shop: str, acme: Subscriber, sessions: sessionmaker[Session]
) -> None:
    allow(sessions, "acme", shop)
    with sessions() as session:
        session.scalars(select(Subscriber)).one().language = "de"
        session.commit()
    browser.open(shop + PAGE)
    browser.click("Rufen Sie mich zurück")
    dialog = browser.page.get_by_role("dialog", name="Wir rufen Sie zurück")
    expect(dialog).to_be_visible(timeout=WAIT_MS)
    expect(dialog.get_by_label("Ihre Telefonnummer")).to_be_visible()
    dialog.get_by_role("button", name="Senden").click()
    expect(dialog.get_by_text("Bitte geben Sie Ihre Telefonnummer ein.")).to_be_visible()
