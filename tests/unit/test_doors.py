"""Secrets and doors: what could let someone in, or give a secret away, is shut by default.

Visitor tokens and agents' SIP passwords are long random secrets, tokens are compared in
constant time; Asterisk's ARI, AMI, HTTP and SIP and the web listen on loopback unless told
otherwise; agents may register only from the configured networks; files with secrets are
private; and no secret is written to a log. (Admin tokens hashed at rest, scoped and
revocable: tests/unit/test_admin_tokens.py; ARI/AMI credentials generated per instance, their
loopback binding and the 0600 config files: tests/unit/test_asterisk_config.py.)
"""

from __future__ import annotations

import base64
import hmac
import logging
import os
import socket
import stat
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from cbserver import admin_tokens, intake
from cbserver.agents import add_agent
from cbserver.asterisk.instance import AsteriskInstance
from cbserver.asterisk.runtime import HostRuntime
from cbserver.cli import main
from cbserver.config import ConfigError, Settings
from cbserver.errors import NotFound
from cbserver.intake import Submission
from cbserver.models import Subscriber, new_secret
from cbserver.serve import WebServer, redact
from cbserver.web import create_app

RUNTIME = HostRuntime(binary="/usr/sbin/asterisk", version="Asterisk 22")
AT_LEAST_128_BITS = 16


def random_bytes(secret: str) -> int:
    """How many random bytes a URL-safe base64 secret carries."""
    return len(base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4)))


@pytest.fixture
def acme(session: Session) -> Subscriber:
    subscriber = Subscriber(
        slug="acme", display_name="Acme", country="US", caller_id="+12015550100"
    )
    session.add(subscriber)
    session.commit()
    return subscriber


# --- visitor tokens --------------------------------------------------------------------------


def test_visitor_tokens_are_long_random_and_never_repeat() -> None:
    tokens = {new_secret() for _ in range(2000)}

    assert len(tokens) == 2000
    assert min(random_bytes(token) for token in tokens) >= AT_LEAST_128_BITS


@pytest.mark.usefixtures("acme")
def test_a_visitor_token_is_compared_in_constant_time(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    submission = Submission(subscriber="acme", phone="+12015550123", consent=True)
    request = intake.submit(session, submission).request
    compared: list[tuple[bytes, bytes]] = []
    constant_time = hmac.compare_digest

    def compare_digest(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return constant_time(a, b)

    monkeypatch.setattr(intake.hmac, "compare_digest", compare_digest)
    almost = request.visitor_token[:-1] + ("A" if request.visitor_token[-1] != "A" else "B")

    assert intake.for_visitor(session, request.id, request.visitor_token) is request
    for wrong in (almost, "", None):
        with pytest.raises(NotFound):
            intake.for_visitor(session, request.id, wrong)
    assert len(compared) == 4
    assert random_bytes(request.visitor_token) >= AT_LEAST_128_BITS


def test_agents_sip_passwords_are_long_random_and_their_own(session: Session) -> None:
    passwords = [add_agent(session, f"agent{n}").sip_password for n in range(20)]

    assert len(set(passwords)) == 20
    assert all(p is not None and random_bytes(p) >= AT_LEAST_128_BITS for p in passwords)


def test_admin_token_secrets_are_long_random(session: Session) -> None:
    secret = admin_tokens.create_token(session, "ops")[1]

    assert random_bytes(secret.removeprefix(admin_tokens.PREFIX)) >= AT_LEAST_128_BITS


# --- what listens where ----------------------------------------------------------------------


def test_everything_listens_on_loopback_by_default(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    instance = AsteriskInstance(settings)
    instance.render(RUNTIME, [])
    etc = instance.directory / "etc"

    assert settings.web_host == "127.0.0.1"
    assert settings.sip_bind == "127.0.0.1"
    assert f"bind = 127.0.0.1:{settings.sip_port}" in (etc / "pjsip.conf").read_text()
    assert "media_address = 127.0.0.1" in (etc / "pjsip.conf").read_text()
    assert "bindaddr = 127.0.0.1" in (etc / "http.conf").read_text()
    assert "bindaddr = 127.0.0.1" in (etc / "manager.conf").read_text()
    assert instance.ari_url.startswith("http://127.0.0.1:")


def agent_endpoint_options(etc: Path) -> dict[str, str]:
    text = (etc / "pjsip.conf").read_text()
    template = text.split("[agent-endpoint](!)", 1)[1].split("\n[", 1)[0]
    options = {}
    for line in template.splitlines():
        key, sep, value = line.split(";", 1)[0].partition("=")
        if sep:
            options[key.strip()] = value.strip()
    return options


def test_agents_may_register_only_from_loopback_by_default(tmp_path: Path) -> None:
    instance = AsteriskInstance(Settings(state_dir=tmp_path))
    instance.render(RUNTIME, [])

    options = agent_endpoint_options(instance.directory / "etc")
    assert options["deny"] == "0.0.0.0/0.0.0.0,::/0"
    assert options["permit"] == "127.0.0.0/8,::1/128"
    assert options["contact_deny"] == "0.0.0.0/0.0.0.0,::/0"
    assert options["contact_permit"] == "127.0.0.0/8,::1/128"


def test_the_agents_networks_are_a_setting(tmp_path: Path) -> None:
    settings = Settings.load(
        environ={
            "CBSERVER_STATE_DIR": str(tmp_path),
            "CBSERVER_AGENT_NETWORKS": "192.168.10.7/24, 2001:db8::/32 ,10.1.2.3",
        }
    )
    instance = AsteriskInstance(settings)
    instance.render(RUNTIME, [])

    options = agent_endpoint_options(instance.directory / "etc")
    assert options["permit"] == "192.168.10.0/24,2001:db8::/32,10.1.2.3/32"
    assert options["contact_permit"] == options["permit"]


@pytest.mark.parametrize("networks", ["192.168.10.0/33", "office", "10.0.0.0/8;deny", " "])
def test_networks_that_cannot_be_read_are_refused(tmp_path: Path, networks: str) -> None:
    with pytest.raises(ConfigError, match="CBSERVER_AGENT_NETWORKS"):
        Settings.load(
            environ={"CBSERVER_STATE_DIR": str(tmp_path), "CBSERVER_AGENT_NETWORKS": networks}
        )


# --- private files ---------------------------------------------------------------------------


def test_the_web_secret_key_is_generated_into_a_private_file(
    engine: Engine, tmp_path: Path
) -> None:
    create_app(settings=Settings(state_dir=tmp_path), engine=engine)

    path = tmp_path / "secret_key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert random_bytes(path.read_text().strip()) >= AT_LEAST_128_BITS


# --- nothing secret in logs ------------------------------------------------------------------


@pytest.fixture
def every_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


def test_no_secret_is_logged_while_tokens_agents_and_asterisk_are_set_up(
    every_log: pytest.LogCaptureFixture,
    tmp_path: Path,
    engine: Engine,
    sessions: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in list(os.environ):
        if name.startswith("CBSERVER_"):
            monkeypatch.delenv(name)
    env = {
        "CBSERVER_STATE_DIR": str(tmp_path / "state"),
        "CBSERVER_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.sqlite3'}",
    }
    secrets: list[str] = []

    def run(*args: str) -> str:
        result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.stdout

    token_output = run("token", "create", "ops")
    secrets.append(token_output.split("secret", 1)[1].split()[0])
    agent_output = run("agent", "add", "carol")
    secrets.append(agent_output.split("password", 1)[1].split()[0])

    settings = Settings(state_dir=tmp_path / "web")
    instance = AsteriskInstance(settings)
    instance.render(RUNTIME, [])
    keys = instance.secrets()
    secrets += [keys.ari.password, keys.ami.password]

    app = create_app(settings=settings, engine=engine)
    with sessions() as session:
        admin_secret = admin_tokens.create_token(session, "api")[1]
    secrets.append(admin_secret)
    client = app.test_client()
    created = client.post(
        "/api/v1/admin/agents",
        json={"name": "dave"},
        headers={"Authorization": f"Bearer {admin_secret}"},
    )
    assert created.status_code == 201, created.get_data(as_text=True)
    secrets.append(created.json["sip_password"])  # type: ignore[index]
    client.get("/api/v1/admin/agents", headers={"Authorization": "Bearer cbs_not-a-real-one"})

    assert len(secrets) == 6
    assert all(len(secret) >= 20 for secret in secrets), secrets
    logged = every_log.text
    assert "added agent dave" in logged, "the logs were captured"
    for secret in secrets:
        assert secret not in logged
    assert "cbs_not-a-real-one" not in logged


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_the_web_servers_request_log_hides_visitor_tokens(
    every_log: pytest.LogCaptureFixture,
    tmp_path: Path,
    engine: Engine,
    sessions: sessionmaker[Session],
) -> None:
    app = create_app(settings=Settings(state_dir=tmp_path), engine=engine)
    server = WebServer(app, "127.0.0.1", free_port())
    server.start()
    try:
        for path in ("/s/abc?token=s3cret-visitor-token", "/api/v1/callbacks/abc?x=1&token=s3cret"):
            with pytest.raises(urllib.error.HTTPError):
                urllib.request.urlopen(server.base_url.rstrip("/") + path, timeout=5)
    finally:
        server.stop()

    requests = [r.getMessage() for r in every_log.records if r.name == "werkzeug"]
    assert len(requests) == 2
    assert all("token=[hidden]" in line for line in requests)
    assert "s3cret" not in every_log.text


def test_redacting_keeps_the_rest_of_the_request_line() -> None:
    assert redact("GET /s/1?token=abc&x=2 HTTP/1.1") == "GET /s/1?token=[hidden]&x=2 HTTP/1.1"
    assert redact("GET /s/1?mytoken=abc HTTP/1.1") == "GET /s/1?mytoken=abc HTTP/1.1"
