"""A subscriber's CAPTCHA, checked with a local fake of the provider's verify address.

The fake is a small HTTP server on a loopback port: it answers ``{"success": true}`` for the
answer "good" only, and keeps what it was sent; stopped, it stands for a provider that is down.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from playwright.sync_api import Route, expect
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cbserver import admin_tokens, db
from cbserver.cli import main
from cbserver.models import AuditEvent, CallbackRequest, Subscriber
from tests.browser import Browser, live_server
from tests.web.conftest import ask_acme, csrf_token, hidden

pytestmark = [pytest.mark.usefixtures("acme")]

SECRET = "0x4AAAAAAAsecret-for-acme"
SITE_KEY = "0x4AAAAAAAsite-key"
ROBOT_CHECK_FAILED = "The check that you are not a robot did not succeed. Please try it again."
COMPLETE_THE_CHECK = "Please complete the check that you are not a robot, then send again."
NO_HTTPS_URL = (
    "the CAPTCHA verify address must be an https URL (or http to this machine) of at most 300 "
    "characters"
)
PROVIDER_DOWN = (
    "We cannot check just now that you are not a robot. Please try again in a few minutes."
)


@dataclass
class FakeVerifier:
    url: str
    # Each form it was posted, as field -> value.
    asked: list[dict[str, str]] = field(default_factory=list)
    # What it answers instead of a verdict: a status code, or a body that is not JSON.
    broken: int | str | None = None


@pytest.fixture
def verifier() -> Iterator[FakeVerifier]:
    fake = FakeVerifier("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            fake.asked.append(form)
            if isinstance(fake.broken, int):
                self.send_response(fake.broken)
                self.end_headers()
                return
            answer = fake.broken or json.dumps(
                {"success": form.get("response") == "good" and form.get("secret") == SECRET}
            )
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(answer.encode())

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}/siteverify"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def use_captcha(
    sessions: sessionmaker[Session], verify_url: str, provider: str = "turnstile"
) -> None:
    with sessions() as session:
        acme = session.scalars(select(Subscriber).where(Subscriber.slug == "acme")).one()
        acme.captcha_provider = provider
        acme.captcha_site_key = SITE_KEY
        acme.captcha_secret = SECRET
        acme.captcha_verify_url = verify_url
        session.commit()


def stored(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return len(session.scalars(select(CallbackRequest.id)).all())


# --- the API (and the widget, which calls it) --------------------------------------------------


def test_without_a_captcha_nothing_is_asked(
    client: FlaskClient, verifier: FakeVerifier, sessions: sessionmaker[Session]
) -> None:
    status, _ = ask_acme(client)
    assert status == 201
    assert verifier.asked == []


def test_a_good_answer_is_checked_with_the_provider_and_the_request_stored(
    client: FlaskClient, verifier: FakeVerifier, sessions: sessionmaker[Session]
) -> None:
    use_captcha(sessions, verifier.url)
    status, _ = ask_acme(client, captcha="good")
    assert status == 201
    assert verifier.asked == [{"secret": SECRET, "response": "good", "remoteip": "127.0.0.1"}]
    assert stored(sessions) == 1


@pytest.mark.parametrize(
    ("answer", "code", "message", "asked"),
    [
        (None, "captcha_missing", COMPLETE_THE_CHECK, 0),
        ("", "captcha_missing", COMPLETE_THE_CHECK, 0),
        ("bad", "captcha_failed", ROBOT_CHECK_FAILED, 1),
    ],
)
def test_a_missing_or_wrong_answer_is_refused(
    client: FlaskClient,
    verifier: FakeVerifier,
    sessions: sessionmaker[Session],
    answer: str | None,
    code: str,
    message: str,
    asked: int,
) -> None:
    use_captcha(sessions, verifier.url)
    status, body = ask_acme(client, captcha=answer)
    assert status == 422
    assert body == {"error": {"code": code, "message": message, "field": "captcha"}}
    assert len(verifier.asked) == asked
    assert stored(sessions) == 0


@pytest.mark.parametrize("broken", ["down", 500, "<html>busy</html>"])
def test_a_provider_that_cannot_be_asked_stores_nothing(
    client: FlaskClient,
    verifier: FakeVerifier,
    sessions: sessionmaker[Session],
    broken: int | str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = "http://127.0.0.1:9/siteverify" if broken == "down" else verifier.url
    verifier.broken = None if broken == "down" else broken
    use_captcha(sessions, url)
    with caplog.at_level(logging.DEBUG):
        status, body = ask_acme(client, captcha="good")
    assert status == 503
    assert body == {
        "error": {"code": "captcha_unavailable", "message": PROVIDER_DOWN, "field": "captcha"}
    }
    assert stored(sessions) == 0
    assert SECRET not in caplog.text


def test_the_widget_learns_the_site_key_but_never_the_secret(
    client: FlaskClient, verifier: FakeVerifier, sessions: sessionmaker[Session]
) -> None:
    use_captcha(sessions, verifier.url, provider="hcaptcha")
    answer = client.get("/widget/acme.json")
    assert answer.json is not None
    assert answer.json["captcha"] == {
        "provider": "hcaptcha",
        "site_key": SITE_KEY,
        "script": "https://js.hcaptcha.com/1/api.js",
        "widget_class": "h-captcha",
        "field": "h-captcha-response",
    }
    assert answer.json["text"]["captchaMissing"] == COMPLETE_THE_CHECK
    assert SECRET not in answer.text


# --- the hosted form ---------------------------------------------------------------------------


def test_the_form_shows_the_providers_check_and_its_csp_allows_it(
    client: FlaskClient, verifier: FakeVerifier, sessions: sessionmaker[Session]
) -> None:
    use_captcha(sessions, verifier.url)
    page = client.get("/c/acme")
    assert f'<div class="field captcha cf-turnstile" data-sitekey="{SITE_KEY}"></div>' in page.text
    assert (
        '<script src="https://challenges.cloudflare.com/turnstile/v0/api.js" async defer>'
        in page.text
    )
    policy = dict(
        part.strip().split(" ", 1) for part in page.headers["Content-Security-Policy"].split(";")
    )
    assert "https://challenges.cloudflare.com" in policy["script-src"].split()
    assert "https://challenges.cloudflare.com" in policy["frame-src"].split()
    assert SECRET not in page.text


def test_without_a_captcha_the_form_loads_no_script(client: FlaskClient) -> None:
    page = client.get("/c/acme")
    assert "<script" not in page.text
    assert "challenges.cloudflare.com" not in page.headers["Content-Security-Policy"]


def test_the_form_sends_the_providers_answer_and_keeps_the_input_when_refused(
    client: FlaskClient, verifier: FakeVerifier, sessions: sessionmaker[Session]
) -> None:
    use_captcha(sessions, verifier.url)
    page = client.get("/c/acme").text
    fields = {
        "csrf_token": csrf_token(page),
        "submission_id": hidden(page, "submission_id"),
        "form_token": hidden(page, "form_token"),
        "phone": "(201) 555-0123",
        "name": "Ada",
        "when": "asap",
        "consent": "y",
        "cf-turnstile-response": "bad",
    }
    refused = client.post("/c/acme", data=fields)
    assert refused.status_code == 422
    assert (
        f'<p class="error" role="alert" data-field="notice">{ROBOT_CHECK_FAILED}</p>'
        in refused.text
    )
    assert 'value="Ada"' in refused.text
    assert stored(sessions) == 0

    sent = client.post("/c/acme", data={**fields, "cf-turnstile-response": "good"})
    assert sent.status_code == 303
    assert stored(sessions) == 1


# --- setting it: the admin API and the command line --------------------------------------------


def admin_token(sessions: sessionmaker[Session], slug: str | None = None) -> dict[str, str]:
    with sessions() as session:
        scope = None
        if slug is not None:
            scope = session.scalars(select(Subscriber).where(Subscriber.slug == slug)).one()
        _, secret = admin_tokens.create_token(session, "ops", subscriber=scope)
    return {"Authorization": f"Bearer {secret}"}


def test_an_admin_turns_the_captcha_on_and_the_secret_is_never_shown(
    client: FlaskClient, sessions: sessionmaker[Session], caplog: pytest.LogCaptureFixture
) -> None:
    headers = admin_token(sessions, "acme")
    url = "/api/v1/admin/subscribers/acme/captcha"
    assert client.get(url, headers=headers).json == {
        "provider": None,
        "site_key": None,
        "secret_set": False,
        "verify_url": None,
    }
    with caplog.at_level(logging.DEBUG):
        changed = client.put(
            url,
            headers=headers,
            json={"provider": "recaptcha", "site_key": SITE_KEY, "secret": SECRET},
        )
    assert changed.status_code == 200
    shown = {"provider": "recaptcha", "site_key": SITE_KEY, "secret_set": True, "verify_url": None}
    assert changed.json == shown
    assert client.get(url, headers=headers).json == shown
    everything = client.get("/api/v1/admin/subscribers/acme", headers=headers).text
    assert SECRET not in everything + changed.text + caplog.text
    with sessions() as session:
        acme = session.scalars(select(Subscriber)).one()
        assert (acme.captcha_provider, acme.captcha_secret) == ("recaptcha", SECRET)
        [event] = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "captcha_changed")
        ).all()
        assert event.detail == f"CAPTCHA of acme: recaptcha, site key {SITE_KEY}"

    # A new site key keeps the secret; provider null turns it off.
    rekeyed = client.put(url, headers=headers, json={"provider": "recaptcha", "site_key": "k2"})
    assert rekeyed.json == {**shown, "site_key": "k2"}
    off = client.put(url, headers=headers, json={"provider": None})
    assert off.json == {"provider": None, "site_key": None, "secret_set": False, "verify_url": None}


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        (
            {"provider": "turnstile", "site_key": SITE_KEY},
            "secret",
            "a CAPTCHA needs the provider's secret key",
        ),
        (
            {"provider": "turnstile", "secret": SECRET},
            "site_key",
            "a CAPTCHA needs the provider's site key",
        ),
        *[
            (
                {
                    "provider": "turnstile",
                    "site_key": SITE_KEY,
                    "secret": SECRET,
                    "verify_url": url,
                },
                "verify_url",
                NO_HTTPS_URL,
            )
            for url in (
                "ftp://x",
                # The server would post the secret to the network around it.
                "http://169.254.169.254/latest/meta-data",
                "http://10.0.0.7/siteverify",
                "http://verifier.example/siteverify",
            )
        ],
    ],
)
def test_an_incomplete_captcha_is_refused_naming_what_is_missing(
    client: FlaskClient,
    sessions: sessionmaker[Session],
    body: dict[str, str],
    field: str,
    message: str,
) -> None:
    response = client.put(
        "/api/v1/admin/subscribers/acme/captcha", headers=admin_token(sessions), json=body
    )
    assert response.status_code == 422
    assert response.json == {"error": {"code": "invalid", "message": message, "field": field}}
    with sessions() as session:
        assert session.scalars(select(Subscriber)).one().captcha_provider is None


def test_the_command_line_sets_the_captcha_reading_the_secret_from_stdin(tmp_path: Path) -> None:
    env = {
        "CBSERVER_STATE_DIR": str(tmp_path / "state"),
        "CBSERVER_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.sqlite3'}",
    }
    runner = CliRunner()

    def run(*args: str, stdin: str | None = None) -> str:
        result = runner.invoke(main, list(args), env=env, input=stdin, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    run(
        "subscriber",
        "add",
        "shop",
        "--name",
        "Shop",
        "--country",
        "US",
        "--caller-id",
        "+12015550100",
    )
    assert run("subscriber", "captcha", "shop") == "shop CAPTCHA: off\n"
    output = run(
        "subscriber",
        "captcha",
        "shop",
        "--provider",
        "turnstile",
        "--site-key",
        SITE_KEY,
        "--secret",
        "-",
        stdin=SECRET + "\n",
    )
    assert output == (f"CAPTCHA of 'shop' changed.\nshop CAPTCHA: turnstile, site key {SITE_KEY}\n")
    engine = db.make_engine(env["CBSERVER_DATABASE_URL"])
    with db.make_session_factory(engine)() as session:
        shop = session.scalars(select(Subscriber)).one()
        assert shop.captcha_secret == SECRET
        actions = session.scalars(
            select(AuditEvent.detail).where(AuditEvent.action == "captcha_changed")
        ).all()
        assert actions == [f"CAPTCHA of shop: turnstile, site key {SITE_KEY}"]
    engine.dispose()
    assert run("subscriber", "captcha", "shop", "--off").endswith("shop CAPTCHA: off\n")


def test_a_token_for_one_subscriber_sets_keys_but_not_where_answers_are_checked(
    client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    url = "/api/v1/admin/subscribers/acme/captcha"
    keys = {"provider": "turnstile", "site_key": SITE_KEY, "secret": SECRET}
    scoped = admin_token(sessions, "acme")

    refused = client.put(url, headers=scoped, json={**keys, "verify_url": "https://x.example/v"})
    assert refused.status_code == 403
    assert refused.json is not None
    assert refused.json["error"]["code"] == "forbidden"
    assert client.get(url, headers=scoped).json == {
        "provider": None,
        "site_key": None,
        "secret_set": False,
        "verify_url": None,
    }

    assert client.put(url, headers=scoped, json=keys).status_code == 200
    everyone = admin_token(sessions)
    local = "http://127.0.0.1:8099/siteverify"
    allowed = client.put(url, headers=everyone, json={**keys, "verify_url": local})
    assert allowed.status_code == 200
    assert allowed.json is not None
    assert allowed.json["verify_url"] == local


def test_another_provider_needs_its_own_site_key_and_secret(
    client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    url = "/api/v1/admin/subscribers/acme/captcha"
    headers = admin_token(sessions)
    keys = {"provider": "turnstile", "site_key": SITE_KEY, "secret": SECRET}
    assert client.put(url, headers=headers, json=keys).status_code == 200

    switched = client.put(url, headers=headers, json={"provider": "hcaptcha"})
    assert switched.status_code == 422
    assert switched.json == {
        "error": {
            "code": "invalid",
            "message": "a CAPTCHA needs the provider's site key",
            "field": "site_key",
        }
    }
    only_key = client.put(url, headers=headers, json={"provider": "hcaptcha", "site_key": "h"})
    assert only_key.status_code == 422
    assert only_key.json is not None
    assert only_key.json["error"]["field"] == "secret"
    with sessions() as session:
        acme = session.scalars(select(Subscriber)).one()
        assert (acme.captcha_provider, acme.captcha_secret) == ("turnstile", SECRET)


def test_an_answer_that_cannot_be_sent_is_a_failed_check_and_the_provider_is_not_asked(
    client: FlaskClient, verifier: FakeVerifier, sessions: sessionmaker[Session]
) -> None:
    use_captcha(sessions, verifier.url)
    status, body = ask_acme(client, captcha="\ud800")
    assert (status, body) == (
        422,
        {"error": {"code": "captcha_failed", "message": ROBOT_CHECK_FAILED, "field": "captcha"}},
    )
    assert verifier.asked == []
    assert stored(sessions) == 0


# --- the widget, in a browser ------------------------------------------------------------------

# Stands in for the provider's script (no page here reaches the internet): it shows a "check"
# in the element it is given and answers what the test sets in window.answer.
FAKE_TURNSTILE = """
window.turnstile = {
  render: function (element, options) {
    element.textContent = "Robot check for " + options.sitekey;
    return "check-1";
  },
  getResponse: function (id) { return id === "check-1" ? (window.answer || "") : ""; },
  reset: function (id) { window.resets = (window.resets || 0) + 1; window.answer = ""; }
};
"""
SHOP_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Acme Plumbing</title></head>
<body><h1>Acme Plumbing</h1>
<script src="{cbserver}/widget.js" data-subscriber="acme" async></script>
</body></html>
"""


@pytest.fixture
def shop(base_url: str, sessions: sessionmaker[Session], verifier: FakeVerifier) -> Iterator[str]:
    """Acme's page with the widget, on an origin of its own; acme has a CAPTCHA."""
    site = Flask("business_site")

    @site.get("/contact")
    def contact() -> str:
        return SHOP_PAGE.replace("{cbserver}", base_url)

    use_captcha(sessions, verifier.url)
    with live_server(site) as url:
        with sessions() as session:
            session.scalars(select(Subscriber)).one().allowed_origins = url
            session.commit()
        yield url


def fake_provider(browser: Browser) -> None:
    browser.page.route(
        "https://challenges.cloudflare.com/**",
        lambda route: route.fulfill(content_type="application/javascript", body=FAKE_TURNSTILE),
    )


def send_with_answer(browser: Browser, answer: str) -> None:
    browser.evaluate(f"window.answer = {answer!r}")
    browser.click("Send")


@pytest.mark.browser
def test_the_widget_shows_the_check_when_its_settings_come_after_it_is_shown(
    browser: Browser, shop: str, verifier: FakeVerifier, sessions: sessionmaker[Session]
) -> None:
    fake_provider(browser)
    held: list[Route] = []
    browser.page.route("**/widget/acme.json", lambda route: held.append(route))
    browser.open(shop + "/contact")
    # Shown without them after its 3 s wait: in English, and not knowing of the CAPTCHA.
    browser.click("Call me back")
    dialog = browser.page.get_by_role("dialog", name="We will call you back")
    browser.fill("Your phone number", "(201) 555-0123")
    dialog.get_by_role("checkbox", name="I agree to be called at this number.").check()
    browser.click("Send")
    # The form waits for the settings rather than send what the server must refuse.
    expect(dialog.get_by_role("button", name="Sending\u2026")).to_be_disabled()
    assert verifier.asked == []
    [late] = held
    late.continue_()
    check = browser.page.locator("cbserver-callback > [slot=captcha]")
    expect(check).to_have_text(f"Robot check for {SITE_KEY}", timeout=10_000)
    expect(dialog.get_by_role("alert")).to_have_text(COMPLETE_THE_CHECK)

    send_with_answer(browser, "good")
    expect(browser.page.get_by_text("Thank you \u2014 we will call you.")).to_be_visible(
        timeout=10_000
    )
    assert [asked["response"] for asked in verifier.asked] == ["good"]
    assert stored(sessions) == 1
    assert not browser.page_errors


@pytest.mark.browser
def test_the_widget_shows_the_servers_refusal_and_asks_again_when_its_settings_failed(
    browser: Browser, shop: str, verifier: FakeVerifier, sessions: sessionmaker[Session]
) -> None:
    fake_provider(browser)
    asked: list[str] = []

    def settings(route: Route) -> None:
        asked.append(route.request.url)
        if len(asked) == 1:
            route.fulfill(status=503, body="")
        else:
            route.continue_()

    browser.page.route("**/widget/acme.json", settings)
    browser.open(shop + "/contact")
    browser.click("Call me back")
    dialog = browser.page.get_by_role("dialog", name="We will call you back")
    browser.fill("Your phone number", "(201) 555-0123")
    dialog.get_by_role("checkbox", name="I agree to be called at this number.").check()
    browser.click("Send")
    # The server's word, above the form; and the settings asked again, the check shown.
    expect(dialog.get_by_role("alert")).to_have_text(COMPLETE_THE_CHECK, timeout=10_000)
    check = browser.page.locator("cbserver-callback > [slot=captcha]")
    expect(check).to_have_text(f"Robot check for {SITE_KEY}", timeout=10_000)
    assert len(asked) == 2

    send_with_answer(browser, "good")
    expect(browser.page.get_by_text("Thank you \u2014 we will call you.")).to_be_visible(
        timeout=10_000
    )
    assert stored(sessions) == 1
    assert not browser.page_errors


@pytest.mark.browser
def test_the_widget_shows_the_check_and_sends_its_answer(
    browser: Browser,
    base_url: str,
    verifier: FakeVerifier,
    sessions: sessionmaker[Session],
) -> None:
    site = Flask("business_site")

    @site.get("/contact")
    def contact() -> str:
        return SHOP_PAGE.replace("{cbserver}", base_url)

    use_captcha(sessions, verifier.url)
    scripts: list[str] = []

    def provider(route: Route) -> None:
        scripts.append(route.request.url)
        route.fulfill(content_type="application/javascript", body=FAKE_TURNSTILE)

    browser.page.route("https://challenges.cloudflare.com/**", provider)
    with live_server(site) as shop:
        with sessions() as session:
            session.scalars(select(Subscriber)).one().allowed_origins = shop
            session.commit()
        browser.open(shop + "/contact")
        browser.click("Call me back")
        dialog = browser.page.get_by_role("dialog", name="We will call you back")
        # In the page, where the provider's script can reach it, shown in the dialog's form.
        check = browser.page.locator("cbserver-callback > [slot=captcha]")
        expect(check).to_have_text(f"Robot check for {SITE_KEY}", timeout=10_000)
        expect(check).to_be_visible()
        assert scripts == ["https://challenges.cloudflare.com/turnstile/v0/api.js?render=explicit"]

        browser.fill("Your phone number", "(201) 555-0123")
        dialog.get_by_role("checkbox", name="I agree to be called at this number.").check()
        browser.click("Send")
        expect(dialog.get_by_role("alert")).to_have_text(COMPLETE_THE_CHECK)
        assert verifier.asked == [], "nothing sent without an answer"

        browser.evaluate("window.answer = 'bad'")
        browser.click("Send")
        expect(dialog.get_by_role("alert")).to_have_text(ROBOT_CHECK_FAILED, timeout=10_000)
        assert browser.evaluate("window.resets") == 1, "a spent answer is not offered again"

        browser.evaluate("window.answer = 'good'")
        browser.click("Send")
        expect(browser.page.get_by_text("Thank you \u2014 we will call you.")).to_be_visible(
            timeout=10_000
        )
    assert [asked["response"] for asked in verifier.asked] == ["bad", "good"]
    assert stored(sessions) == 1
    assert not browser.page_errors
