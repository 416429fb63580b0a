"""`cbserver run --demo` (what `make run` starts): Asterisk, demo agents, a gateway that answers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cbserver.ari import AriClient, StasisStart
from cbserver.asterisk.instance import AsteriskInstance
from cbserver.config import Settings
from cbserver.demo_gateway import DemoGateway
from cbserver.sipp import SippPeer
from tests.browser import Browser
from tests.e2e.conftest import ari_config, instance_environ
from tests.e2e.harness import (
    SCENARIOS,
    EventRecorder,
    free_media_ports,
    free_ports,
    shown_status,
    until,
)


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path, dict[str, str]]]:
    environ = {**os.environ, **instance_environ(tmp_path, "demo")}
    environ.pop("CBSERVER_TRUNK_URI", None)
    environ["CBSERVER_DEMO_GATEWAY_PORT"] = str(free_ports(1)[0])
    log = tmp_path / "run.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "cbserver", "run", "--demo"],
            env=environ,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            # A group of its own: a kill reaches the demo gateway (sipp) it started, too.
            start_new_session=True,
        )
    yield process, log, environ
    if process.poll() is None:
        # Stopped as a service manager stops it: it stops its gateway itself.
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    AsteriskInstance(Settings.load(environ=environ)).stop()


async def ready(process: subprocess.Popen[bytes], log: Path) -> str:
    """What ``cbserver run --demo`` printed once it is ready; it must still be running."""

    def printed_when_ready() -> str | None:
        text = log.read_text()
        # The demo form's address is the last line it prints when ready.
        return text if "Demo form: " in text or process.poll() is not None else None

    output: str = await until(printed_when_ready, within=60, message="cbserver run to be ready")
    assert process.poll() is None, output
    return output


async def test_run_demo_serves_until_sigterm_and_its_gateway_answers_trunk_calls(
    demo: tuple[subprocess.Popen[bytes], Path, dict[str, str]],
) -> None:
    process, log, environ = demo
    output = await ready(process, log)
    assert "username  demo-alice" in output
    assert "username  demo-bob" in output
    base_url = f"http://127.0.0.1:{environ['CBSERVER_WEB_PORT']}/"
    assert f"cbserver is ready: {base_url}" in output
    assert f"Demo form: {base_url}c/acme" in output
    async with httpx.AsyncClient() as web:
        form = await web.get(f"{base_url}c/acme")
    assert form.status_code == 200
    assert "Acme Plumbing will call you back" in form.text
    gateway = f"sip:127.0.0.1:{environ['CBSERVER_DEMO_GATEWAY_PORT']}"
    assert f"Demo PSTN gateway (sipp, answers and echoes audio) on {gateway}" in output

    instance = AsteriskInstance(Settings.load(environ=environ))
    async with AriClient(ari_config(instance, app="demo-probe")) as ari:
        recorder = EventRecorder(ari)
        await recorder.start()
        call = await ari.originate("PJSIP/+14155550123@trunk", app="demo-probe")
        await recorder.wait_for(StasisStart, call.id)
        assert await ari.hangup(call.id)
        await recorder.stop()

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0, log.read_text()
    assert "Asterisk stopped." in log.read_text()
    assert instance.pid() is None


async def test_a_softphone_registered_as_a_demo_agent_is_called_back_and_bridged_to_the_gateway(
    demo: tuple[subprocess.Popen[bytes], Path, dict[str, str]], tmp_path: Path
) -> None:
    process, log, environ = demo
    output = await ready(process, log)
    password = re.search(r"username  demo-alice\s+password  (\S+)", output)
    assert password, output
    settings = Settings.load(environ=environ)

    # The softphone registers as the README tells a person to, then answers on that address.
    port = free_ports(1)[0]
    phone = SippPeer(
        name="demo-alice-register",
        port=port,
        workdir=tmp_path / "phone",
        scenario=SCENARIOS / "uac_register.xml",
        extra_args=("-s", "demo-alice", "-au", "demo-alice", "-ap", password.group(1)),
    )
    phone.call(f"127.0.0.1:{settings.sip_port}", timeout=10)
    assert [m.status for m in phone.received()][-1] == 200, "registered"
    softphone = SippPeer(
        name="demo-alice",
        port=port,
        workdir=tmp_path / "phone",
        scenario=SCENARIOS / "agent_accepts.xml",
        media_port=free_media_ports(port),
        extra_args=("-aa", "-d", "1000"),
    )
    softphone.start()
    try:
        # The agent's console in Chromium (its own thread: Playwright's sync API): available
        # once the softphone registered, then the call pops up on the screen, bridged.
        web_url = f"http://127.0.0.1:{settings.web_port}/"
        callback, console = await asyncio.to_thread(
            ask_while_the_console_watches, web_url, password.group(1)
        )
        assert "+14155550123" in console
        async with httpx.AsyncClient(base_url=web_url) as web:

            async def status() -> str:
                return shown_status((await web.get(callback["status_url"])).text)

            await until(
                lambda: _shows(status, "You are connected."),
                within=30,
                message="the visitor's page to say connected",
            )
            [invite] = softphone.received("INVITE")
            assert "+14155550123" in (invite.header("From") or ""), "the agent sees the visitor"
            gateway = DemoGateway(settings).peer
            [trunk_invite] = gateway.received("INVITE")
            assert trunk_invite.request_uri.startswith("sip:+14155550123@")

            # The agent hangs up; the visitor's line is released and the call-back is done.
            async with AriClient(ari_config(AsteriskInstance(settings), app="demo-probe")) as ari:
                [agent_leg] = [
                    c for c in await ari.list_channels() if c.name.startswith("PJSIP/demo-alice")
                ]
                assert await ari.hangup(agent_leg.id)
            await until(
                lambda: _shows(status, "Done: thank you for talking to us."),
                within=15,
                message="the visitor's page to say done",
            )
            await until(lambda: gateway.received("BYE"), within=10, message="the gateway's BYE")
    finally:
        softphone.stop()


def ask_while_the_console_watches(web_url: str, password: str) -> tuple[dict[str, Any], str]:
    """Log in to the console as demo-alice, wait until it says available, ask for a call-back
    and wait until the console shows it connected; the request and the console's text."""
    with Browser.launch() as browser:
        browser.open(f"{web_url}agent/login")
        browser.fill("Agent name", "demo-alice")
        browser.fill("Password", password)
        browser.click("Log in")
        browser.wait_for_text("Agent console: demo-alice")

        def state() -> str:
            return browser.text('[data-field="state_text"]').strip()

        deadline = time.monotonic() + 15
        while state() != "Available" and time.monotonic() < deadline:
            time.sleep(0.2)  # the page itself polls once a second
        assert state() == "Available", f"the registered softphone's agent is {state()!r}"
        created = httpx.post(
            f"{web_url}api/v1/callbacks",
            json={"subscriber": "acme", "phone": "+14155550123", "consent": True},
        )
        assert created.status_code == 201, created.text
        browser.wait_for_text("+14155550123", timeout=30)
        deadline = time.monotonic() + 30
        while (
            browser.text('[data-field="status_text"]').strip() != "Connected"
            and time.monotonic() < deadline
        ):
            time.sleep(0.2)
        text = browser.text()
        assert browser.text('[data-field="status_text"]').strip() == "Connected", text
        assert state() == "On a call", text
        assert not browser.page_errors
        return created.json(), text


async def _shows(status: Callable[[], Awaitable[str]], text: str) -> bool:
    return await status() == text
