"""The ``cbserver`` command line, without Asterisk: settings come from the environment."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cbserver import db
from cbserver.cli import EXIT_NOT_RUNNING, main


@pytest.fixture(autouse=True)
def no_outside_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("CBSERVER_"):
            monkeypatch.delenv(name)


@pytest.fixture
def cbserver(tmp_path: Path):
    runner = CliRunner()
    env = {
        "CBSERVER_STATE_DIR": str(tmp_path / "state"),
        "CBSERVER_DATABASE_URL": f"sqlite:///{tmp_path / 'cb.sqlite3'}",
    }

    def run(*args: str) -> Result:
        return runner.invoke(main, list(args), env=env, catch_exceptions=False)

    return run


def agents_file(tmp_path: Path) -> Path:
    return tmp_path / "state" / "asterisk" / "default" / "etc" / "pjsip_agents.conf"


def test_db_upgrade_reports_the_migrations_it_applied(cbserver, tmp_path: Path) -> None:
    first = cbserver("db", "upgrade")
    second = cbserver("db", "upgrade")

    assert first.exit_code == 0, first.output
    migrations = len(list((db.MIGRATIONS / "versions").glob("0*.py")))
    assert first.stdout == f"database at the newest schema ({migrations} migration(s) applied)\n"
    assert second.stdout == "database at the newest schema (0 migration(s) applied)\n"
    assert (tmp_path / "cb.sqlite3").is_file()


def test_agent_with_contact_is_added_and_listed(cbserver) -> None:
    added = cbserver("agent", "add", "alice", "--contact", "sip:alice@127.0.0.1:5070")
    listed = cbserver("agent", "list")

    assert added.exit_code == 0, added.output
    assert "Agent 'alice' added." in added.stdout
    assert "password" not in added.stdout
    assert listed.exit_code == 0, listed.output
    [line] = listed.stdout.splitlines()
    assert line.split() == [
        "alice",
        "active",
        "dtmf=rfc4733",
        "contact",
        "sip:alice@127.0.0.1:5070",
    ]


def test_registering_agent_gets_its_sip_account_printed(cbserver) -> None:
    added = cbserver("agent", "add", "bob", "--dtmf-mode", "info")

    assert added.exit_code == 0, added.output
    assert "Agent 'bob' added." in added.stdout
    assert re.search(r"^\s+username\s+bob$", added.stdout, re.MULTILINE)
    password = re.search(r"^\s+password\s+(\S+)$", added.stdout, re.MULTILINE)
    assert password is not None
    assert len(password.group(1)) >= 20
    assert re.search(r"^\s+domain\s+127\.0\.0\.1:5260 \(UDP\)$", added.stdout, re.MULTILINE)
    assert "registers" in cbserver("agent", "list").stdout


def test_adding_an_agent_without_asterisk_writes_its_pjsip_file(cbserver, tmp_path: Path) -> None:
    added = cbserver("agent", "add", "alice", "--contact", "sip:alice@127.0.0.1:5070")
    cbserver("agent", "add", "bob")

    assert added.exit_code == 0, added.output
    assert "reloaded" not in added.stdout  # nothing to reload: Asterisk is not running
    text = agents_file(tmp_path).read_text()
    assert "[alice](agent-endpoint)" in text
    assert "contact = sip:alice@127.0.0.1:5070" in text
    assert "[bob-auth](agent-auth)" in text


def test_adding_the_same_agent_twice_fails_clearly(cbserver) -> None:
    cbserver("agent", "add", "alice", "--contact", "sip:alice@127.0.0.1:5070")

    again = cbserver("agent", "add", "alice", "--contact", "sip:alice@127.0.0.1:5071")

    assert again.exit_code == 1
    assert again.stderr == "error: an agent named 'alice' already exists\n"
    assert "added" not in again.stdout
    assert len(cbserver("agent", "list").stdout.splitlines()) == 1


def test_bad_agent_name_fails_naming_the_rule(cbserver, tmp_path: Path) -> None:
    result = cbserver("agent", "add", "Bad Name")

    assert result.exit_code == 1
    assert result.stderr.startswith("error: agent name 'Bad Name' must start with a lowercase")
    assert cbserver("agent", "list").stdout == ""
    assert not agents_file(tmp_path).exists()


def test_bad_contact_fails_naming_the_expected_form(cbserver) -> None:
    result = cbserver("agent", "add", "alice", "--contact", "sip:alice@127.0.0.1;transport=tcp")

    assert result.exit_code == 1
    assert "is not a SIP URI like sip:alice@192.0.2.10:5060" in result.stderr


def test_asterisk_status_when_not_running_exits_3(cbserver, tmp_path: Path) -> None:
    result = cbserver("asterisk", "status")

    assert result.exit_code == EXIT_NOT_RUNNING == 3
    assert "Asterisk instance 'default': not running" in result.stdout
    assert str(tmp_path / "state" / "asterisk" / "default") in result.stdout


def test_asterisk_status_json_when_not_running(cbserver) -> None:
    result = cbserver("asterisk", "status", "--json")

    assert result.exit_code == 3
    assert '"running": false' in result.stdout


def test_bad_setting_in_the_environment_is_reported(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["agent", "list"],
        env={"CBSERVER_STATE_DIR": str(tmp_path), "CBSERVER_SIP_PORT": "sip"},
    )

    assert result.exit_code == 1
    assert "CBSERVER_SIP_PORT" in result.stderr
