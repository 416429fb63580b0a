"""What every answer tells the browser: what a page may load, who may frame it, what it may
say in a Referer, what may be kept in caches; and the answers to bodies too large or to a crash."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from flask import Flask, abort
from flask.testing import FlaskClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.test import TestResponse

from cbserver import admin_tokens, intake, subscribers
from cbserver.clock import FakeClock
from cbserver.config import Settings
from cbserver.intake import Submission
from cbserver.models import CallbackRequest, Subscriber
from cbserver.security import allow_sources
from cbserver.views import form as form_view
from cbserver.web import create_app
from tests.web.conftest import CLOCK_START, UNLIMITED, US_MOBILE, csrf_token

pytestmark = [pytest.mark.usefixtures("acme")]

SHOP = "https://shop.example"


def directives(response: TestResponse) -> dict[str, list[str]]:
    policy = response.headers["Content-Security-Policy"]
    parsed = {}
    for part in policy.split(";"):
        name, *sources = part.split()
        assert name not in parsed, f"{name} twice in {policy}"
        parsed[name] = sources
    return parsed


def stored_request(sessions: sessionmaker[Session], **fields: str) -> CallbackRequest:
    with sessions() as session:
        submission = Submission(subscriber="acme", phone=US_MOBILE, consent=True, **fields)
        return intake.submit(session, submission, now=CLOCK_START).request


def status_path(callback: CallbackRequest) -> str:
    return f"/s/{callback.id}?token={callback.visitor_token}"


def allow_origins(sessions: sessionmaker[Session], origins: str) -> None:
    with sessions() as session:
        acme = session.scalars(select(Subscriber).where(Subscriber.slug == "acme")).one()
        acme.allowed_origins = origins
        session.commit()


@pytest.fixture
def admin_secret(sessions: sessionmaker[Session]) -> str:
    with sessions() as session:
        return admin_tokens.create_token(session, "headers")[1]


@pytest.fixture
def callback(sessions: sessionmaker[Session]) -> CallbackRequest:
    return stored_request(sessions)


# --- Content-Security-Policy -----------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/c/acme", "/c/nobody", "/api/v1/callbacks/x", "/healthz"])
def test_every_answer_has_a_strict_policy_and_no_sniffing(client: FlaskClient, path: str) -> None:
    response = client.get(path)

    policy = directives(response)
    assert policy["default-src"] == ["'none'"]
    assert policy["base-uri"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]
    for sources in policy.values():
        assert not [s for s in sources if s.startswith("'unsafe-")], policy
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"


def test_each_page_may_load_only_what_it_needs(
    client: FlaskClient, callback: CallbackRequest
) -> None:
    index = directives(client.get("/"))
    form = directives(client.get("/c/acme"))
    status = directives(client.get(status_path(callback)))

    assert index["style-src"] == ["'self'"]
    assert "script-src" not in index
    assert index["form-action"] == ["'none'"]
    assert "script-src" not in form
    assert form["form-action"] == ["'self'"]
    # status.js polls the JSON API, and the page posts its cancel and move forms.
    assert status["script-src"] == ["'self'"]
    assert status["connect-src"] == ["'self'"]
    assert status["form-action"] == ["'self'"]


class _InlineCode(HTMLParser):
    """Collects what a CSP without 'unsafe-inline' would block: inline scripts and styles."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        if tag == "script" and "src" not in names:
            self.found.append("an inline <script>")
        if tag == "style":
            self.found.append("a <style> element")
        self.found += [f"{tag} {name}=" for name in names if name == "style" or name[:2] == "on"]
        self.found += [
            f"{tag} {name}={value}"
            for name, value in attrs
            if value and value.strip().lower().startswith("javascript:")
        ]


def test_no_page_has_inline_script_or_style(client: FlaskClient, callback: CallbackRequest) -> None:
    form = client.get("/c/acme").get_data(as_text=True)
    refused = client.post(
        "/c/acme", data={"csrf_token": csrf_token(form), "phone": "12", "when": "asap"}
    )
    pages = [
        client.get("/"),
        client.get("/c/acme"),
        refused,
        client.get(status_path(callback)),
        client.get("/nothing-here"),
    ]
    assert refused.status_code == 422
    for page in pages:
        parser = _InlineCode()
        parser.feed(page.get_data(as_text=True))
        assert parser.found == [], page.request.path


def test_a_view_may_widen_the_policy_of_its_own_answer_only(app: Flask) -> None:
    @app.get("/with-captcha")
    def with_captcha() -> str:
        allow_sources("script-src", "https://challenges.cloudflare.com")
        allow_sources("frame-src", "https://challenges.cloudflare.com")
        return "a page with a CAPTCHA"

    client = app.test_client()
    widened = directives(client.get("/with-captcha"))
    other = directives(client.get("/"))

    assert widened["script-src"] == ["https://challenges.cloudflare.com"]
    assert widened["frame-src"] == ["https://challenges.cloudflare.com"]
    assert widened["default-src"] == ["'none'"]
    assert "script-src" not in other
    assert "frame-src" not in other


@pytest.mark.parametrize(
    ("directive", "source"),
    [
        ("script-src", "'unsafe-inline'"),
        ("script-src", "'unsafe-eval'"),
        ("script-src", "https://a.example; frame-ancestors *"),
        ("frame-ancestors", "https://a.example"),
        ("script-src", ""),
    ],
)
def test_a_view_cannot_weaken_the_policy(app: Flask, directive: str, source: str) -> None:
    with app.test_request_context("/"), pytest.raises(ValueError, match=r"CSP|widened"):
        allow_sources(directive, source)


# --- framing ---------------------------------------------------------------------------------


def test_the_hosted_form_may_be_framed_only_by_the_subscribers_sites(
    client: FlaskClient, sessions: sessionmaker[Session], callback: CallbackRequest
) -> None:
    assert directives(client.get("/c/acme"))["frame-ancestors"] == ["'none'"]

    allow_origins(sessions, f"{SHOP},https://www.shop.example:8443/,javascript:alert(1)")
    form = client.get("/c/acme")
    # The status page the form leads to, inside the same frame.
    status = client.get(status_path(callback))
    index = client.get("/")

    for framed in (form, status):
        assert directives(framed)["frame-ancestors"] == [SHOP, "https://www.shop.example:8443"]
        assert "X-Frame-Options" not in framed.headers
    assert directives(index)["frame-ancestors"] == ["'none'"]
    assert index.headers["X-Frame-Options"] == "DENY"


def session_cookie(client: FlaskClient) -> str:
    page = client.get("/c/acme")
    [cookie] = [v for k, v in page.headers.items() if k == "Set-Cookie" and "session=" in v]
    return cookie


def test_the_form_cookie_is_samesite_lax_unless_framing_by_other_sites_needs_none(
    client: FlaskClient, engine: Engine, tmp_path: Path, clock: FakeClock
) -> None:
    lax = session_cookie(client)
    assert "SameSite=Lax" in lax
    assert "HttpOnly" in lax
    assert "Secure" not in lax

    # Another site's page framing the form: the browser sends the cookie back only with None,
    # and takes None only with Secure (so over HTTPS).
    settings = Settings(state_dir=tmp_path).replace(**UNLIMITED, cookie_samesite="None")
    framed = create_app(settings=settings, engine=engine, clock=clock).test_client()
    cookie = session_cookie(framed)
    assert "SameSite=None" in cookie
    assert "Secure" in cookie


# --- Referer and caches ----------------------------------------------------------------------


def test_the_status_page_sends_no_referrer_anywhere(
    client: FlaskClient, callback: CallbackRequest
) -> None:
    # Its address carries the visitor's token; its stylesheet and script requests would too.
    assert client.get(status_path(callback)).headers["Referrer-Policy"] == "no-referrer"
    for path in ("/", "/c/acme", "/api/v1/subscribers/acme/slots"):
        assert client.get(path).headers["Referrer-Policy"] == "strict-origin-when-cross-origin"


def test_answers_with_tokens_or_personal_data_are_never_stored(
    client: FlaskClient, callback: CallbackRequest, admin_secret: str
) -> None:
    created = client.post(
        "/api/v1/callbacks",
        json={"subscriber": "acme", "phone": "+12015550124", "consent": True},
    )
    answers = [
        created,
        client.get(status_path(callback)),
        client.get(
            f"/api/v1/callbacks/{callback.id}",
            headers={"Authorization": f"Bearer {callback.visitor_token}"},
        ),
        client.get("/c/acme"),  # its CSRF token is tied to this visitor's session
        client.get(
            f"/api/v1/admin/requests/{callback.id}",
            headers={"Authorization": f"Bearer {admin_secret}"},
        ),
        client.get("/c/nobody"),
    ]
    assert created.status_code == 201, created.get_data(as_text=True)
    for answer in answers:
        assert answer.headers["Cache-Control"] == "no-store", answer.request.path


def test_public_files_stay_cacheable(client: FlaskClient) -> None:
    assert "max-age=300" in client.get("/widget.js").headers["Cache-Control"]
    assert "max-age=300" in client.get("/widget/acme.json").headers["Cache-Control"]
    assert "no-store" not in client.get("/static/cbserver.css").headers.get("Cache-Control", "")


def test_https_answers_ask_browsers_to_stay_on_https(client: FlaskClient) -> None:
    assert "Strict-Transport-Security" not in client.get("/").headers
    secure = client.get("/", base_url="https://cb.example")
    assert secure.headers["Strict-Transport-Security"].startswith("max-age=")


# --- CORS ------------------------------------------------------------------------------------


def test_only_public_listings_are_readable_by_any_page(
    client: FlaskClient,
    sessions: sessionmaker[Session],
    callback: CallbackRequest,
    admin_secret: str,
) -> None:
    allow_origins(sessions, SHOP)
    origin = {"Origin": SHOP}
    visitor = {**origin, "Authorization": f"Bearer {callback.visitor_token}"}
    admin = {**origin, "Authorization": f"Bearer {admin_secret}"}

    # No visitor's data in these: the same as the hosted form shows, or the widget's own code.
    for path in ("/widget.js", "/widget/acme.json", "/api/v1/subscribers/acme/slots"):
        assert client.get(path, headers=origin).headers["Access-Control-Allow-Origin"] == "*"
    # A visitor's request, and the admin API: no page of another origin reads them, not even
    # one the subscriber lists (the widget never needs to).
    for answer in (
        client.get(f"/api/v1/callbacks/{callback.id}", headers=visitor),
        client.post(f"/api/v1/callbacks/{callback.id}/cancel", headers=visitor),
        client.get("/api/v1/admin/subscribers", headers=admin),
        client.options(
            "/api/v1/admin/subscribers", headers={**origin, "Access-Control-Request-Method": "GET"}
        ),
    ):
        assert "Access-Control-Allow-Origin" not in answer.headers, answer.request.path
        assert "Access-Control-Allow-Credentials" not in answer.headers


def test_a_malformed_body_is_explained_to_a_listed_page_only(
    client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    allow_origins(sessions, SHOP)
    malformed = {"subscriber": "acme", "phone": 2015550123}

    listed = client.post("/api/v1/callbacks", json=malformed, headers={"Origin": SHOP})
    other = client.post(
        "/api/v1/callbacks", json=malformed, headers={"Origin": "https://evil.example"}
    )

    assert (listed.status_code, other.status_code) == (400, 400)
    assert listed.headers["Access-Control-Allow-Origin"] == SHOP
    assert "Access-Control-Allow-Origin" not in other.headers
    assert "Origin" in listed.headers["Vary"]


# --- too large, and crashes ------------------------------------------------------------------

HUGE = 17 * 1024


def test_a_body_over_16_kib_is_413_with_a_clear_message_everywhere(
    client: FlaskClient, admin_secret: str
) -> None:
    api = client.post("/api/v1/callbacks", data="x" * HUGE, content_type="application/json")
    admin = client.post(
        "/api/v1/admin/subscribers",
        data='{"slug": "' + "x" * HUGE + '"}',
        content_type="application/json",
        headers={"Authorization": f"Bearer {admin_secret}"},
    )
    form = client.post("/c/acme", data={"phone": "+12015550123", "topic": "x" * HUGE})

    for answer in (api, admin):
        assert answer.status_code == 413
        assert answer.json is not None
        assert answer.json["error"]["message"] == "The request is too large (at most 16 KiB)."
    assert form.status_code == 413
    assert form.mimetype == "text/html"
    assert "The request is too large (at most 16 KiB)." in form.get_data(as_text=True)


def test_a_crash_shows_no_stack_trace_on_a_page_or_in_the_admin_api(
    app: Flask, admin_secret: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("secret internals at /srv/cbserver/db.py line 12")

    monkeypatch.setattr(subscribers, "list_subscribers", crash)
    monkeypatch.setattr(form_view, "closed_note", crash)
    client = app.test_client()
    page = client.get("/c/acme")
    admin = client.get(
        "/api/v1/admin/subscribers", headers={"Authorization": f"Bearer {admin_secret}"}
    )

    assert (page.status_code, admin.status_code) == (500, 500)
    assert "Something went wrong on our side" in page.get_data(as_text=True)
    assert admin.json is not None
    assert admin.json["error"]["code"] == "internal_error"
    for answer in (page, admin):
        text = answer.get_data(as_text=True)
        assert "secret internals" not in text
        assert "Traceback" not in text
        assert not re.search(r"\.py\b", text)
        assert answer.headers["Cache-Control"] == "no-store"


def test_an_http_error_page_keeps_the_security_headers(app: Flask) -> None:
    @app.get("/forbidden")
    def forbidden() -> str:
        abort(403)

    answer = app.test_client().get("/forbidden")

    assert answer.status_code == 403
    assert directives(answer)["default-src"] == ["'none'"]
    assert answer.headers["X-Frame-Options"] == "DENY"


def test_a_method_the_address_does_not_take_is_405_saying_which_it_takes(
    client: FlaskClient,
) -> None:
    answer = client.delete("/api/v1/callbacks")

    assert answer.status_code == 405
    assert answer.json is not None
    assert answer.json["error"]["code"] == "method_not_allowed"
    assert set(answer.headers["Allow"].replace(" ", "").split(",")) >= {"POST", "OPTIONS"}
