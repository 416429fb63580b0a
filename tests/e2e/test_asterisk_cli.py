"""`cbserver asterisk ...` and `cbserver agent add` as a PBX admin uses them, on a real Asterisk."""

from __future__ import annotations

import os
import re
import signal
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cbserver.ari import AriClient, StasisStart
from cbserver.asterisk.instance import AsteriskError, AsteriskInstance
from cbserver.cli import main
from cbserver.sipp import SippPeer
from tests.e2e.conftest import TEST_APP, Ports, instance_environ
from tests.e2e.harness import EventRecorder, until


def cbserver(environ: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=environ)


def test_status_shows_version_uptime_ports_and_modules(
    asterisk: AsteriskInstance, e2e_environ: dict[str, str]
) -> None:
    result = cbserver(e2e_environ, "asterisk", "status")
    assert result.exit_code == 0, result.output
    assert f"running, pid {asterisk.pid()}" in result.stdout
    assert "version   22." in result.stdout or "version   2" in result.stdout
    assert f"http_ari {asterisk.settings.http_port}" in result.stdout
    assert f"sip_udp {asterisk.settings.sip_port}" in result.stdout
    assert "res_pjsip: Running" in result.stdout
    assert "chan_pjsip: Running" in result.stdout


def test_second_start_says_already_running_and_succeeds(
    asterisk: AsteriskInstance, e2e_environ: dict[str, str]
) -> None:
    pid = asterisk.pid()
    result = cbserver(e2e_environ, "asterisk", "start")
    assert result.exit_code == 0, result.output
    assert "already running" in result.stdout
    assert asterisk.pid() == pid


def test_cli_runs_an_asterisk_command(
    asterisk: AsteriskInstance, e2e_environ: dict[str, str]
) -> None:
    result = cbserver(e2e_environ, "asterisk", "cli", "-x", "pjsip show endpoint alice")
    assert result.exit_code == 0, result.output
    assert "alice" in result.stdout
    assert re.search(r"dtmf_mode\s*:\s*info", result.stdout)


async def test_agent_added_while_running_is_reachable_without_restart(
    asterisk: AsteriskInstance,
    e2e_environ: dict[str, str],
    ari: AriClient,
    events: EventRecorder,
    sipp: Callable[..., SippPeer],
    ports: Ports,
) -> None:
    pid = asterisk.pid()
    bob = sipp("bob", ports.bob, "uas_answer.xml")
    result = cbserver(
        e2e_environ, "agent", "add", "bob", "--contact", f"sip:bob@127.0.0.1:{ports.bob}"
    )
    assert result.exit_code == 0, result.output
    assert "reachable now" in result.stdout

    channel = await ari.originate("PJSIP/bob", app=TEST_APP, caller_id="+14155550123")
    await events.wait_for(StasisStart, channel.id)
    [invite] = bob.received("INVITE")
    assert invite.request_uri == f"sip:bob@127.0.0.1:{ports.bob}"
    assert asterisk.pid() == pid, "Asterisk was not restarted"
    await ari.hangup(channel.id)
    await until(lambda: bob.received("BYE"), message="the BYE at bob's phone")


def test_start_that_cannot_reach_ari_fails_clearly_and_leaves_nothing_running(
    tmp_path: Path,
) -> None:
    environ = instance_environ(tmp_path, "blocked")
    environ["CBSERVER_ASTERISK_START_TIMEOUT"] = "4"
    with socket.socket() as squatter:
        # Another program holds the HTTP port and never answers.
        squatter.bind(("127.0.0.1", int(environ["CBSERVER_HTTP_PORT"])))
        squatter.listen(8)
        result = cbserver(environ, "asterisk", "start")
    assert result.exit_code == 1
    assert "ARI did not answer" in result.stderr
    assert f"is port {environ['CBSERVER_HTTP_PORT']} taken" in result.stderr
    assert "--- errors and warnings in" in result.stderr
    assert "Unable to bind http server" in result.stderr
    status = cbserver(environ, "asterisk", "status")
    assert status.exit_code == 3
    assert "not running" in status.stdout


def test_start_refuses_to_double_an_asterisk_whose_ari_hangs(
    spare_asterisk: AsteriskInstance,
) -> None:
    pid = spare_asterisk.pid()
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        with pytest.raises(AsteriskError, match="running but ARI does not answer"):
            spare_asterisk.start([], progress=print)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert spare_asterisk.pid() == pid, "no second Asterisk was started"
