"""`cbserver run --demo` (what `make run` starts): Asterisk, demo agents, a gateway that answers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cbserver.ari import AriClient, StasisStart
from cbserver.asterisk.instance import AsteriskInstance
from cbserver.config import Settings
from tests.e2e.conftest import ari_config, instance_environ
from tests.e2e.harness import EventRecorder, free_ports, until


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
        )
    yield process, log, environ
    if process.poll() is None:
        process.kill()
        process.wait()
    AsteriskInstance(Settings.load(environ=environ)).stop()


async def test_run_demo_serves_until_sigterm_and_its_gateway_answers_trunk_calls(
    demo: tuple[subprocess.Popen[bytes], Path, dict[str, str]],
) -> None:
    process, log, environ = demo
    await until(
        lambda: "Stop: Ctrl-C" in log.read_text() or process.poll() is not None,
        within=60,
        message="cbserver run to be ready",
    )
    output = log.read_text()
    assert process.poll() is None, output
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
