"""The ``cbserver`` command line, without Asterisk: settings come from the environment."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import signal
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from cbserver import admin_tokens, cli, db, nodes
from cbserver.ari import AriConfig
from cbserver.claims import LEASE
from cbserver.cli import EXIT_NOT_RUNNING, main
from cbserver.models import Agent, WorkerNode
from cbserver.subscribers import list_subscribers

pytestmark = pytest.mark.usefixtures("no_outside_settings")


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
        "available",
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


# --- subscribers and assignments -----------------------------------------------------------

ACME = ("--name", "Acme Plumbing", "--country", "US", "--caller-id", "+12015550100")
BETA = ("--name", "Beta GmbH", "--country", "DE", "--caller-id", "+49 30 901820")


def table(result: Result) -> list[list[str]]:
    """``subscriber list`` rows, cut where the header's columns start (names hold spaces)."""
    header, *rows = result.stdout.splitlines()
    starts = [m.start() for m in re.finditer(r"\S+(?: \S+)*", header)]
    cuts = [*starts, None]
    return [[line[a:b].strip() for a, b in itertools.pairwise(cuts)] for line in rows]


def test_subscriber_is_added_and_listed(cbserver) -> None:
    added = cbserver(
        "subscriber",
        "add",
        "acme",
        *ACME,
        "--time-zone",
        "America/Los_Angeles",
        "--allowed-countries",
        "us,ca",
        "--allowed-origins",
        "https://www.example.com/,https://example.com",
    )
    cbserver("subscriber", "add", "beta", *BETA, "--language", "de")
    listed = cbserver("subscriber", "list")

    assert added.exit_code == 0, added.output
    assert added.stdout.startswith("Subscriber 'acme' added.\n")
    assert re.search(r"^\s+hosted form\s+/c/acme$", added.stdout, re.MULTILINE)
    key = re.search(r"^\s+widget key\s+(\S+)$", added.stdout, re.MULTILINE)
    assert key is not None
    assert len(key.group(1)) >= 40
    assert listed.exit_code == 0, listed.output
    assert re.split(r"\s{2,}", listed.stdout.splitlines()[0]) == [
        "SLUG",
        "NAME",
        "COUNTRY",
        "TIME ZONE",
        "AGENTS",
        "STATE",
    ]
    assert table(listed) == [
        ["acme", "Acme Plumbing", "US", "America/Los_Angeles", "-", "active"],
        ["beta", "Beta GmbH", "DE", "UTC", "-", "active"],
    ]


def test_no_subscribers_says_so(cbserver) -> None:
    listed = cbserver("subscriber", "list")

    assert listed.exit_code == 0, listed.output
    assert listed.stdout.startswith("No subscribers yet")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("Acme", *ACME), "subscriber slug 'Acme' must be 2 to 40 lowercase letters"),
        (("acme", *ACME, "--time-zone", "Mars/Olympus"), "time zone 'Mars/Olympus' is not an"),
        (("acme", *ACME, "--max-attempts", "0"), "attempts must be a whole number from 1 to 10"),
        (("acme", *ACME, "--allowed-origins", "ftp://x"), "origin 'ftp://x' is not a web origin"),
        (("acme", *BETA[:4], "--caller-id", "12345"), "caller ID '12345' is not a valid phone"),
        (
            ("acme", *ACME, "--wrap-up-seconds", "3601"),
            "the wrap-up time in seconds must be a whole number from 0 to 3600",
        ),
        (
            ("acme", *ACME, "--inbound-number", "12345"),
            "inbound number '12345' is not a valid phone number",
        ),
    ],
    ids=[
        "slug",
        "time_zone",
        "max_attempts",
        "allowed_origins",
        "caller_id",
        "wrap_up_seconds",
        "inbound_number",
    ],
)
def test_refused_subscriber_fails_naming_the_rule(cbserver, args, message: str) -> None:
    result = cbserver("subscriber", "add", *args)

    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {message}")
    assert result.stdout == ""
    assert cbserver("subscriber", "list").stdout.startswith("No subscribers yet")


def test_duplicate_subscriber_fails_clearly(cbserver) -> None:
    cbserver("subscriber", "add", "acme", *ACME)

    again = cbserver("subscriber", "add", "acme", *BETA)

    assert again.exit_code == 1
    assert again.stderr == "error: a subscriber named 'acme' already exists\n"
    [row] = table(cbserver("subscriber", "list"))
    assert row[1] == "Acme Plumbing"


def test_assigned_agents_are_listed_in_priority_order(cbserver) -> None:
    cbserver("subscriber", "add", "acme", *ACME)
    for name in ("alice", "bob", "carol"):
        cbserver("agent", "add", name)

    first = cbserver("agent", "assign", "bob", "acme", "--priority", "20")
    cbserver("agent", "assign", "alice", "acme", "--priority", "10")
    cbserver("agent", "assign", "carol", "acme")
    moved = cbserver("agent", "assign", "carol", "acme", "--priority", "5")
    same = cbserver("agent", "assign", "carol", "acme", "--priority", "5")

    assert first.exit_code == 0, first.output
    assert first.stdout == "Agent 'bob' assigned to 'acme' (priority 20).\n"
    assert moved.stdout == "Agent 'carol' serves 'acme' at priority 5 (was 100).\n"
    assert same.stdout == "Agent 'carol' already serves 'acme'; nothing changed.\n"
    [row] = table(cbserver("subscriber", "list"))
    assert row[4] == "carol,alice,bob"

    removed = cbserver("agent", "unassign", "alice", "acme")
    again = cbserver("agent", "unassign", "alice", "acme")

    assert removed.stdout == "Agent 'alice' no longer serves 'acme'.\n"
    assert again.exit_code == 0
    assert again.stdout == "Agent 'alice' did not serve 'acme'; nothing changed.\n"
    [row] = table(cbserver("subscriber", "list"))
    assert row[4] == "carol,bob"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("assign", "alice", "nobody"), "error: there is no subscriber named 'nobody'\n"),
        (("assign", "nobody", "acme"), "error: there is no agent named 'nobody'\n"),
        (("unassign", "nobody", "acme"), "error: there is no agent named 'nobody'\n"),
        (("assign", "alice", "acme", "--priority", "-1"), "error: priority must be a whole"),
    ],
    ids=["subscriber", "agent", "unassign", "priority"],
)
def test_assigning_unknown_names_fails_naming_them(cbserver, args, message: str) -> None:
    cbserver("subscriber", "add", "acme", *ACME)
    cbserver("agent", "add", "alice")

    result = cbserver("agent", *args)

    assert result.exit_code == 1
    assert result.stderr.startswith(message)
    [row] = table(cbserver("subscriber", "list"))
    assert row[4] == "-"


# --- the demo ------------------------------------------------------------------------------


def test_demo_is_seeded_once_and_a_second_run_changes_nothing(cbserver, tmp_path: Path) -> None:
    first = cbserver("demo")
    second = cbserver("demo")

    assert first.exit_code == 0, first.output
    assert first.stdout.splitlines()[:5] == [
        "Agent 'demo-alice' added.",
        "Agent 'demo-bob' added.",
        "Subscriber 'acme' added.",
        "Agent 'demo-alice' assigned to 'acme' (priority 10).",
        "Agent 'demo-bob' assigned to 'acme' (priority 20).",
    ]
    assert second.exit_code == 0, second.output
    assert second.stdout.splitlines()[0] == "The demo is already seeded; nothing changed."
    assert "added" not in second.stdout
    assert "assigned" not in second.stdout
    for result in (first, second):
        assert "Subscriber 'acme' (Acme Plumbing):\n  hosted form  /c/acme\n" in result.stdout
        assert re.search(r"^\s+widget key\s+\S{40,}$", result.stdout, re.MULTILINE)
        assert re.search(r"^\s+username\s+demo-alice$", result.stdout, re.MULTILINE)
        assert re.search(r"^\s+username\s+demo-bob$", result.stdout, re.MULTILINE)
    passwords = re.findall(r"^\s+password\s+(\S+)$", first.stdout, re.MULTILINE)
    assert len(passwords) == 2
    assert all(len(p) >= 20 for p in passwords)
    assert passwords == re.findall(r"^\s+password\s+(\S+)$", second.stdout, re.MULTILINE)
    conf = agents_file(tmp_path).read_text()
    assert "[demo-alice-auth](agent-auth)" in conf
    assert "[demo-bob-auth](agent-auth)" in conf

    engine = db.make_engine(f"sqlite:///{tmp_path / 'cb.sqlite3'}")
    try:
        with db.make_session_factory(engine)() as session:
            [acme] = list_subscribers(session)
            assert sorted(a.name for a in session.query(Agent)) == ["demo-alice", "demo-bob"]
            assert (acme.slug, acme.display_name, acme.country) == ("acme", "Acme Plumbing", "US")
            assert (acme.time_zone, acme.caller_id) == ("America/Los_Angeles", "+12015550100")
            assert (acme.language, acme.allowed_origins) == ("en", "")
            assert [(a.agent.name, a.priority) for a in acme.assignments] == [
                ("demo-alice", 10),
                ("demo-bob", 20),
            ]
    finally:
        engine.dispose()


def test_demo_adds_what_is_missing_and_keeps_the_rest(cbserver) -> None:
    cbserver("agent", "add", "demo-bob")
    cbserver("subscriber", "add", "acme", *BETA)
    cbserver("agent", "assign", "demo-bob", "acme", "--priority", "1")

    seeded = cbserver("demo")

    assert seeded.exit_code == 0, seeded.output
    assert seeded.stdout.splitlines()[:3] == [
        "Agent 'demo-alice' added.",
        "Agent 'demo-alice' assigned to 'acme' (priority 10).",
        "Agent 'demo-bob' assigned to 'acme' (priority 20).",
    ]
    [row] = table(cbserver("subscriber", "list"))
    assert row[:3] == ["acme", "Beta GmbH", "DE"]
    assert row[4] == "demo-alice,demo-bob"


# --- admin API tokens ------------------------------------------------------------------------


def created_secret(result: Result) -> str:
    found = re.search(r"^\s+secret\s+(\S+)$", result.stdout, re.MULTILINE)
    assert found is not None, result.output
    return found.group(1)


def database_bytes(tmp_path: Path) -> bytes:
    """The SQLite database as stored, with its write-ahead log."""
    return b"".join(path.read_bytes() for path in sorted(tmp_path.glob("cb.sqlite3*")))


def test_a_token_is_created_and_its_secret_shown_once(cbserver, tmp_path: Path) -> None:
    created = cbserver("token", "create", "ci deploy")

    assert created.exit_code == 0, created.output
    lines = created.stdout.splitlines()
    assert lines[0] == "Token 1 ('ci deploy') created for all subscribers."
    secret = created_secret(created)
    assert secret.startswith("cbs_")
    assert "it will not be shown again" in created.stdout
    assert secret not in database_bytes(tmp_path).decode("latin-1")
    listed = cbserver("token", "list")
    assert secret not in listed.stdout
    engine = db.make_engine(f"sqlite:///{tmp_path / 'cb.sqlite3'}")
    try:
        with db.make_session_factory(engine)() as session:
            token = admin_tokens.authenticate(session, secret)
            assert (token.id, token.scope_subscriber_id) == (1, None)
            assert token.token_hash not in listed.stdout
    finally:
        engine.dispose()


def test_tokens_are_listed_with_their_scope_and_state(cbserver) -> None:
    assert cbserver("token", "list").stdout.startswith("No tokens yet")
    cbserver("subscriber", "add", "acme", *ACME)
    cbserver("token", "create", "everything")
    scoped = cbserver("token", "create", "acme shop", "--subscriber", "acme")
    cbserver("token", "revoke", "1")

    listed = cbserver("token", "list")

    assert scoped.stdout.startswith("Token 2 ('acme shop') created for subscriber 'acme'.")
    assert re.split(r"\s{2,}", listed.stdout.splitlines()[0]) == [
        "ID",
        "NAME",
        "SUBSCRIBER",
        "CREATED",
        "LAST USED",
        "REVOKED",
    ]
    rows = table(listed)
    assert [row[:3] for row in rows] == [["1", "everything", "all"], ["2", "acme shop", "acme"]]
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\dZ"
    assert all(re.fullmatch(stamp, row[3]) for row in rows)
    assert [row[4] for row in rows] == ["-", "-"]
    assert re.fullmatch(stamp, rows[0][5])
    assert rows[1][5] == "-"


def test_a_token_is_revoked_once(cbserver, tmp_path: Path) -> None:
    secret = created_secret(cbserver("token", "create", "ci"))

    revoked = cbserver("token", "revoke", "1")
    again = cbserver("token", "revoke", "1")

    assert revoked.exit_code == 0, revoked.output
    assert revoked.stdout == "Token 1 revoked.\n"
    assert again.stdout == "Token 1 was already revoked; nothing changed.\n"
    engine = db.make_engine(f"sqlite:///{tmp_path / 'cb.sqlite3'}")
    try:
        with (
            db.make_session_factory(engine)() as session,
            pytest.raises(admin_tokens.Unauthorized),
        ):
            admin_tokens.authenticate(session, secret)
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("create", "ci", "--subscriber", "nobody"), "there is no subscriber named 'nobody'"),
        (("create", "  "), "the token's name must not be empty"),
        (("revoke", "7"), "there is no token with id 7"),
    ],
    ids=["unknown_subscriber", "empty_name", "unknown_id"],
)
def test_refused_token_commands_say_why(cbserver, args: tuple[str, ...], message: str) -> None:
    result = cbserver("token", *args)

    assert result.exit_code == 1
    assert result.stderr == f"error: {message}\n"
    assert result.stdout == ""
    assert cbserver("token", "list").stdout.startswith("No tokens yet")


def test_a_schedule_is_written_as_on_a_shop_door_and_shown_back(cbserver) -> None:
    cbserver("subscriber", "add", "acme", *ACME, "--time-zone", "Europe/Berlin")
    changed = cbserver(
        "subscriber",
        "schedule",
        "acme",
        "--hours",
        "mon-fri 09:00-12:30,13:30-17:00; sat 10:00-14:00",
        "--closed",
        "2026-12-25",
        "--special",
        "2026-12-24=09:00-12:00",
        "--slot-minutes",
        "30",
        "--slot-capacity",
        "4",
        "--outside-hours",
        "refuse",
        "--retry-rules",
        '{"visitor_busy": {"max_attempts": 5, "delay_seconds": 120}}',
    )
    assert changed.exit_code == 0, changed.output
    lines = changed.stdout.splitlines()
    assert lines[:2] == ["Schedule of 'acme' changed.", "Schedule of 'acme' (Europe/Berlin):"]
    shown = dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in lines[2:])
    assert shown["hours"] == "mon-fri 09:00-12:30,13:30-17:00; sat 10:00-14:00"
    assert shown["exceptions"] == "2026-12-24 09:00-12:00; 2026-12-25 closed"
    assert shown["outside hours"] == "refuse"
    assert shown["slots"] == "30 min, 4 places each, 7 days ahead"

    as_json = json.loads(cbserver("subscriber", "schedule", "acme", "--json").stdout)
    assert as_json["hours"]["weekly"]["sun"] == []
    assert as_json["retry_rules"] == {"visitor_busy": {"max_attempts": 5, "delay_seconds": 120}}
    again = cbserver(
        "subscriber", "schedule", "acme", "--hours", "always", "--slot-capacity", "agents"
    )
    assert "hours          always" in again.stdout
    assert "a place per active agent" in again.stdout


def test_the_wrap_up_time_is_set_changed_and_shown(cbserver) -> None:
    added = cbserver("subscriber", "add", "acme", *ACME, "--wrap-up-seconds", "120")
    assert added.exit_code == 0, added.output

    shown = cbserver("subscriber", "schedule", "acme")
    assert "  wrap-up        120 s after a call-back the agent talked in\n" in shown.stdout
    as_json = json.loads(cbserver("subscriber", "schedule", "acme", "--json").stdout)
    assert as_json["wrap_up_seconds"] == 120
    changed = cbserver("subscriber", "schedule", "acme", "--wrap-up-seconds", "0")
    assert changed.exit_code == 0, changed.output
    assert changed.stdout.startswith("Schedule of 'acme' changed.\n")
    assert "  wrap-up        none: an agent is offered the next call-back at once\n" in (
        changed.stdout
    )


def test_the_inbound_number_and_unknown_callers_are_set_changed_and_shown(cbserver) -> None:
    added = cbserver(
        "subscriber",
        "add",
        "acme",
        *ACME,
        "--inbound-number",
        "+1 201 555 0111",
        "--unknown-callers",
        "message",
    )
    assert added.exit_code == 0, added.output

    shown = cbserver("subscriber", "schedule", "acme").stdout.splitlines()
    assert "  inbound        +12015550111, besides the caller ID" in shown
    assert (
        "  other callers  message: callers without a waiting call-back are told nobody is available"
        in shown
    )
    as_json = json.loads(cbserver("subscriber", "schedule", "acme", "--json").stdout)
    assert (as_json["inbound_number"], as_json["unknown_callers"]) == ("+12015550111", "message")
    changed = cbserver(
        "subscriber", "schedule", "acme", "--inbound-number", "none", "--unknown-callers", "agents"
    )
    assert changed.exit_code == 0, changed.output
    lines = changed.stdout.splitlines()
    assert lines[0] == "Schedule of 'acme' changed."
    assert "  inbound        none: calls in reach the agents by the caller ID only" in lines
    assert "  other callers  agents: callers without a waiting call-back reach the agents too" in (
        lines
    )


def test_another_businesss_number_as_the_inbound_number_fails_naming_the_business(
    cbserver,
) -> None:
    cbserver("subscriber", "add", "acme", *ACME, "--inbound-number", "+12015550111")
    cbserver("subscriber", "add", "beta", *BETA)

    taken = cbserver("subscriber", "schedule", "beta", "--inbound-number", "+1 201 555 0100")
    added = cbserver("subscriber", "add", "cafe", *BETA, "--inbound-number", "+12015550111")

    assert taken.exit_code == 1
    assert taken.stderr == "error: inbound number '+12015550100' is already acme's number\n"
    assert added.exit_code == 1
    assert added.stderr == "error: inbound number '+12015550111' is already acme's number\n"
    shown = json.loads(cbserver("subscriber", "schedule", "beta", "--json").stdout)
    assert shown["inbound_number"] is None
    assert [row[0] for row in table(cbserver("subscriber", "list"))] == ["acme", "beta"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--hours", "mon-fri 9-5"), "mon: '9-5' is not an opening like 09:00-17:30"),
        (("--hours", "fri-mon 09:00-10:00"), "a range of days runs forwards"),
        (("--hours", "weekdays 09:00-10:00"), "'weekdays' is not a day"),
        (("--slot-minutes", "1"), "slot length in minutes must be a whole number from 5 to 240"),
        (("--slot-capacity", "lots"), "give a whole number or 'agents'"),
        (("--retry-rules", "{"), "--retry-rules: not valid JSON"),
        (("--retry-rules", '{"busy": {}}'), "'busy' is not an outcome"),
        (("--closed", "2026-12-25"), "dated exceptions need weekly hours"),
        (
            ("--wrap-up-seconds", "-5"),
            "the wrap-up time in seconds must be a whole number from 0 to 3600",
        ),
        (
            ("--inbound-number", "+12015550100"),
            "inbound number '+12015550100' is already acme's number: its caller ID",
        ),
    ],
)
def test_a_bad_schedule_fails_saying_what_is_wrong(cbserver, args, message: str) -> None:
    cbserver("subscriber", "add", "acme", *ACME)
    result = cbserver("subscriber", "schedule", "acme", *args)
    assert result.exit_code == 1
    assert message in result.output
    shown = json.loads(cbserver("subscriber", "schedule", "acme", "--json").stdout)
    assert (shown["hours"], shown["slot_minutes"]) == (None, 15), "nothing was changed"


# --- the worker: its settings and its Asterisk ---------------------------------------------

REMOTE_ARI = {
    "CBSERVER_ARI_URL": "http://10.0.0.5:8088/ari",
    "CBSERVER_ARI_USERNAME": "node-2",
    "CBSERVER_ARI_PASSWORD": "remote-ari-secret",
}
NODE_SETTINGS = {
    "CBSERVER_WORKER_NAME": "call-node-2",
    "CBSERVER_WORKER_MAX_CALLS": "80",
    "CBSERVER_WORKER_LEASE_SECONDS": "30",
}


class BuiltWorker:
    """What ``cbserver.cli.Worker`` was built with; runs no call and returns at once."""

    def __init__(self, ari_config: AriConfig, sessions: Any, **options: Any) -> None:
        self.ari_config = ari_config
        self.options = options

    async def run(self, stop: asyncio.Event) -> None:
        return None


@pytest.fixture
def built_workers(monkeypatch: pytest.MonkeyPatch) -> list[BuiltWorker]:
    built: list[BuiltWorker] = []

    def build(ari_config: AriConfig, sessions: Any, **options: Any) -> BuiltWorker:
        built.append(BuiltWorker(ari_config, sessions, **options))
        return built[-1]

    monkeypatch.setattr(cli, "Worker", build)
    return built


def instance_secrets(tmp_path: Path) -> Path:
    return tmp_path / "state" / "asterisk" / "default" / "secrets.json"


def test_a_worker_on_another_hosts_asterisk_uses_its_ari_and_no_instance(
    cbserver, built_workers: list[BuiltWorker], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {**REMOTE_ARI, **NODE_SETTINGS}.items():
        monkeypatch.setenv(name, value)

    result = cbserver("worker")

    assert result.exit_code == 0, result.output
    [worker] = built_workers
    assert worker.ari_config == AriConfig(
        base_url="http://10.0.0.5:8088/ari",
        username="node-2",
        password="remote-ari-secret",
        app="cbserver",
    )
    assert worker.options["name"] == "call-node-2"
    assert worker.options["max_calls"] == 80
    assert worker.options["lease"] == timedelta(seconds=30)
    assert worker.options["wake_port"] == 8281
    assert not instance_secrets(tmp_path).exists(), "no managed Asterisk was needed"


def test_a_worker_uses_its_own_instances_ari_by_default(
    cbserver, built_workers: list[BuiltWorker], tmp_path: Path
) -> None:
    result = cbserver("worker")

    assert result.exit_code == 0, result.output
    [worker] = built_workers
    keys = json.loads(instance_secrets(tmp_path).read_text())["ari"]
    assert worker.ari_config == AriConfig(
        base_url="http://127.0.0.1:8288/ari",
        username=keys["username"],
        password=keys["password"],
        app="cbserver",
    )
    assert worker.options["name"] == socket.gethostname()
    assert worker.options["max_calls"] == 50
    assert worker.options["lease"] == timedelta(seconds=120)


class WorkerBuilt(Exception):
    """Ends ``cbserver run`` once it has built its worker, before it starts anything."""


def test_cbserver_run_builds_its_worker_from_the_same_settings(
    cbserver, built_workers: list[BuiltWorker], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {**REMOTE_ARI, **NODE_SETTINGS}.items():
        monkeypatch.setenv(name, value)
    # run's SIGTERM and SIGINT handlers must not outlive the test.
    monkeypatch.setattr(signal, "signal", lambda *_: None)

    def stop_here(worker: BuiltWorker) -> None:
        raise WorkerBuilt

    monkeypatch.setattr(cli, "WorkerThread", stop_here)

    with pytest.raises(WorkerBuilt):
        cbserver("run")

    [worker] = built_workers
    assert worker.ari_config.base_url == "http://10.0.0.5:8088/ari"
    assert (worker.ari_config.username, worker.ari_config.password) == (
        "node-2",
        "remote-ari-secret",
    )
    assert worker.options["name"] == "call-node-2"
    assert worker.options["max_calls"] == 80
    assert worker.options["lease"] == timedelta(seconds=30)


def test_a_second_worker_under_a_live_workers_name_refuses_to_start(
    cbserver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cbserver("db", "upgrade").exit_code == 0
    engine = db.make_engine(f"sqlite:///{tmp_path / 'cb.sqlite3'}")
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as running:
        try:
            with db.make_session_factory(engine)() as session:
                nodes.register(session, "call-node-2", "the first", datetime.now(UTC), LEASE)
                session.get_one(WorkerNode, "call-node-2").pid = running.pid
                session.commit()
            monkeypatch.setenv("CBSERVER_WORKER_NAME", "call-node-2")
            monkeypatch.setenv("CBSERVER_ARI_URL", "http://127.0.0.1:9/ari")
            monkeypatch.setenv("CBSERVER_ARI_USERNAME", "unused")
            monkeypatch.setenv("CBSERVER_ARI_PASSWORD", "unused")

            result = cbserver("worker")
        finally:
            running.kill()
    engine.dispose()

    assert result.exit_code == 1
    assert f"worker call-node-2 is already running on {socket.gethostname()} (pid " in (
        result.output
    )
    assert "give each worker its own name (CBSERVER_WORKER_NAME)" in result.output
