"""An agent's phone may register only from CBSERVER_AGENT_NETWORKS: from anywhere else even the
right password is refused by Asterisk itself (PJSIP's endpoint ACL)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cbserver.asterisk.instance import AsteriskInstance
from cbserver.config import Settings
from tests.e2e.conftest import instance_environ
from tests.e2e.harness import until
from tests.e2e.test_agent_phones import register

PASSWORD = "Xy7-long-enough-generated-password"


@dataclass(frozen=True)
class Phone:
    name: str
    sip_password: str
    contact: str | None = None
    dtmf_mode: str = "rfc4733"


@pytest.fixture
def office_only(tmp_path: Path) -> Iterator[AsteriskInstance]:
    """An Asterisk whose agents may register only from an office network, not from loopback."""
    environ = {**instance_environ(tmp_path, "office"), "CBSERVER_AGENT_NETWORKS": "192.0.2.0/24"}
    instance = AsteriskInstance(Settings.load(environ={**os.environ, **environ}))
    instance.start([Phone("dora", PASSWORD)], progress=print)
    yield instance
    instance.stop()


async def test_the_right_password_from_outside_the_agent_networks_is_refused(
    office_only: AsteriskInstance, tmp_path: Path
) -> None:
    log = office_only.directory / "log" / "messages"

    phone = register(tmp_path, office_only, "dora", PASSWORD)

    # Asterisk answers a 401 as to a wrong password, so as not to tell the ACL is there.
    assert 200 not in [m.status for m in phone.received()]
    await until(
        lambda: "Not match Endpoint ACL" in log.read_text(errors="replace"),
        message=lambda: "the refusal is the ACL's:\n" + office_only.log_tail(),
    )
