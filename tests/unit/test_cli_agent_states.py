"""`cbserver agent pause / available / list`: what an agent's state is, as the admin sees it."""

from __future__ import annotations

from tests.unit.conftest import Run


def states(cbserver: Run) -> dict[str, str]:
    listed = cbserver("agent", "list")
    assert listed.exit_code == 0, listed.output
    return {line.split()[0]: line.split(None, 2)[1] for line in listed.stdout.splitlines()}


def test_a_paused_agent_shows_its_reason_until_available_again(cbserver: Run) -> None:
    assert cbserver("agent", "add", "alice", "--contact", "sip:alice@127.0.0.1:5070").exit_code == 0

    paused = cbserver("agent", "pause", "alice", "--reason", "lunch")

    assert paused.exit_code == 0, paused.output
    assert "Agent 'alice' paused: lunch." in paused.stdout
    listed = cbserver("agent", "list").stdout
    assert "paused (lunch)" in listed
    back = cbserver("agent", "available", "alice")
    assert back.exit_code == 0, back.output
    assert "Agent 'alice' is available." in back.stdout
    assert states(cbserver) == {"alice": "available"}
    audit = cbserver("audit").stdout
    assert "paused agent alice: lunch" in audit
    assert "agent alice is available" in audit


def test_pausing_an_unknown_agent_or_with_a_long_reason_fails_clearly(cbserver: Run) -> None:
    assert cbserver("agent", "add", "alice", "--contact", "sip:alice@127.0.0.1:5070").exit_code == 0

    unknown = cbserver("agent", "pause", "zoe")
    too_long = cbserver("agent", "pause", "alice", "--reason", "x" * 101)

    assert unknown.exit_code != 0
    assert "no agent named 'zoe'" in unknown.output
    assert too_long.exit_code != 0
    assert "at most 100 characters" in too_long.output
    assert states(cbserver) == {"alice": "available"}, "nothing changed"


def test_a_console_password_is_shown_once_with_the_console_address_and_replaces_the_old(
    cbserver: Run,
) -> None:
    assert cbserver("agent", "add", "alice", "--contact", "sip:alice@127.0.0.1:5070").exit_code == 0

    first = cbserver("agent", "console-password", "alice")
    second = cbserver("agent", "console-password", "alice")
    unknown = cbserver("agent", "console-password", "zoe")

    assert first.exit_code == 0, first.output
    assert "New console password for agent 'alice' (shown once): " in first.stdout
    assert "console  http://127.0.0.1:8280/agent/login" in first.stdout
    passwords = [result.stdout.split("(shown once): ")[1].split()[0] for result in (first, second)]
    assert len(passwords[0]) >= 16
    assert passwords[0] != passwords[1], "a new password each time"
    assert passwords[0] not in cbserver("agent", "list").output
    assert "new console password for agent alice" in cbserver("audit").stdout
    assert passwords[1] not in cbserver("audit").stdout
    assert unknown.exit_code != 0
    assert "no agent named 'zoe'" in unknown.output
