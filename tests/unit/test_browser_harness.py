"""The browser harness itself: Debian's headless Chromium against a Flask app in a thread."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask, render_template_string, request

from tests.browser import Browser, BrowserUnavailable, find_chromium, live_server

FORM = """<!doctype html>
<title>Harness form</title>
<form method="post" action="/submitted">
  <label for="who">Your name</label>
  <input id="who" name="who">
  <button type="submit">Send</button>
</form>
"""

RESULT = """<!doctype html>
<title>Harness result</title>
<p id="result">You sent: {{ who }}</p>
"""


def make_app() -> Flask:
    app = Flask(__name__)

    @app.get("/")
    def form() -> str:
        return render_template_string(FORM)

    @app.post("/submitted")
    def submitted() -> str:
        return render_template_string(RESULT, who=request.form["who"])

    return app


@pytest.fixture
def base_url() -> Iterator[str]:
    with live_server(make_app()) as url:
        yield url


@pytest.fixture
def browser() -> Iterator[Browser]:
    with Browser.launch() as launched:
        yield launched


@pytest.mark.browser
def test_a_form_filled_by_label_is_submitted_and_its_result_shown(
    browser: Browser, base_url: str, tmp_path: Path
) -> None:
    browser.open(f"{base_url}/")
    assert browser.url == f"{base_url}/"

    browser.fill("Your name", "Ada Lovelace")
    browser.click("Send")
    browser.wait_for_text("You sent: Ada Lovelace")

    assert browser.url == f"{base_url}/submitted"
    assert browser.text("#result") == "You sent: Ada Lovelace"
    assert browser.evaluate("document.title") == "Harness result"
    shot = browser.screenshot(tmp_path / "shots" / "result.png")
    assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert browser.page_errors == []


@pytest.mark.browser
def test_script_in_a_submitted_value_is_shown_as_text_and_never_runs(
    browser: Browser, base_url: str
) -> None:
    payload = "<script>alert(1)</script>"
    browser.open(f"{base_url}/")
    browser.fill("who", payload)  # by the input's name this time
    browser.click("Send")

    browser.wait_for_text(f"You sent: {payload}")
    assert browser.dialogs == []
    assert browser.evaluate("document.querySelectorAll('#result script').length") == 0

    # The control: a dialog that does fire is seen, so the empty list above means something.
    browser.evaluate("() => alert('control')")
    assert browser.dialogs == ["control"]


@pytest.mark.browser
def test_waiting_for_text_that_never_appears_fails_at_the_deadline(
    browser: Browser, base_url: str
) -> None:
    browser.open(f"{base_url}/")
    with pytest.raises(AssertionError, match="'Nowhere' did not appear"):
        browser.wait_for_text("Nowhere", timeout=0.3)


def test_the_live_server_stops_on_exit() -> None:
    with live_server(make_app()) as url, urllib.request.urlopen(f"{url}/") as response:
        assert b"Your name" in response.read()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{url}/", timeout=2)


def test_a_missing_chromium_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(BrowserUnavailable, match=r"make test"):
        find_chromium()
