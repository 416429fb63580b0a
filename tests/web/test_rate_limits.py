"""Rate limits as a visitor meets them: 429, Retry-After and a plain message; and as an
operator sets them: each a setting, "off" lifts it, Redis shares the counts between processes.

Each test turns on only the limit it is about (the rest lifted, as in the other web tests),
except the first, which runs with every default.
"""

from __future__ import annotations

import logging
import random
import re
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.test import TestResponse

from cbserver.clock import FakeClock
from cbserver.config import ConfigError, Settings, rate_limits
from cbserver.models import AuditEvent, CallbackRequest, Subscriber
from cbserver.subscribers import add_subscriber
from cbserver.web import create_app
from tests.web.conftest import UNLIMITED, csrf_token, hidden

pytestmark = [pytest.mark.usefixtures("acme")]

# Not acme's own number (+12015550100), nor bolt's (+12015550199): those are refused.
NUMBERS = [f"+1201555{n:04d}" for n in range(101, 111)]
PREMIUM = "+1 900 234 5678"
REDIS = "redis://127.0.0.1:6379/0"

MakeApp = Callable[..., FlaskClient]


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    # The counts are kept outside the database: one database is enough.
    return f"sqlite:///{tmp_path / 'cbserver.sqlite3'}"


@pytest.fixture
def make_client(
    engine: Engine, sessions: sessionmaker[Session], tmp_path: Path, clock: FakeClock
) -> MakeApp:
    """A client of a web app with only the given limits on (``defaults=True``: every default)."""

    def make(*, defaults: bool = False, **changes: Any) -> FlaskClient:
        settings = Settings(state_dir=tmp_path)
        if not defaults:
            settings = settings.replace(**UNLIMITED)
        app: Flask = create_app(settings=settings.replace(**changes), engine=engine, clock=clock)
        return app.test_client()

    return make


@pytest.fixture
def bolt(sessions: sessionmaker[Session]) -> Subscriber:
    with sessions() as session:
        return add_subscriber(
            session, "bolt", display_name="Bolt Electrics", country="US", caller_id="+12015550199"
        )


def ask(
    client: FlaskClient,
    phone: str,
    *,
    ip: str = "127.0.0.1",
    subscriber: str = "acme",
    **extra: Any,
) -> TestResponse:
    return client.post(
        "/api/v1/callbacks",
        json={"subscriber": subscriber, "phone": phone, "consent": True},
        environ_base={"REMOTE_ADDR": ip},
        **extra,
    )


def refused(response: TestResponse, message: str) -> int:
    """The wait a rate limit's refusal asks for; checked to say ``message``."""
    assert response.status_code == 429, response.text
    assert response.json == {"error": {"code": "rate_limited", "message": message}}
    retry_after = int(response.headers["Retry-After"])
    assert retry_after >= 1
    return retry_after


def audited(sessions: sessionmaker[Session]) -> list[tuple[str, str, int | None]]:
    with sessions() as session:
        events = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "rate_limited").order_by(AuditEvent.id)
        )
        return [(e.actor, e.detail, e.subscriber_id) for e in events]


def stored(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return len(session.scalars(select(CallbackRequest.id)).all())


def cancel(client: FlaskClient, created: TestResponse) -> None:
    body = created.json
    assert body is not None
    done = client.post(f"/api/v1/callbacks/{body['id']}/cancel?token={body['token']}")
    assert done.status_code == 200


# --- per client address ------------------------------------------------------------------------


def test_by_default_the_fourth_request_in_a_minute_from_one_address_must_wait(
    make_client: MakeApp, sessions: sessionmaker[Session]
) -> None:
    client = make_client(defaults=True)
    assert [ask(client, phone).status_code for phone in NUMBERS[:3]] == [201, 201, 201]

    message = "You have sent several requests in a short time. Please try again in a minute."
    assert refused(ask(client, NUMBERS[3]), message) <= 60
    refused(ask(client, NUMBERS[3]), message)
    assert stored(sessions) == 3
    # One row for the flood, not one per refusal.
    assert audited(sessions) == [
        ("visitor 127.0.0.1", "submissions from 127.0.0.1: over 3 per 1 minute", None)
    ]
    # Another visitor is not held up.
    assert ask(client, NUMBERS[3], ip="192.0.2.7").status_code == 201


def test_the_hosted_form_keeps_what_was_typed_when_a_limit_is_reached(
    make_client: MakeApp, sessions: sessionmaker[Session]
) -> None:
    client = make_client(rate_limit_per_ip="1 per minute")

    def send(**values: str) -> TestResponse:
        page = client.get("/c/acme").text
        fields = {
            "csrf_token": csrf_token(page),
            "submission_id": hidden(page, "submission_id"),
            "form_token": hidden(page, "form_token"),
            "when": "asap",
            "consent": "y",
            **values,
        }
        return client.post("/c/acme", data=fields)

    assert send(phone=NUMBERS[0]).status_code == 303
    again = send(phone=NUMBERS[1], name="Ada", topic="Leaking tap")
    assert again.status_code == 429
    assert 1 <= int(again.headers["Retry-After"]) <= 60
    assert re.search(
        r'<p class="error" role="alert" data-field="notice">You have sent several requests in '
        r"a short time. Please try again in a minute.</p>",
        again.text,
    )
    assert f'value="{NUMBERS[1]}"' in again.text
    assert 'value="Ada"' in again.text
    assert re.search(r">\s*Leaking tap</textarea>", again.text)
    assert stored(sessions) == 1


# --- per visitor number, per business, different numbers per address ---------------------------


@pytest.mark.usefixtures("bolt")
def test_a_number_is_asked_for_so_often_across_all_businesses_then_waits(
    make_client: MakeApp,
    sessions: sessionmaker[Session],
    acme: Subscriber,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="cbserver.audit")
    client = make_client(rate_limit_per_number="2 per day")
    victim = NUMBERS[0]
    first = ask(client, victim, ip="192.0.2.1")
    assert first.status_code == 201
    cancel(client, first)
    assert ask(client, victim, ip="192.0.2.2", subscriber="bolt").status_code == 201
    # Asked again while it still waits: that request is the answer, and uses up nothing.
    assert ask(client, victim, ip="192.0.2.2", subscriber="bolt").status_code == 200

    wait = refused(
        ask(client, victim, ip="192.0.2.3"),
        "We have had several requests to call this number already. Please try again in 24 hours.",
    )
    assert 86_000 < wait <= 86_400
    assert ask(client, NUMBERS[1], ip="192.0.2.3").status_code == 201
    assert audited(sessions) == [
        ("visitor 192.0.2.3", f"requests to call {victim}: over 2 per 1 day", acme.id)
    ]
    # The row is for the admin; log lines, kept longer and read by more, show the range only.
    assert "rate_limited requests to call +12015...: over 2 per 1 day" in caplog.text
    assert victim not in caplog.text


def test_one_address_may_ask_for_so_many_different_numbers_and_a_refused_one_counts_not(
    make_client: MakeApp, sessions: sessionmaker[Session]
) -> None:
    client = make_client(rate_limit_numbers_per_ip="2 per hour")
    for _ in range(3):
        assert ask(client, PREMIUM).status_code == 422, "refused by the number policy"
    first = ask(client, NUMBERS[0])
    assert first.status_code == 201
    assert ask(client, NUMBERS[1]).status_code == 201

    for phone in NUMBERS[2:4]:
        refused(
            ask(client, phone),
            "Requests for several different numbers came from your connection. Please try "
            "again in 60 minutes.",
        )
    assert [detail for _, detail, _ in audited(sessions)] == [
        "different numbers from 127.0.0.1: over 2 per 1 hour"
    ], "one row, however many numbers"
    # A number already asked for from here is not a new one.
    cancel(client, first)
    assert ask(client, NUMBERS[0]).status_code == 201
    assert stored(sessions) == 3


@pytest.mark.usefixtures("bolt")
def test_a_business_takes_so_many_requests_a_minute(
    make_client: MakeApp, sessions: sessionmaker[Session], acme: Subscriber
) -> None:
    client = make_client(rate_limit_per_subscriber="2 per minute")
    assert ask(client, NUMBERS[0], ip="192.0.2.1").status_code == 201
    assert ask(client, NUMBERS[1], ip="192.0.2.2").status_code == 201
    refused(
        ask(client, NUMBERS[2], ip="192.0.2.3"),
        "Acme Plumbing is receiving very many requests just now. Please try again in a minute.",
    )
    assert ask(client, NUMBERS[2], ip="192.0.2.3", subscriber="bolt").status_code == 201
    assert audited(sessions) == [
        ("visitor 192.0.2.3", "requests for acme: over 2 per 1 minute", acme.id)
    ]


# --- the other public pages and calls ----------------------------------------------------------


def test_public_pages_and_calls_share_a_limit_per_address(
    make_client: MakeApp, sessions: sessionmaker[Session]
) -> None:
    client = make_client(rate_limit_public="2 per minute")
    message = "There were too many requests from your connection. Please try again in a minute."
    assert client.get("/c/acme").status_code == 200
    assert client.get("/api/v1/subscribers/acme/slots").status_code == 200
    refused(client.get("/api/v1/subscribers/acme/slots"), message)

    page = client.get("/c/acme")
    assert page.status_code == 429
    assert page.mimetype == "text/html"
    assert message in page.text
    assert 1 <= int(page.headers["Retry-After"]) <= 60

    # Submitting has limits of its own; nor is another address held up.
    assert ask(client, NUMBERS[0]).status_code == 201
    other = client.get("/api/v1/subscribers/acme/slots", environ_base={"REMOTE_ADDR": "192.0.2.9"})
    assert other.status_code == 200
    assert len(audited(sessions)) == 1


# --- settings ----------------------------------------------------------------------------------


def test_each_limit_is_a_setting_and_off_lifts_it(tmp_path: Path) -> None:
    environ = {
        "CBSERVER_RATE_LIMIT_PER_IP": "off",
        "CBSERVER_RATE_LIMIT_PER_NUMBER": "5 per day; 2 per hour",
    }
    config = tmp_path / "cbserver.toml"
    config.write_text('rate_limit_per_subscriber = ""\nrate_limit_public = "100/minute"\n')
    settings = Settings.load(environ=environ, config_file=config)
    assert rate_limits(settings.rate_limit_per_ip) == []
    assert [str(item) for item in rate_limits(settings.rate_limit_per_number)] == [
        "5 per 1 day",
        "2 per 1 hour",
    ]
    assert rate_limits(settings.rate_limit_per_subscriber) == []
    assert [str(item) for item in rate_limits(settings.rate_limit_public)] == ["100 per 1 minute"]
    assert settings.rate_limit_numbers_per_ip == "3 per hour", "the default"

    with pytest.raises(ConfigError, match=r"CBSERVER_RATE_LIMIT_PER_IP='lots' is not a rate"):
        Settings.load(environ={"CBSERVER_RATE_LIMIT_PER_IP": "lots"})
    with pytest.raises(ConfigError, match="CBSERVER_RATE_LIMIT_STORAGE='mongodb://x' must"):
        Settings.load(environ={"CBSERVER_RATE_LIMIT_STORAGE": "mongodb://x"})


def test_with_the_address_limits_lifted_one_address_asks_as_often_as_it_likes(
    make_client: MakeApp, sessions: sessionmaker[Session]
) -> None:
    client = make_client(defaults=True, rate_limit_per_ip="off", rate_limit_numbers_per_ip="off")
    assert [ask(client, phone).status_code for phone in NUMBERS[:6]] == [201] * 6
    assert audited(sessions) == []


def test_behind_trusted_proxies_the_forwarded_address_is_the_client(
    make_client: MakeApp, sessions: sessionmaker[Session]
) -> None:
    proxied = make_client(rate_limit_per_ip="1 per minute", trusted_proxies=1)

    def via_proxy(client: FlaskClient, phone: str, visitor: str) -> TestResponse:
        return ask(client, phone, headers={"X-Forwarded-For": visitor})

    assert via_proxy(proxied, NUMBERS[0], "203.0.113.1").status_code == 201
    assert via_proxy(proxied, NUMBERS[1], "203.0.113.2").status_code == 201
    assert via_proxy(proxied, NUMBERS[2], "203.0.113.1").status_code == 429
    assert [actor for actor, _, _ in audited(sessions)] == ["visitor 203.0.113.1"]

    # Without trusted proxies the header is anyone's to write, and not believed.
    direct = make_client(rate_limit_per_ip="1 per minute")
    assert via_proxy(direct, NUMBERS[3], "203.0.113.3").status_code == 201
    assert via_proxy(direct, NUMBERS[4], "203.0.113.4").status_code == 429


def test_an_ipv6_client_is_counted_by_its_64_however_many_addresses_it_takes(
    make_client: MakeApp, sessions: sessionmaker[Session]
) -> None:
    client = make_client(
        rate_limit_per_ip="1 per minute",
        rate_limit_numbers_per_ip="2 per hour",
        rate_limit_public="1 per minute",
    )
    home, next_door = "2001:db8:1:2::1", "2001:db8:1:2:ffff:ee:dd:9"
    assert ask(client, NUMBERS[0], ip=home).status_code == 201
    refused(
        ask(client, NUMBERS[1], ip=next_door),
        "You have sent several requests in a short time. Please try again in a minute.",
    )
    assert audited(sessions) == [
        (f"visitor {next_door}", "submissions from 2001:db8:1:2::/64: over 1 per 1 minute", None)
    ]
    # Another /64 is another client; an IPv4 address is its own, written either way.
    assert ask(client, NUMBERS[1], ip="2001:db8:1:3::1").status_code == 201
    assert ask(client, NUMBERS[2], ip="192.0.2.1").status_code == 201
    assert ask(client, NUMBERS[3], ip="::ffff:192.0.2.1").status_code == 429

    slots = "/api/v1/subscribers/acme/slots"
    assert client.get(slots, environ_base={"REMOTE_ADDR": home}).status_code == 200
    assert client.get(slots, environ_base={"REMOTE_ADDR": next_door}).status_code == 429


def test_different_numbers_from_one_ipv6_network_count_together(
    make_client: MakeApp, sessions: sessionmaker[Session]
) -> None:
    client = make_client(rate_limit_numbers_per_ip="1 per hour")
    assert ask(client, NUMBERS[0], ip="2001:db8:5:6::1").status_code == 201
    refused(
        ask(client, NUMBERS[1], ip="2001:db8:5:6::2"),
        "Requests for several different numbers came from your connection. Please try again "
        "in 60 minutes.",
    )
    assert stored(sessions) == 1


def test_x_forwarded_for_is_believed_only_from_the_trusted_proxy_networks(
    make_client: MakeApp,
) -> None:
    def from_peer(client: FlaskClient, phone: str, claimed: str) -> TestResponse:
        return ask(client, phone, ip="198.51.100.7", headers={"X-Forwarded-For": claimed})

    # By default only a proxy on this machine is believed: this peer writes what it likes.
    default = make_client(rate_limit_per_ip="1 per minute", trusted_proxies=1)
    assert from_peer(default, NUMBERS[0], "203.0.113.1").status_code == 201
    assert from_peer(default, NUMBERS[1], "203.0.113.2").status_code == 429

    trusted = make_client(
        rate_limit_per_ip="1 per minute",
        trusted_proxies=1,
        trusted_proxy_networks="198.51.100.0/24, 127.0.0.1/32",
    )
    assert from_peer(trusted, NUMBERS[2], "203.0.113.3").status_code == 201
    assert from_peer(trusted, NUMBERS[3], "203.0.113.4").status_code == 201


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (
            "CBSERVER_TRUSTED_PROXY_NETWORKS",
            "10.0.0.0/8, the proxy",
            "CBSERVER_TRUSTED_PROXY_NETWORKS: 'the proxy' is not a network like 192.0.2.0/24",
        ),
        ("CBSERVER_FORM_MAX_HOURS", "0", "CBSERVER_FORM_MAX_HOURS must be more than 0"),
        ("CBSERVER_COOKIE_SAMESITE", "lax", "must be one of Lax, Strict, None"),
    ],
)
def test_the_new_security_settings_are_checked(
    tmp_path: Path, name: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        Settings.load({"CBSERVER_STATE_DIR": str(tmp_path), name: value})


# --- where the counts are kept -----------------------------------------------------------------


def test_in_memory_each_web_process_counts_for_itself(make_client: MakeApp) -> None:
    one, other = (make_client(rate_limit_per_ip="1 per minute") for _ in range(2))
    assert ask(one, NUMBERS[0]).status_code == 201
    assert ask(one, NUMBERS[1]).status_code == 429
    assert ask(other, NUMBERS[1]).status_code == 201


def redis_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.skipif(not redis_answers(), reason="no Redis answers on 127.0.0.1:6379")
def test_in_redis_the_web_processes_share_the_counts(make_client: MakeApp) -> None:
    one, other = (
        make_client(rate_limit_storage=REDIS, rate_limit_per_ip="1 per minute") for _ in range(2)
    )
    # An address of its own per run: counts left in Redis by an earlier run do not meet it.
    visitor = f"198.18.{random.randrange(256)}.{random.randrange(1, 255)}"
    assert ask(one, NUMBERS[0], ip=visitor).status_code == 201
    refused(
        ask(other, NUMBERS[1], ip=visitor),
        "You have sent several requests in a short time. Please try again in a minute.",
    )


def test_an_unreachable_redis_still_limits_within_the_process(
    make_client: MakeApp, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(
        rate_limit_storage="redis://127.0.0.1:9/0",
        rate_limit_per_ip="1 per minute",
        rate_limit_public="1 per minute",
    )
    assert ask(client, NUMBERS[0]).status_code == 201
    assert ask(client, NUMBERS[1]).status_code == 429
    assert client.get("/api/v1/subscribers/acme/slots").status_code == 200
    assert client.get("/api/v1/subscribers/acme/slots").status_code == 429
    assert "rate-limit store unreachable" in caplog.text
