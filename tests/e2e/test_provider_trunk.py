"""The trunk pointed at a SIP provider that wants registration and digest authentication."""

from __future__ import annotations

import os
from pathlib import Path

from cbserver.asterisk.instance import AsteriskInstance
from cbserver.config import Settings
from cbserver.sipp import SippPeer
from tests.e2e.conftest import instance_environ
from tests.e2e.harness import SCENARIOS, free_ports, until

USERNAME = "4930123456"
PASSWORD = "pr0vider;secret"  # a ';' would start a comment in pjsip.conf if not escaped


async def test_asterisk_registers_to_the_provider_with_the_configured_credentials(
    tmp_path: Path,
) -> None:
    port = free_ports(1)[0]
    scenario = tmp_path / "provider_registrar.xml"
    scenario.write_text(
        (SCENARIOS / "provider_registrar.xml")
        .read_text()
        .replace("{username}", USERNAME)
        .replace("{password}", PASSWORD)
    )
    provider = SippPeer("provider", port, tmp_path, scenario=scenario, extra_args=("-aa",))
    provider.start()
    environ = instance_environ(tmp_path, "provider")
    environ |= {
        "CBSERVER_TRUNK_URI": f"sip:127.0.0.1:{port}",
        "CBSERVER_TRUNK_USERNAME": USERNAME,
        "CBSERVER_TRUNK_PASSWORD": PASSWORD,
        "CBSERVER_TRUNK_REGISTER": "yes",
    }
    instance = AsteriskInstance(Settings.load(environ={**os.environ, **environ}))
    instance.start([], progress=print)
    try:
        await until(
            lambda: "Registered" in instance.cli(["-rx", "pjsip show registrations"]),
            within=10,
            message="the trunk registration",
        )
        first, second = provider.received("REGISTER")[:2]
        assert first.header("Authorization") is None
        authorization = second.header("Authorization") or ""
        assert f'username="{USERNAME}"' in authorization
        assert 'realm="provider.example"' in authorization
        assert [m.status for m in provider.messages() if m.direction == "sent"][-1] == 200
    finally:
        instance.stop()
        provider.stop()
