"""An agent's softphone registers with the generated account and then rings at its address."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner

from cbserver.ari import AriClient, StasisStart
from cbserver.asterisk.instance import AsteriskInstance
from cbserver.cli import main
from cbserver.sipp import SippPeer
from tests.e2e.conftest import TEST_APP
from tests.e2e.harness import SCENARIOS, EventRecorder, free_ports


def register(workdir: Path, asterisk: AsteriskInstance, user: str, password: str) -> SippPeer:
    port = free_ports(1)[0]
    phone = SippPeer(
        name=f"{user}-register-{port}",
        port=port,
        workdir=workdir,
        scenario=SCENARIOS / "uac_register.xml",
        extra_args=("-s", user, "-au", user, "-ap", password),
    )
    phone.call(f"127.0.0.1:{asterisk.settings.sip_port}", timeout=10)
    return phone


async def test_registered_softphone_rings_and_a_wrong_password_is_refused(
    asterisk: AsteriskInstance,
    e2e_environ: dict[str, str],
    ari: AriClient,
    events: EventRecorder,
    sipp: Callable[..., SippPeer],
    tmp_path: Path,
) -> None:
    added = CliRunner().invoke(main, ["agent", "add", "carol"], env=e2e_environ)
    assert added.exit_code == 0, added.output
    match = re.search(r"password\s+(\S+)", added.stdout)
    assert match, added.stdout
    password = match.group(1)

    intruder = register(tmp_path, asterisk, "carol", "guessed-password")
    assert 200 not in [m.status for m in intruder.received()]

    phone = register(tmp_path, asterisk, "carol", password)
    statuses = [m.status for m in phone.received()]
    assert statuses[0] == 401, "Asterisk challenges first"
    assert statuses[-1] == 200, "and accepts the generated password"

    # The registration outlives the REGISTER client: the phone now listens on that port.
    carol = sipp("carol", phone.port, "uas_answer.xml")
    channel = await ari.originate("PJSIP/carol", app=TEST_APP, caller_id="+14155550123")
    await events.wait_for(StasisStart, channel.id)
    [invite] = carol.received("INVITE")
    assert invite.request_uri.startswith(f"sip:carol@127.0.0.1:{phone.port}")
