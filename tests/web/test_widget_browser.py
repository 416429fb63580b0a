"""The widget in headless Chromium, embedded in a business's page on another origin.

Two live servers on two ports are two origins: cbserver, and a "business site" whose page has
hostile CSS and the snippet the business pastes. The widget must look like itself there and post
cross-origin only when the business's origin is allowed.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from playwright.sync_api import Locator, Request, expect
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cbserver.hours import WEEKDAYS
from cbserver.models import CallbackRequest, OutsideHours, Subscriber
from tests.browser import Browser, live_server
from tests.web.conftest import CLOCK_START

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


def slot_at(client: FlaskClient, at: datetime) -> dict[str, Any]:
    """The listed slot that starts at ``at``, as the API lists it for acme."""
    listing = client.get("/api/v1/subscribers/acme/slots").json
    assert listing is not None
    [slot] = [s for s in listing["slots"] if datetime.fromisoformat(s["start"]) == at]
    return slot  # type: ignore[no-any-return]


def widget_dialog(browser: Browser) -> Locator:
    return browser.page.get_by_role("dialog", name="We will call you back")


def agree(browser: Browser) -> None:
    """Tick "I agree to be called at this number", as every visitor must."""
    widget_dialog(browser).get_by_role(
        "checkbox", name="I agree to be called at this number."
    ).check()


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

    agree(browser)
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
    agree(browser)
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
    agree(browser)
    browser.click("Send")
    error = widget_dialog(browser).locator("#cb-phone-error")
    expect(error).to_have_text(
        "This is a premium-rate number. We do not call premium-rate numbers.", timeout=WAIT_MS
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


# The app's clock stands at Wednesday 18 November 2026, 09:00 in Los Angeles: three hours on,
# the 12:00 slot lies well inside the booking window, whatever the wall clock says.
LATER = CLOCK_START + timedelta(hours=3)
SLOT_TEXT = "Wed 18 Nov, 12:00 (America/Los_Angeles)"
WHEN = "When should we call you?"


def test_a_visitor_books_one_of_the_listed_slots(
    browser: Browser,
    shop: str,
    client: FlaskClient,
    acme: Subscriber,
    sessions: sessionmaker[Session],
    tmp_path: Path,
) -> None:
    allow(sessions, "acme", shop)
    slot = slot_at(client, LATER)
    assert slot["start_text"] == SLOT_TEXT
    open_widget(browser, shop + PAGE)
    when = widget_dialog(browser).get_by_label(WHEN)
    option = when.locator(f'option[value="{slot["start"]}"]')
    expect(option).to_have_text("12:00 \u2013 12:15", timeout=WAIT_MS)
    expect(option).to_be_enabled()
    # "As soon as possible" first, and chosen until the visitor chooses otherwise.
    assert when.input_value() == "asap"
    expect(when.locator("option").first).to_have_text("As soon as possible")
    # Then a group per day of the booking window, in the business's time zone.
    days = shadow(browser, "[...root.querySelectorAll('#cb-when optgroup')].map(g => g.label)")
    assert days == [
        "Wed 18 Nov",
        "Thu 19 Nov",
        "Fri 20 Nov",
        "Sat 21 Nov",
        "Sun 22 Nov",
        "Mon 23 Nov",
        "Tue 24 Nov",
    ]
    assert option.evaluate("o => o.parentElement.label") == "Wed 18 Nov"
    first = shadow(browser, "root.querySelector('#cb-when optgroup option').textContent")
    assert first == "09:00 \u2013 09:15", "the slot under way is offered; the ended one is not"
    hint = widget_dialog(browser).locator("#cb-when-hint")
    expect(hint).to_have_text("Times are in the time zone of Acme Plumbing: America/Los_Angeles.")
    expect(widget_dialog(browser).locator("#cb-when-note")).to_be_hidden()
    assert when.get_attribute("aria-describedby") == "cb-when-hint"

    browser.fill("Your phone number", "(201) 555-0123")
    when.select_option(slot["start"])
    browser.screenshot(tmp_path / "widget-slot.png", full_page=False)
    agree(browser)
    browser.click("Send")
    expect(browser.page.get_by_text("Thank you \u2014 we will call you.")).to_be_visible(
        timeout=WAIT_MS
    )
    expect(widget_dialog(browser).locator(".when-done")).to_have_text(
        f"Booked: we will call you at {SLOT_TEXT}."
    )
    [request] = stored(sessions)
    assert request.status == "scheduled"
    assert request.slot_start == LATER
    assert request.due_at == LATER
    assert not browser.page_errors


def test_a_slot_taken_meanwhile_is_explained_next_to_the_choice(
    browser: Browser,
    shop: str,
    client: FlaskClient,
    acme: Subscriber,
    sessions: sessionmaker[Session],
    tmp_path: Path,
) -> None:
    allow(sessions, "acme", shop)
    with sessions() as session:
        session.get_one(Subscriber, acme.id).slot_capacity = 1
        session.commit()
    slot = slot_at(client, LATER)
    open_widget(browser, shop + PAGE)
    when = widget_dialog(browser).get_by_label(WHEN)
    option = when.locator(f'option[value="{slot["start"]}"]')
    expect(option).to_be_enabled(timeout=WAIT_MS)
    # Someone else takes the slot's only place while the visitor types.
    other = client.post(
        "/api/v1/callbacks",
        json={
            "subscriber": "acme",
            "phone": "+1 201 555 0199",
            "when": slot["start"],
            "consent": True,
        },
    )
    assert other.status_code == 201
    browser.fill("Your phone number", "(201) 555-0123")
    when.select_option(slot["start"])
    agree(browser)
    browser.click("Send")

    error = widget_dialog(browser).locator("#cb-when-error")
    expect(error).to_have_text(
        "That time is fully booked. The next free times are: "
        "Wed 18 Nov, 12:15 (America/Los_Angeles); Wed 18 Nov, 12:30 (America/Los_Angeles); "
        "Wed 18 Nov, 12:45 (America/Los_Angeles).",
        timeout=WAIT_MS,
    )
    assert error.get_attribute("role") == "alert"
    assert when.get_attribute("aria-invalid") == "true"
    assert when.get_attribute("aria-describedby") == "cb-when-hint cb-when-error"
    assert shadow(browser, "root.activeElement.id") == "cb-when"
    # The list was fetched again: the slot shows as full and cannot be chosen.
    expect(option).to_have_text("12:00 \u2013 12:15 (full)", timeout=WAIT_MS)
    expect(option).to_be_disabled()
    assert when.input_value() == "asap"
    assert shadow(browser, "root.getElementById('cb-phone').value") == "(201) 555-0123"
    assert len(stored(sessions)) == 1, "only the other visitor's request"
    browser.screenshot(tmp_path / "widget-slot-full.png", full_page=False)

    # One of the times the message names goes through; the error is gone.
    next_free = slot_at(client, LATER + timedelta(minutes=15))
    when.select_option(next_free["start"])
    agree(browser)
    browser.click("Send")
    expect(browser.page.get_by_text("Thank you \u2014 we will call you.")).to_be_visible(
        timeout=WAIT_MS
    )
    mine = [r for r in stored(sessions) if r.visitor_phone == "+12015550123"]
    assert [r.slot_start for r in mine] == [LATER + timedelta(minutes=15)]
    assert not browser.page_errors


@pytest.mark.parametrize(
    ("outside_hours", "note", "chosen"),
    [
        (
            OutsideHours.SCHEDULE,
            "We are closed now: we will call you when we open, "
            "Wed 18 Nov, 13:00 (America/Los_Angeles).",
            "asap",
        ),
        (
            OutsideHours.REFUSE,
            "We are closed now and open again Wed 18 Nov, 13:00 (America/Los_Angeles). "
            "Please choose a time.",
            # "As soon as possible" would be refused: the first free slot is chosen instead.
            "2026-11-18T21:00:00+00:00",
        ),
    ],
)
def test_a_closed_business_says_when_it_calls(
    browser: Browser,
    shop: str,
    acme: Subscriber,
    sessions: sessionmaker[Session],
    outside_hours: OutsideHours,
    note: str,
    chosen: str,
) -> None:
    allow(sessions, "acme", shop)
    with sessions() as session:
        subscriber = session.get_one(Subscriber, acme.id)
        # Afternoons only: at 09:00 it is closed until 13:00.
        subscriber.hours = {"weekly": {day: ["13:00-17:00"] for day in WEEKDAYS}}
        subscriber.outside_hours = outside_hours.value
        session.commit()
    open_widget(browser, shop + PAGE)
    closed = widget_dialog(browser).locator("#cb-when-note")
    expect(closed).to_have_text(note, timeout=WAIT_MS)
    when = widget_dialog(browser).get_by_label(WHEN)
    assert when.get_attribute("aria-describedby") == "cb-when-note cb-when-hint"
    assert when.input_value() == chosen
    asap_disabled = when.locator("option[value=asap]").is_disabled()
    assert asap_disabled is (outside_hours == OutsideHours.REFUSE)

    browser.fill("Your phone number", "(201) 555-0123")
    agree(browser)
    browser.click("Send")
    expect(browser.page.get_by_text("Thank you \u2014 we will call you.")).to_be_visible(
        timeout=WAIT_MS
    )
    [request] = stored(sessions)
    assert request.status == "scheduled"
    assert request.due_at == datetime.fromisoformat("2026-11-18T21:00:00+00:00")
    assert not browser.page_errors


def test_without_the_slot_list_the_widget_still_calls_as_soon_as_possible(
    browser: Browser, shop: str, acme: Subscriber, sessions: sessionmaker[Session]
) -> None:
    allow(sessions, "acme", shop)
    open_widget(browser, shop + PAGE)
    when = widget_dialog(browser).get_by_label(WHEN)
    expect(when.locator("optgroup").first).to_be_attached(timeout=WAIT_MS)
    browser.click("Close")
    # The slot list cannot be had any more: opened again, only "as soon as possible" is left.
    failed: list[Request] = []
    browser.page.on("requestfailed", lambda r: failed.append(r))
    browser.page.route("**/api/v1/subscribers/acme/slots", lambda route: route.abort())
    browser.click("Call me back")
    expect(when.locator("option")).to_have_count(1, timeout=WAIT_MS)
    assert when.input_value() == "asap"
    expect(widget_dialog(browser).locator("#cb-when-hint")).to_be_hidden()
    assert when.get_attribute("aria-describedby") is None
    assert [r.url.rsplit("/", 1)[-1] for r in failed] == ["slots"]

    browser.fill("Your phone number", "(201) 555-0123")
    agree(browser)
    browser.click("Send")
    expect(browser.page.get_by_text("Thank you \u2014 we will call you.")).to_be_visible(
        timeout=WAIT_MS
    )
    [request] = stored(sessions)
    assert (request.status, request.slot_start) == ("queued", None)
    assert not browser.page_errors
