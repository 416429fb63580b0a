"""The command line's deny-list, number types and audit log (settings from the environment)."""

from __future__ import annotations

import pytest
from click.testing import Result

from tests.unit.conftest import Run
from tests.unit.test_cli import ACME, BETA, table


@pytest.fixture
def acme(cbserver: Run) -> None:
    assert cbserver("subscriber", "add", "acme", *ACME).exit_code == 0
    assert cbserver("subscriber", "add", "beta", *BETA).exit_code == 0


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.stdout


def failed(result: Result) -> str:
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    return result.stderr


@pytest.mark.usefixtures("acme")
def test_numbers_are_denied_listed_and_removed(cbserver: Run) -> None:
    assert ok(cbserver("deny", "list")).startswith("The deny-list is empty")

    added = ok(cbserver("deny", "add", "+4490", "--prefix", "--reason", "premium fraud"))
    ok(cbserver("deny", "add", "+12015550123", "--subscriber", "acme"))
    listed = cbserver("deny", "list")

    assert added == "Denied (1): prefix +4490 for every subscriber (premium fraud).\n"
    assert [row[:3] + row[4:] for row in table(listed)] == [
        ["1", "+4490*", "all", "premium fraud"],
        ["2", "+12015550123", "acme", "-"],
    ]
    assert [row[0] for row in table(cbserver("deny", "list", "--subscriber", "beta"))] == ["1"]
    assert ok(cbserver("deny", "remove", "1")) == (
        "Removed (1): prefix +4490 for every subscriber (premium fraud).\n"
    )
    assert [row[0] for row in table(cbserver("deny", "list"))] == ["2"]


@pytest.mark.usefixtures("acme")
@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("+4", "--prefix"), "at least 2 digits"),
        (("4490",), "'+'"),
        (("+44 90",), "no spaces"),
        (("+12015550123", "--subscriber", "nobody"), "no subscriber named 'nobody'"),
        (("+4490", "--reason", "x" * 201), "too long"),
    ],
)
def test_a_bad_entry_fails_saying_why(cbserver: Run, args: tuple[str, ...], words: str) -> None:
    assert words in failed(cbserver("deny", "add", *args))
    assert ok(cbserver("deny", "list")).startswith("The deny-list is empty")


@pytest.mark.usefixtures("acme")
def test_the_same_entry_twice_and_an_unknown_id_fail(cbserver: Run) -> None:
    ok(cbserver("deny", "add", "+4490", "--prefix"))

    assert "already denied" in failed(cbserver("deny", "add", "+4490", "--prefix"))
    assert "no deny-list entry with id 7" in failed(cbserver("deny", "remove", "7"))


@pytest.mark.usefixtures("acme")
def test_number_types_are_shown_and_set(cbserver: Run) -> None:
    assert ok(cbserver("subscriber", "number-types", "acme")) == (
        "acme calls: fixed_line, mobile, fixed_line_or_mobile (the default)\n"
    )

    changed = ok(cbserver("subscriber", "number-types", "acme", "mobile,toll_free"))
    again = ok(cbserver("subscriber", "number-types", "acme", "--default"))

    assert changed == "Number types of 'acme' changed.\nacme calls: mobile, toll_free\n"
    assert again.endswith("acme calls: fixed_line, mobile, fixed_line_or_mobile (the default)\n")
    refused = failed(cbserver("subscriber", "number-types", "acme", "mobile,satellite"))
    assert "unknown number type 'satellite'" in refused
    assert "premium_rate" in refused, "the known types are named"


@pytest.mark.usefixtures("acme")
def test_command_line_changes_are_in_the_audit_log_without_secrets(cbserver: Run) -> None:
    ok(cbserver("agent", "add", "alice", "--contact", "sip:alice@127.0.0.1:5070"))
    ok(cbserver("agent", "assign", "alice", "acme", "--priority", "10"))
    ok(cbserver("agent", "assign", "alice", "acme", "--priority", "10"))  # nothing changes
    created = ok(cbserver("token", "create", "deploy", "--subscriber", "acme"))
    ok(cbserver("deny", "add", "+4490", "--prefix"))
    ok(cbserver("subscriber", "number-types", "acme", "mobile"))

    rows = table(cbserver("audit"))
    only_acme = table(cbserver("audit", "--subscriber", "acme", "--limit", "2"))
    denials = table(cbserver("audit", "--action", "denied_number_added"))

    assert [(row[1], row[2], row[3]) for row in rows] == [
        ("cli", "number_types_changed", "acme"),
        ("cli", "denied_number_added", "-"),
        ("cli", "token_created", "acme"),
        ("cli", "agent_assigned", "acme"),
        ("cli", "agent_added", "-"),
        ("cli", "subscriber_added", "beta"),
        ("cli", "subscriber_added", "acme"),
    ]
    assert [row[2] for row in only_acme] == ["number_types_changed", "token_created"]
    assert [row[4] for row in denials] == ["denied prefix +4490 for every subscriber"]
    secret = created.split("secret", 1)[1].split()[0]
    assert len(secret) >= 20
    assert secret not in ok(cbserver("audit"))


@pytest.mark.usefixtures("acme")
def test_the_audit_log_refuses_what_is_no_action_code(cbserver: Run) -> None:
    ok(cbserver("deny", "add", "+4490", "--prefix"))

    listed = table(cbserver("audit", "--action", "number_refused, denied_number_added"))

    assert [row[2] for row in listed] == ["denied_number_added"]
    assert "action codes like number_refused" in failed(cbserver("audit", "--action", "Denied!"))
